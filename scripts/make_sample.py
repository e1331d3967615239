"""Build the bundled demo sample from the shared MovieLens + posters folder (run once, output is committed).

    python scripts/make_sample.py ../shared/data/movielens-latest-small-posters sample/ml-latest-small-posters

Keeps the `n_items` most-rated movies that have a poster, then `n_users` users (seeded draw) with at least
`min_inter` and at most `max_inter` ratings on those movies. Files keep the GroupLens ml-latest CSV form, posters are byte-for-byte copies.
"""

import random
import shutil
from pathlib import Path

import polars as pl
import typer


def main(
    src: Path,
    dst: Path,
    n_items: int = 450,
    n_users: int = 300,
    min_inter: int = 20,
    max_inter: int = 300,
    seed: int = 0,
) -> None:
    ratings = pl.read_csv(src / "ratings.csv")
    posters = {int(p.stem) for p in (src / "posters").glob("*.jpg")}
    counts = ratings.filter(pl.col("movieId").is_in(posters)).group_by("movieId").len()
    # most-rated first, movieId breaks ties so the choice is reproducible
    items = counts.sort(["len", "movieId"], descending=[True, False]).head(n_items)["movieId"].to_list()
    kept = ratings.filter(pl.col("movieId").is_in(items))
    # max_inter leaves every user >= 99 unseen movies, so 99-negative candidate sets can be drawn
    per_user = kept.group_by("userId").len().filter(pl.col("len").is_between(min_inter, max_inter))
    users = sorted(random.Random(seed).sample(sorted(per_user["userId"].to_list()), n_users))
    kept = kept.filter(pl.col("userId").is_in(users)).sort(["userId", "timestamp", "movieId"])
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "posters").mkdir(exist_ok=True)
    kept.write_csv(dst / "ratings.csv")
    movies = pl.read_csv(src / "movies.csv").filter(pl.col("movieId").is_in(items)).sort("movieId")
    movies.write_csv(dst / "movies.csv", quote_style="necessary")
    for item in items:
        shutil.copyfile(src / "posters" / f"{item}.jpg", dst / "posters" / f"{item}.jpg")
    shutil.copyfile(src / "README.txt", dst / "README.txt")
    print(f"{kept.height} ratings, {len(users)} users, {len(items)} movies with posters -> {dst}")


if __name__ == "__main__":
    typer.run(main)
