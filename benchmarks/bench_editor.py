"""Editor throughput over HTTP: the openai engine against a local `transformers serve`, concurrency N vs sequential.

    .venv/bin/python benchmarks/bench_editor.py                           # tiny llama, ~1-2 min on 2 cores
    .venv/bin/python benchmarks/bench_editor.py --model models/smollm2-135m-instruct --requests 8 --max-new-tokens 32
    .venv/bin/python benchmarks/bench_editor.py --latency-ms 800          # + a hosted API's per-request latency

Same server, same editor requests (refine_cot prompts on hand-made histories; every request distinct, no cache) and
greedy params in every row. Rows: concurrency 1 (the authors' loop without threads) and concurrency N, each directly
against the server and, with --latency-ms, through a proxy adding that latency per request (what a hosted API such
as DeepSeek costs beyond compute: network + queueing). Prints requests/s and the ratio N vs 1.
On a 2-core CPU the local server's compute is the bottleneck, so concurrency can only overlap HTTP/tokenization
(and batch, with --continuous-batching); against a remote API it overlaps the latency, which is where the paper's
16 threads / 8 in flight pay off.
"""

import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import typer

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from cot_util import CAPTIONS, ITEMS, make_samples
from serve_util import FaultProxy, transformers_serve
from tiny_models import build_tiny_llama

from mllmrec.config import EngineSpec, RefineCotParams
from mllmrec.cot.generate import refine_request
from mllmrec.engines import build_engine
from mllmrec.engines.base import SamplingParams
from mllmrec.prompts import load_item_texts


def requests(n: int, max_new_tokens: int):
    texts = load_item_texts(ITEMS, CAPTIONS)
    params = RefineCotParams(max_caption_chars=80)
    sampling = SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens)
    out = []
    for i, s in enumerate(make_samples(n).iter_rows(named=True)):
        s = {**s, "draft": f"Draft {i}: the user likes colourful films with bold posters."}  # distinct prompts
        out.append(refine_request(s, texts, params.prompt, False, sampling, Counter(), params.max_caption_chars))
    return out


def run(url: str, model: str, reqs, concurrency: int) -> tuple[float, int]:
    spec = EngineSpec(engine="openai", model=model, base_url=url, concurrency=concurrency, max_retries=2, timeout_s=600)
    eng = build_engine(spec)
    t0 = time.perf_counter()
    res = eng.generate(reqs)
    secs = time.perf_counter() - t0
    return secs, sum(not r.error for r in res)


def main(
    model: str = typer.Option("", help="model folder; default: a tiny random llama built now"),
    requests_n: int = typer.Option(8, "--requests"),
    concurrency: int = typer.Option(4),
    max_new_tokens: int = typer.Option(16),
    latency_ms: float = typer.Option(0.0, help="extra per-request latency through a proxy (a hosted API)"),
    continuous_batching: bool = typer.Option(False, help="start the server with --continuous-batching"),
) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench_editor_"))
    model_dir = Path(model) if model else build_tiny_llama(tmp / "tiny_llama")
    reqs = requests(requests_n, max_new_tokens)
    extra = ("--continuous-batching",) if continuous_batching else ()
    rows = []
    with transformers_serve(model_dir, log_path=tmp / "serve.log", extra_args=extra) as url:
        run(url, str(model_dir), reqs[:1], 1)  # warm-up: first request loads / compiles
        targets = [("direct", url, None)]
        if latency_ms:
            proxy = FaultProxy(url, delay_s=latency_ms / 1000)
            targets.append((f"+{latency_ms:.0f} ms latency", proxy.url, proxy))
        for name, u, _ in targets:
            for c in (1, concurrency):
                secs, ok = run(u, str(model_dir), reqs, c)
                rows.append((name, c, secs, ok))
        for _, _, p in targets:
            if p:
                p.close()
    print(
        f"model {model_dir.name}, {requests_n} requests, {max_new_tokens} new tokens each, greedy, "
        f"server continuous batching: {continuous_batching}"
    )
    print(f"{'target':<22}{'concurrency':>12}{'seconds':>10}{'req/s':>8}{'ok':>5}{'ratio vs 1':>12}")
    base = {}
    for name, c, secs, ok in rows:
        base.setdefault(name, secs)
        print(f"{name:<22}{c:>12}{secs:>10.2f}{requests_n / secs:>8.2f}{ok:>5}{base[name] / secs:>11.2f}x")


if __name__ == "__main__":
    typer.run(main)
