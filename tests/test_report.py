"""The report stage on small hand-made prediction files: same-sample tables, paired comparisons, headline metrics,
plot files, and refusals when the methods were not evaluated on the samples they must share."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from mllmrec.errors import UserError
from mllmrec.evaluation.metrics import summarize
from mllmrec.evaluation.report import pairs

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("report_stage", ROOT / "stages" / "report.py")
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)

EVAL = {"ks": [1, 3, 5, 10], "split": "test", "bootstrap": 200, "seed": 0}
IDS = [f"{u}:test:0" for u in range(60)]  # split-stage sample ids, every test user once
SUBSET = IDS[::3]  # 20 samples: the LLM policies' seeded evaluation subset
SFT_HITS = 15  # sft-likelihood ranks the target first on 15 of the 20 samples, zero-shot on none


def frame(ids: list[str], ranks: np.ndarray, n_neg: int, protocol: str | None = None) -> pl.DataFrame:
    """The columns the baseline / evaluate stages write (protocol only in a policy's file)."""
    df = pl.DataFrame(
        {
            "sample_id": ids,
            "num_negatives": pl.Series([n_neg] * len(ids), dtype=pl.Int32),
            "target_rank": pl.Series(ranks, dtype=pl.Int32),
            "valid": ranks >= 0,
            "out_of_candidates": pl.Series([0] * len(ids), dtype=pl.Int32),
        }
    )
    return df if protocol is None else df.with_columns(protocol=pl.lit(protocol))


def write_method(root: Path, name: str, parts: list[pl.DataFrame]) -> None:
    """data/predictions/<name>.parquet and its metrics/<method>.json file(s), as the stages write them."""
    preds = pl.concat(parts)
    preds.write_parquet(root / f"data/predictions/{name}.parquet")
    by_protocol = preds.partition_by("protocol", as_dict=True) if "protocol" in preds.columns else {(None,): preds}
    for (protocol,), p in by_protocol.items():
        metrics = {
            f"n{n}": summarize(
                g["target_rank"].to_numpy(), EVAL["ks"], EVAL["bootstrap"], EVAL["seed"], g["valid"].to_numpy()
            )
            for (n,), g in p.group_by("num_negatives")
        }
        (root / f"metrics/{name}{'-' + protocol if protocol else ''}.json").write_text(json.dumps(metrics))


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """random / popularity / sasrec on every test sample (1+9 and 1+99), zeroshot and sft on SUBSET (1+9), no grpo."""
    (tmp_path / "data/predictions").mkdir(parents=True)
    (tmp_path / "metrics").mkdir()
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"eval": EVAL}))
    rng = np.random.default_rng(0)
    for name in ("random", "popularity", "sasrec"):
        write_method(tmp_path, name, [frame(IDS, rng.integers(0, n + 1, len(IDS)), n) for n in (9, 99)])
    sft = np.r_[np.zeros(SFT_HITS, int), np.full(len(SUBSET) - SFT_HITS, 4)]
    write_method(
        tmp_path,
        "zeroshot",
        [frame(SUBSET, rng.integers(1, 10, 20), 9, "likelihood"), frame(SUBSET, np.full(20, -1), 9, "generative")],
    )
    write_method(tmp_path, "sft", [frame(SUBSET, sft, 9, "likelihood"), frame(SUBSET, np.full(20, 2), 9, "generative")])
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_report(root: Path, policies: tuple[str, ...] = ("zeroshot", "sft")) -> None:
    methods = ("random", "popularity", "sasrec", *policies)
    files = [Path(f"metrics/{m}.json") for m in methods[:3]]
    files += [Path(f"metrics/{p}-{protocol}.json") for p in policies for protocol in ("likelihood", "generative")]
    report.main(files, [Path(f"data/predictions/{m}.parquet") for m in methods])


