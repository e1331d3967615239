"""Collect every method's metrics into tables, paired comparisons, a headline metrics file and DVC plot data.

    python stages/report.py metrics/random.json metrics/sasrec.json ... \
        --predictions data/predictions/random.parquet --predictions data/predictions/zeroshot.parquet ...

Table 1 shows each metrics file as its stage wrote it. Table 2 rescores every method on the samples the LLM policies
were evaluated on (they may run on a seeded subset; every policy must have the same samples and every baseline must
cover them), so its rows compare like with like. Table 3 compares, on those samples, each policy-protocol with
each baseline and with the training stage before it (sft vs zeroshot, grpo vs sft): paired differences, bootstrap
CIs and p-values (src/mllmrec/evaluation/significance.py). Table 4 (when the evaluate stage ran its position check)
shows each policy's likelihood HR@1 with the candidates reversed and shuffled, flagging order-sensitive rankers. A
method is a predictions file's stem (`random`) or, for a policy,
stem-protocol (`sft-generative`).

The report opens with "What this run shows" (mllmrec.evaluation.summary): those tables in plain words, per candidate
size with LLM policies; the stage prints it last, so it ends `dvc repro`'s output.

Outputs: metrics/report.md (that block, then the tables as Markdown),
metrics/comparisons.json (table 3), metrics/environment.json (the package versions of this run, also the report's
last line: mllmrec.environment), metrics/headline.json (HR@1, HR@5, NDCG@10 per method on the same samples: the
few numbers `dvc exp show` shows), and plots/report/ for the top-level plots of dvc.yaml, per candidate size n<N>:
own_samples_n<N>.csv (table 1), same_samples_n<N>.csv (table 2), one row per method, and
hr_at_k_same_samples_n<N>.csv (table 2's HR@K against K, one column per method).
"""

from pathlib import Path
from typing import Annotated

import polars as pl
import typer

from mllmrec import paths
from mllmrec.cli import run
from mllmrec.config import EvalParams, load_section
from mllmrec.environment import versions
from mllmrec.evaluation.report import (
    cells,
    comparison_cells,
    comparisons,
    headline,
    load_predictions,
    position_cells,
    rows_of,
    same_sample_rows,
    same_samples,
    show,
    write_plots,
)
from mllmrec.evaluation.summary import PROTOCOLS, what_this_run_shows
from mllmrec.io import read_json, write_json, write_text

BASELINES = ("random", "popularity", "markov", "itemknn", "sasrec")
POLICIES = ("zeroshot", "sft", "grpo")
# what dvc.yaml's cmd passes: every method's metrics file (a policy's per protocol) and predictions
READS = [
    *(paths.metrics_file(m) for m in BASELINES),
    *(paths.metrics_file(f"{p}-{protocol}") for p in POLICIES for protocol in PROTOCOLS),
    *(paths.predictions(m) for m in (*BASELINES, *POLICIES)),
]
WRITES = [paths.REPORT_MD, paths.COMPARISONS, paths.ENVIRONMENT, paths.REPORT_PLOTS, paths.HEADLINE]


def main(
    metric_files: list[Path],
    predictions: Annotated[list[Path], typer.Option(help="each method's predictions (repeat the option)")],
) -> None:
    params = load_section("eval", EvalParams)
    rows, by_file = [], {path.stem: read_json(path) for path in metric_files}
    for stem, by_size in by_file.items():
        for size, m in by_size.items():
            rows += rows_of(stem, size, m)
    table = pl.DataFrame(rows)
    write_plots(table, paths.REPORT_PLOTS, "own_samples")
    md = [show(*cells(table), f"{params.split} split, each method on its own samples: HR@K [95 % bootstrap CI]")]

    preds = load_predictions(predictions)
    same = pl.concat(
        same_samples(group, f"1+{n_neg}") for (n_neg,), group in preds.group_by("num_negatives", maintain_order=True)
    )
    same_table = pl.DataFrame(same_sample_rows(same, params))
    write_plots(same_table, paths.REPORT_PLOTS, "same_samples", by_k=True)
    md.append(show(*cells(same_table), "the same samples for every method (the LLM policies' evaluation subset)"))
    comps = comparisons(same, params)
    legend = (
        f"Δ = first − second method on the same samples, 95 % paired bootstrap CI ({params.bootstrap} "
        f"resamples); p two-sided: exact McNemar test for HR@K, paired sign-flip permutation test "
        f"({params.bootstrap} resamples) for NDCG@10; * p < 0.05, not corrected for multiple comparisons."
    )
    md += [
        show(*comparison_cells(c), f"paired comparisons, 1+{size.removeprefix('n')} candidates", legend)
        for size, c in comps.items()
        if c
    ]
    header, position = position_cells(by_file)
    if position:
        md.append(
            show(
                header,
                position,
                "position bias: likelihood HR@1 with each sample's candidates reordered",
                "Δ = reordered − the candidate file's order, same samples (exact McNemar p); FLAGGED when "
                "HR@1 moves by more than half the width of its own 95 % CI: the ranker reads the list's "
                "order, not only the items.",
            )
        )
    env = versions()
    md.append("Environment: " + ", ".join(f"{k} {v}" for k, v in env.items() if v is not None) + "\n")
    head = headline(same)
    summary = what_this_run_shows(same_table, head, comps, params.split)
    write_text("\n".join([summary, *md]), paths.REPORT_MD)
    write_json(env, paths.ENVIRONMENT)
    write_json(comps, paths.COMPARISONS)
    write_json(head, paths.HEADLINE)
    print(f"\n{summary}", end="")  # last on stdout, the end of `dvc repro`: the first thing a newcomer reads


if __name__ == "__main__":
    run(main)
