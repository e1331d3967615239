"""Title matching: does a text name an item, by its id tag or its title, however spelled? Pure functions, shared by
the caption scrub (mllmrec.data.textualize), the CoT leak audit (mllmrec.cot.leak) and the ablation table.

    from mllmrec.titles import mentions, spelled_variants
    mentions("Next they watch Toy Story.", "1", "Toy Story (1995)")   # -> ['title_core']
    spelled_variants("Fugitive, The (1993)")   # -> ['fugitivethe1993', 'fugitive', 'thefugitive', 'thefugitive1993']

The kinds of mention:
  item_tag    `[ITEM_<id>]` / `ITEM_<id>` / `item <id>`
  id          the bare id, for ids of >= 4 characters (shorter ones collide with ordinary numbers: "Step 1", "3-5")
  title       the whole normalized title (case, accents, punctuation ignored), e.g. "toy story 1995"
  title_core  the title without year, alternate titles in brackets and articles ("Matrix, The (1999)" -> "matrix");
              a one-word core matches only in its original spelling and case ("Heat", not "the heat of the chase")
  fuzzy       a word window whose difflib ratio to a core of >= 2 words (or >= 6 letters) is >= threshold
"""

import re
import unicodedata
from difflib import SequenceMatcher

# leading/trailing articles of the languages MovieLens-like titles use ("Matrix, The", "Cité des enfants perdus, La")
ARTICLES = (
    {"the", "a", "an"}  # English
    | {"le", "la", "les", "l", "un", "une"}  # French ("l" of the elided "L'")
    | {"der", "die", "das"}  # German
    | {"el", "los", "las"}  # Spanish
    | {"il", "lo", "gli", "i"}  # Italian
    | {"o", "os"}  # Portuguese
    | {"det", "den"}  # Danish, Norwegian, Swedish
    | {"het", "de"}  # Dutch
)
MIN_BARE_ID = 4
MAX_TITLE_WORDS = 30  # very long titles: only the first words take part in fuzzy matching (bounded cost)


def normalize(s: str) -> str:
    """Casefolded, accents stripped, punctuation -> spaces, whitespace collapsed.

    >>> normalize("  Amélie (Fabuleux destin d'Amélie Poulain, Le) ")
    'amelie fabuleux destin d amelie poulain le'
    """
    s = unicodedata.normalize("NFKD", s)
    s = "".join(c for c in s if not unicodedata.combining(c)).casefold()
    return " ".join(re.findall(r"\w+", s))


def _strip_articles(words: list[str]) -> list[str]:
    while len(words) > 1 and words[0] in ARTICLES:
        words = words[1:]
    while len(words) > 1 and words[-1] in ARTICLES:
        words = words[:-1]
    return words


NUMBER_WORDS = {
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
    "eleven": "11",
    "twelve": "12",
    "thirteen": "13",
    "twenty": "20",
}


def main_title(title: str) -> str:
    """The title without its bracketed parts (year, alternate titles).

    >>> main_title("Matrix, The (1999)")
    'Matrix, The  '
    """
    return re.sub(r"\([^()]*\)", " ", title)


def title_variants(title: str) -> tuple[str, list[str]]:
    """(normalized full title, normalized cores): without year / bracketed alternates / articles; alternates too.

    >>> title_variants("Matrix, The (1999)")
    ('matrix the 1999', ['matrix'])
    >>> title_variants("City of Lost Children, The (Cité des enfants perdus, La) (1995)")[1]
    ['city of lost children', 'cite des enfants perdus']
    """
    full = normalize(title)
    alternates = re.findall(r"\(([^()]*)\)", title)
    main = main_title(title)
    cores = []
    for part in [main, *alternates]:
        aka = re.sub(r"^\s*a\.?k\.?a\.?\s+", "", part, flags=re.IGNORECASE)  # "(a.k.a. Se7en)"
        words = normalize(aka).split()
        if not words or all(w.isdigit() for w in words):  # "(1995)" is a year, not a title
            continue
        core = " ".join(_strip_articles(words))
        if core and core not in cores:
            cores.append(core)
    for core in list(cores):  # "Twelve Monkeys" is also written "12 Monkeys"
        digits = " ".join(NUMBER_WORDS.get(w, w) for w in core.split())
        if digits not in cores:
            cores.append(digits)
    return full, cores


