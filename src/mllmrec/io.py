"""Atomic writers: a killed stage never leaves a half-written output behind.

Each write goes to a temp file next to the target, named per process and call (two runs of a stage at once never
share one), then replaces the target; a failed write (a full disk) removes its temp file and says so in one line.
"""

import errno
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl

from mllmrec.errors import UserError


@contextmanager
def atomic(path: Path) -> Iterator[Path]:
    """Yield a temp path to write; on success it replaces `path`, on any failure it is removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")  # `*.tmp`: cleaned if killed
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UserError(
                f"{path}: disk full while writing it ({e.strerror}); free space and rerun "
                f"(nothing half-written was left)"
            ) from None
        raise


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Like `atomic`, for a folder (a model): fill the yielded temp folder; on success it replaces `path`, on any
    failure it is removed. A kill before the swap leaves no half folder under `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# every Parquet the project writes (no statistics timestamps in polars parquet: same frame -> same bytes)
PARQUET = {"compression": "zstd", "statistics": True}


def write_parquet(df: pl.DataFrame, path: Path) -> None:
    with atomic(path) as tmp:
        df.write_parquet(tmp, **PARQUET)


def write_text(text: str, path: Path) -> None:
    with atomic(path) as tmp:
        tmp.write_text(text)


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
