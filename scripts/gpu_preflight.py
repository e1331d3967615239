"""GPU preflight: a few minutes on a CUDA box before a multi-hour paper run, through the code the stages run.

    python scripts/gpu_preflight.py                 # a pass/fail table; exit 1 if any check failed
    python scripts/gpu_preflight.py --steps 3 --dtype bfloat16
    python scripts/gpu_preflight.py --device cpu --dtype float32   # the same checks on CPU (the test suite's run)

With a tiny Qwen3 model built on the fly (tests/tiny_models.py: no download) and the learning guards' synthetic data
(tests/learning_project.py), on the GPU: LoRA SFT steps (`train_sft`), GRPO steps (`train_grpo`, HF generation),
exact likelihood ranking (`likelihood_predictions`, checked against one-by-one scoring), batched generation
(the transformers engine) and, if vllm is installed, the vLLM engine and GRPO with vLLM colocate (skipped with a
message otherwise). Each row: pass/fail, seconds and peak GPU memory. On a machine without CUDA it says so and exits
0: nothing to check there. A box with only torch, transformers, peft and accelerate (no project lock) runs the first
check, a LoRA step with those alone, and lists the others as skipped with what they need.
"""

import importlib.util
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

# a bare GPU box: these four or one line; the pipeline's own checks need the project's lock (skip rows otherwise)
if missing := [m for m in ("torch", "transformers", "peft", "accelerate") if importlib.util.find_spec(m) is None]:
    print(f"gpu_preflight: not installed: {', '.join(missing)}: pip install -r requirements/gpu.txt")
    sys.exit(2)
PIPELINE = ("numpy", "typer", "pydantic", "polars", "trl", "datasets")  # what the stages' code imports

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tiny model builder and the guards' data
sys.path.append(str(Path(__file__).resolve().parents[1] / "src"))  # a checkout without `pip install -e .`


@dataclass
class Check:
    name: str
    status: str  # pass | FAIL | skip
    seconds: float = 0.0
    peak_mib: float | None = None
    detail: str = ""


def table(checks: list[Check]) -> str:
    """The markdown table the preflight prints.

    >>> print(table([Check("sft", "pass", 1.25, 812.0, "3 steps"), Check("vllm", "skip", detail="not installed")]))
    | check | status | seconds | peak GPU MiB | detail |
    |---|---|---|---|---|
    | sft | pass | 1.2 | 812 | 3 steps |
    | vllm | skip | - | - | not installed |
    """
    rows = ["| check | status | seconds | peak GPU MiB | detail |", "|---|---|---|---|---|"]
    for c in checks:
        secs = f"{c.seconds:.1f}" if c.status != "skip" else "-"
        mem = f"{c.peak_mib:.0f}" if c.peak_mib is not None else "-"
        rows.append(f"| {c.name} | {c.status} | {secs} | {mem} | {c.detail} |")
    return "\n".join(rows)


def run_check(name: str, fn, cuda: bool) -> Check:
    """Run one check; an exception is a FAIL with its first line, never the end of the preflight."""
    import torch

    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    try:
        detail = fn()
        status = "pass"
    except Exception as e:  # noqa: BLE001 - every failure becomes a table row
        traceback.print_exc()
        detail, status = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:160], "FAIL"
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    return Check(name, status, time.perf_counter() - t, peak, detail)


def rehearsal(cuda: bool) -> Check:
    """scripts/rehearse.py on paper-movielens, as a row: skipped with the reason when this box lacks what it needs."""
    import importlib.util
    import subprocess

    missing = [m for m in ("dvc", "polars", "trl", "vllm") if importlib.util.find_spec(m) is None]
    if missing:
        return Check(
            "rehearsal paper-movielens",
            "skip",
            detail=f"not installed: {', '.join(missing)} (install the project's lock: requirements/gpu.txt)",
        )
    if not cuda:
        return Check("rehearsal paper-movielens", "skip", detail="no CUDA: run scripts/rehearse.py directly")
    t = time.perf_counter()
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "scripts/rehearse.py", "presets/paper-movielens.yaml"],
        cwd=root,
        check=False,
        capture_output=True,
        text=True,
    )
    print(out.stdout[-8000:], out.stderr[-2000:])
    failed = [ln.split(" | ")[0].strip("| ") for ln in out.stdout.splitlines() if " | FAILED | " in ln]
    return Check(
        "rehearsal paper-movielens",
        "pass" if out.returncode == 0 else "FAIL",
        time.perf_counter() - t,
        None,
        "every stage ran" if out.returncode == 0 else f"failed: {', '.join(failed) or out.stderr[-160:]}",
    )


