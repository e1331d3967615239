"""Collaborative item tokens' starting vectors: one row per item, from the trained SASRec (or seeded random).

    python stages/item_tokens.py      # reads params.yaml `item_tokens`; needs data/models/sasrec.pt (sasrec stage)

Outputs data/item_tokens/items.parquet (item_id, title, vector: the item's SASRec embedding, null for an item SASRec
never saw; the SFT stage projects the vectors into the policy's embedding space, mllmrec.training.item_tokens) and
data/item_tokens/report.json (counts). With `item_tokens.enabled: false` the table has no rows and SFT trains the
paper's text-only policy; the stage still runs, so a SASRec change does not retrain a text-only policy (the empty
table's bytes do not change).
"""

from pathlib import Path

from mllmrec import paths
from mllmrec.cli import run
from mllmrec.config import ItemTokensParams, load_section
from mllmrec.errors import UserError
from mllmrec.io import read_parquet, require, write_json, write_parquet
from mllmrec.training.item_tokens import item_table

READS = [paths.ITEMS, paths.SASREC_CHECKPOINT]
WRITES = [paths.ITEM_TOKENS]


def load_sasrec(path: Path) -> dict:
    import torch

    try:
        ckpt = torch.load(require(path, "sasrec"), map_location="cpu", weights_only=True)
        ok = isinstance(ckpt, dict) and "item_emb.weight" in ckpt.get("state_dict", {}) and "items" in ckpt
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError... for a foreign file
        raise UserError(f"{path}: not readable as a checkpoint ({type(e).__name__}); run `dvc repro sasrec`") from e
    if not ok:
        raise UserError(
            f"{path}: not a SASRec checkpoint of the sasrec stage (no item_emb.weight / items); run `dvc repro sasrec`"
        )
    return ckpt


def main() -> None:
    params = load_section("item_tokens", ItemTokensParams)
    items = read_parquet(paths.ITEMS, "ingest")
    checkpoint = load_sasrec(paths.SASREC_CHECKPOINT) if params.enabled else None
    table = item_table(items, checkpoint, params.init, params.seed)
    missing = table["vector"].null_count()
    report = {
        "enabled": params.enabled,
        "init": params.init,
        "items": table.height,
        "from_vectors": table.height - missing,
        "title_fallback": missing,
    }
    write_parquet(table, paths.ITEM_TOKEN_TABLE)
    write_json(report, paths.ITEM_TOKENS_REPORT)
    if not params.enabled:
        print("item_tokens: disabled (item_tokens.enabled: false): the policy stays text-only")
        return
    print(
        f"item_tokens: {table.height} items, {report['from_vectors']} from {params.init} vectors, {missing} never "
        "seen by SASRec (they start from the mean embedding of their title's tokens)"
    )


if __name__ == "__main__":
    run(main)
