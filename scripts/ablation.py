"""The paper's claims as a queued grid of DVC experiments, and one comparison table of them.

    python scripts/ablation.py queue          # presets -> params.yaml, shared CoT stages, one queued exp per arm
    dvc queue start -j 1                      # 2 cores: one arm at a time (`dvc queue status` / `logs <arm>`)
    python scripts/ablation.py table          # metrics/ablation.md + plots/ablation/*.csv from the finished arms
    python scripts/ablation.py queue --preset presets/paper-movielens.yaml    # the same grid at the paper's scale
    python scripts/ablation.py queue --only no-cot --only captions-history    # some arms, in this order

`queue` applies presets/cpu-study.yaml then presets/ablation.yaml to params.yaml (git shows the diff), validates every
arm's overrides (configs/ablation-arms.yaml) before anything runs, runs the stages every arm shares up to assess_cot
in the workspace (their caches are `persist: true`, which DVC's run-cache skips; in the queued workspace's dvc.lock
they are then up to date), and queues `dvc exp run -n <arm> -S ... evaluate@sft evaluate@grpo` (what the table
reads; stages after assess_cot that an arm does not change come from DVC's run-cache). Each arm is its
own experiment: a failed one is marked in the table with the error line of its log, the others are unaffected.

`table` reads each arm's files at its experiment commit (git for metrics/plots, `dvc.api` for cached outputs) and
writes the same bytes every time for the same experiments (seeded bootstraps).
"""

import copy
import io
import json
import os
import shutil
import subprocess
import sys
from enum import Enum
from pathlib import Path

import polars as pl
from apply_preset import apply, validate
from ruamel.yaml import YAML

from mllmrec import paths
from mllmrec.cli import run
from mllmrec.errors import UserError
from mllmrec.experiments import ablation, grid

ROOT = Path(__file__).resolve().parents[1]
ARMS = ROOT / "configs/ablation-arms.yaml"
PRESETS = [ROOT / "presets/cpu-study.yaml", ROOT / "presets/ablation.yaml"]
SHARED = ["assess_cot"]  # the persist-cache stages (textualize, draft/refine/assess) every arm starts from
# what the table reads (the two policies' predictions, and upstream of them everything it needs): an arm skips the
# baselines and the zero-shot evaluation, which no arm changes except by its prompt and the table does not compare
TARGETS = ["evaluate@sft", "evaluate@grpo"]


def sh(*cmd: str, capture: bool = False) -> str:
    r = subprocess.run(cmd, check=False, cwd=ROOT, text=True, capture_output=capture)
    if r.returncode:
        raise UserError(f"`{' '.join(cmd)}` failed (exit {r.returncode}){': ' + r.stderr[-500:] if capture else ''}")
    return r.stdout if capture else ""


def arm_params(base: dict, overrides: dict) -> dict:
    """params.yaml as the arm's experiment will see it (dotted keys set into a copy)."""
    params = copy.deepcopy(base)
    for dotted, value in overrides.items():
        *path, key = dotted.split(".")
        node = params
        for p in path:
            if not isinstance(node.get(p), dict):
                raise UserError(f"{ARMS}: override {dotted!r}: params.yaml has no section {p!r} there")
            node = node[p]
        if key not in node:
            raise UserError(f"{ARMS}: override {dotted!r}: no key {key!r} in params.yaml (a typo, or add it there)")
        node[key] = value
    return params


def set_flag(key: str, value) -> str:
    buf = io.StringIO()
    YAML(typ="safe").dump(value, buf)  # DVC parses -S values as YAML: true, 0.5, history
    return f"{key}={buf.getvalue().strip().removesuffix('...').strip()}"


def queue(arms_file: Path, presets: list[Path], only: list[str]) -> None:
    """Apply the presets, run the shared CoT stages, queue one experiment per arm (those of `only`, in its order)."""
    reference, arms = grid.load_arms(arms_file)
    unknown = [a for a in only if a not in arms]
    if unknown:
        raise UserError(f"--only {unknown}: not arms of {arms_file} ({', '.join(arms)})")
    existing = set(grid.experiment_refs(ROOT))
    if only and reference not in only and reference not in existing:
        raise UserError(
            f"--only leaves out the reference arm {reference!r}, which has no finished experiment: the "
            "table compares every arm with it; add `--only " + reference + "`"
        )
    arms = {a: arms[a] for a in only} if only else arms
    taken = existing & set(arms)
    if taken:
        raise UserError(
            f"experiments {sorted(taken)} exist already; `dvc exp remove {' '.join(sorted(taken))}` to run them again"
        )
    params, draft = None, ROOT / "params.yaml.ablation"  # presets and arms checked on a copy: a bad arm writes nothing
    shutil.copy(ROOT / "params.yaml", draft)
    try:
        for preset in presets:  # in order: a later preset's keys win
            params = apply(preset, draft)
        for name, overrides in arms.items():  # every arm validated before anything runs or is queued
            validate(arm_params(params, overrides), f"{arms_file} arm {name!r}")
        os.replace(draft, ROOT / "params.yaml")
    finally:
        draft.unlink(missing_ok=True)
    sh("dvc", "repro", *SHARED)
    for name, overrides in arms.items():
        sh(
            "dvc",
            "exp",
            "run",
            "--queue",
            "-n",
            name,
            *[a for k, v in overrides.items() for a in ("-S", set_flag(k, v))],
            *TARGETS,
        )
    print(
        f"queued {len(arms)} arms (reference {reference}); next: `dvc queue start -j 1`, then "
        "`python scripts/ablation.py table`",
        file=sys.stderr,
    )


def table(arms_file: Path, out: Path = ROOT / paths.ABLATION_MD, plots: Path = ROOT / paths.ABLATION_PLOTS) -> None:
    """The comparison table of the finished arms (markdown + DVC plot data)."""
    reference, arms = grid.load_arms(arms_file)
    refs = grid.experiment_refs(ROOT)
    failed = grid.failed_tasks(sh("dvc", "queue", "status", capture=True))
    runs = {}
    for name in arms:
        if name in refs:
            runs[name] = grid.read_arm(ROOT, refs[name])
        elif name in failed:  # the stage's red line from the arm's log; the other arms are unaffected
            runs[name] = {"error": "failed: " + grid.last_error(sh("dvc", "queue", "logs", name, capture=True))}
        else:
            runs[name] = {"error": "no finished experiment (queued, running, or not queued)"}
    text, plot_rows = ablation.report(runs, reference)
    out.write_text(text)
    plots.mkdir(parents=True, exist_ok=True)
    for stem, rows in plot_rows.items():
        pl.DataFrame(rows).write_csv(plots / f"{stem}.csv")
    print(json.dumps({"written": [str(out), str(plots)]}), file=sys.stderr)


class Action(str, Enum):
    queue = "queue"
    table = "table"


def main(action: Action, arms: Path = ARMS, preset: list[Path] = PRESETS, only: list[str] = []) -> None:  # noqa: B006
    """`--preset` (repeatable) replaces the default presets/cpu-study.yaml + presets/ablation.yaml, e.g.
    `--preset presets/paper-movielens.yaml` for the grid at the paper's scale on a GPU box. `--only ARM`
    (repeatable) queues just those arms, in that order (the reference arm too unless it has finished already)."""
    queue(arms, preset, only) if action is Action.queue else table(arms)


if __name__ == "__main__":
    run(main)
