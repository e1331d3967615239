"""Every reader, on generated hostile files: each line ends as a kept row or a counted skip, and nothing but the
project's one-line UserError is ever raised (hypothesis; fixed seed, bounded examples: a few seconds each).

Files are built from fragments a careless or hostile export holds: separators of every format, quotes, the readers'
internal \\x1f, CR/CRLF line ends, NUL and other control bytes, non-ASCII and invalid UTF-8, nan/inf, huge numbers,
blank and whitespace-only lines.
"""

from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from mllmrec.config import IngestParams
from mllmrec.data.ingest import Report, normalize, read_titles
from mllmrec.data.sources import read_dataset
from mllmrec.errors import UserError

FRAGMENTS = ["1", "42", "007", "-3", "1e3", "nan", "inf", "", " ", "a", "Ünï", "x y", '"', '""', "'", ",", "::", "\t",
             "\x1f", "\x00", "\x07", "\r", "9" * 30, "3.5", "964982703", "2024-05-01T12:00:00", "Toy Story (1995)"]
SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def line(sep: str, width: int):
    return st.lists(st.lists(st.sampled_from(FRAGMENTS), min_size=0, max_size=3).map("".join),
                    min_size=1, max_size=width + 2).map(sep.join)


def body(sep: str, width: int):
    bad_bytes = st.sampled_from([b"", b"\xff\xfe", b"\xc3", b"\r\n", b"\n\n"])
    return st.tuples(st.lists(line(sep, width), min_size=1, max_size=12), bad_bytes).map(
        lambda t: ("\n".join(t[0]) + "\n").encode() + t[1])


FORMATS = {  # format -> interactions file, its separator, fields, header, titles file + its text
    "movielens_csv": ("ratings.csv", ",", 4, "userId,movieId,rating,timestamp\n", "movies.csv",
                      "movieId,title,genres\n1,A (1990),x\n42,B (1991),x\n"),
    "movielens_dat": ("ratings.dat", "::", 4, "", "movies.dat", "1::A (1990)::x\n42::B (1991)::x\n"),
    "mllmrec_tsv": ("train.tsv", "\t", 2, "", "d_titles.csv", "item,title\n1,A (1990)\n42,B (1991)\n"),
    "microlens": ("MicroLens_pairs.csv", ",", 3, "user,item,timestamp\n", "MicroLens_titles.csv",
                  "item,title\n1,A (1990)\n42,B (1991)\n"),
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
        physical = (FORMATS[fmt][3].encode() + data).split(b"\n")[(1 if FORMATS[fmt][3] else 0):]
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
