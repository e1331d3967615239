"""Classic baselines scored on the persisted candidates: random, popularity (train counts), last-item Markov
chain, ItemKNN (co-occurrence), SASRec.

    python stages/baseline.py random        # or: popularity | markov | itemknn | sasrec
    (reads params.yaml `eval` and `baselines.<method>`)

Outputs: data/predictions/<method>.parquet (per sample: ranked candidates, target rank), metrics/<method>.json
(HR@K / NDCG@K with 95 % CIs per candidate-set size), and for SASRec plots/sasrec_train.csv (loss, valid NDCG@10).
"""

from enum import Enum

import polars as pl

from mllmrec import paths
from mllmrec.cli import run
from mllmrec.config import BaselinesParams, EvalParams, load_section
from mllmrec.evaluation.baselines import itemknn_scorer, markov_scorer, popularity_scorer, random_scorer, sasrec_scorer
from mllmrec.evaluation.candidates import candidate_sizes, load_candidates, rank_by_scores, score_predictions
from mllmrec.io import atomic, read_parquet, write_csv, write_json, write_parquet


class Method(str, Enum):
    random = "random"
    popularity = "popularity"
    markov = "markov"
    itemknn = "itemknn"
    sasrec = "sasrec"


# by the cmd's argument: `python stages/baseline.py <method>` is the stage baseline@<method>, or sasrec
READS = {m.value: [paths.SPLIT] for m in Method}
WRITES = {
    m.value: [paths.predictions(m.value), paths.metrics_file(m.value)]
    + ([paths.SASREC_CHECKPOINT, paths.SASREC_PLOT] if m is Method.sasrec else [])
    for m in Method
}


def main(method: Method) -> None:
    params = load_section("baselines", BaselinesParams)
    eval_params = load_section("eval", EvalParams)
    train_seqs = read_parquet(paths.TRAIN_SEQUENCES, "split")
    sizes = candidate_sizes()

    if method is Method.sasrec:
        import torch  # heavy import only where it is needed

        # early stopping on the hardest candidate set's valid split; the vocabulary covers its test candidates
        scorer, checkpoint, log = sasrec_scorer(
            train_seqs, load_candidates(sizes[-1], "valid"), load_candidates(sizes[-1], "test"), params.sasrec
        )
        with atomic(paths.SASREC_CHECKPOINT) as tmp, open(tmp, "wb") as f:
            torch.save(checkpoint, f)  # a file object: torch.save would name the zip's records after the temp path
        write_csv(pl.DataFrame(log), paths.SASREC_PLOT)
    elif method is Method.popularity:
        scorer = popularity_scorer(train_seqs, params.popularity.seed)
    elif method is Method.markov:
        scorer = markov_scorer(train_seqs, params.markov.seed)
    elif method is Method.itemknn:
        scorer = itemknn_scorer(train_seqs, params.itemknn.seed)
    else:
        scorer = random_scorer(params.random.seed)

    metrics, frames = {}, []
    for n_neg in sizes:
        cands = load_candidates(n_neg, eval_params.split)
        preds, summary = score_predictions(rank_by_scores(cands, scorer(cands)), eval_params)
        metrics[f"n{n_neg}"] = summary
        frames.append(preds.with_columns(num_negatives=pl.lit(n_neg, dtype=pl.Int32)))
    write_parquet(pl.concat(frames), paths.predictions(method.value))
    write_json(metrics, paths.metrics_file(method.value))
    for key, m in metrics.items():
        print(f"{method.value} {key}: " + "  ".join(f"{k}={m[k]:.4f}" for k in m if "@" in k and "_" not in k))


if __name__ == "__main__":
    run(main)
