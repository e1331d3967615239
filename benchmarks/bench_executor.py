"""Requests/s of textualize with the local executor vs Ray with 1 and 2 workers: same engine, same requests.

    pip install -e .[ray]; .venv/bin/python benchmarks/bench_executor.py            # ~1 min on 2 cores
    .venv/bin/python benchmarks/bench_executor.py --n 450 --batch 16 --num-cpus 2

The pixel describer (a real engine, CPU-bound numpy per image) captions the bundled posters with a cold cache in
every row; Ray is one in-process local cluster started once (its start-up is printed, not counted), each Ray row
includes creating its actors. Every row must write the same part files as the local one (checked), so the rows
differ only in where the batches ran. On a 2-core box expect little gain: the driver (reading results, writing
Parquet parts) and the workers share the same cores.
"""

import shutil
import sys
import tempfile
import time
from pathlib import Path

import ray
import typer

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from textualize_util import POSTERS, PROMPT, items_frame, poster_ids

from mllmrec.config import EngineSpec, ExecutorParams
from mllmrec.data.textualize import textualize
from mllmrec.engines import SamplingParams, build_engine

SPEC = EngineSpec(engine="pixel_describer", model="pixel-describer")


def run(root: Path, items, cache: Path, batch: int, executor) -> tuple[float, int, dict]:
    t0 = time.perf_counter()
    _, report = textualize(
        items,
        root,
        prompt=PROMPT,
        sampling=SamplingParams(max_new_tokens=64),
        model="pixel-describer",
        revision="bench",
        make_engine=lambda: build_engine(SPEC),
        cache_dir=cache,
        batch_size=batch,
        executor=executor,
        progress=False,
    )
    secs = time.perf_counter() - t0
    return secs, report.model_calls, {p.name: p.read_bytes() for p in cache.glob("part-*.parquet")}


def main(n: int = 450, batch: int = 16, num_cpus: int = 2) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench_executor_"))
    try:
        root = tmp / "dataset"
        (root / "posters").mkdir(parents=True)
        ids = poster_ids(n)
        for i in ids:
            shutil.copy(POSTERS / f"{i}.jpg", root / "posters" / f"{i}.jpg")
        items = items_frame(root, ids)
        t0 = time.perf_counter()
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
        print(f"ray.init (local cluster, {num_cpus} CPUs): {time.perf_counter() - t0:.1f} s, not counted below")
        rows, reference = [], None
        for name, ex in [
            ("local", None),
            ("ray, 1 worker", ExecutorParams(kind="ray", num_workers=1)),
            ("ray, 2 workers", ExecutorParams(kind="ray", num_workers=2)),
        ]:
            secs, calls, parts = run(root, items, tmp / name.replace(" ", "_").replace(",", ""), batch, ex)
            reference = reference or parts
            assert parts == reference, f"{name}: cache parts differ from the local run"
            rows.append((name, calls, secs))
        print(f"{len(ids)} posters, batch {batch}, pixel describer, cold cache each row:")
        print(f"{'executor':<16}{'requests':>9}{'seconds':>9}{'requests/s':>12}{'vs local':>10}")
        for name, calls, secs in rows:
            print(f"{name:<16}{calls:>9}{secs:>9.2f}{calls / secs:>12.1f}{rows[0][2] / secs:>9.2f}x")
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    typer.run(main)
