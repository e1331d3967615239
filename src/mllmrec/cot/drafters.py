"""draft_cot's one library call: the drafter `draft_cot.mode` names, in one output schema and one report type.

    from mllmrec.cot.drafters import draft_samples
    drafts, report = draft_samples(samples, texts, params, spec=spec, make_engine=..., items=items, sequences=seqs)

captions / images: a model through `models.drafter` (mllmrec.cot.generate.draft, content-cached); grounded: the
rule-based stand-in for the paper's VLM drafter (mllmrec.cot.grounded, no model: `models.drafter` goes unused, the
cache folder stays empty). The stage calls this either way and never branches on the drafter.
"""

from collections.abc import Callable
from pathlib import Path

import polars as pl

from mllmrec import partcache
from mllmrec.config import DraftCotParams, EngineSpec, ExecutorParams
from mllmrec.cot.generate import draft, to_sampling
from mllmrec.cot.grounded import draft_grounded
from mllmrec.cot.reports import DraftReport
from mllmrec.engines.base import Engine
from mllmrec.prompts import ItemText


def draft_samples(
    samples: pl.DataFrame,
    texts: dict[str, ItemText],
    params: DraftCotParams,
    *,
    spec: EngineSpec,
    make_engine: Callable[[], Engine],
    items: pl.DataFrame,
    sequences: pl.DataFrame,
    executor: ExecutorParams | None = None,
) -> tuple[pl.DataFrame, DraftReport]:
    """One draft per sample (samples + draft, draft_error, draft_finish_reason, draft_key, draft_model,
    draft_revision) and the DraftReport. `items` (its optional genres) and `sequences` (split's training sequences)
    are read by the grounded drafter only."""
    if params.mode == "grounded":
        Path(params.cache_dir).mkdir(parents=True, exist_ok=True)  # a declared output of the stage, even if empty
        return draft_grounded(samples, texts, items, sequences, params.seed)
    model, revision = partcache.model_identity(spec)
    return draft(
        samples,
        texts,
        mode=params.mode,
        prompt=params.prompt,
        sampling=to_sampling(params.sampling),
        model=model,
        revision=revision,
        make_engine=make_engine,
        cache_dir=Path(params.cache_dir),
        batch_size=params.batch_size,
        max_caption_chars=params.max_caption_chars,
        executor=executor,
    )
