"""A tiny self-contained project for GRPO stage tests: items, augment + valid samples, a format-warmed tiny policy.

    from grpo_project import make_project
    root = make_project(tmp_path, tiny_lm_dir, grpo={"max_steps": 4})   # then run stages/grpo.py with cwd=root

The tiny random model is first taught the answer FORMAT (`[ITEM_<id>] <title>` for a random candidate, 40 Adam
steps, ~1 s) so sampled groups mix hits, valid misses and format errors: GRPO then gets a non-zero advantage and
its LoRA really moves (a purely random model would score −1 everywhere: zero std, no gradient).
"""

import random
import shutil
from pathlib import Path

import polars as pl
import yaml

TITLES = [
    "Toy Story (1995)",
    "Jumanji (1995)",
    "Heat (1995)",
    "GoldenEye (1995)",
    "Twelve Monkeys (1995)",
    "Seven (1995)",
    "Red House",
    "Blue Sky",
]
ITEMS = [str(i) for i in range(1, len(TITLES) + 1)]
STAGE = Path(__file__).resolve().parents[1] / "stages" / "grpo.py"


def samples(n: int, split: str, seed: int) -> pl.DataFrame:
    rng = random.Random(seed)
    rows = []
    for u in range(n):
        picked = rng.sample(ITEMS, 6)
        history, cands = picked[:2], picked[2:]
        target = rng.choice(cands)
        rows.append(
            {
                "sample_id": f"{u}:{split}",
                "user_id": str(u),
                "split": split,
                "history": history,
                "candidates": cands,
                "target": target,
                "target_index": cands.index(target),
            }
        )
    return pl.DataFrame(rows)


def warm_policy(src: Path, dst: Path, df: pl.DataFrame, steps: int = 40, seed: int = 0) -> None:
    """Teach the answer format (a random candidate each time), save as a plain model folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mllmrec.config import PromptParams
    from mllmrec.prompts import ItemText, answer_line, build_messages, render_prompt

    torch.manual_seed(seed)
    rng = random.Random(seed)
    tok = AutoTokenizer.from_pretrained(src)
    model = AutoModelForCausalLM.from_pretrained(src)
    texts = {i: ItemText(t) for i, t in zip(ITEMS, TITLES)}
    prompts = [
        render_prompt(tok, build_messages(s, texts, PromptParams(captions="none")), None)
        for s in df.iter_rows(named=True)
    ]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        j = rng.randrange(len(prompts))
        answer = answer_line(rng.choice(df["candidates"][j].to_list()), texts) + tok.eos_token
        p = tok(prompts[j], add_special_tokens=False)["input_ids"]
        c = tok(answer, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([p + c])
        labels = torch.tensor([[-100] * len(p) + c])
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval().save_pretrained(dst)
    tok.save_pretrained(dst)


def make_project(root: Path, tiny_lm_dir: Path, grpo: dict | None = None, warmed: Path | None = None) -> Path:
    """Write params.yaml + inputs under root; `warmed` reuses an already warmed model folder."""
    train, valid = samples(16, "train", 0), samples(8, "valid", 1)
    (root / "data/ingest").mkdir(parents=True)
    (root / "data/augment").mkdir(parents=True)
    (root / "data/split").mkdir(parents=True)
    pl.DataFrame({"item_id": ITEMS, "title": TITLES}).write_parquet(root / "data/ingest/items.parquet")
    train.drop("split", "target_index").with_columns(
        cot=pl.lit(None, pl.String), has_cot=pl.lit(False), cot_draw=pl.lit(1.0)
    ).write_parquet(root / "data/augment/grpo.parquet")
    pl.concat([train, valid]).write_parquet(root / "data/split/candidates_n3.parquet")
    if warmed is None:
        warm_policy(tiny_lm_dir, root / "models/sft", train)
    else:
        shutil.copytree(warmed, root / "models/sft")
    spec = {"engine": "transformers", "model": str(tiny_lm_dir)}
    g = {
        "model": "models/sft",
        "num_generations": 4,
        "beta": 0.1,
        "temperature": 1.0,
        "top_p": 1.0,
        "max_completion_length": 12,
        "lr": 2e-3,
        "max_steps": 4,
        "batch_size": 4,
        "grad_accum": 2,
        "save_steps": 2,
        "lora": {"r": 4, "alpha": 8, "target_modules": "all-linear"},
        "monitor": {"every": 2, "samples": 8, "num_negatives": 3, "ks": [1, 3]},
    }
    for k, v in (grpo or {}).items():
        g[k] = {**g[k], **v} if isinstance(v, dict) and isinstance(g.get(k), dict) else v
    params = {
        "prompt": {"captions": "none"},
        "models": {
            "captioner": {"engine": "pixel_describer", "model": "pixel-describer"},
            "drafter": spec,
            "editor": spec,
            "policy": spec,
        },
        "grpo": g,
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root