def test_comparisons_headline_and_plots(project, capsys):
    run_report(project)
    block = capsys.readouterr().out.rpartition("\n## What this run shows")[2]  # the stage's last stdout
    assert block.startswith("\n\n**1+9 candidates, 20 test users.**")
    comps = json.loads((project / "metrics/comparisons.json").read_text())
    assert comps["n99"] == []  # no policy ran on 1+99: nothing to compare
    pairs = [(c["a"], c["b"]) for c in comps["n9"]]
    baselines = ["random", "popularity", "sasrec"]
    assert pairs == (
        [("zeroshot-likelihood", b) for b in baselines]
        + [("zeroshot-generative", b) for b in baselines]
        + [("sft-likelihood", "zeroshot-likelihood")]
        + [("sft-likelihood", b) for b in baselines]
        + [("sft-generative", "zeroshot-generative")]
        + [("sft-generative", b) for b in baselines]
    )
    assert all(c["n"] == 20 and set(c) == {"a", "b", "n", "HR@1", "HR@5", "NDCG@10"} for c in comps["n9"])
    sft_vs_zs = comps["n9"][6]
    assert sft_vs_zs["HR@1"]["diff"] == pytest.approx(SFT_HITS / 20)
    assert sft_vs_zs["HR@1"]["p"] == pytest.approx(2 / 2**SFT_HITS)  # 15 discordant pairs, all for sft
    assert sft_vs_zs["HR@1"]["test"] == "mcnemar_exact" and sft_vs_zs["NDCG@10"]["test"] == "sign_flip"
    assert sft_vs_zs["HR@1"]["significant"] and sft_vs_zs["HR@1"]["lo"] > 0

    md = (project / "metrics/report.md").read_text()
    assert md.startswith("## What this run shows" + block)  # the report opens with it, then the tables
    assert md.index("**1+9 candidates") < md.index("### test split, each method on its own samples")
    sft_line = next(line for line in block.splitlines() if line.startswith("- SFT (likelihood) HR@1 0.750 vs "))
    assert sft_line.count("p < 0.001, significantly above") == 2  # vs the strongest baseline and vs popularity
    valid = "- Valid answers, generative protocol (share of answers with at least one parseable item id): "
    assert valid + "zero-shot 0.00, SFT 1.00." in block  # zeroshot's generative answers are all unparseable (rank -1)
    assert "### paired comparisons, 1+9 candidates" in md and "1+99 candidates" not in md.split("paired")[1]
    row = next(line for line in md.splitlines() if line.startswith("| sft-likelihood − zeroshot-likelihood |"))
    assert row.startswith("| sft-likelihood − zeroshot-likelihood | 20 | +0.750 [") and "p<0.001*" in row
    assert "exact McNemar test for HR@K" in md and "sign-flip permutation test" in md

    head = json.loads((project / "metrics/headline.json").read_text())
    assert set(head) == {"n9", "n99"} and head["n9"]["n"] == 20 and head["n99"]["n"] == 60
    assert set(head["n9"]) == {
        "n",
        *baselines,
        "zeroshot-likelihood",
        "zeroshot-generative",
        "sft-likelihood",
        "sft-generative",
    }
    assert set(head["n99"]) == {"n", *baselines}
    assert all(set(m) == {"HR@1", "HR@5", "NDCG@10"} for k, m in head["n9"].items() if k != "n")
    assert head["n9"]["sft-likelihood"]["HR@1"] == SFT_HITS / 20
    rand = pl.read_parquet(project / "data/predictions/random.parquet").filter(
        (pl.col("num_negatives") == 9) & pl.col("sample_id").is_in(SUBSET)
    )  # restricted to the LLMs' samples
    assert head["n9"]["random"]["HR@5"] == round(float((rand["target_rank"] < 5).mean()), 4)

    own = pl.read_csv(project / "plots/report/own_samples_n9.csv")
    assert own["method"].to_list() == [
        *baselines,
        "zeroshot-likelihood",
        "zeroshot-generative",
        "sft-likelihood",
        "sft-generative",
    ]
    assert own.filter(pl.col("method") == "random")["n"].item() == 60
    assert pl.read_csv(project / "plots/report/same_samples_n9.csv")["n"].unique().to_list() == [20]
    by_k = pl.read_csv(project / "plots/report/hr_at_k_same_samples_n9.csv")
    assert by_k["K"].to_list() == EVAL["ks"] and by_k.columns == ["K", *own["method"]]
    assert by_k["sft-likelihood"].to_list() == [0.75, 0.75, 1.0, 1.0]
    lines_n99 = pl.read_csv(project / "plots/report/hr_at_k_same_samples_n99.csv")
    assert lines_n99.columns == by_k.columns  # the policies' columns too (empty): DVC needs every plotted field
    assert lines_n99["sft-likelihood"].is_null().all() and lines_n99["sasrec"].is_not_null().all()


