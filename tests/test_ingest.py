"""Ingest on small real-format fixtures (real rows and posters of the bundled sample, see tests/ingest_fixtures.py):
every reader, and every bad input of the issue -> a UserError naming file and line/item, or a counted skip with a
`file:line` example. Nothing is dropped silently: each test asserts the exact counts."""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml
from ingest_fixtures import (
    POSTERS,
    USERS,
    items_of,
    line_of,
    movies,
    ratings,
    write_microlens,
    write_mllmrec_tsv,
    write_movielens_csv,
    write_movielens_dat,
    write_text,
)
from PIL import Image

from mllmrec.config import IngestParams
from mllmrec.data.images import attach_images
from mllmrec.data.ingest import LAYOUTS, Report, ingest_report, normalize, sort_ids
from mllmrec.data.sources import read_dataset
from mllmrec.errors import UserError
from mllmrec.reports import as_dict

REPO = Path(__file__).resolve().parents[1]
N_ITEMS = len(items_of(USERS))  # 72: the users' movies + Léon + La Vita è bella
N_RATINGS = sum(len(ratings()[u]) for u in USERS)  # 82


def ingest(
    root: Path,
    fmt: str,
    encoding: str = "utf-8",
    image_dir: str | None = None,
    ties: str = "file_order",
    **more,
):
    """The library calls of stages/ingest.py, in its order: (interactions, items, the report as report.json holds
    it); `more`: other ingest params."""
    report = Report()
    params = IngestParams(format=fmt, root=str(root), encoding=encoding, **more)
    inter, titles = read_dataset(root, params, report)
    inter, items = normalize(inter, titles, report, ties)
    items, counts = attach_images(sort_ids(items, "item_id"), root, image_dir or LAYOUTS[fmt].image_dir, 2)
    return inter, items, as_dict(ingest_report(report, inter, items, counts))


def sequences(inter: pl.DataFrame) -> dict[str, list[str]]:
    return {u: g["item_id"].to_list() for (u,), g in inter.sort("user_id", "position").group_by("user_id")}


def expected_sequences() -> dict[str, list[str]]:
    """Each user's real ratings in time order; ties keep file order (a stable sort, as ingest does)."""
    return {u: [r[1] for r in sorted(ratings()[u], key=lambda r: int(r[3]))] for u in USERS}


# ---------------------------------------------------------------------------------------------------- readers
READERS = {
    "movielens_csv": (write_movielens_csv, "utf-8", "posters", N_RATINGS),
    "movielens_dat": (write_movielens_dat, "latin-1", "images", N_RATINGS),
    "mllmrec_tsv": (write_mllmrec_tsv, "utf-8", "images", 2 * len(USERS)),  # one line per user per file
    "microlens": (write_microlens, "utf-8", "covers", N_RATINGS),
}


@pytest.mark.parametrize("fmt", READERS)
def test_every_reader_gives_the_same_real_sequences_items_and_images(tmp_path, fmt):
    build, encoding, image_dir, lines = READERS[fmt]
    inter, items, report = ingest(build(tmp_path / fmt), fmt, encoding)

    assert sequences(inter) == expected_sequences()
    assert inter.columns == ["user_id", "item_id", "timestamp", "position"]
    assert inter.group_by("user_id").agg(ok=pl.col("position").sort() == pl.int_range(pl.len()))["ok"].explode().all()
    assert report["read"] == {"interaction_lines": lines, "title_lines": N_ITEMS}
    assert report["skipped"] == {} and report["examples"] == {}
    assert report["notes"] == {"items_without_interactions": 2, "titles_normalized": 0}  # Léon, La Vita è bella
    assert report["images"] == {"ok": N_ITEMS}
    assert report["interactions"] == {"kept": N_RATINGS, "users": len(USERS)}

    assert items.height == N_ITEMS and items["image_ok"].all() and items["image_error"].null_count() == N_ITEMS
    leon = items.row(by_predicate=pl.col("item_id") == "293", named=True)
    assert leon["title"] == movies()["293"][0] == "Léon: The Professional (a.k.a. The Professional) (Léon) (1994)"
    assert leon["image_path"] == f"{image_dir}/293.jpg" and leon["image_format"] == "JPEG"
    assert leon["image_sha256"] == hashlib.sha256((POSTERS / "293.jpg").read_bytes()).hexdigest()
    # numeric ids sort numerically
    assert items["item_id"].to_list() == sorted(items["item_id"].to_list(), key=int)


def test_mllmrec_tsv_test_item_comes_last_and_titles_file_is_found_by_pattern(tmp_path):
    root = write_mllmrec_tsv(tmp_path / "d", name="ml-1m")
    inter, _, _ = ingest(root, "mllmrec_tsv")
    for u in USERS:
        test_item = (root / "test.tsv").read_text().splitlines()[USERS.index(u)].split("\t")[1]
        assert sequences(inter)[u][-1] == test_item
    (root / "other_titles.csv").write_text("item,title\n1,x\n")
    with pytest.raises(UserError, match=r"several titles files match '\*_titles.csv'.*ml-1m_titles.csv"):
        ingest(root, "mllmrec_tsv")


