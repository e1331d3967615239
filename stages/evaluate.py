"""Evaluate an LLM policy on the persisted test candidates (the same samples as the baselines), two protocols.

    python stages/evaluate.py zeroshot     # the base policy model (params models.policy), no training
    python stages/evaluate.py sft          # models/sft     (sft stage)
    python stages/evaluate.py grpo         # models/grpo    (grpo stage)

`evaluate.launch.num_processes: N > 1` re-execs under `accelerate launch`: each process (one GPU each; gloo ranks on
CPU) scores every N-th sample with the transformers engine, and the shards are merged back in candidate order before
metrics, so the outputs are those of one process. vLLM is one process that uses the GPU itself: keep N = 1 with it.
`executor.kind: ray` (docs/scaling.md) runs the generative protocol's batches on a Ray cluster instead, one policy
engine per actor, with the same predictions; likelihood ranking stays in this process.

On the sizes in `evaluate.position_check` the likelihood ranking runs twice more, each sample's candidates reversed
and seeded-shuffled: HR@1 under each order and its paired difference land in the likelihood metrics (`position`),
flagged when HR@1 moves by more than half its CI (the report lists them).

Reads params `eval`, `evaluate`, `prompt`, `models.policy`. Outputs metrics/<policy>-likelihood.json and
metrics/<policy>-generative.json (HR@K / NDCG@K with 95 % CIs, valid-output rate, out-of-candidate count per
candidate-set size) and data/predictions/<policy>.parquet (per sample and protocol: ranked ids, generated text).
"""

import json
from enum import Enum

import polars as pl
import torch

from mllmrec import paths
from mllmrec.cli import run
from mllmrec.config import EvalParams, EvaluateParams, ExecutorParams, ModelsParams, PromptParams, load_section
from mllmrec.engines import build_engine
from mllmrec.engines.base import SamplingParams
from mllmrec.engines.transformers_engine import pick_device_dtype
from mllmrec.errors import UserError
from mllmrec.evaluation.candidates import candidate_sizes, load_candidates, reorder_candidates, score_predictions
from mllmrec.evaluation.policy import generative_predictions, likelihood_predictions, load_policy, merge_shards, shard
from mllmrec.evaluation.significance import position_bias
from mllmrec.executor import open_executor
from mllmrec.io import read_parquet, require, write_json, write_parquet
from mllmrec.launch import maybe_relaunch
from mllmrec.prompts import load_item_texts
from mllmrec.training.memory import check_cuda_inference

PROTOCOLS = ("likelihood", "generative")


class Policy(str, Enum):
    zeroshot = "zeroshot"
    sft = "sft"
    grpo = "grpo"


TRAINED = {Policy.sft: paths.SFT_MODEL, Policy.grpo: paths.GRPO_MODEL}
# zeroshot evaluates models.policy.model; its dep on the demo folder orders it after the `models` stage
MODEL = {Policy.zeroshot: paths.param("models.provision.out"), **TRAINED}
# by the cmd's argument: `python stages/evaluate.py <policy>` is the stage evaluate@<policy>
READS = {p.value: [paths.SPLIT, paths.ITEMS, paths.CAPTIONS, MODEL[p]] for p in Policy}
WRITES = {
    p.value: [paths.predictions(p.value)] + [paths.metrics_file(f"{p.value}-{protocol}") for protocol in PROTOCOLS]
    for p in Policy
}


