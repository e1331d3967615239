"""The ablation grid's arms as DVC experiments: the arms file, which arms finished or failed, and one finished arm
read back at its experiment commit (git for metrics and plots, DVC for cached outputs).

    from mllmrec.experiments.grid import experiment_refs, load_arms, read_arm
    reference, arms = load_arms(Path("configs/ablation-arms.yaml"))
    runs = {name: read_arm(root, sha) for name, sha in experiment_refs(root).items() if name in arms}

scripts/ablation.py queues the arms and reads them back with this; mllmrec.experiments.ablation makes the table.
"""

import io
import json
import os
import re
import subprocess
from pathlib import Path

import polars as pl

from mllmrec import paths
from mllmrec.config import read_yaml
from mllmrec.cot.reports import CotMetrics
from mllmrec.errors import UserError
from mllmrec.reports import from_dict
from mllmrec.training.augment import AugmentReport

STAGES = ("sft", "grpo")  # each arm's two policies: SFT only, SFT + GRPO (rows of one experiment)


def load_arms(path: Path) -> tuple[str, dict[str, dict]]:
    """(reference arm, {arm: {dotted.key: value}}) from the arms file, checked."""
    data = read_yaml(path, "arms file (configs/ablation-arms.yaml is the default)")
    arms, reference = data.get("arms"), data.get("reference")
    if not isinstance(arms, dict) or not arms:
        raise UserError(f"{path}: expected `arms:` mapping arm names to `-S` overrides ({{dotted.key: value}})")
    for name, overrides in arms.items():
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", str(name)):
            raise UserError(f"{path}: arm {name!r}: names are experiment names: lowercase letters, digits, '-'")
        if not isinstance(overrides, dict | type(None)):
            raise UserError(f"{path}: arm {name!r}: expected a mapping of dotted params keys, got {overrides!r}")
        arms[name] = overrides or {}
    if reference not in arms:
        raise UserError(f"{path}: reference {reference!r} is not one of the arms {sorted(arms)}")
    return reference, arms


def experiment_refs(root: Path) -> dict[str, str]:
    """experiment name -> commit of its newest run (DVC keeps experiments as git refs under refs/exps/)."""
    out = subprocess.run(
        ["git", "for-each-ref", "refs/exps", "--format=%(committerdate:unix) %(objectname) %(refname)"],
        cwd=root,
        text=True,
        capture_output=True,
        check=True,
    ).stdout
    refs: dict[str, tuple[int, str]] = {}
    for line in out.splitlines():
        when, sha, ref = line.split(" ", 2)
        name = ref.rsplit("/", 1)[-1]
        if name not in refs or int(when) > refs[name][0]:
            refs[name] = (int(when), sha)
    return {name: sha for name, (_, sha) in refs.items()}


def failed_tasks(queue_status: str) -> set[str]:
    """Names of the arms `dvc queue status` lists as failed (its table: Task Name Created Status)."""
    return {
        cols[1]
        for line in queue_status.splitlines()
        if (cols := line.split()) and len(cols) >= 4 and cols[-1] == "Failed"
    }


def last_error(log: str) -> str:
    """The line of a failed arm's log that says why: the stage's red `error:` line, else the log's last line."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("error:", "ERROR:"))]
    return (errors or lines or ["(empty log)"])[-1][:300]


# ---- reading one arm at its experiment commit ----
def _git_text(root: Path, sha: str, path: str) -> str:
    r = subprocess.run(["git", "show", f"{sha}:{path}"], check=False, cwd=root, text=True, capture_output=True)
    if r.returncode:
        raise UserError(f"experiment {sha[:7]}: {path} is not in its commit ({r.stderr.strip()[:200]})")
    return r.stdout


def _dvc_bytes(root: Path, sha: str, path: str) -> bytes:
    import dvc.api

    try:
        with dvc.api.open(path, repo=str(root), rev=sha, mode="rb") as f:
            return f.read()
    except Exception as e:  # noqa: BLE001 - missing from the local cache, or not an output at that commit
        raise UserError(
            f"experiment {sha[:7]}: cannot read {path} ({type(e).__name__}: {e}); `dvc exp pull` or rerun the arm"
        ) from None


def read_arm(root: Path, sha: str) -> dict:
    """Everything the table needs from one finished experiment."""

    def series(plots_dir: Path, name: str) -> pl.DataFrame:
        """One DVCLive series of a training stage (columns step, <name>)."""
        text = _git_text(root, sha, paths.live_series(plots_dir, name).as_posix())
        return pl.read_csv(io.StringIO(text), separator="\t")

    def parquet(path: Path) -> pl.DataFrame:
        return pl.read_parquet(io.BytesIO(_dvc_bytes(root, sha, path.as_posix())))

    def report(path: Path, text: str | bytes, cls: type):
        return from_dict(cls, json.loads(text), f"experiment {sha[:7]}: {path}")

    jsonl = _dvc_bytes(root, sha, paths.GRPO_COMPLETIONS.as_posix()).decode()
    return {
        "sha": sha,
        "predictions": {s: parquet(paths.predictions(s)) for s in STAGES},
        "grpo_curve": series(paths.GRPO_LIVE_PLOTS, "reward"),
        "sft_valid": series(paths.SFT_LIVE_PLOTS, "valid_HR@1"),
        "grpo_valid": series(paths.GRPO_LIVE_PLOTS, "valid_HR@1"),
        "cot": report(paths.COT_METRICS, _git_text(root, sha, paths.COT_METRICS.as_posix()), CotMetrics),
        "augment": report(paths.AUGMENT_REPORT, _dvc_bytes(root, sha, paths.AUGMENT_REPORT.as_posix()), AugmentReport),
        "completions": [json.loads(line) for line in jsonl.splitlines() if line.strip()],
        "grpo_samples": parquet(paths.GRPO_SAMPLES),
        "titles": dict(parquet(paths.ITEMS).select("item_id", "title").iter_rows()),
        # outputs hold no durations (same run, same bytes): the experiment commit's time says when the arm ended
        "finished": subprocess.run(
            ["git", "show", "-s", "--format=%cd", "--date=format-local:%H:%M:%S", sha],
            cwd=root,
            text=True,
            capture_output=True,
            check=True,
            env={**os.environ, "TZ": "UTC"},
        ).stdout.strip(),
    }
