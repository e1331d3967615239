"""Readers for the supported dataset layouts -> normalized items + time-ordered interactions + an ingest report.

Layouts (params `ingest.format`):
- movielens_csv: ml-latest `ratings.csv` (userId,movieId,rating,timestamp) + `movies.csv` (movieId,title,genres)
- movielens_dat: ml-1m `ratings.dat` (UserID::MovieID::Rating::Timestamp) + `movies.dat` (MovieID::Title::Genres)
- mllmrec_tsv:   the MLLMRec-R1 authors' `train.tsv` / `test.tsv` (user<TAB>space-separated items, in time order)
                 + `<dataset>_titles.csv` (item,title) + `images/<item>.<ext>`
- microlens:     `*pairs*.csv` (user,item,timestamp) + `*title*.csv` (item,title) + `covers/<item>.jpg`
- csv:           any delimited interactions + titles file, columns mapped in params (`ingest.interactions`,
                 `ingest.titles`); the four layouts above are presets of the same readers
- recbole:       RecBole atomic files `<name>.inter` + `<name>.item` (mllmrec.data.recbole)
- amazon:        Amazon Reviews 2018 / 2023 jsonl(.gz) reviews + `meta_*` metadata (mllmrec.data.amazon)

Every dropped row or item is counted by reason in the report, with the first few file:line examples.
"""

import csv
import io
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

from mllmrec.config import CsvInteractions, CsvTitles
from mllmrec.errors import UserError

# ids become file names and prompt tokens ([ITEM_<id>]): no path separators, no leading dot, no spaces
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"
MAX_EXAMPLES = 5


@dataclass
class Report:
    """Rows read, rows skipped by reason (with a few `file:line` examples), and kept-but-changed notes."""

    read: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    notes: Counter = field(default_factory=Counter)
    examples: dict = field(default_factory=lambda: defaultdict(list))

    def skip(self, reason: str, n: int, examples: list[str] = ()) -> None:
        if n:
            self.skipped[reason] += n
            self.example(reason, examples)

    def note(self, reason: str, n: int, examples: list[str] = ()) -> None:
        """Kept but changed rows, with examples like a skip's."""
        if n:
            self.notes[reason] += n
            self.example(reason, examples)

    def example(self, reason: str, examples: list[str]) -> None:
        room = MAX_EXAMPLES - len(self.examples[reason])
        self.examples[reason].extend(list(examples)[: max(room, 0)])


@dataclass(kw_only=True)
class InteractionsKept:
    kept: int
    users: int


@dataclass(kw_only=True)
class ItemsKept:
    kept: int
    with_image: int


@dataclass(kw_only=True)
class IngestReport:
    """data/ingest/report.json (field names are its keys, mllmrec.reports): kept rows, then `Report`'s counts
    sorted by reason, the image checks by outcome, and a few `file:line` examples per reason."""

    interactions: InteractionsKept
    items: ItemsKept
    read: dict[str, int]
    skipped: dict[str, int]
    notes: dict[str, int]
    images: dict[str, int]
    examples: dict[str, list[str]]


@dataclass(frozen=True)
class Layout:
    interactions: tuple[str, ...]  # file names or glob patterns, read in this order
    titles: str
    image_dir: str


LAYOUTS = {
    "movielens_csv": Layout(("ratings.csv",), "movies.csv", "posters"),
    "movielens_dat": Layout(("ratings.dat",), "movies.dat", "images"),
    "mllmrec_tsv": Layout(("train.tsv", "test.tsv"), "*_titles.csv", "images"),
    "microlens": Layout(("*pairs*.csv",), "*title*.csv", "covers"),
    "csv": Layout((), "", "images"),  # both files are required params
    "recbole": Layout(("*.inter",), "*.item", "images"),
    # reviews `<Category>.json(l)(.gz)`, metadata `meta_<Category>.json(l)(.gz)` (categories are capitalized)
    "amazon": Layout(("[!m]*.json*",), "meta_*.json*", "images"),
}

