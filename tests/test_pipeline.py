"""The DVC pipeline for real, in a throwaway copy of the project: repro, no-op repro, targeted reruns, experiments."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def sh(cmd: str, cwd: Path, stdout_only: bool = False) -> str:
    proc = subprocess.run(cmd, shell=True, cwd=cwd, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout if stdout_only else proc.stdout + proc.stderr


def ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def copy_project(dst: Path, edit_params=None) -> Path:
    """The working tree's git-visible files in a fresh git repo; `edit_params(params)` changes params.yaml first."""
    files = sh("git ls-files --cached --others --exclude-standard", ROOT).split()
    for f in files:
        if (ROOT / f).is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dst / f)
    if edit_params:
        params = yaml.safe_load((dst / "params.yaml").read_text())
        edit_params(params)
        (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("git init -q && git add -A && git -c user.name=t -c user.email=t@t commit -qm init", dst)
    return dst


def quick(params: dict) -> None:
    """Keep the baseline tests quick (the code path is the same): a smaller SASRec, fewer bootstrap resamples."""
    params["baselines"]["sasrec"].update(epochs=3, hidden=16)
    params["eval"]["bootstrap"] = 50


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return copy_project(tmp_path_factory.mktemp("project"), quick)


BASELINES = "baseline@random baseline@popularity sasrec"  # the whole demo: test_demo_rerun_from_scratch...


def test_repro_then_noop_then_targeted_rerun(project):
    first = sh(f"dvc repro {BASELINES}", project)
    assert ran(first) == {"ingest", "split", "baseline@random", "baseline@popularity", "sasrec"}
    sasrec = json.loads((project / "metrics/sasrec.json").read_text())
    assert set(sasrec) == {"n9", "n99"} and sasrec["n9"]["n"] == 300
    assert 0 <= sasrec["n99"]["HR@10_lo"] <= sasrec["n99"]["HR@10"] <= sasrec["n99"]["HR@10_hi"] <= 1
    methods = ["random", "popularity", "sasrec"]
    table = sh(
        "python stages/report.py "
        + " ".join(f"metrics/{m}.json" for m in methods)
        + "".join(f" --predictions data/predictions/{m}.parquet" for m in methods),
        project,
    )
    assert "sasrec" in table and "sasrec" in (project / "plots/report/own_samples_n99.csv").read_text()
    assert "sasrec" in (project / "plots/report/same_samples_n9.csv").read_text()
    shown = json.loads(sh("dvc metrics show --json", project, stdout_only=True))[""]["data"]
    # the per-method files are stage metrics too (so the run-cache can save their stages): headline + cot + one each
    assert {"metrics/headline.json", "metrics/cot.json", "metrics/sasrec.json", "metrics/random.json"} <= set(shown)
    headline = shown["metrics/headline.json"]["data"]
    assert headline["n9"]["n"] == 300 and set(headline["n9"]["sasrec"]) == {"HR@1", "HR@5", "NDCG@10"}

    assert ran(sh(f"dvc repro {BASELINES}", project)) == set()  # nothing changed: nothing runs

    text = (project / "params.yaml").read_text().replace("    hidden: 16", "    hidden: 24")
    (project / "params.yaml").write_text(text)
    assert ran(sh(f"dvc repro {BASELINES}", project)) == {"sasrec"}  # a SASRec param reruns only SASRec

    (project / "params.yaml").write_text(text.replace("    hidden: 24", "    hidden: 16"))
    back = sh(f"dvc repro {BASELINES}", project)  # params seen before: DVC's run-cache restores, nothing retrains
    assert ran(back) == set() and "Stage 'sasrec' is cached - skipping run" in back
    assert json.loads((project / "metrics/sasrec.json").read_text()) == sasrec


def test_experiment_changes_only_downstream(project):
    sh(f"dvc repro {BASELINES} && git add -A && git -c user.name=t -c user.email=t@t commit -qm run", project)
    out = sh("dvc exp run -S baselines.popularity.seed=7 baseline@popularity sasrec", project)
    assert ran(out) == {"baseline@popularity"}
    shown = sh("dvc exp show --no-pager --csv", project)
    assert "baselines.popularity.seed" in shown
    assert "HR@1_lo" in shown  # per-method files (with CIs) are stage metrics...
    short = sh("dvc exp show --no-pager --csv --drop 'metrics/(?!headline|cot)'", project)
    assert "HR@1_lo" not in short and "baselines.popularity.seed" in short  # ...and README's --drop hides them


def output_hashes(project: Path) -> dict[str, str]:
    """stage/output -> md5 of every output of every stage, as dvc.lock records them (folders: DVC's folder hash)."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    return {f"{stage}/{o['path']}": o["md5"] for stage, entry in lock.items() for o in entry.get("outs", [])}


def test_demo_rerun_from_scratch_is_byte_identical(tmp_path):
    """The README's claim for the whole demo, LLM branch included: the same code, params and inputs on the same
    machine give the same bytes. The second run starts from nothing: caption/CoT caches and trainer checkpoints are
    deleted first (otherwise it would reuse them rather than recompute)."""
    demo = copy_project(tmp_path / "demo")
    first = sh("dvc repro", demo)
    # (report may be skipped: its outputs are git-tracked, so when its inputs come out as committed it is up to date)
    assert {"textualize", "draft_cot", "sft", "grpo", "evaluate@grpo"} <= ran(first)
    before = output_hashes(demo)
    params = yaml.safe_load((demo / "params.yaml").read_text())
    for scratch in [
        *(params[s]["cache_dir"] for s in ("textualize", "draft_cot", "refine_cot", "assess_cot")),
        "checkpoints",
    ]:
        shutil.rmtree(demo / scratch)
    second = sh("dvc repro -f", demo)
    assert ran(first) <= ran(second)
    after = output_hashes(demo)
    assert before.keys() == after.keys() and len(before) >= 40
    assert [o for o in before if before[o] != after[o]] == [], "outputs that differ between two identical runs"
