"""GRPO on the merged SFT model with a new LoRA (TRL GRPOTrainer), a reward-inflation monitor, auto-resume, merge.

    from mllmrec.training.grpo import grpo_rows, train_grpo
    rows = grpo_rows(samples, texts, tokenizer, prompt_params, enable_thinking)   # prompt strings + reward columns
    info = train_grpo(rows, valid_cands, texts, tokenizer, params, prompt_params, enable_thinking, out_dir, ...)

The run around the trainer (checkpoints, resume, merge, save) is mllmrec.training.run's, shared with SFT.

Prompts: `render_prompt` (the one renderer, chat template applied with `enable_thinking` explicit) as plain strings,
exactly the text SFT trained on and evaluation scores. TRL tokenizes a string prompt with `tokenizer(text)`; we check
that this adds no special token the template did not write (a BOS-adding tokenizer would otherwise see a double BOS
only in GRPO) - tests/test_grpo.py shows the ids equal TRL's conversational path too.

Monitor (MonitorCallback): TRL already logs reward, rewards/<component>/mean, frac_reward_zero_std (groups whose
completions all got the same reward: no learning signal), kl and entropy every step; every `monitor.every` steps
mllmrec.training.monitor adds valid-split HR@K/NDCG@K by exact likelihood ranking (the evaluate stage's own scorer) on a
fixed valid subset. Train reward rising while valid HR stays flat or falls is reward inflation. All of it goes into
Trainer's log_history, which checkpoints carry, so a resumed run still writes the whole curve.
"""

import hashlib
import json
from pathlib import Path

import polars as pl

from mllmrec.config import GrpoParams, PromptParams
from mllmrec.environment import versions
from mllmrec.errors import UserError
from mllmrec.evaluation.policy import check_vocabulary
from mllmrec.prompts import ItemText, build_messages, render_prompt
from mllmrec.training.constrained import candidates_only
from mllmrec.training.memory import check_cuda_training
from mllmrec.training.monitor import ValidMonitor, valid_rows
from mllmrec.training.rewards import trl_reward_funcs
from mllmrec.training.run import cpu_speed_trainer, lora_config, open_run, process_state, trainer_args, training_dtype

# params that change how often we save/log/monitor, not what is learned: editing them keeps checkpoints resumable
_NOT_FINGERPRINTED = {"save_steps", "save_total_limit", "logging_steps", "checkpoint_dir", "monitor", "launch"}


def grpo_rows(
    samples: pl.DataFrame,
    texts: dict[str, ItemText],
    tokenizer,
    prompt_params: PromptParams,
    enable_thinking: bool | None,
) -> list[dict]:
    """One row per augment sample: the rendered prompt + the columns reward functions read (candidates, target)."""
    rows = []
    for s in samples.iter_rows(named=True):
        cot = s["cot"] if s.get("has_cot") else None
        rows.append(
            {
                "prompt": render_prompt(tokenizer, build_messages(s, texts, prompt_params, cot=cot), enable_thinking),
                "sample_id": s["sample_id"],
                "candidates": list(s["candidates"]),
                "target": s["target"],
                "has_cot": bool(s.get("has_cot") or False),
            }
        )
    if rows:
        p = rows[0]["prompt"]
        if tokenizer(p)["input_ids"] != tokenizer(p, add_special_tokens=False)["input_ids"]:
            raise UserError(
                f"{tokenizer.name_or_path}: the tokenizer adds special tokens (BOS?) to an already "
                "templated prompt; GRPO would see different tokens than SFT/evaluation. Set "
                "add_bos_token=false in its tokenizer_config.json (the chat template writes the BOS)"
            )
    return rows


