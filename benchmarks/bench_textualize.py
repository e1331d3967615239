"""Captioning cost on CPU with a tiny random VLM (tests/tiny_models.py) through the transformers engine.

    .venv/bin/python benchmarks/bench_textualize.py                 # ~40 s on 2 cores
    .venv/bin/python benchmarks/bench_textualize.py --n 400 --batch 16 --max-new-tokens 128 --threads 2

Same model, same images, same greedy params in every row:
1. one image per `generate` call in a loop (the authors' script) vs batched calls, on the same `loop_n` images,
   both engines loaded and warmed up: images/s and the ratio;
2. textualize end to end on n images (the 450 bundled posters, then mirrored/cropped re-encodes: distinct sha256),
   cold cache, engine load included;
3. rerun with nothing changed: model calls (0) and seconds;
4. rerun with +1 % new items: calls and cost as a share of the cold run. Its floor is one engine load plus one
   (partial) batch, so the share shrinks as n / batch grows.
A tiny random model measures the pipeline's overheads and the batching gain, not a real VLM's speed.
5. the demo's real captioner (image_tagger: EfficientNet-Lite0 + PP-OCR + Haar faces), one image per generate() vs
   batched, on the same `loop_n` posters: real images/s (only its classifier batches; OCR and faces run per image).
torch threads default to 1: on this shared 2-core box, 2 intra-op threads under contention made a tiny model's
decode steps 10-30x slower and the timings meaningless.
"""

import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
import typer

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from PIL import Image, ImageOps
from textualize_util import POSTERS, PROMPT, items_frame, poster_ids
from tiny_models import build_tiny_vlm

from mllmrec.config import EngineSpec
from mllmrec.data.textualize import textualize
from mllmrec.engines import build_engine
from mllmrec.engines.base import GenerationRequest, SamplingParams
from mllmrec.partcache import model_identity


def make_images(tmp: Path, n: int) -> tuple[Path, list[str]]:
    """n distinct images: the bundled posters, then mirrored + cropped re-encodes of them (new sha256 each)."""
    root, src = tmp / "dataset", poster_ids(10_000)
    (root / "posters").mkdir(parents=True)
    ids = []
    for i in range(n):
        item = f"{src[i % len(src)]}" if i < len(src) else f"{src[i % len(src)]}-v{i // len(src)}"
        if i < len(src):
            shutil.copy(POSTERS / f"{item}.jpg", root / "posters" / f"{item}.jpg")
        else:
            k = i // len(src)
            with Image.open(POSTERS / f"{src[i % len(src)]}.jpg") as im:
                im = ImageOps.mirror(im) if k % 2 else im
                im.crop((k, k, im.width - k, im.height - k)).save(root / "posters" / f"{item}.jpg", quality=90)
        ids.append(item)
    return root, ids


