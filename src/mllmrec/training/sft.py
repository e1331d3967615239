"""Supervised fine-tuning of the policy: TRL SFTTrainer + PEFT LoRA, auto-resume, LoRA merged in the training dtype.

    from mllmrec.training.sft import sft_examples, tokenize_examples, train_sft
    examples = sft_examples(samples, texts, tokenizer, prompt_params, enable_thinking)  # prompt/completion strings
    rows, skipped = tokenize_examples(examples, tokenizer, max_length)                  # input_ids + completion_mask
    info = train_sft(rows, model_path, revision, tokenizer, params, out_dir)

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
import shutil
import time
from pathlib import Path

import polars as pl

from mllmrec.config import PromptParams, SftParams
from mllmrec.environment import versions
from mllmrec.errors import UserError
from mllmrec.io import atomic_dir
from mllmrec.prompts import ItemText, answer_line, build_messages, item_token_ids, render_completion, render_prompt
from mllmrec.training.memory import check_cuda_training

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
                    tokenizer, messages, answer_line(row["target"], texts), enable_thinking
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


def last_checkpoint(ckpt_dir: Path) -> Path | None:
    """Newest complete checkpoint: trainer_state.json is written last, so a kill mid-save leaves one without it."""
    done = [
        p
        for p in ckpt_dir.glob("checkpoint-*")
        if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").exists()
    ]
    return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)


def check_budget(stage: str, max_steps: int | None, per_step: int, epochs: float, available: int, unit: str) -> None:
    """max_steps overrides epochs in Trainer: refuse a step budget that needs more passes than `epochs` allows."""
    if max_steps and max_steps * per_step > epochs * available:
        raise UserError(
            f"params.yaml: {stage}.max_steps = {max_steps} steps × {per_step} {unit} per step = "
            f"{max_steps * per_step} {unit}, more than {stage}.epochs = {epochs} × {available} {unit} "
            f"in the data; lower {stage}.max_steps or raise {stage}.epochs"
        )


def prepare_checkpoints(
    ckpt_dir: Path, fp: str, max_steps: int | None = None, stage: str = "sft", run_files: tuple[str, ...] = ()
) -> Path | None:
    """The checkpoint to resume from (main process only; SFT and GRPO), or None after clearing the run's checkpoints
    and `run_files` (files in ckpt_dir that belong to the run): when they are of a different run (the fingerprint
    changed), or of a finished one. A finished run is trained again rather than resumed: resuming one made TRL 1.16's
    GRPOTrainer take max_steps + 1 steps (seen after a code-only change reran the stage: 3 steps of a 2-step run)."""
    stamp = ckpt_dir / "run.json"
    old = json.loads(stamp.read_text())["fingerprint"] if stamp.exists() else None
    if old == fp:
        resume = last_checkpoint(ckpt_dir)
        if (
            resume is None
            or not max_steps
            or (json.loads((resume / "trainer_state.json").read_text())["global_step"] < max_steps)
        ):
            return resume
        print(f"{stage}: {resume} already reached max_steps = {max_steps}: training the run again")
    elif any(ckpt_dir.glob("checkpoint-*")):
        print(f"{stage}: {ckpt_dir} holds checkpoints of another run (data, model or params changed): starting over")
    for p in ckpt_dir.glob("checkpoint-*"):
        shutil.rmtree(p)
    for name in run_files:
        (ckpt_dir / name).unlink(missing_ok=True)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps({"fingerprint": fp}) + "\n")
    return None


def save_merged(model, tokenizer, dtype, out_dir: Path, info_file: str, info: dict) -> None:
    """Merge the LoRA into the weights in the training dtype (the authors merged bf16-trained weights in fp16) and
    write model + tokenizer (its chat template: evaluation and GRPO apply the same one) + `info_file` to out_dir,
    atomically (io.atomic_dir). Durations stay out of the info file: same run, same bytes."""
    merged = model.merge_and_unload()
    assert next(merged.parameters()).dtype == dtype, "merged weights left the training dtype"
    with atomic_dir(out_dir) as tmp:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        kept = {k: v for k, v in info.items() if not k.endswith("_seconds")}
        (tmp / info_file).write_text(json.dumps(kept, indent=2) + "\n")


def training_dtype(name: str):
    import torch

    from mllmrec.engines.transformers_engine import resolve_dtype

    return resolve_dtype(name, torch.device("cuda" if torch.cuda.is_available() else "cpu"))


def loss_rows(log_history: list[dict]) -> list[dict]:
    """Train-loss points from Trainer's log history (restored on resume, so a resumed run plots the whole curve)."""
    return [
        {
            "step": h["step"],
            "epoch": round(h.get("epoch", 0.0), 4),
            "loss": h["loss"],
            "learning_rate": h.get("learning_rate"),
        }
        for h in log_history
        if "loss" in h
    ]


