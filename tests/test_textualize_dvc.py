"""Team flow with real DVC and a real local-directory remote: one clone captions and pushes, a fresh clone pulls.

clone 1: `dvc repro` captions; +1 item -> `dvc repro` makes exactly 1 model call (the persist cache survived DVC
deleting the stage's outputs); commit, `dvc push`. clone 2 (fresh `git clone`): `MLLMREC_CACHE_ONLY=1 dvc repro
--pull` gets byte-identical captions without building any engine (cache-only mode would fail on a miss); clone 3
does the same with `dvc pull` + `dvc repro`; +1 item in clone 2 costs 1 call because the pulled cache answers the rest.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from textualize_util import PARAMS_YAML, POSTERS, PROMPT, items_frame, poster_ids

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def dvc_yaml() -> str:
    """The repo's own textualize stage (outs, persist, params), run with this interpreter; code deps dropped."""
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["textualize"]
    stage["cmd"] = f"{sys.executable} {REPO}/stages/textualize.py"
    stage["deps"] = [d for d in stage["deps"] if d.startswith("data/")]
    return yaml.safe_dump({"stages": {"textualize": stage}}, sort_keys=False)


def sh(cwd: Path, *args: str, env: dict | None = None) -> str:
    env = {
        **os.environ,
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
        **(env or {}),
    }
    cmd = [sys.executable, "-m", "dvc", *args[1:]] if args[0] == "dvc" else list(args)
    p = subprocess.run(cmd, check=False, cwd=cwd, env=env, capture_output=True, text=True)
    assert p.returncode == 0, f"{args}: {p.stdout}\n{p.stderr}"
    return p.stdout + p.stderr


def set_items(proj: Path, ids: list[str]) -> None:
    for i in ids:
        shutil.copy(POSTERS / f"{i}.jpg", proj / "dataset" / "posters" / f"{i}.jpg")
    items_frame(proj / "dataset", ids).write_parquet(proj / "data" / "ingest" / "items.parquet")
    sh(proj, "dvc", "add", "data/ingest/items.parquet")


def report(proj: Path) -> dict:
    return json.loads((proj / "data" / "textualize" / "report.json").read_text())


def test_second_clone_gets_captions_without_any_model(tmp_path):
    ids = poster_ids(13)
    one = tmp_path / "clone1"
    (one / "dataset" / "posters").mkdir(parents=True)
    (one / "data" / "ingest").mkdir(parents=True)
    sh(one, "git", "init", "-q", "-b", "main")
    sh(one, "dvc", "init", "-q")
    sh(one, "dvc", "remote", "add", "-d", "store", str(tmp_path / "remote"))
    (one / "dvc.yaml").write_text(dvc_yaml())
    (one / "params.yaml").write_text(PARAMS_YAML.format(prompt=PROMPT, batch_size=4))

    set_items(one, ids[:11])
    out = sh(one, "dvc", "repro")
    assert "Running stage 'textualize'" in out and report(one)["model_calls"] == 11
    set_items(one, ids[:12])  # DVC deletes captions.parquet before rerunning, but not the persist cache
    sh(one, "dvc", "repro")
    assert report(one)["model_calls"] == 1 and report(one)["cache_hits"] == 11
    sh(one, "git", "add", "-A")
    sh(one, "git", "commit", "-q", "-m", "captions")
    sh(one, "dvc", "push")

    two = tmp_path / "clone2"
    sh(tmp_path, "git", "clone", "-q", str(one), str(two))
    assert not (two / "data/textualize/captions.parquet").exists() and not (two / "data/textualize/cache").exists()
    out = sh(two, "dvc", "repro", "--pull", env={"MLLMREC_CACHE_ONLY": "1"})
    assert "Running stage" not in out  # restored from the remote: the stage command never ran
    for f in ["captions.parquet", "report.json"]:
        assert (two / "data/textualize" / f).read_bytes() == (one / "data/textualize" / f).read_bytes()
    assert len(list((two / "data/textualize/cache").glob("part-*.parquet"))) == 4  # 3 parts + 1 part
    assert "up to date" in sh(two, "dvc", "status")

    three = tmp_path / "clone3"  # the other documented route: plain `dvc pull`, then repro finds nothing to do
    sh(tmp_path, "git", "clone", "-q", str(one), str(three))
    sh(three, "dvc", "pull")
    assert "didn't change" in sh(three, "dvc", "repro", env={"MLLMREC_CACHE_ONLY": "1"})
    caps = "data/textualize/captions.parquet"
    assert (three / caps).read_bytes() == (one / caps).read_bytes()

    set_items(two, ids[:13])  # the teammate adds an item: only it is captioned
    out = sh(two, "dvc", "repro")
    assert "Running stage 'textualize'" in out
    assert report(two)["model_calls"] == 1 and report(two)["cache_hits"] == 12