def main(
    n: int = 2000, new_pct: float = 1.0, batch: int = 32, max_new_tokens: int = 32, loop_n: int = 64, threads: int = 1
) -> None:
    torch.set_num_threads(threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench_textualize_"))
    extra = max(1, round(n * new_pct / 100))
    vlm = build_tiny_vlm(tmp / "vlm")
    root, ids = make_images(tmp, n + extra)
    all_items = items_frame(root, ids)
    items = all_items.head(n)
    sampling = SamplingParams(max_new_tokens=max_new_tokens)
    m = min(loop_n, n)
    reqs = [
        GenerationRequest(messages=({"role": "user", "content": PROMPT},), images=(str(root / p),), sampling=sampling)
        for p in items["image_path"][:m]
    ]

    # 1. pure engine throughput on the same m images, both engines loaded and warmed up first
    eng1 = build_engine(EngineSpec(engine="transformers", model=str(vlm), batch_size=1))
    eng1.generate(reqs[:1])
    t = time.perf_counter()
    loop = [eng1.generate([r])[0] for r in reqs]  # the authors' loop: one image per generate() call
    t_loop = time.perf_counter() - t
    engb = build_engine(EngineSpec(engine="transformers", model=str(vlm), batch_size=batch))
    engb.generate(reqs[:1])
    t = time.perf_counter()
    batched = [r for s in range(0, m, batch) for r in engb.generate(reqs[s : s + batch])]
    t_batch = time.perf_counter() - t
    same = sum(a.text == b.text for a, b in zip(loop, batched))
    del eng1, engb

    # 2-4. textualize end to end (engine load included: a real run pays it too)
    spec = EngineSpec(engine="transformers", model=str(vlm), batch_size=batch)
    model, revision = model_identity(spec)
    kw = {
        "prompt": PROMPT,
        "sampling": sampling,
        "model": model,
        "revision": revision,
        "make_engine": lambda: build_engine(spec),
        "cache_dir": tmp / "cache",
        "batch_size": batch,
        "progress": False,
    }
    t = time.perf_counter()
    _, r_full = textualize(items, root, **kw)
    t_full = time.perf_counter() - t
    t = time.perf_counter()
    _, r_same = textualize(items, root, **kw)
    t_same = time.perf_counter() - t
    t = time.perf_counter()
    _, r_new = textualize(all_items, root, **kw)
    t_new = time.perf_counter() - t

    print(f"tiny LLaVA (random weights), CPU, torch threads={threads}, greedy, max_new_tokens={max_new_tokens}")
    print(f"{'run':46s} {'images':>6s} {'calls':>6s} {'seconds':>8s} {'img/s':>7s}  comparison")
    print(f"{'engine, one image per generate() (authors)':46s} {m:6d} {m:6d} {t_loop:8.2f} {m / t_loop:7.2f}  1.00x")
    print(
        f"{f'engine, batched ({batch} per generate())':46s} {m:6d} {m:6d} {t_batch:8.2f} {m / t_batch:7.2f}  "
        f"{t_loop / t_batch:.2f}x the loop (goal >= 5x); same text {same}/{m}"
    )
    print(
        f"{'textualize, cold cache (incl. engine load)':46s} {n:6d} {r_full.model_calls:6d} {t_full:8.2f} "
        f"{n / t_full:7.2f}  {(n / t_full) / (m / t_loop):.2f}x the loop's img/s"
    )
    print(
        f"{'textualize, rerun, nothing changed':46s} {n:6d} {r_same.model_calls:6d} {t_same:8.2f} {'':>7s}  "
        f"{t_same / t_full:.1%} of the cold run; engine built: {r_same.engine_built}"
    )
    print(
        f"{f'textualize, +{extra} new items (+{new_pct:g} %)':46s} {n + extra:6d} {r_new.model_calls:6d} "
        f"{t_new:8.2f} {'':>7s}  {t_new / t_full:.1%} of the cold run (goal <= 3 %)"
    )

    # 5. the real captioner, same posters, one at a time vs batched (built once: its load is not the question)
    tagger = build_engine(EngineSpec(engine="image_tagger", model="image-tagger"))
    tagger.generate(reqs[:1])
    t = time.perf_counter()
    one = [tagger.generate([r])[0] for r in reqs]
    t_one = time.perf_counter() - t
    t = time.perf_counter()
    many = [r for s in range(0, m, batch) for r in tagger.generate(reqs[s : s + batch])]
    t_many = time.perf_counter() - t
    same = sum(a.text == b.text for a, b in zip(one, many))
    print(f"{'image_tagger, one image per generate()':46s} {m:6d} {m:6d} {t_one:8.2f} {m / t_one:7.2f}  1.00x")
    print(
        f"{f'image_tagger, batched ({batch} per generate())':46s} {m:6d} {m:6d} {t_many:8.2f} {m / t_many:7.2f}  "
        f"{t_one / t_many:.2f}x one at a time; same text {same}/{m}"
    )


if __name__ == "__main__":
    typer.run(main)