def lora_step(base: Path, device: str, dtype: str, steps: int):
    """LoRA steps on the tiny model with transformers + peft alone (what a bare GPU box has)."""

    def run():
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(base, dtype=getattr(torch, dtype)).to(device)
        model = get_peft_model(model, LoraConfig(r=8, target_modules="all-linear"))
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        ids = torch.randint(0, model.config.vocab_size, (4, 64), device=device)
        for _ in range(steps):
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
        return f"{steps} steps, {dtype}, loss {loss.item():.3f}"

    return run


PIPELINE_CHECKS = (
    "sft (train_sft, LoRA)",
    "grpo (train_grpo)",
    "likelihood ranking",
    "generation, transformers engine",
    "generation, vLLM engine",
    "grpo, vLLM colocate",
)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32", "float16"])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument(
        "--rehearse",
        action="store_true",
        help="then rehearse presets/paper-movielens.yaml end to end "
        "(scripts/rehearse.py: tiny models, this GPU, vLLM engines)",
    )
    args = ap.parse_args(argv)
    steps, dtype, device = args.steps, args.dtype, args.device
    import torch

    cuda = device == "cuda"
    if cuda and not torch.cuda.is_available():
        print(
            "gpu_preflight: no CUDA device visible (torch.cuda.is_available() is False): nothing to check here; "
            "run it on the GPU box, with the CUDA lock installed (requirements/gpu.txt)"
        )
        return 0
    from tiny_models import build_tiny_lm

    print(
        f"gpu_preflight: {torch.cuda.get_device_name(0)}, {torch.cuda.device_count()} GPU(s), torch "
        f"{torch.__version__}, CUDA {torch.version.cuda}, bf16 supported: {torch.cuda.is_bf16_supported()}"
        if cuda
        else f"gpu_preflight: on CPU ({device}), torch {torch.__version__}: the checks' code, not a GPU"
    )
    tmp = Path(tempfile.mkdtemp(prefix="gpu_preflight_"))
    base = build_tiny_lm(tmp / "tiny")
    checks = [run_check("LoRA step (transformers + peft only)", lora_step(base, device, dtype, max(steps, 1)), cuda)]
    if lacking := [m for m in PIPELINE if importlib.util.find_spec(m) is None]:
        checks += [
            Check(
                name,
                "skip",
                detail=f"needs {', '.join(lacking)}: pip install -r requirements/gpu.txt && pip install --no-deps -e .",
            )
            for name in PIPELINE_CHECKS
        ]
        return report(checks)
    return report(checks + pipeline_checks(tmp, base, steps, dtype, device, cuda, args.rehearse))


def report(checks: list[Check]) -> int:
    print(table(checks))
    failed = [c.name for c in checks if c.status == "FAIL"]
    print(f"gpu_preflight: {'FAILED: ' + ', '.join(failed) if failed else 'all checks passed or skipped'}")
    return 1 if failed else 0


