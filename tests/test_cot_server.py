"""refine_cot's editor over HTTP: a real `transformers serve` process behind a proxy injecting 429 / 500 / timeouts.

    .venv/bin/pytest tests/test_cot_server.py -q        # ~1 min on 2 cores (server start + tiny model)

Every sample must end either refined or recorded as failed with a reason; transport failures are never cached (the
next run retries them); a rerun with the server healthy and nothing changed makes zero HTTP requests.
"""

import polars as pl
import pytest
from cot_util import CAPTIONS, ITEMS, make_samples
from serve_util import FaultProxy, free_port, transformers_serve

from mllmrec.config import EngineSpec, RefineCotParams
from mllmrec.cot.generate import refine
from mllmrec.cot.text import FAIL_REASONS
from mllmrec.engines import build_engine
from mllmrec.engines.base import SamplingParams
from mllmrec.prompts import load_item_texts

TEXTS = load_item_texts(ITEMS, CAPTIONS)


def _run(url: str, model: str, cache, drafts, **spec_kw):
    spec = EngineSpec(
        **{
            "engine": "openai",
            "model": model,
            "base_url": url,
            "concurrency": 3,
            "max_retries": 3,
            "timeout_s": 20,
            "backoff_s": 0.01,
            "backoff_max_s": 0.05,
            **spec_kw,
        }
    )
    params = RefineCotParams(max_attempts=2, max_caption_chars=60)
    return refine(
        drafts,
        TEXTS,
        params=params,
        sampling=SamplingParams(temperature=0.1, max_new_tokens=12),
        model=model,
        revision="tiny",
        make_engine=lambda: build_engine(spec),
        cache_dir=cache,
    )


@pytest.mark.slow
def test_refine_against_real_server_with_injected_faults(tiny_llama_dir, tmp_path):
    drafts = make_samples(6).with_columns(pl.lit("Step 1: likes cartoons").alias("draft"))
    cache = tmp_path / "cache"
    # endpoint down: every sample recorded as an engine failure, nothing cached
    down, rep = _run(f"http://127.0.0.1:{free_port()}/v1", str(tiny_llama_dir), cache, drafts, max_retries=1)
    assert down.height == 6 and rep.failed == {"engine_error": 6} and rep.parts_written == 0
    assert all("attempt" in r for r in down["raw"])  # the engine's error text is kept, per sample

    faults = {0: "429", 1: "500", 2: "timeout", 4: "429", 5: "429", 7: "500"}
    with transformers_serve(tiny_llama_dir) as url:
        proxy = FaultProxy(url, schedule=lambda n: faults.get(n, "pass"), stall_s=9)
        try:
            refined, rep = _run(proxy.url, str(tiny_llama_dir), cache, drafts, timeout_s=8, concurrency=1)
            assert refined.height == 6 and set(refined["sample_id"]) == set(drafts["sample_id"])  # nothing lost
            ended = refined["format_ok"] | refined["fail_reason"].is_in(list(FAIL_REASONS))
            assert ended.all(), refined.select("sample_id", "fail_reason", "attempt_reasons")
            assert "engine_error" not in rep.failed  # every injected fault was absorbed by the engine's retries
            assert rep.engine_retries >= 6 and proxy.actions["429"] == 3 and proxy.actions["timeout"] == 1
            assert rep.model_calls == sum(refined["attempts"])  # one cached result per attempt
            assert refined["raw"].is_not_null().all()  # the (random-weight) model's text is kept for inspection
            requests = proxy.n
            # healthy rerun, nothing changed: every attempt is cached, zero HTTP requests
            again, rep2 = _run(proxy.url, str(tiny_llama_dir), cache, drafts)
            assert proxy.n == requests and rep2.model_calls == 0 and again.equals(refined)
        finally:
            proxy.close()
