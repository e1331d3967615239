"""The docs site builds with no broken link, anchor or included file, and the README stays a short, generated front page."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_docs_site_builds_strict(tmp_path):
    mkdocs = Path(sys.executable).parent / "mkdocs"  # the venv's, installed by the lock's dev extra
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "site/evidence/index.html").exists()


def test_readme_is_short_and_its_results_come_from_the_committed_metrics():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200
    proc = subprocess.run(
        [sys.executable, "scripts/sync_readme.py", "--check"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
