"""The grounded drafter (draft_cot.mode grounded) on hand-made data: the facts it names, that it never sees the
target, the facts it lacks counted, same input -> same bytes, and the CoT chain (refine -> audit -> assess) on it.

.venv/bin/pytest tests/test_grounded_drafter.py -q
"""

import io
import json
import re

import polars as pl
import pytest
from cot_util import ScriptedEngine

from mllmrec.config import AssessCotParams, DraftCotParams, EngineSpec, RefineCotParams
from mllmrec.cot.assess import Embedder, assess, embedder_identity
from mllmrec.cot.drafters import draft_samples
from mllmrec.cot.generate import refine
from mllmrec.cot.grounded import DRAFTER, draft_grounded
from mllmrec.cot.leak import find_leaks
from mllmrec.cot.text import parse_steps, prediction_text, step_bodies
from mllmrec.engines.base import SamplingParams
from mllmrec.prompts import load_item_texts
from mllmrec.reports import as_dict

# history 11, 12, 13 (comedies of 1994-1996 with comic-book / toy-store posters); candidates 101 and 102 are the same
# kind of item (a 1995 comedy, a toy-store poster), 103 is not; 200 is what other users watch with the history
ITEMS = pl.DataFrame(
    {
        "item_id": ["11", "12", "13", "101", "102", "103", "200"],
        "title": [
            "Alpha (1994)",
            "Bravo (1995)",
            "Charlie (1996)",
            "Delta Story (1995)",
            "Echo Story (1995)",
            "Zulu Night (1970)",
            "Omega Reunion (1990)",
        ],
        "genres": [
            ["Comedy", "Drama"],
            ["Comedy"],
            ["Comedy", "Romance"],
            ["Comedy"],
            ["Comedy"],
            ["Horror"],
            ["Comedy"],
        ],
    }
)
CAPTIONS = pl.DataFrame(
    {
        "item_id": ["11", "12", "13", "101", "102", "103", "200"],
        "caption": [
            "comic book; one face; mostly blue with touches of red, dark, cool tones",
            'comic book, toy store; two faces; text "go team"; mostly red, dark, warm tones',
            "toy store; mostly red, mid-toned, warm tones",
            "toy store; one face",
            "toy store; one face",
            "mask; mostly black, very dark, cool tones",
            "comic book",
        ],
    }
)
TEXTS = load_item_texts(ITEMS, CAPTIONS)
# the sample's own user u watched its target 101 right after the history; other users link the history to 200
SEQS = pl.DataFrame(
    {
        "user_id": ["u", "v", "w", "x"],
        "items": [["11", "12", "13", "101"], ["11", "12", "200"], ["12", "13", "200", "102"], ["11", "200"]],
    }
)


def sample(target: str = "101", candidates: tuple = ("101", "102", "103"), user: str = "u") -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "sample_id": f"{user}:train:3",
                "user_id": user,
                "history": ["11", "12", "13"],
                "target": target,
                "candidates": list(candidates),
                "target_index": list(candidates).index(target),
                "num_negatives": len(candidates) - 1,
            }
        ],
        schema_overrides={"target_index": pl.Int32, "num_negatives": pl.Int32},
    )


def drafted(samples: pl.DataFrame, items=ITEMS, captions=CAPTIONS, seqs=SEQS, seed=0):
    return draft_grounded(samples, load_item_texts(items, captions), items, seqs, seed)


def test_draft_names_the_shared_facts_in_four_steps():
    df, rep = drafted(sample())
    text = df["draft"][0]
    assert parse_steps(text) == (text, "ok")  # the editor's format already: four non-empty steps
    step1 = step_bodies(text)[1]
    assert "genres Comedy (3)" in step1  # all three history items
    assert "released 1994-1996, most in the 1990s (3)" in step1
    assert "comic book (2)" in step1 and "toy store (2)" in step1 and '"go team"' in step1
    assert "also watched Omega Reunion (1990)" in step1  # co-occurring in the other users' sequences
    assert "the latest items are Bravo (1995) and Charlie (1996)" in text
    # the candidates by counts, the best-grounded one by its facts only
    assert "Of the 3 candidates, 2 share a genre with the history, 2 come from its years" in text
    assert "and 1 is watched with its items by other users." in text  # a count of one takes a singular verb
    assert step_bodies(text)[4].startswith("Conclusion: the next item is most likely a 1995 Comedy item")
    assert rep.drafter == DRAFTER and rep.model == "grounded" and rep.model_calls == 0 and rep.drafted == 1
    assert rep.facts_missing_from_dataset == [] and set(rep.facts_lacked.values()) == {0}
    assert df.columns[-6:] == [
        "draft",
        "draft_error",
        "draft_finish_reason",
        "draft_key",
        "draft_model",
        "draft_revision",
    ]


def test_draft_never_reads_the_target():
    a, _ = drafted(sample(target="101"))
    b, _ = drafted(sample(target="102"))  # the same sample, the other equally good candidate as its target
    assert a["draft"][0] == b["draft"][0]
    for item in ("101", "102", "103"):  # no candidate is named, by id or title
        assert find_leaks(a["draft"][0], item, TEXTS[item].title) == []
    # the sample's own sequence (history then target) is left out of the co-occurrence: dropping it changes nothing
    without_own = SEQS.filter(pl.col("user_id") != "u")
    assert drafted(sample(), seqs=without_own)[0]["draft"][0] == a["draft"][0]
    # ... while the same sequence as another user's does count
    as_other = pl.concat([without_own, pl.DataFrame({"user_id": ["y"], "items": [["11", "12", "13", "101"]]})])
    assert drafted(sample(), seqs=as_other)[0]["draft"][0] != a["draft"][0]