def test_every_policy_is_compared_with_its_previous_stage():
    same = pl.DataFrame(
        {
            "method": ["random", "zeroshot-generative", "sft-generative", "grpo-generative", "grpo-likelihood"],
            "llm": [False, True, True, True, True],
        }
    )
    assert pairs(same) == [
        ("zeroshot-generative", "random"),
        ("sft-generative", "zeroshot-generative"),
        ("sft-generative", "random"),
        ("grpo-generative", "sft-generative"),
        ("grpo-generative", "random"),
        ("grpo-likelihood", "random"),
    ]  # no sft-likelihood


def test_policies_on_different_samples_are_refused(project):
    other = IDS[1::3]  # sft evaluated on another subset (e.g. another evaluate.max_samples or seed)
    write_method(project, "sft", [frame(other, np.zeros(20, int), 9, p) for p in ("likelihood", "generative")])
    with pytest.raises(UserError, match=r"zeroshot-likelihood \(20 samples\) and sft-likelihood \(20 samples\)"):
        run_report(project)


def test_baseline_missing_a_policy_sample_is_refused(project):
    write_method(project, "popularity", [frame(IDS[1:], np.zeros(59, int), n) for n in (9, 99)])
    with pytest.raises(UserError, match=r"popularity has no prediction for 1 of the 20 samples.*'0:test:0'"):
        run_report(project)


def test_position_bias_flags_a_ranker_that_follows_the_list_order():
    """A ranker that always picks the first slot: reversing the candidates moves its HR@1 far beyond its CI; a ranker
    that reads the items (here: always the target's own score) does not move and is not flagged."""
    from mllmrec.config import EvalParams
    from mllmrec.evaluation.candidates import reorder_candidates, score_predictions
    from mllmrec.evaluation.report import position_cells
    from mllmrec.evaluation.significance import position_bias

    n = 200
    cands = pl.DataFrame(
        {
            "sample_id": [f"{u}:test" for u in range(n)],
            "user_id": [str(u) for u in range(n)],
            "target": ["t"] * n,
            "candidates": [["t", *map(str, range(9))] if u < 120 else [*map(str, range(9)), "t"] for u in range(n)],
        }
    )
    params = EvalParams(ks=[1], bootstrap=200)

    def check(rank):  # rank: candidates -> ranked list
        def run(frame):
            ranked = pl.Series([rank(c) for c in frame["candidates"].to_list()], dtype=pl.List(pl.String))
            return score_predictions(frame.with_columns(ranked=ranked, valid=pl.lit(True)), params)

        preds, summary = run(cands)
        return summary, position_bias(
            preds, {how: run(reorder_candidates(cands, how, 0))[0] for how in ("reversed", "shuffled")}, params, summary
        )

    summary, biased = check(lambda c: c)
    assert biased["HR@1"] == 0.6 and biased["reversed"]["HR@1"] == 0.4 and biased["reversed"]["p"] < 0.05
    assert biased["flagged"]
    _, blind = check(lambda c: sorted(c, key=lambda i: i != "t"))
    assert not blind["flagged"] and blind["reversed"]["diff"] == blind["shuffled"]["diff"] == 0
    _, rows = position_cells({"sft-likelihood": {"n9": {**summary, "position": biased}}})
    assert rows[0][:2] == ["sft-likelihood", "1+9"] and rows[0][-1] == "FLAGGED"
