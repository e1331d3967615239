"""The ablation grid's table: arms read from their DVC experiments, compared on the same samples.

    from mllmrec.evaluation.ablation import load_arms, read_arm, report
    reference, arms = load_arms(Path("configs/ablation-arms.yaml"))
    text, plots = report({name: read_arm(root, sha) for name, sha in ...}, reference)

scripts/ablation.py queues the arms and calls this. The pure parts (reward per prompt, the share of completions that
answer the item a CoT points at, the tables) take plain frames and dicts, so tests feed them hand-made arms.
"""

import io
import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import polars as pl

from mllmrec.config import read_yaml
from mllmrec.errors import UserError

STAGES = ("sft", "grpo")  # each arm's two policies: SFT only, SFT + GRPO (rows of one experiment)


def load_arms(path: Path) -> tuple[str, dict[str, dict]]:
    """(reference arm, {arm: {dotted.key: value}}) from the arms file, checked."""
    data = read_yaml(path, "arms file (configs/ablation-arms.yaml is the default)")
    arms, reference = data.get("arms"), data.get("reference")
    if not isinstance(arms, dict) or not arms:
        raise UserError(f"{path}: expected `arms:` mapping arm names to `-S` overrides ({{dotted.key: value}})")
    for name, overrides in arms.items():
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", str(name)):
            raise UserError(f"{path}: arm {name!r}: names are experiment names: lowercase letters, digits, '-'")
        if not isinstance(overrides, dict | type(None)):
            raise UserError(f"{path}: arm {name!r}: expected a mapping of dotted params keys, got {overrides!r}")
        arms[name] = overrides or {}
    if reference not in arms:
        raise UserError(f"{path}: reference {reference!r} is not one of the arms {sorted(arms)}")
    return reference, arms


def experiment_refs(root: Path) -> dict[str, str]:
    """experiment name -> commit of its newest run (DVC keeps experiments as git refs under refs/exps/)."""
    out = subprocess.run(
        ["git", "for-each-ref", "refs/exps", "--format=%(committerdate:unix) %(objectname) %(refname)"],
        cwd=root,
        text=True,
        capture_output=True,
        check=True,
    ).stdout
    refs: dict[str, tuple[int, str]] = {}
    for line in out.splitlines():
        when, sha, ref = line.split(" ", 2)
        name = ref.rsplit("/", 1)[-1]
        if name not in refs or int(when) > refs[name][0]:
            refs[name] = (int(when), sha)
    return {name: sha for name, (_, sha) in refs.items()}


def failed_tasks(queue_status: str) -> set[str]:
    """Names of the arms `dvc queue status` lists as failed (its table: Task Name Created Status)."""
    return {
        cols[1]
        for line in queue_status.splitlines()
        if (cols := line.split()) and len(cols) >= 4 and cols[-1] == "Failed"
    }