# the delimited layouts are presets of format csv (the rating column is read only with ingest.min_rating)
PRESETS = {
    "movielens_csv": CsvInteractions(
        columns={"user": "userId", "item": "movieId", "timestamp": "timestamp", "rating": "rating"}
    ),
    "movielens_dat": CsvInteractions(
        separator="::",
        header=False,
        fields=4,  # UserID::MovieID::Rating::Timestamp
        columns={"user": 0, "item": 1, "rating": 2, "timestamp": 3},
    ),
    "microlens": CsvInteractions(columns={"user": "user", "item": "item", "timestamp": "timestamp"}),
}
OUR_NAMES = {"user": "user_id", "item": "item_id", "timestamp": "timestamp", "rating": "rating"}


def resolve(root: Path, pattern: str, what: str, fix: str = "") -> Path:
    """One file for a name or glob inside the dataset root; a clear error if zero or several match. `fix`: what the
    message tells the user to set (default: the params key `ingest.<what>_file`)."""
    fix = fix or f"set ingest.{what}_file"
    matches = sorted(root.glob(pattern))
    if not matches:
        raise UserError(f"{root}: no {what} file matching '{pattern}' ({fix})")
    if len(matches) > 1:
        raise UserError(f"{root}: several {what} files match '{pattern}': {[m.name for m in matches]} ({fix})")
    if not matches[0].is_file():
        raise UserError(f"{matches[0]}: is a directory, expected the {what} file ({fix})")
    return matches[0]


def control_lines(path: Path) -> list[int]:
    """1-based numbers of the lines holding the unit separator \\x1f, which read_lines uses as its field separator
    (a memory-mapped scan: no copy of a large file)."""
    import mmap

    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        lines, at, line, counted = [], m.find(b"\x1f"), 1, 0
        while at != -1:
            line += m[counted:at].count(b"\n")  # newlines between the last hit and this one
            lines.append(line)
            end = m.find(b"\n", at)
            if end == -1:
                break
            line, counted = line + 1, end + 1
            at = m.find(b"\x1f", counted)
        return lines


def read_lines(path: Path) -> pl.LazyFrame:
    """Each physical line as one string, with its 1-based line number and `ctl`: the line holds \\x1f (counted as
    malformed by the readers: its text after that byte is not read); fast and multi-threaded in polars."""
    if not path.exists():
        raise UserError(f"{path}: not found")
    if not path.is_file():
        raise UserError(f"{path}: is a directory, expected a file")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: file is empty")
    ctl = control_lines(path)
    # \x1f is the field separator, so each line is one field; quote_char=None keeps quotes verbatim
    shape = (
        {"schema": {"raw": pl.String}, "truncate_ragged_lines": True, "extra_columns": "ignore"}
        if ctl
        else {"new_columns": ["raw"]}
    )
    return (
        pl.scan_csv(
            path,
            has_header=False,
            separator="\x1f",
            quote_char=None,
            infer_schema=False,
            row_index_name="line",
            row_index_offset=1,
            encoding="utf8-lossy",
            **shape,
        )
        .with_columns(ctl=pl.col("line").is_in(ctl))
        .filter((pl.col("raw").str.strip_chars() != "") | pl.col("ctl"))
    )


def timestamp_expr(col: pl.Expr, kind: str) -> pl.Expr:
    """Parse a timestamp column (see CsvInteractions.timestamp) to Int64; null where it does not parse."""
    if kind == "integer":
        return col.cast(pl.Int64, strict=False)
    if kind == "float":  # nan / inf cast to null
        return col.cast(pl.Float64, strict=False).floor().cast(pl.Int64, strict=False)
    if kind == "iso8601":
        return col.map_elements(iso_seconds, return_dtype=pl.Int64, skip_nulls=True)
    return col.str.strptime(pl.Datetime("us"), kind, strict=False).dt.epoch("s")


