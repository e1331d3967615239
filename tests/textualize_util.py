"""Helpers for the textualize tests: a dataset root of real posters, its items table, a call-counting engine.

root, items = make_dataset(tmp_path, n=12, missing=1, corrupt=1)
"""

import hashlib
import shutil
from pathlib import Path

import polars as pl

from mllmrec.engines.base import GenerationRequest, GenerationResult
from mllmrec.engines.pixel_describer import PixelDescriber

REPO = Path(__file__).resolve().parents[1]
POSTERS = REPO / "sample" / "ml-latest-small-posters" / "posters"
PROMPT = "Describe the poster's visual content in at most 50 words. Be visually grounded. Do not mention the title."


def poster_ids(n: int) -> list[str]:
    return sorted(p.stem for p in POSTERS.glob("*.jpg"))[:n]


def items_row(root: Path, item_id: str) -> dict:
    """One items.parquet row the way ingest writes it (image_path relative to root)."""
    path = root / "posters" / f"{item_id}.jpg"
    if not path.exists():
        return {
            "item_id": item_id,
            "title": f"Movie {item_id}",
            "image_path": None,
            "image_sha256": None,
            "image_format": None,
            "image_ok": False,
            "image_error": "missing",
        }
    data = path.read_bytes()
    ok = data[:2] == b"\xff\xd8" and len(data) > 1000
    return {
        "item_id": item_id,
        "title": f"Movie {item_id}",
        "image_path": f"posters/{item_id}.jpg",
        "image_sha256": hashlib.sha256(data).hexdigest(),
        "image_format": "JPEG" if ok else None,
        "image_ok": ok,
        "image_error": None if ok else "corrupt: cannot identify image file",
    }


def make_dataset(tmp: Path, n: int, missing: int = 0, corrupt: int = 0) -> tuple[Path, pl.DataFrame]:
    root = tmp / "dataset"
    (root / "posters").mkdir(parents=True, exist_ok=True)
    ids = poster_ids(n)
    for i in ids:
        shutil.copy(POSTERS / f"{i}.jpg", root / "posters" / f"{i}.jpg")
    for j in range(corrupt):
        (root / "posters" / f"c{j}.jpg").write_bytes(b"not a jpeg at all")
        ids.append(f"c{j}")
    ids += [f"m{j}" for j in range(missing)]
    return root, items_frame(root, ids)


def items_frame(root: Path, ids: list[str]) -> pl.DataFrame:
    return pl.DataFrame([items_row(root, i) for i in ids])


class CountingEngine:
    """A real engine (the pixel describer) wrapped to count requests and generate() calls."""

    def __init__(self, inner=None, fail_on: set[str] = frozenset()):
        self.inner = inner or PixelDescriber()
        self.model_id, self.revision = self.inner.model_id, self.inner.revision
        self.requests = 0
        self.batches = 0
        self.seen: list[GenerationRequest] = []
        self.fail_on = fail_on  # image file names that fail inside the engine (after retries, say)

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        self.requests += len(requests)
        self.batches += 1
        self.seen += requests
        out = self.inner.generate(requests)
        return [
            GenerationResult(finish_reason="error", error="RuntimeError: boom")
            if Path(r.images[0]).name in self.fail_on
            else res
            for r, res in zip(requests, out)
        ]


class Factory:
    """make_engine for textualize(): counts how often an engine was built."""

    def __init__(self, engine=None):
        self.engine = engine or CountingEngine()
        self.built = 0

    def __call__(self):
        self.built += 1
        return self.engine


def write_project(proj: Path, ids: list[str], batch_size: int = 4) -> Path:
    """A minimal project dir for running stages/textualize.py: params.yaml, dataset/, data/ingest/items.parquet."""
    (proj / "dataset" / "posters").mkdir(parents=True, exist_ok=True)
    (proj / "data" / "ingest").mkdir(parents=True, exist_ok=True)
    for i in ids:
        shutil.copy(POSTERS / f"{i}.jpg", proj / "dataset" / "posters" / f"{i}.jpg")
    items_frame(proj / "dataset", ids).write_parquet(proj / "data" / "ingest" / "items.parquet")
    (proj / "params.yaml").write_text(PARAMS_YAML.format(prompt=PROMPT, batch_size=batch_size))
    return proj


PARAMS_YAML = """\
ingest: {{format: movielens_csv, root: dataset}}
models:
  captioner: {{engine: pixel_describer, model: pixel-describer}}
  drafter: {{engine: transformers, model: unused}}
  editor: {{engine: transformers, model: unused}}
  policy: {{engine: transformers, model: unused}}
textualize:
  prompt: "{prompt}"
  sampling: {{temperature: 0.0, top_p: 1.0, max_new_tokens: 128, seed: 0, stop: []}}
  batch_size: {batch_size}
  cache_dir: data/textualize/cache
"""