def last_error(log: str) -> str:
    """The line of a failed arm's log that says why: the stage's red `error:` line, else the log's last line."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("error:", "ERROR:"))]
    return (errors or lines or ["(empty log)"])[-1][:300]


# ---- reading one arm at its experiment commit ----
def _git_text(root: Path, sha: str, path: str) -> str:
    r = subprocess.run(["git", "show", f"{sha}:{path}"], check=False, cwd=root, text=True, capture_output=True)
    if r.returncode:
        raise UserError(f"experiment {sha[:7]}: {path} is not in its commit ({r.stderr.strip()[:200]})")
    return r.stdout


def _dvc_bytes(root: Path, sha: str, path: str) -> bytes:
    import dvc.api

    try:
        with dvc.api.open(path, repo=str(root), rev=sha, mode="rb") as f:
            return f.read()
    except Exception as e:  # noqa: BLE001 - missing from the local cache, or not an output at that commit
        raise UserError(
            f"experiment {sha[:7]}: cannot read {path} ({type(e).__name__}: {e}); `dvc exp pull` or rerun the arm"
        ) from None


def read_arm(root: Path, sha: str) -> dict:
    """Everything the table needs from one finished experiment."""

    def csv(path: str) -> pl.DataFrame:
        return pl.read_csv(io.StringIO(_git_text(root, sha, path)))

    def parquet(path: str) -> pl.DataFrame:
        return pl.read_parquet(io.BytesIO(_dvc_bytes(root, sha, path)))

    jsonl = _dvc_bytes(root, sha, "data/grpo/completions.jsonl").decode()
    return {
        "sha": sha,
        "predictions": {s: parquet(f"data/predictions/{s}.parquet") for s in STAGES},
        "grpo_curve": csv("plots/grpo_train.csv"),
        "sft_valid": csv("plots/sft_valid.csv"),
        "grpo_valid": csv("plots/grpo_valid.csv"),
        "cot": json.loads(_git_text(root, sha, "metrics/cot.json")),
        "augment": json.loads(_dvc_bytes(root, sha, "data/augment/report.json")),
        "completions": [json.loads(line) for line in jsonl.splitlines() if line.strip()],
        "grpo_samples": parquet("data/augment/grpo.parquet"),
        "titles": dict(parquet("data/ingest/items.parquet").select("item_id", "title").iter_rows()),
        # outputs hold no durations (same run, same bytes): the experiment commit's time says when the arm ended
        "finished": subprocess.run(
            ["git", "show", "-s", "--format=%cd", "--date=format-local:%H:%M:%S", sha],
            cwd=root,
            text=True,
            capture_output=True,
            check=True,
            env={**os.environ, "TZ": "UTC"},
        ).stdout.strip(),
    }


# ---- pure parts ----
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


def pointed_item(cot: str | None, candidates: list[str], titles: dict[str, str], fuzzy: float = 0.85) -> str | None:
    """The one candidate a CoT names (by [ITEM_<id>] tag or title; mllmrec.cot.leak), None if it names 0 or several.

    >>> pointed_item("They will pick Up next.", ["1", "2"], {"1": "Up (2009)", "2": "Heat (1995)"})
    '1'
    """
    from mllmrec.cot.leak import find_leaks

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
    from mllmrec.training.rewards import parse

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
    from mllmrec.evaluation.metrics import bootstrap_ci, per_sample_scores
    from mllmrec.evaluation.report import comparison_cells, delta_cell, show
    from mllmrec.evaluation.significance import compare, paired_difference

    done = {a: r for a, r in runs.items() if "error" not in r}
    if reference not in done:
        raise UserError(
            f"the reference arm {reference!r} has no finished experiment "
            f"({runs.get(reference, {}).get('error', 'not queued')}); the table compares against it"
        )
    ref = {p: _ranks(done[reference]["predictions"]["grpo"], p) for p in ("likelihood", "generative")}
    label = {"sft": "SFT", "grpo": "SFT+GRPO"}
    md = []

    def ci_cell(values: np.ndarray) -> str:
        lo, hi = bootstrap_ci(values, n_resamples, seed)
        return f"{values.mean():.3f} [{lo:.2f},{hi:.2f}]"

    metric_rows, comps, gen_cells = [], [], []
    for arm, r in done.items():
        for stage in STAGES:
            lik, gen = _ranks(r["predictions"][stage], "likelihood"), _ranks(r["predictions"][stage], "generative")
            s_l = per_sample_scores(lik.sort("sample_id")["target_rank"].to_numpy(), [1, 5, 10])
            s_g = per_sample_scores(gen.sort("sample_id")["target_rank"].to_numpy(), [1])
            metric_rows.append(
                [
                    arm,
                    label[stage],
                    str(lik.height),
                    ci_cell(s_l["HR@1"]),
                    ci_cell(s_l["HR@5"]),
                    f"{s_l['NDCG@10'].mean():.3f}",
                    ci_cell(s_g["HR@1"]),
                ]
            )
            if (arm, stage) == (reference, "grpo"):
                continue
            c = compare(
                lik,
                ref["likelihood"],
                ["HR@1", "HR@5", "NDCG@10"],
                n_resamples,
                seed,
                f"{arm} {stage}",
                f"{reference} grpo",
            )
            comps.append({"a": f"{arm} {label[stage]}", "b": f"{reference} SFT+GRPO", "n": lik.height, **c})
            gen_cells.append(
                delta_cell(
                    compare(gen, ref["generative"], ["HR@1"], n_resamples, seed, f"{arm} {stage}", f"{reference} grpo")[
                        "HR@1"
                    ]
                )
            )
    n = metric_rows[0][2]
    md.append(
        show(
            ["arm", "policy", "n", "HR@1 [95 % CI]", "HR@5 [95 % CI]", "NDCG@10", "generative HR@1"],
            metric_rows,
            f"test split, 1+9 candidates, {n} users: each arm's policies on the same samples",
            "likelihood ranking (the full candidate order) unless marked generative (the greedy answer line); "
            "95 % bootstrap CIs.",
        )
    )
    header, rows = comparison_cells(comps)
    rows = [row + [g] for row, g in zip(rows, gen_cells)]
    md.append(
        show(
            header + ["Δgenerative HR@1 [95 % CI] p"],
            rows,
            f"paired differences against {reference} SFT+GRPO (same users)",
            "Δ = arm − reference on the same samples, paired bootstrap 95 % CI; p two-sided: exact McNemar for "
            f"HR, sign-flip permutation for NDCG; * p < 0.05, not corrected for the {len(rows)} comparisons.",
        )
    )

    train_rows, reward_plot, scatter = [], {}, []
    for arm, r in done.items():
        cot, aug, curve = r["cot"], r["augment"], r["grpo_curve"]
        first, last = curve["reward"].head(tail).to_list(), curve["reward"].tail(tail).to_list()
        valid = {s: _last(r[f"{s}_valid"], "valid_HR@1") for s in STAGES}
        train_rows.append(
            [
                arm,
                (
                    f"{cot['train_samples_drafted']} / {cot['refined_format_ok']} / {cot['with_cot_after_audit']} / "
                    f"{cot['kept']}"
                ),
                f"{cot['leak_rate_before']} / {cot['leak_rate_after']}",
                f"{aug['sft']['with_cot']} of {aug['sft']['requested']}",
                f"{aug['grpo']['with_cot']} of {aug['grpo']['requested']} ({_grpo_cot_prompts(r)} trained)",
                _mean(first),
                _mean(last),
                *(f"{v:.2f}" if v is not None else "—" for v in valid.values()),
                r["finished"],
            ]
        )
        for step, reward in curve.select("step", "reward").iter_rows():
            # every arm a column, empty where it has no value: DVC refuses a plot whose y column is missing
            reward_plot.setdefault(int(step), {"step": int(step), **dict.fromkeys(runs)})[arm] = reward
        scatter.append(
            {"arm": arm, "train_reward": round(float(np.mean(last)), 4) if last else None, "valid_HR@1": valid["grpo"]}
        )
    md.append(
        show(
            [
                "arm",
                "CoT drafted / refined ok / after leak audit / kept",
                "leak rate before / after audit",
                "SFT samples with CoT (asked)",
                "GRPO samples with CoT (asked)",
                f"GRPO reward, first {tail} steps",
                f"GRPO reward, last {tail} steps",
                "valid HR@1 after SFT",
                "valid HR@1 after GRPO",
                "finished (UTC)",
            ],
            train_rows,
            "training, per arm",
            "CoT counts: metrics/cot.json and data/augment/report.json of each experiment; an arm whose "
            "share could not be met reports what it used. Rewards: plots/grpo_train.csv (mean over each step's "
            "completions); valid HR@1: the monitors' last point (plots/sft_valid.csv, plots/grpo_valid.csv).",
        )
    )

    inflation, untrained = [], []
    base = done[reference]
    base_rewards = prompt_rewards(base["completions"])
    for arm, r in done.items():
        if arm == reference:
            continue
        if not _grpo_cot_prompts(r):
            if r["augment"]["grpo"]["with_cot"]:
                # CoT rows in its GRPO file, none among the prompts it trained on: nothing to pair, said, not hidden
                untrained.append(
                    f"{arm}: {r['augment']['grpo']['with_cot']} GRPO rows with CoT, none among the "
                    "prompts GRPO trained on (its GRPO input equals the reference's); no inflation "
                    "to measure."
                )
            continue
        joined = prompt_rewards(r["completions"]).join(base_rewards, on="sample_id", suffix="_ref")
        d = (
            paired_difference(
                joined["reward"].to_numpy(), joined["reward_ref"].to_numpy(), n_resamples, seed, binary=False
            )
            if joined.height
            else None
        )
        rates = copy_rates(r["completions"], r["grpo_samples"], r["titles"], base["completions"])
        test = next(c for c in comps if c["a"] == f"{arm} SFT+GRPO")["HR@1"]
        inflation.append(
            [
                arm,
                str(joined.height),
                delta_cell(d) if d else "—",
                delta_cell(test),
                f"{rates['pointing_prompts']} of {rates['cot_prompts']} ({rates['pointing_at_target']} at the target)",
                f"{rates['answer_pointed']} ({rates['completions']})",
                f"{rates.get('baseline_answer_pointed')} ({rates.get('baseline_completions')})",
            ]
        )
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
                "(data/grpo/completions.jsonl), paired by prompt, sign-flip p; the item a CoT names: its [ITEM_<id>] "
                "tag or title (mllmrec.cot.leak); the last column is the reference arm on the same prompts without it.",
            )
        )
    if untrained:
        md.append(
            "\n".join(["Arms with CoT in their GRPO rows but none in the prompts they trained on:", "", *untrained, ""])
        )
    failed = [[a, r["error"]] for a, r in runs.items() if "error" in r]
    if failed:
        md.append(show(["arm", "why"], failed, "arms without a finished experiment"))
    plots = {"grpo_reward": [reward_plot[s] for s in sorted(reward_plot)], "reward_vs_valid": scatter}
    return "\n".join(md), plots


def _grpo_cot_prompts(r: dict) -> int:
    return len({c["sample_id"] for c in r["completions"] if c.get("has_cot")})
