"""Bring your own data: format csv (column mapping), RecBole atomic files and Amazon Reviews jsonl, each on small
real-row fixtures (tests/format_fixtures.py) with its malformed inputs counted or named, and each run through
ingest -> split -> baselines with the library calls of the stages."""

import gzip
import json

import polars as pl
import pytest
from format_fixtures import (
    ML100K_PARAMS,
    asin,
    jsonl_gz,
    write_amazon_2018,
    write_amazon_2023,
    write_ml100k_csv,
    write_recbole,
)
from ingest_fixtures import USERS, items_of, movies, ratings, write_text
from test_ingest import N_ITEMS, N_RATINGS, expected_sequences, sequences

from mllmrec.config import EvalParams, IngestParams, load_section
from mllmrec.data.images import attach_images
from mllmrec.data.ingest import LAYOUTS, Report, ingest_report, normalize, sort_ids
from mllmrec.data.sources import read_dataset
from mllmrec.data.split import make_candidates, make_samples, user_sequences
from mllmrec.errors import UserError
from mllmrec.evaluation.baselines import popularity_scorer, random_scorer
from mllmrec.evaluation.candidates import rank_by_scores, score_predictions
from mllmrec.reports import as_dict


def ingest(root, **params):
    """stages/ingest.py's library calls: (interactions, items, the report as report.json holds it)."""
    p = IngestParams(root=str(root), **params)
    report = Report()
    inter, titles = read_dataset(root, p, report)
    inter, items = normalize(inter, titles, report)
    items, counts = attach_images(sort_ids(items, "item_id"), root, p.image_dir or LAYOUTS[p.format].image_dir, 2)
    return inter, items, as_dict(ingest_report(report, inter, items, counts))


def n_below(threshold: float) -> int:
    return sum(float(r[2]) < threshold for u in USERS for r in ratings()[u])


# ------------------------------------------------------------------------------------------------------------ csv
def test_ml100k_shaped_csv_via_the_column_mapping(tmp_path):
    root = write_ml100k_csv(tmp_path / "ml100k")
    inter, items, report = ingest(root, **ML100K_PARAMS)
    assert sequences(inter) == expected_sequences()
    assert report["read"] == {"interaction_lines": N_RATINGS, "title_lines": N_ITEMS}
    assert report["skipped"] == {} and report["images"] == {"ok": N_ITEMS}
    leon = items.row(by_predicate=pl.col("item_id") == "293", named=True)
    assert leon["title"] == movies()["293"][0] and leon["image_path"] == "posters/293.jpg"

    inter, _, report = ingest(root, **ML100K_PARAMS, min_rating=4)
    assert report["skipped"] == {"below_min_rating": n_below(4)} and n_below(4) > 0
    assert inter.height == N_RATINGS - n_below(4)
    assert all(e.startswith("u.csv:") for e in report["examples"]["below_min_rating"])


def test_headerless_tab_file_by_position_with_millisecond_and_datetime_timestamps(tmp_path):
    rows = [r for u in USERS for r in ratings()[u]]
    write_text(
        tmp_path / "inter.tsv", [f"{i}\t{u}\t{int(t) * 1000}" for u, i, _, t in rows] + ["592\t14", "592\t14\tsoon"]
    )  # too few fields; a timestamp that is no number
    write_text(tmp_path / "titles.tsv", [f"{i}\t{movies()[i][0]}" for i in items_of(USERS)] + ["only-an-id"])
    base = {
        "format": "csv",
        "interactions_file": "inter.tsv",
        "titles_file": "titles.tsv",
        "titles": {"separator": "\t", "header": False, "quoted": False, "columns": {"item": 0, "title": 1}},
    }
    inter, _, report = ingest(
        tmp_path,
        **base,
        interactions={"separator": "\t", "header": False, "columns": {"user": 1, "item": 0, "timestamp": 2}},
    )
    assert sequences(inter) == expected_sequences()
    n = len(rows)
    assert report["skipped"] == {"malformed_line": 2, "malformed_title_line": 1}
    assert report["examples"]["malformed_line"] == [f"inter.tsv:{n + 1}", f"inter.tsv:{n + 2}"]
    assert report["examples"]["malformed_title_line"] == [f"titles.tsv:{N_ITEMS + 1}"]

    # the same times as text: a strftime format, and ISO 8601 with and without an offset (UTC when none)
    write_text(
        tmp_path / "dates.csv",
        ["when,who,what", "2024-05-02 10:00,14,592", "2024-05-01 09:30,14,150", "1 May 2024,14,1"],
    )
    write_text(
        tmp_path / "iso.csv",
        ["when,who,what", "2024-05-01T12:00:00+02:00,14,592", "2024-05-01T11:00:00,14,150", "yesterday,14,1"],
    )
    mapping = {"columns": {"user": "who", "item": "what", "timestamp": "when"}}
    # 12:00+02:00 is 10:00 UTC, before the 11:00 UTC of the line without an offset
    for name, fmt, order in (("dates.csv", "%Y-%m-%d %H:%M", ["150", "592"]), ("iso.csv", "iso8601", ["592", "150"])):
        inter, _, report = ingest(
            tmp_path, **{**base, "interactions_file": name}, interactions={**mapping, "timestamp": fmt}
        )
        assert inter["item_id"].to_list() == order, name
        assert report["skipped"]["malformed_line"] == 1 and report["examples"]["malformed_line"] == [f"{name}:4"]
    assert inter["timestamp"].to_list() == [1714557600, 1714561200]


