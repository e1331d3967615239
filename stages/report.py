"""Collect every method's metrics into one table (printed) and the DVC plot data for HR@K / NDCG@K by method.

    python stages/report.py metrics/random.json metrics/popularity.json metrics/sasrec.json

Outputs: plots/hr_by_method.csv (run, method, candidates, HR@K..., NDCG@K...), printed table.
"""

import json
from pathlib import Path

import polars as pl
from rich.console import Console
from rich.table import Table

from mllmrec.cli import run
from mllmrec.errors import UserError


def main(metric_files: list[Path], out: Path = Path("plots/hr_by_method.csv")) -> None:
    rows = []
    for path in metric_files:
        if not path.exists():
            raise UserError(f"{path}: not found; run `dvc repro` for the stage that writes it")
        for size, m in json.loads(path.read_text()).items():
            ks = sorted(int(k.removeprefix("HR@")) for k in m if k.startswith("HR@") and "_" not in k)
            for k in ks:
                rows.append({"method": path.stem, "candidates": f"1+{size.removeprefix('n')}", "K": k,
                             "HR": m[f"HR@{k}"], "HR_lo": m[f"HR@{k}_lo"], "HR_hi": m[f"HR@{k}_hi"],
                             "NDCG": m[f"NDCG@{k}"], "valid_rate": m["valid_rate"]})
    table = pl.DataFrame(rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    # wide form, one row per (method, candidate set): DVC's bar plot shows every method side by side
    table.with_columns(run=pl.format("{} ({})", "method", "candidates")).pivot(
        "K", index=["run", "method", "candidates"], values=["HR", "NDCG"]
    ).rename(lambda c: c.replace("_", "@")).write_csv(out)

    ks = sorted(table["K"].unique())
    view = Table(title=f"{table['method'].n_unique()} methods, test split: HR@K [95 % bootstrap CI], NDCG@{ks[-1]}")
    for col in ("candidates", "method", *(f"HR@{k}" for k in ks), f"NDCG@{ks[-1]}", "valid"):
        view.add_column(col)
    for (cands, method), group in table.sort("candidates", maintain_order=True).group_by(
            "candidates", "method", maintain_order=True):
        by_k = {r["K"]: r for r in group.iter_rows(named=True)}
        view.add_row(cands, method, *(f"{by_k[k]['HR']:.3f} [{by_k[k]['HR_lo']:.2f},{by_k[k]['HR_hi']:.2f}]"
                                      for k in ks),
                     f"{by_k[ks[-1]]['NDCG']:.3f}", f"{by_k[ks[-1]]['valid_rate']:.2f}")
    Console(width=140).print(view)


if __name__ == "__main__":
    run(main)
