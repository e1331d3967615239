"""The MLLMRec-R1 authors' released artifacts, joined to our samples by user and item sequence (never by position).

    split:      {candidates_from: [{file: processed/test_generate_seed42_neg9.json, split: test}]}
    refine_cot: {source: authors_json, authors_file: movielens_deepseek_cot.json}
    (paths relative to ingest.root: their `data/<dataset>/` folder, ingested with format mllmrec_tsv)

Shapes, from their train/utils/data_loader.py and agent/reasoning.py (wangyu0627/MLLMRec-R1):
- cached candidates `processed/<split>_<mode>_seed<seed>_neg<N>[_cot_<p>][_int_<k>].json`, a JSON list of
    mode generate: {"prompt": str, "target_id": str, "candidates": [str, ...]}
    mode train:    {"messages": [{"role": "user", "content": prompt},
                                 {"role": "assistant", "content": "[ITEM_<target>] <title>"}]}
  The prompt numbers the history `1. [ITEM_<id>] <title>` and lists the candidates unnumbered `[ITEM_<id>] <title>`
  (a train prompt carries the candidates only there). There is no user id: a row joins the sample with the same
  history and target (a user's window is unique in practice; a key two samples share is counted, not guessed).
- refined CoT `<dataset>_deepseek_cot.json`, a JSON list of
    {"line_idx": int, "user_id": str, "history_items": [{"item_id": str, "title": str, ...}, ...],
     "target_item": {"item_id": str, ...}, "reasoning": str, "error": str (only when their call failed)}
  Their loader joins it by line_idx (a raw train.tsv line number) to a post-filter sample index, which misaligns as
  soon as a line is filtered; here it joins on (user_id, history, target).
"""

import json
import re
from collections import Counter
from pathlib import Path

import polars as pl

from mllmrec.errors import UserError

HISTORY_LINE = re.compile(r"^\s*\d+\.\s*\[ITEM_([^\]]+)\]", re.MULTILINE)
CANDIDATE_LINE = re.compile(r"^\s*\[ITEM_([^\]]+)\]", re.MULTILINE)


def load_list(path: Path) -> list:
    if not path.is_file():
        raise UserError(f"{path}: not found (the authors' file; paths are relative to ingest.root)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a JSON list of samples, got a {type(data).__name__}")
    return data


def parse_candidate_entry(entry: object) -> tuple[list[str], str, list[str]] | None:
    """(history, target, candidates) of one cached sample, None when it has neither known shape."""
    if not isinstance(entry, dict):
        return None
    if "messages" in entry:
        msgs = entry["messages"]
        if not (isinstance(msgs, list) and len(msgs) == 2 and all(isinstance(m, dict) for m in msgs)):
            return None
        prompt, answer = str(msgs[0].get("content", "")), str(msgs[1].get("content", ""))
        target = CANDIDATE_LINE.match(answer)
        if not target:
            return None
        target = target[1]
        candidates = CANDIDATE_LINE.findall(prompt)  # unnumbered lines only: the history lines start with "1."
    else:
        prompt, target, candidates = entry.get("prompt"), entry.get("target_id"), entry.get("candidates")
        if not (isinstance(prompt, str) and isinstance(candidates, list)) or target is None:
            return None
        target, candidates = str(target), [str(c) for c in candidates]
    return HISTORY_LINE.findall(prompt), target, candidates


def read_candidates(path: Path, report: Counter) -> pl.DataFrame:
    """history, target, candidates, entry (0-based index in the file) per usable row; bad rows counted."""
    rows, examples = [], {}
    for n, entry in enumerate(load_list(path)):
        parsed = parse_candidate_entry(entry)
        reason = None
        if parsed is None:
            reason = "unknown_entry_shape"
        elif parsed[2].count(parsed[1]) != 1:
            reason = "target_not_once_in_candidates"
        elif len(set(parsed[2])) != len(parsed[2]):
            reason = "repeated_candidate"
        if reason:
            report[reason] += 1
            examples.setdefault(reason, f"{path.name}[{n}]")
            continue
        rows.append({"history": parsed[0], "target": parsed[1], "candidates": parsed[2], "entry": n})
    if not rows:
        raise UserError(
            f"{path}: no usable sample ({dict(report)}, e.g. {examples}); expected the authors' cached "
            f"candidates (entries with prompt/target_id/candidates, or messages)"
        )
    sizes = Counter(len(r["candidates"]) for r in rows)
    if len(sizes) > 1:
        raise UserError(f"{path}: candidate lists of several lengths {dict(sizes)}; one file is one candidate-set size")
    report["read"] += len(rows)
    return pl.DataFrame(
        rows,
        schema={
            "history": pl.List(pl.String),
            "target": pl.String,
            "candidates": pl.List(pl.String),
            "entry": pl.Int64,
        },
    )


