"""Synthetic data where the right answer follows from the history, for the learning guards (tests/test_learning.py).

    from learning_project import ITEMS, TEXTS, PROMPT, samples
    train = samples(320, "train", seed=0)       # columns of data/augment/*.parquet (sample_id, history, ...)

24 items sit on a cycle; in every sample the LAST history item is k and the next item is k's successor, k + 1 (mod
24). The other history items and the 9 negatives are random, so nothing but the rule picks the target among the
1 + 9 candidates: chance HR@1 is 0.1, a policy that learned the rule reaches 1. Titles are short words the tiny
test tokenizer knows, prompts are ~370 tokens, so a 130k-parameter model learns the rule in about a minute on CPU.
"""

import random

import polars as pl

from mllmrec.config import PromptParams
from mllmrec.prompts import ItemText

TITLES = [
    f"{a} {n}" for a in ("Red", "Blue", "Dark", "Bright", "Green", "Grey") for n in ("City", "House", "Sky", "Family")
]
ITEMS = [str(i) for i in range(len(TITLES))]
TEXTS = {i: ItemText(t) for i, t in zip(ITEMS, TITLES)}
PROMPT = PromptParams(system="Recommend the next item.", captions="none")


def samples(n: int, split: str, seed: int, history: int = 4, negatives: int = 9) -> pl.DataFrame:
    """n samples whose target is the successor of the last history item; other items are seeded random draws."""
    rng = random.Random(seed)
    rows = []
    for u in range(n):
        k = rng.randrange(len(ITEMS))
        last, target = ITEMS[k], ITEMS[(k + 1) % len(ITEMS)]
        others = [i for i in ITEMS if i not in (last, target)]
        rng.shuffle(others)
        cands = others[history - 1 : history - 1 + negatives] + [target]
        rng.shuffle(cands)  # the target's position carries no signal
        rows.append(
            {
                "sample_id": f"{u}:{split}",
                "user_id": str(u),
                "split": split,
                "history": others[: history - 1] + [last],
                "candidates": cands,
                "target": target,
                "cot": None,
                "has_cot": False,
            }
        )
    return pl.DataFrame(rows, schema_overrides={"cot": pl.String})
