"""textualize(): content-addressed cache (hits = zero model calls), incremental items, invalidation, error reasons."""

import json
from pathlib import Path

import polars as pl
import pytest
from textualize_util import PROMPT, CountingEngine, Factory, items_frame, make_dataset

from mllmrec.config import EngineSpec, TextualizeParams
from mllmrec.data.textualize import OUT_COLUMNS, read_cache, textualize
from mllmrec.engines.base import SamplingParams
from mllmrec.errors import UserError
from mllmrec.partcache import model_identity
from mllmrec.reports import as_dict

SAMPLING = SamplingParams(max_new_tokens=128)


def run(items, root, cache, factory=None, **kw):
    factory = factory or Factory()
    args = {
        "prompt": PROMPT,
        "sampling": SAMPLING,
        "model": "pixel-describer",
        "revision": "pd-1",
        "make_engine": factory,
        "cache_dir": cache,
        "batch_size": 4,
        "progress": False,
    }
    captions, report = textualize(items, root, **{**args, **kw})
    return captions, report, factory


@pytest.fixture
def data(tmp_path):
    root, items = make_dataset(tmp_path, n=10, missing=1, corrupt=1)
    return root, items, tmp_path / "cache"


def test_first_run_then_rerun_makes_zero_calls(data):
    root, items, cache = data
    c1, r1, f1 = run(items, root, cache)
    assert c1.columns == OUT_COLUMNS and c1["item_id"].to_list() == items["item_id"].to_list()
    assert f1.engine.requests == 10 and f1.built == 1 and r1.model_calls == 10 and r1.cache_hits == 0
    assert r1.parts_written == 3 and len(list(cache.glob("part-*.parquet"))) == 3  # 10 / batch 4
    c2, r2, f2 = run(items, root, cache)
    assert f2.built == 0 and f2.engine.requests == 0  # the engine is not even built
    assert r2.model_calls == 0 and r2.cache_hits == 10 and r2.engine_built is False
    assert c2.equals(c1)
    json.dumps(as_dict(r2))  # the report is plain JSON


def test_added_item_costs_one_call(data, tmp_path):
    root, items, cache = data
    run(items, root, cache)
    root2, items11 = make_dataset(tmp_path, n=11, missing=1, corrupt=1)
    assert root2 == root
    c, r, f = run(items11, root, cache)
    assert f.engine.requests == 1 and r.cache_hits == 10 and c["caption"].null_count() == 2


def test_prompt_sampling_model_changes_invalidate_all_and_going_back_is_free(data):
    root, items, cache = data
    base, _, _ = run(items, root, cache)
    for change in [
        {"prompt": PROMPT + " Be brief."},
        {"sampling": SamplingParams(max_new_tokens=20)},
        {"revision": "pd-0"},
        {"model": "other-captioner"},
    ]:
        c, r, f = run(items, root, cache, **change)
        assert f.engine.requests == 10 and r.cache_hits == 0, change
        assert c["cache_key"].drop_nulls().is_in(base["cache_key"].drop_nulls().implode()).sum() == 0
    _, r, f = run(items, root, cache)  # old entries are kept (append-only): switching back costs nothing
    assert f.engine.requests == 0 and r.cache_hits == 10


def test_missing_and_corrupt_images_get_a_reason(data):
    root, items, cache = data
    c, r, _ = run(items, root, cache)
    errs = dict(c.filter(pl.col("error").is_not_null()).select("item_id", "error").iter_rows())
    assert errs == {"m0": "missing", "c0": "corrupt: cannot identify image file"}
    assert r.errors == {"corrupt": 1, "missing": 1} and r.captioned == 10 and r.items == 12
    assert c.filter(pl.col("item_id") == "m0")["cache_key"].item() is None


def test_engine_failures_recorded_not_cached_then_retried(data):
    root, items, cache = data
    bad = items.filter(pl.col("image_ok"))["image_path"][3].split("/")[-1]
    c, r, _ = run(items, root, cache, factory=Factory(CountingEngine(fail_on={bad})))
    assert r.errors["engine"] == 1 and c.filter(pl.col("error").str.starts_with("engine:")).height == 1
    _c2, r2, f2 = run(items, root, cache)  # the failure was not cached: exactly that one is asked again
    assert f2.engine.requests == 1 and "engine" not in r2.errors and r2.captioned == 10


def test_requests_carry_one_image_and_never_the_title(data):
    root, items, cache = data
    _, _, f = run(items, root, cache)
    titles = items["title"].to_list()
    for r in f.engine.seen:
        assert len(r.images) == 1 and Path(r.images[0]).is_absolute() and r.sampling == SAMPLING
        assert r.messages == ({"role": "user", "content": PROMPT},)
        assert not any(t in PROMPT for t in titles)


def test_identical_images_share_one_request(data):
    root, items, cache = data
    dup = items.head(1).with_columns(item_id=pl.lit("dup"))
    c, r, f = run(pl.concat([items, dup]), root, cache)
    assert f.engine.requests == 10 and r.unique_images == 10
    assert c.filter(pl.col("item_id") == "dup")["caption"].item() == c["caption"][0]


