"""The ablation grid: arms file checks, overrides validated before queueing, and the table on hand-made arms.

.venv/bin/pytest tests/test_ablation.py -q
"""

import shutil
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from mllmrec.cot.reports import CotMetrics
from mllmrec.errors import UserError
from mllmrec.experiments.ablation import NOT_SCORED, copy_rates, prompt_rewards, report
from mllmrec.experiments.grid import failed_tasks, last_error, load_arms
from mllmrec.training.augment import AugmentReport, CotCounts, CotDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import ablation as ablation_script
from ablation import PRESETS, arm_params, set_flag
from apply_preset import apply, validate

TITLES = dict(
    enumerate(
        [
            "Heat (1995)",
            "Casablanca (1942)",
            "Alien (1979)",
            "Fargo (1996)",
            "Vertigo (1958)",
            "Jaws (1975)",
            "Rocky (1976)",
            "Psycho (1960)",
            "Amadeus (1984)",
            "Gandhi (1982)",
        ]
    )
)
TITLES = {str(i): t for i, t in TITLES.items()}
CANDS = [str(i) for i in range(10)]


def test_every_shipped_arm_validates_on_the_presets(tmp_path):
    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    for preset in PRESETS:
        merged = apply(preset, params)
    reference, arms = load_arms(ROOT / "configs/ablation-arms.yaml")
    assert reference == "no-cot" and {"no-cot", "reliable-cot", "leaky-cot", "captions-history", "captions-all"} <= set(
        arms
    )
    for name, overrides in arms.items():
        validate(arm_params(merged, overrides), name)  # raises on a value the params models refuse
    leaky = arm_params(merged, arms["leaky-cot"])
    assert leaky["refine_cot"]["show_target"] and leaky["assess_cot"]["keep"] == "all"
    assert arm_params(merged, arms["captions-all"])["prompt"]["captions"] == "all"
    # the sizing the README promises: SFT sees each augment sample once, GRPO each of its prompts once
    assert merged["sft"]["max_steps"] * merged["sft"]["batch_size"] == merged["augment"]["max_samples"]
    g = merged["grpo"]
    assert (
        g["max_steps"] * g["batch_size"] * g["grad_accum"] // g["num_generations"]
        == g["max_samples"]
        <= merged["draft_cot"]["max_samples"]
    )


def test_bad_arms_are_refused_before_anything_runs(tmp_path):
    merged = yaml.safe_load((ROOT / "params.yaml").read_text())
    with pytest.raises(UserError, match="no key 'sft_cot_probability'"):
        arm_params(merged, {"augment.sft_cot_probability": 0.0})
    with pytest.raises(UserError, match="no section 'augmnt'"):
        arm_params(merged, {"augmnt.sft_cot_prob": 0.0})
    with pytest.raises(UserError, match="captions"):
        validate(arm_params(merged, {"prompt.captions": "some"}), "arm")
    bad = tmp_path / "arms.yaml"
    bad.write_text("reference: base\narms:\n  No_Cot: {}\n")
    with pytest.raises(UserError, match="No_Cot"):
        load_arms(bad)
    bad.write_text("reference: missing\narms:\n  a: {}\n")
    with pytest.raises(UserError, match="reference 'missing'"):
        load_arms(bad)


def test_only_names_shipped_arms_and_keeps_the_reference(monkeypatch):
    # refused before presets are applied or anything runs (no experiments exist: the reference has no result)
    monkeypatch.setattr(ablation_script.grid, "experiment_refs", lambda root: {})
    monkeypatch.setattr(ablation_script, "apply", lambda *a: pytest.fail("params.yaml touched"))
    with pytest.raises(UserError, match=r"--only \['captions-hist'\]: not arms"):
        ablation_script.queue(ablation_script.ARMS, PRESETS, ["no-cot", "captions-hist"])
    with pytest.raises(UserError, match="leaves out the reference arm 'no-cot'"):
        ablation_script.queue(ablation_script.ARMS, PRESETS, ["captions-history"])


def test_set_flags_are_yaml_scalars_dvc_parses_back():
    assert [set_flag("a.b", v) for v in (True, 0.0, 0.5, "history")] == [
        "a.b=true",
        "a.b=0.0",
        "a.b=0.5",
        "a.b=history",
    ]