def main(policy: Policy) -> None:
    eval_params = load_section("eval", EvalParams)
    params = load_section("evaluate", EvaluateParams)
    prompt = load_section("prompt", PromptParams)
    spec = load_section("models", ModelsParams).policy
    executor = load_section("executor", ExecutorParams, default=ExecutorParams())
    if params.launch.num_processes > 1 and spec.engine != "transformers":
        raise UserError(
            f"params.yaml: evaluate.launch.num_processes > 1 shards the transformers engine; "
            f"models.policy.engine is {spec.engine!r}: set evaluate.launch.num_processes: 1"
        )
    if params.launch.num_processes > 1 and executor.kind != "local":
        raise UserError(
            "params.yaml: evaluate.launch.num_processes > 1 and executor.kind = ray both shard the "
            "generation; pick one (evaluate.launch.num_processes: 1 with Ray)"
        )
    maybe_relaunch(params.launch, "evaluate")
    if policy in TRAINED:
        require(TRAINED[policy], policy.value)
        spec = spec.model_copy(update={"model": str(TRAINED[policy]), "revision": ""})

    items = read_parquet(paths.ITEMS, "ingest")
    captions = read_parquet(paths.CAPTIONS, "textualize") if prompt.captions != "none" else None
    texts = load_item_texts(items, captions)
    sizes = candidate_sizes()
    if params.num_negatives is not None:
        missing = set(params.num_negatives) - set(sizes)
        if missing:
            raise UserError(f"params.yaml: evaluate.num_negatives {sorted(missing)} not in split.num_negatives {sizes}")
        sizes = params.num_negatives
    sampling = SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=params.max_new_tokens, seed=0)
    print(
        f"evaluate {policy.value}: {spec.model} enable_thinking={spec.enable_thinking} "
        f"generation={json.dumps(sampling.__dict__)}"
    )  # logged: nothing comes from generation_config.json

    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())  # one process unless launched by accelerate
    rank, world = state.process_index, state.num_processes
    frames, metrics = [], {protocol: {} for protocol in PROTOCOLS}
    # each candidate set read once; both protocols score the same samples
    subsets = {n: load_candidates(n, eval_params.split, params.max_samples, eval_params.seed) for n in sizes}
    device, dtype = pick_device_dtype(spec)
    check_cuda_inference(
        spec.model,
        spec.revision,
        dtype,
        spec.gpu_memory_utilization if spec.engine == "vllm" else 0.0,
        f"evaluate {policy.value}",
    )  # CUDA only: before any weights load
    model, tokenizer = load_policy(spec.model, spec.revision, device, dtype)

    def ranked(model, frame: pl.DataFrame) -> tuple[pl.DataFrame, dict]:
        mine = likelihood_predictions(
            model, tokenizer, shard(frame, rank, world), texts, prompt, spec.enable_thinking, params.max_tokens
        )
        return score_predictions(merge_shards(mine, frame, world), eval_params)

    for n_neg, cands in subsets.items():
        preds, summary = ranked(model, cands)
        if n_neg in params.position_check:  # the same samples, candidates reversed and shuffled: does order decide?
            reordered = {
                how: ranked(model, reorder_candidates(cands, how, eval_params.seed))[0]
                for how in ("reversed", "shuffled")
            }
            summary["position"] = position_bias(preds, reordered, eval_params, summary)
        metrics["likelihood"][f"n{n_neg}"] = summary
        frames.append(preds.with_columns(protocol=pl.lit("likelihood"), num_negatives=pl.lit(n_neg)))
    del model  # free memory before the engine loads its own copy

    with open_executor(executor, lambda: build_engine(spec)) as ex:  # local: one engine here, built on first use
        for n_neg, cands in subsets.items():
            if params.generative_num_negatives is not None and n_neg not in params.generative_num_negatives:
                continue
            mine = generative_predictions(
                None, shard(cands, rank, world), texts, prompt, sampling, spec.batch_size, executor=ex
            )
            preds, metrics["generative"][f"n{n_neg}"] = score_predictions(merge_shards(mine, cands, world), eval_params)
            frames.append(preds.with_columns(protocol=pl.lit("generative"), num_negatives=pl.lit(n_neg)))

    if not state.is_main_process:  # every rank holds the merged results; one writes them
        return
    write_parquet(pl.concat(frames, how="diagonal_relaxed"), paths.predictions(policy.value))
    for protocol, by_size in metrics.items():
        write_json(by_size, paths.metrics_file(f"{policy.value}-{protocol}"))
        for size, m in by_size.items():
            print(
                f"{policy.value} {protocol} {size}: HR@1={m['HR@1']:.3f} HR@3={m.get('HR@3', float('nan')):.3f} "
                f"valid={m['valid_rate']:.2f} out_of_candidates={m['out_of_candidates']}"
            )


if __name__ == "__main__":
    run(main)
