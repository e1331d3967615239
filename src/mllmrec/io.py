"""Atomic writers: a killed stage never leaves a half-written output behind."""

import json
import os
from pathlib import Path

import polars as pl

from mllmrec.errors import UserError


def write_parquet(df: pl.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    # no statistics timestamps in pyarrow/polars parquet: same frame -> same bytes
    df.write_parquet(tmp, compression="zstd", statistics=True)
    os.replace(tmp, path)


def write_text(text: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_csv(rows: list[dict] | pl.DataFrame, path: Path) -> None:
    """Rows of equal keys, or a frame, as a CSV (DVC plot data); an empty list writes an empty file."""
    import csv
    import io

    if isinstance(rows, pl.DataFrame):
        return write_text(rows.write_csv(), path)
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    write_text(buf.getvalue(), path)


def write_json(obj: object, path: Path) -> None:
    write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", path)


def require(path: Path, stage: str | None = None) -> Path:
    """An upstream artifact that must exist; the one "not found" message, naming the stage that makes it."""
    if not path.exists():
        how = f"`dvc repro {stage}`" if stage else "`dvc repro` for the stage that writes it"
        raise UserError(f"{path}: not found; run {how} first")
    return path


def read_parquet(path: Path, stage: str | None = None) -> pl.DataFrame:
    return pl.read_parquet(require(path, stage))


def read_json(path: Path, stage: str | None = None):
    return json.loads(require(path, stage).read_text())
