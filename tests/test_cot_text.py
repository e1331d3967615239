"""Pure CoT functions on hand-written strings: Step parsing, leak audit + scrubbing, prompt lines, sample selection.

.venv/bin/pytest tests/test_cot_text.py -q
"""

import doctest

import polars as pl
import pytest

from mllmrec import partcache, titles
from mllmrec.cot import assess, leak
from mllmrec.cot import text as cot
from mllmrec.cot.generate import select_train_samples
from mllmrec.cot.leak import find_leaks, scrub
from mllmrec.cot.text import item_line, parse_steps, prediction_text
from mllmrec.data.textualize import scrub_caption
from mllmrec.titles import title_variants

GOOD = "Step 1: dark sci-fi.\nStep 2: more of it.\nStep 3: neon; rain; noir\nStep 4: A bleak future city film."


@pytest.mark.parametrize("mod", [cot, leak, titles, assess, partcache])
def test_doctests(mod):
    assert doctest.testmod(mod).failed == 0


@pytest.mark.parametrize(
    "text, finish, reason",
    [
        (GOOD, "stop", "ok"),
        ("<think>Let me think about step 1...</think>\n" + GOOD, "stop", "ok"),  # reasoning trace stripped
        ("Here is the rewrite:\n" + GOOD.replace("Step 1:", "**Step 1:**"), "stop", "ok"),  # preamble + markdown
        (GOOD + "\n\nI hope this helps! Step 5 would be...", "stop", "ok"),  # chatter after the profile dropped
        ("", "stop", "empty"),
        ("   \n ", "stop", "empty"),
        ("<think>still thinking when the budget ran out", "length", "truncated"),
        ("Step 1: a\nStep 2: b\nStep 3: c\nStep 4: A film that", "length", "truncated"),
        ("Step 1: a\nStep 2: b", "length", "truncated"),
        ("I'm sorry, but I can't help with that request.", "stop", "refusal"),
        ("As an AI, I cannot analyse users.", "stop", "refusal"),
        ("The user likes sci-fi and will watch more sci-fi.", "stop", "wrong_format"),
        ("Step 1: a\nStep 2: b\nStep 3: c", "stop", "wrong_format"),  # missing step
        ("Step 1: a\nStep 3: c\nStep 2: b\nStep 4: d", "stop", "wrong_format"),  # out of order
        ("Step 1: a\nStep 2: b\nStep 2: b\nStep 3: c\nStep 4: d", "stop", "wrong_format"),  # duplicate
        ("Step 1: a\nStep 2:\nStep 3: c\nStep 4: d", "stop", "wrong_format"),  # empty step
        ("Step 1: a\nStep 2: b\nStep 3: c\nStep 4: d\nStep 5: e", "stop", "wrong_format"),  # five lines
        ("Step 1: <signals>\nStep 2: <intent>\nStep 3: <c>; <c>\nStep 4: <profile>", "stop", "wrong_format"),
        ("The user's history is a mix of genres. " * 20, "length", "wrong_format"),  # no Step at all
    ],
)
def test_parse_steps(text, finish, reason):
    out, got = parse_steps(text, finish)
    assert got == reason
    assert (out is not None) == (reason == "ok")
    if out:
        assert out.splitlines()[0].startswith("Step 1: ") and len(out.splitlines()) == 4 and "<think>" not in out


def test_prediction_text_is_steps_2_to_4():
    assert prediction_text(parse_steps(GOOD)[0]) == "more of it. neon; rain; noir A bleak future city film."


# ---- leak audit ----
@pytest.mark.parametrize(
    "text, item_id, title, kinds",
    [
        ("Step 4: They will watch [ITEM_1] next.", "1", "Toy Story (1995)", ["item_tag"]),
        ("Step 4: Probably ITEM_1.", "1", "Toy Story (1995)", ["item_tag"]),
        ("Step 4: Next is movie 2571.", "2571", "Matrix, The (1999)", ["id"]),
        ("Step 4: Next is Toy Story (1995).", "1", "Toy Story (1995)", ["title", "title_core"]),
        ("Step 4: next: toy-story!", "1", "Toy Story (1995)", ["title_core"]),
        ("Step 4: They will rewatch The Matrix.", "2571", "Matrix, The (1999)", ["title_core"]),
        ("Step 4: a new Toy Stroy adventure.", "1", "Toy Story (1995)", ["fuzzy"]),
        ("Step 4: the Matrx sequel.", "2571", "Matrix, The (1999)", ["fuzzy"]),
        (
            "Step 4: Fabuleux destin d'Amelie Poulain.",
            "4973",
            "Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)",
            ["title_core"],
        ),
        ("Step 4: 次は千と千尋の神隠しを見る。", "5618", "千と千尋の神隠し (2001)", ["title_core"]),
        ("Step 4: Heat again.", "6", "Heat (1995)", ["title_core"]),
        ("Step 4: They like Se7en.", "47", "Seven (a.k.a. Se7en) (1995)", ["title_core"]),
    ],
)
def test_planted_leaks_are_caught(text, item_id, title, kinds):
    assert find_leaks(text, item_id, title) == sorted(kinds)