def pipeline_checks(
    tmp: Path, base: Path, steps: int, dtype: str, device: str, cuda: bool, rehearse: bool
) -> list[Check]:
    """The checks that run the stages' own functions."""
    import numpy as np
    import torch
    from learning_project import PROMPT, TEXTS, samples
    from transformers import AutoTokenizer

    from mllmrec.config import EngineSpec, GrpoParams, SftParams
    from mllmrec.engines import build_engine
    from mllmrec.engines.base import SamplingParams
    from mllmrec.evaluation.likelihood import score_brute_force
    from mllmrec.evaluation.policy import generative_predictions, likelihood_predictions, load_policy
    from mllmrec.prompts import answer_line, build_messages, completion_template, render_prompt
    from mllmrec.training.grpo import grpo_rows, train_grpo
    from mllmrec.training.sft import sft_examples, tokenize_examples, train_sft

    tok = AutoTokenizer.from_pretrained(base)
    train, test = samples(64, "train", 0), samples(8, "test", 1)
    lora = {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"}
    checks = []

    def sft():
        rows, _ = tokenize_examples(sft_examples(train, TEXTS, tok, PROMPT, None), tok, 4096)
        params = SftParams(
            lora=lora,
            lr=1e-3,
            max_steps=steps,
            batch_size=4,
            grad_accum=1,
            dtype=dtype,
            save_steps=10_000,
            checkpoint_dir=str(tmp / "sft.ckpt"),
        )
        info = train_sft(rows, str(base), "", tok, params, tmp / "sft")
        return f"{info['global_step']} LoRA steps, {info['dtype']}, loss {info['last_loss']:.3f}"

    def grpo(vllm: bool = False):  # vllm: TRL's colocate generation, CUDA only (scripts/probe_trl_vllm_cpu.py)
        def run():
            name = "grpo-vllm" if vllm else "grpo"
            params = GrpoParams(
                model=str(tmp / "sft"),
                lora=lora,
                num_generations=4,
                max_steps=steps,
                batch_size=8,
                grad_accum=1,
                max_completion_length=16,
                dtype=dtype,
                save_steps=10_000,
                use_vllm=vllm,
                vllm_gpu_memory_utilization=0.2,
                vllm_max_model_length=2048,
                checkpoint_dir=str(tmp / f"{name}.ckpt"),
                monitor={"every": 0},
            )
            info = train_grpo(
                grpo_rows(train, TEXTS, tok, PROMPT, None), None, TEXTS, tok, params, PROMPT, None, tmp / name
            )
            return (
                f"{info['global_step']} steps x 8 completions ({'vLLM colocate' if vllm else 'HF generation'}), "
                f"{info['dtype']}"
            )

        return run

    def ranking():
        model, tk = load_policy(str(tmp / "sft"), "", torch.device(device), getattr(torch, dtype))
        preds = likelihood_predictions(model, tk, test, TEXTS, PROMPT, None, 8192)
        s = test.row(0, named=True)  # the packed scorer must equal one forward per candidate (bf16: loosely)
        messages = build_messages(s, TEXTS, PROMPT)
        prefix, suffix = completion_template(tk, messages, None)
        brute = score_brute_force(
            model,
            tk,
            render_prompt(tk, messages, None),
            [prefix + answer_line(c, TEXTS) + suffix for c in s["candidates"]],
        )
        gap = float(np.abs(np.array(preds["scores"][0].to_list()) - brute).max())
        if gap > 0.05 * max(1.0, float(np.abs(brute).max())):
            raise AssertionError(f"packed and one-by-one log-likelihoods differ by {gap:.3f}")
        return f"{test.height} samples x 10 candidates; packed vs one-by-one max gap {gap:.4f}"

    def generation(engine: str):
        def run():
            eng = build_engine(
                EngineSpec(
                    engine=engine,
                    model=str(tmp / "sft"),
                    device=device,
                    dtype=dtype,
                    batch_size=8,
                    max_model_len=2048,
                    gpu_memory_utilization=0.3,
                )
            )
            preds = generative_predictions(eng, test, TEXTS, PROMPT, SamplingParams(max_new_tokens=16), batch=8)
            return f"{preds.height} prompts batched, greedy"

        return run

    checks.append(run_check("sft (train_sft, LoRA)", sft, cuda))
    checks.append(
        run_check("grpo (train_grpo)", grpo(), cuda)
        if checks[-1].status == "pass"
        else Check("grpo (train_grpo)", "skip", detail="needs the SFT check's model")
    )
    for name, fn in (("likelihood ranking", ranking), ("generation, transformers engine", generation("transformers"))):
        checks.append(
            run_check(name, fn, cuda) if checks[0].status == "pass" else Check(name, "skip", detail="no SFT model")
        )
    try:
        import vllm  # noqa: F401

        checks.append(run_check("generation, vLLM engine", generation("vllm"), cuda))
        checks.append(
            run_check("grpo, vLLM colocate", grpo(vllm=True), cuda)
            if cuda and checks[0].status == "pass"
            else Check("grpo, vLLM colocate", "skip", detail="CUDA only (TRL weight sync)")
        )
    except ImportError:
        checks += [
            Check(name, "skip", detail="vllm not installed (pip install -e '.[gpu]')")
            for name in ("generation, vLLM engine", "grpo, vLLM colocate")
        ]
    if rehearse:
        checks.append(rehearsal(cuda))
    return checks


if __name__ == "__main__":
    sys.exit(main())
