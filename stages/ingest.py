"""Ingest a dataset into normalized Parquet tables and a JSON report.

    python stages/ingest.py            # reads params.yaml `ingest`, writes data/ingest/

Formats (`ingest.format`, docs/data.md): the MovieLens / MicroLens / MLLMRec-R1 layouts, any delimited file with a
column mapping (csv), RecBole atomic files (recbole), Amazon Reviews 2018 / 2023 jsonl (amazon).

Outputs: items.parquet (item_id, title, image_path, image_sha256, image_format, image_ok, image_error),
interactions.parquet (user_id, item_id, timestamp, position; time-ordered per user), report.json.
"""

from pathlib import Path

import polars as pl

from mllmrec import paths
from mllmrec.cli import run
from mllmrec.config import IngestParams, load_section
from mllmrec.data.images import attach_images
from mllmrec.data.ingest import LAYOUTS, Report, ingest_report, normalize, sort_ids
from mllmrec.data.sources import read_dataset
from mllmrec.errors import UserError
from mllmrec.io import write_parquet
from mllmrec.reports import write_report

READS = [paths.param("ingest.root")]
WRITES = [paths.ITEMS, paths.INTERACTIONS, paths.INGEST_REPORT]


def main() -> None:
    params = load_section("ingest", IngestParams)
    root = Path(params.root)

    report = Report()
    inter, titles = read_dataset(root, params, report)
    inter, items = normalize(inter, titles, report, params.ties)
    image_dir = params.image_dir or LAYOUTS[params.format].image_dir
    items, image_counts = attach_images(sort_ids(items, "item_id"), root, image_dir, params.image_workers)
    if items.height and not items["image_ok"].any():  # a misspelt folder reads like a dataset without images
        folder = root / image_dir
        why = (
            "does not exist"
            if not folder.is_dir()
            else f"holds no usable image named by an item id {dict(image_counts)}"
        )
        if params.require_image or params.image_dir:
            raise UserError(
                f"ingest.image_dir: {folder} {why}: 0 of {items.height} items have an image; fix the "
                f"folder name, or set ingest.image_dir: null and require_image: false to ingest text only"
            )
        print(f"ingest: no images ({folder} {why}): the items are text only")
    if params.require_image:
        without = items.filter(~pl.col("image_ok"))
        report.skip("item_without_usable_image", without.height, without["item_id"].head(5).to_list())
        dropped = inter.join(without.select("item_id"), on="item_id", how="semi").height
        report.skip("interaction_with_item_without_image", dropped)
        items = items.filter("image_ok")
        inter = inter.join(items.select("item_id"), on="item_id", how="semi").with_columns(
            position=pl.int_range(pl.len(), dtype=pl.Int32).over("user_id")
        )  # positions stay contiguous

    if inter.is_empty():  # never an empty output with exit 0
        raise UserError(
            f"ingest: no interaction left of {sum(report.read.values())} rows read in {root}; "
            f"skipped {dict(report.skipped)}"
        )
    write_parquet(items, paths.ITEMS)
    write_parquet(inter, paths.INTERACTIONS)
    summary = ingest_report(report, inter, items, image_counts)
    write_report(summary, paths.INGEST_REPORT)
    print(
        f"ingest: {summary.interactions.kept} interactions, {summary.interactions.users} users, "
        f"{summary.items.kept} items ({summary.items.with_image} with image); "
        f"skipped {dict(report.skipped)}"
    )


if __name__ == "__main__":
    run(main)