class MonitorCallback(ValidMonitor):
    """The valid HR@K learning curve (mllmrec.training.monitor) plus completion samples with their rewards to a JSONL."""

    def __init__(
        self,
        valid: pl.DataFrame | None,
        texts,
        tokenizer,
        prompt_params,
        enable_thinking,
        params: GrpoParams,
        samples_path: Path,
        train: pl.DataFrame | None = None,
        rows: list[dict] = (),
    ):
        super().__init__(valid, texts, tokenizer, prompt_params, enable_thinking, params.monitor, "grpo", train)
        self.samples_path = samples_path
        # rendered prompt -> its sample: TRL logs the prompt text only; the ablation table joins on sample_id
        self.sample_of = {r["prompt"]: (r["sample_id"], r["has_cot"]) for r in rows}
        self.completions = params.monitor.completions
        self.trainer = None  # set after the trainer exists (completion samples come from its last batch)

    def on_log(self, args, state, control, logs=None, **kw):
        # completion samples of the last generation batch, with their rewards (main process; TRL gathered them);
        # once per step: the end-of-training summary (no reward in it) would log the last batch a second time
        if (
            self.trainer is None
            or not state.is_world_process_zero
            or not self.completions
            or "reward" not in (logs or {})
        ):
            return
        tl = self.trainer._logs
        prompts, completions = list(tl["prompt"]), list(tl["completion"])
        rewards = {name: list(v) for name, v in tl["rewards"].items()}
        adv = list(tl["advantages"])
        pick = range(0, len(prompts), max(1, len(prompts) // self.completions))
        self.samples_path.parent.mkdir(parents=True, exist_ok=True)
        with self.samples_path.open("a") as f:
            for i in list(pick)[: self.completions]:
                text = completions[i] if isinstance(completions[i], str) else json.dumps(completions[i])
                sample_id, has_cot = self.sample_of.get(prompts[i], (None, None))
                f.write(
                    json.dumps(
                        {
                            "step": state.global_step,
                            "sample_id": sample_id,
                            "has_cot": has_cot,
                            "prompt_tail": prompts[i][-200:],
                            "completion": text,
                            "rewards": {k: v[i] for k, v in rewards.items() if i < len(v)},
                            "advantage": adv[i] if i < len(adv) else None,
                        },
                        ensure_ascii=False,
                    )
                    + "\n"
                )


def check_vllm_server(base_url: str, timeout_s: float = 5.0) -> None:
    """Fail fast, naming the fix, when GRPO's vLLM server is not up (TRL would wait 240 s, then raise from deep
    inside its client): the health endpoint `trl vllm-serve` exposes must answer 200."""
    import urllib.error
    import urllib.request

    url = base_url.rstrip("/") + "/health/"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            if r.status == 200:
                return
            problem = f"HTTP {r.status}"
    except (urllib.error.URLError, OSError) as e:
        problem = str(getattr(e, "reason", e))
    raise UserError(
        f"grpo.vllm_mode = server: no vLLM server answers at {url} ({problem}); start one on its own "
        f"GPUs first, e.g. `CUDA_VISIBLE_DEVICES=7 trl vllm-serve --model <grpo.model> --port 8000`, "
        f"and set grpo.vllm_server_base_url to its address"
    )


def truncate_samples(path: Path, step: int) -> None:
    """Drop completion samples logged after `step` (the checkpoint a resumed run restarts from): redone steps
    would otherwise appear twice."""
    if path.exists():
        keep = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in keep))


# ---- training ----


def fingerprint(rows: list[dict], model_path: str, params: GrpoParams) -> str:
    """What a checkpoint was trained from: prompts + targets, the starting model's files, learning params."""
    h = hashlib.sha256()
    h.update(json.dumps(params.model_dump(exclude=_NOT_FINGERPRINTED), sort_keys=True).encode())
    mp = Path(model_path)
    if mp.is_dir():  # a retrained SFT model has a new info file / sizes; weights are too big to hash every run
        for f in sorted(mp.iterdir()):
            h.update(f"{f.name}:{f.stat().st_size}".encode())
            if f.suffix == ".json":
                h.update(f.read_bytes())
    else:
        h.update(model_path.encode())
    for r in rows:
        h.update(json.dumps([r["sample_id"], r["prompt"], r["candidates"], r["target"]]).encode())
    return h.hexdigest()


def train_grpo(
    rows: list[dict],
    valid: pl.DataFrame | None,
    texts: dict[str, ItemText],
    tokenizer,
    params: GrpoParams,
    prompt_params: PromptParams,
    enable_thinking: bool | None,
    out_dir: Path,
    monitor_train: pl.DataFrame | None = None,
    callbacks: list | None = None,
) -> dict:
    """Train (resuming if possible), merge the LoRA in the training dtype, save model + tokenizer to out_dir.
    `monitor_train`: training samples the monitor also ranks (mllmrec.training.monitor.train_subset), or None.
    `callbacks` go to the Trainer after the monitor (a mllmrec.training.live.LiveLog writes the curves)."""
    if not rows:
        raise UserError("data/augment/grpo.parquet has no samples: nothing to train on")
    world = _check_launch(params)
    dtype = training_dtype(params.dtype)
    ckpt_dir = Path(params.checkpoint_dir)
    fp = fingerprint(rows, params.model, params)
    # completions.jsonl belongs to the run: cleared with its checkpoints, truncated to the resumed step below
    run = open_run(ckpt_dir, fp, params.max_steps, "grpo", ("completions.jsonl",))
    if run.resume and run.state.is_main_process:
        truncate_samples(ckpt_dir / "completions.jsonl", run.resumed_step)

    model = _load_policy(rows, tokenizer, params, dtype)
    args = _grpo_args(params, dtype)
    monitor = MonitorCallback(
        valid,
        texts,
        tokenizer,
        prompt_params,
        enable_thinking,
        params,
        ckpt_dir / "completions.jsonl",
        monitor_train,
        rows,
    )
    trainer = _grpo_trainer(model, args, rows, tokenizer, params, monitor, callbacks or [])
    train_s = run.train(trainer)

    info = {
        "base_model": params.model,
        "dtype": str(dtype).removeprefix("torch."),
        "prompts": len(rows),
        "world_size": world,
        "global_step": trainer.state.global_step,
        "resumed_from_step": run.resumed_step,
        "train_seconds": round(train_s, 1),
        "monitor_seconds": round(monitor.eval_seconds, 1),
        "use_vllm": params.use_vllm,
        "environment": versions(),
    }
    info["main_process"] = run.finish(trainer, tokenizer, dtype, out_dir, "grpo_info.json", dict(info))
    info["last_reward"] = next((h["reward"] for h in reversed(trainer.state.log_history) if "reward" in h), None)
    info["valid_curve"] = valid_rows(trainer.state.log_history, params.monitor.ks)
    return info


