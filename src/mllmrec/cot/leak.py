"""Leak audit: does a CoT explicitly mention its own target item? Pure functions, tested on hand-written strings.

    from mllmrec.cot.leak import find_leaks, scrub
    find_leaks("Step 4: Next they watch Toy Story.", "1", "Toy Story (1995)")   # -> ['title_core']
    scrub(cot, "1", "Toy Story (1995)")  # -> (cot without the leaking sentences, sentences removed)

A CoT that names the answer teaches the policy to copy it (reward inflation), so every refined CoT is checked for
each kind of mention mllmrec.titles knows (item_tag, id, title, title_core, fuzzy). Detection is per sentence, so
scrubbing removes exactly the sentences that leak.
"""

import re

from mllmrec.titles import mentions

_SENTENCE = re.compile(r"(?<=[.!?。！？;])\s+")


def sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE.split(text) if s.strip()]


def find_leaks(cot: str, item_id: str, title: str, fuzzy_threshold: float = 0.85) -> list[str]:
    """Sorted distinct leak kinds over all sentences of a CoT.

    >>> find_leaks("Step 3: dark thrillers.\\nStep 4: Probably Se7en.", "47", "Seven (a.k.a. Se7en) (1995)")
    ['title_core']
    """
    kinds = set()
    for line in cot.splitlines():
        for s in sentences(_body(line)):
            kinds.update(mentions(s, item_id, title, fuzzy_threshold))
    return sorted(kinds)


def _body(line: str) -> str:
    # the "Step k:" prefix is format, not content: its digit must not count as a mention of item k
    return re.sub(r"^\s*step\s*\d+\s*:\s*", "", line, flags=re.IGNORECASE)


def scrub(cot: str, item_id: str, title: str, fuzzy_threshold: float = 0.85) -> tuple[str, int]:
    """Remove every leaking sentence; a line left empty stays as its bare prefix (the caller decides what that means).

    >>> scrub("Step 1: Likes toys. Wants Toy Story again.\\nStep 2: Family films.", "1", "Toy Story (1995)")
    ('Step 1: Likes toys.\\nStep 2: Family films.', 1)
    """
    out, removed = [], 0
    for line in cot.splitlines():
        prefix = line[: len(line) - len(_body(line))]
        keep = []
        for s in sentences(_body(line)):
            if mentions(s, item_id, title, fuzzy_threshold):
                removed += 1
            else:
                keep.append(s.strip())
        out.append((prefix + " ".join(keep)).rstrip())
    return "\n".join(out), removed
