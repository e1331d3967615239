"""One entry point for every `ingest.format`: the raw (interactions, titles) frames of a dataset folder.

    inter, titles = read_dataset(Path(params.root), params, report)   # then mllmrec.data.ingest.normalize

Kept apart from mllmrec.data.ingest, whose readers the recbole and amazon modules build on, so that importing
ingest's helpers (split does) does not pull in every format.
"""

from pathlib import Path

import polars as pl

from mllmrec.config import IngestParams
from mllmrec.data import amazon, recbole
from mllmrec.data.ingest import LAYOUTS, PRESETS, Report, read_delimited, read_titles, read_tsv_sequences, resolve
from mllmrec.errors import UserError


def read_dataset(root: Path, params: IngestParams, report: Report) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Raw (interactions, titles) frames for one format, before id checks and dedup."""
    fmt = params.format
    if not root.is_dir():
        raise UserError(f"{root}: dataset root is not a folder (params ingest.root)")
    if fmt == "recbole":
        return recbole.read(root, params, report)
    if fmt == "amazon":
        return amazon.read(root, params, report)
    layout = LAYOUTS[fmt]
    names = (params.interactions_file,) if params.interactions_file else layout.interactions
    titles = read_titles(
        resolve(root, params.titles_file or layout.titles, "titles"),
        fmt,
        params.encoding,
        report,
        params.titles,
        params.genres,
    )
    spec = params.interactions or PRESETS.get(fmt)
    frames = []
    for name in names:
        path = resolve(root, name, "interactions")
        frames.append(
            read_tsv_sequences(path, report)
            if fmt == "mllmrec_tsv"
            else read_delimited(path, spec, report, params.min_rating)
        )
    if fmt == "mllmrec_tsv":
        # positions restart per file: a user's test.tsv items come after their train.tsv items
        frames = [f.with_columns(timestamp=pl.col("timestamp") + i * 10**12) for i, f in enumerate(frames)]
    return pl.concat(frames, how="vertical_relaxed"), titles
