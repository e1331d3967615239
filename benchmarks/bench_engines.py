"""Text generation through the transformers engine: batched calls vs one request per call, same model, same prompts.

    .venv/bin/python benchmarks/bench_engines.py                          # SmolLM2-135M (run `dvc repro models` first)
    .venv/bin/python benchmarks/bench_engines.py --n 32 --batch 16 --max-new-tokens 64 --model some/folder

Greedy decoding, explicit params; prompts are short recommendation-style requests of varied length. Reports
requests/s and completion tokens/s for both, their ratio, and checks that the greedy answers agree (left padding).
"""

import argparse
import json
import time

import torch

from mllmrec.config import EngineSpec
from mllmrec.engines import GenerationRequest, SamplingParams, build_engine

TITLES = [
    "Toy Story (1995)",
    "Heat (1995)",
    "GoldenEye (1995)",
    "Twelve Monkeys (1995)",
    "Seven (1995)",
    "The Usual Suspects (1995)",
    "Braveheart (1995)",
    "Apollo 13 (1995)",
    "Star Wars (1977)",
    "Fargo (1996)",
]


def prompts(n: int) -> list[str]:
    out = []
    for i in range(n):
        hist = ", ".join(TITLES[(i + j) % len(TITLES)] for j in range(1 + i % 7))
        out.append(f"A user watched: {hist}. In one sentence, what kind of movie would they enjoy next?")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="models/smollm2-135m-instruct")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    args = ap.parse_args()
    eng = build_engine(EngineSpec(engine="transformers", model=args.model, batch_size=args.batch))
    sp = SamplingParams(max_new_tokens=args.max_new_tokens)
    reqs = [GenerationRequest(messages=({"role": "user", "content": p},), sampling=sp) for p in prompts(args.n)]
    eng.generate(reqs[:1])  # warm-up
    t0 = time.perf_counter()
    batched = eng.generate(reqs)
    t_batch = time.perf_counter() - t0
    t0 = time.perf_counter()
    single = [eng.generate([r])[0] for r in reqs]
    t_single = time.perf_counter() - t0
    toks = sum(r.completion_tokens for r in batched)
    print(
        json.dumps(
            {
                "model": args.model,
                "device": str(eng.device),
                "dtype": str(eng.dtype),
                "threads": torch.get_num_threads(),
                "n": args.n,
                "batch_size": args.batch,
                "max_new_tokens": args.max_new_tokens,
                "batched_req_per_s": round(args.n / t_batch, 2),
                "single_req_per_s": round(args.n / t_single, 2),
                "batched_tok_per_s": round(toks / t_batch, 1),
                "single_tok_per_s": round(toks / t_single, 1),
                "speedup": round(t_single / t_batch, 2),
                "greedy_agree": sum(a.text == b.text for a, b in zip(batched, single)),
                "errors": sum(bool(r.error) for r in batched),
                "example": batched[0].text,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
