"""Every reader, on generated hostile files: each line ends as a kept row or a counted skip, and nothing but the
project's one-line UserError is ever raised (hypothesis; fixed seed, bounded examples: a few seconds each).

Files are built from fragments a careless or hostile export holds: separators of every format, quotes, the readers'
internal \\x1f, CR/CRLF line ends, NUL and other control bytes, non-ASCII and invalid UTF-8, nan/inf, huge numbers,
blank and whitespace-only lines.
"""

import json
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from mllmrec.config import IngestParams
from mllmrec.data.ingest import Report, normalize, read_titles
from mllmrec.data.sources import read_dataset
from mllmrec.errors import UserError

FRAGMENTS = [
    "1",
    "42",
    "007",
    "-3",
    "1e3",
    "nan",
    "inf",
    "",
    " ",
    "a",
    "Ünï",
    "x y",
    '"',
    '""',
    "'",
    ",",
    "::",
    "\t",
    "\x1f",
    "\x00",
    "\x07",
    "\r",
    "9" * 30,
    "3.5",
    "964982703",
    "2024-05-01T12:00:00",
    "Toy Story (1995)",
]
SETTINGS = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def line(sep: str, width: int):
    return st.lists(
        st.lists(st.sampled_from(FRAGMENTS), min_size=0, max_size=3).map("".join), min_size=1, max_size=width + 2
    ).map(sep.join)


def body(sep: str, width: int):
    bad_bytes = st.sampled_from([b"", b"\xff\xfe", b"\xc3", b"\r\n", b"\n\n"])
    return st.tuples(st.lists(line(sep, width), min_size=1, max_size=12), bad_bytes).map(
        lambda t: ("\n".join(t[0]) + "\n").encode() + t[1]
    )


FORMATS = {  # format -> interactions file, its separator, fields, header, titles file + its text
    "movielens_csv": (
        "ratings.csv",
        ",",
        4,
        "userId,movieId,rating,timestamp\n",
        "movies.csv",
        "movieId,title,genres\n1,A (1990),x\n42,B (1991),x\n",
    ),
    "movielens_dat": ("ratings.dat", "::", 4, "", "movies.dat", "1::A (1990)::x\n42::B (1991)::x\n"),
    "mllmrec_tsv": ("train.tsv", "\t", 2, "", "d_titles.csv", "item,title\n1,A (1990)\n42,B (1991)\n"),
    "microlens": (
        "MicroLens_pairs.csv",
        ",",
        3,
        "user,item,timestamp\n",
        "MicroLens_titles.csv",
        "item,title\n1,A (1990)\n42,B (1991)\n",
    ),
}


def write(root: Path, fmt: str, data: bytes) -> None:
    inter, _, _, header, titles, text = FORMATS[fmt]
    root.mkdir(parents=True, exist_ok=True)
    for p in root.iterdir():
        p.unlink()
    (root / inter).write_bytes(header.encode() + data)
    (root / titles).write_text(text)
    if fmt == "mllmrec_tsv":
        (root / "test.tsv").write_text("1\t42\n")


@pytest.mark.parametrize("fmt", FORMATS)
def test_interaction_readers_keep_or_count_every_line(fmt, tmp_path):
    _, sep, width, *_ = FORMATS[fmt]

    @seed(0)
    @SETTINGS
    @given(data=body(sep, width))
    def check(data):
        root = tmp_path / fmt
        write(root, fmt, data)
        report = Report()
        try:
            inter, titles = read_dataset(root, IngestParams(format=fmt, root=str(root)), report)
        except UserError as e:
            assert "\n" not in str(e)
            return
        # every non-blank line was read, then kept (one row; tsv: one row per item) or counted
        kept_lines = inter.select("file", "line").n_unique() if inter.height else 0
        assert report.read["interaction_lines"] == kept_lines + report.skipped["malformed_line"]
        # ... and every physical line of the file that is not blank was read: none vanished
        physical = (FORMATS[fmt][3].encode() + data).split(b"\n")[(1 if FORMATS[fmt][3] else 0) :]
        nonblank = sum(1 for ln in physical if ln.decode("utf-8", "replace").strip() or b"\x1f" in ln)
        assert report.read["interaction_lines"] == nonblank + (1 if fmt == "mllmrec_tsv" else 0)  # + test.tsv
        try:
            normalize(inter, titles, report)
        except UserError as e:  # e.g. nothing left: one line naming the counts
            assert "\n" not in str(e)

    check()


@pytest.mark.parametrize("fmt", ["movielens_csv", "movielens_dat", "mllmrec_tsv"])
def test_titles_readers_keep_or_count_every_row(fmt, tmp_path):
    sep = {"movielens_csv": ",", "movielens_dat": "::", "mllmrec_tsv": ","}[fmt]
    header = "" if fmt == "movielens_dat" else "movieId,title,genres\n"

    @seed(0)
    @SETTINGS
    @given(data=body(sep, 3))
    def check(data):
        path = tmp_path / f"titles-{fmt}.txt"
        path.write_bytes(header.encode() + data)
        report = Report()
        try:
            titles = read_titles(path, fmt, "utf-8", report)
        except UserError as e:
            assert "\n" not in str(e)
            return
        assert isinstance(titles, pl.DataFrame)
        kept_or_counted = titles.height + sum(report.skipped.values())
        assert report.read["title_lines"] <= kept_or_counted + report.skipped["malformed_title_line"] + titles.height

    check()


