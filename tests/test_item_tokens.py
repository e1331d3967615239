"""Collaborative item tokens (mllmrec.training.item_tokens): the learning guard, the one-forward ranking against the
line-likelihood ranker, the merged checkpoint, and what bad input gets.

The guard (tests/collab_project.py): the next item follows only from co-occurrence (8 hidden groups; titles are random
letters), and every held-out candidate is an item SFT never saw. Through the stages' functions (SASRec as the sasrec
stage trains it, the item_tokens table, train_sft, the evaluate stage's likelihood ranking), a policy whose item tokens
start from SASRec's embeddings ranks the held-out target first; the same SFT on text alone stays at chance. Planting
the defect it guards (the projected SASRec vectors zeroed in init_item_embeddings) made it fail (held-out HR@1 0.07).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from collab_project import ITEMS, PROMPT, TEXTS, samples, sequences

from mllmrec.config import EvalParams, SasrecParams, SftParams
from mllmrec.errors import UserError
from mllmrec.evaluation.candidates import score_predictions
from mllmrec.evaluation.likelihood import score_candidates
from mllmrec.evaluation.policy import check_vocabulary, likelihood_predictions, load_policy
from mllmrec.prompts import build_messages, completion_template, item_token_ids, render_prompt
from mllmrec.training.item_tokens import add_item_tokens, init_item_embeddings, item_table

ROOT = Path(__file__).resolve().parents[1]
ITEMS_DF = pl.DataFrame({"item_id": ITEMS, "title": [TEXTS[i].title for i in ITEMS]})
LORA = {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"}


def with_target_index(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns(
        target_index=pl.struct("candidates", "target").map_elements(
            lambda r: list(r["candidates"]).index(r["target"]), return_dtype=pl.Int64
        )
    )


@pytest.fixture(scope="module")
def sasrec_checkpoint():
    """SASRec trained on every item's sequences, exactly as the sasrec stage trains it (baselines.sasrec_scorer)."""
    from mllmrec.evaluation.baselines import sasrec_scorer

    valid, held = with_target_index(samples(40, "valid", True)), samples(60, "test", False)
    _, checkpoint, _ = sasrec_scorer(
        sequences(), valid, held, SasrecParams(hidden=16, lr=0.005, epochs=30, patience=30, threads=2)
    )
    return checkpoint


def sft_then_rank(base_dir: Path, table: pl.DataFrame, out: Path) -> float:
    """The sft stage's path (tokenizer extended before tokenizing, train_sft with the table), then the evaluate stage's
    likelihood ranking of held-out samples whose candidates SFT never saw. Returns held-out HR@1."""
    from transformers import AutoTokenizer

    from mllmrec.training.sft import sft_examples, tokenize_examples, train_sft

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    tok = AutoTokenizer.from_pretrained(base_dir)
    add_item_tokens(tok, table["item_id"].to_list())
    rows, _ = tokenize_examples(sft_examples(samples(400, "train", True), TEXTS, tok, PROMPT, None), tok, 4096)
    params = SftParams(
        lora=LORA,
        lr=1e-2,
        scheduler="constant",
        max_steps=400,
        batch_size=8,
        grad_accum=1,
        dtype="float32",
        save_steps=10_000,
        logging_steps=100,
        checkpoint_dir=str(out) + ".ckpt",
    )
    train_sft(rows, str(base_dir), "", tok, params, out, item_table=table)
    model, tok = load_policy(str(out), "", torch.device("cpu"), torch.float32)  # plain transformers, no project code
    preds = likelihood_predictions(model, tok, samples(60, "test", False), TEXTS, PROMPT, None, 8192)
    return score_predictions(preds, EvalParams(ks=[1], bootstrap=0))[1]["HR@1"]


@pytest.mark.slow
def test_collaborative_item_tokens_learn_what_titles_cannot(tiny_lm_dir, sasrec_checkpoint, tmp_path):
    collaborative = sft_then_rank(tiny_lm_dir, item_table(ITEMS_DF, sasrec_checkpoint), tmp_path / "collab")
    text_only = sft_then_rank(tiny_lm_dir, item_table(ITEMS_DF, None), tmp_path / "text")
    assert collaborative >= 0.9, f"held-out HR@1 with SASRec item tokens {collaborative} (text only {text_only})"
    assert text_only <= 0.3, f"held-out HR@1 on titles alone {text_only}: the data leaks the answer into the text"


def tokens_model(tiny_lm_dir, table):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_lm_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir, dtype=torch.float32).eval()
    info = init_item_embeddings(model, tok, table, seed=0)
    return model, tok, info


