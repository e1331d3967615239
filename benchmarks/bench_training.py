"""Training and ranking throughput next to the box's matmul roofline, measured side by side in one run.

    python benchmarks/bench_training.py                      # SmolLM2-135M (dvc repro models), bf16 if native
    python benchmarks/bench_training.py --batch 4 --tokens 550 --steps 4

Prints tokens/s and the share of the roofline for: a bare forward, LoRA SFT through `mllmrec.training.sft.train_sft` (the sft
stage's code: TRL SFTTrainer) with LoRA dropout 0.05 and 0.0, and likelihood ranking through
`mllmrec.evaluation.likelihood.score_packed` (the evaluate stage's scorer). Roofline = the measured dense matmul rate
(square bf16 matrices) divided by the FLOPs per token the work needs: 2·N for a forward, 4·N for a LoRA step
(forward + input gradients; the frozen weights get no weight gradient), N = parameters outside the embedding table,
the LM head counted only where every position needs logits (the bare forward): SFT and ranking project only the few
answer positions. Attention FLOPs are left out, which flatters nothing: at these lengths they are a few % of the
total. A second matmul rate at one of the model's own shapes (batch tokens x hidden @ hidden x MLP width) shows how
far its GEMMs alone can get.
"""

import argparse
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def gemm_rate(dtype, m: int, k: int, n: int, reps: int = 10, trials: int = 5) -> float:
    """FLOP/s of (m x k) @ (k x n), the fastest of `trials` timings of `reps` products: one timing of ~0.1 s varied
    from 1,245 to 1,980 GFLOP/s between two runs on the same idle 2-core box."""
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(trials):
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * m * k * n * reps / best


def sft_tokens_per_s(model_dir: Path, rows: list[dict], dropout: float, steps: int, dtype: str) -> float:
    from transformers import AutoTokenizer

    from mllmrec.config import SftParams
    from mllmrec.training.sft import train_sft

    tok = AutoTokenizer.from_pretrained(model_dir)
    with tempfile.TemporaryDirectory() as tmp:
        batch = len(rows) // (steps + 1)
        params = SftParams(
            lora={"r": 16, "alpha": 16, "dropout": dropout},
            lr=1e-4,
            max_steps=steps + 1,
            batch_size=batch,
            grad_accum=1,
            dtype=dtype,
            save_steps=10_000,
            logging_steps=1,
            checkpoint_dir=f"{tmp}/ckpt",
            monitor={"every": 0},
        )
        times = []

        from transformers import TrainerCallback

        class StepTimer(TrainerCallback):  # per-step wall time; the first step (warm-up) is dropped
            def on_step_begin(self, *a, **k):
                self.t = time.perf_counter()

            def on_step_end(self, *a, **k):
                times.append(time.perf_counter() - self.t)

        train_sft(rows, str(model_dir), "", tok, params, Path(tmp) / "out", callbacks=[StepTimer()])
    return batch * len(rows[0]["input_ids"]) / (sum(times[1:]) / len(times[1:]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, default=ROOT / "models/smollm2-135m-instruct")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=550)
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()
    from transformers import AutoModelForCausalLM

    from mllmrec.engines.transformers_engine import resolve_dtype
    from mllmrec.evaluation.likelihood import score_packed

    dtype = resolve_dtype("auto", torch.device("cpu"))
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype).eval()
    n = sum(p.numel() for name, p in model.named_parameters() if "embed_tokens" not in name)  # body, no head
    n_head = model.config.vocab_size * model.config.hidden_size  # the (tied) LM head: a matmul per scored position
    rate = gemm_rate(dtype, 2048, 2048, 2048)  # square matrices: the box's dense matmul rate
    h, w = model.config.hidden_size, model.config.intermediate_size
    shape_rate = gemm_rate(dtype, args.batch * args.tokens, h, w)
    print(
        f"{args.model.name}: {n / 1e6:.0f} M matmul params + {n_head / 1e6:.0f} M LM head, "
        f"{str(dtype).removeprefix('torch.')}, {torch.get_num_threads()} threads; dense matmul "
        f"{rate / 1e9:.0f} GFLOP/s ({shape_rate / 1e9:.0f} GFLOP/s at the model's {args.batch * args.tokens} x {h} "
        f"@ {h} x {w}: {shape_rate / rate:.0%})"
    )
    print(
        f"roofline: forward {rate / (2 * (n + n_head)):.0f} tok/s with all logits, {rate / (2 * n):.0f} without; "
        f"LoRA training step {rate / (4 * n):.0f} tok/s"
    )

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(100, 40_000, (args.batch, args.tokens), generator=g)
    with torch.no_grad():
        model(input_ids=ids)
        t = time.perf_counter()
        model(input_ids=ids)
    fwd = ids.numel() / (time.perf_counter() - t)
    print(
        f"bare forward ({args.batch} x {args.tokens}, all logits):  {fwd:7.0f} tok/s  "
        f"{fwd * 2 * (n + n_head) / rate:5.0%}"
    )

    # likelihood ranking: a prompt of `tokens` + 10 candidate answers of 16 tokens, one packed forward
    prompt = ids[0].tolist()
    comps = [torch.randint(100, 40_000, (16,), generator=g).tolist() for _ in range(10)]
    score_packed(model, prompt, comps)
    t = time.perf_counter()
    score_packed(model, prompt, comps)
    rank = (len(prompt) + 160) / (time.perf_counter() - t)
    print(f"likelihood ranking (1 prompt + 10 answers, packed):  {rank:7.0f} tok/s  {rank * 2 * n / rate:5.0%}")

    del model
    rows = [
        {"input_ids": r, "completion_mask": [0] * (args.tokens - 20) + [1] * 20}
        for r in torch.randint(100, 40_000, (args.batch * (args.steps + 1), args.tokens), generator=g).tolist()
    ]
    for dropout in (0.05, 0.0):
        sft = sft_tokens_per_s(args.model, rows, dropout, args.steps, "auto")
        print(f"SFT step, train_sft, LoRA r 16, dropout {dropout:.2f}:  {sft:7.0f} tok/s  {sft * 4 * n / rate:5.0%}")


if __name__ == "__main__":
    main()