def combine_files(files: list[tuple[str, pl.DataFrame]]) -> pl.DataFrame:
    """The rows of several candidate files for one split as one table (entry numbers made unique); a row that two
    files hold with the same candidates is kept once and counted by apply_candidates as `row_listed_twice`."""
    frames, offset = [], 0
    for _, rows in files:
        frames.append(rows.with_columns(entry=pl.col("entry") + offset))
        offset += int(rows["entry"].max()) + 1
    return pl.concat(frames)


def apply_candidates(
    cands: pl.DataFrame, authors: pl.DataFrame, split: str, items: set[str], report: Counter
) -> pl.DataFrame:
    """Our candidates file with the `split` samples replaced by the authors' rows joined on (history, target).

    Samples of `split` without an authors' row are dropped (counted: every method is then scored on exactly their
    candidates); the other splits keep our seeded draw."""
    unknown = authors.filter(~pl.col("candidates").list.eval(pl.element().is_in(list(items))).list.all())
    report["candidate_not_in_ingested_items"] += unknown.height
    authors = authors.join(unknown.select("entry"), on="entry", how="anti")
    same = authors.filter(~pl.struct("history", "target", "candidates").is_first_distinct())
    if same.height:  # the same sample with the same candidates (two files, or twice in one): one is enough
        report["row_listed_twice"] += same.height
    authors = authors.join(same.select("entry"), on="entry", how="anti")
    shared = authors.filter(pl.struct("history", "target").is_duplicated())
    report["key_in_several_rows"] += shared.height  # which one is meant cannot be told: none is used
    authors = authors.join(shared.select("entry"), on="entry", how="anti")

    ours = cands.filter(pl.col("split") == split)
    key = ours.select("sample_id", "history", "target")
    ambiguous = key.filter(pl.struct("history", "target").is_duplicated())  # two users with the same window
    report["key_of_several_samples"] += ambiguous.height
    key = key.join(ambiguous.select("sample_id"), on="sample_id", how="anti")
    matched = key.join(authors, on=["history", "target"], how="inner")
    report["joined"] += matched.height
    report["authors_rows_without_sample"] += authors.height - matched.height
    report[f"{split}_samples_without_authors_row"] += ours.height - matched.height
    replaced = ours.drop("candidates", "target_index").join(
        matched.select("sample_id", "candidates"), on="sample_id", how="inner"
    )
    replaced = replaced.with_columns(
        target_index=pl.struct("candidates", "target").map_elements(
            lambda r: r["candidates"].index(r["target"]), return_dtype=pl.Int32
        )
    )
    return pl.concat([cands.filter(pl.col("split") != split), replaced.select(cands.columns)]).sort(
        pl.col("split").replace_strict({"train": 0, "valid": 1, "test": 2}, return_dtype=pl.Int8),
        "user_id",
        pl.col("sample_id").str.len_chars(),
        "sample_id",
    )


def read_cot(path: Path, drafts: pl.DataFrame) -> tuple[dict[str, str], dict]:
    """sample_id -> the authors' refined CoT, for the drafts (our train samples) with the same (user, history,
    target); the report counts every row that could not be used, by reason."""
    counts: Counter = Counter()
    key = {(s["user_id"], tuple(s["history"]), s["target"]): s["sample_id"] for s in drafts.iter_rows(named=True)}
    users = {u for u, _, _ in key}
    found: dict[str, str] = {}
    for row in load_list(path):
        try:
            user = str(row["user_id"])
            history = tuple(str(h["item_id"]) for h in row["history_items"])
            target = str(row["target_item"]["item_id"])
            text = row.get("reasoning")
        except (KeyError, TypeError, AttributeError):
            counts["unknown_entry_shape"] += 1
            continue
        counts["read"] += 1
        if row.get("error") or not isinstance(text, str) or not text.strip():
            counts["empty_or_failed_reasoning"] += 1
        elif (user, history, target) in key:
            sid = key[(user, history, target)]
            counts["joined" if sid not in found else "duplicate_row"] += 1
            found.setdefault(sid, text)
        else:  # the user is ours but the window differs (e.g. their target is our valid sample), or not ours at all
            counts["sequence_differs" if user in users else "user_not_in_samples"] += 1
    counts["samples_without_authors_cot"] = drafts.height - len(found)
    return found, dict(sorted(counts.items()))
