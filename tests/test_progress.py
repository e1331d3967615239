"""Progress shows as plain, flushed lines when output is not a terminal (a log file), and not at all when off."""

import io

from mllmrec.progress import Progress, track


def test_plain_lines_when_not_a_terminal():
    out = io.StringIO()  # isatty() is False, like `dvc repro > log`
    with Progress("ranking", total=4, every_s=0, stream=out) as bar:
        for _ in range(4):
            bar.advance(1, note="loss 0.5")
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("ranking: 1/4 (25%)") and lines[0].endswith("left loss 0.5")
    assert lines[-1].startswith("ranking: 4/4 (100%)") and len(lines) == 5  # 4 steps + the final count


def test_throttled_and_disabled():
    out = io.StringIO()
    with Progress("slow", total=1000, every_s=3600, stream=out) as bar:
        bar.advance(999)
        bar.advance(1)
    assert out.getvalue().splitlines() == [out.getvalue().splitlines()[-1]]  # only the final line
    assert "slow: 1000/1000" in out.getvalue()
    quiet = io.StringIO()
    with Progress("off", total=3, every_s=0, enabled=False, stream=quiet) as bar:
        bar.advance(3)
    assert quiet.getvalue() == ""


def test_track_yields_everything():
    assert list(track(iter(range(5)), total=5, description="x", every_s=3600)) == [0, 1, 2, 3, 4]
