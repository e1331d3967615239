"""The ablation grid's table: the finished arms (mllmrec.experiments.grid) compared on the same samples.

    from mllmrec.experiments.ablation import report
    text, plots = report({name: read_arm(root, sha) for name, sha in ...}, reference)

scripts/ablation.py queues the arms and calls this. Everything here is pure (reward per prompt, the share of
completions that answer the item a CoT points at, one function per table): it takes plain frames and the arms' typed
reports (CotMetrics, AugmentReport), so tests feed it hand-made arms.
"""

import numpy as np
import polars as pl

from mllmrec import paths
from mllmrec.cot.leak import find_leaks
from mllmrec.errors import UserError
from mllmrec.evaluation.metrics import bootstrap_ci, per_sample_scores
from mllmrec.evaluation.report import comparison_cells, delta_cell, p_cell, show
from mllmrec.evaluation.significance import (
    compare,
    holm,
    mcnemar_detectable,
    mcnemar_samples_needed,
    paired_difference,
)
from mllmrec.experiments.grid import STAGES
from mllmrec.training.rewards import parse

LABEL = {"sft": "SFT", "grpo": "SFT+GRPO"}  # the two policies of an arm (STAGES), as the tables name them
NOT_SCORED = "not scored"  # a policy evaluated without greedy generation (evaluate.generative_num_negatives: [])


def prompt_rewards(completions: list[dict]) -> pl.DataFrame:
    """sample_id -> mean total reward of its logged GRPO completions (the total = the sum of the components)."""
    rows = [
        {"sample_id": c["sample_id"], "reward": float(sum(c["rewards"].values()))}
        for c in completions
        if c.get("sample_id") is not None
    ]
    if not rows:
        return pl.DataFrame(schema={"sample_id": pl.String, "reward": pl.Float64, "n": pl.UInt32})
    return pl.DataFrame(rows).group_by("sample_id").agg(pl.col("reward").mean(), pl.len().alias("n")).sort("sample_id")


def grpo_signal(completions: list[dict]) -> dict:
    """How much GRPO had to learn from, over its logged completions: the share that kept the answer format (no
    format penalty), and the share of groups (a prompt's completions at one step) whose rewards are all equal: a
    group without reward spread has zero advantage, so it moves nothing.

    >>> c = lambda sid, fmt, hit: {"step": 1, "sample_id": sid, "rewards": {"format": fmt, "hit": hit}}
    >>> grpo_signal([c("a", -1.0, 0.0), c("a", -1.0, 0.0), c("b", 0.0, 1.0), c("b", 0.0, 0.0)])
    {'completions': 4, 'well_formed': 0.5, 'groups': 2, 'without_spread': 0.5}
    """
    groups: dict[tuple, set[float]] = {}
    for c in completions:
        groups.setdefault((c.get("step"), c.get("sample_id")), set()).add(round(float(sum(c["rewards"].values())), 6))
    n = len(completions)
    return {
        "completions": n,
        "well_formed": round(sum(c["rewards"].get("format", 0.0) >= 0 for c in completions) / n, 4) if n else None,
        "groups": len(groups),
        "without_spread": round(sum(len(v) == 1 for v in groups.values()) / len(groups), 4) if groups else None,
    }


def pointed_item(cot: str | None, candidates: list[str], titles: dict[str, str], fuzzy: float = 0.85) -> str | None:
    """The one candidate a CoT names (by [ITEM_<id>] tag or title; mllmrec.cot.leak), None if it names 0 or several.

    >>> pointed_item("They will pick Up next.", ["1", "2"], {"1": "Up (2009)", "2": "Heat (1995)"})
    '1'
    """
    if not cot:
        return None
    named = [c for c in candidates if find_leaks(cot, c, titles.get(c, ""), fuzzy)]
    return named[0] if len(named) == 1 else None


def copy_rates(
    completions: list[dict], samples: pl.DataFrame, titles: dict[str, str], baseline: list[dict] | None = None
) -> dict:
    """Among GRPO completions of prompts whose CoT names one candidate: the share answering that candidate, the
    share of such CoTs naming the target, and (given `baseline`, another arm's completions) the share of the
    baseline's completions on the same prompts that answer the same item without the CoT."""
    pointed = {}
    for s in samples.filter(pl.col("has_cot")).iter_rows(named=True):
        item = pointed_item(s["cot"], list(s["candidates"]), titles)
        if item is not None:
            pointed[s["sample_id"]] = (item, item == s["target"], list(s["candidates"]))

    def share(comps: list[dict]) -> tuple[int, float | None]:
        hits = [
            (parse(c["completion"], pointed[c["sample_id"]][2]).ids[:1] == [pointed[c["sample_id"]][0]])
            for c in comps
            if c.get("sample_id") in pointed
        ]
        return len(hits), (round(float(np.mean(hits)), 4) if hits else None)

    n, rate = share(completions)
    out = {
        "cot_prompts": int(samples["has_cot"].sum()),
        "pointing_prompts": len(pointed),
        "pointing_at_target": sum(t for _, t, _ in pointed.values()),
        "completions": n,
        "answer_pointed": rate,
    }
    if baseline is not None:
        out["baseline_completions"], out["baseline_answer_pointed"] = share(baseline)
    return out


