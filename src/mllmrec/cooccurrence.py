"""Item co-occurrence in users' sequences: one home for the ItemKNN baseline's similarity and the grounded drafter's.

co = CoOccurrence(train_sequences)        # columns items (+ user_id)
co.cosine("a", "b"), co.cosine("a", "b", without="u7"), co.related(history, without="u7")
"""

import math
from collections import Counter, defaultdict

import polars as pl


class CoOccurrence:
    """Items' co-occurrence in users' training sequences (cosine over the user-item matrix), with one user's own
    sequence left out on request: a train sample's own sequence holds its target (and later items), which the
    grounded drafter must not see. Used by the ItemKNN baseline and the grounded CoT drafter.

    >>> co = CoOccurrence(pl.DataFrame({"user_id": ["u", "v", "w"], "items": [["a", "b"], ["a", "b", "c"], ["a", "c"]]}))
    >>> co.count("a", "b"), co.count("a", "b", without="u"), co.count("a", "b", without="w")
    (2, 1, 2)
    >>> [(j, round(c, 3)) for j, c in co.related(["a"], without="v")]  # u: a, b; w: a, c
    [('b', 0.707), ('c', 0.707)]
    """

    def __init__(self, sequences: pl.DataFrame):
        """`items` lists, one row per user; `user_id` (optional) names the rows `without=` can leave out."""
        users = sequences["user_id"] if "user_id" in sequences.columns else range(sequences.height)
        self.seqs = {u: set(items) for u, items in zip(users, sequences["items"])}
        self.users: Counter = Counter(i for s in self.seqs.values() for i in s)
        self.co: dict[str, Counter] = defaultdict(Counter)
        for s in self.seqs.values():
            for a in s:
                self.co[a].update(s - {a})
        self._nb: dict = {}
        self._nb_user: str | None = None

    def _own(self, without: str | None) -> set:
        return self.seqs.get(without, set()) if without is not None else set()

    def count(self, a: str, b: str, without: str | None = None) -> int:
        """Users other than `without` who have both a and b."""
        own = self._own(without)
        return self.co[a].get(b, 0) - (a in own and b in own) if a in self.co else 0

    def cosine(self, a: str, b: str, without: str | None = None) -> float:
        n = self.count(a, b, without)
        own = self._own(without)
        if not n:
            return 0.0
        return n / math.sqrt((self.users[a] - (a in own)) * (self.users[b] - (b in own)))

    def neighbours(self, a: str, without: str | None = None, k: int = 20) -> list[tuple[str, float]]:
        """a's k most similar items (cosine over users other than `without`), most similar first, then by id;
        remembered for the sample being drafted (`without`), forgotten when the next user's sample asks."""
        if self._nb_user != without:
            self._nb, self._nb_user = {}, without
        if (a, k) not in self._nb:
            sims = ((j, self.cosine(a, j, without)) for j in self.co.get(a, ()))
            self._nb[a, k] = sorted(((j, c) for j, c in sims if c > 0), key=lambda x: (-x[1], x[0]))[:k]
        return self._nb[a, k]

    def related(self, history: list[str], without: str | None = None, exclude: set = frozenset(), k: int = 20) -> list:
        """[(item, summed cosine)] over the history items' k nearest neighbours, most related first, then by id;
        the history and `exclude` left out (cosine, not counts: the most popular items co-occur with everything)."""
        total: Counter = Counter()
        for h in sorted(set(history)):
            for j, c in self.neighbours(h, without, k):
                if j not in exclude and j not in history:
                    total[j] += c
        return sorted(total.items(), key=lambda x: (-round(x[1], 9), x[0]))
