"""The MLLMRec-R1 authors' cached candidates and refined CoT, on hand-made files in their shapes
(mllmrec.data.authors): joined by user and item sequence, every unusable row counted by reason."""

import json
from collections import Counter

import polars as pl
import pytest

from mllmrec.config import RefineCotParams, SplitParams
from mllmrec.cot.generate import SAMPLE_COLUMNS, refine
from mllmrec.data.authors import apply_candidates, combine_files, read_candidates, read_cot
from mllmrec.data.split import make_candidates, make_samples, user_sequences
from mllmrec.engines.base import SamplingParams
from mllmrec.errors import UserError
from mllmrec.prompts import ItemText

SEQS = {f"u{u}": [f"{u}{j:02d}" for j in range(12)] for u in range(1, 5)}  # 4 users, 12 distinct items each
POOL = sorted({i for s in SEQS.values() for i in s} | {f"9{j:02d}" for j in range(30)})
TITLES = {i: f"Movie {i}" for i in POOL}


def our_candidates(n_neg: int = 9) -> pl.DataFrame:
    rows = [(u, item, t, t) for u, items in SEQS.items() for t, item in enumerate(items)]
    inter = pl.DataFrame(rows, schema=["user_id", "item_id", "timestamp", "position"], orient="row")
    seqs = user_sequences(inter)
    return make_candidates(make_samples(seqs, 10, 1, 1), seqs, POOL, n_neg, 0)


def generate_prompt(history: list[str], candidates: list[str]) -> str:
    """Their RecSFTDataset._build_prompt layout."""
    return "\n".join(
        [
            "You are a movie recommendation assistant.",
            "Here are the user's most recently watched movies sequence:",
            *(f"{n}. [ITEM_{i}] {TITLES[i]}" for n, i in enumerate(history, 1)),
            "",
            "Candidate movies:",
            *(f"[ITEM_{i}] {TITLES[i]}" for i in candidates),
            "",
            (
                "Now answer the following question.\nOnly output in format [ITEM_xxxx] Movie Title.\n"
                "No additional caption, summary, comments, or explanation."
            ),
        ]
    )


def their_candidates(user: str, split_offset: int = 0) -> tuple[list[str], str, list[str]]:
    seq = SEQS[user][: len(SEQS[user]) - split_offset]
    target, history = seq[-1], seq[-10:-1]
    return history, target, [f"9{j:02d}" for j in range(5)] + [target] + [f"9{j:02d}" for j in range(5, 9)]


def test_their_test_candidates_replace_ours_and_unjoinable_rows_are_counted(tmp_path):
    entries = []
    for user in ("u1", "u2"):
        h, t, c = their_candidates(user)
        entries.append({"prompt": generate_prompt(h, c), "target_id": t, "candidates": c})
    h, t, c = their_candidates("u3")
    entries.append(
        {
            "messages": [
                {"role": "user", "content": generate_prompt(h, c)},  # their train-mode shape
                {"role": "assistant", "content": f"[ITEM_{t}] {TITLES[t]}"},
            ]
        }
    )
    h, t, c = their_candidates("u4", split_offset=1)  # u4's valid window: no test sample has it
    entries.append({"prompt": generate_prompt(h, c), "target_id": t, "candidates": c})
    entries += [{"prompt": "x"}, {"prompt": generate_prompt(h, c), "target_id": "nope", "candidates": c}, [1]]
    path = tmp_path / "test_generate_seed42_neg9.json"
    path.write_text(json.dumps(entries))

    counts = Counter()
    authors = read_candidates(path, counts)
    assert authors.height == 4 and dict(counts) == {
        "read": 4,
        "unknown_entry_shape": 2,
        "target_not_once_in_candidates": 1,
    }
    ours = our_candidates()
    out = apply_candidates(ours, authors, "test", set(POOL), counts)
    test = out.filter(pl.col("split") == "test")
    assert test["user_id"].to_list() == ["u1", "u2", "u3"]  # u4 has no authors' row: dropped, counted
    for row in test.iter_rows(named=True):
        assert row["candidates"] == their_candidates(row["user_id"])[2]
        assert row["candidates"][row["target_index"]] == row["target"] and row["target_index"] == 5
    assert counts["joined"] == 3 and counts["authors_rows_without_sample"] == 1
    assert counts["test_samples_without_authors_row"] == 1
    assert out.filter(pl.col("split") != "test").equals(ours.filter(pl.col("split") != "test"))
    assert out.schema == ours.schema

    counts = Counter()
    apply_candidates(ours, authors, "test", set(POOL) - {"900"}, counts)  # ids they have and we don't
    assert counts["candidate_not_in_ingested_items"] == 4 and counts["joined"] == 0


def test_bad_candidate_files_are_clear_errors(tmp_path):
    p = tmp_path / "c.json"
    p.write_text("{not json")
    with pytest.raises(UserError, match=r"c\.json: not valid JSON"):
        read_candidates(p, Counter())
    p.write_text('[{"prompt": "x"}]')
    with pytest.raises(UserError, match=r"c\.json: no usable sample .*unknown_entry_shape.*c\.json\[0\]"):
        read_candidates(p, Counter())
    h, t, c = their_candidates("u1")
    p.write_text(
        json.dumps(
            [
                {"prompt": generate_prompt(h, c), "target_id": t, "candidates": c},
                {"prompt": generate_prompt(h, c[:5]), "target_id": t, "candidates": c[:6]},
            ]
        )
    )
    with pytest.raises(UserError, match=r"several lengths \{10: 1, 6: 1\}"):
        read_candidates(p, Counter())
    with pytest.raises(UserError, match=r"not found \(the authors' file"):
        read_candidates(tmp_path / "none.json", Counter())
    assert SplitParams(candidates_from=[{"file": "x.json"}]).candidates_from[0].split == "test"


