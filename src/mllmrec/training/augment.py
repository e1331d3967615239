"""Mixed-grained augmentation: every training sample, plus a CoT on a seeded share of them.

    from mllmrec.training.augment import augment
    sft, grpo, report = augment(candidates_df, assessed_cots_df, params)   # params: mllmrec.config.AugmentParams

Only train samples are used (valid/test never carry CoT), and only CoTs the assessment kept are eligible. Each
output file gets its own draw: a uniform number per sample from a stage-local generator (`cot_draw`, persisted), and
the `round(share * samples)` eligible samples with the smallest draws carry their CoT (`has_cot`). An exact count,
not a coin flip per eligible sample: the paper's 5-10 % is a share of the training samples, and with a strict
assessment a per-sample coin among the kept CoTs would give far fewer. When fewer CoTs were kept than the share asks
for, all of them are used and the shortfall is reported.
"""

from dataclasses import dataclass

import numpy as np
import polars as pl

from mllmrec.config import AugmentParams
from mllmrec.data.split import seeded_subset
from mllmrec.errors import UserError

# what training reads + the persisted draw; nothing that differs between two configs training on the same samples
# (how many CoTs were eligible is in the report), so ablation arms that differ only in GRPO share one SFT run
OUT_COLUMNS = ["sample_id", "user_id", "history", "candidates", "target", "cot", "has_cot", "cot_draw"]
COT_COLUMNS = {"sample_id", "cot", "keep"}  # what we read from the assess_cot output


@dataclass(kw_only=True)
class CotDraw:
    """One output file's CoT draw: the share asked for, the count it asks, what the kept CoTs allowed."""

    cot_prob: float
    requested: int
    with_cot: int
    shortfall: int  # requested - with_cot: fewer kept CoTs than the share asks for
    share: float  # with_cot / samples


@dataclass(kw_only=True)
class CotCounts:
    """The assess_cot output's rows, the kept ones, and where those are."""

    rows: int
    kept: int
    kept_not_train: int  # kept CoTs of valid/test samples (or of samples the candidates file lacks): never used
    kept_in_samples: int


@dataclass(kw_only=True)
class AugmentReport:
    """data/augment/report.json (field names are its keys, mllmrec.reports)."""

    num_negatives: int
    train_samples: int
    samples: int
    cots: CotCounts
    sft: CotDraw
    grpo: CotDraw


def kept_cots(cots: pl.DataFrame, source: str) -> pl.DataFrame:
    """sample_id -> cot for CoTs the assessment kept (non-empty text). `source` names the file in errors."""
    missing = COT_COLUMNS - set(cots.columns)
    if missing:
        raise UserError(
            f"{source}: missing column(s) {sorted(missing)}; expected the assess_cot output with {sorted(COT_COLUMNS)}"
        )
    dup = cots.filter(pl.col("sample_id").is_duplicated())["sample_id"]
    if dup.len():
        raise UserError(f"{source}: sample_id {dup[0]!r} appears more than once (one CoT per sample)")
    return cots.filter(pl.col("keep").fill_null(False) & (pl.col("cot").fill_null("").str.strip_chars() != "")).select(
        "sample_id", pl.col("cot").str.strip_chars()
    )


def draw_cot(samples: pl.DataFrame, share: float, rng: np.random.Generator) -> tuple[pl.DataFrame, CotDraw]:
    """Set cot/has_cot/cot_draw on `samples` (sorted by sample_id; `cot` null where no kept CoT)."""
    u = rng.random(samples.height)  # one draw per sample in sample_id order: reproducible from (seed, samples)
    eligible = samples["cot"].is_not_null().to_numpy()
    wanted = round(share * samples.height)
    n = min(wanted, int(eligible.sum()))
    chosen = np.zeros(samples.height, dtype=bool)
    if n:
        idx = np.flatnonzero(eligible)
        chosen[idx[np.argsort(u[idx], kind="stable")[:n]]] = True
    out = samples.with_columns(
        has_cot=pl.Series(chosen),
        cot_draw=pl.Series(u),
    ).with_columns(cot=pl.when("has_cot").then("cot").otherwise(None))
    report = CotDraw(
        cot_prob=share,
        requested=wanted,
        with_cot=n,
        shortfall=wanted - n,
        share=round(n / samples.height, 4) if samples.height else 0.0,
    )
    return out.select(OUT_COLUMNS), report


def augment(
    cands: pl.DataFrame, cots: pl.DataFrame, params: AugmentParams, cot_source: str = "cot file"
) -> tuple[pl.DataFrame, pl.DataFrame, AugmentReport]:
    """(sft samples, grpo samples, report) from the persisted candidates and the assessed CoTs."""
    train = cands.filter(pl.col("split") == "train")
    if train.is_empty():
        raise UserError("no split == 'train' rows in the candidates file; check `split` params")
    samples = seeded_subset(train, params.max_samples, params.seed)
    pool = kept_cots(cots, cot_source)
    # CoTs of valid/test (or of samples this file lacks) are never used: count them instead of joining them in
    not_train = pool.join(train.select("sample_id"), on="sample_id", how="anti").height
    samples = (
        samples.select("sample_id", "user_id", "history", "candidates", "target")
        .join(pool, on="sample_id", how="left")
        .sort("sample_id")
    )  # the draw order must not depend on the join

    # separate stage-local streams: changing one share never moves the other file's draw
    sft, sft_rep = draw_cot(samples, params.sft_cot_prob, np.random.default_rng([params.seed, 0]))
    grpo, grpo_rep = draw_cot(samples, params.grpo_cot_prob, np.random.default_rng([params.seed, 1]))
    report = AugmentReport(
        num_negatives=params.num_negatives,
        train_samples=train.height,
        samples=samples.height,
        cots=CotCounts(
            rows=cots.height,
            kept=pool.height,
            kept_not_train=not_train,
            kept_in_samples=int(samples["cot"].is_not_null().sum()),
        ),
        sft=sft_rep,
        grpo=grpo_rep,
    )
    return sft, grpo, report
