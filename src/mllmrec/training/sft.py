"""Supervised fine-tuning of the policy: TRL SFTTrainer + PEFT LoRA, auto-resume, LoRA merged in the training dtype.

    from mllmrec.training.sft import sft_examples, tokenize_examples, train_sft
    examples = sft_examples(samples, texts, tokenizer, prompt_params, enable_thinking)  # prompt/completion strings
    rows, skipped = tokenize_examples(examples, tokenizer, max_length)                  # input_ids + completion_mask
    info = train_sft(rows, model_path, revision, tokenizer, params, out_dir)

The run around the trainer (checkpoints, resume, merge, save) is mllmrec.training.run's, shared with GRPO.

Prompts and answers come from the one renderer (mllmrec.prompts): the prompt is `render_prompt` (chat template,
generation prompt), the completion is the assistant turn the template writes after it, cut right after the
end-of-turn token. We tokenize both ourselves (no special tokens added, prompt and completion tokenized separately,
exactly as a model sees them at inference) and hand TRL an already-tokenized dataset. TRL 1.16 would otherwise
(a) tokenize plain strings with `tokenizer(text)`, which adds a BOS for some tokenizers that evaluation (and the
template) does not, (b) tokenize prompt+completion as one string and cut at the common prefix, and (c) append
`eos_token` to a completion that does not end with it: ChatML templates end the turn with "<|im_end|>\\n", so the
model would learn to emit the end of turn twice. With `input_ids` present TRL skips templating, EOS and tokenization
and only builds `labels` from `completion_mask` (when completion-only loss is on).
"""

import hashlib
import json
from pathlib import Path

import polars as pl

from mllmrec.config import PromptParams, SftParams
from mllmrec.environment import versions
from mllmrec.errors import UserError
from mllmrec.prompts import ItemText, answer_line, build_messages, item_token_ids, render_completion, render_prompt
from mllmrec.training.memory import check_cuda_training
from mllmrec.training.run import cpu_speed_trainer, lora_config, open_run, trainer_args, training_dtype

# params that change how often we save/log, not what is learned: editing them keeps the checkpoints resumable
_NOT_FINGERPRINTED = {"save_steps", "save_total_limit", "logging_steps", "checkpoint_dir", "monitor"}


def sft_examples(
    samples: pl.DataFrame,
    texts: dict[str, ItemText],
    tokenizer,
    prompt_params: PromptParams,
    enable_thinking: bool | None,
) -> list[dict]:
    """One {sample_id, prompt, completion} per augment row; the CoT goes into the prompt only where has_cot."""
    out = []
    for row in samples.iter_rows(named=True):
        cot = row["cot"] if row.get("has_cot") else None
        messages = build_messages(row, texts, prompt_params, cot=cot)
        out.append(
            {
                "sample_id": row["sample_id"],
                "history_items": len(row["history"]),
                "prompt": render_prompt(tokenizer, messages, enable_thinking),
                "completion": render_completion(
                    tokenizer, messages, answer_line(row["target"], texts, prompt_params.answer), enable_thinking
                ),
            }
        )
    return out


def tokenize_examples(
    examples: list[dict], tokenizer, max_length: int, history_item_loss: bool = False
) -> tuple[list[dict], list[str]]:
    """(rows with input_ids + completion_mask, sample_ids skipped for exceeding max_length).

    `history_item_loss` (sft.loss: completion_and_history_items) also puts the loss on every history item token
    after the first, each predicted from the items before it: SASRec's next-item objective at every position of the
    history, ~history-length more item targets per forward at no extra compute. It needs collaborative item tokens
    (one token per item: a title's first subword is not an item prediction)."""
    item_ids = set(item_token_ids(tokenizer).values()) if history_item_loss else set()
    if history_item_loss and not item_ids:
        raise UserError(
            "params.yaml: sft.loss = completion_and_history_items needs collaborative item tokens "
            "(item_tokens.enabled: true); use sft.loss: completion"
        )
    rows, skipped = [], []
    for ex in examples:
        p = tokenizer(ex["prompt"], add_special_tokens=False)["input_ids"]
        c = tokenizer(ex["completion"], add_special_tokens=False)["input_ids"]
        if len(p) + len(c) > max_length:  # truncating would cut the answer: skip and count instead
            skipped.append(ex["sample_id"])
            continue
        mask = [0] * len(p)
        if item_ids:
            # the history comes first in the prompt, so its items are the prompt's first item tokens
            positions = [i for i, t in enumerate(p) if t in item_ids][: ex["history_items"]]
            for i in positions[1:]:  # the first has no item before it: a popularity guess, not a sequence step
                mask[i] = 1
        rows.append({"input_ids": p + c, "completion_mask": mask + [1] * len(c)})
    return rows, skipped


def fingerprint(rows: list[dict], model: str, revision: str, params: SftParams, start: str = "none") -> str:
    """What a checkpoint was trained on: data tokens, base model, training params, the item-token rows' start
    (`start`, mllmrec.training.item_tokens.table_digest). Resume only on a match."""
    h = hashlib.sha256()
    h.update(
        json.dumps([model, revision, params.model_dump(exclude=_NOT_FINGERPRINTED), start], sort_keys=True).encode()
    )
    for r in rows:
        h.update(json.dumps([r["input_ids"], r["completion_mask"]]).encode())
    return h.hexdigest()