def test_parts_are_deterministic_and_stale_temps_cleaned(data, tmp_path):
    root, items, cache = data
    run(items, root, cache)
    run(items, root, tmp_path / "cache2")
    a = {p.name: p.read_bytes() for p in cache.glob("*")}
    assert a == {p.name: p.read_bytes() for p in (tmp_path / "cache2").glob("*")}  # same bytes -> DVC dedupes
    (cache / "part-x.parquet.tmp").write_bytes(b"half a write")
    _, r, _ = run(items, root, cache)
    assert r.stale_temp_files_removed == 1 and not list(cache.glob("*.tmp"))
    assert read_cache(cache).height == 10


def test_a_part_that_fails_verification_is_set_aside_and_recomputed_never_served(data):
    """A teammate's edited caption (the cache is shared over a DVC remote), a damaged file, a part without a column:
    each is reported, moved to rejected/, and its rows computed again; the model's captions come back."""
    root, items, cache = data
    first, _, _ = run(items, root, cache)
    parts = sorted(cache.glob("part-*.parquet"))
    rows_in_bad_parts = pl.read_parquet(parts[0]).height + pl.read_parquet(parts[1]).height
    edited = pl.read_parquet(parts[0]).with_columns(pl.lit("A lovely red poster.").alias("caption"))
    edited.write_parquet(parts[0])  # same name, new bytes
    pl.read_parquet(parts[1]).drop("caption").write_parquet(parts[1])
    (cache / "part-bad.parquet").write_bytes(b"nope")
    captions, report, factory = run(items, root, cache)
    assert report.rejected_cache_parts == 3
    assert sorted(p.name for p in (cache / "rejected").iterdir()) == sorted(
        [parts[0].name, parts[1].name, "part-bad.parquet"]
    )
    assert factory.engine.requests == rows_in_bad_parts  # those parts' captions, nothing else
    assert captions.equals(first) and "A lovely red poster." not in captions["caption"].to_list()
    _, again, factory = run(items, root, cache)
    assert again.rejected_cache_parts == 0 and factory.built == 0  # the recomputed parts verify


def test_cache_only_mode(data, tmp_path):
    root, items, cache = data
    with pytest.raises(UserError, match="cache-only"):
        run(items, root, cache, cache_only=True)
    run(items, root, cache)
    _, r, f = run(items, root, cache, cache_only=True)
    assert f.built == 0 and r.captioned == 10


def test_model_identity(tmp_path):
    assert model_identity(EngineSpec(engine="pixel_describer", model="x")) == ("pixel-describer", "pd-1")
    assert model_identity(EngineSpec(engine="vllm", model="Qwen/Qwen3-VL-8B-Instruct", revision="abc")) == (
        "Qwen/Qwen3-VL-8B-Instruct",
        "abc",
    )
    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_text('{"a": 1}')
    (d / "model.safetensors").write_bytes(b"0" * 100)
    spec = EngineSpec(engine="transformers", model=str(d))
    r1 = model_identity(spec)[1]
    (d / "config.json").write_text('{"a": 2}')
    r2 = model_identity(spec)[1]
    assert r1.startswith("local-") and r1 != r2  # a local folder's revision follows its contents


def test_prompt_may_not_template_the_title():
    with pytest.raises(Exception, match="title"):
        TextualizeParams(prompt="Describe the poster of {title}.")
    assert TextualizeParams(prompt=PROMPT).batch_size >= 1


def test_items_frame_helper_matches_ingest_schema(tmp_path):
    root, _ = make_dataset(tmp_path, n=1)
    cols = items_frame(root, ["x"]).columns
    ingest = Path(__file__).resolve().parents[1] / "data" / "ingest" / "items.parquet"
    if ingest.exists():  # keep the test helper honest about ingest's real columns
        assert set(cols) == set(pl.read_parquet_schema(ingest))


def test_null_caption_in_a_verified_part_is_recomputed_and_counted(data):
    """A part that verifies but holds a null caption (another version's writer): recomputed, never served."""
    from mllmrec.data.textualize import PART_SCHEMA
    from mllmrec.partcache import write_part

    root, items, cache = data
    first, _, _ = run(items, root, cache)
    part = min(cache.glob("part-*.parquet"))
    df = pl.read_parquet(part)
    part.unlink()
    write_part(
        cache,
        pl.concat([df.head(1).with_columns(pl.lit(None, pl.String).alias("caption")), df.slice(1)]).to_dicts(),
        PART_SCHEMA,
    )
    captions, report, _ = run(items, root, cache)
    assert report.invalid_cache_rows == 1 and report.model_calls == 1 and report.rejected_cache_parts == 0
    assert captions.equals(first)  # no item left with neither caption nor error


def test_image_changed_after_ingest_is_not_cached_under_the_old_key(data):
    root, items, cache = data
    ok = items.filter(pl.col("image_ok"))
    path = root / ok["image_path"][0]
    path.write_bytes(path.read_bytes() + b"\0")  # edited after ingest recorded its sha256
    captions, report, _ = run(items, root, cache)
    row = captions.filter(pl.col("item_id") == ok["item_id"][0])
    assert row["caption"][0] is None and row["error"][0].startswith("changed: image bytes differ")
    assert report.errors["changed"] == 1
    assert ok["image_sha256"][0] not in set(read_cache(cache)["image_sha256"])  # its key holds nothing
