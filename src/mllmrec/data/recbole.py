"""RecBole atomic files: `<name>.inter` + `<name>.item`, tab-separated, with typed headers.

    ingest: {format: recbole, root: dataset/ml-100k}   # the folder RecBole reads, as is

    ml-100k.inter   user_id:token  item_id:token  rating:float  timestamp:float
    ml-100k.item    item_id:token  movie_title:token_seq  release_year:token  class:token_seq

Field names come from `ingest.recbole` (defaults above; the title field defaults to the first of movie_title,
title, name in the .item header). The `:type` suffix is only dropped; timestamps are read as numbers (fractions of a
second dropped), ratings only with `ingest.min_rating`.
"""

from pathlib import Path

import polars as pl

from mllmrec.config import CsvInteractions, CsvTitles, IngestParams
from mllmrec.data.ingest import LAYOUTS, Report, brief, read_delimited, read_titles, resolve
from mllmrec.errors import UserError

TITLE_FIELDS = ("movie_title", "title", "name")


def typed_header(path: Path, encoding: str) -> dict[str, str]:
    """field name -> the header's `name:type` column, from the first line."""
    with open(path, encoding=encoding, errors="replace") as f:
        first = f.readline().removeprefix("\ufeff").rstrip("\r\n")
    columns = [c.strip() for c in first.split("\t")]
    if not first.strip() or not all(":" in c for c in columns):
        raise UserError(
            f"{path}:1: expected a RecBole header of tab-separated `name:type` fields (user_id:token "
            f"item_id:token ...); got {brief(first)}"
        )
    return {c.split(":", 1)[0]: c for c in columns}


def pick(path: Path, header: dict[str, str], wanted: dict[str, str]) -> dict[str, str]:
    """our name -> header column for each wanted field name; a missing field names those that exist."""
    missing = [f for f in wanted.values() if f not in header]
    if missing:
        raise UserError(f"{path}:1: no field(s) {missing}; the header has {list(header)} (set ingest.recbole)")
    return {ours: header[name] for ours, name in wanted.items()}


def read(root: Path, params: IngestParams, report: Report) -> tuple[pl.DataFrame, pl.DataFrame]:
    layout, names = LAYOUTS["recbole"], params.recbole
    inter_path = resolve(root, params.interactions_file or layout.interactions[0], "interactions")
    item_path = resolve(root, params.titles_file or layout.titles, "titles")

    item_header = typed_header(item_path, params.encoding)
    title = names.title or next((f for f in TITLE_FIELDS if f in item_header), TITLE_FIELDS[0])
    titles = read_titles(
        item_path,
        "recbole",
        params.encoding,
        report,
        CsvTitles(
            separator="\t",
            quoted=False,  # RecBole files carry bare quotes inside titles
            columns=pick(item_path, item_header, {"item": names.item, "title": title}),
        ),
    )

    wanted = {"user": names.user, "item": names.item, "timestamp": names.timestamp}
    if params.min_rating is not None:
        wanted["rating"] = names.rating
    columns = pick(inter_path, typed_header(inter_path, "utf-8"), wanted)
    spec = CsvInteractions(separator="\t", columns=columns, timestamp="float")
    return read_delimited(inter_path, spec, report, params.min_rating), titles
