"""SASRec training threads on a busy box: seconds per epoch with 1 and 2 threads, idle and beside busy processes.

    . .venv/bin/activate
    python benchmarks/bench_sasrec_threads.py                 # 0 and 2 busy-loop processes, 8 epochs per run
    python benchmarks/bench_sasrec_threads.py --busy 0,1,2 --epochs 5

Each run is a fresh process (torch's thread pool is per process) training the stage's SASRec
(`mllmrec.evaluation.sasrec.train`, the demo's params) on synthetic sequences of the demo's shape (600 users x 50
items over 450 items); the busy processes are pure-Python loops, one core each, started before and killed after the
run. Prints a markdown table (median seconds per epoch per thread count and load) and whether 1 and 2 threads train
the same weights (the choice must not change the numbers).
"""

import argparse
import json
import statistics
import subprocess
import sys
import time

CHILD = r"""
import json, sys, time, hashlib
import numpy as np, torch
from mllmrec.config import SasrecParams
from mllmrec.evaluation import sasrec
threads, epochs = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
seqs = [[int(i) for i in rng.integers(1, 451, 50)] for _ in range(600)]
hist = [s[-10:-1] for s in seqs[:100]]; cands = rng.integers(1, 451, (100, 10)).tolist(); tgt = np.zeros(100, int)
p = SasrecParams(threads=threads, epochs=epochs, patience=epochs + 1)
times = []
orig = sasrec.valid_ndcg_at_10
def timed(*a, **k):  # called once per epoch: the gap between calls is one epoch
    times.append(time.perf_counter())
    return orig(*a, **k)
sasrec.valid_ndcg_at_10 = timed
model, _ = sasrec.train(seqs, 450, p, (hist, cands, tgt))
digest = hashlib.sha256(b"".join(v.numpy().tobytes() for v in model.state_dict().values())).hexdigest()[:16]
print(json.dumps({"epoch_s": [b - a for a, b in zip(times, times[1:])], "weights": digest}))
"""


def run(threads: int, busy: int, epochs: int) -> dict:
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
    try:
        time.sleep(0.5)
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(threads), str(epochs)], capture_output=True, text=True, check=True
        )
    finally:
        for h in hogs:
            h.kill()
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--busy", default="0,2", help="busy-loop processes beside the run, comma-separated")
    ap.add_argument("--epochs", type=int, default=8)
    args = ap.parse_args()
    rows, digests = [], set()
    for busy in map(int, args.busy.split(",")):
        cells = []
        for threads in (1, 2):
            r = run(threads, busy, args.epochs)
            digests.add(r["weights"])
            cells.append(statistics.median(r["epoch_s"]))
        rows.append(f"| {busy} | {cells[0]:.2f} | {cells[1]:.2f} | {cells[1] / cells[0]:.2f} |")
    print("| busy processes | 1 thread s/epoch | 2 threads s/epoch | 2 / 1 |\n|---|---|---|---|\n" + "\n".join(rows))
    print(f"weights identical across thread counts and loads: {len(digests) == 1} ({sorted(digests)})")


if __name__ == "__main__":
    main()