def test_a_mapped_column_that_does_not_exist_names_the_columns_that_do(tmp_path):
    root = write_ml100k_csv(tmp_path / "d")
    bad = {
        **ML100K_PARAMS,
        "interactions": {"columns": {"user": "userId", "item": "movie_id", "timestamp": "unix_timestamp"}},
    }
    with pytest.raises(
        UserError,
        match=r"u\.csv:1: missing column\(s\) \['userId'\]; header is \['user_id', "
        r"'movie_id', 'rating', 'unix_timestamp'\]",
    ):
        ingest(root, **bad)
    bad = {**ML100K_PARAMS, "titles": {"columns": {"item": "movie_id", "title": "name"}}}
    with pytest.raises(
        UserError,
        match=r"u\.item\.csv:1: expected an id column 'movie_id' and 'name': missing "
        r"\['name'\]; header is \['movie_id', 'movie_title', 'poster'\]",
    ):
        ingest(root, **bad)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"interactions": None}, r"ingest: Value error, format csv needs \['interactions'\]"),
        (
            {"interactions": {"columns": {"user": "u", "item": "i"}}},
            r"ingest\.interactions: Value error, columns needs \['user', 'item', 'timestamp'\].*missing \['timestamp'\]",
        ),
        (
            {"interactions": {"header": False, "columns": {"user": "u", "item": 1, "timestamp": 2}}},
            r"ingest\.interactions: .*columns \['user'\]: with header false give the 0-based field position",
        ),
        (
            {"interactions": {"columns": {"user": "u", "item": "i", "timestamp": "t"}, "timestamp": "unix"}},
            r"ingest\.interactions\.timestamp: .*expected integer, float, iso8601 or a strftime format",
        ),
        (
            {"titles": {"separator": "::", "columns": {"item": "i", "title": "t"}}},
            r"ingest\.titles: .*one-character separator \(got '::'\); set quoted: false",
        ),
        (
            {"min_rating": 4, "interactions": {"columns": {"user": "u", "item": "i", "timestamp": "t"}}},
            r"ingest: Value error, min_rating needs a rating column",
        ),
    ],
)
def test_config_errors_name_the_key(tmp_path, change, message):
    (tmp_path / "params.yaml").write_text(json.dumps({"ingest": {**ML100K_PARAMS, "root": "x", **change}}))
    with pytest.raises(UserError, match=message):
        load_section("ingest", IngestParams, tmp_path / "params.yaml")


# ------------------------------------------------------------------------------------------------------- recbole
def test_recbole_atomic_files_as_they_are(tmp_path):
    root = write_recbole(tmp_path / "rb", extra_inter=["14\t592", "14\t150\t4.0\tlater"])
    inter, items, report = ingest(root, format="recbole")
    assert sequences(inter) == expected_sequences()
    assert report["skipped"] == {"malformed_line": 2}
    assert report["examples"]["malformed_line"] == [f"ml-100k.inter:{N_RATINGS + 2}", f"ml-100k.inter:{N_RATINGS + 3}"]
    assert items.row(by_predicate=pl.col("item_id") == "293", named=True)["title"] == movies()["293"][0]
    assert report["images"] == {"ok": N_ITEMS}

    _, _, report = ingest(root, format="recbole", min_rating=4)
    assert report["skipped"]["below_min_rating"] == n_below(4)