def test_mllmrec_tsv_user_on_two_lines_continues_in_file_order(tmp_path):
    # positions restart per line would interleave the two lines (592, 1, 150, 2, ...)
    root = write_mllmrec_tsv(
        tmp_path / "d", extra_train=["14\t1 2"], extra_titles=["1,Toy Story (1995)", "2,Jumanji (1995)"]
    )
    inter, _, _ = ingest(root, "mllmrec_tsv")
    seq = expected_sequences()["14"]
    assert sequences(inter)["14"] == [*seq[:-1], "1", "2", seq[-1]]  # train line 1, train line 2, then test.tsv


def test_missing_interactions_file_is_named(tmp_path):
    root = write_movielens_csv(tmp_path / "d", images=False)
    (root / "ratings.csv").unlink()
    with pytest.raises(
        UserError, match=r"no interactions file matching 'ratings.csv' \(set ingest.interactions_file\)"
    ):
        ingest(root, "movielens_csv")
    with pytest.raises(UserError, match="dataset root is not a folder"):
        ingest(tmp_path / "nope", "movielens_csv")


# ---------------------------------------------------------------------------------------------------- bad lines
def test_malformed_and_short_lines_are_counted_with_file_line(tmp_path):
    bad = ["14,1", "14,1,4.0,not-a-time", "14,1,4.0,964982703,extra", "", "14,1,4.0,9.5e8"]
    root = write_movielens_csv(tmp_path / "d", extra_ratings=bad, extra_movies=["9010,Only two fields"])
    inter, _, report = ingest(root, "movielens_csv")
    r, m = root / "ratings.csv", root / "movies.csv"
    lines = [line_of(r, b) for b in bad if b]
    assert report["skipped"] == {"malformed_line": 4, "malformed_title_line": 1}
    assert report["examples"]["malformed_line"] == [f"ratings.csv:{n}" for n in lines]
    assert report["examples"]["malformed_title_line"] == [f"movies.csv:{line_of(m, '9010,', prefix=True)}"]
    assert report["read"]["interaction_lines"] == N_RATINGS + 4  # the blank line is not a row
    assert inter.height == N_RATINGS


def test_malformed_dat_and_tsv_lines(tmp_path):
    dat = write_movielens_dat(tmp_path / "dat", extra_ratings=["14::1::4.0", "14::1::4.0::abc"])
    (dat / "movies.dat").write_bytes((dat / "movies.dat").read_bytes() + b"9011 no separator\n")
    _, _, report = ingest(dat, "movielens_dat", "latin-1")
    assert report["skipped"] == {"malformed_line": 2, "malformed_title_line": 1}
    n = line_of(dat / "ratings.dat", "14::1::4.0")
    assert report["examples"]["malformed_line"] == [f"ratings.dat:{n}", f"ratings.dat:{n + 1}"]
    assert report["examples"]["malformed_title_line"] == [f"movies.dat:{N_ITEMS + 1}"]

    tsv = write_mllmrec_tsv(tmp_path / "tsv", extra_train=["77", "78\t   ", "79\t592\t150"])
    inter, _, report = ingest(tsv, "mllmrec_tsv")
    assert report["skipped"] == {"malformed_line": 3}
    assert report["examples"]["malformed_line"] == [f"train.tsv:{n}" for n in (4, 5, 6)]
    assert set(inter["user_id"]) == set(USERS)


def test_unknown_items_in_sequences_are_counted_and_the_rest_kept(tmp_path):
    line = "77\t592 999999 150"
    root = write_mllmrec_tsv(tmp_path / "tsv", extra_train=[line])
    inter, _, report = ingest(root, "mllmrec_tsv")
    assert report["skipped"] == {"unknown_item": 1}
    assert report["examples"]["unknown_item"] == [f"train.tsv:{line_of(root / 'train.tsv', line)}"]
    assert sequences(inter)["77"] == ["592", "150"]

    csv_root = write_movielens_csv(tmp_path / "csv", extra_ratings=["14,999999,4.0,964982703"], images=False)
    _, _, report = ingest(csv_root, "movielens_csv")
    assert report["skipped"] == {"unknown_item": 1}
    assert report["examples"]["unknown_item"] == [f"ratings.csv:{N_RATINGS + 2}"]


def test_duplicate_interactions_keep_the_earliest(tmp_path):
    first_150 = next(r for r in ratings()["14"] if r[1] == "150")
    extra = ["14,592,1.0,1600000000", "14,150,2.0,800000000"]  # 592 again later; 150 again, earlier than the file's
    root = write_movielens_csv(tmp_path / "d", extra_ratings=extra, images=False)
    inter, _, report = ingest(root, "movielens_csv")
    assert report["skipped"] == {"duplicate_interaction": 2}
    r = root / "ratings.csv"
    assert sorted(report["examples"]["duplicate_interaction"]) == sorted(
        [f"ratings.csv:{line_of(r, extra[0])}", f"ratings.csv:{line_of(r, ','.join(first_150))}"]
    )
    u14 = inter.filter(pl.col("user_id") == "14")
    assert u14.filter(pl.col("item_id") == "150")["timestamp"].to_list() == [800000000]
    assert u14["item_id"][0] == "150"  # now the earliest
    assert u14.filter(pl.col("item_id") == "592")["timestamp"].to_list() == [835440976]
    assert inter.height == N_RATINGS

    tsv = write_mllmrec_tsv(tmp_path / "tsv", extra_train=["77\t592 150 592"])
    inter, _, report = ingest(tsv, "mllmrec_tsv")
    assert report["skipped"] == {"duplicate_interaction": 1}
    assert sequences(inter)["77"] == ["592", "150"]


