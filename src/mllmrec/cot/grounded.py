"""The grounded drafter: the paper's four-step pseudo-CoT written by rules from facts the data holds, no model.

    from mllmrec.cot.grounded import draft_grounded
    drafts, report = draft_grounded(samples, texts, items, train_sequences, seed=0)

A stand-in for the paper's VLM drafter (Qwen3-VL-8B over the history posters), for CPU runs where a 135M model drafts
almost nothing usable; `draft_cot.mode: grounded` selects it and the report names it as such. The editor, leak audit
and confidence filter then run on its drafts as on a model's. Per sample it reads, never the target:
- what the history's items share: genres (the items table's `genres` list column, written by ingest with
  `ingest.genres: true`), release years (the `(1995)` of a title), caption labels and colour/light words, printed
  text the captions quote;
- the items other users watch with the history: co-occurrence in the training sequences (split's
  train_sequences.parquet: each user's items before the valid target) of every user but the sample's own, whose
  sequence holds the sample's target and later items;
- how each candidate relates to those facts (shared genres, years, caption labels, co-occurrence), as counts over the
  candidates and the profile of the best-grounded one, never by id or title.
Steps: 1 the attributes the history shares, 2 stable preferences, 3 plausible next items and how the candidates
relate, 4 a one-sentence conclusion. Deterministic: shared facts are ordered by count then name, and the one choice
(ties between equally grounded candidates) is broken by sha256(seed:item_id). Facts a dataset or a history lacks are
left out of the draft and counted in the report (`facts_missing_from_dataset`, `facts_lacked`); a history with none
of them gets no draft (draft_error `no_facts`).
"""

import hashlib
import re
from collections import Counter
from dataclasses import dataclass

import polars as pl

from mllmrec import partcache, paths
from mllmrec.cooccurrence import CoOccurrence
from mllmrec.cot.generate import DRAFT_SCHEMA
from mllmrec.cot.reports import DraftReport
from mllmrec.errors import UserError
from mllmrec.prompts import ItemText

MODEL = "grounded"
ALGORITHM = "grounded-3"  # bump whenever the draft for some input can change
DRAFTER = "grounded (a rule-based stand-in for the paper's VLM drafter)"
FACTS = ("genres", "years", "captions", "co_occurrence")
_YEAR = re.compile(r"\((1[89]\d\d|20\d\d)\)")
_PRINTED = re.compile(r'^text\s+"(.+)"$')
_FACES = re.compile(r"^(?:\w+|\d+) faces?$")
MAX_LABEL_WORDS = 4  # a longer comma phrase is prose (a VLM's sentence), not a label


@dataclass(frozen=True)
class ItemFacts:
    title: str
    genres: tuple[str, ...] = ()
    year: int | None = None
    labels: tuple[str, ...] = ()  # what the caption says the image shows (objects, scenes, faces)
    style: tuple[str, ...] = ()  # colour and light words of the caption
    printed: tuple[str, ...] = ()  # printed text the caption quotes
    captioned: bool = False


def release_year(title: str) -> int | None:
    """The last `(yyyy)` of a title.

    >>> release_year("Seven (a.k.a. Se7en) (1995)"), release_year("Up")
    (1995, None)
    """
    found = _YEAR.findall(title or "")
    return int(found[-1]) if found else None


