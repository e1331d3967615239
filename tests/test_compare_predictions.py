"""scripts/compare_predictions.py: two runs' predictions paired on the same samples, the report's test, refusals."""

import subprocess
import sys
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]


def preds(path: Path, ranks: list[int], protocol: str | None = "likelihood") -> Path:
    df = pl.DataFrame(
        {
            "sample_id": [f"u{i}:test" for i in range(len(ranks))],
            "target_rank": ranks,
            "num_negatives": [9] * len(ranks),
        }
    )
    (df.with_columns(protocol=pl.lit(protocol)) if protocol else df).write_parquet(path)
    return path


def compare(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "scripts/compare_predictions.py", *args], cwd=ROOT, capture_output=True, text=True, check=False
    )


def test_pairs_runs_and_a_baseline_without_protocol(tmp_path):
    a = preds(tmp_path / "a.parquet", [0] * 12 + [3] * 8)  # HR@1 0.60
    b = preds(tmp_path / "b.parquet", [5] * 20)  # HR@1 0.00: a wins 12 users, loses none -> McNemar p = 2 / 2**12
    base = preds(tmp_path / "base.parquet", [0] * 12 + [3] * 8, protocol=None)  # a baseline: identical hits
    out = compare(str(a), str(b), "--names", "new,old")
    assert out.returncode == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if line.startswith("| likelihood"))
    assert "| 0.600 | 0.000 |" in row and "+0.600" in row and "p=0.000" in row
    same = compare(str(a), str(base)).stdout
    assert "| likelihood | 1+9 | 20 | 0.600 | 0.600 | +0.000" in same and "p=1.000" in same


def test_refuses_runs_on_other_samples_in_one_line(tmp_path):
    a = preds(tmp_path / "a.parquet", [0, 1, 2])
    b = preds(tmp_path / "b.parquet", [0, 1])
    out = compare(str(a), str(b))
    assert out.returncode == 2 and "not the same samples" in out.stderr and "Traceback" not in out.stderr
    subset = compare(str(a), str(b), "--common")  # b scored a subset of a's users: paired on the 2 both hold
    assert subset.returncode == 0 and "on the 2 samples both hold (a: 1 left out, b: 0 left out)" in subset.stdout
    assert "| likelihood | 1+9 | 2 |" in subset.stdout
    missing = compare(str(tmp_path / "nope.parquet"), str(b))
    assert missing.returncode == 2 and "no such predictions file" in missing.stderr
