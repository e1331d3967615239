"""Confidence-aware assessment: keep a CoT only if its format is valid, it does not leak, and it singles out the target.

    python stages/assess_cot.py       # reads params.yaml `assess_cot`

Scores each CoT's prediction (Steps 2-4) against the sample's persisted candidates (title + caption) with
all-MiniLM-L6-v2 embeddings; confidence = target softmax probability (or margin); keep = format ok & no leak &
confidence >= threshold (& target ranked first). Outputs: data/cot/assessed.parquet (sample_id, cot, format_ok,
leak flags, scores per candidate, target_rank, confidence, keep, ...), data/cot/assess_report.json,
metrics/cot.json (drafted/refined/kept counts, leak rates, median confidence), plots/cot_confidence.csv (histogram).
`executor.kind: ray` embeds on a Ray cluster (one embedder per actor), writing the same cache parts.
"""

from pathlib import Path

from mllmrec.cli import run
from mllmrec.config import AssessCotParams, ExecutorParams, load_section
from mllmrec.cot.assess import Embedder, assess, embedder_identity
from mllmrec.cot.text import prediction_text
from mllmrec.io import read_json, read_parquet, write_csv, write_json, write_parquet
from mllmrec.prompts import load_item_texts

OUT = Path("data/cot")


def main(
    out: Path = OUT,
    metrics: Path = Path("metrics/cot.json"),
    plot: Path = Path("plots/cot_confidence.csv"),
) -> None:
    params = load_section("assess_cot", AssessCotParams)
    refined = read_parquet(out / "refined.parquet", "refine_cot")
    items = read_parquet(Path("data/ingest/items.parquet"), "ingest")
    captions = read_parquet(Path("data/textualize/captions.parquet"), "textualize")
    draft_report = read_json(out / "draft_report.json", "draft_cot")
    refine_report = read_json(out / "refine_report.json", "refine_cot")

    embedder_id = embedder_identity(params.embedding_model)
    assessed, report = assess(
        refined,
        load_item_texts(items, captions),
        params=params,
        embedder_id=embedder_id,
        make_embedder=lambda: Embedder(params.embedding_model),
        prediction=prediction_text,
        executor=load_section("executor", ExecutorParams, default=ExecutorParams()),
    )
    hist = report.pop("histogram")

    write_parquet(assessed, out / "assessed.parquet")
    write_json(report, out / "assess_report.json")
    summary = {
        "train_samples_drafted": draft_report["drafted"],
        "refined_format_ok": refine_report["refined_format_ok"],
        "with_cot_after_audit": report["with_cot"],
        "kept": report["kept"],
        "kept_share": report["kept_share"],
        "leak_rate_before": refine_report["leak_rate_before"],
        "leak_rate_after": refine_report["leak_rate_after"],
        "median_confidence": report["median_confidence"],
        "target_top1_share": report["target_top1_share"],
        "refine_failed": refine_report["failed"],
    }
    write_json(summary, metrics)
    write_csv([{"bin": h["bin"], "count": h["count"]} for h in hist], plot)
    print(
        f"assess_cot: kept {report['kept']}/{report['samples']} ({report['kept_share']}); median confidence "
        f"{report['median_confidence']}; target ranked first for {report['target_top1_share']} of CoTs "
        f"(chance {report['chance_top1']}); {report['embedding']['model_calls']} texts embedded"
    )


if __name__ == "__main__":
    run(main)
