"""Collaborative item tokens: each item's `[ITEM_<id>]` tag becomes ONE token of the policy's vocabulary, whose
embedding starts from the trained SASRec item embedding (the LLaRA / E4SRec idea: put collaborative signal inside the
LLM, next to the title it already reads).

    from mllmrec.training.item_tokens import add_item_tokens, init_item_embeddings
    ids = add_item_tokens(tokenizer, table["item_id"])       # before any prompt is tokenized
    init_item_embeddings(model, tokenizer, table, seed=0)     # after the model is loaded (train_sft does it)
    mllmrec.prompts.item_token_ids(tokenizer)                 # {item_id: token id}: what a saved tokenizer knows

The prompt text does not change: the renderer already writes `[ITEM_<id>] <title>` in history, candidates and the
answer line; with the tags in the vocabulary the tokenizer reads each one as a single token. So a merged checkpoint
(extended vocabulary + tokenizer with the added tokens) loads in transformers or vLLM with no project code, the answer
line starts with the item's token (one-forward ranking: mllmrec.evaluation.likelihood.score_next_token), and generated
text still parses with mllmrec.prompts.parse_answer.

The table (stages/item_tokens.py) holds one vector per item in SASRec's space, or null for an item SASRec never saw
(fallback: the mean input embedding of the item's title tokens, counted in the stage report). A fixed, seeded map with
orthonormal columns carries the vectors into the LLM's embedding space (inner products kept), scaled once so that the
new rows have the mean norm of the model's existing rows. SFT then trains the LoRA to read them, the rows frozen
(`sft.item_rows: frozen`) or trained with it (`trained`: PEFT trainable tokens). Tied input/output embeddings (SmolLM2,
Qwen3 up to 4B) make the same row the item's output embedding too; an untied model gets the same start in both, and
`trained` trains the input rows only.
"""

import hashlib

import numpy as np
import polars as pl

from mllmrec.errors import UserError
from mllmrec.prompts import item_token, item_token_ids


def add_item_tokens(tokenizer, item_ids) -> list[int]:
    """Add one (non-special: generated text keeps it when decoded) token per item; returns their ids in order.
    Idempotent: a tokenizer that already holds them (a resumed or merged model's) keeps its ids."""
    from tokenizers import AddedToken

    tokenizer.add_tokens(
        [AddedToken(item_token(i), normalized=False, special=False, single_word=False) for i in item_ids]
    )
    known = item_token_ids(tokenizer)
    return [known[i] for i in item_ids]


TABLE_SCHEMA = {"item_id": pl.String, "title": pl.String, "vector": pl.List(pl.Float32)}


def item_table(items: pl.DataFrame, checkpoint: dict | None, init: str = "sasrec", seed: int = 0) -> pl.DataFrame:
    """One row per item of `items` (item_id, title): its SASRec embedding (`checkpoint` = the sasrec stage's
    {state_dict, items}), null when SASRec never saw it; init "random": seeded vectors of the same size instead
    (the control arm); checkpoint None: no rows (item tokens off)."""
    if checkpoint is None:
        return pl.DataFrame(schema=TABLE_SCHEMA)
    weight = checkpoint["state_dict"]["item_emb.weight"].float().numpy()
    vectors = {item: weight[i + 1] for i, item in enumerate(checkpoint["items"])}  # row 0 is padding
    if init == "random":
        rng = np.random.default_rng(seed)
        vectors = {i: rng.standard_normal(weight.shape[1]).astype(np.float32) for i in items["item_id"]}
    rows = [vectors.get(i) for i in items["item_id"]]
    return items.select("item_id", "title").with_columns(
        vector=pl.Series([None if v is None else v.tolist() for v in rows], dtype=pl.List(pl.Float32))
    )


def table_digest(table: pl.DataFrame) -> str:
    """What the item rows start from (for the SFT checkpoint fingerprint: resume only on the same table)."""
    return hashlib.sha256(table.write_ipc(None).getvalue()).hexdigest()[:16] if table.height else "none"


def projection(d_in: int, d_out: int, seed: int) -> np.ndarray:
    """(d_out, d_in) with orthonormal columns, seeded: inner products of SASRec vectors are kept, scaled."""
    if d_in > d_out:
        raise UserError(
            f"item tokens: SASRec vectors have {d_in} dims, more than the policy's {d_out}; "
            "lower baselines.sasrec.hidden"
        )
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((d_out, d_in)))
    return q * np.sign(np.diag(r))  # sign fix: the same seed gives the same map whatever the LAPACK build


def init_item_embeddings(model, tokenizer, table: pl.DataFrame, seed: int) -> dict:
    """Grow the model's vocabulary to the tokenizer's and write each item token's row (input embedding, and the
    output row when the model does not tie them). Returns counts for the run info."""
    import torch

    ids = add_item_tokens(tokenizer, table["item_id"].to_list())
    emb = model.get_input_embeddings().weight
    n_old = emb.shape[0]
    if len(tokenizer) > n_old:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)  # rows are written below
    emb = model.get_input_embeddings().weight
    base = emb[: min(n_old, min(ids))].detach().float()
    target_norm = float(base.norm(dim=1).mean())
    have = table["vector"].is_not_null().to_numpy()
    rows = torch.zeros(len(ids), emb.shape[1])
    if have.any():
        vecs = np.stack(table.filter(pl.col("vector").is_not_null())["vector"].to_list())
        projected = vecs @ projection(vecs.shape[1], emb.shape[1], seed).T
        projected *= target_norm / np.linalg.norm(projected, axis=1).mean()
        rows[torch.from_numpy(have)] = torch.from_numpy(projected).float()
    titles = table["title"].to_list()
    for j in np.flatnonzero(~have):  # never seen by SASRec: start where the model reads the item's title
        tok = tokenizer(" " + titles[j], add_special_tokens=False)["input_ids"] or [tokenizer.eos_token_id]
        rows[j] = base[tok].mean(0)
    with torch.no_grad():
        index = torch.tensor(ids)
        emb[index] = rows.to(emb.dtype)
        out = model.get_output_embeddings()
        if out is not None and out.weight.data_ptr() != emb.data_ptr():
            out.weight[index] = rows.to(out.weight.dtype)
    return {
        "item_tokens": len(ids),
        "item_tokens_from_sasrec": int(have.sum()),
        "item_tokens_title_fallback": int((~have).sum()),
        "vocab_before": n_old,
        "vocab_after": len(tokenizer),
    }


def head_reads_trained_rows(model) -> None:
    """TRL 1.16's fused LM head (SFTTrainer's loss) reads `lm_head.weight` and `.bias` directly; under PEFT trainable
    tokens the head is a TrainableTokensWrapper whose weight is the frozen base matrix (and which has no `.bias`),
    so the loss would score the item tokens with their starting rows and never train them as outputs. Give this one
    wrapper the rows its own forward uses: the base matrix with the trained rows copied in (differentiable)."""
    head = model.get_output_embeddings()
    adapter = getattr(head, "token_adapter", None)
    if adapter is None or getattr(type(head), "reads_trained_rows", False):
        return
    head.__class__ = type(
        type(head).__name__,
        (type(head),),
        {
            "reads_trained_rows": True,
            "weight": property(lambda self: self.token_adapter.get_merged_weights(self.token_adapter.active_adapters)),
            "bias": property(lambda self: getattr(self.token_adapter.base_layer, "bias", None)),
        },
    )
