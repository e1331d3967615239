"""io's atomic writers: concurrent runs never share a temp file; a full disk leaves no temp file and one clear line."""

import errno
import threading
from pathlib import Path

import polars as pl
import pytest

from mllmrec import io
from mllmrec.errors import UserError


def test_concurrent_writers_of_one_output_do_not_collide(tmp_path):
    """Two runs of a stage at once used to write the same `<name>.tmp`: one crashed on the other's rename."""
    target, errors = tmp_path / "metrics.json", []

    def writer(n: int) -> None:
        try:
            for i in range(30):
                io.write_json({"writer": n, "i": i}, target)
                io.write_parquet(pl.DataFrame({"x": [n, i]}), tmp_path / "out.parquet")
        except Exception as e:  # noqa: BLE001 - collected, asserted below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and not list(tmp_path.glob("*.tmp"))
    assert io.read_json(target)["i"] == 29 and pl.read_parquet(tmp_path / "out.parquet").height == 2


def test_full_disk_leaves_no_temp_file_and_says_so(tmp_path, monkeypatch):
    def half_then_enospc(self, text, *a, **kw):
        Path.write_bytes(self, text[: len(text) // 2].encode())  # a partial write, as a filling disk leaves
        raise OSError(errno.ENOSPC, "No space left on device")

    (tmp_path / "report.json").write_text('{"old": true}\n')
    monkeypatch.setattr(Path, "write_text", half_then_enospc)
    with pytest.raises(UserError, match=r"report\.json: disk full while writing it \(No space left on device\)"):
        io.write_json({"new": True}, tmp_path / "report.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]  # no 0-byte or partial temp file
    assert Path.read_text(tmp_path / "report.json") == '{"old": true}\n'  # the previous output is intact