def _check_launch(params: GrpoParams) -> int:
    """The number of processes, after refusing a launch GRPO cannot run: an effective batch that does not split into
    whole groups, vLLM without CUDA, a vLLM server that does not answer (checked by the main process)."""
    import torch

    state = process_state()
    world = state.num_processes
    eff = params.batch_size * params.grad_accum * world
    if eff % params.num_generations:  # params validate this for launch.num_processes; a manual launch may differ
        raise UserError(
            f"grpo: effective batch {params.batch_size} × {params.grad_accum} × {world} processes = "
            f"{eff} completions is not divisible by num_generations = {params.num_generations}"
        )
    if params.use_vllm and not torch.cuda.is_available():
        raise UserError("params.yaml: grpo.use_vllm needs a CUDA GPU and `pip install -e .[gpu]`; set it false on CPU")
    if params.use_vllm and params.vllm_mode == "server" and state.is_main_process:
        check_vllm_server(params.vllm_server_base_url or "http://0.0.0.0:8000")
    return world


def _load_policy(rows: list[dict], tokenizer, params: GrpoParams, dtype):
    """The merged SFT model GRPO starts from: the CUDA memory check first, then the weights, checked against the
    tokenizer, with a generation config of nothing but the tokenizer's eos/pad."""
    from transformers import AutoModelForCausalLM, GenerationConfig

    longest = max(len(tokenizer(r["prompt"], add_special_tokens=False)["input_ids"]) for r in rows)
    check_cuda_training(
        params.model,
        "",
        dtype,
        params.lora,
        params.batch_size,
        longest + params.max_completion_length,
        params.gradient_checkpointing,
        "grpo",
        "grpo.batch_size (raise grad_accum to keep the batch), grpo.max_completion_length, "
        "grpo.gradient_checkpointing: true or grpo.vllm_gpu_memory_utilization",
        params.vllm_gpu_memory_utilization if params.use_vllm and params.vllm_mode == "colocate" else 0.0,
    )  # CUDA only: before any weights load
    model = AutoModelForCausalLM.from_pretrained(params.model, dtype=dtype)
    check_vocabulary(model, tokenizer, params.model)  # item tokens: the tokenizer and weights of the same run
    # nothing inherited from generation_config.json: TRL builds its own from the args below; eos = the tokenizer's
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model


def _grpo_trainer(model, args, rows: list[dict], tokenizer, params: GrpoParams, monitor: MonitorCallback, callbacks):
    """TRL's GRPOTrainer (CPU-sped: run.cpu_speed_trainer; sampling among the candidates' item tokens with
    `constrain_to_candidates`: mllmrec.training.constrained) with the LoRA, the reward functions, the monitor, which
    reads the trainer's last generation batch, and `callbacks` after it (they see its points)."""
    from datasets import Dataset
    from trl import GRPOTrainer

    r = params.reward
    reward_funcs = trl_reward_funcs(r.kind, r.bad_format, r.hit, r.valid_miss, r.max_answers)
    trainer_cls = cpu_speed_trainer(GRPOTrainer, "_get_per_token_logps_and_entropies")
    if params.constrain_to_candidates:
        trainer_cls = candidates_only(trainer_cls, rows, tokenizer)
    trainer = trainer_cls(
        model=model,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=lora_config(params.lora),
        callbacks=[monitor, *callbacks],
    )
    monitor.trainer = trainer
    return trainer


def _grpo_args(params: GrpoParams, dtype):
    """GRPOConfig: the shared trainer arguments (run.trainer_args) + sampling, loss and vLLM settings."""
    from trl import GRPOConfig

    return GRPOConfig(
        **trainer_args(params, dtype),
        num_generations=params.num_generations,
        beta=params.beta,
        loss_type=params.loss_type,
        scale_rewards=params.scale_rewards,
        epsilon=params.epsilon,
        num_iterations=params.num_iterations,
        max_completion_length=params.max_completion_length,
        mask_truncated_completions=params.mask_truncated_completions,
        temperature=params.temperature,
        top_p=params.top_p,
        top_k=params.top_k,
        min_p=None,
        repetition_penalty=params.repetition_penalty,
        generation_kwargs={},
        use_vllm=params.use_vllm,
        vllm_mode=params.vllm_mode,
        vllm_server_base_url=params.vllm_server_base_url,
        vllm_gpu_memory_utilization=params.vllm_gpu_memory_utilization,
        vllm_enable_sleep_mode=params.vllm_enable_sleep_mode,
        vllm_max_model_length=params.vllm_max_model_length,
        remove_unused_columns=False,  # candidates/target reach the reward functions as keyword arguments
        gradient_checkpointing=params.gradient_checkpointing,
        log_completions=False,
    )
