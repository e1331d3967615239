"""The one renderer: content, answer parsing, chat template applied identically by every path."""

import polars as pl
import pytest
from transformers import AutoTokenizer

from mllmrec.config import EngineSpec, PromptParams
from mllmrec.engines.base import GenerationRequest
from mllmrec.errors import UserError
from mllmrec.prompts import (
    ItemText,
    answer_line,
    build_messages,
    load_item_texts,
    parse_answer,
    render_completion,
    render_prompt,
)
from mllmrec.training import rewards

TEXTS = {
    "1": ItemText("Heat (1995)", "dark blue, city lights"),
    "2": ItemText("Up (2009)", ""),
    "3": ItemText("Amélie (2001)", "green and red"),
    "4": ItemText("天使 (2001)", "warm"),
}
SAMPLE = {"history": ["1", "2"], "candidates": ["3", "4"]}


def user_text(params: PromptParams, cot: str | None = None) -> str:
    return build_messages(SAMPLE, TEXTS, params, cot)[1]["content"]


def test_lines_captions_and_cot_block():
    text = user_text(PromptParams(captions="history"))
    assert "1. [ITEM_1] Heat (1995) | image: dark blue, city lights" in text
    assert "2. [ITEM_2] Up (2009)\n" in text  # no caption -> no dangling separator
    assert "1. [ITEM_3] Amélie (2001)\n" in text  # candidates without captions in 'history' mode
    assert "| image: green and red" in user_text(PromptParams(captions="all"))
    assert "image:" not in user_text(PromptParams(captions="none"))
    assert "<think>" not in text
    with_cot = user_text(PromptParams(), cot="Step 1: likes crime\nStep 2: ...")
    assert (
        "<think>\nStep 1: likes crime\nStep 2: ...\n</think>\n(The reasoning above is for reference only.)" in with_cot
    )


def test_caption_word_budget():
    cut = user_text(PromptParams(captions="all", max_caption_words=2))
    assert "1. [ITEM_1] Heat (1995) | image: dark blue,\n" in cut  # the first 2 words, titles never cut
    assert "| image: green and\n" in cut and "| image: warm\n" in cut  # shorter captions stay whole
    assert "dark blue, city lights" in user_text(PromptParams(captions="all", max_caption_words=None))
    with pytest.raises(ValueError):
        PromptParams(max_caption_words=0)


def test_tag_answer_changes_only_the_answer_and_its_instruction():
    title = user_text(PromptParams())
    tag = user_text(PromptParams(answer="tag"))
    assert title.endswith("Answer with exactly one line: [ITEM_<id>] <title>, copied from the candidate list.")
    assert tag.endswith("Answer with exactly one line: [ITEM_<id>], copied from the candidate list.")
    assert title.rsplit("\n", 1)[0] == tag.rsplit("\n", 1)[0]  # history and candidates keep their titles
    assert answer_line("3", TEXTS, "tag") == "[ITEM_3]" and parse_answer("[ITEM_3]") == ["3"]
    with pytest.raises(ValueError):
        PromptParams(answer="title")


def test_unknown_item_is_a_clear_error():
    with pytest.raises(UserError, match="item '9' is in a sample but not in data/ingest/items.parquet"):
        build_messages({"history": ["9"], "candidates": ["1"]}, TEXTS, PromptParams())


def test_load_item_texts_skips_failed_captions():
    items = pl.DataFrame({"item_id": ["1", "2"], "title": ["A", "B"]})
    caps = pl.DataFrame({"item_id": ["1", "2"], "caption": ["blue  sky", "x"], "error": [None, "corrupt: bad"]})
    assert load_item_texts(items, caps) == {"1": ItemText("A", "blue sky"), "2": ItemText("B", "")}


def test_parse_answer():
    assert parse_answer("[ITEM_3] Amélie (2001)") == ["3"]
    assert parse_answer("<think>[ITEM_9]</think>") == []  # an id inside the reasoning is not an answer
    assert (
        parse_answer("<think>[ITEM_9]</think>[ITEM_4]")
        == ["4"]
        == rewards.parse("<think>[ITEM_9]</think>[ITEM_4]", ["4", "9"]).ids
    )
    assert parse_answer("[ITEM_../x] [ITEM_] ITEM_5") == []
    assert parse_answer("") == []
    assert answer_line("4", TEXTS) == "[ITEM_4] 天使 (2001)"


def test_engine_and_renderer_apply_the_same_template(tiny_lm_dir):
    from mllmrec.engines.transformers_engine import TransformersEngine

    tok = AutoTokenizer.from_pretrained(tiny_lm_dir)
    messages = build_messages(SAMPLE, TEXTS, PromptParams())
    for thinking in (None, False, True):
        engine = TransformersEngine(EngineSpec(engine="transformers", model=str(tiny_lm_dir), enable_thinking=thinking))
        via_engine = engine._prompt(GenerationRequest(messages=tuple(messages)))  # generative evaluation path
        assert via_engine == render_prompt(tok, messages, thinking)  # likelihood evaluation, SFT, GRPO path


def test_completion_is_the_templates_assistant_turn(tiny_lm_dir):
    tok = AutoTokenizer.from_pretrained(tiny_lm_dir)
    messages = build_messages(SAMPLE, TEXTS, PromptParams())
    prompt = render_prompt(tok, messages, False)
    completion = render_completion(tok, messages, "[ITEM_3] Amélie (2001)", False)
    full = tok.apply_chat_template(
        messages + [{"role": "assistant", "content": "[ITEM_3] Amélie (2001)"}], tokenize=False, enable_thinking=False
    )
    assert full.startswith(prompt + completion)
    assert completion.endswith("Amélie (2001)<|im_end|>")  # ends exactly once with the end-of-turn token
    assert full[len(prompt + completion) :].strip() == ""  # only the template's trailing newline is left out


def test_missing_chat_template_is_a_clear_error(tiny_lm_dir):
    tok = AutoTokenizer.from_pretrained(tiny_lm_dir)
    tok.chat_template = None
    with pytest.raises(UserError, match="no chat template"):
        render_prompt(tok, [{"role": "user", "content": "hi"}], None)
