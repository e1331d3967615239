"""scripts/gpu_preflight.py: exits cleanly without CUDA; its checks run the stages' code (here on CPU); a failing
check is a FAIL row and exit 1, never a traceback that ends the preflight."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_preflight.py"
ROW = re.compile(r"^\| (?P<name>[^|]+) \| (?P<status>pass|FAIL|skip) \| (?P<secs>[\d.]+|-) \| (?P<mem>\d+|-) \| .* \|$")


def preflight(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600, check=False
    )


def rows(stdout: str) -> dict[str, str]:
    return {m["name"]: m["status"] for line in stdout.splitlines() if (m := ROW.match(line))}


@pytest.mark.skipif(torch.cuda.is_available(), reason="this box has CUDA: the no-CUDA path does not apply")
def test_without_cuda_it_says_so_and_exits_cleanly():
    r = preflight()
    assert r.returncode == 0 and "no CUDA device visible" in r.stdout and "| check |" not in r.stdout


@pytest.mark.slow
def test_the_checks_run_the_stages_code_and_print_the_table():
    r = preflight("--device", "cpu", "--dtype", "float32", "--steps", "2", "--rehearse")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    status = rows(r.stdout)
    assert list(status) == [
        "LoRA step (transformers + peft only)",
        "sft (train_sft, LoRA)",
        "grpo (train_grpo)",
        "likelihood ranking",
        "generation, transformers engine",
        "generation, vLLM engine",
        "grpo, vLLM colocate",
        "rehearsal paper-movielens",
    ]
    assert set(list(status.values())[:5]) == {"pass"} and status["generation, vLLM engine"] in {"pass", "skip"}
    # on CPU colocate and the CUDA rehearsal are skipped rows that say why (scripts/rehearse.py runs it on CPU)
    assert status["grpo, vLLM colocate"] == "skip" and status["rehearsal paper-movielens"] == "skip"


def test_a_failing_check_is_a_fail_row_and_exit_1():
    r = preflight("--device", "cpu", "--dtype", "float32", "--steps", "0")  # max_steps >= 1: SFT's params refuse
    assert r.returncode == 1 and "FAILED: sft (train_sft, LoRA)" in r.stdout
    status = rows(r.stdout)
    assert status["sft (train_sft, LoRA)"] == "FAIL" and status["grpo (train_grpo)"] == "skip"


def test_a_box_without_torch_gets_one_line():
    r = subprocess.run([sys.executable, "-S", str(SCRIPT)], capture_output=True, text=True, check=False)  # -S: no site
    assert r.returncode == 2 and r.stderr == ""
    assert r.stdout.startswith("gpu_preflight: not installed: torch, transformers, peft, accelerate")


def test_a_bare_box_runs_the_lora_step_and_lists_what_the_rest_needs(monkeypatch, capsys):
    """A GPU box with only torch/transformers/peft/accelerate: one real check, the others skip rows that say why."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_preflight", SCRIPT)
    preflight_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(preflight_module)
    monkeypatch.setattr(preflight_module, "PIPELINE", ("numpy", "no_such_package_here"))
    assert preflight_module.main(["--device", "cpu", "--dtype", "float32", "--steps", "1"]) == 0
    status = rows(capsys.readouterr().out)
    assert status.pop("LoRA step (transformers + peft only)") == "pass"
    assert list(status) == list(preflight_module.PIPELINE_CHECKS) and set(status.values()) == {"skip"}
