"""CoT text: history rendering for the drafter/editor prompts, and parsing of the editor's `Step 1:`...`Step 4:` output.

    from mllmrec.cot.text import parse_steps
    parse_steps("<think>...</think>Step 1: a\\nStep 2: b\\nStep 3: c\\nStep 4: d")  # -> ("Step 1: a\\n...", "ok")

Pure functions (no model): every failure has a reason, so a stage can count them and retry the right ones.
"""

import re

from mllmrec.engines.base import split_think

STEPS = 4
MAX_TITLE_CHARS = 200  # a very long title is cut in prompts (counted): one item must not crowd out the others
MAX_CAPTION_CHARS = 400
FAIL_REASONS = ("empty", "refusal", "truncated", "wrong_format", "echo")
_STEP = re.compile(r"^[\s>#*_\-]*step\s*([0-9]+)\s*[*_]*\s*[:.)\-–—]\s*[*_]*\s*(.*)$", re.IGNORECASE)
_PLACEHOLDER = re.compile(r"(?:<[^<>]*>[\s;,.]*)+")
_REFUSAL = re.compile(
    r"\b(i\s*(?:'m| am)\s*sorry|i\s*(?:can(?:'|no)t|cannot|won't|will not|am unable|'m unable)|as an ai\b|"
    r"i\s*(?:do not|don't)\s*feel comfortable)",
    re.IGNORECASE,
)


def clip(text: str, limit: int) -> tuple[str, bool]:
    """(text cut to `limit` characters with an ellipsis, whether it was cut)."""
    text = " ".join(text.split())
    return (text, False) if len(text) <= limit else (text[: limit - 1].rstrip() + "…", True)


def parse_steps(text: str, finish_reason: str = "stop") -> tuple[str | None, str]:
    """(canonical four-line CoT or None, reason): reason is "ok" or one of FAIL_REASONS.

    Lenient about decoration (markdown bold, bullets, `Step 1 -`), a preamble before Step 1, and continuation
    lines inside a step; strict about content: Steps 1-4 exactly once, in order, each non-empty. Text after
    Step 4's paragraph (a blank line ends it) is chatter and dropped. `<think>` blocks are removed first.

    >>> parse_steps("Sure!\\n**Step 1:** sci-fi\\nStep 2: more\\nof it\\nStep 3: a; b; c\\nStep 4: A dark film.")
    ('Step 1: sci-fi\\nStep 2: more of it\\nStep 3: a; b; c\\nStep 4: A dark film.', 'ok')
    >>> parse_steps("<think>long trace", "length")
    (None, 'truncated')
    >>> parse_steps("I'm sorry, I can't help with that.")
    (None, 'refusal')
    >>> parse_steps("Step 1: a\\nStep 2: b\\nStep 3: c")
    (None, 'wrong_format')
    """
    answer, _ = split_think(text or "")
    if not answer.strip():
        return None, "truncated" if finish_reason == "length" else "empty"
    steps: dict[int, list[str]] = {}
    order, current, closed = [], None, False
    for line in answer.splitlines():
        m = _STEP.match(line)
        if m:
            n = int(m.group(1))
            if closed or n in steps:  # a second Step 4 / a Step after the profile: not "exactly four lines"
                if closed and n > STEPS:
                    break
                return None, "wrong_format"
            steps[n], current = [m.group(2)], n
            order.append(n)
        elif current is not None and line.strip():
            if closed:
                break
            steps[current].append(line)
        elif current == STEPS and not line.strip():
            closed = True  # blank line after Step 4: the rest is chatter
    if not steps:  # no Step line in the whole answer: not the format, even if it also ran out of tokens
        return None, "refusal" if _REFUSAL.search(answer) else "wrong_format"
    last_cut = finish_reason == "length" and not closed  # generation stopped inside the last step
    if order != list(range(1, STEPS + 1)):
        if finish_reason == "length" and order == list(range(1, len(order) + 1)):
            return None, "truncated"
        return None, "wrong_format"
    if last_cut:
        return None, "truncated"
    bodies = [" ".join(" ".join(steps[n]).replace("**", "").split()) for n in range(1, STEPS + 1)]
    if not all(bodies) or any(_PLACEHOLDER.fullmatch(b) for b in bodies):  # "<intent>" copied from the prompt
        return None, "wrong_format"
    return "\n".join(f"Step {n}: {b}" for n, b in enumerate(bodies, 1)), "ok"


def is_echo(cot: str, prompt: str, threshold: float = 0.9) -> bool:
    r"""True if most steps (>= 3 of 4) are near-copies of lines of the prompt: small models parrot the instructions.

    >>> p = "Step 1: the discriminative signals.\nStep 2: the likely next intent.\nStep 3: criteria.\nStep 4: profile."
    >>> is_echo("Step 1: The discriminative signals\nStep 2: The likely next intent.\nStep 3: criteria\nStep 4: x", p)
    True
    >>> is_echo("Step 1: war films\nStep 2: more war\nStep 3: ww2; tanks\nStep 4: A war epic.", p)
    False
    """
    from difflib import SequenceMatcher

    def norm(t: str) -> str:
        return " ".join(re.findall(r"\w+", t.casefold()))

    lines = [norm(_STEP.sub(r"\2", ln)) for ln in prompt.splitlines() if ln.strip()]
    copied = sum(
        any(SequenceMatcher(None, norm(b), ln).ratio() >= threshold for ln in lines) for b in step_bodies(cot).values()
    )
    return copied >= STEPS - 1


def step_bodies(cot: str) -> dict[int, str]:
    """{step number: text} of a canonical CoT (as parse_steps writes it).

    >>> step_bodies("Step 1: a\\nStep 2: b")
    {1: 'a', 2: 'b'}
    """
    out = {}
    for line in cot.splitlines():
        m = _STEP.match(line)
        if m:
            out[int(m.group(1))] = m.group(2).strip()
    return out


def prediction_text(cot: str) -> str:
    """What the CoT predicts about the next item: Steps 2-4 (Step 1 describes the past)."""
    b = step_bodies(cot)
    return " ".join(b[n] for n in range(2, STEPS + 1) if b.get(n))


def item_line(
    n: int, item_id: str, title: str | None, caption: str | None, max_caption_chars: int = MAX_CAPTION_CHARS
) -> tuple[str, dict]:
    """One numbered history line `n. [ITEM_<id>] <title> | <caption>` and what had to be worked around.

    >>> item_line(1, "1", "Toy Story (1995)", "")
    ('1. [ITEM_1] Toy Story (1995)', {'missing_caption': 1})
    """
    notes: dict = {}
    t, cut = clip(title or "", MAX_TITLE_CHARS)
    if cut:
        notes["long_title"] = 1
    if not t:
        t, notes["missing_title"] = "(untitled)", 1
    line = f"{n}. [ITEM_{item_id}] {t}"
    if caption and caption.strip():
        c, cut = clip(caption, max_caption_chars)
        if cut:
            notes["long_caption"] = 1
        line += f" | {c}"
    else:
        notes["missing_caption"] = 1
    return line, notes
