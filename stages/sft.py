"""Supervised fine-tuning of the policy (TRL SFTTrainer + LoRA), merged into a plain model folder.

    python stages/sft.py        # reads params.yaml `sft`, `prompt`, `models.policy`; needs data/augment/sft.parquet
                                # and data/item_tokens/items.parquet (rows = collaborative item tokens; none = text)

Checkpoints go to `sft.checkpoint_dir` (checkpoints/sft: git-ignored, not a DVC output, so DVC never deletes them);
a rerun after a kill resumes from the newest complete checkpoint of the same run (same data + params).
Outputs: models/sft (merged weights in the training dtype + tokenizer with chat template + sft_info.json),
plots/sft_loss.csv (train loss per logged step), plots/sft_valid.csv (valid HR@K / NDCG@K by likelihood ranking every
`sft.monitor.every` steps: whether more steps help; with `sft.monitor.train_samples` also train HR@K on samples it
trains on: memorising vs not fitting).
"""

from pathlib import Path

import polars as pl

from mllmrec.cli import run
from mllmrec.config import ModelsParams, PromptParams, SftParams, load_section
from mllmrec.errors import UserError
from mllmrec.io import read_parquet, write_csv
from mllmrec.launch import maybe_relaunch
from mllmrec.prompts import load_item_texts
from mllmrec.training.run import check_budget
from mllmrec.training.sft import sft_examples, tokenize_examples, train_sft


def main(
    out: Path = Path("models/sft"),
    plot: Path = Path("plots/sft_loss.csv"),
    valid_plot: Path = Path("plots/sft_valid.csv"),
) -> None:
    params = load_section("sft", SftParams)
    maybe_relaunch(params.launch, "sft")  # sft.launch.num_processes > 1: re-exec under accelerate launch
    prompt = load_section("prompt", PromptParams)
    policy = load_section("models", ModelsParams).policy
    if policy.engine == "openai":
        raise UserError("params.yaml: models.policy uses the openai engine; SFT needs local weights (a folder/hub id)")

    samples = read_parquet(Path("data/augment/sft.parquet"), "augment")
    items = read_parquet(Path("data/ingest/items.parquet"), "ingest")
    captions = (
        None if prompt.captions == "none" else read_parquet(Path("data/textualize/captions.parquet"), "textualize")
    )
    texts = load_item_texts(items, captions)
    item_table = read_parquet(Path("data/item_tokens/items.parquet"), "item_tokens")

    from transformers import AutoTokenizer  # lazy: keeps `--help` fast

    from mllmrec.training.item_tokens import add_item_tokens
    from mllmrec.training.monitor import ValidMonitor, train_subset, valid_subset

    tokenizer = AutoTokenizer.from_pretrained(policy.model, revision=policy.revision or None)
    add_item_tokens(tokenizer, item_table["item_id"].to_list())  # before any prompt is tokenized; none: no-op
    examples = sft_examples(samples, texts, tokenizer, prompt, policy.enable_thinking)
    rows, skipped = tokenize_examples(
        examples, tokenizer, params.max_length, params.loss == "completion_and_history_items"
    )
    lengths = sorted(len(r["input_ids"]) for r in rows)
    print(
        f"sft: {len(rows)} examples ({int(samples['has_cot'].sum())} with CoT), {len(skipped)} skipped as longer "
        f"than {params.max_length} tokens; tokens median {lengths[len(lengths) // 2] if lengths else 0}, "
        f"max {lengths[-1] if lengths else 0}"
    )

    check_budget(
        "sft",
        params.max_steps,
        params.batch_size * params.grad_accum * params.launch.num_processes,
        params.epochs,
        len(rows),
        "samples",
    )
    valid = valid_subset(Path("data/split"), params.monitor)
    trained = samples.filter(~pl.col("sample_id").is_in(skipped))  # the train curve ranks only samples SFT sees
    monitor = ValidMonitor(
        valid,
        texts,
        tokenizer,
        prompt,
        policy.enable_thinking,
        params.monitor,
        "sft",
        train_subset(trained, params.monitor),
    )
    notes = {
        "with_cot": int(samples["has_cot"].sum()),
        "skipped_too_long": len(skipped),
        "enable_thinking": policy.enable_thinking,
    }
    info = train_sft(rows, policy.model, policy.revision, tokenizer, params, out, notes, [monitor], item_table)
    if not info["main_process"]:
        return
    write_csv(info["loss"], plot)
    write_csv(info["valid_curve"], valid_plot)
    last = info["loss"][-1]["loss"] if info["loss"] else float("nan")
    print(
        f"sft: {info['global_step']} steps (resumed at {info['resumed_from_step']}) in {info['train_seconds']} s, "
        f"{info['dtype']}, last loss {last:.4f} -> {out}"
    )


if __name__ == "__main__":
    run(main)
