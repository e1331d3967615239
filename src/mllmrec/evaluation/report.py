"""The report's tables, paired comparisons, headline numbers and plot data (stages/report.py writes them).

    from mllmrec.evaluation.report import load_predictions, same_samples, same_sample_rows, comparisons, headline
    same = same_samples(load_predictions(paths).filter(pl.col("num_negatives") == 9), "1+9")
    rows, comps = same_sample_rows(same, eval_params), comparisons(same, eval_params)

A method is a predictions file's stem (`random`) or, for a policy, stem-protocol (`sft-generative`). Comparisons
pair each policy-protocol with its previous training stage (sft vs zeroshot, grpo vs sft) and with every baseline,
on the same samples (mllmrec.evaluation.significance).
"""

from pathlib import Path

import polars as pl
from rich.console import Console
from rich.table import Table

from mllmrec.config import EvalParams
from mllmrec.errors import UserError
from mllmrec.evaluation.metrics import per_sample_scores, summarize
from mllmrec.evaluation.significance import compare
from mllmrec.io import read_parquet, write_csv

HEADLINE = ["HR@1", "HR@5", "NDCG@10"]  # the metrics of headline.json and of the paired comparisons
PREVIOUS = {"sft": "zeroshot", "grpo": "sft"}  # each policy's training stage -> the one it starts from


def rows_of(method: str, size: str, m: dict) -> list[dict]:
    ks = sorted(int(k.removeprefix("HR@")) for k in m if k.startswith("HR@") and "_" not in k)
    return [
        {
            "method": method,
            "candidates": f"1+{size.removeprefix('n')}",
            "K": k,
            "n": m["n"],
            "HR": m[f"HR@{k}"],
            "HR_lo": m[f"HR@{k}_lo"],
            "HR_hi": m[f"HR@{k}_hi"],
            "NDCG": m[f"NDCG@{k}"],
            "valid_rate": m["valid_rate"],
        }
        for k in ks
    ]


def load_predictions(paths: list[Path]) -> pl.DataFrame:
    """All predictions, one row per (method, sample); `llm` marks the policies (their files have a protocol)."""
    frames = []
    for path in paths:
        df = read_parquet(path)
        llm = "protocol" in df.columns
        label = pl.format("{}-{}", pl.lit(path.stem), "protocol") if llm else pl.lit(path.stem)
        frames.append(
            df.select(
                "sample_id",
                "num_negatives",
                "target_rank",
                "valid",
                "out_of_candidates",
                label.alias("method"),
                pl.lit(llm).alias("llm"),
            )
        )
    return pl.concat(frames).sort("num_negatives", maintain_order=True)


def same_samples(group: pl.DataFrame, size: str) -> pl.DataFrame:
    """One candidate size restricted to the LLM policies' samples (every method's samples when no policy ran on
    it). Refuses policies evaluated on different samples and baselines missing some of them."""
    reference = group.filter("llm") if group["llm"].any() else group
    sets = {m: set(g["sample_id"]) for (m,), g in reference.group_by("method", maintain_order=True)}
    (first, ids), *others = sets.items()
    for method, other in others:
        if other != ids:
            raise UserError(
                f"{size}: {first} ({len(ids)} samples) and {method} ({len(other)} samples) were "
                f"evaluated on different samples, e.g. {sorted(ids ^ other)[:3]}; rerun them with the "
                "same `eval` and `evaluate.max_samples` params"
            )
    for (method,), g in group.group_by("method", maintain_order=True):
        if missing := ids - set(g["sample_id"]):
            raise UserError(
                f"{size}: {method} has no prediction for {len(missing)} of the {len(ids)} samples "
                f"{first} was evaluated on, e.g. {sorted(missing)[:3]}"
            )
    return group.filter(pl.col("sample_id").is_in(pl.Series(list(ids)).implode()))


def same_sample_rows(same: pl.DataFrame, params: EvalParams) -> list[dict]:
    rows = []
    for (n_neg, method), p in same.group_by("num_negatives", "method", maintain_order=True):
        m = summarize(
            p["target_rank"].to_numpy(),
            params.ks,
            params.bootstrap,
            params.seed,
            p["valid"].to_numpy(),
            int(p["out_of_candidates"].sum()),
        )
        rows += rows_of(method, f"n{n_neg}", m)
    return rows


def headline(same: pl.DataFrame) -> dict:
    """{n9: {n, method: {HR@1, HR@5, NDCG@10}}}, rounded: a handful of readable `dvc exp show` columns."""
    out: dict = {}
    for (n_neg, method), p in same.group_by("num_negatives", "method", maintain_order=True):
        scores = per_sample_scores(p["target_rank"].to_numpy(), sorted({int(m.split("@")[1]) for m in HEADLINE}))
        size = out.setdefault(f"n{n_neg}", {"n": p.height})
        size[method] = {name: round(float(scores[name].mean()), 4) for name in HEADLINE}
    return out


def pairs(same: pl.DataFrame) -> list[tuple[str, str]]:
    """(policy, other) to compare: each policy-protocol against its previous training stage, then each baseline."""
    methods = same.select("method", "llm").unique(maintain_order=True)
    baselines = methods.filter(~pl.col("llm"))["method"].to_list()
    present = set(methods["method"])
    out = []
    for policy in methods.filter("llm")["method"]:
        stage, protocol = policy.split("-", 1)
        if stage in PREVIOUS and (previous := f"{PREVIOUS[stage]}-{protocol}") in present:
            out.append((policy, previous))
        out += [(policy, b) for b in baselines]
    return out