def test_ids_with_path_characters_are_rejected_and_counted(tmp_path):
    root = write_movielens_csv(
        tmp_path / "d",
        images=False,
        extra_movies=["../x,Evil (2000),Drama", ".hidden,H,Drama"],
        extra_ratings=["14,../x,4.0,964982703", "../u,592,4.0,964982703", "a b,592,4.0,1"],
    )
    (root / "x.jpg").write_bytes((POSTERS / "1.jpg").read_bytes())  # what `posters/../x.jpg` would reach
    inter, items, report = ingest(root, "movielens_csv")
    r, m = root / "ratings.csv", root / "movies.csv"
    assert report["skipped"] == {"invalid_id": 3, "invalid_item_id_in_titles": 2}
    assert report["examples"]["invalid_id"] == [f"ratings.csv:{n}" for n in range(N_RATINGS + 2, N_RATINGS + 5)]
    assert report["examples"]["invalid_item_id_in_titles"] == [
        f"movies.csv:{line_of(m, '../x,', prefix=True)}",
        f"movies.csv:{line_of(m, '.hidden,', prefix=True)}",
    ]
    assert not items["item_id"].str.contains(r"[./ ]").any() and inter.height == N_RATINGS
    assert line_of(r, "../u,592,4.0,964982703") == N_RATINGS + 3

    tsv = write_mllmrec_tsv(tmp_path / "tsv", extra_train=["../../etc\t592 150"])
    _, _, report = ingest(tsv, "mllmrec_tsv")
    assert report["skipped"] == {"invalid_id": 2}
    assert report["examples"]["invalid_id"] == ["train.tsv:4", "train.tsv:4"]  # one per item of the line


# ---------------------------------------------------------------------------------------------------- titles
def test_non_utf8_titles_name_the_line_and_work_with_their_encoding(tmp_path):
    root = write_movielens_dat(tmp_path / "dat")  # latin-1, as GroupLens ships ml-1m
    lines = (root / "movies.dat").read_bytes().split(b"\n")
    n, byte = next((n, re.search(rb"[\x80-\xff]", line)[0]) for n, line in enumerate(lines, 1) if not line.isascii())
    assert lines[n - 1].startswith(b"60069::WALL") and byte == b"\xb7"  # WALL·E, before Léon
    with pytest.raises(UserError, match=rf"movies\.dat:{n}: bytes b'\\xb7' are not valid utf-8; set ingest.encoding"):
        ingest(root, "movielens_dat", "utf-8")
    _, items, _ = ingest(root, "movielens_dat", "latin-1")
    assert items.row(by_predicate=pl.col("item_id") == "2324", named=True)["title"] == movies()["2324"][0]

    csv_root = write_movielens_csv(tmp_path / "csv", images=False)
    (csv_root / "movies.csv").write_bytes((csv_root / "movies.csv").read_text().encode("latin-1"))
    n = line_of(csv_root / "movies.csv", "60069,WALL", prefix=True)
    with pytest.raises(UserError, match=rf"movies\.csv:{n}: bytes b'\\xb7' are not valid utf-8"):
        ingest(csv_root, "movielens_csv")
    _, items, _ = ingest(csv_root, "movielens_csv", "latin-1")
    assert items.row(by_predicate=pl.col("item_id") == "293", named=True)["title"] == movies()["293"][0]


def test_odd_unicode_titles_are_normalized_and_counted(tmp_path):
    odd = {
        "9001": ("Le\u0301on (1994)", "L\u00e9on (1994)"),  # NFD -> NFC
        "9002": ("Toy\u200b Story\u200d (1995)\u2060", "Toy Story (1995)"),  # zero-width characters dropped
        "9003": ("千と千尋の神隠し (2001)", "千と千尋の神隠し (2001)"),  # CJK kept as is
        "9004": ("Tabs\tand  spaces\x07 (1999) ", "Tabs and spaces (1999)"),  # whitespace collapsed, BEL dropped
        "9005": ("שלום (2004)", "שלום (2004)"),  # right-to-left script kept
    }
    extra = [f'{i},"{raw}",Drama' for i, (raw, _) in odd.items()] + ["9006,\u200b\u200b,Drama"]
    root = write_movielens_csv(tmp_path / "d", images=False, extra_movies=extra)
    _, items, report = ingest(root, "movielens_csv")
    got = dict(zip(items["item_id"], items["title"]))
    assert {i: got[i] for i in odd} == {i: clean for i, (_, clean) in odd.items()}
    assert all(got[i] == movies()[i][0] for i in items_of(USERS))  # real titles untouched
    assert report["notes"]["titles_normalized"] == 4  # 9001, 9002, 9004 and the blanked 9006
    assert report["skipped"] == {"empty_title": 1}
    assert report["examples"]["empty_title"] == [f"movies.csv:{line_of(root / 'movies.csv', '9006,', prefix=True)}"]
    assert "9006" not in got