@pytest.mark.parametrize(
    "text, item_id, title",
    [
        ("Step 1: The user likes animated adventures about toys.", "1", "Toy Story (1995)"),
        ("Step 3: 3-5 criteria; released in 1995; rated 1 of 5.", "1", "Toy Story (1995)"),  # numbers != short ids
        ("Step 2: the heat of a chase and matrix algebra.", "6", "Heat (1995)"),  # common word, other case
        ("Step 4: A film in the spirit of the history.", "2571", "Matrix, The (1999)"),
        ("Step 4: Step 1 was about cities.", "1", "Toy Story (1995)"),
        ("Step 4: a long walk.", "1001", "A " + "Very " * 80 + "Long Title (2020)"),
    ],
)
def test_clean_cots_are_not_flagged(text, item_id, title):
    assert find_leaks(text, item_id, title) == []


def test_scrub_removes_only_leaking_sentences_and_counts():
    c = (
        "Step 1: Likes toys. Loved Toy Story before.\nStep 2: More family fun.\n"
        "Step 3: toys; bright; family\nStep 4: Surely [ITEM_1]. A cheerful animated film."
    )
    out, removed = scrub(c, "1", "Toy Story (1995)")
    assert removed == 2 and find_leaks(out, "1", "Toy Story (1995)") == []
    assert out == (
        "Step 1: Likes toys.\nStep 2: More family fun.\nStep 3: toys; bright; family\nStep 4: A cheerful animated film."
    )
    assert parse_steps(out)[1] == "ok"
    emptied, _ = scrub("Step 1: a\nStep 2: b\nStep 3: c\nStep 4: It is Toy Story.", "1", "Toy Story (1995)")
    assert parse_steps(emptied)[1] == "wrong_format"  # the caller drops such a sample


def test_title_variants_very_long_and_non_english():
    _full, cores = title_variants("A " + "Very " * 80 + "Long Title (2020)")
    assert cores == ["very " * 79 + "very long title"]
    assert title_variants("Stadt der Kinder, Die (1990)")[1] == ["stadt der kinder"]


# ---- prompt lines and sample selection ----
def test_item_line_records_workarounds():
    line, notes = item_line(3, "7", "x" * 500, None)
    assert line.startswith("3. [ITEM_7] ") and len(line) < 230 and notes == {"long_title": 1, "missing_caption": 1}
    assert item_line(1, "2", "", "a poster")[1] == {"missing_title": 1}


def test_select_train_samples_only_train_stable_subsample():
    df = pl.DataFrame(
        {
            "sample_id": [f"s{i}" for i in range(40)],
            "user_id": [str(i) for i in range(40)],
            "split": ["train", "valid", "test", "train"] * 10,
            "history": [["1"]] * 40,
            "target": ["2"] * 40,
            "candidates": [["2", "3"]] * 40,
            "target_index": [0] * 40,
            "num_negatives": [1] * 40,
        }
    )
    a = select_train_samples(df, 5, seed=0)
    assert a.height == 5 and set(a["sample_id"]) <= set(df.filter(pl.col("split") == "train")["sample_id"])
    assert select_train_samples(df, 5, seed=0).equals(a)
    # adding samples never reshuffles which old ones are in: only a new one can displace one
    more = pl.concat([df, df.head(4).with_columns(pl.col("sample_id") + "x")])
    b = select_train_samples(more, 5, seed=0)
    assert len(set(a["sample_id"]) & set(b["sample_id"])) >= 4
    assert select_train_samples(df, None, 0).height == 20


@pytest.mark.parametrize(
    "caption, title, kept",
    [
        ('poster; text "the fugitive"; dark', "Fugitive, The (1993)", "poster; dark"),  # the article moved to the front
        ('night; text "thefugitive"', "Fugitive, The (1993)", "night"),  # ... and the words merged by OCR
        ('red; text "12monkeys"', "Twelve Monkeys (1995)", "red"),  # a number word as digits
        ('toys; text "stort"; blue', "Toy Story (1995)", "toys; blue"),  # one letter misread in a word of >= 5
        ('text "night"; text "sky"; blue', "Toy Story (1995)", 'text "night"; text "sky"; blue'),  # not the title
    ],
)
def test_caption_scrub_catches_how_posters_spell_titles(caption, title, kept):
    assert scrub_caption(caption, "1", title)[0] == kept


def test_the_cot_audit_uses_the_same_variants():
    assert find_leaks("Step 4: next, 12 Monkeys.", "32", "Twelve Monkeys (1995)") == ["title_core"]
    assert find_leaks("Step 4: The Fugitive again.", "457", "Fugitive, The (1993)") == ["title_core"]
