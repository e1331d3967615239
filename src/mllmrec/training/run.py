"""The run lifecycle SFT and GRPO share: fingerprint-checked checkpoints, resume, the common trainer arguments, train,
merge the LoRA in the training dtype and save on the main process.

    from mllmrec.training.run import open_run, trainer_args, lora_config, cpu_speed_trainer, training_dtype
    dtype = training_dtype(params.dtype)
    run = open_run(Path(params.checkpoint_dir), fingerprint(...), params.max_steps, "sft")  # resume point, all ranks
    trainer = cpu_speed_trainer(SFTTrainer, "compute_loss")(model=..., args=SFTConfig(**trainer_args(params, dtype),
        ...), peft_config=lora_config(params.lora), ...)
    seconds = run.train(trainer)
    main = run.finish(trainer, tokenizer, dtype, out_dir, "sft_info.json", info)  # merged model + info, then all wait

mllmrec.training.sft and mllmrec.training.grpo keep what differs: their rows, fingerprints, configs and callbacks.
"""

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from mllmrec.errors import UserError
from mllmrec.io import atomic_dir


def check_budget(stage: str, max_steps: int | None, per_step: int, epochs: float, available: int, unit: str) -> None:
    """max_steps overrides epochs in Trainer: refuse a step budget that needs more passes than `epochs` allows."""
    if max_steps and max_steps * per_step > epochs * available:
        raise UserError(
            f"params.yaml: {stage}.max_steps = {max_steps} steps × {per_step} {unit} per step = "
            f"{max_steps * per_step} {unit}, more than {stage}.epochs = {epochs} × {available} {unit} "
            f"in the data; lower {stage}.max_steps or raise {stage}.epochs"
        )


# ---- checkpoints ----


def last_checkpoint(ckpt_dir: Path) -> Path | None:
    """Newest complete checkpoint: trainer_state.json is written last, so a kill mid-save leaves one without it."""
    done = [
        p
        for p in ckpt_dir.glob("checkpoint-*")
        if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").exists()
    ]
    return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)


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


# ---- the run: resume point, train, merge + save ----


def process_state():
    """This process's accelerate state. accelerate shares one state per process: a later call returns the same."""
    import torch
    from accelerate import PartialState

    # cpu=True on CUDA-less boxes: otherwise accelerate treats CPU ranks as one process (no gloo group)
    return PartialState(cpu=not torch.cuda.is_available())


@dataclass
class Run:
    """One training run of a stage across its processes: where it resumes (None: from the start)."""

    state: object  # accelerate.PartialState
    resume: Path | None
    resumed_step: int

    def train(self, trainer) -> float:
        """trainer.train from the resume checkpoint; its seconds."""
        t0 = time.time()
        trainer.train(resume_from_checkpoint=str(self.resume) if self.resume else None)
        return time.time() - t0

    def finish(self, trainer, tokenizer, dtype, out_dir: Path, info_file: str, info: dict) -> bool:
        """The main process merges and saves (save_merged) while the others wait; True on the main process (the only
        one that writes outputs in multi-process launches)."""
        main = trainer.is_world_process_zero()
        if main:
            save_merged(trainer.model, tokenizer, dtype, out_dir, info_file, info)
        self.state.wait_for_everyone()
        return main


def open_run(ckpt_dir: Path, fp: str, max_steps: int | None, stage: str, run_files: tuple[str, ...] = ()) -> Run:
    """The run's resume point on every process: the main process alone touches the checkpoint dir
    (prepare_checkpoints) in multi-process launches (accelerate/torchrun); the others then read what it kept."""
    state = process_state()
    resume = prepare_checkpoints(ckpt_dir, fp, max_steps, stage, run_files) if state.is_main_process else None
    state.wait_for_everyone()
    resume = last_checkpoint(ckpt_dir) if not state.is_main_process else resume
    resumed_step = json.loads((resume / "trainer_state.json").read_text())["global_step"] if resume else 0
    if resume and state.is_main_process:  # one line per run, not one per process
        print(f"{stage}: resuming from {resume} (step {resumed_step})", flush=True)
    return Run(state, resume, resumed_step)


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


# ---- what both trainers are built with ----


def training_dtype(name: str):
    import torch

    from mllmrec.engines.transformers_engine import resolve_dtype

    return resolve_dtype(name, torch.device("cuda" if torch.cuda.is_available() else "cpu"))


def trainer_args(params, dtype) -> dict:
    """The TrainingArguments SFTConfig and GRPOConfig share, from `sft` or `grpo` params."""
    import torch

    return {
        "output_dir": str(Path(params.checkpoint_dir)),
        "learning_rate": params.lr,
        "num_train_epochs": params.epochs,
        "max_steps": params.max_steps or -1,
        "per_device_train_batch_size": params.batch_size,
        "gradient_accumulation_steps": params.grad_accum,
        "warmup_steps": params.warmup,
        "bf16": dtype == torch.bfloat16,
        "fp16": False,  # TRL's bf16=None default would turn on bf16 autocast on CPU too
        "save_strategy": "steps",
        "save_steps": params.save_steps,
        "save_total_limit": params.save_total_limit,
        "logging_steps": params.logging_steps,
        "seed": params.seed,
        "data_seed": params.seed,
        "report_to": "none",
        "use_cpu": not torch.cuda.is_available(),  # also lets bf16 train on CPUs that compute it natively
        "dataloader_pin_memory": torch.cuda.is_available(),
    }


def lora_config(lora, **extra):
    """PEFT LoraConfig of `sft.lora` / `grpo.lora`; `extra`: more LoraConfig fields (SFT's trainable item rows)."""
    from peft import LoraConfig

    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
        **extra,
    )


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