# ---------------------------------------------------------------------------------------------------- empty / columns
@pytest.mark.parametrize(
    ("fmt", "file", "content", "message"),
    [
        ("movielens_csv", "ratings.csv", "", r"ratings\.csv: file is empty"),
        ("movielens_csv", "ratings.csv", "\n  \n\n", r"ratings\.csv: file is empty"),
        (
            "movielens_csv",
            "ratings.csv",
            "userId,movieId,rating,timestamp\n",
            r"ratings\.csv: no data lines after the header",
        ),
        ("movielens_csv", "movies.csv", "", r"movies\.csv: file is empty"),
        ("movielens_csv", "movies.csv", "movieId,title,genres\n", r"movies\.csv: no title rows"),
        (
            "movielens_csv",
            "movies.csv",
            "movieId,title,genres\n1,x\n",
            r"movies\.csv: no title rows \(1 malformed, e.g. movies\.csv:2\)",
        ),
        ("movielens_dat", "ratings.dat", " \n", r"ratings\.dat: no data lines \(file is blank\)"),
        ("mllmrec_tsv", "test.tsv", "", r"test\.tsv: file is empty"),
        ("mllmrec_tsv", "train.tsv", "\n\n", r"train\.tsv: no data lines \(file is blank\)"),
    ],
)
def test_empty_files_are_a_clear_error(tmp_path, fmt, file, content, message):
    root = READERS[fmt][0](tmp_path / "d")
    (root / file).write_text(content)
    with pytest.raises(UserError, match=message):
        ingest(root, fmt, READERS[fmt][1])


def test_a_directory_where_a_file_belongs_is_a_clear_error(tmp_path):
    root = write_movielens_csv(tmp_path / "d", images=False)
    (root / "movies.csv").unlink()
    (root / "movies.csv").mkdir()  # e.g. an unzipped archive folder named like the file
    with pytest.raises(UserError, match=r"movies\.csv: is a directory, expected the titles file"):
        ingest(root, "movielens_csv")


def test_nothing_left_after_ingest_is_a_clear_error(tmp_path):
    root = write_movielens_csv(tmp_path / "d", images=False)
    write_text(root / "movies.csv", ["movieId,title,genres", "1,Toy Story (1995),Animation"])  # none of theirs
    with pytest.raises(
        UserError,
        match=rf"no interactions left after ingest: skipped \{{'unknown_item': {N_RATINGS}\}}"
        r".*ratings\.csv:2",
    ):
        ingest(root, "movielens_csv")


def test_only_malformed_lines_is_a_clear_error(tmp_path):
    root = write_movielens_csv(tmp_path / "d", images=False)
    write_text(root / "ratings.csv", ["userId,movieId,rating,timestamp", "14,592", "15,150,4.0,soon"])
    with pytest.raises(
        UserError,
        match=r"ratings\.csv: no line could be read; the first, line 2: expected 4 fields "
        r"separated by ','",
    ):
        ingest(root, "movielens_csv")
    write_text(root / "ratings.csv", ["userId,movieId,rating,timestamp", "15,150,4.0,soon", "14,592,4.0,later"])
    with pytest.raises(UserError, match=r"line 2: timestamp 'soon' is not 'integer' \(column 'timestamp'"):
        ingest(root, "movielens_csv")
    write_text(root / "ratings.csv", ["userId,movieId,rating,timestamp", "15,150,nan,5", "14,592,inf,6"])
    with pytest.raises(UserError, match=r"line 2: rating 'nan' is not a finite number \(column 'rating'\)"):
        read_dataset(root, IngestParams(format="movielens_csv", root=str(root), min_rating=1.0), Report())


@pytest.mark.parametrize(
    ("fmt", "file", "header", "message"),
    [
        (
            "movielens_csv",
            "ratings.csv",
            "userId,movieId,rating",
            r"ratings\.csv:1: missing column\(s\) \['timestamp'\]; header is \['userId', 'movieId', 'rating'\]",
        ),
        (
            "movielens_csv",
            "ratings.csv",
            "user,movie,rating,timestamp",
            r"ratings\.csv:1: missing column\(s\) \['userId', 'movieId'\]",
        ),
        ("movielens_csv", "movies.csv", "movieId,name,genres", r"movies\.csv:1: expected an id column .* and 'title'"),
        ("microlens", "MicroLens-sample_pairs.csv", "user,item", r"_pairs\.csv:1: missing column\(s\) \['timestamp'\]"),
        ("mllmrec_tsv", "movies_titles.csv", "id,name", r"movies_titles\.csv:1: expected an id column"),
    ],
)
def test_missing_columns_name_the_file_and_header(tmp_path, fmt, file, header, message):
    root = READERS[fmt][0](tmp_path / "d")
    lines = (root / file).read_text().splitlines()
    write_text(root / file, [header, *lines[1:]])
    with pytest.raises(UserError, match=message):
        ingest(root, fmt)