MAPPED = {  # the formats whose columns come from params: format -> (interactions file, separator, header, params)
    "csv-by-name": (
        "ratings.csv",
        ",",
        "user_id,movie_id,rating,unix_timestamp\n",
        {
            "format": "csv",
            "interactions_file": "ratings.csv",
            "titles_file": "movies.csv",
            "interactions": {
                "columns": {"user": "user_id", "item": "movie_id", "timestamp": "unix_timestamp", "rating": "rating"}
            },
            "titles": {"columns": {"item": "movieId", "title": "title"}},
            "min_rating": 3,
        },
    ),
    "csv-by-position": (
        "ratings.txt",
        ";",
        "",
        {
            "format": "csv",
            "interactions_file": "ratings.txt",
            "titles_file": "movies.csv",
            "interactions": {
                "separator": ";",
                "header": False,
                "timestamp": "iso8601",
                "columns": {"user": 0, "item": 1, "timestamp": 3},
            },
            "titles": {"columns": {"item": "movieId", "title": "title"}},
        },
    ),
    "recbole": (
        "d.inter",
        "\t",
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n",
        {"format": "recbole", "min_rating": 3},
    ),
}


def write_mapped(root: Path, name: str, data: bytes) -> None:
    inter, _, header, _ = MAPPED[name]
    root.mkdir(parents=True, exist_ok=True)
    for p in root.iterdir():
        p.unlink()
    (root / inter).write_bytes(header.encode() + data)
    if name == "recbole":
        (root / "d.item").write_text("item_id:token\tmovie_title:token_seq\n1\tA (1990)\n42\tB (1991)\n")
    else:
        (root / "movies.csv").write_text("movieId,title\n1,A (1990)\n42,B (1991)\n")


@pytest.mark.parametrize("name", MAPPED)
def test_column_mapped_readers_keep_or_count_every_line(name, tmp_path):
    """csv by header name and by position (ISO timestamps, min_rating) and RecBole's typed header: every line is read,
    then kept or counted, and only the one-line UserError is raised."""
    _, sep, header, params = MAPPED[name]

    @seed(0)
    @SETTINGS
    @given(data=body(sep, 4))
    def check(data):
        root = tmp_path / name
        write_mapped(root, name, data)
        report = Report()
        try:
            inter, titles = read_dataset(root, IngestParams(**params, root=str(root)), report)
        except UserError as e:
            assert "\n" not in str(e)
            return
        kept_lines = inter.select("file", "line").n_unique() if inter.height else 0
        counted = report.skipped["malformed_line"] + report.skipped["below_min_rating"]
        assert report.read["interaction_lines"] == kept_lines + counted
        physical = (header.encode() + data).split(b"\n")[(1 if header else 0) :]
        assert report.read["interaction_lines"] == sum(
            1 for ln in physical if ln.decode("utf-8", "replace").strip() or b"\x1f" in ln
        )
        try:
            normalize(inter, titles, report)
        except UserError as e:
            assert "\n" not in str(e)

    check()


def review_line():
    """A JSON line as a careless export writes it: a valid review, one with wrong types or missing keys, or no JSON."""
    value = st.sampled_from([None, True, 0, -1, 1.5, 10**30, float("nan"), "", "x", "AU1", "B000000001", [], {}])
    record = st.fixed_dictionaries(
        {},
        optional={
            "user_id": value,
            "parent_asin": value,
            "asin": value,
            "timestamp": value,
            "rating": value,
            "reviewerID": value,
        },
    )
    good = st.builds(
        lambda u, i, t: {"user_id": f"AU{u}", "parent_asin": f"B{i:09d}", "timestamp": t, "rating": 4.0},
        st.integers(1, 5),
        st.sampled_from([1, 42]),
        st.integers(0, 2**40),
    )
    text = st.lists(st.sampled_from(FRAGMENTS + ["{", "}", "[", '{"user_id": 1'])).map("".join)
    return st.one_of(good.map(json.dumps), record.map(lambda r: json.dumps(r, allow_nan=True)), text)


def test_amazon_reader_keeps_or_counts_every_json_line(tmp_path):
    @seed(0)
    @SETTINGS
    @given(lines=st.lists(review_line(), min_size=1, max_size=12))
    def check(lines):
        root = tmp_path / "amz"
        root.mkdir(exist_ok=True)
        (root / "Beauty.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
        (root / "meta_Beauty.jsonl").write_text(
            "".join(json.dumps({"parent_asin": f"B{i:09d}", "title": t}) + "\n" for i, t in ((1, "A"), (42, "B")))
        )
        report = Report()
        try:
            inter, titles = read_dataset(root, IngestParams(format="amazon", root=str(root), min_rating=3), report)
        except UserError as e:
            assert "\n" not in str(e)
            return
        counted = sum(report.skipped[k] for k in ("malformed_line", "missing_field", "below_min_rating"))
        assert report.read["interaction_lines"] == inter.height + counted
        assert report.read["interaction_lines"] == sum(1 for ln in lines if ln.strip())
        try:
            normalize(inter, titles, report)
        except UserError as e:
            assert "\n" not in str(e)

    check()