def _ranks(preds: pl.DataFrame, protocol: str) -> pl.DataFrame:
    return preds.filter((pl.col("protocol") == protocol) & (pl.col("num_negatives") == 9)).select(
        "sample_id", pl.col("target_rank").fill_null(-1)
    )


def _mean(values, digits: int = 3) -> str:
    values = [v for v in values if v is not None]
    return f"{np.mean(values):.{digits}f}" if values else "—"


def _last(df: pl.DataFrame, column: str) -> float | None:
    return float(df[column][-1]) if df.height and column in df.columns else None


def report(
    runs: dict[str, dict], reference: str, n_resamples: int = 1000, seed: int = 0, tail: int = 3
) -> tuple[str, dict[str, list[dict]]]:
    """(markdown, {plot stem: rows}) for the arms that finished; failed or missing arms are listed with why."""
    done = {a: r for a, r in runs.items() if "error" not in r}
    if reference not in done:
        raise UserError(
            f"the reference arm {reference!r} has no finished experiment "
            f"({runs.get(reference, {}).get('error', 'not queued')}); the table compares against it"
        )
    metric_rows, comps, gen_cells = _test_scores(done, reference, n_resamples, seed)
    md = [_policy_table(metric_rows), _difference_table(comps, gen_cells, reference)]
    training, plots = _training_table(done, list(runs), tail)
    md += [training, *_inflation_tables(done, reference, comps, n_resamples, seed)]
    failed = [[a, r["error"]] for a, r in runs.items() if "error" in r]
    if failed:
        md.append(show(["arm", "why"], failed, "arms without a finished experiment"))
    return "\n".join(md), plots


def _test_scores(
    done: dict[str, dict], reference: str, n_resamples: int, seed: int
) -> tuple[list[list[str]], list[dict], list[str]]:
    """(rows of the policy table, the paired likelihood comparisons, their generative HR@1 cells): one pass over
    every arm's two policies, which both test tables show. Compared: each arm's SFT+GRPO with the reference's (the
    claims on CoT and captions), then each arm's SFT+GRPO with its own SFT (the claim on GRPO after SFT)."""

    def ci_cell(values: np.ndarray) -> str:
        lo, hi = bootstrap_ci(values, n_resamples, seed)
        return f"{values.mean():.3f} [{lo:.2f},{hi:.2f}]"

    ranks, hits, metric_rows = {}, {}, []
    for arm, r in done.items():
        for stage in STAGES:
            ranks[arm, stage] = {p: _ranks(r["predictions"][stage], p) for p in ("likelihood", "generative")}
            lik, gen = ranks[arm, stage]["likelihood"], ranks[arm, stage]["generative"]
            s_l = per_sample_scores(lik.sort("sample_id")["target_rank"].to_numpy(), [1, 5, 10])
            hits[arm, stage] = s_l["HR@1"]  # by sample_id: compare() below checks both sides hold the same samples
            metric_rows.append(
                [
                    arm,
                    LABEL[stage],
                    str(lik.height),
                    ci_cell(s_l["HR@1"]),
                    ci_cell(s_l["HR@5"]),
                    f"{s_l['NDCG@10'].mean():.3f}",
                    ci_cell(per_sample_scores(gen.sort("sample_id")["target_rank"].to_numpy(), [1])["HR@1"])
                    if gen.height
                    else NOT_SCORED,
                ]
            )
    pairs = [((arm, "grpo"), (reference, "grpo")) for arm in done if arm != reference]
    pairs += [((arm, "grpo"), (arm, "sft")) for arm in done]
    comps, gen_cells = [], []
    for a, b in pairs:
        names = f"{a[0]} {a[1]}", f"{b[0]} {b[1]}"
        lik_a, lik_b = ranks[a]["likelihood"], ranks[b]["likelihood"]
        c = compare(lik_a, lik_b, ["HR@1", "HR@5", "NDCG@10"], n_resamples, seed, *names)
        label = [f"{arm} {LABEL[stage]}" for arm, stage in (a, b)]
        comps.append(
            {"a": label[0], "b": label[1], "n": lik_a.height, "discordant": float(np.mean(hits[a] != hits[b])), **c}
        )
        gen_a, gen_b = ranks[a]["generative"], ranks[b]["generative"]
        if gen_a.height and gen_b.height:
            gen_cells.append(delta_cell(compare(gen_a, gen_b, ["HR@1"], n_resamples, seed, *names)["HR@1"]))
        else:
            gen_cells.append(NOT_SCORED)
    return metric_rows, comps, gen_cells