def test_queue_status_and_logs_name_the_failed_arm():
    status = (
        "Task     Name          Created    Status\n1a2b3c4  no-cot        10:01 AM   Success\n"
        "5d6e7f8  leaky-cot     10:01 AM   Failed\n9a0b1c2  captions-all  10:01 AM   Queued\n"
    )
    assert failed_tasks(status) == {"leaky-cot"}
    log = "Running stage 'sft':\n> python stages/sft.py\nerror: sft.max_steps 30 x 4 > 10 samples\nERROR: failed"
    assert last_error(log) == "ERROR: failed"
    assert last_error("Running stage 'sft':\nerror: sft: out of memory\n") == "error: sft: out of memory"


def _completion(sid, answer, reward, has_cot=False):
    return {
        "step": 1,
        "sample_id": sid,
        "has_cot": has_cot,
        "completion": f"[ITEM_{answer}] {TITLES[answer]}",
        "rewards": {"format": 0.0, "hit": reward if reward == 1.0 else 0.0, "valid_miss": 0.3 * (reward != 1.0)},
    }


def test_prompt_rewards_average_each_prompts_completions():
    df = prompt_rewards(
        [
            _completion("s1", "0", 1.0),
            _completion("s1", "1", 0.3),
            _completion("s2", "2", 0.3),
            {"step": 1, "sample_id": None, "completion": "", "rewards": {"format": -1.0}},
        ]
    )
    assert df.to_dicts() == [
        {"sample_id": "s1", "reward": pytest.approx(0.65), "n": 2},
        {"sample_id": "s2", "reward": pytest.approx(0.3), "n": 1},
    ]  # unnamed rows skipped


def test_copy_rates_count_answers_of_the_named_item():
    samples = pl.DataFrame(
        {
            "sample_id": ["s1", "s2", "s3"],
            "candidates": [CANDS] * 3,
            "target": ["0", "1", "2"],
            "has_cot": [True, True, False],
            "cot": ["Step 4: they will watch Heat next.", "Step 4: [ITEM_5] or [ITEM_6].", None],
        }
    )
    leaky = [
        _completion("s1", "0", 1.0, True),
        _completion("s1", "0", 1.0, True),
        _completion("s1", "3", 0.3, True),
        _completion("s2", "5", 0.3, True),
        _completion("s3", "2", 1.0),
    ]
    base = [_completion("s1", "0", 1.0), _completion("s1", "4", 0.3)]
    r = copy_rates(leaky, samples, TITLES, base)
    # s1's CoT names one candidate (the target, by title); s2's names two: not counted; s3 has none
    assert r == {
        "cot_prompts": 2,
        "pointing_prompts": 1,
        "pointing_at_target": 1,
        "completions": 3,
        "answer_pointed": round(2 / 3, 4),
        "baseline_completions": 2,
        "baseline_answer_pointed": 0.5,
    }


def _draw(with_cot: int) -> CotDraw:
    """A CoT draw of 12 requested among 120 samples."""
    return CotDraw(cot_prob=0.1, requested=12, with_cot=with_cot, shortfall=12 - with_cot, share=with_cot / 120)


