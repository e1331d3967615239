"""Mixed-grained augmentation: train samples for SFT and GRPO, CoT on a seeded share drawn from the kept CoTs.

    python stages/augment.py          # reads params.yaml `augment`; needs data/split and the assess_cot output

Outputs: data/augment/sft.parquet and data/augment/grpo.parquet (sample_id, user_id, history, candidates, target,
cot (null when none), has_cot, cot_draw (the persisted uniform draw)), data/augment/report.json (counts: samples,
kept CoTs among them, requested and used shares).
"""

from pathlib import Path

from mllmrec.cli import run
from mllmrec.config import AugmentParams, load_section
from mllmrec.io import read_parquet, write_json, write_parquet
from mllmrec.training.augment import augment

OUT = Path("data/augment")


def main(out: Path = OUT) -> None:
    params = load_section("augment", AugmentParams)
    cands = read_parquet(Path(f"data/split/candidates_n{params.num_negatives}.parquet"), "split")
    # no CoT file = the CoT stages have not run: fail loudly rather than train without CoT
    cot_file = Path(params.cot_file)
    cots = read_parquet(cot_file, "assess_cot")

    sft, grpo, report = augment(cands, cots, params, cot_source=str(cot_file))
    write_parquet(sft, out / "sft.parquet")
    write_parquet(grpo, out / "grpo.parquet")
    write_json(report, out / "report.json")
    s, g = report["sft"], report["grpo"]
    print(
        f"augment: {report['samples']} samples, {report['cots']['kept_in_samples']} with a kept CoT; "
        f"sft {s['with_cot']} with CoT (asked {s['requested']}), grpo {g['with_cot']} (asked {g['requested']})"
    )


if __name__ == "__main__":
    run(main)
