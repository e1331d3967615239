"""Synthetic data where the next item follows ONLY from co-occurrence, for the item-token learning guard.

    from collab_project import TEXTS, PROMPT, sequences, samples
    seqs = sequences()                         # what SASRec trains on: every item, grouped by co-occurrence
    train = samples(300, "train", seen=True)   # SFT: candidates are items SFT may see
    held = samples(40, "test", seen=False)     # held out: history seen, every candidate an item SFT never saw

64 items fall into 8 hidden groups of 8; a user's items all come from one group. Titles are random letter strings,
unrelated to the group. In every sample the target shares the history's group and the 9 negatives come from other
groups. Two items of each group never appear in an SFT sample (`seen=False` samples draw all candidates from them):
a text-only policy cannot tell which of those unseen titles belongs with the history (chance HR@1 0.1), while a policy
whose item tokens start from SASRec's embeddings (trained on `sequences()`, which contain every item) can.
"""

import random

import polars as pl

from mllmrec.config import PromptParams
from mllmrec.prompts import ItemText

GROUPS, PER_GROUP, UNSEEN = 8, 8, 2
ITEMS = [str(i) for i in range(GROUPS * PER_GROUP)]
GROUP = {i: int(i) // PER_GROUP for i in ITEMS}
_rng = random.Random(7)
TEXTS = {
    i: ItemText(
        " ".join(
            "".join(_rng.choice("bcdfgklmnprstvz") + _rng.choice("aeiou") for _ in range(2)) for _ in range(2)
        ).title()
    )
    for i in ITEMS
}
PROMPT = PromptParams(system="Recommend the next item.", captions="none")


def members(group: int, seen: bool) -> list[str]:
    items = ITEMS[group * PER_GROUP : (group + 1) * PER_GROUP]
    return items[UNSEEN:] if seen else items[:UNSEEN]


def sequences(n: int = 800, length: int = 12, seed: int = 0) -> pl.DataFrame:
    """Training sequences over ALL items (SASRec's data): each user walks one group."""
    rng = random.Random(seed)
    rows = []
    for u in range(n):
        g = rng.randrange(GROUPS)
        rows.append(
            {
                "user_id": f"s{u}",
                "items": [rng.choice(ITEMS[g * PER_GROUP : (g + 1) * PER_GROUP]) for _ in range(length)],
            }
        )
    return pl.DataFrame(rows)


def samples(n: int, split: str, seen: bool, seed: int = 0, history: int = 4, negatives: int = 9) -> pl.DataFrame:
    """History from the user's group (seen items); target + negatives seen (SFT) or all unseen (held out)."""
    rng = random.Random(f"{split}{seed}")
    rows = []
    for u in range(n):
        g = rng.randrange(GROUPS)
        hist = [rng.choice(members(g, True)) for _ in range(history)]
        target = rng.choice(members(g, seen))
        pool = [i for h in range(GROUPS) if h != g for i in members(h, seen)]
        cands = rng.sample(pool, negatives) + [target]
        rng.shuffle(cands)
        rows.append(
            {
                "sample_id": f"{u}:{split}",
                "user_id": str(u),
                "split": split,
                "history": hist,
                "candidates": cands,
                "target": target,
                "cot": None,
                "has_cot": False,
            }
        )
    return pl.DataFrame(rows, schema_overrides={"cot": pl.String})
