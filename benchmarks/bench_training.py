"""Training and ranking throughput next to the box's matmul roofline, measured side by side in one run.

    python benchmarks/bench_training.py                      # SmolLM2-135M (dvc repro models), bf16 if native
    python benchmarks/bench_training.py --batch 4 --tokens 550 --steps 4

Prints tokens/s and the share of the roofline for: a bare forward, LoRA SFT through `mllmrec.training.sft.train_sft` (the sft
stage's code: TRL SFTTrainer) with LoRA dropout 0.05 and 0.0, and likelihood ranking through
`mllmrec.evaluation.likelihood.score_candidates` (the evaluate stage's scorer). Roofline = the measured dense matmul rate
divided by the FLOPs per token: 2·N for a forward, 4·N for a LoRA step (forward + input gradients; the frozen
weights get no weight gradient), N = parameters outside the embedding table. Attention FLOPs are left out, which
flatters nothing: at these lengths they are a few % of the total.
"""

import argparse
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def matmul_rate(dtype, n: int = 2048, reps: int = 10) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t)


def sft_tokens_per_s(model_dir: Path, rows: list[dict], dropout: float, steps: int, dtype: str) -> float:
    from transformers import AutoTokenizer

    from mllmrec.config import SftParams
    from mllmrec.training.sft import train_sft

    tok = AutoTokenizer.from_pretrained(model_dir)
    with tempfile.TemporaryDirectory() as tmp:
        batch = len(rows) // (steps + 1)
        params = SftParams(lora={"r": 16, "alpha": 16, "dropout": dropout}, lr=1e-4, max_steps=steps + 1,
                           batch_size=batch, grad_accum=1, dtype=dtype, save_steps=10_000, logging_steps=1,
                           checkpoint_dir=f"{tmp}/ckpt", monitor={"every": 0})
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
    n = sum(p.numel() for name, p in model.named_parameters() if "embed_tokens" not in name)
    n += model.config.vocab_size * model.config.hidden_size  # the (tied) LM head is a matmul on every position
    rate = matmul_rate(dtype)
    print(f"{args.model.name}: {n / 1e6:.0f} M matmul params, {str(dtype).removeprefix('torch.')}, "
          f"{torch.get_num_threads()} threads; dense matmul {rate / 1e9:.0f} GFLOP/s")
    print(f"roofline: forward {rate / (2 * n):.0f} tok/s, LoRA training step {rate / (4 * n):.0f} tok/s")

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(100, 40_000, (args.batch, args.tokens), generator=g)
    with torch.no_grad():
        model(input_ids=ids)
        t = time.perf_counter()
        model(input_ids=ids)
    fwd = ids.numel() / (time.perf_counter() - t)
    print(f"bare forward ({args.batch} x {args.tokens}, all logits):  {fwd:7.0f} tok/s  {fwd * 2 * n / rate:5.0%}")

    # likelihood ranking: a prompt of `tokens` + 10 candidate answers of 16 tokens, one packed forward
    prompt = ids[0].tolist()
    comps = [torch.randint(100, 40_000, (16,), generator=g).tolist() for _ in range(10)]
    score_packed(model, prompt, comps)
    t = time.perf_counter()
    score_packed(model, prompt, comps)
    rank = (len(prompt) + 160) / (time.perf_counter() - t)
    print(f"likelihood ranking (1 prompt + 10 answers, packed):  {rank:7.0f} tok/s  {rank * 2 * n / rate:5.0%}")

    del model
    rows = [{"input_ids": r, "completion_mask": [0] * (args.tokens - 20) + [1] * 20}
            for r in torch.randint(100, 40_000, (args.batch * (args.steps + 1), args.tokens), generator=g).tolist()]
    for dropout in (0.05, 0.0):
        sft = sft_tokens_per_s(args.model, rows, dropout, args.steps, "auto")
        print(f"SFT step, train_sft, LoRA r 16, dropout {dropout:.2f}:  {sft:7.0f} tok/s  {sft * 4 * n / rate:5.0%}")


if __name__ == "__main__":
    main()
