"""GRPO (the "R1"): TRL GRPOTrainer on the merged SFT model with a new LoRA, watched by a reward-inflation monitor.

    python stages/grpo.py       # reads params.yaml `grpo`, `prompt`, `models.policy`; needs data/augment/grpo.parquet
                                # and models/sft (`dvc repro sft`)

`grpo.launch.num_processes: N > 1` re-execs this script under `accelerate launch` (DDP; DeepSpeed/FSDP with
`grpo.launch.config_file`, see configs/accelerate/). Checkpoints go to `grpo.checkpoint_dir` (checkpoints/grpo:
git-ignored, not a DVC output); a rerun after a kill resumes from the newest complete checkpoint of the same run.
Outputs: models/grpo (merged weights in the training dtype + tokenizer + grpo_info.json), dvclive/grpo (DVCLive:
plots/metrics/<series>.tsv and metrics.json, their latest values: per step reward and its components, kl,
frac_reward_zero_std, ...; valid HR@K / NDCG@K at the monitored steps), data/grpo/completions.jsonl (a few sampled
completions per step with their rewards).
"""

from pathlib import Path

from mllmrec import paths
from mllmrec.cli import run
from mllmrec.config import GrpoParams, ModelsParams, PromptParams, load_section
from mllmrec.errors import UserError
from mllmrec.io import read_parquet, write_text
from mllmrec.launch import maybe_relaunch
from mllmrec.prompts import load_item_texts

READS = [paths.GRPO_SAMPLES, paths.ITEMS, paths.CAPTIONS, paths.SPLIT, paths.param("grpo.model")]
WRITES = [paths.GRPO_MODEL, paths.GRPO_COMPLETIONS, paths.GRPO_LIVE_METRICS, paths.GRPO_LIVE_PLOTS]


def main() -> None:
    params = load_section("grpo", GrpoParams)  # validates the effective batch before anything loads
    maybe_relaunch(params.launch, "grpo")
    prompt = load_section("prompt", PromptParams)
    policy = load_section("models", ModelsParams).policy

    samples = read_parquet(paths.GRPO_SAMPLES, "augment")
    if not (Path(params.model) / "config.json").exists():
        raise UserError(f"{params.model}: no model there (grpo.model); run `dvc repro sft` first")
    items = read_parquet(paths.ITEMS, "ingest")
    captions = None if prompt.captions == "none" else read_parquet(paths.CAPTIONS, "textualize")
    texts = load_item_texts(items, captions)

    from transformers import AutoTokenizer  # lazy: keeps `--help` fast

    from mllmrec.data.split import seeded_subset
    from mllmrec.training.grpo import grpo_rows, train_grpo
    from mllmrec.training.live import GRPO_SERIES, LiveLog
    from mllmrec.training.monitor import train_subset, valid_subset
    from mllmrec.training.run import check_budget

    tokenizer = AutoTokenizer.from_pretrained(params.model)
    samples = seeded_subset(samples, params.max_samples, params.seed)
    rows = grpo_rows(samples, texts, tokenizer, prompt, policy.enable_thinking)
    check_budget(
        "grpo",
        params.max_steps,
        params.batch_size * params.grad_accum * params.launch.num_processes // params.num_generations,
        params.epochs,
        len(rows),
        "prompts",
    )
    valid = valid_subset(paths.SPLIT, params.monitor)
    monitor_train = train_subset(samples, params.monitor)
    print(
        f"grpo: {len(rows)} prompts ({sum(r['has_cot'] for r in rows)} with CoT) x {params.num_generations} "
        f"generations, reward {params.reward.kind}, beta {params.beta}, loss {params.loss_type}, "
        f"monitor {0 if valid is None else valid.height} valid samples every {params.monitor.every} steps"
    )

    live = LiveLog(paths.GRPO_LIVE_METRICS, paths.GRPO_LIVE_PLOTS, GRPO_SERIES, params.monitor.ks)
    info = train_grpo(
        rows, valid, texts, tokenizer, params, prompt, policy.enable_thinking, paths.GRPO_MODEL, monitor_train, [live]
    )
    if not info["main_process"]:
        return
    jsonl = Path(params.checkpoint_dir) / "completions.jsonl"
    write_text(jsonl.read_text() if jsonl.exists() else "", paths.GRPO_COMPLETIONS)
    first_valid, last_valid = (info["valid_curve"][0], info["valid_curve"][-1]) if info["valid_curve"] else ({}, {})
    print(
        f"grpo: {info['global_step']} steps (resumed at {info['resumed_from_step']}) on {info['world_size']} "
        f"process(es) in {info['train_seconds']} s (monitor {info['monitor_seconds']} s), {info['dtype']}; "
        f"last reward {info['last_reward']}, valid HR@1 {first_valid.get('valid_HR@1')} -> "
        f"{last_valid.get('valid_HR@1')} -> {paths.GRPO_MODEL}"
    )


if __name__ == "__main__":
    run(main)
