"""Small real-format dataset folders for the ingest tests, built from real rows and posters of the bundled sample.

    root = write_movielens_csv(tmp_path / "ml", USERS)     # ratings.csv + movies.csv + posters/
    root = write_movielens_dat(tmp_path / "ml1m", USERS)   # ratings.dat + latin-1 movies.dat + images/
    root = write_mllmrec_tsv(tmp_path / "tsv", USERS)      # train.tsv + test.tsv + movies_titles.csv + images/
    root = write_microlens(tmp_path / "ml", USERS)         # pairs.csv + titles.csv + covers/

Every builder takes `extra_*` lines appended verbatim to the files, so a test can add exactly the bad input it checks
and names its line number with `line_of`.
"""

import csv
import shutil
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample" / "ml-latest-small-posters"
POSTERS = SAMPLE / "posters"
USERS = ("14", "26", "30")  # three real users of the sample: 35, 21 and 26 ratings of movies with posters


@cache
def ratings() -> dict[str, list[tuple[str, str, str, str]]]:
    """userId -> its real (userId, movieId, rating, timestamp) rows, in file order."""
    out: dict[str, list] = {}
    with open(SAMPLE / "ratings.csv", newline="") as f:
        for row in list(csv.reader(f))[1:]:
            out.setdefault(row[0], []).append(tuple(row))
    return out


@cache
def movies() -> dict[str, tuple[str, str]]:
    """movieId -> (title, genres), real rows (utf-8, some titles with accents and quoted commas)."""
    with open(SAMPLE / "movies.csv", newline="", encoding="utf-8") as f:
        return {r[0]: (r[1], r[2]) for r in list(csv.reader(f))[1:]}


def rows_of(users: tuple[str, ...]) -> list[tuple[str, str, str, str]]:
    return [r for u in users for r in ratings()[u]]


def items_of(users: tuple[str, ...]) -> list[str]:
    """The movies these users rated, plus two real titles with non-ASCII characters (Léon, La Vita è bella)."""
    seen = dict.fromkeys(r[1] for r in rows_of(users))
    seen.update(dict.fromkeys(["293", "2324"]))
    return list(seen)


def copy_images(root: Path, folder: str, items: list[str]) -> None:
    (root / folder).mkdir(parents=True, exist_ok=True)
    for item in items:
        shutil.copyfile(POSTERS / f"{item}.jpg", root / folder / f"{item}.jpg")


def line_of(path: Path, line: str, prefix: bool = False) -> int:
    """1-based number of the first line of `path` equal to `line` (or starting with it), so tests name lines."""
    want = line.encode("latin-1" if path.suffix == ".dat" else "utf-8")
    for n, got in enumerate(path.read_bytes().split(b"\n"), start=1):
        if got == want or (prefix and got.startswith(want)):
            return n
    raise AssertionError(f"{line!r} not in {path}")


def write_text(path: Path, lines: list[str], encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes("".join(line + "\n" for line in lines).encode(encoding))
    return path


def csv_line(fields: list[str]) -> str:
    """One csv line, quoting as the GroupLens files do (only fields that need it)."""
    return ",".join(f'"{f}"' if ("," in f or '"' in f) else f for f in fields)


def write_movielens_csv(
    root: Path,
    users: tuple[str, ...] = USERS,
    extra_ratings: list[str] = (),
    extra_movies: list[str] = (),
    images: bool = True,
) -> Path:
    items = items_of(users)
    write_text(
        root / "ratings.csv", ["userId,movieId,rating,timestamp", *map(",".join, rows_of(users)), *extra_ratings]
    )
    write_text(
        root / "movies.csv", ["movieId,title,genres", *(csv_line([i, *movies()[i]]) for i in items), *extra_movies]
    )
    if images:
        copy_images(root, "posters", items)
    return root


def write_movielens_dat(
    root: Path, users: tuple[str, ...] = USERS, extra_ratings: list[str] = (), encoding: str = "latin-1"
) -> Path:
    """ml-1m form: `::`-separated, no header, movies.dat in latin-1 (as GroupLens ships ml-1m)."""
    items = items_of(users)
    write_text(root / "ratings.dat", [*("::".join(r) for r in rows_of(users)), *extra_ratings])
    write_text(root / "movies.dat", [f"{i}::{movies()[i][0]}::{movies()[i][1]}" for i in items], encoding)
    copy_images(root, "images", items)
    return root


def write_mllmrec_tsv(
    root: Path,
    users: tuple[str, ...] = USERS,
    name: str = "movies",
    extra_train: list[str] = (),
    extra_titles: list[str] = (),
) -> Path:
    """The authors' layout: train.tsv = all but the last item per user, test.tsv = the last (time order)."""
    items = items_of(users)
    train, test = [], []
    for u in users:
        seq = [r[1] for r in sorted(ratings()[u], key=lambda r: int(r[3]))]
        train.append(f"{u}\t{' '.join(seq[:-1])}")
        test.append(f"{u}\t{seq[-1]}")
    write_text(root / "train.tsv", [*train, *extra_train])
    write_text(root / "test.tsv", test)
    write_text(
        root / f"{name}_titles.csv", ["item,title", *(csv_line([i, movies()[i][0]]) for i in items), *extra_titles]
    )
    copy_images(root, "images", items)
    return root


def write_microlens(root: Path, users: tuple[str, ...] = USERS, extra_pairs: list[str] = ()) -> Path:
    """MicroLens style: `user,item,timestamp` pairs (not sorted by time) + `item,title` + covers/<item>.jpg."""
    items = items_of(users)
    write_text(
        root / "MicroLens-sample_pairs.csv",
        ["user,item,timestamp", *(f"{r[0]},{r[1]},{r[3]}" for r in rows_of(users)), *extra_pairs],
    )
    write_text(root / "MicroLens-sample_titles.csv", ["item,title", *(csv_line([i, movies()[i][0]]) for i in items)])
    copy_images(root, "covers", items)
    return root