# ---------------------------------------------------------------------------------------------------- images
def test_image_problems_are_recorded_per_item_and_counted(tmp_path):
    root = write_movielens_csv(tmp_path / "d")
    posters = root / "posters"
    a, b, c, d, e, f, g, h = items_of(USERS)[:8]
    (posters / f"{a}.jpg").unlink()  # missing
    (posters / f"{b}.jpg").write_bytes((POSTERS / f"{b}.jpg").read_bytes()[:3000])  # truncated JPEG
    (posters / f"{c}.jpg").write_bytes(b"this is not an image\n")  # garbage
    (posters / f"{d}.jpg").write_bytes(b"")  # zero bytes
    with Image.open(POSTERS / f"{e}.jpg") as im:  # a PNG behind a .jpg name
        im.save(posters / f"{e}.jpg", format="PNG")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copyfile(POSTERS / f"{f}.jpg", outside / f"{f}.jpg")
    (posters / f"{f}.jpg").unlink()
    os.symlink(outside / f"{f}.jpg", posters / f"{f}.jpg")  # symlink leaving the dataset root
    (root / "shared").mkdir()
    shutil.move(posters / f"{g}.jpg", root / "shared" / f"{g}.jpg")
    os.symlink(Path("..") / "shared" / f"{g}.jpg", posters / f"{g}.jpg")  # symlink inside the root: fine
    shutil.copyfile(POSTERS / f"{h}.jpg", posters / f"{h}.png")  # two files for one item: the first name wins

    _, items, report = ingest(root, "movielens_csv")
    rec = {r["item_id"]: r for r in items.iter_rows(named=True)}
    assert report["images"] == {
        "ok": N_ITEMS - 6,
        "missing": 1,
        "corrupt": 3,
        "extension_mismatch": 1,
        "outside_root": 1,
        "several_files_first_used": 1,
    }
    assert report["items"] == {"kept": N_ITEMS, "with_image": N_ITEMS - 5}  # the mislabelled PNG is usable
    assert (rec[a]["image_ok"], rec[a]["image_error"], rec[a]["image_path"]) == (False, "missing", None)
    for item in (b, c, d):
        assert not rec[item]["image_ok"] and rec[item]["image_error"].startswith("corrupt: ")
        assert rec[item]["image_sha256"] == hashlib.sha256((posters / f"{item}.jpg").read_bytes()).hexdigest()
    assert "truncated" in rec[b]["image_error"]
    assert (rec[e]["image_ok"], rec[e]["image_format"], rec[e]["image_path"]) == (True, "PNG", f"posters/{e}.jpg")
    assert (rec[f]["image_ok"], rec[f]["image_error"], rec[f]["image_sha256"]) == (False, "outside_root", None)
    assert (rec[g]["image_ok"], rec[g]["image_path"]) == (True, f"posters/{g}.jpg")
    assert rec[h]["image_path"] == f"posters/{h}.jpg" and rec[h]["image_ok"]


# ---------------------------------------------------------------------------------------------------- the stages
def run_stage(stage: str, cwd: Path, params: dict) -> subprocess.CompletedProcess:
    """`python stages/<stage>.py` as dvc runs it: from a project folder holding params.yaml."""
    (cwd / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
    return subprocess.run(
        [sys.executable, str(REPO / "stages" / f"{stage}.py")],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_stages_run_for_real_and_count_every_drop(tmp_path):
    """ingest (require_image) then split as child processes: the reports add up, short users are counted."""
    short = [f"9999,{i},4.0,{1000 + n}" for n, i in enumerate(items_of(USERS)[1:4])]  # 3 ratings < min_inter
    root = write_movielens_csv(tmp_path / "dataset", extra_ratings=["14,1", "14,999999,4.0,1", *short])
    lost = items_of(USERS)[0]
    (root / "posters" / f"{lost}.jpg").write_bytes(b"broken")
    proj = tmp_path / "proj"
    proj.mkdir()
    ingest_params = {"format": "movielens_csv", "root": str(root), "require_image": True, "image_workers": 2}
    split_params = {"min_inter": 10, "num_negatives": [9], "seed": 0}
    done = run_stage("ingest", proj, {"ingest": ingest_params, "split": split_params})
    assert done.returncode == 0, done.stderr

    report = json.loads((proj / "data/ingest/report.json").read_text())
    n_lost = sum(r[1] == lost for u in USERS for r in ratings()[u])
    assert report["skipped"] == {
        "malformed_line": 1,
        "unknown_item": 1,
        "item_without_usable_image": 1,
        "interaction_with_item_without_image": n_lost,
    }
    assert report["examples"]["item_without_usable_image"] == [lost]
    assert report["images"] == {"ok": N_ITEMS - 1, "corrupt": 1}
    kept = N_RATINGS + 3 - n_lost
    assert report["interactions"] == {"kept": kept, "users": len(USERS) + 1}
    assert report["read"]["interaction_lines"] == N_RATINGS + 5
    inter = pl.read_parquet(proj / "data/ingest/interactions.parquet")
    items = pl.read_parquet(proj / "data/ingest/items.parquet")
    assert inter.height == kept and lost not in set(inter["item_id"]) and items["image_ok"].all()
    positions = inter.group_by("user_id").agg(ok=pl.col("position").sort() == pl.int_range(pl.len()))
    assert positions["ok"].explode().all()  # contiguous after the drop
    assert f"{kept} interactions" in done.stdout

    done = run_stage("split", proj, {"ingest": ingest_params, "split": split_params})
    assert done.returncode == 0, done.stderr
    split = json.loads((proj / "data/split/report.json").read_text())
    assert split["users"] == {"kept": len(USERS), "below_min_inter": 1}
    assert split["interactions_of_users_below_min_inter"] == 3
    cands = pl.read_parquet(proj / "data/split/candidates_n9.parquet")
    assert set(cands["user_id"]) == set(USERS) and cands.height == 3 * len(USERS)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"formt": "x"}, r"params\.yaml: ingest\.formt: Extra inputs are not permitted"),
        ({"image_workers": "many"}, r"params\.yaml: ingest\.image_workers: .* \(got 'many'\)"),
        ({"format": "netflix"}, r"params\.yaml: ingest\.format: Input should be 'movielens_csv'"),
        ({"root": "/no/such/folder"}, r"/no/such/folder: dataset root is not a folder \(params ingest\.root\)"),
        ({"titles_file": "ratings.csv"}, r"ratings\.csv:1: expected an id column"),
    ],
)
def test_stage_on_bad_params_exits_2_with_one_clear_line(tmp_path, change, message):
    root = write_movielens_csv(tmp_path / "dataset", images=False)
    done = run_stage("ingest", tmp_path, {"ingest": {"format": "movielens_csv", "root": str(root), **change}})
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("error: ")
    assert re.search(message, done.stderr), done.stderr
    assert not (tmp_path / "data").exists()  # failed before writing anything


