"""Supervised fine-tuning of the policy (TRL SFTTrainer + LoRA), merged into a plain model folder.

    python stages/sft.py        # reads params.yaml `sft`, `prompt`, `models.policy`; needs data/augment/sft.parquet
                                # and data/item_tokens/items.parquet (rows = collaborative item tokens; none = text)

Checkpoints go to `sft.checkpoint_dir` (checkpoints/sft: git-ignored, not a DVC output, so DVC never deletes them);
a rerun after a kill resumes from the newest complete checkpoint of the same run (same data + params).
Outputs: models/sft (merged weights in the training dtype + tokenizer with chat template + sft_info.json),
dvclive/sft (DVCLive: plots/metrics/<series>.tsv and metrics.json, their latest values): train loss and learning rate per
logged step, valid HR@K / NDCG@K by likelihood ranking every `sft.monitor.every` steps (whether more steps help), with
`sft.monitor.train_samples` also train HR@K on samples it trains on (memorising vs not fitting).
"""

import polars as pl

from mllmrec import paths
from mllmrec.cli import run
from mllmrec.config import ModelsParams, PromptParams, SftParams, load_section
from mllmrec.errors import UserError
from mllmrec.io import read_parquet
from mllmrec.launch import maybe_relaunch
from mllmrec.prompts import load_item_texts
from mllmrec.training.run import check_budget
from mllmrec.training.sft import sft_examples, tokenize_examples, train_sft

READS = [
    paths.SFT_SAMPLES,
    paths.ITEM_TOKENS,  # its items.parquet
    paths.ITEMS,
    paths.CAPTIONS,
    paths.param("models.provision.out"),  # orders after `models`; hub policies are pinned by revision in params
    paths.SPLIT,  # the valid subset of the learning-curve monitor
]
WRITES = [paths.SFT_MODEL, paths.SFT_LIVE_METRICS, paths.SFT_LIVE_PLOTS]


def main() -> None:
    params = load_section("sft", SftParams)
    maybe_relaunch(params.launch, "sft")  # sft.launch.num_processes > 1: re-exec under accelerate launch
    prompt = load_section("prompt", PromptParams)
    policy = load_section("models", ModelsParams).policy
    if policy.engine == "openai":
        raise UserError("params.yaml: models.policy uses the openai engine; SFT needs local weights (a folder/hub id)")

    samples = read_parquet(paths.SFT_SAMPLES, "augment")
    items = read_parquet(paths.ITEMS, "ingest")
    captions = None if prompt.captions == "none" else read_parquet(paths.CAPTIONS, "textualize")
    texts = load_item_texts(items, captions)
    item_table = read_parquet(paths.ITEM_TOKEN_TABLE, "item_tokens")

    from transformers import AutoTokenizer  # lazy: keeps `--help` fast

    from mllmrec.training.item_tokens import add_item_tokens
    from mllmrec.training.live import SFT_SERIES, LiveLog
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
    valid = valid_subset(paths.SPLIT, params.monitor)
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
    live = LiveLog(
        paths.SFT_LIVE_METRICS, paths.SFT_LIVE_PLOTS, SFT_SERIES, params.monitor.ks
    )  # after the monitor: it logs the monitor's points
    info = train_sft(
        rows, policy.model, policy.revision, tokenizer, params, paths.SFT_MODEL, notes, [monitor, live], item_table
    )
    if not info["main_process"]:
        return
    last = info["last_loss"] if info["last_loss"] is not None else float("nan")
    print(
        f"sft: {info['global_step']} steps (resumed at {info['resumed_from_step']}) in {info['train_seconds']} s, "
        f"{info['dtype']}, last loss {last:.4f} -> {paths.SFT_MODEL}"
    )


if __name__ == "__main__":
    run(main)
