"""Paired comparison of two runs' predictions of one policy or baseline on the same test samples, e.g. the CPU study with
and without item tokens (two experiments: their `data/predictions/<method>.parquet`, from `dvc exp apply` or two
clones):

    python scripts/compare_predictions.py items/sft.parquet text/sft.parquet --names items,text-only

Per protocol and candidate size present in both files: each side's HR@1, and the paired differences a - b of HR@1,
HR@5 and NDCG@10 with a paired bootstrap 95 % CI and a two-sided p (exact McNemar for HR@K, sign flips for NDCG), the
same test as the report's (mllmrec.evaluation.significance.compare). Files on different samples are refused, unless --common pairs them on the samples both hold.
"""

from pathlib import Path
from typing import Annotated

import polars as pl
import typer

from mllmrec.cli import run
from mllmrec.errors import UserError
from mllmrec.evaluation.metrics import per_sample_scores
from mllmrec.evaluation.significance import compare

METRICS = ["HR@1", "HR@5", "NDCG@10"]


def read(path: Path) -> pl.DataFrame:
    if not path.is_file():
        raise UserError(f"{path}: no such predictions file (data/predictions/<method>.parquet of a run)")
    df = pl.read_parquet(path)
    missing = {"sample_id", "target_rank", "num_negatives"} - set(df.columns)
    if missing:
        raise UserError(f"{path}: not a predictions file (no column {sorted(missing)})")
    return df  # baselines have no protocol column: they rank, and pair with every protocol of the other side


def main(
    a: Annotated[Path, typer.Argument(help="predictions of run a")],
    b: Annotated[Path, typer.Argument(help="predictions of run b (the same samples)")],
    names: Annotated[str, typer.Option(help="labels for a and b")] = "a,b",
    common: Annotated[
        bool,
        typer.Option(
            help="pair on the samples both files hold (e.g. one run scored a seeded "
            "subset of the other's users); the counts left out are printed"
        ),
    ] = False,
    resamples: Annotated[int, typer.Option(help="bootstrap resamples")] = 1000,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    name_a, _, name_b = names.partition(",")
    preds_a, preds_b = read(a), read(b)
    if common:
        shared = set(preds_a["sample_id"]) & set(preds_b["sample_id"])
        print(
            f"on the {len(shared)} samples both hold ({name_a}: {preds_a['sample_id'].n_unique() - len(shared)} "
            f"left out, {name_b}: {preds_b['sample_id'].n_unique() - len(shared)} left out)\n"
        )
        preds_a, preds_b = (p.filter(pl.col("sample_id").is_in(shared)) for p in (preds_a, preds_b))
    on = [c for c in ("protocol", "num_negatives") if c in preds_a.columns and c in preds_b.columns]
    keys = preds_a.select(*on).unique().join(preds_b.select(*on).unique(), on=on)
    for side in (preds_a, preds_b):
        if "protocol" in side.columns and "protocol" not in on:
            keys = keys.join(side.select("protocol", "num_negatives").unique(), on="num_negatives")
    if "protocol" not in keys.columns:
        keys = keys.with_columns(protocol=pl.lit("ranking"))
    keys = keys.select("protocol", "num_negatives").sort(pl.all())
    if keys.is_empty():
        raise UserError(f"{a} and {b} share no protocol and candidate size")
    print(
        f"| protocol | candidates | n | {name_a} HR@1 | {name_b} HR@1 | "
        + " | ".join(f"Δ{m} [95 % CI] p" for m in METRICS)
        + " |"
    )
    print("|---|---|---|---|---|" + "---|" * len(METRICS))
    for protocol, size in keys.iter_rows():
        sa, sb = (p.filter(pl.col("num_negatives") == size) for p in (preds_a, preds_b))
        sa, sb = (p.filter(pl.col("protocol") == protocol) if "protocol" in p.columns else p for p in (sa, sb))
        diffs = compare(sa, sb, METRICS, resamples, seed, name_a, name_b)
        hr = [float(per_sample_scores(s["target_rank"].to_numpy(), [1])["HR@1"].mean()) for s in (sa, sb)]
        cells = [f"{d['diff']:+.3f} [{d['lo']:+.2f}, {d['hi']:+.2f}] p={d['p']:.3f}" for d in diffs.values()]
        print(f"| {protocol} | 1+{size} | {sa.height} | {hr[0]:.3f} | {hr[1]:.3f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    run(main)
