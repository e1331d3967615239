"""Pure GRPO reward functions: (completion text, candidates, target) -> float. Never raise, whatever the text.

What counts as a well-formed answer (the paper: "−1 bad format, +1 hit, +0.3 valid miss"):
  1. everything up to the last `</think>` is reasoning and ignored (a think-mode policy may mention several
     candidates while reasoning; Qwen3 templates may open `<think>` in the prompt); a `<think>` that is never
     closed is a format error (no answer came);
  2. the rest names exactly ONE distinct item id as `[ITEM_<id>]` (repeating that same id is tolerated; the title
     after it is not checked, it is decoration the policy copies from the candidate list);
  3. that id is one of the sample's candidates.
Anything else (no tag, two different ids, an id that was not offered, empty, garbage) is a format error.

    >>> paper_reward("[ITEM_5] Heat (1995)", ["5", "7"], "5")
    1.0
    >>> paper_reward("[ITEM_7] Up (2009)", ["5", "7"], "5")
    0.3
    >>> paper_reward("[ITEM_9] Not offered", ["5", "7"], "5"), paper_reward("[ITEM_5] or [ITEM_7]", ["5", "7"], "5")
    (-1.0, -1.0)

Reward kinds (params `grpo.reward.kind`), each a sum of components that TRL logs separately as
`rewards/<component>/mean`, so a rising reward can be traced to format learning vs. real hits:
- `paper`:      format (bad_format or 0) + hit (hit or 0) + valid_miss (valid_miss or 0)   = −1 / +1 / +0.3
- `rank_aware`: the answer may rank up to `max_answers` distinct candidates, one per line; a hit at rank r earns
  hit / log2(r + 2) (the NDCG gain the generative HR@K/NDCG@K evaluation uses), a valid list that misses earns
  valid_miss / len(list) (so padding the list with guesses dilutes rather than buys reward), anything invalid (an id
  not offered, more than `max_answers` ids) is bad_format. With one id it equals `paper`.
Setting `valid_miss: 0` gives the strict hit-only reward (no bonus for merely valid output, the shortcut that lets
reward inflate while ranking does not improve).
"""

import math
from dataclasses import dataclass

from mllmrec.prompts import answer_part, parse_answer


@dataclass(frozen=True)
class Parsed:
    ids: list[str]  # distinct ids in answer order (after the think block); [] when the format is broken
    ok: bool  # well-formed: 1..max_answers distinct ids, all among the candidates
    reason: str  # "" when ok, else a short tag (for completion logs)


def _text(completion) -> str:
    # TRL passes a str for string prompts and [{"role": "assistant", "content": ...}] for conversational ones
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        content = completion[-1].get("content", "")
        return content if isinstance(content, str) else ""
    return ""


def parse(completion, candidates, max_answers: int = 1) -> Parsed:
    """Check the format: the ids mllmrec.prompts.parse_answer reads, at most `max_answers` of them (1 for the
    paper's one-line answer), all among the candidates; anything else is a format error with its reason.

    >>> parse("<think>[ITEM_7] looks close, but</think>[ITEM_5] Heat", ["5", "7"])
    Parsed(ids=['5'], ok=True, reason='')
    >>> parse("<think>never closed [ITEM_5]", ["5"]).reason
    'unclosed_think'
    >>> parse("", ["5"]).reason, parse("[ITEM_5] Heat\\n[ITEM_5] Heat", ["5"]).ok
    ('no_id', True)
    """
    try:
        text = _text(completion)
        if answer_part(text) is None:
            return Parsed([], False, "unclosed_think")
        ids = parse_answer(text)  # the ids evaluation reads; what differs here is strictness (see parse_answer)
        if not ids:
            return Parsed([], False, "no_id")
        if len(ids) > max_answers:
            return Parsed([], False, "too_many_ids")
        allowed = {str(c) for c in candidates} if candidates is not None else set()
        if any(i not in allowed for i in ids):
            return Parsed([], False, "not_a_candidate")
        return Parsed(ids, True, "")
    except Exception:  # noqa: BLE001 - a reward that raises kills a multi-hour run: any surprise is a format error
        return Parsed([], False, "error")


def paper_reward(
    completion, candidates, target, bad_format: float = -1.0, hit: float = 1.0, valid_miss: float = 0.3
) -> float:
    """The paper's reward: −1 bad format, +1 hit, +0.3 valid miss."""
    p = parse(completion, candidates, 1)
    if not p.ok:
        return float(bad_format)
    return float(hit) if p.ids[0] == str(target) else float(valid_miss)


def rank_aware_reward(
    completion,
    candidates,
    target,
    bad_format: float = -1.0,
    hit: float = 1.0,
    valid_miss: float = 0.3,
    max_answers: int = 3,
) -> float:
    """NDCG-style reward for a ranked answer of up to `max_answers` candidates.

    >>> rank_aware_reward("[ITEM_7] Up\\n[ITEM_5] Heat", ["5", "7", "9"], "5")  # hit at rank 1: 1/log2(3)
    0.6309297535714575
    >>> rank_aware_reward("[ITEM_7] Up\\n[ITEM_9] X", ["5", "7", "9"], "5")  # valid miss, two guesses
    0.15
    """
    p = parse(completion, candidates, max_answers)
    if not p.ok:
        return float(bad_format)
    t = str(target)
    if t in p.ids:
        return float(hit) / math.log2(p.ids.index(t) + 2)
    return float(valid_miss) / len(p.ids)


def components(kind: str, bad_format: float, hit: float, valid_miss: float, max_answers: int) -> dict:
    """name -> fn(completion, candidates, target) -> float; the components of a kind sum to its reward.

    >>> fs = components("paper", -1.0, 1.0, 0.3, 1)
    >>> [fs[n]("[ITEM_7] Up", ["5", "7"], "5") for n in fs]
    [0.0, 0.0, 0.3]
    """
    k = 1 if kind == "paper" else max_answers
    full = paper_reward if kind == "paper" else rank_aware_reward
    extra = {} if kind == "paper" else {"max_answers": max_answers}

    def fmt(c, cands, t) -> float:
        return 0.0 if parse(c, cands, k).ok else float(bad_format)

    def hit_part(c, cands, t) -> float:
        p = parse(c, cands, k)
        return full(c, cands, t, bad_format, hit, valid_miss, **extra) if p.ok and str(t) in p.ids else 0.0

    def miss_part(c, cands, t) -> float:
        p = parse(c, cands, k)
        return full(c, cands, t, bad_format, hit, valid_miss, **extra) if p.ok and str(t) not in p.ids else 0.0

    if kind not in ("paper", "rank_aware"):
        raise ValueError(f"unknown reward kind {kind!r}")
    return {"format": fmt, "hit": hit_part, "valid_miss": miss_part}


def trl_reward_funcs(kind: str, bad_format: float, hit: float, valid_miss: float, max_answers: int = 1) -> list:
    """The components wrapped in TRL's reward signature: f(prompts, completions, candidates, target, **kw) -> list.

    Dataset columns reach reward functions as keyword arguments (GRPOConfig.remove_unused_columns=False).
    """
    funcs = []
    for name, fn in components(kind, bad_format, hit, valid_miss, max_answers).items():

        def reward(prompts=None, completions=None, candidates=None, target=None, _fn=fn, **kwargs) -> list[float]:
            n = len(completions or [])
            cands = candidates if candidates is not None else [[]] * n
            targets = target if target is not None else [None] * n
            return [_fn(c, cs, t) for c, cs, t in zip(completions or [], cands, targets)]

        reward.__name__ = name  # TRL names the logged metric rewards/<__name__>/mean
        funcs.append(reward)
    return funcs
