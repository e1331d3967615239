"""The report's opening block on hand-written numbers: each verdict follows its comparison's p and sign, the best
method is the max, the strongest baseline is picked by HR@1 not by name, and small n is spelled out."""

import numpy as np
import polars as pl
import pytest

from mllmrec.evaluation.significance import mcnemar_exact
from mllmrec.evaluation.summary import min_significant_diff, policies_of, what_this_run_shows


def inputs(methods: dict[str, tuple], comps: list[tuple], n: int = 20, size: str = "n9"):
    """methods: name -> (HR@1, lo, hi, valid rate); comps: (a, b, diff, lo, hi, p). Returns the three inputs
    (same-sample table, headline, comparisons) as stages/report.py builds them."""
    cands = f"1+{size.removeprefix('n')}"
    rows = [
        {
            "method": m,
            "candidates": cands,
            "K": k,
            "n": n,
            "HR": hr if k == 1 else 1.0,
            "HR_lo": lo,
            "HR_hi": hi,
            "NDCG": 0.5,
            "valid_rate": valid,
        }
        for m, (hr, lo, hi, valid) in methods.items()
        for k in (1, 10)
    ]
    head = {size: {"n": n, **{m: {"HR@1": v[0], "HR@5": 0.5, "NDCG@10": 0.5} for m, v in methods.items()}}}
    other = {"diff": 0.0, "lo": 0.0, "hi": 0.0, "p": 1.0, "test": "x", "n": n, "significant": False}
    out = {
        size: [
            {
                "a": a,
                "b": b,
                "n": n,
                "HR@1": {
                    "diff": d,
                    "lo": lo,
                    "hi": hi,
                    "p": p,
                    "test": "mcnemar_exact",
                    "n": n,
                    "significant": p < 0.05,
                },
                "HR@5": other,
                "NDCG@10": other,
            }
            for a, b, d, lo, hi, p in comps
        ]
    }
    return pl.DataFrame(rows), head, out


BASELINES = {"random": (0.10, 0.0, 0.25, 1.0), "popularity": (0.15, 0.0, 0.3, 1.0), "sasrec": (0.30, 0.1, 0.5, 1.0)}


def line_of(block: str, start: str) -> str:
    return next(line for line in block.splitlines() if line.startswith(start))


def test_verdicts_follow_the_sign_and_p():
    methods = {
        **BASELINES,
        "sft-likelihood": (0.55, 0.35, 0.75, 1.0),
        "grpo-likelihood": (0.05, 0.0, 0.15, 1.0),
        "sft-generative": (0.40, 0.2, 0.6, 0.85),
    }
    comps = [
        ("sft-likelihood", "sasrec", 0.25, 0.05, 0.45, 0.012),
        ("sft-likelihood", "popularity", 0.40, 0.2, 0.6, 0.001),
        ("grpo-likelihood", "sft-likelihood", -0.50, -0.7, -0.3, 0.0005),
        ("grpo-likelihood", "sasrec", -0.25, -0.45, -0.05, 0.03),
        ("grpo-likelihood", "popularity", -0.10, -0.25, 0.0, 0.5),
        ("sft-generative", "sasrec", 0.10, -0.1, 0.3, 0.0625),  # above, but p >= 0.05: not significant
        ("sft-generative", "popularity", 0.25, 0.05, 0.45, 0.049),
    ]
    block = what_this_run_shows(*inputs(methods, comps))
    assert line_of(block, "- SFT (likelihood)") == (
        "- SFT (likelihood) HR@1 0.550 vs SASRec 0.300: +0.250, p = 0.012, significantly above; "
        "vs popularity 0.150: +0.400, p = 0.001, significantly above."
    )
    grpo = line_of(block, "- GRPO (likelihood)")
    assert "vs SASRec 0.300: -0.250, p = 0.030, significantly below;" in grpo
    assert "vs popularity 0.150: -0.100, p = 0.500, not significant." in grpo
    gen = line_of(block, "- SFT (generative)")
    assert "vs SASRec 0.300: +0.100, p = 0.062, not significant;" in gen
    assert "p = 0.049, significantly above." in gen
    assert line_of(block, "- Training stages, HR@1 (likelihood)") == (
        "- Training stages, HR@1 (likelihood): GRPO 0.050 vs SFT 0.550: -0.500, p < 0.001, significantly below."
    )
    assert "Training stages, HR@1 (generative)" not in block  # no grpo-generative vs sft-generative comparison
    # likelihood rows first, in training order, then generative
    order = [line.split(" HR@1")[0] for line in block.splitlines() if line.startswith(("- SFT", "- GRPO"))]
    assert order == ["- SFT (likelihood)", "- GRPO (likelihood)", "- SFT (generative)"]
    assert "- Valid answers, generative protocol" in block and line_of(block, "- Valid").endswith(": SFT 0.85.")
    assert "not corrected for multiple comparisons" in block