def comparisons(same: pl.DataFrame, params: EvalParams) -> dict:
    """{n9: [{a, b, n, HR@1: {diff, lo, hi, p, test, significant}, ...}]}: a minus b on the same samples."""
    out = {}
    for (n_neg,), group in same.group_by("num_negatives", maintain_order=True):
        by_method = {m: g for (m,), g in group.group_by("method", maintain_order=True)}
        out[f"n{n_neg}"] = [
            {
                "a": a,
                "b": b,
                "n": by_method[a].height,
                **compare(by_method[a], by_method[b], HEADLINE, params.bootstrap, params.seed, a, b),
            }
            for a, b in pairs(group)
        ]
    return out


def cells(table: pl.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a method table: one row per (candidate set, method), HR@K [95 % CI] for every K."""
    ks = sorted(table["K"].unique())
    header = ["candidates", "method", "n", *(f"HR@{k}" for k in ks), f"NDCG@{ks[-1]}", "valid"]
    rows = []
    for (cands, method), group in table.sort("candidates", maintain_order=True).group_by(
        "candidates", "method", maintain_order=True
    ):
        by_k = {r["K"]: r for r in group.iter_rows(named=True)}
        rows.append(
            [
                cands,
                method,
                str(by_k[ks[0]]["n"]),
                *(f"{by_k[k]['HR']:.3f} [{by_k[k]['HR_lo']:.2f},{by_k[k]['HR_hi']:.2f}]" for k in ks),
                f"{by_k[ks[-1]]['NDCG']:.3f}",
                f"{by_k[ks[-1]]['valid_rate']:.2f}",
            ]
        )
    return header, rows


def _signed(x: float, digits: int) -> str:
    return f"{round(x, digits) + 0.0:+.{digits}f}"  # + 0.0: float noise like -1e-17 prints +0.00, not -0.00


def p_cell(p: float, significant: bool) -> str:
    """A p-value as the tables print it: `p=0.123`, `p<0.001`, `*` when significant."""
    return f"{'p<0.001' if p < 0.001 else f'p={p:.3f}'}{'*' * significant}"


def delta_cell(d: dict) -> str:
    """One paired difference (mllmrec.evaluation.significance.paired_difference) as `Δ [95 % CI] p`, `*` if p < 0.05."""
    return f"{_signed(d['diff'], 3)} [{_signed(d['lo'], 2)},{_signed(d['hi'], 2)}] {p_cell(d['p'], d['significant'])}"


def comparison_cells(comps: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a comparison table: Δ [95 % CI] p per metric, `*` when p < 0.05."""
    header = ["comparison", "n", *(f"Δ{m} [95 % CI] p" for m in HEADLINE)]
    return header, [[f"{c['a']} − {c['b']}", str(c["n"]), *(delta_cell(c[m]) for m in HEADLINE)] for c in comps]


def position_cells(metrics: dict[str, dict]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the position-bias table, from each likelihood metrics file's `position` block
    (stages/evaluate.py): HR@1 in the candidate file's order, reversed and shuffled, Δ [CI] p against the first."""
    header = [
        "method",
        "candidates",
        "HR@1",
        "HR@1 reversed",
        "Δ reversed [95 % CI] p",
        "HR@1 shuffled",
        "Δ shuffled [95 % CI] p",
        "order-sensitive",
    ]
    rows = []
    for method, by_size in metrics.items():
        for size, m in by_size.items():
            if pos := m.get("position"):
                rev, shuf = pos["reversed"], pos["shuffled"]
                rows.append(
                    [
                        method,
                        f"1+{size.removeprefix('n')}",
                        f"{pos['HR@1']:.3f}",
                        f"{rev['HR@1']:.3f}",
                        delta_cell({**rev, "significant": rev["p"] < 0.05}),
                        f"{shuf['HR@1']:.3f}",
                        delta_cell({**shuf, "significant": shuf["p"] < 0.05}),
                        "FLAGGED" if pos["flagged"] else "no",
                    ]
                )
    return header, rows


def show(header: list[str], rows: list[list[str]], title: str, legend: str = "") -> str:
    """Print the table and return it as Markdown (for metrics/report.md)."""
    view = Table(*header, title=title, caption=legend or None)
    for row in rows:
        view.add_row(*row)
    Console(width=150).print(view)
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines + ["", legend] * bool(legend)) + "\n"


def write_plots(table: pl.DataFrame, plots: Path, stem: str, by_k: bool = False) -> None:
    """Per candidate size n<N> (one file each: 1+9 and 1+99 are different tasks): <stem>_n<N>.csv, one row per
    method (bar plots); with by_k also hr_at_k_<stem>_n<N>.csv, one row per K, one column per method (lines)."""
    plots.mkdir(parents=True, exist_ok=True)
    methods = table["method"].unique(maintain_order=True).to_list()
    for (cands,), group in table.group_by("candidates", maintain_order=True):
        size = "n" + cands.removeprefix("1+")
        write_csv(
            group.pivot("K", index=["method", "n"], values=["HR", "NDCG"]).rename(lambda c: c.replace("_", "@")),
            plots / f"{stem}_{size}.csv",
        )
        if by_k:
            # every method a column, empty where it did not run on this size: DVC refuses a plot whose y is missing
            lines = group.pivot("method", index="K", values="HR")
            write_csv(
                lines.with_columns(pl.lit(None, pl.Float64).alias(m) for m in methods if m not in lines.columns).select(
                    "K", *methods
                ),
                plots / f"hr_at_k_{stem}_{size}.csv",
            )