def _policy_table(metric_rows: list[list[str]]) -> str:
    n = metric_rows[0][2]
    return show(
        ["arm", "policy", "n", "HR@1 [95 % CI]", "HR@5 [95 % CI]", "NDCG@10", "generative HR@1"],
        metric_rows,
        f"test split, 1+9 candidates, {n} users: each arm's policies on the same samples",
        "likelihood ranking (the full candidate order) unless marked generative (the greedy answer line); "
        "95 % bootstrap CIs.",
    )


def _power_cells(c: dict) -> list[str]:
    """Pairs needed for 80 % power at this ΔHR@1 and discordance, and the smallest ΔHR@1 these pairs detect."""
    needed = mcnemar_samples_needed(c["HR@1"]["diff"], c["discordant"])
    detectable = mcnemar_detectable(c["discordant"], c["n"])
    return [
        "—" if needed is None else str(needed),
        "—" if detectable is None else f"{detectable:.3f}",
    ]


def _difference_table(comps: list[dict], gen_cells: list[str], reference: str) -> str:
    header, rows = comparison_cells(comps)
    holm_p = holm([c["HR@1"]["p"] for c in comps])
    rows = [
        row[:3] + [p_cell(q, q < 0.05)] + row[3:] + [g] + _power_cells(c)
        for row, g, q, c in zip(rows, gen_cells, holm_p, comps)
    ]
    return show(
        header[:3]
        + ["HR@1 Holm p"]
        + header[3:]
        + ["Δgenerative HR@1 [95 % CI] p", "n for 80 % power (HR@1)", "detectable ΔHR@1 at n"],
        rows,
        f"paired differences (same users): each arm against {reference} SFT+GRPO, each arm's GRPO against its SFT",
        "Δ = a − b on the same samples, paired bootstrap 95 % CI; p two-sided: exact McNemar for HR, sign-flip "
        f"permutation for NDCG; * p < 0.05. Holm p: HR@1's p corrected for the {len(rows)} "
        f"comparison{'s' * (len(rows) != 1)} of this table (family-wise). Power (two-sided 0.05, McNemar, Connor "
        "1987) at each comparison's observed share of discordant pairs: the pairs needed to detect its observed "
        "ΔHR@1 (— without a difference), and the smallest ΔHR@1 its n would detect (— when even every discordant "
        "pair going one way would not reach that power at this n, or none is discordant).",
    )


def _training_table(done: dict[str, dict], arms: list[str], tail: int) -> tuple[str, dict[str, list[dict]]]:
    """The training table and the two plots' rows: GRPO reward per step (a column per arm of `arms`), and each
    finished arm's last train reward against its valid HR@1."""
    train_rows, reward_plot, scatter = [], {}, []
    for arm, r in done.items():
        train_rows.append(_training_row(arm, r, tail))
        curve = r["grpo_curve"]
        for step, reward in curve.select("step", "reward").iter_rows():
            # every arm a column, empty where it has no value: DVC refuses a plot whose y column is missing
            reward_plot.setdefault(int(step), {"step": int(step), **dict.fromkeys(arms)})[arm] = reward
        last = curve["reward"].tail(tail).to_list()
        scatter.append(
            {
                "arm": arm,
                "train_reward": round(float(np.mean(last)), 4) if last else None,
                "valid_HR@1": _last(r["grpo_valid"], "valid_HR@1"),
            }
        )
    table = show(
        [
            "arm",
            "CoT drafted / refined ok / after leak audit / kept",
            "leak rate before / after audit",
            "SFT samples with CoT (asked)",
            "GRPO samples with CoT (asked)",
            f"GRPO reward, first {tail} steps",
            f"GRPO reward, last {tail} steps",
            "GRPO answers well-formed / groups without reward spread (groups)",
            "valid HR@1 after SFT",
            "valid HR@1 after GRPO",
            "finished (UTC)",
        ],
        train_rows,
        "training, per arm",
        f"CoT counts: {paths.COT_METRICS} and {paths.AUGMENT_REPORT} of each experiment; an arm whose "
        f"share could not be met reports what it used. Rewards: {paths.live_series(paths.GRPO_LIVE_PLOTS, 'reward')} (mean over "
        f"each step's completions); well-formed: no format penalty, over the logged completions ({paths.GRPO_COMPLETIONS}); "
        "a group (one prompt's completions at one step) whose rewards are all equal has zero advantage: no signal; "
        "valid HR@1: the monitors' last point "
        f"({paths.live_series(paths.SFT_LIVE_PLOTS, 'valid_HR@1')}, {paths.live_series(paths.GRPO_LIVE_PLOTS, 'valid_HR@1')}).",
    )
    return table, {"grpo_reward": [reward_plot[s] for s in sorted(reward_plot)], "reward_vs_valid": scatter}


