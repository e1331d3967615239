"""Score an LLM policy on the persisted candidates, two ways, producing the same `ranked` lists the baselines do.

- likelihood: every candidate's answer line `[ITEM_<id>] <title>` + end-of-turn is scored by its exact
  log-likelihood given the prompt (mllmrec.evaluation.likelihood, one packed forward per sample); candidates are ranked by it.
- generative (the paper's protocol): greedy generation through the policy's engine; the ids the model writes are
  parsed in order; ids outside the candidate set stay in place as misses and are counted; no id = invalid output.

With several processes (`evaluate.launch.num_processes`), each scores `shard(cands, rank, world)` and
`merge_shards` gathers the shards back into the candidate file's order on every rank: the merged predictions are
the same rows in the same order as one process would write (per-sample work does not depend on the other samples).
Generation can instead run on a Ray cluster (`executor.kind: ray`, mllmrec.executor): the same batches go to the
actors, one policy engine each, and come back in order, so the predictions equal a local run's.
"""

import polars as pl
import torch

from mllmrec import paths
from mllmrec.config import PromptParams
from mllmrec.engines.base import GenerationRequest, SamplingParams
from mllmrec.errors import UserError
from mllmrec.evaluation.likelihood import score_candidates, score_next_token, tokenize_parts
from mllmrec.executor import LocalExecutor
from mllmrec.progress import Progress, track
from mllmrec.prompts import (
    ItemText,
    answer_line,
    build_messages,
    completion_template,
    item_token_ids,
    parse_answer,
    render_prompt,
)


def likelihood_predictions(
    model,
    tokenizer,
    cands: pl.DataFrame,
    texts: dict[str, ItemText],
    prompt: PromptParams,
    enable_thinking: bool | None,
    max_tokens: int,
) -> pl.DataFrame:
    """Candidates ranked by likelihood: of their whole answer line, or, for a policy with item tokens, of the answer's
    first token, the item's own (one forward per prompt; mllmrec.evaluation.likelihood). Each sample has forwards of
    its own: its scores do not depend on which samples share a shard."""
    token_of = item_token_ids(tokenizer)
    rows = list(cands.iter_rows(named=True))
    if token_of:
        missing = sorted({c for s in rows for c in s["candidates"] if c not in token_of})
        if missing:
            raise UserError(
                f"{tokenizer.name_or_path}: the policy has {len(token_of)} item tokens, but {len(missing)} "
                f"candidate items have none (e.g. {missing[:3]}): it was trained on another item table "
                f"than {paths.ITEMS}; rerun `dvc repro sft`"
            )
        all_scores = item_token_scores(model, tokenizer, rows, token_of, texts, prompt, enable_thinking)
    else:
        all_scores = []
        for sample in track(rows, total=len(rows), description="likelihood ranking"):
            messages = build_messages(sample, texts, prompt)
            prefix, suffix = completion_template(tokenizer, messages, enable_thinking)
            completions = [prefix + answer_line(c, texts, prompt.answer) + suffix for c in sample["candidates"]]
            all_scores += score_candidates(
                model, tokenizer, [render_prompt(tokenizer, messages, enable_thinking)], [completions], max_tokens
            )
    ranked, scores = [], []
    for sample, s in zip(rows, all_scores):
        order = sorted(range(len(s)), key=lambda j: -s[j])  # stable: ties keep the shuffled candidate order
        ranked.append([sample["candidates"][j] for j in order])
        scores.append(s.tolist())
    return cands.select("sample_id", "user_id", "target", "candidates").with_columns(
        ranked=pl.Series(ranked, dtype=pl.List(pl.String)),
        valid=pl.lit(True),
        scores=pl.Series(scores, dtype=pl.List(pl.Float64)),
    )


def item_token_scores(
    model,
    tokenizer,
    rows: list[dict],
    token_of: dict[str, int],
    texts: dict[str, ItemText],
    prompt: PromptParams,
    enable_thinking: bool | None,
) -> list:
    """log p(candidate's item token | prompt + the assistant turn's prefix): the line likelihood's first factor, the
    same for every candidate up to the prefix's own log-prob, so the ranking by it is exact for that factor."""
    out = []
    for sample in track(rows, total=len(rows), description="item-token ranking"):
        messages = build_messages(sample, texts, prompt)
        prefix, _ = completion_template(tokenizer, messages, enable_thinking)
        # prompt and completion tokenized apart, as SFT trains them: the prefix's ids, then the item token's
        prompt_ids, [prefix_ids] = tokenize_parts(
            tokenizer, render_prompt(tokenizer, messages, enable_thinking), [prefix]
        )
        out.append(score_next_token(model, prompt_ids + prefix_ids, [token_of[c] for c in sample["candidates"]]))
    return out


