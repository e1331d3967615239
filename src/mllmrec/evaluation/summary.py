"""The report's opening block, "What this run shows": the same-sample numbers and paired comparisons in plain words.

    from mllmrec.evaluation.summary import what_this_run_shows
    block = what_this_run_shows(same_table, headline(same), comparisons(same, params), params.split)

Pure functions of what stages/report.py already computed: the same-sample table (rows of
mllmrec.evaluation.report.same_sample_rows: CIs and valid rates), the headline dict (HR@1 per method, present
whatever `eval.ks` is) and the comparisons dict (paired HR@1 differences, CIs, p). Nothing is recomputed: each verdict
reads the comparison's `significant` flag (p < 0.05) and the sign of its difference. Per candidate size with LLM
policies: how many users, the best method by HR@1, each policy against the strongest baseline and popularity, each
training stage against the one before it, the generative protocol's valid-answer rate, and how small n limits what
can be significant.
"""

import math

import numpy as np
import polars as pl

from mllmrec.evaluation.report import PREVIOUS
from mllmrec.evaluation.significance import mcnemar_exact

METRIC = "HR@1"  # the block's one metric (the tables below carry HR@K and NDCG@10)
NAMES = {
    "zeroshot": "zero-shot",
    "sft": "SFT",
    "grpo": "GRPO",
    "sasrec": "SASRec",
    "itemknn": "ItemKNN",
    "markov": "Markov (last item)",
}
PROTOCOLS = ("likelihood", "generative")  # the order of the policy lines; any other protocol comes after
SMALL_CI = 0.1  # above this HR@1 CI half-width, the block spells out what n can resolve


def name(method: str) -> str:
    """A method as a reader writes it: `sft-likelihood` -> `SFT (likelihood)`, `sasrec` -> `SASRec`."""
    stage, _, protocol = method.partition("-")
    pretty = NAMES.get(stage, stage)
    return f"{pretty} ({protocol})" if protocol else pretty


def signed(x: float, digits: int) -> str:
    return f"{round(x, digits) + 0.0:+.{digits}f}"  # + 0.0: -0.0 prints +0.00