def good(n: int) -> str:
    return (
        f"Step 1: dark thrillers ({n}).\nStep 2: a tense night-time story.\nStep 3: noir; rain; chase.\n"
        "Step 4: A moody crime film."
    )


def test_their_cot_joins_by_user_and_items_and_goes_through_the_leak_audit(tmp_path):
    drafts = (
        our_candidates().filter(pl.col("split") == "train").select(SAMPLE_COLUMNS).with_columns(draft=pl.lit("a draft"))
    )
    s = {r["user_id"]: r for r in drafts.iter_rows(named=True)}

    def row(line_idx, user, history, target, reasoning, **extra):
        return {
            "line_idx": line_idx,
            "user_id": user,
            "history_items": [{"item_id": i, "title": TITLES[i], "image_path": f"/x/{i}.jpg"} for i in history],
            "target_item": {"item_id": target, "title": TITLES[target]},
            "reasoning": reasoning,
            **extra,
        }

    u3_valid = SEQS["u3"][:-1]
    rows = [
        row(7, "u1", s["u1"]["history"], s["u1"]["target"], good(1)),  # line_idx says nothing: the key joins
        row(
            0,
            "u2",
            s["u2"]["history"],
            s["u2"]["target"],
            good(2).replace("A moody crime film.", f"It is {TITLES[s['u2']['target']]}."),
        ),  # names the target
        row(1, "u3", u3_valid[-10:-1], u3_valid[-1], good(3)),  # their window is our valid sample
        row(2, "u9", s["u1"]["history"], s["u1"]["target"], good(4)),  # not our user
        row(3, "u4", s["u4"]["history"], s["u4"]["target"], "", error="RateLimitError()"),
        {"line_idx": 4, "reasoning": "no keys"},
    ]
    path = tmp_path / "movielens_deepseek_cot.json"
    path.write_text(json.dumps(rows))
    given, counts = read_cot(path, drafts)
    assert counts == {
        "empty_or_failed_reasoning": 1,
        "joined": 2,
        "read": 5,
        "samples_without_authors_cot": 2,
        "sequence_differs": 1,
        "unknown_entry_shape": 1,
        "user_not_in_samples": 1,
    }
    assert set(given) == {s["u1"]["sample_id"], s["u2"]["sample_id"]}

    params = RefineCotParams(source="authors_json", authors_file=path.name)
    texts = {i: ItemText(title=t) for i, t in TITLES.items()}
    refined, report = refine(
        drafts,
        texts,
        params=params,
        sampling=SamplingParams(),
        model="authors_json",
        revision="",
        make_engine=lambda: pytest.fail("no editor call"),
        cache_dir=tmp_path / "cache",
        given=given,
    )
    by_user = {r["user_id"]: r for r in refined.iter_rows(named=True)}
    assert by_user["u1"]["cot"] == good(1) and not by_user["u1"]["leak_before"]
    assert by_user["u2"]["leak_before"] and not by_user["u2"]["leak_after"]  # scrubbed like an editor's leak
    assert by_user["u3"]["fail_reason"] == "not_in_authors_file" and by_user["u3"]["cot"] is None
    assert report.failed == {"not_in_authors_file": 2} and report.model_calls == 0
    with pytest.raises(ValueError, match="source authors_json needs authors_file"):
        RefineCotParams(source="authors_json")


def test_two_files_for_one_split_combine_and_overlaps_are_counted(tmp_path):
    """Each test sample comes from the file that covers it; a row both files hold is used once and counted."""
    files = []
    for name, users in (("a.json", ("u1", "u2")), ("b.json", ("u2", "u3"))):
        entries = [
            {"prompt": generate_prompt(h, c), "target_id": t, "candidates": c}
            for h, t, c in (their_candidates(u) for u in users)
        ]
        (tmp_path / name).write_text(json.dumps(entries))
        files.append((name, read_candidates(tmp_path / name, Counter())))
    counts = Counter()
    out = apply_candidates(our_candidates(), combine_files(files), "test", set(POOL), counts)
    assert out.filter(pl.col("split") == "test")["user_id"].to_list() == ["u1", "u2", "u3"]
    assert counts["row_listed_twice"] == 1 and counts["joined"] == 3 and counts["key_in_several_rows"] == 0
    assert counts["test_samples_without_authors_row"] == 1  # u4: in neither file


def test_candidate_files_that_join_nothing_stop_the_split_with_one_line(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    rows = [(u, item, t, t) for u, items in SEQS.items() for t, item in enumerate(items)]
    (tmp_path / "data/ingest").mkdir(parents=True)
    pl.DataFrame(rows, schema=["user_id", "item_id", "timestamp", "position"], orient="row").with_columns(
        pl.col("timestamp").cast(pl.Int64), pl.col("position").cast(pl.Int32)
    ).write_parquet(tmp_path / "data/ingest/interactions.parquet")
    (tmp_path / "ds").mkdir()
    h, t, c = their_candidates("u1", split_offset=2)  # a window no test sample has
    (tmp_path / "ds/test_neg9.json").write_text(
        json.dumps([{"prompt": generate_prompt(h, c), "target_id": t, "candidates": c}])
    )
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump(
            {
                "ingest": {"format": "mllmrec_tsv", "root": "ds"},
                "split": {"min_inter": 10, "num_negatives": [9], "candidates_from": [{"file": "test_neg9.json"}]},
            }
        )
    )
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve().parents[1] / "stages/split.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "test_neg9.json: the authors' test candidates joined none of our 4 test samples" in proc.stderr
    assert not (tmp_path / "data/split").exists()
