"""Typed stage reports: one dataclass per report JSON, its field names the file's keys, written in field order.

    @dataclass(kw_only=True)
    class DraftReport:
        samples: int
        ...
        executor: dict | None = field(default=None, metadata=OMIT_IF_NONE)  # Ray runs only: else not in the file

    write_report(report, path)               # json of as_dict(report)
    draft = read_report(path, DraftReport, "draft_cot")

A field with OMIT_IF_NONE metadata is left out of the file while it is None: keys only some runs have stay absent,
as they were when the reports were dicts. A dataclass field becomes a nested object. `kw_only=True` lets a required
field follow an optional one, so the fields keep the files' key order.
"""

from dataclasses import MISSING, fields, is_dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TypeVar, get_type_hints

from mllmrec.errors import UserError
from mllmrec.io import read_json, write_json

OMIT_IF_NONE = MappingProxyType({"omit_if_none": True})  # field metadata: not in the file while None
T = TypeVar("T")


def as_dict(report: object) -> dict:
    """The report's JSON object: its fields in order, nested reports as objects, unset optional fields left out."""
    out = {}
    for f in fields(report):
        value = getattr(report, f.name)
        if value is None and f.metadata.get("omit_if_none"):
            continue
        out[f.name] = as_dict(value) if is_dataclass(value) else value
    return out


def from_dict(cls: type[T], data: dict, source: str) -> T:
    """The report `data` holds; a key it lacks or does not know names `source` (a file from another version)."""
    known = {f.name for f in fields(cls)}
    required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
    unknown, missing = sorted(set(data) - known), sorted(required - set(data))
    if unknown or missing:
        raise UserError(
            f"{source}: not a {cls.__name__} (unknown keys {unknown}, missing keys {missing}); rerun the stage "
            "that writes it"
        )
    hints = get_type_hints(cls)
    return cls(
        **{k: from_dict(hints[k], v, f"{source}: {k}") if is_dataclass(hints[k]) else v for k, v in data.items()}
    )


def write_report(report: object, path: Path) -> None:
    write_json(as_dict(report), path)


def read_report(path: Path, cls: type[T], stage: str) -> T:
    """The report `stage` wrote at `path` (its "run first" error when absent)."""
    return from_dict(cls, read_json(path, stage), str(path))
