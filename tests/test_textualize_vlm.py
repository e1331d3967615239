"""textualize through a real (tiny, random-weight) VLM and the transformers engine: the paper's path, offline."""

import polars as pl
from textualize_util import PROMPT, make_dataset

from mllmrec.config import EngineSpec
from mllmrec.data.textualize import textualize
from mllmrec.engines import build_engine
from mllmrec.engines.base import SamplingParams
from mllmrec.partcache import model_identity


def test_tiny_vlm_captions_then_cache(tiny_vlm_dir, tmp_path):
    root, items = make_dataset(tmp_path, n=6, missing=1)
    spec = EngineSpec(engine="transformers", model=str(tiny_vlm_dir), batch_size=4)
    model, revision = model_identity(spec)
    assert model == str(tiny_vlm_dir) and revision.startswith("local-")
    built = []

    def make():
        built.append(build_engine(spec))
        return built[-1]

    kw = {
        "prompt": PROMPT,
        "sampling": SamplingParams(max_new_tokens=8),
        "model": model,
        "revision": revision,
        "make_engine": make,
        "cache_dir": tmp_path / "cache",
        "batch_size": 4,
        "progress": False,
    }
    captions, report = textualize(items, root, **kw)
    # random weights: gibberish, one per image; on some CPUs one is blank (EOS first), recorded and not cached
    empty = report.errors.pop("empty", 0)
    assert report.model_calls == 6 and report.errors == {"missing": 1} and len(built) == 1 and empty <= 1
    ok = captions.filter(pl.col("error").is_null())
    assert ok.height == 6 - empty and ok["caption"].null_count() == 0 and (ok["caption"].str.strip_chars() != "").all()
    assert set(ok["model"]) == {str(tiny_vlm_dir)} and ok["cache_key"].n_unique() == 6 - empty

    again, report = textualize(items, root, **kw)
    assert report.model_calls == empty and len(built) == (1 if not empty else 2) and again.equals(captions)