# ------------------------------------------------------------------------------------------- csv edge cases (titles)
def test_unclosed_quote_in_a_title_is_an_error_not_swallowed_rows(tmp_path):
    root = write_movielens_csv(tmp_path / "d", images=False, extra_movies=['9001,"Broken (1999),Drama'])
    bad_line = line_of(root / "movies.csv", "9001,", prefix=True)
    # the quote runs to the end of the file: every real row after it would silently become part of one title
    with pytest.raises(UserError, match=rf"movies\.csv:{bad_line}: not valid CSV: unexpected end of data"):
        ingest(root, "movielens_csv")
    rows = (root / "movies.csv").read_text().splitlines()
    rows.insert(2, '9002,"Open (2000),Drama')  # closed again by a later quote: rows swallowed in between
    (root / "movies.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(UserError, match=r"movies\.csv:3 \(the row read on to line \d+\): not valid CSV"):
        ingest(root, "movielens_csv")


def test_field_over_the_csv_size_limit_is_a_clear_error(tmp_path):
    root = write_movielens_csv(tmp_path / "d", images=False, extra_movies=[f'9001,"{"x" * 200_000}",Drama'])
    with pytest.raises(UserError, match=r"movies\.csv:\d+: not valid CSV: field larger than field limit"):
        ingest(root, "movielens_csv")


def test_quoted_multiline_title_keeps_a_space_for_the_line_break(tmp_path):
    root = write_movielens_csv(tmp_path / "d", images=False, extra_movies=['9001,"Two\nLines, The (1999)",Drama'])
    _, items, _ = ingest(root, "movielens_csv")
    assert dict(zip(items["item_id"], items["title"])).get("9001") in (None, "Two Lines, The (1999)")  # unrated
    from mllmrec.data.ingest import clean_title

    assert clean_title("Two\r\nLines (1999)") == "Two Lines (1999)"


def test_cr_only_line_endings_and_a_wrong_encoding_give_a_short_error(tmp_path):
    root = write_movielens_csv(tmp_path / "d", images=False)
    for name in ("ratings.csv", "movies.csv"):  # movies.csv is read first: its error shows once both are converted
        (root / name).write_bytes((root / name).read_bytes().replace(b"\n", b"\r"))
        with pytest.raises(UserError, match=rf"{name.replace('.', '[.]')}: lines end in CR only") as e:
            ingest(root, "movielens_csv")
        assert len(str(e.value)) < 300
    root = write_movielens_csv(tmp_path / "e", images=False)
    with pytest.raises(UserError, match=r"movies\.csv:1: expected an id column") as e:
        ingest(root, "movielens_csv", encoding="utf-16")  # decodes, into one long line of nonsense
    assert len(str(e.value)) < 600 and "characters)" in str(e.value)  # was the whole file (2.5 kB here)


# ------------------------------------------------------------------------------------------------------ .dat lines
def test_dat_line_with_extra_fields_is_skipped_and_counted(tmp_path):
    root = write_movielens_dat(tmp_path / "d", extra_ratings=["14::1::4.0::964982703::extra"])
    bad_line = line_of(root / "ratings.dat", "14::1::4.0::964982703::extra")
    _, _, report = ingest(root, "movielens_dat", encoding="latin-1")
    assert report["skipped"]["malformed_line"] == 1
    assert f"ratings.dat:{bad_line}" in report["examples"]["malformed_line"]


def test_dat_title_containing_the_separator_is_kept_whole(tmp_path):
    root = write_movielens_dat(tmp_path / "d")
    item = min(items_of(USERS))
    lines = (root / "movies.dat").read_text(encoding="latin-1").splitlines()
    lines = [f"{item}::Face::Off (1997)::Action" if line.startswith(f"{item}::") else line for line in lines]
    (root / "movies.dat").write_text("\n".join(lines) + "\n", encoding="latin-1")
    _, items, report = ingest(root, "movielens_dat", encoding="latin-1")
    assert dict(zip(items["item_id"], items["title"]))[item] == "Face::Off (1997)"
    assert report["notes"]["title_with_separator"] == 1


@pytest.mark.parametrize("fmt", ["movielens_csv", "movielens_dat"])
def test_genres_are_kept_as_lists_only_when_asked(tmp_path, fmt):
    build, encoding, _, _ = READERS[fmt]
    root = build(tmp_path / fmt)
    name = LAYOUTS[fmt].titles
    lines = (root / name).read_text(encoding=encoding).splitlines()
    first = items_of(USERS)[0]  # MovieLens' marker for a movie without genres: an empty list
    lines = [
        re.sub(r"[^,:]+$", "(no genres listed)", x) if x.startswith((f"{first},", f"{first}::")) else x for x in lines
    ]
    second = items_of(USERS)[1]
    if fmt == "movielens_dat":  # an ml-1m line without its genres field: no genres, counted like the marker
        lines = [x.rsplit("::", 1)[0] if x.startswith(f"{second}::") else x for x in lines]
    (root / name).write_text("\n".join(lines) + "\n", encoding=encoding)
    _, plain, _ = ingest(root, fmt, encoding)
    assert "genres" not in plain.columns  # off (the default): items.parquet as before
    _, items, report = ingest(root, fmt, encoding, genres=True)
    genres = dict(zip(items["item_id"], items["genres"].to_list()))
    without = [first, second] if fmt == "movielens_dat" else [first]
    assert all(genres[i] == [] for i in without) and report["notes"]["item_without_genres"] == len(without)
    assert all(genres[i] == movies()[i][1].split("|") for i in items_of(USERS) if i not in without)
    assert genres["293"] == ["Action", "Crime", "Drama", "Thriller"]  # Léon, a real row of the sample
    assert items.drop("genres").equals(plain) and report["skipped"] == {}


def test_genres_asked_where_the_data_has_none_is_one_clear_line(tmp_path):
    root = write_movielens_csv(tmp_path / "csv", images=False)
    (root / "movies.csv").write_text((root / "movies.csv").read_text().replace("title,genres", "title,tags", 1))
    with pytest.raises(UserError, match=r"movies.csv:1: ingest.genres is true but the header has no 'genres' column"):
        ingest(root, "movielens_csv", genres=True)
    with pytest.raises(ValueError, match="genres: format mllmrec_tsv has no genres field"):
        IngestParams(format="mllmrec_tsv", root="x", genres=True)
    csv = {"format": "csv", "root": "x", "interactions_file": "i.csv", "titles_file": "t.csv"}
    csv["interactions"] = {"columns": {"user": "u", "item": "i", "timestamp": "t"}}
    with pytest.raises(ValueError, match="genres: true needs titles.columns.genres"):
        IngestParams(**csv, titles={"columns": {"item": "i", "title": "t"}}, genres=True)
    with pytest.raises(ValueError, match="titles.columns.genres is read only with genres: true"):
        IngestParams(**csv, titles={"columns": {"item": "i", "title": "t", "genres": "g"}})


def test_a_mapped_genres_column_of_format_csv(tmp_path):
    write_movielens_csv(tmp_path, images=False)  # its ratings.csv and movies.csv, read as format csv
    _, items, _ = ingest(
        tmp_path,
        "csv",
        interactions_file="ratings.csv",
        titles_file="movies.csv",
        interactions={"columns": {"user": "userId", "item": "movieId", "timestamp": "timestamp"}},
        titles={"columns": {"item": "movieId", "title": "title", "genres": "genres"}},
        genres=True,
    )
    assert dict(zip(items["item_id"], items["genres"].to_list()))["2324"] == ["Comedy", "Drama", "Romance", "War"]


@pytest.mark.parametrize(
    "image_dir, require_image, remove_images, expected",
    [
        ("imgs", False, False, "ingest.image_dir: .*imgs does not exist: 0 of \\d+ items have an image"),
        (None, True, True, "ingest.image_dir: .*images does not exist"),
        (None, False, True, None),  # no images asked for, none there: text only, said on stdout
    ],
)
def test_a_misspelt_image_folder_stops_ingest_when_images_were_expected(
    tmp_path, image_dir, require_image, remove_images, expected
):
    root = write_mllmrec_tsv(tmp_path / "d")
    if remove_images:
        shutil.rmtree(root / "images")
    ingest = {"format": "mllmrec_tsv", "root": str(root), "image_dir": image_dir, "require_image": require_image}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"ingest": ingest}))
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve().parents[1] / "stages/ingest.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    if expected is None:
        assert proc.returncode == 0 and "no images" in proc.stdout and "text only" in proc.stdout
        return
    assert proc.returncode == 2 and re.search(expected, proc.stderr), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "data").exists()


