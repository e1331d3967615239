"""Draft a pseudo-CoT for each *training* sample from its history (paper's 4 steps), through `models.drafter`.

    python stages/draft_cot.py        # reads params.yaml `draft_cot`, `models.drafter`, `ingest.root`

Inputs: data/split/candidates_n{draft_cot.num_negatives}.parquet (train rows only; seeded subsample if
`max_samples`), data/ingest/items.parquet, data/textualize/captions.parquet, data/split/train_sequences.parquet.
mode=captions drafts from titles + captions (text LM); mode=images gives the drafter (a VLM) each history poster,
falling back to the caption or the title for items without one (counted); mode=grounded writes the four steps by
rules from the data's facts, no model (genres, years, caption labels, co-occurrence in the other users' training
sequences: mllmrec.cot.grounded, a stand-in for the paper's VLM drafter). Outputs: data/cot/drafts.parquet (sample columns + draft, draft_error,
draft_key), data/cot/draft_report.json, and the content cache `draft_cot.cache_dir` (persist: true).
"""

from pathlib import Path

import polars as pl

from mllmrec import paths
from mllmrec.cli import run
from mllmrec.config import DraftCotParams, ExecutorParams, IngestParams, ModelsParams, load_section
from mllmrec.cot.drafters import draft_samples
from mllmrec.cot.generate import select_train_samples
from mllmrec.engines import build_engine
from mllmrec.io import read_parquet, write_parquet
from mllmrec.prompts import load_item_texts
from mllmrec.reports import write_report

READS = [
    paths.SPLIT,  # candidates (draft_cot.num_negatives); train_sequences (mode grounded: co-occurrence)
    paths.ITEMS,
    paths.CAPTIONS,
    paths.param("models.provision.out"),  # orders after `models`: the drafter is named by models.drafter
]
WRITES = [paths.DRAFTS, paths.DRAFT_REPORT, paths.param("draft_cot.cache_dir")]


def main() -> None:
    params = load_section("draft_cot", DraftCotParams)
    spec = load_section("models", ModelsParams).drafter
    root = Path(load_section("ingest", IngestParams).root)
    cands = read_parquet(paths.candidates(params.num_negatives), "split")
    items = read_parquet(paths.ITEMS, "ingest")
    captions = read_parquet(paths.CAPTIONS, "textualize")

    samples = select_train_samples(cands, params.max_samples, params.seed)
    drafts, report = draft_samples(
        samples,
        load_item_texts(items, captions, root),
        params,
        spec=spec,
        make_engine=lambda: build_engine(spec),
        items=items,
        sequences=read_parquet(paths.TRAIN_SEQUENCES, "split"),
        executor=load_section("executor", ExecutorParams, default=ExecutorParams()),
    )
    report.train_samples_available = cands.filter(pl.col("split") == "train").height

    write_parquet(drafts, paths.DRAFTS)
    write_report(report, paths.DRAFT_REPORT)
    print(
        f"draft_cot: {report.drafted}/{report.samples} train samples drafted by {report.model} ({params.mode}); "
        f"{report.model_calls} model calls, {report.cache_hits} cache hits, "
        f"errors {report.errors}, input notes {report.input_notes}"
    )


if __name__ == "__main__":
    run(main)
