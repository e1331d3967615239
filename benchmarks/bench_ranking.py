"""Likelihood ranking (packed, one forward per sample) vs the authors' per-sample `generate` loop, same model, same
samples, side by side in one run. The loop yields one generated answer per sample; the ranking orders every
candidate by its exact likelihood. Also the naive per-candidate likelihood (one forward per candidate) for reference,
and the same model with collaborative item tokens (mllmrec.training.item_tokens; seeded vectors: speed does not depend
on them): its line likelihood (each tag one token: shorter prompts) and its one-forward item-token ranking.

    python benchmarks/bench_ranking.py                       # SmolLM2 from models/ (dvc repro models), 8 samples
    python benchmarks/bench_ranking.py --samples 16 --negatives 99 --threads 2

Needs data/ingest, data/split, data/textualize (dvc repro textualize split). Prints samples/s and ratios.
"""

import time
from pathlib import Path

import polars as pl
import torch
import typer
from transformers import AutoModelForCausalLM, AutoTokenizer

from mllmrec.config import PromptParams, load_section
from mllmrec.evaluation.candidates import load_candidates
from mllmrec.evaluation.likelihood import score_brute_force, score_candidates
from mllmrec.evaluation.policy import item_token_scores
from mllmrec.prompts import (
    answer_line,
    build_messages,
    completion_template,
    item_token_ids,
    load_item_texts,
    render_prompt,
)
from mllmrec.training.item_tokens import init_item_embeddings


def main(
    model_dir: Path = Path("models/smollm2-135m-instruct"),
    samples: int = 8,
    negatives: int = 9,
    max_new_tokens: int = 128,
    threads: int = 2,
) -> None:
    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    texts = load_item_texts(
        pl.read_parquet("data/ingest/items.parquet"), pl.read_parquet("data/textualize/captions.parquet")
    )
    prompt_params = load_section("prompt", PromptParams)
    cands = load_candidates(negatives, "test", samples, seed=0)
    jobs = []
    for s in cands.iter_rows(named=True):
        messages = build_messages(s, texts, prompt_params)
        pre, suf = completion_template(tok, messages, None)
        jobs.append((render_prompt(tok, messages, None), [pre + answer_line(c, texts) + suf for c in s["candidates"]]))
    n_prompt = sum(len(tok(p, add_special_tokens=False)["input_ids"]) for p, _ in jobs) / len(jobs)

    def authors_loop() -> None:  # one sample per generate() call, greedy, the paper's 128 new tokens
        for prompt, _ in jobs:
            ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
            with torch.inference_mode():
                model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.eos_token_id)

    def packed() -> None:
        score_candidates(model, tok, [p for p, _ in jobs], [c for _, c in jobs])

    def per_candidate() -> None:
        for prompt, comps in jobs:
            score_brute_force(model, tok, prompt, comps)

    items = pl.read_parquet("data/ingest/items.parquet").select("item_id", "title")
    gen = torch.Generator().manual_seed(0)
    table = items.with_columns(
        vector=pl.Series(
            [torch.randn(64, generator=gen).tolist() for _ in range(items.height)], dtype=pl.List(pl.Float32)
        )
    )
    item_tok = AutoTokenizer.from_pretrained(model_dir)
    item_model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    init_item_embeddings(item_model, item_tok, table, seed=0)
    rows = list(cands.iter_rows(named=True))
    item_jobs = []
    for s in rows:
        messages = build_messages(s, texts, prompt_params)
        pre, suf = completion_template(item_tok, messages, None)
        item_jobs.append(
            (render_prompt(item_tok, messages, None), [pre + answer_line(c, texts) + suf for c in s["candidates"]])
        )
    n_item_prompt = sum(len(item_tok(p, add_special_tokens=False)["input_ids"]) for p, _ in item_jobs) / len(jobs)

    def item_packed() -> None:
        score_candidates(item_model, item_tok, [p for p, _ in item_jobs], [c for _, c in item_jobs])

    def item_one_forward() -> None:
        item_token_scores(item_model, item_tok, rows, item_token_ids(item_tok), texts, prompt_params, None)

    print(
        f"model {model_dir}, {len(jobs)} samples x 1+{negatives} candidates, prompt ≈ {n_prompt:.0f} tokens "
        f"({n_item_prompt:.0f} with item tokens), {threads} threads"
    )
    score_candidates(model, tok, [jobs[0][0]], [jobs[0][1]])  # warm-up (allocator, kernels)
    results = {}
    for name, fn in [
        ("packed likelihood ranking (ours)", packed),
        ("authors' generate loop", authors_loop),
        ("per-candidate likelihood", per_candidate),
        ("item tokens: packed line likelihood", item_packed),
        ("item tokens: one-forward ranking", item_one_forward),
    ]:
        t = time.perf_counter()
        fn()
        results[name] = len(jobs) / (time.perf_counter() - t)
    base = results["authors' generate loop"]
    for name, rate in results.items():
        print(f"{name:34s} {rate:8.3f} samples/s   {rate / base:6.2f}x the generate loop")


if __name__ == "__main__":
    typer.run(main)