def test_ties_between_candidates_are_seeded_not_positional():
    twins = [
        drafted(sample(candidates=c), seed=s)[0]["draft"][0] for s in (0, 1) for c in (("101", "102"), ("102", "101"))
    ]
    assert twins[0] == twins[1] and twins[2] == twins[3]  # the list order does not pick the twin


def test_missing_genres_and_captions_are_counted_not_fatal():
    df, rep = drafted(sample(), items=ITEMS.drop("genres"), captions=CAPTIONS.clear())
    text = df["draft"][0]
    assert text and "genres" not in text and "images showing" not in text and "1994-1996" in text
    assert rep.facts_missing_from_dataset == ["genres", "captions"]
    assert rep.facts_lacked == {"genres": 1, "years": 0, "captions": 1, "co_occurrence": 0}
    assert rep.input_notes == {"missing_caption": 3}
    # nothing to go on (no genres, captions, years, other users): no draft, an error by reason
    bare = ITEMS.drop("genres").with_columns(pl.col("title").str.replace(r" \(\d{4}\)", ""))
    df, rep = drafted(sample(), items=bare, captions=CAPTIONS.clear(), seqs=SEQS.head(1))
    assert df["draft"][0] is None and df["draft_error"][0] == "no_facts" and rep.errors == {"no_facts": 1}
    assert rep.facts_missing_from_dataset == ["genres", "years", "captions"]


def test_same_input_same_bytes(tmp_path):
    samples = pl.concat([sample(), sample(user="v"), sample(user="x", target="103")])
    outs = []
    for _ in range(2):
        df, rep = drafted(samples)
        buf = io.BytesIO()
        df.write_parquet(buf)
        outs.append((buf.getvalue(), json.dumps(as_dict(rep))))
    assert outs[0] == outs[1]


def test_draft_samples_selects_the_drafter_by_mode(tmp_path):
    params = DraftCotParams(mode="grounded", cache_dir=str(tmp_path / "cache"))
    spec = EngineSpec(engine="openai", model="never-called", base_url="http://127.0.0.1:9/v1")
    df, rep = draft_samples(sample(), TEXTS, params, spec=spec, make_engine=lambda: None, items=ITEMS, sequences=SEQS)
    assert rep.mode == "grounded" and df["draft"][0] == drafted(sample())[0]["draft"][0]
    assert (tmp_path / "cache").is_dir()  # the stage's declared cache output exists, empty


def _editor(prompt: str, seed: int) -> str:
    """An editor that rewrites the draft's steps into its own four (short, reordered: not an echo)."""
    draft = prompt.split("Draft analysis by a weaker model:\n", 1)[1].split("\n\nRewrite", 1)[0]
    b = step_bodies(draft)
    signals = "; ".join(reversed(b[1].removeprefix("Across the 3 history items: ").rstrip(".").split("; ")[:3]))
    criteria = b[3].removeprefix("Plausible next items: ").split(".")[0]
    return (
        f"Step 1: Signals: {signals}.\nStep 2: Intent: {b[2].removeprefix('Stable preferences: ').split(';')[0]}.\n"
        f"Step 3: {criteria}\nStep 4: Profile: {b[4].removeprefix('Conclusion: the next item is most likely ')}"
    )


@pytest.fixture(scope="module")
def embedder():
    return Embedder("all-MiniLM-L6-v2")


def test_chain_refine_audit_assess_runs_on_grounded_drafts(tmp_path, embedder):
    samples = pl.concat([sample(), sample(user="v", target="102"), sample(user="x", target="103")])
    drafts, drep = drafted(samples)
    eng = ScriptedEngine(_editor)
    refined, rrep = refine(
        drafts,
        TEXTS,
        params=RefineCotParams(max_attempts=1),
        sampling=SamplingParams(max_new_tokens=64),
        model="m",
        revision="r",
        make_engine=lambda: eng,
        cache_dir=tmp_path / "refine",
    )
    assert all("go team" in p and not re.search(r"\b(101|102|103)\b", p) for p in eng.prompts)  # target hidden
    params = AssessCotParams(cache_dir=str(tmp_path / "emb"))
    ident = embedder_identity(params.embedding_model)
    assessed, arep, _ = assess(
        refined, TEXTS, params=params, make_embedder=lambda: embedder, embedder_id=ident, prediction=prediction_text
    )
    counts = (drep.drafted, rrep.refined_format_ok, rrep.with_cot, arep.kept)
    print(f"drafted {counts[0]}, refined well-formed {counts[1]}, after leak audit {counts[2]}, kept {counts[3]}")
    assert counts[:3] == (3, 3, 3) and rrep.leak_before == 0
    # the 1995 comedy profile singles out a 1995 comedy: kept for the samples whose target is one, not for 103's
    assert assessed.filter(pl.col("target") == "103")["keep"].to_list() == [False]
    assert arep.kept >= 1
