"""Confidence-aware assessment: keep a CoT only if its format is valid, it does not leak, and it singles out the target.

    python stages/assess_cot.py       # reads params.yaml `assess_cot`

Scores each CoT's prediction (Steps 2-4) against the sample's persisted candidates (title + caption) with
all-MiniLM-L6-v2 embeddings; confidence = target softmax probability (or margin); keep = format ok & no leak &
confidence >= threshold (& target ranked first). Outputs: data/cot/assessed.parquet (sample_id, cot, format_ok,
leak flags, scores per candidate, target_rank, confidence, keep, ...), data/cot/assess_report.json,
metrics/cot.json (drafted/refined/kept counts, leak rates, median confidence), plots/cot_confidence.csv (histogram).
`executor.kind: ray` embeds on a Ray cluster (one embedder per actor), writing the same cache parts.
"""

from mllmrec import paths
from mllmrec.cli import run
from mllmrec.config import AssessCotParams, ExecutorParams, load_section
from mllmrec.cot.assess import Embedder, assess, embedder_identity
from mllmrec.cot.reports import CotMetrics, DraftReport, RefineReport
from mllmrec.cot.text import prediction_text
from mllmrec.io import read_parquet, write_csv, write_parquet
from mllmrec.prompts import load_item_texts
from mllmrec.reports import read_report, write_report

READS = [paths.REFINED, paths.DRAFT_REPORT, paths.REFINE_REPORT, paths.ITEMS, paths.CAPTIONS]
WRITES = [
    paths.ASSESSED,
    paths.ASSESS_REPORT,
    paths.param("assess_cot.cache_dir"),
    paths.COT_METRICS,
    paths.COT_CONFIDENCE_PLOT,
]


def main() -> None:
    params = load_section("assess_cot", AssessCotParams)
    refined = read_parquet(paths.REFINED, "refine_cot")
    items = read_parquet(paths.ITEMS, "ingest")
    captions = read_parquet(paths.CAPTIONS, "textualize")
    draft_report = read_report(paths.DRAFT_REPORT, DraftReport, "draft_cot")
    refine_report = read_report(paths.REFINE_REPORT, RefineReport, "refine_cot")

    embedder_id = embedder_identity(params.embedding_model)
    assessed, report, hist = assess(
        refined,
        load_item_texts(items, captions),
        params=params,
        embedder_id=embedder_id,
        make_embedder=lambda: Embedder(params.embedding_model),
        prediction=prediction_text,
        executor=load_section("executor", ExecutorParams, default=ExecutorParams()),
    )

    write_parquet(assessed, paths.ASSESSED)
    write_report(report, paths.ASSESS_REPORT)
    write_report(CotMetrics.of(draft_report, refine_report, report), paths.COT_METRICS)
    write_csv(hist, paths.COT_CONFIDENCE_PLOT)  # rows {bin, count}
    print(
        f"assess_cot: kept {report.kept}/{report.samples} ({report.kept_share}); median confidence "
        f"{report.median_confidence}; target ranked first for {report.target_top1_share} of CoTs "
        f"(chance {report.chance_top1}); {report.embedding.model_calls} texts embedded"
    )


if __name__ == "__main__":
    run(main)
