"""Ingest + split + candidates on a synthetic interaction set with ML-25M's shape, and the cost of a no-op `dvc repro`.

    . .venv/bin/activate
    python benchmarks/bench_ingest.py                    # full ML-25M shape: 25 M ratings, 162,541 users
    python benchmarks/bench_ingest.py --rows 2000000 --users 13000 --items 20000   # a quick, smaller shape
    python benchmarks/bench_ingest.py --skip-dvc         # only the pipeline part
    python benchmarks/bench_ingest.py --skip-pipeline    # only the dvc part

Pipeline part: an ml-latest `ratings.csv` (userId,movieId,rating,timestamp; sorted by user then movie, like the real
file; every user has >= 20 ratings, heavy-tailed activity, Zipf-like item popularity, no duplicate pairs) and a
`movies.csv` (62,423 titles, some quoted with commas; no posters) are generated with numpy + the pyarrow CSV writer
and cached under --cache (not timed). Then the real stages run as child processes, exactly as `dvc repro` runs them
(`python stages/ingest.py`, `python stages/split.py` in a work dir with its own params.yaml): wall time and the
child's peak RSS (from wait4) per stage, against the targets (<= 60 s and <= 6 GB on 2 cores). `split` includes both
candidate sets (N=9 and N=99). With more than --cores CPUs, the children are pinned to the first --cores of them.

DVC part: the project is copied to a temp dir (the working tree is never touched; the copy is brought up to date
with one untimed `dvc repro <targets>`), then `dvc status <targets>` and a no-op `dvc repro <targets>` are timed
alternately, --reps times each. Targets default to `split` (ingest + split, the stages this benchmark is about);
`--dvc-targets ''` times the whole DAG, whose first repro trains the LLM stages.
Target: the no-op `dvc repro` adds <= 1 s over `dvc status` (median).
"""

import argparse
import csv
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

REPO = Path(__file__).resolve().parents[1]
# ML-25M: 25,000,095 ratings by 162,541 users of 59,047 of the 62,423 movies, 1995-01-09 .. 2019-11-21
ML25M = {"rows": 25_000_095, "users": 162_541, "items": 59_047, "movies": 62_423}
T0, T1 = 789_652_009, 1_574_327_703
GEN_VERSION = 1  # bump when the generator changes: the cache key includes it
TARGET_S, TARGET_GB, TARGET_DVC_S = 60.0, 6.0, 1.0