def _training_row(arm: str, r: dict, tail: int) -> list[str]:
    cot, aug, curve = r["cot"], r["augment"], r["grpo_curve"]
    first, last = curve["reward"].head(tail).to_list(), curve["reward"].tail(tail).to_list()
    valid = {s: _last(r[f"{s}_valid"], "valid_HR@1") for s in STAGES}
    signal = grpo_signal(r["completions"])
    return [
        arm,
        f"{cot.train_samples_drafted} / {cot.refined_format_ok} / {cot.with_cot_after_audit} / {cot.kept}",
        f"{cot.leak_rate_before} / {cot.leak_rate_after}",
        f"{aug.sft.with_cot} of {aug.sft.requested}",
        f"{aug.grpo.with_cot} of {aug.grpo.requested} ({_grpo_cot_prompts(r)} trained)",
        _mean(first),
        _mean(last),
        "—"
        if signal["groups"] == 0
        else f"{signal['well_formed']:.2f} / {signal['without_spread']:.2f} ({signal['groups']})",
        *(f"{v:.2f}" if v is not None else "—" for v in valid.values()),
        r["finished"],
    ]


def _inflation_tables(
    done: dict[str, dict], reference: str, comps: list[dict], n_resamples: int, seed: int
) -> list[str]:
    """The reward-inflation table (arms whose GRPO prompts had CoT, against the reference on the same prompts), and
    a note naming the arms with CoT in their GRPO rows but none among the prompts GRPO trained on."""
    base = done[reference]
    base_rewards = prompt_rewards(base["completions"])
    inflation, untrained = [], []
    for arm, r in done.items():
        if arm == reference:
            continue
        if _grpo_cot_prompts(r):
            test = next(c for c in comps if (c["a"], c["b"]) == (f"{arm} SFT+GRPO", f"{reference} SFT+GRPO"))["HR@1"]
            inflation.append(_inflation_row(arm, r, base, base_rewards, test, n_resamples, seed))
        elif r["augment"].grpo.with_cot:
            # CoT rows in its GRPO file, none among the prompts it trained on: nothing to pair, said, not hidden
            untrained.append(
                f"{arm}: {r['augment'].grpo.with_cot} GRPO rows with CoT, none among the "
                "prompts GRPO trained on (its GRPO input equals the reference's); no inflation "
                "to measure."
            )
    md = []
    if inflation:
        md.append(
            show(
                [
                    "arm",
                    "GRPO prompts paired",
                    "Δ train reward per prompt [95 % CI] p",
                    "Δ test HR@1 (likelihood) p",
                    "CoTs naming one candidate",
                    "completions answering it",
                    f"{reference} completions answering it",
                ],
                inflation,
                f"reward inflation: arms with CoT in GRPO prompts against {reference}",
                "train reward: the mean total reward of each prompt's logged completions "
                f"({paths.GRPO_COMPLETIONS}), paired by prompt, sign-flip p; the item a CoT names: its [ITEM_<id>] "
                "tag or title (mllmrec.cot.leak); the last column is the reference arm on the same prompts without it.",
            )
        )
    if untrained:
        md.append(
            "\n".join(["Arms with CoT in their GRPO rows but none in the prompts they trained on:", "", *untrained, ""])
        )
    return md


def _inflation_row(
    arm: str, r: dict, base: dict, base_rewards: pl.DataFrame, test: dict, n_resamples: int, seed: int
) -> list[str]:
    """One arm's row: its train reward per prompt against the reference's, its test HR@1 difference (`test`), and
    how often its completions answer the item its CoT names."""
    joined = prompt_rewards(r["completions"]).join(base_rewards, on="sample_id", suffix="_ref")
    d = (
        paired_difference(joined["reward"].to_numpy(), joined["reward_ref"].to_numpy(), n_resamples, seed, binary=False)
        if joined.height
        else None
    )
    rates = copy_rates(r["completions"], r["grpo_samples"], r["titles"], base["completions"])
    return [
        arm,
        str(joined.height),
        delta_cell(d) if d else "—",
        delta_cell(test),
        f"{rates['pointing_prompts']} of {rates['cot_prompts']} ({rates['pointing_at_target']} at the target)",
        f"{rates['answer_pointed']} ({rates['completions']})",
        f"{rates.get('baseline_answer_pointed')} ({rates.get('baseline_completions')})",
    ]


def _grpo_cot_prompts(r: dict) -> int:
    return len({c["sample_id"] for c in r["completions"] if c.get("has_cot")})