def test_best_is_the_max_and_the_strongest_baseline_is_picked_by_hr1():
    methods = {**BASELINES, "itemknn": (0.35, 0.15, 0.55, 1.0), "sft-likelihood": (0.45, 0.25, 0.65, 1.0)}
    comps = [
        (m, b, 0.0, -0.1, 0.1, 1.0) for m in ("sft-likelihood",) for b in ("random", "popularity", "sasrec", "itemknn")
    ]
    block = what_this_run_shows(*inputs(methods, comps))
    assert line_of(block, "- Best") == (
        "- Best HR@1: SFT (likelihood) 0.450 [0.25, 0.65]; strongest baseline: ItemKNN 0.350 [0.15, 0.55]."
    )
    assert line_of(block, "- SFT (likelihood)").startswith("- SFT (likelihood) HR@1 0.450 vs ItemKNN 0.350: ")
    assert "SASRec" not in block  # only the strongest baseline and popularity are spelled out

    methods["sasrec"] = (0.60, 0.4, 0.8, 1.0)  # now a baseline is best
    block = what_this_run_shows(*inputs(methods, comps))
    assert line_of(block, "- Best") == "- Best HR@1: SASRec 0.600 [0.40, 0.80] (a baseline)."
    assert "vs SASRec 0.600" in line_of(block, "- SFT (likelihood)")


def test_sample_size_and_small_n_warning():
    methods = {**BASELINES, "sft-likelihood": (0.45, 0.25, 0.65, 1.0)}
    comps = [("sft-likelihood", b, 0.1, -0.1, 0.3, 0.3) for b in ("random", "popularity", "sasrec")]
    block = what_this_run_shows(*inputs(methods, comps), split="test")
    assert block.startswith("## What this run shows\n\n**1+9 candidates, 20 test users.** The LLM policies were ")
    assert "every baseline is rescored on the same 20" in block
    assert line_of(block, "- Small sample").startswith(
        "- Small sample: at n = 20 the HR@1 95 % CIs are up to ±0.20 wide and no HR@1 difference below 0.30 "
    )
    narrow = {m: (v[0], v[0] - 0.03, v[0] + 0.03, v[3]) for m, v in methods.items()}
    block = what_this_run_shows(*inputs(narrow, comps, n=1000))
    assert "1000 test users" in block and "Small sample" not in block


def test_no_policy_and_other_sizes():
    table, head, _ = inputs(BASELINES, [], size="n99")
    block = what_this_run_shows(table, head, {"n99": []})
    assert "No LLM policy was evaluated" in block and "1+99" not in block
    methods = {**BASELINES, "sft-likelihood": (0.2, 0.0, 0.4, 1.0)}
    table, head, comps = inputs(methods, [("sft-likelihood", "sasrec", -0.1, -0.3, 0.1, 0.5)])
    block = what_this_run_shows(table, head, {**comps, "n99": []})
    assert "**1+9 candidates" in block and "1+99" not in block  # a size without LLM policies gets no paragraph


def test_policies_are_the_compared_methods_likelihood_first():
    comps = [
        {"a": a, "b": b}
        for a, b in [
            ("zeroshot-generative", "random"),
            ("sft-generative", "zeroshot-generative"),
            ("sft-likelihood", "random"),
        ]
    ]
    assert policies_of(comps) == ["sft-likelihood", "zeroshot-generative", "sft-generative"]


@pytest.mark.parametrize("n", [6, 20, 40])
def test_min_significant_diff_is_the_exact_mcnemar_floor(n):
    floor = min_significant_diff(n)
    assert floor == pytest.approx(6 / n)
    for wins in range(n + 1):  # every split of n users into a-only / b-only / ties
        for losses in range(n + 1 - wins):
            a = np.r_[np.ones(wins), np.zeros(losses)]
            if mcnemar_exact(a, 1 - a) < 0.05:
                assert abs(wins - losses) / n >= floor - 1e-12
    assert min_significant_diff(5) is None  # 5 users: even 5 wins out of 5 give p = 0.0625