def _arm(hits_sft, hits_grpo, rewards, with_cot=0, cot_sids=()):
    """A finished arm: target_rank 0 where hit else 3, both protocols; GRPO completions with `rewards` per prompt."""

    def preds(hits):
        ranks = [0 if h else 3 for h in hits]
        base = pl.DataFrame(
            {"sample_id": [f"t{i}" for i in range(len(hits))], "target_rank": ranks, "num_negatives": 9}
        )
        return pl.concat([base.with_columns(protocol=pl.lit(p)) for p in ("likelihood", "generative")])

    completions = [
        _completion(f"g{i}", "0" if r == 1.0 else "1", r, f"g{i}" in cot_sids)
        for i, rs in enumerate(rewards)
        for r in rs
    ]
    samples = pl.DataFrame(
        {
            "sample_id": [f"g{i}" for i in range(len(rewards))],
            "candidates": [CANDS] * len(rewards),
            "target": ["0"] * len(rewards),
            "has_cot": [f"g{i}" in cot_sids for i in range(len(rewards))],
            "cot": ["Step 4: Heat." if f"g{i}" in cot_sids else None for i in range(len(rewards))],
        }
    )
    steps = pl.DataFrame({"step": [1, 2, 3, 4], "reward": [float(np.mean(rs)) for rs in rewards[:4]]})
    return {
        "sha": "0" * 40,
        "predictions": {"sft": preds(hits_sft), "grpo": preds(hits_grpo)},
        "grpo_curve": steps,
        "sft_valid": pl.DataFrame({"step": [0, 30], "valid_HR@1": [0.1, 0.2]}),
        "grpo_valid": pl.DataFrame({"step": [0, 12], "valid_HR@1": [0.2, 0.25]}),
        "cot": CotMetrics(
            train_samples_drafted=6,
            refined_format_ok=5,
            with_cot_after_audit=5,
            kept=with_cot,
            kept_share=round(with_cot / 6, 4),
            leak_rate_before=0.4,
            leak_rate_after=0.0,
            median_confidence=0.5,
            target_top1_share=0.6,
            refine_failed={"wrong_format": 1},
        ),
        "augment": AugmentReport(
            num_negatives=9,
            train_samples=120,
            samples=120,
            cots=CotCounts(rows=6, kept=with_cot, kept_not_train=0, kept_in_samples=with_cot),
            sft=_draw(with_cot),
            grpo=_draw(len(cot_sids)),
        ),
        "completions": completions,
        "grpo_samples": samples,
        "titles": TITLES,
        "finished": "12:00:00",
    }


def test_report_pairs_arms_on_the_same_samples_and_marks_failed_arms():
    rng = np.random.default_rng(0)
    base_hits = rng.random(60) < 0.2
    better = base_hits | (rng.random(60) < 0.5)  # the leaky arm's GRPO policy hits a superset: a clear gain
    ref = _arm(base_hits, base_hits, [[0.3, 0.3]] * 8)
    leaky = _arm(base_hits, better, [[1.0, 1.0]] * 8, cot_sids={f"g{i}" for i in range(8)})
    runs = {"no-cot": ref, "leaky-cot": leaky, "captions-all": {"error": "failed: error: out of memory"}}
    text, plots = report(runs, "no-cot")
    assert report(runs, "no-cot") == (text, plots)  # the same experiments give the same bytes
    line = next(row for row in text.splitlines() if row.startswith("| leaky-cot SFT+GRPO − no-cot SFT+GRPO"))
    assert "p<0.001*" in line and "+0." in line.split("|")[3]  # a superset of hits: positive and significant
    cells = [c.strip() for c in line.split("|")]
    assert cells[4].startswith("p<0.001*") or cells[4].startswith("p=0.00")  # Holm's correction over 3 comparisons
    grpo_gain = next(row for row in text.splitlines() if row.startswith("| leaky-cot SFT+GRPO − leaky-cot SFT"))
    assert "p<0.001*" in grpo_gain  # GRPO's policy against the arm's own SFT policy: the same superset
    same = [
        c.strip()
        for c in next(r for r in text.splitlines() if r.startswith("| no-cot SFT+GRPO − no-cot SFT")).split("|")
    ]
    assert "+0.000" in same[3] and "p=1.000" in same[3] and same[4] == "p=1.000"  # identical hits: no difference
    assert same[-3:-1] == ["—", "—"]  # nothing to detect, no discordant pair to size a test with
    assert "Holm p: HR@1's p corrected for the 3 comparisons" in text
    inflation = next(row for row in text.splitlines() if row.startswith("| leaky-cot | 8 |"))
    assert "+0.700" in inflation and "1.0 (16)" in inflation  # reward 1.0 vs 0.3 on each paired prompt; all copy
    assert "| captions-all | failed: error: out of memory |" in text
    training = next(row for row in text.splitlines() if row.startswith("| no-cot | 6 / 5 / 5 / 0 |"))
    assert "| 1.00 / 1.00 (8) |" in training  # every answer well-formed, but two equal rewards per prompt: no signal
    assert [r["step"] for r in plots["grpo_reward"]] == [1, 2, 3, 4] and plots["grpo_reward"][0] == {
        "step": 1,
        "no-cot": 0.3,
        "leaky-cot": 1.0,
        "captions-all": None,
    }  # a failed arm: an empty column
    assert {r["arm"] for r in plots["reward_vs_valid"]} == {"no-cot", "leaky-cot"}
    with pytest.raises(UserError, match="reference arm 'captions-all'"):
        report(runs, "captions-all")


