"""The deferred queue files' times (qmgr's next-eligible time, for the forecasts): each hash
directory is listed once, not one stat per message (over SSH, a round trip each)."""

from __future__ import annotations

import os
from pathlib import Path

from checks.postfix.postqueue import QueuedMessage
from checks.queue import QueueFiles
from checks.targets import LocalTarget


class CountingTarget(LocalTarget):
    """The real local target, counting the file-system requests a lookup makes."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = {"list_dir": 0, "file_info": 0}

    def list_dir(self, path: str):
        self.calls["list_dir"] += 1
        return super().list_dir(path)

    def file_info(self, path: str):
        self.calls["file_info"] += 1
        return super().file_info(path)


def msg(qid: str, queue: str = "deferred") -> QueuedMessage:
    return QueuedMessage(qid, queue, 0.0, 100, "s@example.net", ())


def test_one_listing_per_hash_directory(tmp_path: Path) -> None:
    ids = [f"{h}{n:09X}" for h in "ABCD" for n in range(50)]
    for i, qid in enumerate(ids):
        f = tmp_path / "deferred" / qid[0] / qid
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("x")
        os.utime(f, (1_800_000_000 + i, 1_800_000_000 + i))
    target = CountingTarget()
    files = QueueFiles(target, str(tmp_path))
    times = [files.mtime(msg(q)) for q in ids]
    assert times == [1_800_000_000 + i for i in range(len(ids))]
    assert target.calls == {"list_dir": 4, "file_info": 0}
    # not deferred: no forecast time; gone since the listing: one stat, then nothing
    assert files.mtime(msg(ids[0], "hold")) is None
    assert files.mtime(msg("A999999999")) is None and target.calls["file_info"] == 2  # hashed, then flat


def test_no_stat_per_message_when_neither_directory_can_be_read(tmp_path: Path) -> None:
    """A snapshot without queue files (or a deferred directory that is not there): the hash
    directory and the deferred directory cannot be listed, so no stat of a file in them is
    tried (100,000 failing stats cost ~1 s); a flat layout (hash_queue_depth 0) still finds
    its files by a stat once the deferred directory itself lists."""
    target = CountingTarget()
    files = QueueFiles(target, str(tmp_path / "none"))
    assert [files.mtime(msg(f"A{n:09X}")) for n in range(100)] == [None] * 100
    assert target.calls == {"list_dir": 2, "file_info": 0}
    flat = tmp_path / "deferred" / "B000000001"
    flat.parent.mkdir(parents=True)
    flat.write_text("x")
    os.utime(flat, (1_800_000_000, 1_800_000_000))
    files = QueueFiles(target, str(tmp_path))
    assert files.mtime(msg("B000000001")) == 1_800_000_000
