"""Leave-one-out samples and persisted candidate sets.

Per user with >= min_inter interactions (time order): last item -> test, second-to-last -> valid, the one before
-> train (plus `train_windows - 1` sliding windows further back). Each sample's history is the last
`min_inter - 1` items before its target. Candidates = target + N negatives drawn uniformly from items the user
never interacted with, seeded and stage-local, shuffled once, and written to Parquet so every method sees the same.
"""

import hashlib

import numpy as np
import polars as pl

from mllmrec.errors import UserError


def seeded_subset(df: pl.DataFrame, n: int | None, seed: int) -> pl.DataFrame:
    """The n samples whose sha256(f"{seed}:{sample_id}") is smallest, sorted by sample_id (all when n is None).

    The one subsampling rule of the project (evaluation's max_samples, draft_cot, augment, the GRPO prompts and the
    training monitors): independent of row order, and stable as data grows, so with equal seeds a smaller subset is
    inside a larger one (augment's samples contain every drafted sample).

    >>> df = pl.DataFrame({"sample_id": [f"u{i}" for i in range(10)]})
    >>> seeded_subset(df, 3, 0)["sample_id"].to_list() == seeded_subset(df.reverse(), 3, 0)["sample_id"].to_list()
    True
    >>> set(seeded_subset(df, 3, 0)["sample_id"]) <= set(seeded_subset(df, 6, 0)["sample_id"])
    True
    """
    if n is not None and n < df.height:
        key = [hashlib.sha256(f"{seed}:{s}".encode()).hexdigest() for s in df["sample_id"]]
        df = df.with_columns(_k=pl.Series(key)).sort("_k").head(n).drop("_k")
    return df.sort("sample_id")


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
            seqs.filter(pos >= 1).select(  # a sample needs at least one history item
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
    sample_users: np.ndarray,
    user_seen: np.ndarray,
    n_items: int,
    n_neg: int,
    rng: np.random.Generator,
    chunk: int = 100_000,
) -> np.ndarray:
    """(S, n_neg) item indices, per row distinct and never in that user's `user_seen` codes (user * n_items + item).

    Vectorized rejection sampling: draw more than needed, drop seen items and repeats, keep the first n_neg in draw
    order; rows that come up short are redrawn with a larger margin.
    """
    out = np.empty((len(sample_users), n_neg), dtype=np.int64)
    # where each user's codes start in user_seen: a block of rows then searches only its users' slice (cache-sized)
    bounds = np.searchsorted(user_seen, np.arange(int(sample_users.max(initial=0)) + 2) * n_items)
    for lo in range(0, len(sample_users), chunk):
        users = sample_users[lo : lo + chunk]
        todo = np.arange(len(users))
        extra = n_neg // 2 + 8
        while todo.size:
            draws = rng.integers(0, n_items, size=(todo.size, n_neg + extra))
            width = draws.shape[1]
            # sort each row once by (item, column): the stable order, from a fast sort of one packed integer key
            shift = max((width - 1).bit_length(), 1)
            dtype = np.int32 if n_items << shift < 2**31 else np.int64
            key = (draws.astype(dtype) << shift) | np.arange(width, dtype=dtype)
            key.sort(axis=1)
            order, sorted_draws = key & ((1 << shift) - 1), key >> shift
            # a repeat within a row is invalid after its first occurrence (in draw order, thanks to the stable key)
            bad = np.zeros(draws.shape, dtype=bool)
            bad[:, 1:] = sorted_draws[:, 1:] == sorted_draws[:, :-1]
            bad |= seen(users[todo], sorted_draws, user_seen, bounds, n_items)
            valid = np.empty_like(bad)
            np.put_along_axis(valid, order, ~bad, axis=1)  # back to draw order
            # the first n_neg valid draws of each row that has enough (int8 view: a cast-free, fast cumsum)
            running = np.cumsum(valid.view(np.int8), axis=1, dtype=np.int16 if width < 2**15 else np.int32)
            done = running[:, -1] >= n_neg
            keep = valid & (running <= n_neg) & done[:, None]
            out[lo + todo[done]] = draws[keep].reshape(-1, n_neg)
            todo = todo[~done]
            extra *= 2
    return out


def seen(
    users: np.ndarray, draws: np.ndarray, user_seen: np.ndarray, bounds: np.ndarray, n_items: int, block: int = 2048
) -> np.ndarray:
    """(rows, width) bool: draws[r, j] is in users[r]'s `user_seen` codes.

    Samples come sorted by user, so a block of rows covers a narrow user range whose codes are one short slice of
    user_seen: binary search there stays in cache (a search over all 25 M codes misses it at every step).
    """
    out = np.empty(draws.shape, dtype=bool)
    for lo in range(0, len(users), block):
        u = users[lo : lo + block]
        part = user_seen[bounds[u.min()] : bounds[u.max() + 1]]
        if not len(part):
            out[lo : lo + block] = False
            continue
        codes = u[:, None] * n_items + draws[lo : lo + block]
        pos = np.searchsorted(part, codes)
        np.minimum(pos, len(part) - 1, out=pos)
        out[lo : lo + block] = part[pos] == codes
    return out


def make_candidates(samples: pl.DataFrame, seqs: pl.DataFrame, items: list[str], n_neg: int, seed: int) -> pl.DataFrame:
    """samples + candidates (target + n_neg negatives, shuffled), target_index, seed, num_negatives."""
    if n_neg >= len(items):  # else the message below would read "more than -29 of the 70 items"
        raise UserError(
            f"the candidate pool has only {len(items)} items: cannot draw {n_neg} negatives besides the "
            f"target (lower split.num_negatives)"
        )
    too_full = seqs.filter(pl.col("items").list.n_unique() > len(items) - n_neg)
    if too_full.height:
        raise UserError(
            f"user {too_full['user_id'][0]!r} has interacted with more than {len(items) - n_neg} of the "
            f"{len(items)} items: cannot draw {n_neg} unseen negatives (lower split.num_negatives)"
        )
    # ids -> indices with Enum casts (hash lookups in polars), not a Python loop over 25 M items
    pool = pl.Series(items, dtype=pl.String)
    seen_users = np.repeat(np.arange(seqs.height, dtype=np.int64), seqs["n"].to_numpy())
    seen_items = seqs["items"].explode().cast(pl.Enum(pool)).to_physical().to_numpy().astype(np.int64)
    user_seen = np.sort(seen_users * len(items) + seen_items)
    user_seen = user_seen[np.concatenate(([True], user_seen[1:] != user_seen[:-1]))]  # np.unique without its hash
    sample_users = samples["user_id"].cast(pl.Enum(seqs["user_id"])).to_physical().to_numpy().astype(np.int64)

    rng = np.random.default_rng([seed, n_neg])  # stage-local stream, distinct per candidate-set size
    negatives = draw_negatives(sample_users, user_seen, len(items), n_neg, rng)
    targets = samples["target"].cast(pl.Enum(pool)).to_physical().to_numpy().astype(np.int64)
    cands = rng.permuted(np.concatenate([targets[:, None], negatives], axis=1), axis=1)  # shuffled once
    flat = pool.gather(cands.ravel())
    return samples.with_columns(
        candidates=flat.reshape((len(samples), n_neg + 1)).cast(pl.List(pl.String)),
        target_index=pl.Series(np.argmax(cands == targets[:, None], axis=1).astype(np.int32)),
        seed=pl.lit(seed, dtype=pl.Int64),
        num_negatives=pl.lit(n_neg, dtype=pl.Int32),
    )