def test_arms_scored_by_likelihood_only_mark_the_generative_cells_not_scored():
    """The 300-user grid turns greedy generation off (evaluate.generative_num_negatives: []): the likelihood cells
    are computed as before, the generative ones say so instead of failing on an empty protocol."""
    hits = np.random.default_rng(2).random(60) < 0.3
    ref, arm = _arm(hits, hits, [[0.3, 0.3]] * 8), _arm(hits, ~hits, [[0.3, 0.3]] * 8)
    for r in (ref, arm):
        r["predictions"] = {k: v.filter(pl.col("protocol") == "likelihood") for k, v in r["predictions"].items()}
    text, _ = report({"no-cot": ref, "captions-all": arm}, "no-cot")
    policy = next(r for r in text.splitlines() if r.startswith("| captions-all | SFT+GRPO |"))
    assert policy.rstrip(" |").endswith(NOT_SCORED) and "| 60 |" in policy
    diff = next(r for r in text.splitlines() if r.startswith("| captions-all SFT+GRPO − no-cot SFT+GRPO"))
    assert f"| {NOT_SCORED} |" in diff and "p<0.001*" in diff  # every hit flipped: likelihood still compared


def test_power_columns_size_the_comparisons_that_are_not_resolved():
    """A 0.1 gain over 100 users with 30 % discordant pairs (20 vs 10): not resolved, 234 pairs would be needed."""
    a = np.array([1] * 20 + [0] * 10 + [1] * 10 + [0] * 60)
    b = np.array([0] * 20 + [1] * 10 + [1] * 10 + [0] * 60)
    ref, arm = _arm(b, b, [[0.3, 0.3]] * 8), _arm(b, a, [[0.3, 0.3]] * 8)
    text, _ = report({"no-cot": ref, "captions-all": arm}, "no-cot")
    cells = [
        c.strip()
        for c in next(r for r in text.splitlines() if r.startswith("| captions-all SFT+GRPO − no-cot")).split("|")
    ]
    assert cells[3].startswith("+0.100") and "*" not in cells[3]  # McNemar 20 vs 10: p ~0.1
    assert cells[-3:-1] == ["234", "0.152"]


def test_report_says_when_an_arms_cot_missed_every_trained_prompt():
    """The full-size run's leaky-cot: 5 GRPO rows with CoT, none among the 32 trained prompts, so its GRPO input
    equals no-cot's; the inflation table has nothing to pair and the report says so instead of leaving it out."""
    hits = np.random.default_rng(1).random(60) < 0.2
    ref, missed = _arm(hits, hits, [[0.3, 0.3]] * 8), _arm(hits, hits, [[0.3, 0.3]] * 8)
    missed["augment"].grpo = _draw(5)
    text, _ = report({"no-cot": ref, "leaky-cot": missed}, "no-cot")
    assert "leaky-cot: 5 GRPO rows with CoT, none among the prompts GRPO trained on" in text
    assert "| leaky-cot | 0 |" not in text and "GRPO prompts paired" not in text  # no empty inflation row


def test_a_bad_arm_leaves_params_yaml_untouched(tmp_path, monkeypatch):
    """Presets and arms are checked on a copy: params.yaml is written only when every arm validates."""
    before = (ROOT / "params.yaml").read_bytes()
    arms = tmp_path / "arms.yaml"
    arms.write_text("reference: base\narms:\n  base: {}\n  typo: {prompt.captions: some}\n")
    monkeypatch.setattr(ablation_script.grid, "experiment_refs", lambda root: {})
    monkeypatch.setattr(ablation_script, "sh", lambda *a, **k: pytest.fail("nothing may run"))
    try:
        with pytest.raises(UserError, match="arm 'typo'"):
            ablation_script.queue(arms, PRESETS, [])
        assert (ROOT / "params.yaml").read_bytes() == before
        assert not (ROOT / "params.yaml.ablation").exists()
    finally:
        (ROOT / "params.yaml").write_bytes(before)