def test_recbole_header_problems_name_the_fields(tmp_path):
    root = write_recbole(tmp_path / "rb")
    with pytest.raises(
        UserError,
        match=r"ml-100k\.item:1: no field\(s\) \['name'\]; the header has \['item_id', "
        r"'movie_title', 'class'\] \(set ingest\.recbole\)",
    ):
        ingest(root, format="recbole", recbole={"title": "name"})
    lines = (root / "ml-100k.inter").read_text().splitlines()
    write_text(root / "ml-100k.inter", ["user_id\titem_id\trating\ttimestamp", *lines[1:]])
    with pytest.raises(UserError, match=r"ml-100k\.inter:1: expected a RecBole header of tab-separated `name:type`"):
        ingest(root, format="recbole")


# -------------------------------------------------------------------------------------------------------- amazon
def test_amazon_2023_jsonl_gz_pair(tmp_path):
    root = write_amazon_2023(
        tmp_path / "amz",
        extra_reviews=[
            '{"user_id": "AU14", "parent_asin": "B000000001", "timest',
            "[1, 2]",
            '{"user_id": "AU14", "parent_asin": "B000000001", "rating": 4.0}',
        ],
    )  # broken JSON, no object, no time
    inter, items, report = ingest(root, format="amazon")
    want = {f"AU{u}": [asin(i) for i in seq] for u, seq in expected_sequences().items()}
    assert sequences(inter) == want
    n = N_RATINGS
    assert report["skipped"] == {"malformed_line": 2, "missing_field": 1}
    assert report["examples"] == {
        "malformed_line": [f"Beauty.jsonl.gz:{n + 1}", f"Beauty.jsonl.gz:{n + 2}"],
        "missing_field": [f"Beauty.jsonl.gz:{n + 3}"],
    }
    assert report["read"] == {"interaction_lines": n + 3, "title_lines": N_ITEMS}
    assert report["images"] == {"ok": N_ITEMS}
    assert items.row(by_predicate=pl.col("item_id") == asin("293"), named=True)["title"] == movies()["293"][0]

    _, _, report = ingest(root, format="amazon", min_rating=4)
    assert report["skipped"]["below_min_rating"] == n_below(4)


def test_amazon_2018_json_and_bad_files(tmp_path):
    root = write_amazon_2018(tmp_path / "a18")
    inter, _, report = ingest(root, format="amazon")
    assert sequences(inter) == {f"A{u}": [asin(i) for i in seq] for u, seq in expected_sequences().items()}
    assert report["images"] == {"missing": N_ITEMS}

    (root / "meta_Beauty.json.gz").write_bytes(b"not gzip at all")
    with pytest.raises(UserError, match=r"meta_Beauty\.json\.gz: cannot read \(BadGzipFile"):
        ingest(root, format="amazon")
    jsonl_gz(root / "meta_Beauty.json.gz", [{"asin": "B1", "title": "x"}])
    (root / "Beauty.json").write_text('{"foo": 1}\n')
    with pytest.raises(UserError, match=r"Beauty\.json: no review has the fields of Amazon 2018"):
        ingest(root, format="amazon")
    with gzip.open(root / "meta_Beauty.json.gz", "wt") as f:
        f.write("\n")
    with pytest.raises(UserError, match=r"meta_Beauty\.json\.gz: file is empty"):
        ingest(root, format="amazon")


# ----------------------------------------------------------------------------------- ingest -> split -> baselines
@pytest.mark.parametrize("fmt", ["csv", "recbole", "amazon"])
def test_each_new_format_runs_through_split_and_baselines(tmp_path, fmt):
    build, params = {
        "csv": (write_ml100k_csv, ML100K_PARAMS),
        "recbole": (write_recbole, {"format": "recbole"}),
        "amazon": (write_amazon_2023, {"format": "amazon"}),
    }[fmt]
    inter, items, _ = ingest(build(tmp_path / fmt), **params)
    seqs = user_sequences(inter)
    samples = make_samples(seqs, min_inter=10, train_windows=1, stride=1)
    pool = sort_ids(seqs.select(pl.col("items").explode().unique().alias("item_id")), "item_id")["item_id"]
    cands = make_candidates(samples, seqs, pool.to_list(), 9, 0)
    test = cands.filter(pl.col("split") == "test")
    assert test.height == len(USERS) and set(test["target"]) <= set(items["item_id"])
    train = seqs.select("user_id", pl.col("items").list.head(pl.col("n") - 2))
    for scorer in (random_scorer(0), popularity_scorer(train, 0)):
        preds, summary = score_predictions(rank_by_scores(test, scorer(test)), EvalParams(bootstrap=0))
        assert preds.height == len(USERS) and 0 <= summary["HR@10"] <= 1 and summary["HR@10"] == 1.0  # 1+9
