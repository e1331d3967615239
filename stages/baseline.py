"""Classic baselines scored on the persisted candidates: random, popularity (train counts), SASRec.

    python stages/baseline.py random        # or: popularity | sasrec
    (reads params.yaml `eval` and `baselines.<method>`)

Outputs: data/predictions/<method>.parquet (per sample: ranked candidates, target rank), metrics/<method>.json
(HR@K / NDCG@K with 95 % CIs per candidate-set size), and for SASRec plots/sasrec_train.csv (loss, valid NDCG@10).
"""

from enum import Enum
from pathlib import Path

import numpy as np
import polars as pl

from mllmrec.cli import run
from mllmrec.config import BaselinesParams, EvalParams, load_section
from mllmrec.evaluation import SPLIT_DIR, candidate_sizes, load_candidates, rank_by_scores, score_predictions
from mllmrec.io import read_parquet, write_csv, write_json, write_parquet


class Method(str, Enum):
    random = "random"
    popularity = "popularity"
    sasrec = "sasrec"


def main(method: Method) -> None:
    params = load_section("baselines", BaselinesParams)
    eval_params = load_section("eval", EvalParams)
    train_seqs = read_parquet(SPLIT_DIR / "train_sequences.parquet", "split")
    sizes = candidate_sizes()

    if method is Method.sasrec:
        import torch  # heavy import only where it is needed

        from mllmrec import sasrec

        items = sorted(set(train_seqs["items"].explode().to_list())
                       | set(load_candidates(sizes[-1], "test")["candidates"].explode().to_list()))
        index = {item: i + 1 for i, item in enumerate(items)}  # 0 is padding

        def to_idx(col: pl.Series) -> list[list[int]]:
            return [[index[i] for i in seq] for seq in col.to_list()]

        valid = load_candidates(sizes[-1], "valid")  # early stopping on the hardest candidate set
        model, log = sasrec.train(to_idx(train_seqs["items"]), len(items), params.sasrec,
                                  (to_idx(valid["history"]), to_idx(valid["candidates"]),
                                   valid["target_index"].to_numpy()))
        Path("data/models").mkdir(parents=True, exist_ok=True)
        torch.save({"state_dict": model.state_dict(), "items": items}, "data/models/sasrec.pt")
        write_csv(pl.DataFrame(log), Path("plots/sasrec_train.csv"))

        def scorer(c: pl.DataFrame) -> np.ndarray:
            return sasrec.score_candidates(model, to_idx(c["history"]), to_idx(c["candidates"]))
    elif method is Method.popularity:
        counts = dict(train_seqs["items"].explode().value_counts().iter_rows())
        rng = np.random.default_rng(params.popularity.seed)

        def scorer(c: pl.DataFrame) -> np.ndarray:
            pop = np.array([[counts.get(i, 0) for i in row] for row in c["candidates"].to_list()], dtype=float)
            return pop + rng.random(pop.shape) * 0.5  # seeded jitter < 1 breaks ties without reordering counts
    else:
        rng = np.random.default_rng(params.random.seed)

        def scorer(c: pl.DataFrame) -> np.ndarray:
            return rng.random((c.height, c["candidates"].list.len().max()))

    metrics, frames = {}, []
    for n_neg in sizes:
        cands = load_candidates(n_neg, eval_params.split)
        preds, summary = score_predictions(rank_by_scores(cands, scorer(cands)), eval_params)
        metrics[f"n{n_neg}"] = summary
        frames.append(preds.with_columns(num_negatives=pl.lit(n_neg, dtype=pl.Int32)))
    write_parquet(pl.concat(frames), Path(f"data/predictions/{method.value}.parquet"))
    write_json(metrics, Path(f"metrics/{method.value}.json"))
    for key, m in metrics.items():
        print(f"{method.value} {key}: " + "  ".join(f"{k}={m[k]:.4f}" for k in m if "@" in k and "_" not in k))


if __name__ == "__main__":
    run(main)