def spelled_variants(title: str) -> list[str]:
    """The ways a poster or a model may spell a title without spaces: the normalized full title and cores, the
    trailing article moved to the front ("Fugitive, The" -> "thefugitive"), number words as digits
    ("Twelve Monkeys" -> "12monkeys", a core from title_variants, which the CoT audit matches too).

    >>> spelled_variants("Fugitive, The (1993)")
    ['fugitivethe1993', 'fugitive', 'thefugitive', 'thefugitive1993']
    >>> spelled_variants("Twelve Monkeys (1995)")
    ['twelvemonkeys1995', 'twelvemonkeys', '12monkeys']
    """
    full, cores = title_variants(title)
    out = [full.replace(" ", "")] + [c.replace(" ", "") for c in cores]
    main = main_title(title)
    moved = re.match(r"^(.*),\s*(\w+)\s*$", main.strip())
    if moved and normalize(moved.group(2)) in ARTICLES:  # "Fugitive, The" is shown as "The Fugitive"
        front = normalize(f"{moved.group(2)} {moved.group(1)}").replace(" ", "")
        year = "".join(re.findall(r"\((\d{4})\)", title))
        out += [front, front + year]
    return list(dict.fromkeys(out))


def _contains(norm_text: str, phrase: str) -> bool:
    # word-bounded for Latin scripts; CJK has no spaces, so any non-[0-9a-z] neighbour counts as a boundary
    return re.search(rf"(?<![0-9a-z]){re.escape(phrase)}(?![0-9a-z])", norm_text) is not None


def _fuzzy(norm_text: str, core: str, threshold: float) -> bool:
    target = core.split()[:MAX_TITLE_WORDS]
    words = norm_text.split()
    n, joined = len(target), " ".join(target)
    for size in {max(1, n - 1), n, n + 1}:
        for i in range(max(1, len(words) - size + 1)):
            window = " ".join(words[i : i + size])
            if window and SequenceMatcher(None, window, joined).ratio() >= threshold:
                return True
    return False


def mentions(sentence: str, item_id: str, title: str, fuzzy_threshold: float = 0.85) -> list[str]:
    """Kinds of mention of the item in one sentence (empty list = none): the leak audit's and the caption scrub's rule.

    >>> mentions("They will love [ITEM_1] next.", "1", "Toy Story (1995)")
    ['item_tag']
    >>> mentions("A playful animated adventure about toys.", "1", "Toy Story (1995)")
    []
    """
    kinds = []
    if re.search(rf"item[\s_\-#:]*{re.escape(item_id)}(?![\w])", sentence, re.IGNORECASE):
        kinds.append("item_tag")
    elif len(item_id) >= MIN_BARE_ID and re.search(rf"(?<![\w.]){re.escape(item_id)}(?![\w])", sentence):
        kinds.append("id")
    text = normalize(sentence)
    full, cores = title_variants(title)
    if full and _contains(text, full):
        kinds.append("title")
    matched_core = False
    for core in cores:
        if " " in core or not core.isascii():  # CJK titles have no spaces and no case
            hit = _contains(text, core)
        else:  # one word: original spelling and case, or a common word ("Heat", "Up", "Her") would flag prose
            words = [w for w in re.findall(r"\w+", title) if normalize(w) == core]
            hit = any(re.search(rf"(?<!\w){re.escape(w)}(?!\w)", sentence) for w in words)
        if hit:
            matched_core = True
            kinds.append("title_core")
            break
    if not matched_core and "title" not in kinds:
        for core in cores:
            if (" " in core or len(core) >= 6) and _fuzzy(text, core, fuzzy_threshold):
                kinds.append("fuzzy")
                break
    return kinds


def spells_title_part(quoted: str, title: str, fuzzy_threshold: float) -> bool:
    """Is this quoted text (an OCR line, say) a piece of the title? Spaces are ignored, because OCR often merges
    words ("GRUMPIEROLDMEN"): a piece of >= 3 characters of any spelled variant (spelled_variants), a near match of a
    whole variant (misreads: "dabrina"), or, for a piece of >= 5 letters, a one-letter misread of one title word
    ("stort" for Story)."""
    piece = normalize(quoted).replace(" ", "")
    if len(piece) < 3:
        return False
    whole = spelled_variants(title)
    if any(piece in w for w in whole) or any(
        SequenceMatcher(None, piece, w).ratio() >= fuzzy_threshold for w in whole[1:]
    ):
        return True
    words = [w for w in normalize(main_title(title)).split() if len(w) >= 5]
    return len(piece) >= 5 and any(len(w) == len(piece) and sum(a != b for a, b in zip(w, piece)) <= 1 for w in words)
