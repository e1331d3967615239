"""The CoT stages' reports (data/cot/*_report.json) and their run's funnel (metrics/cot.json), as types.

Field names are the JSON keys and field order is the key order (mllmrec.reports); the builders are in
mllmrec.cot.generate (draft, refine) and mllmrec.cot.assess. Kept apart from them so assess_cot reads the draft and
refine reports without importing the generation code.
"""

from dataclasses import dataclass, field

from mllmrec.reports import OMIT_IF_NONE


@dataclass(kw_only=True)
class DraftReport:
    """data/cot/draft_report.json."""

    samples: int
    drafted: int
    mode: str
    errors: dict[str, int]  # by reason
    input_notes: dict[str, int]  # e.g. captions cut to max_caption_chars
    # the content cache (mllmrec.partcache), in the order generate's counter fills them
    model_calls: int
    cache_hits: int
    engine_retries: int
    parts_written: int
    stale_temp_files_removed: int
    rejected_cache_parts: int | None = field(default=None, metadata=OMIT_IF_NONE)  # a part failed verification
    model: str
    revision: str
    executor: dict | None = field(default=None, metadata=OMIT_IF_NONE)  # Ray runs (mllmrec.executor.report_entry)
    # set by the stage: the candidates file's train rows (the drafted ones are a seeded subset)
    train_samples_available: int | None = field(default=None, metadata=OMIT_IF_NONE)
    # draft_cot.mode grounded only (mllmrec.cot.grounded): the stand-in named plainly, and the facts it went without
    drafter: str | None = field(default=None, metadata=OMIT_IF_NONE)
    facts_missing_from_dataset: list[str] | None = field(default=None, metadata=OMIT_IF_NONE)  # no item has them
    facts_lacked: dict[str, int] | None = field(default=None, metadata=OMIT_IF_NONE)  # samples whose history lacks each


@dataclass(kw_only=True)
class RefineReport:
    """data/cot/refine_report.json: the editor's yield by reason, then the leak audit before/after."""

    drafts_in: int
    sent_to_editor: int
    refined_format_ok: int
    with_cot: int
    failed: dict[str, int]  # by reason
    attempts_histogram: dict[int, int]  # attempts -> samples (keys are strings once read back from JSON)
    attempt_reasons: dict[str, int]
    leak_before: int
    leak_rate_before: float | None  # None when no CoT was edited
    leak_kinds: dict[str, int]
    leak_action: str
    scrubbed_sentences: int
    dropped: int
    leak_after: int
    leak_rate_after: float
    show_target: bool
    target_planted: int | None = field(
        default=None, metadata=OMIT_IF_NONE
    )  # refine_cot.plant_target: Step 4s made to name it
    input_notes: dict[str, int]
    model_calls: int
    cache_hits: int
    engine_retries: int
    parts_written: int
    stale_temp_files_removed: int
    rejected_cache_parts: int | None = field(default=None, metadata=OMIT_IF_NONE)
    model: str
    revision: str
    generation_params: dict
    executor: dict | None = field(default=None, metadata=OMIT_IF_NONE)
    # refine_cot.source authors_json: how their file joined our samples
    authors_json: dict | None = field(default=None, metadata=OMIT_IF_NONE)


@dataclass(kw_only=True)
class EmbeddingStats:
    """assess_report.json's `embedding`: the embedding cache of this run."""

    stale_temp_files_removed: int
    rejected_cache_parts: int | None = field(default=None, metadata=OMIT_IF_NONE)
    texts: int
    cache_hits: int
    model_calls: int
    parts_written: int
    executor: dict | None = field(default=None, metadata=OMIT_IF_NONE)


@dataclass(kw_only=True)
class AssessReport:
    """data/cot/assess_report.json."""

    samples: int
    with_cot: int
    kept: int
    kept_share: float | None  # None for no samples
    kept_share_of_cot: float
    median_confidence: float | None  # None for no CoT
    target_top1_share: float
    confidence: str  # softmax | margin
    threshold: float
    require_top1: bool
    keep_rule: str
    chance_top1: float | None
    embedding_model: str
    embedding_revision: str
    embedding: EmbeddingStats


@dataclass(kw_only=True)
class CotMetrics:
    """metrics/cot.json: the CoT funnel of one run (drafted -> refined -> audited -> kept) and its leak rates."""

    train_samples_drafted: int
    refined_format_ok: int
    with_cot_after_audit: int
    kept: int
    kept_share: float | None
    leak_rate_before: float | None
    leak_rate_after: float
    median_confidence: float | None
    target_top1_share: float
    refine_failed: dict[str, int]

    @classmethod
    def of(cls, draft: DraftReport, refine: RefineReport, assess: AssessReport) -> "CotMetrics":
        """The funnel from the three stages' reports (the one place their keys get a run-level name)."""
        return cls(
            train_samples_drafted=draft.drafted,
            refined_format_ok=refine.refined_format_ok,
            with_cot_after_audit=assess.with_cot,
            kept=assess.kept,
            kept_share=assess.kept_share,
            leak_rate_before=refine.leak_rate_before,
            leak_rate_after=refine.leak_rate_after,
            median_confidence=assess.median_confidence,
            target_top1_share=assess.target_top1_share,
            refine_failed=refine.failed,
        )
