"""Do the captions carry item information? Genre prediction from caption text alone, against a shuffled control.

    python scripts/caption_signal.py                       # after `dvc repro textualize`; prints a markdown table
    python scripts/caption_signal.py --shuffles 200 --folds 5

For each genre of the bundled MovieLens sample with >= `--min-items` items: a multinomial naive Bayes on the caption's
words (5-fold cross-validation over items) scores every item; the metric is ROC AUC, averaged over genres. The same
is done for the pixel describer's captions of the same posters (colour words only) and for captions shuffled across
items (the link between poster and caption broken, `--shuffles` draws): the p-value is the share of shuffles whose
mean AUC reaches the real captions'; the difference to the pixel describer has a paired
bootstrap CI over items. Also: the share of items whose caption names an ImageNet label, printed text
or faces. Captions are the stage's output, i.e. after the title scrub, so OCR'd titles cannot inflate the result.
"""

import re
from pathlib import Path

import numpy as np
import polars as pl
import typer

from mllmrec import paths
from mllmrec.engines.pixel_describer import describe

ROOT = Path("sample/ml-latest-small-posters")


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def cv_scores(docs: list[list[str]], y: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Out-of-fold log-odds of each item being in the class: multinomial naive Bayes, Laplace smoothing."""
    vocab = {w: i for i, w in enumerate(sorted({w for d in docs for w in d}))}
    x = np.zeros((len(docs), len(vocab)))
    for r, d in enumerate(docs):
        for w in d:
            x[r, vocab[w]] += 1
    scores = np.zeros(len(docs))
    for f in np.unique(folds):
        train, test = folds != f, folds == f
        pos = np.log(x[train & (y == 1)].sum(0) + 1) - np.log(x[train & (y == 1)].sum() + len(vocab))
        neg = np.log(x[train & (y == 0)].sum(0) + 1) - np.log(x[train & (y == 0)].sum() + len(vocab))
        prior = np.log(max(y[train].mean(), 1e-9)) - np.log(max(1 - y[train].mean(), 1e-9))
        scores[test] = x[test] @ (pos - neg) + prior
    return scores


def auc(scores: np.ndarray, y: np.ndarray) -> float:
    """ROC AUC by the rank-sum formula, ties averaged."""
    order = scores.argsort(kind="stable")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    for s in np.unique(scores):  # average ranks of ties
        tie = scores == s
        ranks[tie] = ranks[tie].mean()
    n1 = y.sum()
    return float((ranks[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * (len(y) - n1)))


def mean_auc(docs: list[list[str]], genres: dict[str, np.ndarray], folds: np.ndarray) -> float:
    return float(np.mean([auc(cv_scores(docs, y, folds), y) for y in genres.values()]))


def paired_bootstrap(
    a: list[list[str]], b: list[list[str]], genres: dict[str, np.ndarray], folds: np.ndarray, draws: int, rng
) -> tuple[float, float, float]:
    """95 % CI and two-sided p of mean AUC(a) - mean AUC(b), resampling items (the same items for both)."""
    sa = [cv_scores(a, y, folds) for y in genres.values()]
    sb = [cv_scores(b, y, folds) for y in genres.values()]
    ys = list(genres.values())
    diffs = []
    for _ in range(draws):
        i = rng.integers(0, len(folds), len(folds))
        diffs.append(np.mean([auc(x[i], y[i]) - auc(z[i], y[i]) for x, z, y in zip(sa, sb, ys)]))
    diffs = np.array(diffs)
    p = min(1.0, 2 * min((diffs <= 0).mean(), (diffs >= 0).mean()) + 1 / draws)
    return float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5)), p


def main(
    captions: Path = paths.CAPTIONS,
    movies: Path = ROOT / "movies.csv",
    shuffles: int = 200,
    folds: int = 5,
    min_items: int = 30,
    seed: int = 0,
) -> None:
    caps = pl.read_parquet(captions).filter(pl.col("caption").is_not_null())
    items = pl.read_parquet(paths.ITEMS).select("item_id", "image_path")
    meta = pl.read_csv(movies).select(pl.col("movieId").cast(str).alias("item_id"), "genres")
    df = caps.join(meta, on="item_id").join(items, on="item_id").sort("item_id")
    rng = np.random.default_rng(seed)
    fold = rng.permutation(np.arange(df.height) % folds)
    genre_lists = [g.split("|") for g in df["genres"]]
    genres = {
        g: np.array([g in gl for gl in genre_lists], dtype=int) for g in sorted({g for gl in genre_lists for g in gl})
    }
    genres = {g: y for g, y in genres.items() if min_items <= y.sum() <= df.height - min_items}

    docs = [words(c) for c in df["caption"]]
    pixel_docs = [words(describe(ROOT / p)) for p in df["image_path"]]
    content_docs = [words(re.sub(r"(^|; )mostly [^;]*$", "", c)) for c in df["caption"]]  # colour clause removed
    real, pixel = mean_auc(docs, genres, fold), mean_auc(pixel_docs, genres, fold)
    content = mean_auc(content_docs, genres, fold)

    def shuffled(d: list[list[str]]) -> np.ndarray:  # the poster-caption link broken, `shuffles` draws
        return np.array([mean_auc([d[i] for i in rng.permutation(len(d))], genres, fold) for _ in range(shuffles)])

    control, content_control = shuffled(docs), shuffled(content_docs)
    p = (1 + (control >= real).sum()) / (1 + shuffles)
    p_content = (1 + (content_control >= content).sum()) / (1 + shuffles)
    lo, hi, p_pixel = paired_bootstrap(docs, pixel_docs, genres, fold, 1000, rng)

    text = df["caption"]
    has_text, has_faces = text.str.contains('text "').mean(), text.str.contains(" faces?;").mean()
    has_label = ~text.str.contains(r"^(a tiny|\w+ faces?;|text \"|mostly )")  # the caption starts with a label
    print(
        f"{df.height} items with a caption and genres; {len(genres)} genres with >= {min_items} items "
        f"({', '.join(genres)}); model {caps['model'][0]}\n"
    )
    print(
        f"- items with a confident ImageNet label: {has_label.mean():.0%}; with printed text (after the title "
        f"scrub): {has_text:.0%}; with faces: {has_faces:.0%}"
    )
    print("\n| captions | mean genre AUC (5-fold NB) |\n|---|---|")
    print(f"| this run's captions | {real:.3f} |\n| the same without their colour clause | {content:.3f} |")
    print(f"| pixel describer (colours only), same posters | {pixel:.3f} |")
    for name, c in (("captions", control), ("captions without colour clause", content_control)):
        print(
            f"| {name}, shuffled across items ({shuffles} draws) | {c.mean():.3f} ± {c.std():.3f} (max {c.max():.3f}) |"
        )
    print(f"\np (shuffled >= real) = {p:.3f}; without the colour clause {p_content:.3f}")
    print(
        f"this run's captions - pixel describer: {real - pixel:+.3f} "
        f"[{lo:+.3f}, {hi:+.3f}] (paired bootstrap over items, 1000 draws), p = {p_pixel:.3f}"
    )


if __name__ == "__main__":
    typer.run(main)