def generate_batch(engine, requests: list[GenerationRequest]) -> list:
    """One batch of answers on `engine` (module level: under Ray it runs in an actor, on that actor's engine)."""
    return engine.generate(requests)


def generative_predictions(
    engine,
    cands: pl.DataFrame,
    texts: dict[str, ItemText],
    prompt: PromptParams,
    sampling: SamplingParams,
    batch: int = 32,
    executor=None,
) -> pl.DataFrame:
    """Greedy answers parsed into ranked ids. The batches run on `engine` here, or on `executor` (an opened
    mllmrec.executor, which builds its own engines; `engine` may then be None) in the same batches."""
    requests = [
        GenerationRequest(messages=tuple(build_messages(s, texts, prompt)), sampling=sampling)
        for s in cands.iter_rows(named=True)
    ]
    batches = [requests[lo : lo + batch] for lo in range(0, len(requests), batch)]
    outs: list[list | None] = [None] * len(batches)
    with Progress("generating", len(requests), enabled=bool(requests)) as bar:
        for i, out in (executor or LocalExecutor(lambda: engine)).map(generate_batch, batches):
            outs[i] = out  # Ray returns batches as they finish: put each back in its place
            bar.advance(len(out))
    results = [r for out in outs for r in out]
    ranked = [parse_answer(r.text) for r in results]
    return cands.select("sample_id", "user_id", "target", "candidates").with_columns(
        ranked=pl.Series(ranked, dtype=pl.List(pl.String)),
        valid=pl.Series([bool(r) for r in ranked]),
        text=pl.Series([r.text for r in results], dtype=pl.String),
        error=pl.Series([r.error for r in results], dtype=pl.String),
    )


def shard(cands: pl.DataFrame, rank: int, world: int, pad: bool = False) -> pl.DataFrame:
    """This process's samples: rows rank, rank + world, rank + 2·world, ... (balanced to within one sample).

    pad: every rank gets the same number of rows (the last row repeated), for forwards that are collective (the
    training monitors: DeepSpeed ZeRO-3 gathers the weights in every forward); merge_shards drops the repeats.

    >>> df = pl.DataFrame({"sample_id": ["a", "b", "c"]})
    >>> [shard(df, r, 2)["sample_id"].to_list() for r in (0, 1)], shard(df, 1, 2, pad=True)["sample_id"].to_list()
    ([['a', 'c'], ['b']], ['b', 'c'])
    """
    if world == 1:
        return cands
    if pad and cands.height % world:
        cands = pl.concat([cands, *[cands.tail(1)] * (world - cands.height % world)])
    return cands.gather_every(world, offset=rank)


def merge_shards(preds: pl.DataFrame, cands: pl.DataFrame, world: int) -> pl.DataFrame:
    """Every rank's predictions, in the order of `cands` (the whole candidate file subset), on every rank."""
    if world == 1:
        return preds
    from accelerate.utils import gather_object

    merged = pl.concat(gather_object([preds]), how="diagonal_relaxed").unique("sample_id", keep="first")  # pads
    order = cands.select("sample_id").with_row_index("_pos")
    return merged.join(order, on="sample_id").sort("_pos").drop("_pos")


def load_policy(model_dir: str, revision: str, device: torch.device, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, revision=revision or None)
    model = AutoModelForCausalLM.from_pretrained(model_dir, revision=revision or None, dtype=dtype)
    check_vocabulary(model, tokenizer, model_dir)
    return model.to(device).eval(), tokenizer


def check_vocabulary(model, tokenizer, where: str) -> None:
    """A checkpoint whose vocabulary does not cover its tokenizer's item tokens: one line naming both."""
    ids = item_token_ids(tokenizer)
    n = model.get_input_embeddings().weight.shape[0]
    if ids and max(ids.values()) >= n:
        raise UserError(
            f"{where}: its tokenizer has {len(ids)} item tokens up to id {max(ids.values())}, but the "
            f"model's vocabulary has {n} rows; model and tokenizer come from different runs"
        )