# ---------------------------------------------------------------------------------------------------- generation
def user_counts(rng: np.random.Generator, rows: int, users: int, items: int) -> np.ndarray:
    """Ratings per user: >= 20 each (as in ML-25M), lognormal tail, summing to ~rows."""
    raw = rng.lognormal(0.0, 1.25, size=users)
    counts = 20 + np.floor(raw / raw.sum() * (rows - 20 * users)).astype(np.int64)
    counts = np.minimum(counts, items // 2)
    short = rows - int(counts.sum())
    if short > 0:  # rounding remainder, spread over users with room
        room = np.flatnonzero(counts < items // 2)
        np.add.at(counts, rng.choice(room, size=short), 1)
        counts = np.minimum(counts, items // 2)
    return counts


def sorted_unique(a: np.ndarray) -> np.ndarray:
    """np.unique by sort + diff: numpy 2.x's hash-based np.unique is several times slower on 25 M int64."""
    a = np.sort(a)
    return a[np.concatenate(([True], a[1:] != a[:-1]))]


def generate(out: Path, rows: int, users: int, items: int, movies: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    counts = user_counts(rng, rows, users, items)
    # movie ids are sparse like ML's (1..209171); `items` of them were rated, popularity rank -> column in id order
    movie_ids = np.sort(rng.choice(np.arange(1, 209_172), size=movies, replace=False)).astype(np.int32)
    rank_to_col = np.sort(rng.choice(movies, size=items, replace=False))[rng.permutation(items)]
    cdf = np.cumsum(1.0 / (np.arange(items) + 50.0) ** 1.2)
    cdf /= cdf[-1]

    def draw(n: int, uniform_share: float) -> np.ndarray:
        ranks = np.searchsorted(cdf, rng.random(n))
        uni = rng.random(n) < uniform_share
        ranks[uni] = rng.integers(0, items, size=int(uni.sum()))
        return rank_to_col[ranks]

    # distinct (user, movie) pairs: draw, dedupe, redraw the shortfall (more uniform each round so heavy users fill)
    codes = sorted_unique(np.repeat(np.arange(users, dtype=np.int64), counts) * movies + draw(int(counts.sum()), 0.0))
    for rnd in range(1, 30):
        have = np.bincount(codes // movies, minlength=users)
        need = counts - have
        if not (need > 0).any():
            break
        more = np.repeat(np.arange(users, dtype=np.int64), np.where(need > 0, need * 2 + 1, 0))
        codes = sorted_unique(np.concatenate([codes, more * movies + draw(len(more), min(1.0, 0.3 * rnd))]))
    user = codes // movies
    have = np.bincount(user, minlength=users)
    if (have > counts).any():  # drop a random excess per user, keep (user, movie) order
        order = np.lexsort((rng.random(len(codes)), user))
        pos = np.arange(len(codes)) - np.repeat(np.cumsum(have) - have, have)
        codes = np.sort(codes[order[pos < counts[user[order]]]])
        user = codes // movies

    n = len(codes)
    start = rng.integers(T0, T1 - 86_400, size=users)
    span = np.minimum(T1 - start, rng.exponential(400 * 86_400, size=users).astype(np.int64) + 3600)
    ts = start[user] + (rng.random(n) * span[user]).astype(np.int64)
    ratings = pa.array([f"{r / 2:.1f}" for r in range(1, 11)])
    table = pa.table(
        {
            "userId": pa.array((user + 1).astype(np.int32)),
            "movieId": pa.array(movie_ids[codes % movies]),
            "rating": pa.DictionaryArray.from_arrays(pa.array(rng.integers(0, 10, size=n, dtype=np.int8)), ratings),
            "timestamp": pa.array(ts),
        }
    )
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "ratings.csv", "wb") as f:
        f.write(b"userId,movieId,rating,timestamp\n")
        pacsv.write_csv(table, f, pacsv.WriteOptions(include_header=False, quoting_style="none", batch_size=1 << 20))
    genres = ["Drama", "Comedy", "Thriller|Crime", "Adventure|Children|Fantasy", "(no genres listed)"]
    with open(out / "movies.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["movieId", "title", "genres"])
        years = rng.integers(1902, 2020, size=movies)
        for i, (mid, year) in enumerate(zip(movie_ids.tolist(), years.tolist())):
            title = f"Movie {mid}, The ({year})" if i % 7 == 0 else f"Movie {mid} ({year})"
            w.writerow([mid, title, genres[i % len(genres)]])


def dataset(cache: Path, shape: dict, seed: int) -> Path:
    key = f"ml25m-shape-v{GEN_VERSION}-r{shape['rows']}-u{shape['users']}-i{shape['items']}-s{seed}"
    out = cache / key
    if (out / "DONE").exists():
        print(f"data: cached {out}")
        return out
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    generate(out, shape["rows"], shape["users"], shape["items"], shape["movies"], seed)
    (out / "DONE").write_text("ok\n")
    print(f"data: generated {out} in {time.perf_counter() - t:.1f} s (not timed below)")
    return out


# ---------------------------------------------------------------------------------------------------- measurement
def run_child(cmd: list[str], cwd: Path, env: dict | None = None) -> tuple[float, float, int, str]:
    """(wall s, CPU s (user + sys), peak RSS bytes of the child, combined output); exits on a non-zero exit."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    out = proc.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed with exit code {proc.returncode} in {cwd}:\n{out}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024, out  # ru_maxrss is KiB on Linux


def bench_pipeline(args: argparse.Namespace) -> bool:
    shape = {k: getattr(args, k) for k in ML25M}
    data = dataset(Path(args.cache), shape, args.seed)
    size = (data / "ratings.csv").stat().st_size
    print(
        f"data: ratings.csv {size / 1e9:.2f} GB, {shape['rows']:,} rows requested, "
        f"{shape['users']:,} users, {shape['items']:,} rated of {shape['movies']:,} movies"
    )
    work = Path(tempfile.mkdtemp(prefix="bench-run-", dir=args.cache))
    (work / "params.yaml").write_text(
        f"ingest:\n  format: movielens_csv\n  root: {data}\n  image_dir: posters\n  image_workers: 2\n"
        "split:\n  min_inter: 10\n  train_windows: 1\n  window_stride: 1\n  num_negatives: [9, 99]\n  seed: 0\n"
    )
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, cpus[: args.cores])  # children inherit it: the stages see --cores CPUs
    env = dict(os.environ, POLARS_MAX_THREADS=str(min(args.cores, len(cpus))))
    rows = []
    for stage in ("ingest", "split"):
        wall, cpu, rss, out = run_child([sys.executable, str(REPO / "stages" / f"{stage}.py")], work, env)
        rows.append((stage if stage == "ingest" else "split + candidates N=9, N=99", wall, cpu, rss))
        print(f"  {out.strip().splitlines()[-1][:300]}")
    total, cpu, peak = sum(r[1] for r in rows), sum(r[2] for r in rows), max(r[3] for r in rows)
    ok = total <= TARGET_S and peak <= TARGET_GB * 1e9
    os.sched_setaffinity(0, cpus)
    print(
        f"\npipeline on {min(args.cores, len(cpus))} cores ({os.cpu_count()} on the box), "
        f"{shape['rows'] / 1e6:.1f} M ratings"
    )
    print(f"{'stage':<32}{'wall s':>9}{'cpu s':>9}{'peak RSS GB':>13}")
    for name, wall, cpu_s, rss in rows:
        print(f"{name:<32}{wall:>9.1f}{cpu_s:>9.1f}{rss / 1e9:>13.2f}")
    print(f"{'total':<32}{total:>9.1f}{cpu:>9.1f}{peak / 1e9:>13.2f}")
    print(
        f"{'target':<32}{'<= ' + str(int(TARGET_S)):>9}{'':>9}{'<= ' + str(TARGET_GB):>13}   {'PASS' if ok else 'MISS'}"
    )
    # wall time is only meaningful on an otherwise idle box: say how busy it was
    print(
        f"load average during the run: {os.getloadavg()[0]:.1f} (1 min) on {os.cpu_count()} CPUs; cpu s = user + sys "
        f"of the stage, which other processes do not inflate"
    )
    if not args.keep:
        shutil.rmtree(work)
    return ok


def bench_dvc(args: argparse.Namespace) -> bool:
    tmp = Path(tempfile.mkdtemp(prefix="bench-dvc-"))
    proj = tmp / "project"
    skip = shutil.ignore_patterns(".venv*", "__pycache__", ".pytest_cache", ".ruff_cache", "*.egg-info")
    shutil.copytree(REPO, proj, ignore=skip, symlinks=True)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    dvc = [str(Path(sys.executable).parent / "dvc")]
    t = time.perf_counter()
    targets = args.dvc_targets.split() if args.dvc_targets else []
    subprocess.run([*dvc, "repro", "--quiet", *targets], cwd=proj, env=env, check=True, capture_output=True)
    print(
        f"\ndvc: project copied to {proj}, brought up to date with `dvc repro` in "
        f"{time.perf_counter() - t:.1f} s (not timed below)"
    )
    status_s, repro_s = [], []
    for _ in range(args.reps):
        wall, _, _, out = run_child([*dvc, "status", *targets], proj, env)
        status_s.append(wall)
        if "up to date" not in out:
            sys.exit(f"dvc status in the copy is not clean:\n{out}")
        wall, _, _, out = run_child([*dvc, "repro", *targets], proj, env)
        repro_s.append(wall)
        if "Running stage" in out:
            sys.exit(f"`dvc repro` was not a no-op in the copy:\n{out}")
    med_s, med_r = statistics.median(status_s), statistics.median(repro_s)
    ok = med_r - med_s <= TARGET_DVC_S
    print(f"{'command':<22}{'median s':>10}{'min s':>8}{'max s':>8}   runs: {args.reps}")
    print(f"{'dvc status':<22}{med_s:>10.2f}{min(status_s):>8.2f}{max(status_s):>8.2f}")
    print(f"{'dvc repro (no-op)':<22}{med_r:>10.2f}{min(repro_s):>8.2f}{max(repro_s):>8.2f}")
    print(
        f"repro - status: {med_r - med_s:+.2f} s (target <= +{TARGET_DVC_S:.0f} s), ratio {med_r / med_s:.2f}x   "
        f"{'PASS' if ok else 'MISS'}"
    )
    shutil.rmtree(tmp)
    return ok


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for k, v in ML25M.items():
        p.add_argument(f"--{k}", type=int, default=v)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cores", type=int, default=2, help="pin the stages to this many CPUs (if the box has more)")
    p.add_argument("--cache", default="/tmp/mllmrec-bench", help="where the synthetic data set is generated once")
    p.add_argument("--reps", type=int, default=5, help="repetitions of dvc status / no-op dvc repro")
    p.add_argument(
        "--dvc-targets",
        default="split",
        help="stages to bring up to date and time ('' = the whole DAG, which now trains LLMs: slow)",
    )
    p.add_argument("--keep", action="store_true", help="keep the stage work dir (its data/ outputs)")
    p.add_argument("--skip-pipeline", action="store_true")
    p.add_argument("--skip-dvc", action="store_true")
    args = p.parse_args()
    Path(args.cache).mkdir(parents=True, exist_ok=True)
    ok = True
    if not args.skip_pipeline:
        ok &= bench_pipeline(args)
    if not args.skip_dvc:
        ok &= bench_dvc(args)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
