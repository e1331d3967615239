"""The offline stand-in captioner: deterministic, sensible on real posters, right colour words on solid images."""

import doctest

import numpy as np
import pytest
from PIL import Image
from textualize_util import POSTERS, poster_ids

from mllmrec.config import EngineSpec
from mllmrec.engines import build_engine, pixel_describer
from mllmrec.engines.base import GenerationRequest, SamplingParams
from mllmrec.engines.pixel_describer import MAX_WORDS, PixelDescriber, describe


def req(path, text="Describe the image.", max_new_tokens=128):
    return GenerationRequest(
        messages=({"role": "user", "content": text},),
        images=(str(path),),
        sampling=SamplingParams(max_new_tokens=max_new_tokens),
    )


def test_doctests():
    assert doctest.testmod(pixel_describer).failed == 0


def test_factory_dispatch():
    eng = build_engine(EngineSpec(engine="pixel_describer", model="pixel-describer"))
    assert isinstance(eng, PixelDescriber)
    assert (eng.model_id, eng.revision) == ("pixel-describer", pixel_describer.REVISION)


def test_real_posters_deterministic_and_sensible():
    paths = [POSTERS / f"{i}.jpg" for i in poster_ids(40)]
    a = PixelDescriber().generate([req(p) for p in paths])
    b = PixelDescriber().generate([req(p) for p in reversed(paths)])[::-1]
    assert [r.text for r in a] == [r.text for r in b]  # same image -> same words, whatever the batch
    texts = [r.text for r in a]
    assert all(r.finish_reason == "stop" and not r.error for r in a)
    assert all(10 <= len(t.split()) <= MAX_WORDS for t in texts)
    assert all(t.startswith("A portrait-format image") for t in texts)  # posters are 200x300
    assert len(set(texts)) >= 36  # descriptive: posters are told apart
    vocab = {
        "red",
        "orange",
        "yellow",
        "green",
        "teal",
        "blue",
        "purple",
        "pink",
        "brown",
        "beige",
        "black",
        "white",
        "grey",
    }
    assert all(any(w.strip(",.") in vocab for w in t.split()) for t in texts)


def test_text_is_ignored_so_titles_cannot_leak():
    p = POSTERS / "1.jpg"
    a, b = PixelDescriber().generate([req(p), req(p, "Toy Story (1995): describe this poster")])
    assert a.text == b.text and "Toy" not in a.text


@pytest.mark.parametrize(
    "rgb,name",
    [
        ((230, 20, 20), "red"),
        ((20, 40, 220), "blue"),
        ((20, 160, 40), "green"),
        ((250, 230, 20), "yellow"),
        ((250, 140, 0), "orange"),
        ((130, 20, 150), "purple"),
        ((255, 190, 200), "pink"),
        ((120, 65, 20), "brown"),
        ((0, 0, 0), "black"),
        ((255, 255, 255), "white"),
        ((128, 128, 128), "grey"),
        ((0, 150, 150), "teal"),
    ],
)
def test_solid_colours_named(tmp_path, rgb, name):
    p = tmp_path / "solid.png"
    Image.new("RGB", (200, 300), rgb).save(p)
    text = describe(p)
    assert f"mostly {name}." in text or f"mostly {name} " in text or f"mostly {name}," in text, text
    assert "low contrast" in text and "smooth" in text.lower()


def test_brightness_aspect_and_layout(tmp_path):
    Image.new("RGB", (400, 200), (5, 5, 5)).save(tmp_path / "dark.png")
    assert describe(tmp_path / "dark.png").startswith("A landscape-format image, very dark")
    Image.new("RGB", (300, 300), (250, 250, 250)).save(tmp_path / "light.png")
    assert describe(tmp_path / "light.png").startswith("A square image, very bright")
    a = np.zeros((300, 200, 3), np.uint8)
    a[:100] = 255  # white band on top of black
    Image.fromarray(a).save(tmp_path / "top.png")
    t = describe(tmp_path / "top.png")
    assert "high contrast" in t and "light concentrated in the top" in t and "mostly black and white" in t


def test_errors_are_results_not_exceptions(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"garbage")
    missing, bad, none = PixelDescriber().generate(
        [
            req(tmp_path / "nope.jpg"),
            req(tmp_path / "bad.jpg"),
            GenerationRequest(messages=({"role": "user", "content": "x"},)),
        ]
    )
    assert missing.error.startswith("missing") and bad.error.startswith("corrupt") and none.error
    assert missing.finish_reason == bad.finish_reason == "error" and missing.text == ""


def test_max_new_tokens_caps_words():
    r = PixelDescriber().generate([req(POSTERS / "1.jpg", max_new_tokens=5)])[0]
    assert len(r.text.split()) == 5 and r.finish_reason == "length"