def test_same_second_ratings_keep_file_order_or_follow_item_ids(tmp_path):
    """Most MovieLens ratings share a second with another of the same user: the tie rule decides test targets."""
    root = tmp_path / "ml"
    root.mkdir()
    (root / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,100,4,50\n1,10,4,50\n1,9,4,50\n1,5,3,40\n1,a7,3,50\n"
    )
    (root / "movies.csv").write_text(
        "movieId,title,genres\n5,E (1990),x\n9,N (1991),x\n10,T (1992),x\n100,H (1993),x\na7,Z (1994),x\n"
    )
    assert sequences(ingest(root, "movielens_csv")[0])["1"] == ["5", "100", "10", "9", "a7"]
    assert sequences(ingest(root, "movielens_csv", ties="item_id")[0])["1"] == ["5", "9", "10", "100", "a7"]


def test_an_interaction_listed_again_in_a_later_file_is_a_note_not_a_loss(tmp_path):
    """The authors' test.tsv may repeat a user's history: those rows are the same interactions, not dropped data."""
    root = write_mllmrec_tsv(tmp_path / "d")
    train = (root / "train.tsv").read_text().splitlines()
    test = (root / "test.tsv").read_text().splitlines()
    (root / "test.tsv").write_text(
        "".join(
            f"{t.split(chr(9))[0]}\t{tr.split(chr(9))[1]} {t.split(chr(9))[1]}\n"
            for tr, t in zip(train, test, strict=True)
        )
    )
    inter, _, report = ingest(root, "mllmrec_tsv")
    assert "duplicate_interaction" not in report["skipped"]
    assert report["notes"]["listed_again_in_a_later_file"] == sum(len(t.split("\t")[1].split()) for t in train)
    assert inter.height == sum(len(t.split("\t")[1].split()) + 1 for t in train)


