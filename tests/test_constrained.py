"""grpo.constrain_to_candidates (mllmrec.training.constrained): GRPO samples item tokens among the prompt's candidates.

.venv/bin/pytest tests/test_constrained.py -q
"""

import json
import random
import re
import sys

import polars as pl
import pytest
import torch

from mllmrec.config import GrpoParams, PromptParams
from mllmrec.errors import UserError
from mllmrec.prompts import ItemText, item_token_ids
from mllmrec.training.constrained import CandidateItemsOnly, allowed_by_prompt
from mllmrec.training.grpo import grpo_rows, train_grpo

ITEMS = [str(i) for i in range(1, 41)]
TEXTS = {i: ItemText(f"film {i}") for i in ITEMS}
PROMPT = PromptParams(system="Recommend the next item.", captions="none")


def samples(n: int) -> pl.DataFrame:
    rng, rows = random.Random(0), []
    for u in range(n):
        drawn = rng.sample(ITEMS, 14)
        rows.append(
            {
                "sample_id": f"{u}:train",
                "history": drawn[:4],
                "candidates": drawn[4:],
                "target": drawn[4],
                "cot": None,
                "has_cot": False,
            }
        )
    return pl.DataFrame(rows, schema_overrides={"cot": pl.String})


def test_other_item_tokens_are_masked_per_row_and_the_rest_kept():
    scores = torch.arange(20, dtype=torch.float32).repeat(2, 1)  # two rows, vocabulary of 20, items 10..19
    out = CandidateItemsOnly([[12, 15], [19]], list(range(10, 20)))(None, scores)
    assert out[0, :10].tolist() == list(range(10)) and out[1, :10].tolist() == list(range(10))
    assert [j for j in range(10, 20) if out[0, j] > float("-inf")] == [12, 15]
    assert [j for j in range(10, 20) if out[1, j] > float("-inf")] == [19]
    assert out[0, 12] == 12 and out[1, 19] == 19


def test_a_policy_without_item_tokens_and_vllm_are_refused(tiny_lm_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_lm_dir)
    rows = grpo_rows(samples(2), TEXTS, tok, PROMPT, None)
    with pytest.raises(UserError, match="no item tokens.*set it false"):
        allowed_by_prompt(rows, tok)
    with pytest.raises(ValueError, match="transformers generation only"):
        GrpoParams(constrain_to_candidates=True, use_vllm=True)


@pytest.fixture(scope="module")
def item_greedy_lm(tiny_item_lm_dir, tmp_path_factory):
    """The tiny item-token LM with its item tokens' output rows scaled up: almost every sampled token is an item
    token, most of them (30 of 40) outside a sample's 10 candidates."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_item_lm_dir, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(tiny_item_lm_dir)
    with torch.no_grad():
        model.get_output_embeddings().weight[list(item_token_ids(tok).values())] *= 30
    out = tmp_path_factory.mktemp("item_greedy")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.mark.slow  # two 2-step GRPO runs of the tiny model: ~10 s
@pytest.mark.parametrize("constrain", [True, False])
def test_grpo_samples_only_candidate_items_when_constrained(item_greedy_lm, tmp_path, constrain):
    from transformers import AutoTokenizer

    tok, data = AutoTokenizer.from_pretrained(item_greedy_lm), samples(8)
    params = GrpoParams(
        model=str(item_greedy_lm),
        lora={"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"},
        num_generations=4,
        max_steps=2,
        batch_size=16,
        grad_accum=1,
        temperature=1.0,
        top_p=1.0,
        max_completion_length=6,
        dtype="float32",
        save_steps=100,
        checkpoint_dir=str(tmp_path / "ckpt"),
        constrain_to_candidates=constrain,
        monitor={"every": 100, "samples": 1, "ks": [1], "completions": 16},  # every completion of both steps
    )
    train_grpo(grpo_rows(data, TEXTS, tok, PROMPT, None), None, TEXTS, tok, params, PROMPT, None, tmp_path / "out")
    logged = [json.loads(line) for line in (tmp_path / "ckpt/completions.jsonl").read_text().splitlines()]
    candidates = dict(zip(data["sample_id"], data["candidates"].to_list()))
    named = [(re.findall(r"\[ITEM_(\d+)\]", r["completion"]), candidates[r["sample_id"]]) for r in logged]
    inside = sum(all(i in cands for i in ids) for ids, cands in named)
    print(f"constrain={constrain}: {inside} of {len(named)} completions name candidates only", file=sys.stderr)
    assert len(named) == 32 and all(ids for ids, _ in named)  # 2 steps × 16 (once each), each naming items
    if constrain:
        assert inside == len(named)
    else:  # the control: without the mask most completions name an item outside the candidates
        assert inside <= len(named) // 2