def test_item_token_ranking_is_the_line_likelihoods_first_factor(tiny_lm_dir):
    """One forward per prompt gives each candidate's item-token log-prob: exactly the first term of the packed
    line-likelihood scorer (checked against brute force in test_likelihood.py)."""
    table = item_table(ITEMS_DF, {"state_dict": {"item_emb.weight": torch.randn(len(ITEMS) + 1, 16)}, "items": ITEMS})
    model, tok, info = tokens_model(tiny_lm_dir, table)
    assert info["item_tokens"] == len(ITEMS) and info["vocab_after"] == info["vocab_before"] + len(ITEMS)
    held = samples(6, "test", False)
    fast = likelihood_predictions(model, tok, held, TEXTS, PROMPT, None, max_tokens=8192)
    token_of = item_token_ids(tok)
    for sample, scores in zip(held.iter_rows(named=True), fast["scores"].to_list()):
        messages = build_messages(sample, TEXTS, PROMPT)
        prefix, _ = completion_template(tok, messages, None)
        assert prefix == ""  # ChatML: the answer's first token is the item's own
        first = score_candidates(
            model,
            tok,
            [render_prompt(tok, messages, None)],
            [[tok.convert_ids_to_tokens(token_of[c]) for c in sample["candidates"]]],
        )[0]
        np.testing.assert_allclose(scores, first, atol=1e-4)
        answer_ids = tok(f"[ITEM_{sample['target']}] x", add_special_tokens=False)["input_ids"]
        assert answer_ids[0] == token_of[sample["target"]]  # the answer line starts with the one item token


def test_items_sasrec_never_saw_start_from_their_title(tiny_lm_dir):
    table = item_table(ITEMS_DF, {"state_dict": {"item_emb.weight": torch.randn(5, 16)}, "items": ITEMS[:4]})
    assert table["vector"].null_count() == len(ITEMS) - 4
    model, tok, info = tokens_model(tiny_lm_dir, table)
    assert (info["item_tokens_from_sasrec"], info["item_tokens_title_fallback"]) == (4, len(ITEMS) - 4)
    emb = model.get_input_embeddings().weight
    title_ids = tok(" " + TEXTS[ITEMS[10]].title, add_special_tokens=False)["input_ids"]
    torch.testing.assert_close(emb[item_token_ids(tok)[ITEMS[10]]], emb[title_ids].mean(0))


def test_a_checkpoint_whose_vocabulary_misses_the_item_tokens_is_named(tiny_lm_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_lm_dir)
    add_item_tokens(tok, ITEMS)
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)  # not resized: another run's weights
    with pytest.raises(UserError, match=r"models/x: its tokenizer has 64 item tokens .* vocabulary has \d+ rows"):
        check_vocabulary(model, tok, "models/x")


def test_candidates_without_an_item_token_are_named(tiny_item_lm_dir):
    model, tok = load_policy(str(tiny_item_lm_dir), "", torch.device("cpu"), torch.float32)
    held = samples(2, "test", False)  # items 0..63; the checkpoint knows [ITEM_1]..[ITEM_40]
    with pytest.raises(
        UserError, match=r"has 40 item tokens, but \d+ candidate items have none .*rerun `dvc repro sft`"
    ):
        likelihood_predictions(model, tok, held, TEXTS, PROMPT, None, 8192)


def test_item_tokens_stage_without_sasrec_names_the_stage(tmp_path):
    (tmp_path / "data/ingest").mkdir(parents=True)
    ITEMS_DF.write_parquet(tmp_path / "data/ingest/items.parquet")
    (tmp_path / "params.yaml").write_text("item_tokens:\n  enabled: true\n")
    run = subprocess.run(
        [sys.executable, str(ROOT / "stages/item_tokens.py")], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert "data/models/sasrec.pt" in run.stderr and "sasrec" in run.stderr
    (tmp_path / "data/models").mkdir(parents=True)
    (tmp_path / "data/models/sasrec.pt").write_text("not a checkpoint")  # a broken or foreign file: one line too
    run = subprocess.run(
        [sys.executable, str(ROOT / "stages/item_tokens.py")], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "dvc repro sasrec" in run.stderr, run.stderr
    (tmp_path / "params.yaml").write_text("item_tokens:\n  enabled: false\n")
    run = subprocess.run(
        [sys.executable, str(ROOT / "stages/item_tokens.py")], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stderr
    assert pl.read_parquet(tmp_path / "data/item_tokens/items.parquet").height == 0
    assert json.loads((tmp_path / "data/item_tokens/report.json").read_text())["enabled"] is False