def p_text(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def verdict(d: dict) -> str:
    """A paired difference (significance.paired_difference) in words: its `significant` flag and its sign."""
    if not d["significant"]:
        return "not significant"
    if d["diff"] > 0:
        return "significantly above"
    return "significantly below" if d["diff"] < 0 else "significantly different"


def difference(d: dict) -> str:
    """`-0.200, p = 0.289, not significant` (a minus b, p, verdict; the paired CIs are in the report's tables)."""
    return f"{signed(d['diff'], 3)}, {p_text(d['p'])}, {verdict(d)}"


def min_significant_diff(n: int, alpha: float = 0.05) -> float | None:
    """The smallest HR@K difference the exact McNemar test can call significant on n paired users: k/n, k the fewest
    discordant pairs, all won by one method, with p < alpha (k = 6 at 0.05). More discordant pairs need a larger net
    difference, so no smaller difference can be significant. None when not even n discordant pairs suffice."""
    for k in range(1, n + 1):
        if mcnemar_exact(np.ones(k), np.zeros(k)) < alpha:
            return k / n
    return None


def policies_of(comps: list[dict]) -> list[str]:
    """The LLM policy-protocols of one size's comparisons (each one's `a`, and a previous stage it is compared with),
    likelihood first, then generative, each in training order."""
    found = []
    for c in comps:
        stage, _, protocol = c["a"].partition("-")
        if stage in PREVIOUS and c["b"] == f"{PREVIOUS[stage]}-{protocol}":
            found.append(c["b"])
        found.append(c["a"])
    found = list(dict.fromkeys(found))
    rank = {p: i for i, p in enumerate(PROTOCOLS)}
    return sorted(found, key=lambda m: rank.get(m.partition("-")[2], len(PROTOCOLS)))  # stable: training order kept


def _ci(rows: dict, method: str) -> str:
    row = rows.get(method)
    if row is None or math.isnan(row["HR_lo"]):
        return ""
    return f" [{row['HR_lo']:.2f}, {row['HR_hi']:.2f}]"


def size_block(size: str, table: pl.DataFrame, headline: dict, comps: list[dict], split: str = "test") -> list[str]:
    """The lines for one candidate size (`n9`) with LLM policies: table = same-sample rows, headline = headline[size],
    comps = the comparisons of that size."""
    cands = f"1+{size.removeprefix('n')}"
    n = headline["n"]
    values = {m: v[METRIC] for m, v in headline.items() if m != "n"}
    here = table.filter(pl.col("candidates") == cands)
    at_1 = {r["method"]: r for r in here.filter(pl.col("K") == 1).iter_rows(named=True)}
    valid = {r["method"]: r["valid_rate"] for r in here.iter_rows(named=True)}
    policies = policies_of(comps)
    baselines = [m for m in values if m not in policies]
    by_pair = {(c["a"], c["b"]): c[METRIC] for c in comps}
    strongest = max(baselines, key=lambda m: values[m]) if baselines else None  # first of equals: table order

    lines = [
        (
            f"**{cands} candidates, {n} {split} users.** The LLM policies were scored on these {n} users and every "
            f"baseline is rescored on the same {n}, so all numbers and paired tests below are on them."
        ),
        _best_line(values, strongest, at_1),
    ]
    lines += _against_baselines(policies, baselines, strongest, values, by_pair)
    lines += _training_steps(policies, values, by_pair)
    lines += _valid_answers(policies, valid)
    lines += _small_sample(at_1, n)
    return lines


def _best_line(values: dict, strongest: str | None, at_1: dict) -> str:
    """The best method(s) by METRIC with their CIs, and the strongest baseline when no baseline is best."""
    top = max(values.values())
    best = [m for m, v in values.items() if v == top]
    line = f"- Best {METRIC}: " + " and ".join(f"{name(m)} {values[m]:.3f}{_ci(at_1, m)}" for m in best)
    if strongest in best:
        line += " (a baseline)" if len(best) == 1 else ""
    elif strongest is not None:
        line += f"; strongest baseline: {name(strongest)} {values[strongest]:.3f}{_ci(at_1, strongest)}"
    return line + "."


def _against_baselines(
    policies: list[str], baselines: list[str], strongest: str | None, values: dict, by_pair: dict
) -> list[str]:
    """One line per policy: its paired difference to the strongest baseline and to popularity."""
    lines = []
    for policy in policies:
        against = [b for b in dict.fromkeys((strongest, "popularity")) if b in baselines and (policy, b) in by_pair]
        parts = [f"{name(b)} {values[b]:.3f}: {difference(by_pair[(policy, b)])}" for b in against]
        if parts:
            lines.append(f"- {name(policy)} {METRIC} {values[policy]:.3f} vs " + "; vs ".join(parts) + ".")
    return lines


def _training_steps(policies: list[str], values: dict, by_pair: dict) -> list[str]:
    """One line per protocol: each training stage against the stage before it (SFT vs zero-shot, GRPO vs SFT)."""
    lines = []
    for protocol in dict.fromkeys(p.partition("-")[2] for p in policies):
        steps = []
        for policy in policies:
            stage, _, prot = policy.partition("-")
            previous = f"{PREVIOUS.get(stage)}-{prot}"
            if prot == protocol and (policy, previous) in by_pair:
                steps.append(
                    f"{name(stage)} {values[policy]:.3f} vs {name(PREVIOUS[stage])} {values[previous]:.3f}: "
                    + difference(by_pair[(policy, previous)])
                )
        if steps:
            lines.append(f"- Training stages, {METRIC} ({protocol}): " + "; ".join(steps) + ".")
    return lines


def _valid_answers(policies: list[str], valid: dict) -> list[str]:
    """The share of parseable answers per generative policy (none without one)."""
    generative = [p for p in policies if p.endswith("-generative") and p in valid]
    if not generative:
        return []
    rates = ", ".join(f"{name(p.removesuffix('-generative'))} {valid[p]:.2f}" for p in generative)
    return [f"- Valid answers, generative protocol (share of answers with at least one parseable item id): {rates}."]


def _small_sample(at_1: dict, n: int) -> list[str]:
    """The small-sample caveat (CI width, smallest difference that can be significant) when the CIs are wide."""
    half = [(r["HR_hi"] - r["HR_lo"]) / 2 for r in at_1.values() if not math.isnan(r["HR_lo"])]
    floor = min_significant_diff(n)
    widest = max(half) if half else (floor or 1.0)
    if not widest > SMALL_CI:
        return []
    width = f"the {METRIC} 95 % CIs are up to ±{max(half):.2f} wide and " if half else ""
    can = (
        f"no {METRIC} difference below {floor:.2f} ({round(floor * n)} of the {n} users) can reach p < 0.05"
        if floor is not None
        else f"no {METRIC} difference can reach p < 0.05"
    )
    line = f"- Small sample: at n = {n} {width}{can} (exact McNemar); "
    return [line + '"not significant" means not resolved at this n, not equal.']


def what_this_run_shows(table: pl.DataFrame, headline: dict, comps: dict, split: str = "test") -> str:
    """The report's opening Markdown block (also the report stage's last stdout): one paragraph per candidate size
    with LLM policies. table: the same-sample rows (same_sample_rows), headline: headline(same), comps:
    comparisons(same, params)."""
    lines = ["## What this run shows", ""]
    sizes = [size for size, c in comps.items() if c]
    for size in sizes:
        lines += [*size_block(size, table, headline[size], comps[size], split), ""]
    if not sizes:
        lines += ["No LLM policy was evaluated in this run: the tables below compare the baselines only.", ""]
    else:
        caveat = (
            "p: two-sided paired tests on the same users (exact McNemar for HR@1), each at 0.05 and not corrected "
            "for multiple comparisons. The report's tables give every comparison with its paired 95 % CI (at small "
            "n a CI can exclude 0 where the exact test does not reject: the verdicts follow p), HR@K and NDCG@10."
        )
        lines += [caveat, ""]
    return "\n".join(lines)