def parse_caption(caption: str) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(labels, style words, printed texts) of a caption: `;`-separated parts, as the CPU captioners write them.

    >>> parse_caption('comic book, toy store; one face; text "007"; mostly blue with touches of red, dark, cool tones')
    (('comic book', 'toy store', 'faces'), ('mostly blue', 'dark', 'cool tones'), ('007',))
    """
    labels, style, printed = [], [], []
    for part in (p.strip() for p in (caption or "").split(";")):
        if not part:
            continue
        if m := _PRINTED.match(part):
            printed.append(m.group(1))
        elif _FACES.match(part):
            labels.append("faces")
        elif part.startswith("mostly "):
            head, *rest = (w.strip() for w in part.split(","))
            style += [" ".join(head.split()[:2]), *(w for w in rest if w)]
        else:
            words = (" ".join(w.strip(" .").split()) for w in part.split(","))
            labels += [w.lower() for w in words if w and len(w.split()) <= MAX_LABEL_WORDS]
    return tuple(dict.fromkeys(labels)), tuple(dict.fromkeys(style)), tuple(dict.fromkeys(printed))


def _genres(value) -> tuple[str, ...]:
    return tuple(dict.fromkeys(value or []))  # ingest wrote them split, stripped, `(no genres listed)` left out


def item_facts(items: pl.DataFrame, texts: dict[str, ItemText]) -> dict[str, ItemFacts]:
    """item_id -> its facts (genres from the items table's optional `genres` column; the rest from texts)."""
    genres = dict(zip(items["item_id"], items["genres"].to_list())) if "genres" in items.columns else {}
    out = {}
    for item_id, t in texts.items():
        labels, style, printed = parse_caption(t.caption)
        out[item_id] = ItemFacts(
            title=t.title,
            genres=_genres(genres.get(item_id)),
            year=release_year(t.title),
            labels=labels,
            style=style,
            printed=printed,
            captioned=bool(t.caption),
        )
    return out


@dataclass(frozen=True)
class HistoryFacts:
    """What a history's items share: (fact, how many items have it) pairs, most common first."""

    n: int
    genres: list[tuple[str, int]]
    years: tuple[int, int] | None  # first and last release year
    decade: tuple[int, int] | None  # the most common decade and its count
    labels: list[tuple[str, int]]
    style: list[tuple[str, int]]
    printed: list[str]
    related: list[str]  # titles of items other users watch with the history (no candidate among them)
    recent: list[str]  # the last items' titles, oldest first
    lacked: tuple[str, ...]  # FACTS this history has none of


def _shared(values: list[tuple[str, ...]], least: int, top: int) -> list[tuple[str, int]]:
    counts = Counter(v for vs in values for v in vs)
    return sorted(((v, n) for v, n in counts.items() if n >= least), key=lambda x: (-x[1], x[0]))[:top]


def history_facts(sample: dict, facts: dict[str, ItemFacts], co: CoOccurrence) -> HistoryFacts:
    """The shared facts of a sample's history; reads its history, user and candidates, never its target."""
    hist = [facts[i] for i in sample["history"]]
    least = 2 if len(hist) > 1 else 1
    years = sorted(f.year for f in hist if f.year is not None)
    decades = Counter(y // 10 * 10 for y in years)
    decade = min(decades.items(), key=lambda x: (-x[1], x[0])) if decades else None
    related = co.related(sample["history"], without=sample["user_id"], exclude=set(sample["candidates"]))
    has = {
        "genres": any(f.genres for f in hist),
        "years": bool(years),
        "captions": any(f.captioned for f in hist),
        "co_occurrence": bool(related),
    }
    return HistoryFacts(
        n=len(hist),
        genres=_shared([f.genres for f in hist], least, 3),
        years=(years[0], years[-1]) if years else None,
        decade=decade,
        labels=_shared([f.labels for f in hist], least, 3),
        style=_shared([f.style for f in hist], least, 2),
        printed=list(dict.fromkeys(p for f in reversed(hist) for p in f.printed))[:2],
        related=[facts[j].title for j, _ in related[:2] if j in facts],
        recent=[f.title for f in hist[-2:]],
        lacked=tuple(k for k in FACTS if not has[k]),
    )


@dataclass(frozen=True)
class CandidateFit:
    """How one candidate relates to its history's facts."""

    item_id: str
    genres: tuple[str, ...]  # its genres the history has
    in_years: bool  # released within the history's years (± 3)
    labels: tuple[str, ...]  # its caption labels the history shares
    co_watched: int  # history items other users watch it with
    score: float


def candidate_fit(item_id: str, sample: dict, facts: dict[str, ItemFacts], co: CoOccurrence) -> CandidateFit:
    hist = [facts[i] for i in sample["history"]]
    c, n = facts[item_id], max(1, len(hist))
    g_count = Counter(g for f in hist for g in f.genres)
    l_count = Counter(lb for f in hist for lb in f.labels)
    years = [f.year for f in hist if f.year is not None]
    in_years = bool(c.year and years and min(years) - 3 <= c.year <= max(years) + 3)
    near = sum(abs(c.year - y) <= 3 for y in years) / n if c.year else 0.0
    sims = [dict(co.neighbours(h, sample["user_id"])).get(item_id, 0.0) for h in sorted(set(sample["history"]))]
    genres = tuple(g for g in c.genres if g_count[g])
    labels = tuple(lb for lb in c.labels if l_count[lb] >= 2 or (len(hist) == 1 and l_count[lb]))
    score = sum(g_count[g] for g in genres) / n + near + sum(l_count[lb] for lb in labels) / n + sum(sims)
    return CandidateFit(item_id, genres, in_years, labels, sum(s > 0 for s in sims), score)


def best_fit(fits: list[CandidateFit], seed: int) -> CandidateFit:
    """The best-grounded candidate; equal scores broken by sha256(seed:item_id) (not by list position)."""
    return min(fits, key=lambda f: (-round(f.score, 9), hashlib.sha256(f"{seed}:{f.item_id}".encode()).hexdigest()))


def _and(words: list[str], last: str = "and") -> str:
    """Words joined as prose.

    >>> _and(["a", "b", "c"]), _and(["a"], "or")
    ('a, b and c', 'a')
    """
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} {last} {words[-1]}"


def _a(phrase: str) -> str:
    """The phrase with its article.

    >>> _a("Action item"), _a("1995 Drama item")
    ('an Action item', 'a 1995 Drama item')
    """
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def _counted(pairs: list[tuple[str, int]]) -> str:
    return _and([f"{v} ({n})" for v, n in pairs])


def step_attributes(h: HistoryFacts) -> str:
    """Step 1: the attributes the history's items share ("" when it has none)."""
    parts = []
    if h.genres:
        parts.append(f"genres {_counted(h.genres)}")
    if h.years:
        first, last = h.years
        span = f"released {first}" if first == last else f"released {first}-{last}"
        parts.append(span + (f", most in the {h.decade[0]}s ({h.decade[1]})" if h.decade[1] > 1 else ""))
    if h.labels:
        parts.append(f"images showing {_counted(h.labels)}")
    if h.style:
        parts.append(f"{_and([s for s, _ in h.style])} images")
    if h.printed:
        parts.append("printed text " + _and([f'"{p}"' for p in h.printed]))
    if h.related:
        parts.append(f"other users who watched them also watched {_and(h.related)}")
    return f"Across the {h.n} history items: {'; '.join(parts)}." if parts else ""


def _preference(h: HistoryFacts) -> str:
    genres = _and([g for g, _ in h.genres[:2]]) if h.genres else "items"
    when = f" from the {h.decade[0]}s" if h.decade else ""
    look = f" with images showing {_and([lb for lb, _ in h.labels[:2]])}" if h.labels else ""
    return f"{genres}{when}{look}"


def step_preferences(h: HistoryFacts) -> str:
    base = _preference(h)
    pref = base if base != "items" else "the items other users watch with this history"
    return f"Stable preferences: {pref}; the latest items are {_and(h.recent)}."


def _count(n: int, one: str, many: str) -> str:
    """`1 shares`, `3 share`: a count with its verb."""
    return f"{n} {one if n == 1 else many}"


def step_candidates(h: HistoryFacts, fits: list[CandidateFit]) -> str:
    """Step 3: plausible next items, then how the candidates relate to the history's facts (counts, no names)."""
    crit, rel = [], []
    if h.genres:
        crit.append(_a(f"{_and([g for g, _ in h.genres], 'or')} item"))
        rel.append(_count(sum(bool(f.genres) for f in fits), "shares", "share") + " a genre with the history")
    if h.years:
        crit.append(f"released in the {h.decade[0]}s" if h.decade[1] > 1 else f"released around {h.years[0]}")
        rel.append(_count(sum(f.in_years for f in fits), "comes", "come") + " from its years")
    if h.labels:
        crit.append(f"an image showing {_and([lb for lb, _ in h.labels], 'or')}")
        rel.append(_count(sum(bool(f.labels) for f in fits), "shares", "share") + " its image labels")
    if "co_occurrence" not in h.lacked or any(f.co_watched for f in fits):
        crit.append("an item other users watch with this history")
        rel.append(_count(sum(f.co_watched > 0 for f in fits), "is", "are") + " watched with its items by other users")
    head = f"Plausible next items: {'; '.join(crit)}." if crit else "Plausible next items: more of the same."
    return head + (f" Of the {len(fits)} candidates, {_and(rel)}." if rel else "")


def step_conclusion(h: HistoryFacts, best: CandidateFit, facts: dict[str, ItemFacts]) -> str:
    """Step 4: the profile of the best-grounded candidate, by its facts, never its title or id."""
    if best.score <= 0:
        return f"Conclusion: no candidate clearly fits these facts; the next item is likely more {_preference(h)}."
    c = facts[best.item_id]
    what = " ".join(x for x in (str(c.year) if c.year else "", "/".join(c.genres[:3])) if x)
    look = f" whose image shows {_and(list(c.labels[:3]))}" if c.labels else ""
    look += (" in " if look else " in an image of ") + ", ".join(c.style) if c.style else ""
    co = f", watched with {best.co_watched} of the history's items by other users" if best.co_watched else ""
    return f"Conclusion: the next item is most likely {_a(what + ' item' if what else 'item')}{look}{co}."


def render(sample: dict, facts: dict[str, ItemFacts], co: CoOccurrence, seed: int) -> tuple[str | None, HistoryFacts]:
    """(the four-step draft or None when the history has no fact at all, the history's facts)."""
    h = history_facts(sample, facts, co)
    first = step_attributes(h)
    if not first:
        return None, h
    fits = [candidate_fit(c, sample, facts, co) for c in sample["candidates"]]
    steps = [first, step_preferences(h), step_candidates(h, fits), step_conclusion(h, best_fit(fits, seed), facts)]
    return "\n".join(f"Step {n}: {s}" for n, s in enumerate(steps, 1)), h


def dataset_lacks(items: pl.DataFrame, facts: dict[str, ItemFacts], co: CoOccurrence) -> list[str]:
    """FACTS no item of the dataset has (genres: no `genres` column, or every value empty)."""
    has = {
        "genres": "genres" in items.columns and any(f.genres for f in facts.values()),
        "years": any(f.year is not None for f in facts.values()),
        "captions": any(f.captioned for f in facts.values()),
        "co_occurrence": any(co.co.values()),
    }
    return [k for k in FACTS if not has[k]]


def _check_items(sample: dict, texts: dict[str, ItemText]) -> None:
    for i in [*sample["history"], *sample["candidates"]]:
        if i not in texts:
            raise UserError(
                f"sample {sample['sample_id']}: item {i} is not in {paths.ITEMS} (rerun `dvc repro split` after ingest)"
            )


def draft_grounded(
    samples: pl.DataFrame, texts: dict[str, ItemText], items: pl.DataFrame, sequences: pl.DataFrame, seed: int
) -> tuple[pl.DataFrame, DraftReport]:
    """One grounded draft per sample, in the model drafter's schema (mllmrec.cot.generate.draft), and its report."""
    facts = item_facts(items, texts)
    co = CoOccurrence(sequences)
    rows, lacked, notes = [], Counter(dict.fromkeys(FACTS, 0)), Counter()
    for s in samples.iter_rows(named=True):
        _check_items(s, texts)
        text, h = render(s, facts, co, seed)
        lacked.update(h.lacked)
        notes["missing_caption"] += sum(not facts[i].captioned for i in s["history"])
        notes["title_without_year"] += sum(facts[i].year is None for i in s["history"])
        rows.append(
            {
                "draft": text,
                "draft_error": None if text else "no_facts",
                "draft_finish_reason": "stop" if text else None,
                "draft_key": partcache.content_key("draft", MODEL, ALGORITHM, text or ""),
            }
        )
    df = pl.concat([samples, pl.DataFrame(rows, schema=DRAFT_SCHEMA)], how="horizontal")
    df = df.with_columns(pl.lit(MODEL).alias("draft_model"), pl.lit(ALGORITHM).alias("draft_revision"))
    errors = Counter(r["draft_error"] for r in rows if r["draft_error"])
    report = DraftReport(
        samples=samples.height,
        drafted=int(df["draft"].is_not_null().sum()),
        mode="grounded",
        errors=dict(sorted(errors.items())),
        input_notes={k: v for k, v in sorted(notes.items()) if v},
        model_calls=0,
        cache_hits=0,
        engine_retries=0,
        parts_written=0,
        stale_temp_files_removed=0,
        model=MODEL,
        revision=ALGORITHM,
        drafter=DRAFTER,
        facts_missing_from_dataset=dataset_lacks(items, facts, co),
        facts_lacked=dict(lacked),
    )
    return df, report
