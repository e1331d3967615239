"""The paper presets validate against the pydantic params models and render the DVC DAG in a temp copy (no GPU)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ruamel.yaml import YAML

from mllmrec.config import GrpoParams, ModelsParams, SplitParams, section_model
from mllmrec.errors import UserError
from mllmrec.training.run import check_budget

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted((ROOT / "presets").glob("paper-*.yaml"))
sys.path.insert(0, str(ROOT / "scripts"))
from apply_preset import apply

PAPER = {  # dataset: (grpo cot_prob, grpo epochs, min_inter, beta) from the authors' scripts (DESIGN.md)
    "movielens": (0.05, 3, 10, 0.10),
    "microlens": (0.10, 3, 10, 0.05),
    "netflix": (0.05, 2, 5, 0.20),
}


@pytest.mark.parametrize("preset", sorted((ROOT / "presets").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_preset_validates(preset, tmp_path):
    """Every section a preset touches, merged onto params.yaml, passes its pydantic model (a stale key fails)."""
    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    merged = apply(preset, params)
    assert set(yaml.safe_load(preset.read_text())) <= set(merged)
    for name, body in merged.items():
        section_model(name).model_validate(body)


@pytest.mark.parametrize(
    "chain", [["cpu-study", "ablation"], ["cpu-study", "cpu-study-items"], ["paper-movielens"]], ids="+".join
)
def test_the_written_params_file_reads_back_as_merged(chain, tmp_path):
    """The file apply writes parses to exactly what it merged: a list replacing a section's last key once landed after
    the comment block below it, inside the next section (ruamel), and params.yaml no longer parsed."""
    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    for name in chain:
        merged = apply(ROOT / f"presets/{name}.yaml", params)
        assert YAML(typ="safe").load(params.read_text()) == merged  # YAML 1.2, as apply reads it (PyYAML: 1e-05 a str)


def test_cpu_study_preset_fits_its_data(tmp_path):
    """presets/cpu-study.yaml validates, scores every test user, and its step budgets fit the data it makes."""
    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    merged = apply(ROOT / "presets/cpu-study.yaml", params)
    assert merged["evaluate"]["max_samples"] is None and merged["evaluate"]["num_negatives"] == [9]
    users = 300  # the bundled sample (sample/ml-latest-small-posters): one train window per user and window
    train = users * merged["split"]["train_windows"]
    check_budget(
        "sft", merged["sft"]["max_steps"], merged["sft"]["batch_size"], merged["sft"]["epochs"], train, "samples"
    )
    g = GrpoParams.model_validate(merged["grpo"])
    check_budget("grpo", g.max_steps, g.batch_size // g.num_generations, g.epochs, train, "prompts")
    assert merged["sft"]["monitor"]["samples"] <= users and g.monitor.samples <= users  # one valid sample per user


def test_three_presets_exist():
    assert {p.stem for p in PRESETS} == {f"paper-{d}" for d in PAPER}


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_preset_validates_with_the_paper_values(preset, tmp_path):
    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    before = params.read_text()
    merged = apply(preset, params)
    assert params.read_text() != before and "# " in params.read_text()  # written, comments kept
    for name, body in merged.items():  # every section validates with its own model
        assert section_model(name) is not None, name
        section_model(name).model_validate(body)

    cot, epochs, min_inter, beta = PAPER[preset.stem.removeprefix("paper-")]
    g = GrpoParams.model_validate(merged["grpo"])
    assert (g.beta, g.epochs, g.num_generations, g.max_steps) == (beta, epochs, 8, None)
    assert (g.lora.r, g.lora.alpha, g.lora.target_modules) == (16, 32, "all-linear")
    assert (g.temperature, g.top_p, g.max_completion_length, g.lr, g.use_vllm) == (0.9, 0.9, 128, 1e-5, True)
    assert merged["augment"]["grpo_cot_prob"] == cot and merged["augment"]["sft_cot_prob"] == 0.1
    assert SplitParams.model_validate(merged["split"]).min_inter == min_inter
    m = ModelsParams.model_validate(merged["models"])
    assert m.captioner.engine == "vllm" and m.captioner.model == "Qwen/Qwen3-VL-8B-Instruct"
    assert m.policy.model == "Qwen/Qwen3-4B"
    assert m.editor.engine == "openai" and m.editor.api_key_env == "DEEPSEEK_API_KEY"  # a name, never the key
    # every cut the CPU demo makes is undone: whole captions, all users, both candidate sets, full training
    assert merged["prompt"]["max_caption_words"] is None and merged["evaluate"]["max_samples"] is None
    assert merged["evaluate"]["num_negatives"] == [9, 99] and merged["sft"]["max_steps"] is None
    assert merged["sft"]["monitor"]["samples"] > 8 and merged["grpo"]["monitor"]["samples"] > 8  # not the demo curves
    assert merged["sft"]["lora"]["dropout"] == merged["grpo"]["lora"]["dropout"] == 0.05  # the demo trains without
    assert merged["draft_cot"]["max_samples"] is None and merged["augment"]["max_samples"] is None
    assert g.max_samples is None and m.policy.dtype == "auto"


def test_bad_preset_fails_before_writing(tmp_path):
    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    before = params.read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"grpo": {"betta": 0.1}}))
    with pytest.raises(UserError, match="betta"):
        apply(bad, params)
    bad.write_text(yaml.safe_dump({"grpo": {"batch_size": 3, "grad_accum": 1, "num_generations": 8}}))
    with pytest.raises(UserError, match="not divisible"):
        apply(bad, params)
    bad.write_text(yaml.safe_dump({"grpoo": {"beta": 0.1}}))
    with pytest.raises(UserError, match="unknown section"):
        apply(bad, params)
    assert params.read_text() == before


@pytest.mark.slow
def test_preset_renders_the_dvc_dag(tmp_path):
    """`dvc dag` and `dvc status` work on a temp copy of the project with the preset applied (no GPU, no data)."""
    proj = tmp_path / "proj"
    proj.mkdir()
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, proj / name)
    for d in ("stages", "src", "configs"):
        shutil.copytree(ROOT / d, proj / d, ignore=shutil.ignore_patterns("__pycache__"))
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run([*dvc, "init", "--no-scm", "-q"], cwd=proj, check=True)
    apply_cmd = [sys.executable, str(ROOT / "scripts/apply_preset.py"), str(ROOT / "presets/paper-movielens.yaml")]
    r = subprocess.run(apply_cmd, cwd=proj, capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    dag = subprocess.run([*dvc, "dag", "--md"], cwd=proj, capture_output=True, text=True, check=False)
    assert dag.returncode == 0, dag.stderr
    assert "grpo" in dag.stdout and "sft" in dag.stdout
    status = subprocess.run([*dvc, "status", "grpo"], cwd=proj, capture_output=True, text=True, check=False)
    assert status.returncode == 0, status.stderr
    assert "grpo" in status.stdout
