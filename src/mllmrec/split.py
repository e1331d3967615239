"""Leave-one-out samples and persisted candidate sets.

Per user with >= min_inter interactions (time order): last item -> test, second-to-last -> valid, the one before
-> train (plus `train_windows - 1` sliding windows further back). Each sample's history is the last
`min_inter - 1` items before its target. Candidates = target + N negatives drawn uniformly from items the user
never interacted with, seeded and stage-local, shuffled once, and written to Parquet so every method sees the same.
"""

import numpy as np
import polars as pl

from mllmrec.errors import UserError


def user_sequences(inter: pl.DataFrame) -> pl.DataFrame:
    """user_id -> items (time order), n."""
    return (
        inter.sort("user_id", "position")
        .group_by("user_id", maintain_order=True)
        .agg(items=pl.col("item_id"))
        .with_columns(n=pl.col("items").list.len().cast(pl.Int64))  # signed: n - 1 - offset may go below 0
    )


def make_samples(seqs: pl.DataFrame, min_inter: int, train_windows: int, stride: int) -> pl.DataFrame:
    """One row per (user, split, target position): sample_id, user_id, split, history, target."""
    h = min_inter - 1
    offsets = [("test", 0), ("valid", 1)] + [("train", 2 + stride * j) for j in range(train_windows)]
    parts = []
    for split, offset in offsets:
        pos = pl.col("n") - 1 - offset
        start = pl.max_horizontal(pos - h, pl.lit(0))
        parts.append(
            seqs.filter(pos >= 1)  # a sample needs at least one history item
            .select(
                pl.format("{}:{}:{}", "user_id", pl.lit(split), pos).alias("sample_id"),
                "user_id",
                pl.lit(split).alias("split"),
                pl.col("items").list.slice(start, pos - start).alias("history"),
                pl.col("items").list.get(pos, null_on_oob=True).alias("target"),
            )
        )
    order = pl.col("split").replace_strict({"train": 0, "valid": 1, "test": 2}, return_dtype=pl.Int8)
    # fixed order (split, user, position) so the seeded draw is reproducible
    return pl.concat(parts).sort(order, "user_id", pl.col("sample_id").str.len_chars(), "sample_id")


def draw_negatives(
    sample_users: np.ndarray, user_seen: np.ndarray, n_items: int, n_neg: int, rng: np.random.Generator,
    chunk: int = 100_000,
) -> np.ndarray:
    """(S, n_neg) item indices, per row distinct and never in that user's `user_seen` codes (user * n_items + item).

    Vectorized rejection sampling: draw more than needed, drop seen items and repeats, keep the first n_neg in draw
    order; rows that come up short are redrawn with a larger margin.
    """
    out = np.empty((len(sample_users), n_neg), dtype=np.int64)
    for lo in range(0, len(sample_users), chunk):
        users = sample_users[lo : lo + chunk]
        todo = np.arange(len(users))
        extra = n_neg // 2 + 8
        while todo.size:
            draws = rng.integers(0, n_items, size=(todo.size, n_neg + extra))
            codes = users[todo, None] * n_items + draws
            pos = np.searchsorted(user_seen, codes).clip(max=len(user_seen) - 1)
            valid = user_seen[pos] != codes
            # a repeat within a row is invalid after its first occurrence (stable sort keeps draw order)
            order = np.argsort(draws, axis=1, kind="stable")
            sorted_draws = np.take_along_axis(draws, order, axis=1)
            repeat_sorted = np.zeros_like(valid)
            repeat_sorted[:, 1:] = sorted_draws[:, 1:] == sorted_draws[:, :-1]
            repeat = np.zeros_like(valid)
            np.put_along_axis(repeat, order, repeat_sorted, axis=1)
            valid &= ~repeat
            done = valid.sum(axis=1) >= n_neg
            rows = np.flatnonzero(done)
            keep = valid[rows] & (np.cumsum(valid[rows], axis=1) <= n_neg)
            out[lo + todo[rows]] = draws[rows][keep].reshape(len(rows), n_neg)
            todo = todo[~done]
            extra *= 2
    return out


def make_candidates(samples: pl.DataFrame, seqs: pl.DataFrame, items: list[str], n_neg: int, seed: int
                    ) -> pl.DataFrame:
    """samples + candidates (target + n_neg negatives, shuffled), target_index, seed, num_negatives."""
    item_index = {item: i for i, item in enumerate(items)}
    user_index = {user: u for u, user in enumerate(seqs["user_id"])}
    too_full = seqs.filter(pl.col("items").list.n_unique() > len(items) - n_neg)
    if too_full.height:
        raise UserError(
            f"user {too_full['user_id'][0]!r} has interacted with more than {len(items) - n_neg} of the "
            f"{len(items)} items: cannot draw {n_neg} unseen negatives (lower split.num_negatives)"
        )
    seen_users = np.repeat(np.arange(seqs.height, dtype=np.int64), seqs["n"].to_numpy())
    seen_items = np.array([item_index[i] for i in seqs["items"].explode()], dtype=np.int64)
    user_seen = np.unique(seen_users * len(items) + seen_items)
    sample_users = np.array([user_index[u] for u in samples["user_id"]], dtype=np.int64)

    rng = np.random.default_rng([seed, n_neg])  # stage-local stream, distinct per candidate-set size
    negatives = draw_negatives(sample_users, user_seen, len(items), n_neg, rng)
    targets = np.array([item_index[t] for t in samples["target"]], dtype=np.int64)
    cands = rng.permuted(np.concatenate([targets[:, None], negatives], axis=1), axis=1)  # shuffled once
    flat = pl.Series(items).gather(cands.ravel())
    return samples.with_columns(
        candidates=flat.reshape((len(samples), n_neg + 1)).cast(pl.List(pl.String)),
        target_index=pl.Series(np.argmax(cands == targets[:, None], axis=1).astype(np.int32)),
        seed=pl.lit(seed, dtype=pl.Int64),
        num_negatives=pl.lit(n_neg, dtype=pl.Int32),
    )