def train_sft(
    rows: list[dict],
    model_path: str,
    revision: str,
    tokenizer,
    params: SftParams,
    out_dir: Path,
    notes: dict | None = None,
    callbacks: list | None = None,
    item_table: pl.DataFrame | None = None,
) -> dict:
    """Train (resuming if possible), merge the LoRA, save model + tokenizer to out_dir. Returns run info.

    `notes` (e.g. skip counts) are written into out_dir/sft_info.json next to the run info; `callbacks` go to the
    Trainer (a mllmrec.training.monitor.ValidMonitor adds the valid HR@K learning curve, returned as info["valid_curve"];
    a mllmrec.training.live.LiveLog after it writes the curves).
    `item_table` (stages/item_tokens.py, rows = items): collaborative item tokens, one per row, whose embedding rows
    start from the table's vectors, frozen or trained (`sft.item_rows`), and end in the saved model's extended
    vocabulary."""
    from mllmrec.training.item_tokens import table_digest
    from mllmrec.training.monitor import valid_rows

    item_table = item_table if item_table is not None and item_table.height > 0 else None  # empty table: text only
    if not rows:
        raise UserError("no SFT examples left (all longer than sft.max_length?)")
    dtype = training_dtype(params.dtype)
    fp = fingerprint(rows, model_path, revision, params, "none" if item_table is None else table_digest(item_table))
    run = open_run(Path(params.checkpoint_dir), fp, params.max_steps, "sft")
    model, item_info = _load_model(rows, model_path, revision, tokenizer, params, dtype, item_table)
    trainer = _sft_trainer(model, rows, tokenizer, params, dtype, callbacks, item_table)
    train_s = run.train(trainer)

    info = {
        "base_model": model_path,
        "revision": revision,
        "dtype": str(dtype).removeprefix("torch."),
        "examples": len(rows),
        "global_step": trainer.state.global_step,
        "resumed_from_step": run.resumed_step,
        "train_seconds": round(train_s, 1),
        **item_info,
        **(notes or {}),
        "environment": versions(),
    }
    info["main_process"] = run.finish(trainer, tokenizer, dtype, out_dir, "sft_info.json", dict(info))
    info["last_loss"] = next((h["loss"] for h in reversed(trainer.state.log_history) if "loss" in h), None)
    info["valid_curve"] = valid_rows(trainer.state.log_history, params.monitor.ks)
    return info


def _load_model(rows, model_path, revision, tokenizer, params: SftParams, dtype, item_table):
    """(the base model, its item-token info): the CUDA memory check first, then the weights, then the item rows'
    start (mllmrec.training.item_tokens.init_item_embeddings) where there are item tokens."""
    from transformers import AutoModelForCausalLM

    from mllmrec.training.item_tokens import init_item_embeddings

    check_cuda_training(
        model_path,
        revision,
        dtype,
        params.lora,
        params.batch_size,
        max(len(r["input_ids"]) for r in rows),
        params.gradient_checkpointing,
        "sft",
        "sft.batch_size (raise grad_accum to keep the batch), sft.max_length or sft.gradient_checkpointing: true",
    )  # CUDA only: before any weights load
    model = AutoModelForCausalLM.from_pretrained(model_path, revision=revision or None, dtype=dtype)
    item_info = {} if item_table is None else init_item_embeddings(model, tokenizer, item_table, params.seed)
    return model, item_info


def _sft_trainer(model, rows, tokenizer, params: SftParams, dtype, callbacks, item_table):
    """TRL's SFTTrainer (CPU-sped: run.cpu_speed_trainer) with the LoRA and, for `sft.item_rows: trained`, the item
    rows as trainable tokens."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from mllmrec.training.item_tokens import add_item_tokens, head_reads_trained_rows

    args = SFTConfig(
        **trainer_args(params, dtype),
        lr_scheduler_type=params.scheduler,
        completion_only_loss=params.loss != "all",  # labels from completion_mask
        max_length=params.max_length,  # rows are already within it (tokenize_examples)
        activation_checkpointing=params.gradient_checkpointing,  # TRL defaults it on; slow on CPU
    )
    # sft.item_rows = trained: the item rows train as PEFT trainable tokens (tied output rows follow), merged with the
    # LoRA; frozen: they stay at their start, in the base weights the LoRA is merged into
    trained_rows = item_table is not None and params.item_rows == "trained"
    token_rows = (
        {"trainable_token_indices": add_item_tokens(tokenizer, item_table["item_id"].to_list())} if trained_rows else {}
    )
    trainer = cpu_speed_trainer(SFTTrainer, "compute_loss")(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=lora_config(params.lora, **token_rows),
        callbacks=callbacks,
    )
    if trained_rows:
        head_reads_trained_rows(trainer.model)
    return trainer
