"""Render DVC plots of the workspace to PNG for the docs, exactly as `dvc plots show` draws them (Vega-Lite specs from
`dvc plots show --json`, rendered by vl-convert: no browser).

    python scripts/render_plots.py                       # the docs' charts -> docs/img/<plot>.png
    python scripts/render_plots.py same_n9_hr1 --out /tmp  # any plot ids of dvc.yaml (`dvc plots show --json` lists them)

Run it after `dvc repro` on the demo params, next to scripts/sync_readme.py, and look at what it wrote.
"""

import json
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from mllmrec.cli import run
from mllmrec.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["same_n9_hr_at_k", "sft_valid_hr", "grpo_reward_vs_valid"]  # the ones docs/demo.md and docs/training.md show


def main(
    plots: Annotated[list[str] | None, typer.Argument(help="plot ids; default: the docs' charts")] = None,
    out: Annotated[Path, typer.Option(help="folder for <plot>.png")] = ROOT / "docs/img",
) -> None:
    import vl_convert

    names = plots or DOCS
    shown = subprocess.run(
        [str(Path(sys.executable).parent / "dvc"), "plots", "show", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if shown.returncode:
        raise UserError(f"dvc plots show --json failed: {shown.stderr.strip()[-500:]}")
    data = json.loads(shown.stdout).get("data", {})
    missing = [n for n in names if not data.get(n)]
    if missing:
        raise UserError(f"no data for plot(s) {missing} (ids with data: {sorted(k for k, v in data.items() if v)})")
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = out / f"{name.replace('/', '_')}.png"  # a file's plot id is its path
        path.write_bytes(vl_convert.vegalite_to_png(data[name][0]["content"], scale=1))
        print(path)


if __name__ == "__main__":
    run(main)
