"""augment: seeded + persisted CoT draw, the share respects cot_prob, only kept CoTs, never valid/test."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from mllmrec.config import AugmentParams
from mllmrec.data.split import seeded_subset
from mllmrec.errors import UserError
from mllmrec.training.augment import augment

ROOT = Path(__file__).resolve().parents[1]


def candidates(n_users: int) -> pl.DataFrame:
    rows = []
    for u in range(n_users):
        for split, pos in (("train", 9), ("valid", 10), ("test", 11)):
            rows.append(
                {
                    "sample_id": f"{u}:{split}:{pos}",
                    "user_id": str(u),
                    "split": split,
                    "history": [f"i{j}" for j in range(pos - 9, pos)],
                    "target": f"i{pos}",
                    "candidates": [f"i{pos}", "n1", "n2"],
                    "target_index": 0,
                    "seed": 0,
                    "num_negatives": 2,
                }
            )
    return pl.DataFrame(rows)


def cots(cands: pl.DataFrame, keep_every: int = 2) -> pl.DataFrame:
    """A CoT for every sample incl. valid/test (which augment must ignore); every `keep_every`-th is kept."""
    ids = cands["sample_id"].to_list()
    return pl.DataFrame(
        {
            "sample_id": ids,
            "cot": [f"Step 1: cot of {s}" for s in ids],
            "keep": [i % keep_every == 0 for i in range(len(ids))],
            "confidence": [0.5] * len(ids),
        }
    )


def test_draw_is_seeded_persisted_and_only_kept_train_cots():
    cands = candidates(400)
    c = cots(cands)
    p = AugmentParams(sft_cot_prob=0.1, grpo_cot_prob=0.05, seed=3)
    sft, grpo, rep = augment(cands, c, p)
    sft2, grpo2, _ = augment(cands.sample(fraction=1.0, shuffle=True, seed=1), c.reverse(), p)
    assert sft.equals(sft2) and grpo.equals(grpo2)  # row order of the inputs does not matter
    other, _, _ = augment(cands, c, p.model_copy(update={"seed": 4}))
    assert not other["has_cot"].equals(sft["has_cot"])

    kept = set(c.filter("keep")["sample_id"])
    for df, prob in ((sft, 0.1), (grpo, 0.05)):
        assert set(df.columns) >= {
            "sample_id",
            "user_id",
            "history",
            "candidates",
            "target",
            "cot",
            "has_cot",
            "cot_draw",
        }
        assert df["sample_id"].str.contains(":train:").all()  # valid/test never appear, so never get CoT
        assert df.height == 400 and df["has_cot"].sum() == round(prob * 400)
        with_cot = df.filter("has_cot")
        assert set(with_cot["sample_id"]) <= kept
        assert (with_cot["cot"] == "Step 1: cot of " + with_cot["sample_id"]).all()  # joined on sample_id
        assert df.filter(~pl.col("has_cot"))["cot"].null_count() == df.height - with_cot.height
        # the persisted draw explains the decision: the chosen are the kept ones with the smallest draws
        kept_df = df.filter(pl.col("sample_id").is_in(list(kept))).sort("cot_draw")
        assert kept_df["has_cot"].to_list() == [True] * with_cot.height + [False] * (kept_df.height - with_cot.height)
    assert rep.cots.kept_not_train > 0 and rep.sft.shortfall == 0


def test_share_statistics_and_independent_streams():
    cands = candidates(2000)
    c = cots(cands, keep_every=1)
    sft, grpo, _ = augment(cands, c, AugmentParams(sft_cot_prob=0.1, grpo_cot_prob=0.05))
    assert sft["has_cot"].mean() == pytest.approx(0.1) and grpo["has_cot"].mean() == pytest.approx(0.05)
    u = sft["cot_draw"].to_numpy()
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 0.02  # a uniform draw
    assert abs(np.corrcoef(u, grpo["cot_draw"].to_numpy())[0, 1]) < 0.1  # separate streams
    # changing the GRPO share leaves the SFT draw alone
    sft3, _, _ = augment(cands, c, AugmentParams(sft_cot_prob=0.1, grpo_cot_prob=0.5))
    assert sft3.equals(sft)
    # without an assessment filter every train sample is eligible: the chosen set is a uniform random subset
    first_half = sft.filter("has_cot")["sample_id"].str.split(":").list.first().cast(int) < 1000
    assert 0.4 < first_half.mean() < 0.6


def test_shortfall_when_few_cots_kept_and_zero_prob():
    cands = candidates(100)
    c = cots(cands, keep_every=30)  # ~10 kept overall, ~3-4 of them train
    sft, _, rep = augment(cands, c, AugmentParams(sft_cot_prob=0.5))
    assert rep.sft.requested == 50 and sft["has_cot"].sum() == rep.cots.kept_in_samples < 50
    none, _, _ = augment(cands, c, AugmentParams(sft_cot_prob=0.0, grpo_cot_prob=0.0))
    assert none["has_cot"].sum() == 0 and none["cot"].null_count() == none.height


def test_subsample_seeded_by_sample_id():
    cands = candidates(300)
    a, _, rep = augment(cands, cots(cands), AugmentParams(max_samples=50, seed=1))
    assert a.height == 50 and rep.train_samples == 300
    train = cands.filter(pl.col("split") == "train")
    assert seeded_subset(train, 50, 1)["sample_id"].to_list() == a["sample_id"].to_list()
    assert set(seeded_subset(train, 50, 2)["sample_id"]) != set(a["sample_id"])
    # nests with draft_cot's subsample (same key): the drafted samples are among augment's
    from mllmrec.cot.generate import select_train_samples

    drafted = set(select_train_samples(cands, 30, 1)["sample_id"])
    assert drafted <= set(a["sample_id"])
    # growing the data keeps the earlier picks that still rank in the first n (hash order, not row order)
    assert set(seeded_subset(train.head(200), 20, 1)["sample_id"]) <= set(seeded_subset(train, 200, 1)["sample_id"])


def test_bad_cot_file():
    cands = candidates(5)
    with pytest.raises(UserError, match="missing column"):
        augment(cands, pl.DataFrame({"sample_id": ["0:train:9"], "text": ["x"]}), AugmentParams())
    dup = pl.DataFrame({"sample_id": ["0:train:9"] * 2, "cot": ["a", "b"], "keep": [True, True]})
    with pytest.raises(UserError, match="more than once"):
        augment(cands, dup, AugmentParams())
    empty = pl.DataFrame({"sample_id": ["0:train:9"], "cot": ["  "], "keep": [True]})
    assert augment(cands, empty, AugmentParams(sft_cot_prob=1.0))[0]["has_cot"].sum() == 0


def test_stage_names_assess_cot_when_cot_file_missing(tmp_path):
    (tmp_path / "data/split").mkdir(parents=True)
    candidates(3).write_parquet(tmp_path / "data/split/candidates_n9.parquet")
    (tmp_path / "params.yaml").write_text("augment:\n  cot_file: data/cot/assessed.parquet\n")
    r = subprocess.run(
        [sys.executable, str(ROOT / "stages/augment.py")], cwd=tmp_path, capture_output=True, check=False, text=True
    )
    assert r.returncode == 2 and "dvc repro assess_cot" in r.stderr
    cots(candidates(3)).write_parquet(tmp_path / "assessed.parquet")
    (tmp_path / "params.yaml").write_text("augment:\n  cot_file: assessed.parquet\n  sft_cot_prob: 1.0\n")
    r = subprocess.run(
        [sys.executable, str(ROOT / "stages/augment.py")], cwd=tmp_path, capture_output=True, check=False, text=True
    )
    assert r.returncode == 0, r.stderr
    sft = pl.read_parquet(tmp_path / "data/augment/sft.parquet")
    assert sft["has_cot"].to_list() == [True, False, True]  # every kept train CoT (keep_every=2 over all rows)


def test_project_params_validate():
    from mllmrec.config import load_section

    p = load_section("augment", AugmentParams, ROOT / "params.yaml")
    assert 0 <= p.grpo_cot_prob <= p.sft_cot_prob <= 1


def test_sft_file_is_the_same_when_only_the_grpo_side_differs(tmp_path):
    """The ablation grid's leaky-cot and no-cot arms share one SFT run (DVC run-cache): with no CoT in SFT, the SFT
    file must not depend on which CoTs were kept or on the GRPO share."""
    cands = candidates(50)
    none_kept = cots(cands).with_columns(pl.lit(False).alias("keep"))
    a, _, _ = augment(cands, none_kept, AugmentParams(sft_cot_prob=0.0, grpo_cot_prob=0.0))
    b, grpo, rep = augment(cands, cots(cands, keep_every=1), AugmentParams(sft_cot_prob=0.0, grpo_cot_prob=0.5))
    assert rep.grpo.with_cot == 25 and grpo["has_cot"].sum() == 25  # the GRPO side does differ
    a.write_parquet(tmp_path / "a.parquet")
    b.write_parquet(tmp_path / "b.parquet")
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