def test_hostile_lines_are_counted_never_misread(tmp_path):
    """The readers' internal separator \\x1f inside a line, nan/inf ratings, quoted fields: each line is a kept row or a
    counted malformed line."""
    root = write_movielens_csv(tmp_path / "d", images=False)
    lines = (root / "ratings.csv").read_bytes().decode().splitlines()
    header, first, rest = lines[0], lines[1], lines[2:]
    u, i, r, t = first.split(",")
    hostile = [
        f"{u},{i}\x1f,{r},{t}",
        f"{u},{i},nan,{t}",
        f"{u},{i},inf,{t}",
        f'"{u}","{i}","{r}","{t}"',
        f'{u},"{i},{r},{t}',
    ]  # the last: a quote never closed
    (root / "ratings.csv").write_bytes("\n".join([header, *hostile, *rest]).encode() + b"\n")
    report = Report()
    inter, _ = read_dataset(root, IngestParams(format="movielens_csv", root=str(root), min_rating=0.5), report)
    assert report.skipped["malformed_line"] == 4 and report.read["interaction_lines"] == len(hostile) + len(rest)
    assert inter.height == len(rest) + 1  # the quoted line, read as CSV
    assert inter.filter(pl.col("line") == 5)[["user_id", "item_id", "timestamp"]].row(0) == (u, i, int(t))


def test_the_tsv_reader_counts_a_line_with_the_internal_separator(tmp_path):
    root = write_mllmrec_tsv(tmp_path / "d")
    train = (root / "train.tsv").read_bytes()
    (root / "train.tsv").write_bytes(train + b"77\t1 2\x1f3\n")
    report = Report()
    read_dataset(root, IngestParams(format="mllmrec_tsv", root=str(root)), report)
    assert report.skipped["malformed_line"] == 1 and report.examples["malformed_line"] == [
        "train.tsv:" + str(train.count(b"\n") + 1)
    ]


LONG = "The " + "Very " * 100 + "Long Title (1999)"  # 521 characters


@pytest.mark.parametrize("fmt", ["movielens_csv", "movielens_dat", "recbole", "amazon"])
def test_an_overlong_title_is_cut_and_counted_the_same_in_every_format(tmp_path, fmt):
    """One rule for every format (MAX_TITLE_CHARS): cut at a word boundary, kept, counted under notes with file:line."""
    from mllmrec.data.ingest import MAX_TITLE_CHARS, cut_title

    root = tmp_path / fmt
    root.mkdir()
    files = {
        "movielens_csv": {
            "ratings.csv": "userId,movieId,rating,timestamp\n1,7,4,10\n",
            "movies.csv": f"movieId,title,genres\n7,{LONG},Drama\n",
        },
        "movielens_dat": {"ratings.dat": "1::7::4::10\n", "movies.dat": f"7::{LONG}::Drama\n"},
        "recbole": {
            "d.inter": "user_id:token\titem_id:token\ttimestamp:float\n1\t7\t10\n",
            "d.item": f"item_id:token\tmovie_title:token_seq\n7\t{LONG}\n",
        },
        "amazon": {
            "Beauty.jsonl": json.dumps({"user_id": "A1", "parent_asin": "B7", "timestamp": 10}) + "\n",
            "meta_Beauty.jsonl": json.dumps({"parent_asin": "B7", "title": LONG}) + "\n",
        },
    }[fmt]
    for name, text in files.items():
        (root / name).write_text(text)
    report = Report()
    _, titles = read_dataset(root, IngestParams(format=fmt, root=str(root), image_dir=None), report)
    [title] = titles["title"].to_list()
    assert title == cut_title(LONG) and len(title) <= MAX_TITLE_CHARS and title.endswith("Very …")
    assert report.notes["title_cut"] == 1 and report.skipped == {}
    titles_file, line = list(files)[1], 2 if fmt in ("movielens_csv", "recbole") else 1  # after a header or not
    assert report.examples["title_cut"] == [f"{titles_file}:{line}"]
