"""Progress for long loops that also shows when output goes to a log file (`dvc repro > log`).

    from mllmrec.progress import Progress, track
    for sample in track(rows, total=len(rows), description="likelihood ranking"):
        ...
    with Progress("captioning", total=n) as bar:
        bar.advance(batch, note="loss 0.31")

On a terminal: a rich progress bar that disappears when done. Otherwise: a plain line on stderr at most every
`every_s` seconds and one at the end, `<description>: 120/300 (40%) 61 s, ~92 s left [note]`, flushed, so a log
shows where a run is (rich's live bar prints nothing when stderr is not a terminal).
"""

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Self


class Progress:
    def __init__(self, description: str, total: int | None, every_s: float = 30.0, enabled: bool = True, stream=None):
        self.description, self.total, self.every_s, self.enabled = description, total, every_s, enabled
        self.stream = stream or sys.stderr
        self.done, self.note = 0, ""
        self._rich = None

    def __enter__(self) -> Self:
        self.t0 = self._last = time.monotonic()
        if self.enabled and self.stream.isatty():
            from rich.console import Console
            from rich.progress import Progress as RichProgress

            self._rich = RichProgress(console=Console(file=self.stream), transient=True)
            self._rich.start()
            self._task = self._rich.add_task(self.description, total=self.total)
        return self

    def advance(self, n: int = 1, note: str = "") -> None:
        self.done += n
        self.note = note or self.note
        if not self.enabled:
            return
        if self._rich is not None:
            text = f"{self.description} {self.note}".strip()
            self._rich.update(self._task, advance=n, description=text)
        elif time.monotonic() - self._last >= self.every_s:
            self._print()

    def line(self) -> str:
        elapsed = time.monotonic() - self.t0
        if self.total:
            eta = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
            text = (
                f"{self.description}: {self.done}/{self.total} ({100 * self.done / self.total:.0f}%) "
                f"{elapsed:.0f} s, ~{eta:.0f} s left"
            )
        else:
            text = f"{self.description}: {self.done} {elapsed:.0f} s"
        return f"{text} {self.note}".rstrip()

    def _print(self) -> None:
        print(self.line(), file=self.stream, flush=True)
        self._last = time.monotonic()

    def __exit__(self, *exc) -> None:
        if self._rich is not None:
            self._rich.stop()
        elif self.enabled and self.done:
            self._print()  # the final count, also for loops faster than every_s


def track(iterable: Iterable, total: int | None, description: str, every_s: float = 30.0) -> Iterator:
    """Yield from `iterable`, showing progress (see the module docstring)."""
    with Progress(description, total, every_s) as bar:
        for x in iterable:
            yield x
            bar.advance()
