"""Typed stage reports (mllmrec.reports): field names are the JSON keys, in field order; optional keys stay absent.

.venv/bin/pytest tests/test_reports.py -q
"""

import json

import numpy as np
import pytest

from mllmrec.cot.assess import embed_cached
from mllmrec.cot.reports import AssessReport, CotMetrics, DraftReport, EmbeddingStats, RefineReport
from mllmrec.errors import UserError
from mllmrec.reports import as_dict, from_dict, read_report, write_report
from mllmrec.training.augment import AugmentReport, CotCounts, CotDraw

CACHE = {"model_calls": 2, "cache_hits": 3, "engine_retries": 0, "parts_written": 1, "stale_temp_files_removed": 0}


def _draft(**kw) -> DraftReport:
    base = {"samples": 5, "drafted": 5, "mode": "captions", "errors": {}, "input_notes": {}, **CACHE}
    return DraftReport(**base | {"model": "m", "revision": "r"} | kw)


def _assess(**kw) -> AssessReport:
    stats = EmbeddingStats(stale_temp_files_removed=0, texts=9, cache_hits=0, model_calls=9, parts_written=1)
    base = {"samples": 5, "with_cot": 4, "kept": 3, "kept_share": 0.6, "kept_share_of_cot": 0.75}
    base |= {"median_confidence": 0.4, "target_top1_share": 0.5, "confidence": "softmax", "threshold": 0.3}
    base |= {"require_top1": True, "keep_rule": "reliable", "chance_top1": 0.1, "embedding_model": "e"}
    return AssessReport(**base | {"embedding_revision": "r", "embedding": stats} | kw)


def test_optional_keys_are_left_out_until_set_and_keep_their_place():
    plain = as_dict(_draft())
    assert list(plain) == [*("samples", "drafted", "mode", "errors", "input_notes"), *CACHE, "model", "revision"]
    ray = as_dict(_draft(rejected_cache_parts=1, executor={"kind": "ray"}, train_samples_available=300))
    assert list(ray)[9:] == ["stale_temp_files_removed", "rejected_cache_parts", "model", "revision", "executor"] + [
        "train_samples_available"
    ]


def test_a_none_that_is_a_value_is_written():
    """kept_share is None for no samples: a value of the report, written as null (not an optional key)."""
    out = as_dict(_assess(samples=0, kept_share=None, median_confidence=None))
    assert out["kept_share"] is None and out["median_confidence"] is None
    assert out["embedding"] == {
        "stale_temp_files_removed": 0,
        "texts": 9,
        "cache_hits": 0,
        "model_calls": 9,
        "parts_written": 1,
    }


def test_nested_reports_round_trip_through_the_file(tmp_path):
    draw = CotDraw(cot_prob=0.1, requested=3, with_cot=2, shortfall=1, share=0.0667)
    report = AugmentReport(
        num_negatives=9,
        train_samples=30,
        samples=30,
        cots=CotCounts(rows=4, kept=2, kept_not_train=0, kept_in_samples=2),
        sft=draw,
        grpo=draw,
    )
    write_report(report, tmp_path / "report.json")
    assert json.loads((tmp_path / "report.json").read_text())["sft"] == as_dict(draw)
    assert read_report(tmp_path / "report.json", AugmentReport, "augment") == report


def test_the_funnel_takes_each_stage_report_by_its_own_name():
    refine = {"drafts_in": 5, "sent_to_editor": 5, "refined_format_ok": 5, "with_cot": 5, "leak_before": 1}
    refine |= {"scrubbed_sentences": 1, "dropped": 0, "leak_after": 0, "failed": {"echo": 1}, "leak_kinds": {}}
    refine |= {"attempts_histogram": {"1": 5}, "attempt_reasons": {}, "leak_rate_before": 0.2, "leak_rate_after": 0.0}
    refine |= {"leak_action": "scrub", "show_target": False, "input_notes": {}, **CACHE, "model": "m"}
    refine |= {"revision": "", "generation_params": {}}
    funnel = CotMetrics.of(_draft(drafted=6), from_dict(RefineReport, refine, "refine_report.json"), _assess())
    assert as_dict(funnel) == {
        "train_samples_drafted": 6,
        "refined_format_ok": 5,
        "with_cot_after_audit": 4,
        "kept": 3,
        "kept_share": 0.6,
        "leak_rate_before": 0.2,
        "leak_rate_after": 0.0,
        "median_confidence": 0.4,
        "target_top1_share": 0.5,
        "refine_failed": {"echo": 1},
    }


def test_a_report_of_another_version_names_its_file_and_keys(tmp_path):
    data = as_dict(_draft()) | {"drafted_total": 5}
    del data["mode"]
    with pytest.raises(
        UserError, match=r"old.json: not a DraftReport \(unknown keys \['drafted_total'\], missing keys"
    ):
        from_dict(DraftReport, data, "old.json")
    with pytest.raises(UserError, match=r"run `dvc repro draft_cot` first"):
        read_report(tmp_path / "draft_report.json", DraftReport, "draft_cot")


class _Embedder:
    def encode(self, texts: list[str]) -> np.ndarray:
        return np.array([[len(t), 1.0] for t in texts]) / np.hypot([len(t) for t in texts], 1.0)[:, None]


def test_a_damaged_embedding_part_is_counted_and_recomputed(tmp_path):
    """It raised KeyError while the counts were a plain dict; now the report says so, like the other caches."""
    texts = ["a", "bb", "ccc", "dddd"]
    first, stats = embed_cached(texts, ("e", "r"), _Embedder, tmp_path, 2, None)
    assert (
        stats.model_calls == 4 and stats.rejected_cache_parts is None and "rejected_cache_parts" not in as_dict(stats)
    )
    part = min(tmp_path.glob("part-*.parquet"))
    part.write_bytes(part.read_bytes() + b"x")  # its bytes no longer match its name
    again, stats = embed_cached(texts, ("e", "r"), _Embedder, tmp_path, 2, None)
    assert stats.rejected_cache_parts == 1 and stats.model_calls == 2 and stats.cache_hits == 2
    assert list(as_dict(stats))[:2] == ["stale_temp_files_removed", "rejected_cache_parts"]
    assert all((again[t] == first[t]).all() for t in texts)
