"""Mixed-grained augmentation: train samples for SFT and GRPO, CoT on a seeded share drawn from the kept CoTs.

    python stages/augment.py          # reads params.yaml `augment`; needs data/split and the assess_cot output

Outputs: data/augment/sft.parquet and data/augment/grpo.parquet (sample_id, user_id, history, candidates, target,
cot (null when none), has_cot, cot_draw (the persisted uniform draw)), data/augment/report.json (counts: samples,
kept CoTs among them, requested and used shares).
"""

from pathlib import Path

from mllmrec import paths
from mllmrec.cli import run
from mllmrec.config import AugmentParams, load_section
from mllmrec.io import read_parquet, write_parquet
from mllmrec.reports import write_report
from mllmrec.training.augment import augment

READS = [paths.SPLIT, paths.param("augment.cot_file")]
WRITES = [paths.SFT_SAMPLES, paths.GRPO_SAMPLES, paths.AUGMENT_REPORT]


def main() -> None:
    params = load_section("augment", AugmentParams)
    cands = read_parquet(paths.candidates(params.num_negatives), "split")
    # no CoT file = the CoT stages have not run: fail loudly rather than train without CoT
    cot_file = Path(params.cot_file)
    cots = read_parquet(cot_file, "assess_cot")

    sft, grpo, report = augment(cands, cots, params, cot_source=str(cot_file))
    write_parquet(sft, paths.SFT_SAMPLES)
    write_parquet(grpo, paths.GRPO_SAMPLES)
    write_report(report, paths.AUGMENT_REPORT)
    s, g = report.sft, report.grpo
    print(
        f"augment: {report.samples} samples, {report.cots.kept_in_samples} with a kept CoT; "
        f"sft {s.with_cot} with CoT (asked {s.requested}), grpo {g.with_cot} (asked {g.requested})"
    )


if __name__ == "__main__":
    run(main)
