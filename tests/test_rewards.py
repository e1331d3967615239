"""Reward functions on hand-written completions: the paper's cases, the format rules, rank-aware, and junk that
must never raise (a reward that raises mid-run kills a GRPO job)."""

import math

import pytest

from mllmrec.training.rewards import components, paper_reward, parse, rank_aware_reward, trl_reward_funcs

C = ["5", "7", "12"]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[ITEM_5] Heat (1995)", 1.0),  # hit
        ("[ITEM_5]", 1.0),  # the title is decoration
        ("  The answer is [ITEM_5] Heat (1995).\n", 1.0),  # surrounding words are fine
        ("[ITEM_5] Heat (1995)\n[ITEM_5] Heat (1995)", 1.0),  # the same id repeated: still one answer
        ("[ITEM_7] Up (2009)", 0.3),  # valid miss
        ("<think>[ITEM_5] or [ITEM_12]?</think>\n[ITEM_7] Up", 0.3),  # ids inside the reasoning do not count
        ("and so [ITEM_5] fits.</think>[ITEM_5] Heat", 1.0),  # template opened <think> in the prompt
        ("[ITEM_99] Not offered", -1.0),  # not a candidate
        ("[ITEM_5] Heat or [ITEM_7] Up", -1.0),  # two different ids
        ("Heat (1995)", -1.0),  # no tag
        ("ITEM_5 Heat", -1.0),  # no brackets
        ("[ITEM_] Heat", -1.0),
        ("<think>I keep thinking [ITEM_5]", -1.0),  # never closed: no answer
        ("", -1.0),
    ],
)
def test_paper_reward(text, expected):
    assert paper_reward(text, C, "5") == expected


def test_components_sum_to_the_reward():
    for kind, full in (("paper", paper_reward), ("rank_aware", rank_aware_reward)):
        fs = components(kind, -1.0, 1.0, 0.3, 3)
        for text in ["[ITEM_5] a", "[ITEM_7] b", "[ITEM_7] b\n[ITEM_5] a", "junk", "[ITEM_1] x"]:
            assert sum(f(text, C, "5") for f in fs.values()) == pytest.approx(full(text, C, "5"))


def test_rank_aware():
    assert rank_aware_reward("[ITEM_5] a", C, "5") == 1.0  # one id: as the paper
    assert rank_aware_reward("[ITEM_7] b\n[ITEM_12] c\n[ITEM_5] a", C, "5") == pytest.approx(1 / math.log2(4))
    assert rank_aware_reward("[ITEM_7] b\n[ITEM_12] c", C, "5") == pytest.approx(0.15)  # padding dilutes
    assert rank_aware_reward("[ITEM_7]\n[ITEM_12]\n[ITEM_5]", C, "5", max_answers=2) == -1.0  # too many
    assert rank_aware_reward("[ITEM_7]\n[ITEM_99]", C, "5") == -1.0  # one not offered spoils the list


def test_strict_hit_only_and_custom_values():
    assert paper_reward("[ITEM_7]", C, "5", valid_miss=0.0) == 0.0
    assert paper_reward("nope", C, "5", bad_format=-2.0) == -2.0


JUNK = [
    "",
    " ",
    "\x00\x01\x02",
    "[ITEM_" * 20_000,
    "[ITEM_5" + "a" * 200_000,
    "</think>" * 5000,
    "<think>" * 5000,
    "[ITEM_5] " + "x" * 1_000_000,
    "🎬🍿 [ITEM_5] Amélie (2001) 電影 \u202e",
    "[ITEM_٥] Arabic-Indic digit",
    "[ITEM_5]\udcff lone surrogate",
    None,
    12345,
    ["not", "a", "message"],
    [{"role": "assistant"}],
    [{"role": "assistant", "content": None}],
    {"content": "[ITEM_5]"},
]


@pytest.mark.parametrize("junk", JUNK, ids=range(len(JUNK)))
def test_never_raises(junk):
    for f in (paper_reward, rank_aware_reward):
        r = f(junk, C, "5")
        assert isinstance(r, float) and -1.0 <= r <= 1.0
    assert isinstance(parse(junk, C).ok, bool)
    for weird_cands in (None, [], [5, 7], ("5",)):
        paper_reward(junk, weird_cands, "5")


def test_huge_completion_is_fast():
    import time

    t = time.perf_counter()
    paper_reward("<think>" + "[ITEM_5] " * 200_000, C, "5")
    paper_reward("[ITEM_" * 200_000 + "]", C, "5")
    assert time.perf_counter() - t < 2.0  # linear, no regex blow-up


def test_trl_signature():
    """TRL calls f(prompts=, completions=, completion_ids=, <dataset columns>=, trainer_state=, ...)."""
    fmt, hit, miss = trl_reward_funcs("paper", -1.0, 1.0, 0.3)
    assert [f.__name__ for f in (fmt, hit, miss)] == ["format", "hit", "valid_miss"]
    kw = {
        "prompts": ["p"] * 3,
        "completions": ["[ITEM_5] a", "[ITEM_7] b", "?"],
        "completion_ids": [[1]] * 3,
        "candidates": [C] * 3,
        "target": ["5"] * 3,
        "sample_id": ["s"] * 3,
        "trainer_state": None,
        "log_metric": print,
    }
    assert fmt(**kw) == [0.0, 0.0, -1.0]
    assert hit(**kw) == [1.0, 0.0, 0.0]
    assert miss(**kw) == [0.0, 0.3, 0.0]
    # conversational completions (a list of messages) are read too
    conv = [[{"role": "assistant", "content": "[ITEM_5] a"}]]
    assert hit(prompts=["p"], completions=conv, candidates=[C], target=["5"]) == [1.0]