def cpu_speed_trainer(base, forward_method: str):
    """`base` (a TRL trainer) without two CPU slowdowns, measured on 2 cores with one SFT step of 4 x 550 tokens
    (8.7 s, benchmarks/bench_training.py) and a GRPO step of 8 completions (30 s, benchmarks/bench_grpo.py):
    - TRL 1.16's fused LM head projects only the positions whose next token is a label on Triton devices and every
      position elsewhere (its tiles must keep one shape on Neuron); on CPU that is a float32 projection of all
      ~2,200 positions onto the 49k vocabulary plus its backward: 5.1 s of the SFT step. On CPU (eager, no
      recompilation) we let it take its compact path: the same log-probs, for the label positions only.
    - PEFT casts every projection's bf16 input to the fp32 adapters (~0.4 s of copies in the step). The trainer's
      `forward_method` runs the model under accelerate's autocast (native_amp: bf16=True, also on CPU), so the
      adapters can read the bf16 inputs as they are; their fp32 weights stay the master copy the optimizer updates.
      Generation (no autocast) keeps PEFT's casting. (PEFT's own `disable_input_dtype_casting` fails on the trainable
      item-token layers, which lack the flag: we switch it on the layers that have it.)"""
    import trl.trainer.utils as trl_utils

    use_triton = trl_utils._use_triton
    if not getattr(use_triton, "compact_on_cpu", False):

        def compact(device):
            return device.type == "cpu" or use_triton(device)

        compact.compact_on_cpu = True
        trl_utils._use_triton = compact  # only the head's compact-or-not choice reads this name; kernels keep theirs

    def forward(self, model, *args, **kwargs):
        layers = (
            [m for m in model.modules() if hasattr(m, "cast_input_dtype_enabled")]
            if self.accelerator.native_amp
            else []
        )
        before = [m.cast_input_dtype_enabled for m in layers]
        try:
            for m in layers:
                m.cast_input_dtype_enabled = False
            return getattr(base, forward_method)(self, model, *args, **kwargs)
        finally:
            for m, b in zip(layers, before):
                m.cast_input_dtype_enabled = b

    return type(base.__name__, (base,), {forward_method: forward})


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
    Trainer (a mllmrec.training.monitor.ValidMonitor adds the valid HR@K learning curve, returned as info["valid_curve"]).
    `item_table` (stages/item_tokens.py, rows = items): collaborative item tokens, one per row, whose embedding rows
    start from the table's vectors, frozen or trained (`sft.item_rows`), and end in the saved model's extended
    vocabulary."""
    import torch
    from accelerate import PartialState
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from mllmrec.training.item_tokens import (
        add_item_tokens,
        head_reads_trained_rows,
        init_item_embeddings,
        table_digest,
    )
    from mllmrec.training.monitor import valid_rows

    items = item_table is not None and item_table.height > 0
    if not rows:
        raise UserError("no SFT examples left (all longer than sft.max_length?)")
    dtype = training_dtype(params.dtype)
    ckpt_dir = Path(params.checkpoint_dir)
    fp = fingerprint(rows, model_path, revision, params, table_digest(item_table) if items else "none")
    # multi-process launches (accelerate/torchrun): one process touches the checkpoint dir; cpu: gloo ranks on CPU
    state = PartialState(cpu=not torch.cuda.is_available())
    resume = prepare_checkpoints(ckpt_dir, fp, params.max_steps) if state.is_main_process else None
    state.wait_for_everyone()
    resume = last_checkpoint(ckpt_dir) if not state.is_main_process else resume
    resumed_step = json.loads((resume / "trainer_state.json").read_text())["global_step"] if resume else 0
    if resume:
        print(f"sft: resuming from {resume} (step {resumed_step})")

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
    item_info = init_item_embeddings(model, tokenizer, item_table, params.seed) if items else {}
    bf16 = dtype == torch.bfloat16
    args = SFTConfig(
        output_dir=str(ckpt_dir),
        learning_rate=params.lr,
        num_train_epochs=params.epochs,
        max_steps=params.max_steps or -1,
        per_device_train_batch_size=params.batch_size,
        gradient_accumulation_steps=params.grad_accum,
        warmup_steps=params.warmup,
        lr_scheduler_type=params.scheduler,
        completion_only_loss=params.loss != "all",  # labels from completion_mask
        max_length=params.max_length,  # rows are already within it (tokenize_examples)
        bf16=bf16,
        fp16=False,  # TRL's bf16=None would turn on bf16 autocast on CPU too
        activation_checkpointing=params.gradient_checkpointing,  # TRL defaults it on; slow on CPU
        save_strategy="steps",
        save_steps=params.save_steps,
        save_total_limit=params.save_total_limit,
        logging_steps=params.logging_steps,
        seed=params.seed,
        data_seed=params.seed,
        report_to="none",
        use_cpu=not torch.cuda.is_available(),  # also lets bf16 train on CPUs that compute it natively
        dataloader_pin_memory=torch.cuda.is_available(),
    )
    # sft.item_rows = trained: the item rows train as PEFT trainable tokens (tied output rows follow), merged with the
    # LoRA; frozen: they stay at their start, in the base weights the LoRA is merged into
    trained_rows = items and params.item_rows == "trained"
    token_rows = (
        {"trainable_token_indices": add_item_tokens(tokenizer, item_table["item_id"].to_list())} if trained_rows else {}
    )
    lora = LoraConfig(
        r=params.lora.r,
        lora_alpha=params.lora.alpha,
        lora_dropout=params.lora.dropout,
        target_modules=params.lora.target_modules,
        task_type="CAUSAL_LM",
        **token_rows,
    )
    trainer = cpu_speed_trainer(SFTTrainer, "compute_loss")(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=callbacks,
    )
    if trained_rows:
        head_reads_trained_rows(trainer.model)
    t0 = time.time()
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    train_s = time.time() - t0

    info = {
        "base_model": model_path,
        "revision": revision,
        "dtype": str(dtype).removeprefix("torch."),
        "examples": len(rows),
        "global_step": trainer.state.global_step,
        "resumed_from_step": resumed_step,
        "train_seconds": round(train_s, 1),
        **item_info,
        **(notes or {}),
        "environment": versions(),
        "loss": loss_rows(trainer.state.log_history),
        "valid_curve": valid_rows(trainer.state.log_history, params.monitor.ks),
    }
    info["main_process"] = trainer.is_world_process_zero()  # only it writes outputs (multi-process launches)
    if info["main_process"]:
        skip = {"loss", "valid_curve", "main_process"}  # plots of their own
        save_merged(
            trainer.model, tokenizer, dtype, out_dir, "sft_info.json", {k: v for k, v in info.items() if k not in skip}
        )
    state.wait_for_everyone()
    return info
