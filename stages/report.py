"""Collect every method's metrics into tables (printed) and DVC plot data for HR@K / NDCG@K by method.

    python stages/report.py metrics/random.json metrics/sasrec.json ... \
        --predictions data/predictions/random.parquet --predictions data/predictions/zeroshot.parquet ...

Table 1 shows each metrics file as its stage wrote it. Table 2 (with --predictions) rescores every method on the
samples they ALL have (LLM policies may be evaluated on a seeded subset), so its rows compare like with like.
Outputs: plots/hr_by_method.csv (table 1) and plots/hr_same_samples.csv (table 2), one row per method x candidates;
metrics/report.md, both tables as Markdown (what the README's first command prints at the end).
"""

import json
from pathlib import Path

import polars as pl
from rich.console import Console
from rich.table import Table

from mllmrec.cli import run
from mllmrec.config import EvalParams, load_section
from mllmrec.errors import UserError
from mllmrec.io import write_text
from mllmrec.metrics import summarize


def rows_of(method: str, size: str, m: dict) -> list[dict]:
    ks = sorted(int(k.removeprefix("HR@")) for k in m if k.startswith("HR@") and "_" not in k)
    return [{"method": method, "candidates": f"1+{size.removeprefix('n')}", "K": k, "n": m["n"],
             "HR": m[f"HR@{k}"], "HR_lo": m[f"HR@{k}_lo"], "HR_hi": m[f"HR@{k}_hi"], "NDCG": m[f"NDCG@{k}"],
             "valid_rate": m["valid_rate"]} for k in ks]


def same_sample_rows(paths: list[Path], params: EvalParams) -> list[dict]:
    frames = []
    for path in paths:
        if not path.exists():
            raise UserError(f"{path}: not found; run `dvc repro` for the stage that writes it")
        df = pl.read_parquet(path)
        label = pl.lit(path.stem) if "protocol" not in df.columns else pl.format("{}-{}", pl.lit(path.stem),
                                                                                   "protocol")
        frames.append(df.select("sample_id", "num_negatives", "target_rank", "valid", "out_of_candidates",
                                label.alias("method")))
    preds = pl.concat(frames)
    rows = []
    for (n_neg,), group in preds.group_by("num_negatives", maintain_order=True):
        methods = group["method"].unique(maintain_order=True)
        if methods.len() < 2:
            continue
        shared = group.group_by("sample_id").agg(pl.col("method").n_unique()).filter(
            pl.col("method") == methods.len())["sample_id"]
        for method in methods:
            p = group.filter((pl.col("method") == method) & pl.col("sample_id").is_in(shared.implode()))
            m = summarize(p["target_rank"].to_numpy(), params.ks, params.bootstrap, params.seed,
                          p["valid"].to_numpy(), int(p["out_of_candidates"].sum()))
            rows += rows_of(method, f"n{n_neg}", m)
    return rows


def cells(table: pl.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the printed table: one row per (candidate set, method), HR@K [95 % CI] for every K."""
    ks = sorted(table["K"].unique())
    header = ["candidates", "method", "n", *(f"HR@{k}" for k in ks), f"NDCG@{ks[-1]}", "valid"]
    rows = []
    for (cands, method), group in table.sort("candidates", maintain_order=True).group_by(
            "candidates", "method", maintain_order=True):
        by_k = {r["K"]: r for r in group.iter_rows(named=True)}
        rows.append([cands, method, str(by_k[ks[0]]["n"]),
                     *(f"{by_k[k]['HR']:.3f} [{by_k[k]['HR_lo']:.2f},{by_k[k]['HR_hi']:.2f}]" for k in ks),
                     f"{by_k[ks[-1]]['NDCG']:.3f}", f"{by_k[ks[-1]]['valid_rate']:.2f}"])
    return header, rows


def show(table: pl.DataFrame, title: str) -> str:
    """Print the table and return it as Markdown (for metrics/report.md)."""
    header, rows = cells(table)
    view = Table(*header, title=title)
    for row in rows:
        view.add_row(*row)
    Console(width=150).print(view)
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"


def write_plot(table: pl.DataFrame, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    # wide form, one row per (method, candidate set): DVC's bar plot shows every method side by side
    table.with_columns(run=pl.format("{} ({})", "method", "candidates")).pivot(
        "K", index=["run", "method", "candidates"], values=["HR", "NDCG"]
    ).rename(lambda c: c.replace("_", "@")).write_csv(out)


def main(metric_files: list[Path], predictions: list[Path] | None = None, plots: Path = Path("plots"),
         report: Path = Path("metrics/report.md")) -> None:
    params = load_section("eval", EvalParams)
    rows = []
    for path in metric_files:
        if not path.exists():
            raise UserError(f"{path}: not found; run `dvc repro` for the stage that writes it")
        for size, m in json.loads(path.read_text()).items():
            rows += rows_of(path.stem, size, m)
    table = pl.DataFrame(rows)
    write_plot(table, plots / "hr_by_method.csv")
    md = [show(table, f"{params.split} split, each method on its own samples: HR@K [95 % bootstrap CI]")]
    if predictions:
        same = pl.DataFrame(same_sample_rows(predictions, params))
        if same.height:
            write_plot(same, plots / "hr_same_samples.csv")
            md.append(show(same, "the same samples for every method (the LLM policies' evaluation subset)"))
    write_text("\n".join(md), report)


if __name__ == "__main__":
    run(main)
