"""Leave-one-out split with persisted, seeded candidate sets (one file per number of negatives).

    python stages/split.py             # reads params.yaml `split`, writes data/split/

Outputs: candidates_n<N>.parquet (sample_id, user_id, split, history, target, candidates, target_index, seed,
num_negatives) for each N in split.num_negatives; train_sequences.parquet (each kept user's items before the valid
target: what baselines train on); report.json.

With `split.candidates_from`, a split's samples take the MLLMRec-R1 authors' cached candidates instead of our draw
(mllmrec.data.authors; files relative to ingest.root, their size N must be in num_negatives).
"""

from collections import Counter
from pathlib import Path

import polars as pl

from mllmrec import paths
from mllmrec.cli import run
from mllmrec.config import IngestParams, SplitParams, load_section
from mllmrec.data.authors import apply_candidates, combine_files, read_candidates
from mllmrec.data.ingest import sort_ids
from mllmrec.data.split import make_candidates, make_samples, user_sequences
from mllmrec.errors import UserError
from mllmrec.io import read_parquet, write_json, write_parquet

READS = [paths.INTERACTIONS, paths.param("ingest.root")]  # ingest.root: split.candidates_from's files
WRITES = [paths.SPLIT]


def main() -> None:
    params = load_section("split", SplitParams)
    inter = read_parquet(paths.INTERACTIONS, "ingest")

    seqs = user_sequences(inter)
    kept = seqs.filter(pl.col("n") >= params.min_inter)
    if kept.is_empty():  # else the candidate pool is empty and the error would blame num_negatives
        longest = int(seqs["n"].max()) if seqs.height else 0
        raise UserError(
            f"params.yaml: split.min_inter = {params.min_inter}, but no user has that many interactions "
            f"({seqs.height} users, the most active has {longest}); lower split.min_inter"
        )
    samples = make_samples(kept, params.min_inter, params.train_windows, params.window_stride)
    # the candidate pool: every item some kept user interacted with, in a fixed order
    items = sort_ids(kept.select(pl.col("items").explode().unique().alias("item_id")), "item_id")["item_id"]

    authors = {}  # N -> [(file name, split, their rows, counts)]
    if params.candidates_from:
        root = Path(load_section("ingest", IngestParams).root)
        for source in params.candidates_from:
            counts = Counter()
            rows = read_candidates(root / source.file, counts)
            n_neg = rows["candidates"].list.len()[0] - 1
            if n_neg not in params.num_negatives:
                raise UserError(
                    f"{root / source.file}: candidate lists of {n_neg} + 1 items, but split.num_negatives "
                    f"is {params.num_negatives}; add {n_neg}"
                )
            authors.setdefault(n_neg, []).append((source.file, source.split, rows, counts))
    ingested = set(inter["item_id"].unique())
    joins: dict[str, Counter] = {}  # several files for one split -> their joint join's counts
    for n_neg in params.num_negatives:
        cands = make_candidates(samples, kept, items.to_list(), n_neg, params.seed)
        for split in ("train", "valid", "test"):  # several files for one split combine: one join over all their rows
            group = [(f, rows, counts) for f, s, rows, counts in authors.get(n_neg, []) if s == split]
            if not group:
                continue
            # one file: its counts hold the join's too (as ever); several: the join has its own entry in the report
            join = group[0][2] if len(group) == 1 else joins.setdefault(" + ".join(f for f, _, _ in group), Counter())
            before = cands.filter(pl.col("split") == split).height
            cands = apply_candidates(cands, combine_files([(f, rows) for f, rows, _ in group]), split, ingested, join)
            if cands.filter(pl.col("split") == split).is_empty():  # never an empty split written with exit 0
                raise UserError(
                    f"{', '.join(str(root / f) for f, _, _ in group)}: the authors' {split} candidates "
                    f"joined none of our {before} {split} samples ({dict(join)}); is ingest.root the "
                    f"dataset these files were made from?"
                )
        write_parquet(cands, paths.candidates(n_neg))
    write_parquet(
        kept.select("user_id", pl.col("items").list.head(pl.col("n") - 2)),  # valid + test targets held out
        paths.TRAIN_SEQUENCES,
    )
    report = {
        "users": {"kept": kept.height, "below_min_inter": seqs.height - kept.height},
        "interactions_of_users_below_min_inter": int(seqs.filter(pl.col("n") < params.min_inter)["n"].sum()),
        "samples": dict(samples.group_by("split").len().sort("split").iter_rows()),
        "candidate_pool_items": items.len(),
    }
    if authors:  # only then: the report of a plain split keeps its bytes
        report["authors_candidates"] = {
            f: dict(sorted(c.items())) for group in authors.values() for f, _, _, c in group
        } | {f: dict(sorted(c.items())) for f, c in joins.items()}
    write_json(report, paths.SPLIT_REPORT)
    print(f"split: {report}")


if __name__ == "__main__":
    run(main)
