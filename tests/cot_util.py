"""Helpers for the CoT tests: hand-made items/samples, and a scripted engine that follows the generation protocol.

texts = load_item_texts(ITEMS, CAPTIONS); samples = make_samples(4)
eng = ScriptedEngine(lambda prompt, seed: "Step 1: ...")     # answers by prompt content, counts calls
"""

import re

import polars as pl

from mllmrec.engines.base import GenerationRequest, GenerationResult, split_think

ITEMS = pl.DataFrame(
    {
        "item_id": [str(i) for i in range(1, 13)] + ["1001", "1002"],
        "title": [
            "Toy Story (1995)",
            "Jumanji (1995)",
            "Heat (1995)",
            "Matrix, The (1999)",
            "Alien (1979)",
            "Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)",
            "千と千尋の神隠し (2001)",
            "Blade Runner (1982)",
            "Finding Nemo (2003)",
            "Se7en (1995)",
            "Up (2009)",
            "Casablanca (1942)",
            "A " + "Very " * 80 + "Long Title (2020)",
            "Zero Dark Thirty (2012)",
        ],
        "image_path": [None] * 14,
        "image_sha256": [None] * 14,
        "image_ok": [False] * 14,
    }
)
CAPTIONS = pl.DataFrame(
    {
        "item_id": [str(i) for i in range(1, 13)] + ["1001", "1002"],
        "caption": [
            "Cheerful cartoon toys, a cowboy and a space ranger in a bright child's bedroom.",
            "A jungle board game with wild animals bursting out of a house.",
            "Two men with guns in a dark blue city at night.",
            "Green digital code rain, a man in black sunglasses and a long leather coat.",
            "A dark alien egg cracking open in a black void, eerie green light.",
            "A smiling young woman with short black hair in a warm red and green Paris cafe.",
            "",
            None,  # empty and missing captions
            "Bright orange clownfish in a blue coral reef under water.",
            "A grim rainy city, two detectives, dark brown tones.",
            "A house lifted into a blue sky by hundreds of colourful balloons.",
            "A black and white photo of a man in a hat and a woman, a wartime airport.",
            "Grey text on a white background.",
            "Night-vision green soldiers in a desert compound.",
        ],
    }
)


def make_samples(n: int, history_len: int = 4) -> pl.DataFrame:
    """n train samples cycling over the items; target = the item after the history, candidates = target + 3."""
    ids = ITEMS["item_id"].to_list()
    rows = []
    for s in range(n):
        hist = [ids[(s + j) % 12] for j in range(history_len)]
        target = ids[(s + history_len) % 12]
        negs = [i for i in ids if i not in hist and i != target][:3]
        cands = [*negs[:1], target, *negs[1:]]
        rows.append(
            {
                "sample_id": f"u{s}:train:0",
                "user_id": f"u{s}",
                "history": hist,
                "target": target,
                "candidates": cands,
                "target_index": 1,
                "num_negatives": 3,
            }
        )
    return pl.DataFrame(rows, schema_overrides={"target_index": pl.Int32, "num_negatives": pl.Int32})


def good_cot(topic: str = "animated family adventures") -> str:
    return (
        f"Step 1: The history mixes {topic} with bright visuals.\nStep 2: The user wants more {topic}.\n"
        f"Step 3: {topic}; bright colours; family audience\nStep 4: A colourful {topic} film."
    )


class ScriptedEngine:
    """A protocol-conforming engine whose answer is `script(prompt_text, seed) -> str | GenerationResult`."""

    model_id, revision = "scripted", "v1"

    def __init__(self, script):
        self.script = script
        self.calls = 0
        self.prompts: list[str] = []
        self.seeds: list[int] = []

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        out = []
        for r in requests:
            self.calls += 1
            prompt = "".join(
                m["content"] if isinstance(m["content"], str) else "".join(p.get("text", "") for p in m["content"])
                for m in r.messages
            )
            self.prompts.append(prompt)
            self.seeds.append(r.sampling.seed)
            res = self.script(prompt, r.sampling.seed)
            if isinstance(res, str):
                answer, reasoning = split_think(res)
                res = GenerationResult(text=answer, reasoning=reasoning, finish_reason="stop", completion_tokens=9)
            out.append(res)
        return out


def history_ids(prompt: str) -> list[str]:
    return re.findall(r"\[ITEM_(\w+)\]", prompt)
