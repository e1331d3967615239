"""Kill-and-resume: a real subprocess captioning with a slow engine is SIGKILLed mid-run, several times.

Each kill may lose only the batch in flight (requests the engine answered but no committed part holds), the parts
on disk always read back, and the final run asks only for what no part holds, ending equal to an uninterrupted run.
"""

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import polars as pl
from textualize_util import PROMPT, Factory, make_dataset, poster_ids, write_project

from mllmrec.data.textualize import read_cache, textualize
from mllmrec.engines.base import SamplingParams

TESTS = Path(__file__).resolve().parent
N, BATCH, DELAY = 48, 4, 0.03

CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import polars as pl
    from textualize_util import PROMPT, CountingEngine
    from mllmrec.engines.base import SamplingParams
    from mllmrec.data.textualize import textualize

    items, root, cache, log, batch, delay = sys.argv[1:7]
    log = open(log, "a", buffering=1)  # line-buffered: every answered request is on disk before the next one

    class Slow(CountingEngine):
        def generate(self, requests):
            out = []
            for r in requests:
                time.sleep(float(delay))
                out += super().generate([r])
                log.write(Path(r.images[0]).name + "\\n")
            return out

    textualize(pl.read_parquet(items), Path(root), prompt=PROMPT, sampling=SamplingParams(), model="pixel-describer",
               revision="pd-1", make_engine=Slow, cache_dir=Path(cache), batch_size=int(batch), progress=False)
    print("finished")
""")


def lines(p: Path) -> int:
    return len(p.read_text().splitlines()) if p.exists() else 0


def test_sigkill_loses_at_most_the_batch_in_flight(tmp_path):
    root, items = make_dataset(tmp_path, n=N)
    items.write_parquet(tmp_path / "items.parquet")
    cache, log = tmp_path / "cache", tmp_path / "calls.log"
    (tmp_path / "child.py").write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent / "src")])}
    rng = random.Random(0)
    kills = 0
    for _ in range(3):
        before_rows, before_calls = read_cache(cache).height if cache.exists() else 0, lines(log)
        before_parts = len(list(cache.glob("part-*.parquet")))
        proc = subprocess.Popen(
            [
                sys.executable,
                str(tmp_path / "child.py"),
                str(tmp_path / "items.parquet"),
                str(root),
                str(cache),
                str(log),
                str(BATCH),
                str(DELAY),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while len(list(cache.glob("part-*.parquet"))) <= before_parts and proc.poll() is None:
            assert time.monotonic() < deadline, "child made no progress"
            time.sleep(0.002)
        time.sleep(rng.uniform(0, DELAY * BATCH * 1.5))  # anywhere: mid-batch, mid-write, between batches
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate()
        if proc.returncode != -signal.SIGKILL:  # finished before the kill landed: nothing left to test
            assert proc.returncode == 0, err.decode()
            break
        kills += 1
        rows = read_cache(cache).height  # every committed part reads back
        lost = (lines(log) - before_calls) - (rows - before_rows)
        assert 0 <= lost <= BATCH, f"kill lost {lost} answered requests (> one batch of {BATCH})"
    assert kills >= 2, "the child finished too fast to be killed mid-run; raise DELAY"

    persisted = read_cache(cache).height
    factory = Factory()
    captions, report = textualize(
        items,
        root,
        prompt=PROMPT,
        sampling=SamplingParams(),
        model="pixel-describer",
        revision="pd-1",
        make_engine=factory,
        cache_dir=cache,
        batch_size=BATCH,
        progress=False,
    )
    assert factory.engine.requests == N - persisted and report.cache_hits == persisted
    assert not list(cache.glob("*.tmp"))
    reference, _ = textualize(
        items,
        root,
        prompt=PROMPT,
        sampling=SamplingParams(),
        model="pixel-describer",
        revision="pd-1",
        make_engine=Factory(),
        cache_dir=tmp_path / "ref",
        batch_size=BATCH,
        progress=False,
    )
    assert captions.equals(reference) and captions["caption"].null_count() == 0  # nothing lost, nothing different


def test_stage_script_killed_then_rerun_completes(tmp_path):
    """The real stage (`python stages/textualize.py`, pixel describer) SIGKILLed once its first part is committed."""
    ids = poster_ids(120)
    proj = write_project(tmp_path / "proj", ids, batch_size=4)
    cache = proj / "data/textualize/cache"
    stage = [sys.executable, str(TESTS.parent / "stages" / "textualize.py")]
    proc = subprocess.Popen(stage, cwd=proj, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not list(cache.glob("part-*.parquet")) and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the stage finished before the kill; make the dataset bigger"
    assert not (proj / "data/textualize/captions.parquet").exists()  # final outputs only appear at the end
    persisted = read_cache(cache).height
    assert 0 < persisted < len(ids)

    subprocess.run(stage, cwd=proj, check=True, capture_output=True)
    report = json.loads((proj / "data/textualize/report.json").read_text())
    assert report["model_calls"] == len(ids) - persisted and report["cache_hits"] == persisted
    captions = pl.read_parquet(proj / "data/textualize/captions.parquet")
    assert captions.height == len(ids) and captions["caption"].null_count() == 0