def iso_seconds(text: str) -> int | None:
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        return None
    return int((t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp())


def read_delimited(path: Path, spec: CsvInteractions, report: Report, min_rating: float | None = None) -> pl.DataFrame:
    """Read user/item/timestamp from a delimited interactions file.

    `spec.columns` maps our name -> header name (file has a header) or field index (no header). Lines with the wrong
    number of fields or a timestamp that does not parse are counted as `malformed_line`, never silently parsed;
    with `min_rating`, rows rated below it are counted as `below_min_rating`.
    """
    columns = {OUR_NAMES[k]: v for k, v in spec.columns.items() if k != "rating" or min_rating is not None}
    lines = read_lines(path).collect(engine="streaming")
    fields, padded = _split_fields(lines["raw"], spec.separator)
    lines, index, width = _column_index(path, lines, spec, columns)
    df, checks = _parse_lines(lines, fields, padded, index, width, spec.timestamp, min_rating)
    if df.height == 0:
        raise UserError(f"{path}: no data lines" + (" after the header" if spec.header else " (file is blank)"))
    report.read["interaction_lines"] += df.height
    if not df["ok"].any():  # the cause in the error, not "no interactions left" two stages later
        first = df.row(0, named=True)  # its text again from the raw line: no copy of every field kept for this
        text = lines.filter(pl.col("line") == first["line"])["raw"][0] or ""
        raise UserError(
            f"{path}: no line could be read; the first, line {first['line']}: "
            + first_problem(first, text, spec, width, index, spec.separator)
        )
    bad = df.filter(~pl.col("ok"))
    report.skip("malformed_line", bad.height, [f"{path.name}:{n}" for n in bad["line"].head(MAX_EXAMPLES)])
    df = df.filter("ok") if bad.height else df
    if min_rating is not None:
        df = drop_below(df, min_rating, path.name, report)
    return df.drop("ok", "ctl", *checks).with_columns(file=pl.lit(path.name))


def _split_fields(raw: pl.Series, sep: str) -> tuple[pl.Expr, bool]:
    """The expression that splits column `raw` into its fields, and `padded`: whether any line holds whitespace."""
    # most files hold no whitespace at all (no \r, no padding): then every strip below is a no-op, skip them all.
    # Non-ASCII lines take the stripping path too (Unicode has more spaces); a length test finds them fastest.
    padded = raw.str.contains(r"[\t-\r ]").any() or (raw.str.len_bytes() != raw.str.len_chars()).any()
    fields = (pl.col("raw").str.strip_suffix("\r") if padded else pl.col("raw")).str.split(sep)
    if len(sep) == 1 and raw.str.contains('"', literal=True).any():  # quoted fields: CSV quoting, as titles files

        def csv_fields(line: str) -> list[str]:
            try:
                return next(csv.reader([line.removesuffix("\r")], delimiter=sep, strict=True), [])
            except csv.Error:
                return []  # an unclosed quote: a malformed line (no field count matches)

        fields = (
            pl.when(pl.col("raw").str.contains('"', literal=True))
            .then(pl.col("raw").map_elements(csv_fields, return_dtype=pl.List(pl.String)))
            .otherwise(fields)
        )
    return fields, padded


def _column_index(
    path: Path, lines: pl.DataFrame, spec: CsvInteractions, columns: dict
) -> tuple[pl.DataFrame, dict, int | None]:
    """The data lines (header removed), our column name -> field index, and the exact field count (None: at least
    enough for the index)."""
    sep, width = spec.separator, spec.fields
    if not spec.header:
        return lines, dict(columns), width  # headerless: `width` fields exactly when the format fixes it
    if lines.height == 0:  # only blank lines
        raise UserError(f"{path}: file is empty")
    if "\r" in lines["raw"][0].rstrip("\r"):
        raise UserError(
            f"{path}: lines end in CR only (\\r, old Mac style); convert them to \\n, e.g. "
            f"`tr '\\r' '\\n' < {path.name} > fixed.csv`"
        )
    header = [h.strip() for h in lines["raw"][0].removeprefix("\ufeff").split(sep)]
    missing = [c for c in columns.values() if c not in header]
    if missing:
        raise UserError(
            f"{path}:1: missing column(s) {missing}; header is {brief(header)} "
            f"(check ingest.format, the column names and ingest.encoding)"
        )
    index = {ours: header.index(theirs) for ours, theirs in columns.items()}
    return lines.slice(1), index, width or len(header)


def _parse_lines(
    lines: pl.DataFrame,
    fields: pl.Expr,
    padded: bool,
    index: dict,
    width: int | None,
    timestamp: str,
    min_rating: float | None,
) -> tuple[pl.DataFrame, list[str]]:
    """One row per line: our columns, a flag per check (`checks`: the flags' names) and `ok` (every check passed)."""

    def field(i: int) -> pl.Expr:
        got = pl.col("f").list.get(i, null_on_oob=True)
        return got.str.strip_chars() if padded else got

    parsed = (
        lines.lazy()
        .select("line", "ctl", fields.alias("f"))
        .select(
            "line",
            "ctl",
            (pl.col("f").list.len() == width if width else pl.col("f").list.len() > max(index.values())).alias(
                "width_ok"
            ),
            *[field(i).alias(name) for name, i in index.items()],
        )
    )
    ts = timestamp_expr(pl.col("timestamp"), timestamp)
    parsed = parsed.with_columns(ts_ok=ts.is_not_null(), timestamp=ts)
    checks = ["width_ok", "ts_ok"]
    if min_rating is not None:  # nan / inf are not ratings: counted, never compared
        rating = pl.col("rating").cast(pl.Float64, strict=False)
        parsed = parsed.with_columns(rating_ok=rating.is_not_null() & rating.is_finite(), rating=rating)
        checks.append("rating_ok")
    parsed = parsed.with_columns(ok=~pl.col("ctl") & pl.all_horizontal(checks))
    return parsed.collect(engine="streaming"), checks


def first_problem(row: dict, text: str, spec: CsvInteractions, width: int | None, index: dict, sep: str) -> str:
    """Why one parsed line (`text` as read) was refused, naming the column: for the all-lines-failed message."""
    fields = [f.strip() for f in text.split(sep)]

    def value(role: str) -> str:
        return fields[index[role]] if index[role] < len(fields) else ""

    if row["ctl"]:
        return "it holds the control byte \\x1f"
    if not row["width_ok"]:
        return (
            f"expected {width} fields separated by {sep!r}"
            if width
            else f"expected at least {max(index.values()) + 1} fields separated by {sep!r}"
        ) + " (check ingest.format / the separator, and quoting)"
    if not row["ts_ok"]:
        return (
            f"timestamp {value('timestamp')!r} is not {spec.timestamp!r} (column {spec.columns['timestamp']!r}; "
            "set ingest.interactions.timestamp)"
        )
    return f"rating {value('rating')!r} is not a finite number (column {spec.columns.get('rating')!r})"


def drop_below(df: pl.DataFrame, min_rating: float, file: str, report: Report) -> pl.DataFrame:
    """Keep rows with rating >= min_rating (the rating column is dropped); the rest are counted."""
    low = df.filter(pl.col("rating") < min_rating)
    report.skip("below_min_rating", low.height, [f"{file}:{n}" for n in low["line"].head(MAX_EXAMPLES)])
    return df.filter(pl.col("rating") >= min_rating).drop("rating")


def read_tsv_sequences(path: Path, report: Report) -> pl.DataFrame:
    """`user<TAB>item item item` in time order -> one row per item, timestamp = position in the line."""
    df = (
        read_lines(path)
        .select("line", "ctl", pl.col("raw").str.strip_suffix("\r").str.split("\t").alias("f"))
        .collect()
    )
    if df.height == 0:
        raise UserError(f"{path}: no data lines (file is blank)")
    ok = (df["f"].list.len() == 2) & (df["f"].list.get(1, null_on_oob=True).str.strip_chars() != "") & ~df["ctl"]
    ok = ok.fill_null(False)
    bad = df.filter(~ok)
    report.read["interaction_lines"] += df.height
    report.skip("malformed_line", bad.height, [f"{path.name}:{n}" for n in bad["line"].head(MAX_EXAMPLES)])
    return (
        df.filter(ok)
        .select(
            "line",
            pl.col("f").list.get(0).str.strip_chars().alias("user_id"),
            pl.col("f").list.get(1).str.strip_chars().str.split(" ").alias("item_id"),
        )
        .explode("item_id")
        .filter(pl.col("item_id") != "")  # double spaces are separators, not items
        # a user on several lines continues in file order (per line, positions would interleave the lines)
        .with_columns(timestamp=pl.int_range(pl.len()).over("user_id").cast(pl.Int64), file=pl.lit(path.name))
    )


def decode_text(path: Path, encoding: str) -> str:
    raw = path.read_bytes()
    if not raw.strip():
        raise UserError(f"{path}: file is empty")
    try:
        return raw.decode(encoding).removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise UserError(
            f"{path}:{line}: bytes {raw[e.start : e.end]!r} are not valid {encoding}; set ingest.encoding "
            f"(ml-1m's movies.dat is latin-1)"
        ) from None


def brief(value: object, limit: int = 200) -> str:
    """A value for an error message, cut: a header read from a file with the wrong line endings or encoding is the
    whole file."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def clean_title(title: str) -> str:
    """NFC-normalize, line breaks to spaces, drop control/zero-width characters, collapse whitespace; keeps non-Latin
    scripts intact."""
    title = unicodedata.normalize("NFC", title).replace("\r", " ").replace("\n", " ")
    title = "".join(ch for ch in title if unicodedata.category(ch) not in {"Cc", "Cf"} or ch in " \t")
    return " ".join(title.split())


MAX_TITLE_CHARS = 200  # a title is one prompt line per history item and candidate (19 per prompt): a product title
# that runs to pages, or a broken export that put a whole file in one field, would crowd out every other item (and
# push samples past sft.max_length); MovieLens titles stay under 160 characters, Amazon's long tail runs past 400


def cut_title(title: str) -> str:
    """A title cut to MAX_TITLE_CHARS at the last word boundary (a hard cut when one word is longer), marked with `…`.

    >>> len(cut_title("word " * 100)) <= MAX_TITLE_CHARS, cut_title("word " * 100).endswith("word …")
    (True, True)
    >>> cut_title("Toy Story (1995)")
    'Toy Story (1995)'
    """
    if len(title) <= MAX_TITLE_CHARS:
        return title
    head = title[: MAX_TITLE_CHARS - 2]
    space = head.rfind(" ")
    return (head[:space] if space > MAX_TITLE_CHARS // 2 else head).rstrip() + " …"  # a word boundary, unless one
    # word runs on for more than half the limit


RECORD_START = re.compile(r"[\r\n]\s*\d+,")  # inside a title: a line break, then what looks like a row's `<id>,`
TITLE_ID_COLUMNS = ("movieId", "item", "item_id", "itemId")  # the presets' titles files: the first one present
NO_GENRES = "(no genres listed)"  # MovieLens' genres field for a movie without any


def text_rows(path: Path, text: str, sep: str, quoted: bool) -> Iterator[tuple[int, list[str], int]]:
    """(first line, fields, last line) of each row: csv quoting when `quoted`, else every separator splits."""
    if not quoted:
        for n, line in enumerate(text.split("\n"), start=1):
            yield n, line.removesuffix("\r").split(sep), n
        return
    reader = csv.reader(io.StringIO(text), delimiter=sep, strict=True)  # strict: a quote left open is an error
    start = 1
    try:
        for parts in reader:
            yield start, parts, reader.line_num
            start = reader.line_num + 1
    except csv.Error as e:  # field over the size limit, quote open at the end of the file, ...
        where = f"{start}" if reader.line_num <= start else f"{start} (the row read on to line {reader.line_num})"
        raise UserError(f"{path}:{where}: not valid CSV: {e} (an unclosed quote?)") from None


def title_columns(path: Path, header: list[str] | None, spec: CsvTitles | None, genres: bool = False) -> dict[str, int]:
    """our name (item, title, image, genres) -> field index, from the params mapping or the presets' header names."""
    if spec is None:
        id_col = next((c for c in TITLE_ID_COLUMNS if c in header), None)
        if id_col is None or "title" not in header:
            raise UserError(
                f"{path}:1: expected an id column (movieId/item/item_id) and 'title'; header is "
                f"{brief(header)} (check ingest.format and ingest.encoding)"
            )
        if genres and "genres" not in header:
            raise UserError(
                f"{path}:1: ingest.genres is true but the header has no 'genres' column; header is {brief(header)}"
            )
        return {"item": header.index(id_col), "title": header.index("title")} | (
            {"genres": header.index("genres")} if genres else {}
        )
    if header is None:
        return dict(spec.columns)
    missing = [c for c in spec.columns.values() if c not in header]
    if missing:
        raise UserError(
            f"{path}:1: expected an id column {spec.columns['item']!r} and {spec.columns['title']!r}"
            f"{' and ' + repr(spec.columns['image']) if 'image' in spec.columns else ''}: missing "
            f"{missing}; header is {brief(header)} (check ingest.titles.columns and ingest.encoding)"
        )
    return {ours: header.index(theirs) for ours, theirs in spec.columns.items()}


def read_titles(
    path: Path, fmt: str, encoding: str, report: Report, spec: CsvTitles | None = None, genres: bool = False
) -> pl.DataFrame:
    """item_id + title (+ image with a mapped image column, + genres with `genres`: the presets' `genres` column,
    ml-1m's third field, format csv's mapped one) from a small titles file: a delimited file (with a header for the
    presets, as `spec` says for format csv), or ml-1m `::` lines."""
    text = decode_text(path, encoding)
    rows: list[tuple] = []
    malformed: list[str] = []
    if fmt == "movielens_dat":
        for n, line in enumerate(text.splitlines(), start=1):
            parts = line.split("::")
            if not line.strip():
                continue
            if len(parts) < 2:
                malformed.append(f"{path.name}:{n}")
                continue
            if len(parts) > 3:  # MovieID::Title::Genres with `::` inside the title: keep the whole title
                report.notes["title_with_separator"] += 1
            title = "::".join(parts[1:-1]) if len(parts) > 2 else parts[1]
            rows.append((parts[0].strip(), title, n, *([parts[-1] if len(parts) > 2 else ""] if genres else [])))
        extra = ("genres",) if genres else ()
    else:
        if "\r" in text and "\n" not in text:
            raise UserError(f"{path}: lines end in CR only (\\r, old Mac style); convert them to \\n")
        quoted = spec.quoted if spec else True
        found = text_rows(path, text, spec.separator if spec else ",", quoted)
        header = None
        if spec is None or spec.header:
            header = [h.strip() for h in next(found)[1]]
        index = title_columns(path, header, spec, genres)
        extra = tuple(c for c in ("image", "genres") if c in index)
        need = len(header) if header else max(index.values()) + 1
        for first, parts, last in found:
            if not parts or not "".join(parts).strip():
                continue
            if (len(parts) != need) if header else (len(parts) < need):
                malformed.append(f"{path.name}:{first}")
                continue
            if quoted and RECORD_START.search(parts[index["title"]]):
                raise UserError(
                    f"{path}:{first}: a quote opened on this line closes only on line {last}, so the "
                    f"rows in between would be read as one title; fix the quote"
                )
            rows.append(
                (
                    parts[index["item"]].strip(),
                    parts[index["title"]],
                    first,
                    *(parts[index[c]].strip() for c in extra),
                )
            )
    report.read["title_lines"] += len(rows) + len(malformed)
    report.skip("malformed_title_line", len(malformed), malformed)
    return title_frame(rows, path, report, malformed, extra)


def title_frame(
    rows: list[tuple], path: Path, report: Report, malformed: list[str] = (), extra: tuple[str, ...] = ()
) -> pl.DataFrame:
    """(item_id, title, line, *extra) rows (extra: image and/or genres text) -> cleaned titles (normalization
    counted, empty titles skipped; genres `A|B` -> a list, `(no genres listed)` -> empty)."""
    if not rows:  # every interaction would be an unknown item: say why here, not downstream
        raise UserError(
            f"{path}: no title rows" + (f" ({len(malformed)} malformed, e.g. {malformed[0]})" if malformed else "")
        )
    schema = {"item_id": pl.String, "title": pl.String, "line": pl.Int64} | {c: pl.String for c in extra}
    df = pl.DataFrame(rows, schema=schema, orient="row")
    if "genres" in extra:  # MovieLens writes `(no genres listed)` where it has none
        listed = pl.col("genres").str.split("|").list.eval(pl.element().str.strip_chars())
        df = df.with_columns(genres=listed.list.eval(pl.element().filter(~pl.element().is_in(["", NO_GENRES]))))
        none = df.filter(pl.col("genres").list.len() == 0)  # the marker, an empty field, an ml-1m line without one
        report.note("item_without_genres", none.height, [f"{path.name}:{n}" for n in none["line"].head(MAX_EXAMPLES)])
    changed = df.with_columns(clean=pl.col("title").map_elements(clean_title, return_dtype=pl.String))
    n_changed = changed.filter(pl.col("clean") != pl.col("title")).height
    report.notes["titles_normalized"] += n_changed  # kept, but counted: the text differs from the file
    df = changed.with_columns(title=pl.col("clean")).drop("clean")
    long = df.filter(pl.col("title").str.len_chars() > MAX_TITLE_CHARS)
    if long.height:  # one rule for every format (all titles pass here): cut, kept, counted with examples
        report.note("title_cut", long.height, [f"{path.name}:{n}" for n in long["line"].head(MAX_EXAMPLES)])
        df = df.with_columns(title=pl.col("title").map_elements(cut_title, return_dtype=pl.String))
    empty = df.filter(pl.col("title") == "")
    report.skip("empty_title", empty.height, [f"{path.name}:{n}" for n in empty["line"].head(MAX_EXAMPLES)])
    return df.filter(pl.col("title") != "").with_columns(file=pl.lit(path.name))


def normalize(
    inter: pl.DataFrame, titles: pl.DataFrame, report: Report, ties: str = "file_order"
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Validate ids, drop unknown items and duplicates (counted), order each user's interactions in time; `ties`
    (params ingest.ties) orders interactions of the same second by file order or by item id."""
    titles = _valid_titles(titles, report)
    item_ids = titles["item_id"]
    inter, users, user_code, item_code = _id_codes(inter, item_ids, report)
    ts = inter["timestamp"].to_numpy()
    order = _time_order(user_code, item_code, ts, item_ids, len(users), ties)
    user_code, item_code, ts = user_code[order], item_code[order], ts[order]
    first = _first_of_pairs(inter, order, user_code, item_code, len(item_ids), report)
    user_code, item_code, ts = user_code[first], item_code[first], ts[first]
    if len(ts) == 0:  # empty tables would only fail later, in a stage that cannot name the cause
        first_examples = {k: v[0] for k, v in report.examples.items() if v}
        raise UserError(f"no interactions left after ingest: skipped {dict(report.skipped)}, e.g. {first_examples}")
    counts = np.bincount(user_code, minlength=len(users))
    position = np.arange(len(ts)) - np.repeat(np.cumsum(counts) - counts, counts)
    inter = pl.DataFrame(
        {
            "user_id": users.gather(user_code),
            "item_id": item_ids.gather(item_code),
            "timestamp": ts,
            "position": position.astype(np.int32),
        }
    )
    used = int(np.count_nonzero(np.bincount(item_code, minlength=len(item_ids))))
    report.notes["items_without_interactions"] += titles.height - used  # not skipped: still in the table
    return inter, titles.select("item_id", "title", *(c for c in ("image", "genres") if c in titles.columns))


def _where(df: pl.DataFrame) -> list[str]:
    """The first `file:line` examples of a frame's rows."""
    return [f"{f}:{n}" for f, n in zip(df["file"].head(MAX_EXAMPLES), df["line"].head(MAX_EXAMPLES))]


def _valid_titles(titles: pl.DataFrame, report: Report) -> pl.DataFrame:
    """Titles with a valid, first-seen item id (the rest counted)."""
    bad_item = titles.filter(~pl.col("item_id").str.contains(ID_PATTERN))
    report.skip("invalid_item_id_in_titles", bad_item.height, _where(bad_item))
    titles = titles.filter(pl.col("item_id").str.contains(ID_PATTERN))
    dup_titles = titles.filter(pl.col("item_id").is_duplicated() & ~pl.col("item_id").is_first_distinct())
    report.skip("duplicate_title_row", dup_titles.height, _where(dup_titles))
    return titles.unique("item_id", keep="first", maintain_order=True)


def _id_codes(
    inter: pl.DataFrame, item_ids: pl.Series, report: Report
) -> tuple[pl.DataFrame, pl.Series, np.ndarray, np.ndarray]:
    """Interactions with valid ids of known items (the rest counted), the sorted user ids, and each row's user and
    item codes (indexes into the users and into `item_ids`)."""
    # 25 M rows hold only ~200 k distinct ids: check those, then sort and dedupe integer codes instead of strings.
    # Users are coded in lexical order and items in titles order, so the result equals a string sort + dedupe.
    users = inter["user_id"].unique().sort()
    bad_users = users.filter(~users.str.contains(ID_PATTERN))
    item_code = inter["item_id"].cast(pl.Enum(item_ids), strict=False).to_physical()  # null: not in titles
    suspect = item_code.is_null()
    if bad_users.len():
        suspect |= inter["user_id"].is_in(bad_users.implode())
    if suspect.any():  # few rows: the regex decides between an invalid id and an unknown item (frame order)
        odd = inter.filter(suspect)
        ok_ids = pl.col("user_id").str.contains(ID_PATTERN) & pl.col("item_id").str.contains(ID_PATTERN)
        bad, unknown = odd.filter(~ok_ids), odd.filter(ok_ids)
        report.skip("invalid_id", bad.height, _where(bad))
        report.skip("unknown_item", unknown.height, _where(unknown))
        inter, item_code = inter.filter(~suspect), item_code.filter(~suspect)
    user_code = inter["user_id"].cast(pl.Enum(users)).to_physical().to_numpy()
    return inter, users, user_code, item_code.to_numpy()


def _time_order(
    user_code: np.ndarray, item_code: np.ndarray, ts: np.ndarray, item_ids: pl.Series, n_users: int, ties: str
) -> np.ndarray:
    """The row order by (user, time): a stable sort, so ties in time keep file order (the order the dataset authors
    wrote), or go by item id (numeric ids numerically, then the others lexically)."""
    if len(ts) == 0:
        return np.empty(0, dtype=np.int64)
    if ties == "item_id":
        numeric = item_ids.str.contains(r"^[0-9]+$")
        rank = (
            pl.DataFrame(
                {"num": item_ids.cast(pl.Int64, strict=False).fill_null(0), "digits": ~numeric, "id": item_ids}
            )
            .with_row_index()
            .sort("digits", "num", "id")["index"]
        )
        item_rank = np.empty(len(item_ids), dtype=np.int64)
        item_rank[rank.to_numpy()] = np.arange(len(item_ids))
        return np.lexsort((item_rank[item_code], ts, user_code))
    span = int(ts.max()) - int(ts.min()) + 1
    if n_users * span < 2**63:  # one int64 key: much faster than a two-column sort
        return np.argsort(user_code.astype(np.int64) * span + (ts - ts.min()), kind="stable")
    return np.lexsort((ts, user_code))  # lexsort is stable too


def _first_of_pairs(
    inter: pl.DataFrame, order: np.ndarray, user_code: np.ndarray, item_code: np.ndarray, n_items: int, report: Report
) -> np.ndarray:
    """Which time-ordered rows (codes already in `order`) keep: the earliest interaction of each (user, item) pair;
    the later ones are counted as duplicates, or noted when a later file lists them again."""
    pair = pl.Series(user_code.astype(np.int64) * n_items + item_code)
    first = np.ones(len(pair), dtype=bool)
    if pair.n_unique() < len(pair):  # the earliest (user, item) interaction wins
        first = pair.is_first_distinct().to_numpy()
        files = inter["file"].gather(order)
        first_file = pl.DataFrame({"pair": pair, "file": files}).group_by("pair", maintain_order=True).first()
        dup = inter[order[~first]].with_columns(pair=pair.filter(~pl.Series(first)))
        dup = dup.join(first_file.rename({"file": "first_file"}), on="pair", how="left")
        relisted = dup.filter(pl.col("file") != pl.col("first_file"))  # the authors' test.tsv repeats train items
        same = dup.filter(pl.col("file") == pl.col("first_file"))
        report.skip("duplicate_interaction", same.height, _where(same))
        if relisted.height:  # the same interaction listed twice, not data loss
            report.notes["listed_again_in_a_later_file"] += relisted.height
    return first


def ingest_report(report: Report, inter: pl.DataFrame, items: pl.DataFrame, image_counts: Counter) -> IngestReport:
    return IngestReport(
        interactions=InteractionsKept(kept=inter.height, users=inter["user_id"].n_unique()),
        items=ItemsKept(kept=items.height, with_image=int(items["image_ok"].sum())),
        read=dict(sorted(report.read.items())),
        skipped=dict(sorted(report.skipped.items())),
        notes=dict(sorted(report.notes.items())),
        images=dict(sorted(image_counts.items())),
        examples={k: v for k, v in sorted(report.examples.items()) if v},
    )


def sort_ids(df: pl.DataFrame, col: str) -> pl.DataFrame:
    """Numeric-looking ids sort numerically (1, 2, 10), others lexically after them: stable, readable order."""
    return df.sort(pl.col(col).str.len_chars(), pl.col(col)) if df[col].str.contains(r"^\d+$").all() else df.sort(col)
