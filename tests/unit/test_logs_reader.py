"""Reading logs through a Target: rotated files in time order, compression,
damaged input counted rather than fatal."""

from __future__ import annotations

import bz2
import calendar
import gzip
import lzma
import os

import pytest

from checks.errors import InputError
from checks.logs import ReadStats, read_lines, resolve_sources, rotation_key
from checks.targets import LocalTarget

LINE = "Nov 28 10:00:0{n} mx postfix/qmgr[1]: ABCDE{n}: removed\n"


def _write(path, text, opener=open):
    with opener(path, "wt") as fh:
        fh.write(text)


def test_rotation_order_is_oldest_first():
    names = ["mail.log", "mail.log.1", "mail.log.2.gz", "mail.log.10.gz", "mail.log.3.bz2"]
    assert sorted(names, key=rotation_key) == ["mail.log.10.gz", "mail.log.3.bz2", "mail.log.2.gz", "mail.log.1", "mail.log"]
    dated = ["maillog", "maillog-20261121.gz", "maillog-20261114"]
    assert sorted(dated, key=rotation_key) == ["maillog-20261114", "maillog-20261121.gz", "maillog"]


def test_directory_reads_rotated_family_in_order_and_skips_duplicates(tmp_path):
    _write(tmp_path / "mail.log", LINE.format(n=3))
    _write(tmp_path / "mail.log.1", LINE.format(n=2))
    _write(tmp_path / "mail.log.2.gz", LINE.format(n=1), gzip.open)
    _write(tmp_path / "mail.err", LINE.format(n=9))  # Debian repeats lines there: never mixed in
    target = LocalTarget()
    sources = resolve_sources(target, [str(tmp_path)])
    assert [os.path.basename(s) for s in sources] == ["mail.log.2.gz", "mail.log.1", "mail.log"]
    stats = ReadStats()
    ids = [r.queue_id for r in read_lines(target, sources, stats)]
    assert ids == ["ABCDE1", "ABCDE2", "ABCDE3"]
    assert stats.lines == 3 and stats.postfix_lines == 3


@pytest.mark.parametrize("opener", [gzip.open, bz2.open, lzma.open])
def test_compressed_files_are_read_by_magic_not_name(tmp_path, opener):
    path = tmp_path / "log-without-suffix"
    _write(path, LINE.format(n=1) + LINE.format(n=2), opener)
    stats = ReadStats()
    assert len(list(read_lines(LocalTarget(), [str(path)], stats))) == 2


def test_truncated_gzip_keeps_what_was_read_and_counts_damage(tmp_path):
    path = tmp_path / "mail.log.1.gz"
    data = gzip.compress("".join(LINE.format(n=i % 10) for i in range(5000)).encode())
    path.write_bytes(data[: len(data) // 2])
    stats = ReadStats()
    got = list(read_lines(LocalTarget(), [str(path)], stats))
    assert 0 < len(got) < 5000
    assert len(stats.warnings) == 1
    warning = stats.warnings[0]
    assert warning.startswith(f"{path} is damaged after line {len(got):,}: the rest was not read")
    assert "damaged or truncated" in warning


def test_binary_file_is_counted_not_read(tmp_path):
    path = tmp_path / "junk"
    path.write_bytes(b"\x00\x01\x02binary\x00" * 100)
    stats = ReadStats()
    assert list(read_lines(LocalTarget(), [str(path)], stats)) == []
    assert stats.postfix_lines == 0 and stats.malformed["NUL bytes"] == 1
    assert "200 NUL bytes removed from a line" in stats.examples["NUL bytes"][0]


def test_directory_without_logs_and_missing_file(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="no mail logs found"):
        resolve_sources(LocalTarget(), [str(tmp_path)])
    with pytest.raises(InputError, match="No such file"):
        resolve_sources(LocalTarget(), [str(tmp_path / "absent.log")])


def test_time_window_and_other_programs(tmp_path):
    path = tmp_path / "mail.log"
    path.write_text(
        "2026-11-28T10:00:00Z mx postfix/qmgr[1]: ABCDE1: removed\n"
        "2026-11-28T11:00:00Z mx dovecot: imap-login: hi\n"
        "2026-11-28T12:00:00Z mx postfix/qmgr[1]: ABCDE2: removed\n"
        "%(day)s 11:17:45 server postfix/qmgr[26163]: ABCDE3: removed\n"
    )
    stats = ReadStats()
    since = calendar.timegm((2026, 11, 28, 11, 0, 0, 0, 0, 0))
    got = [r.queue_id for r in read_lines(LocalTarget(), [str(path)], stats, since=since)]
    assert got == ["ABCDE2", "ABCDE3"]  # a line without a readable time cannot be filtered out
    assert (stats.other_lines, stats.outside_window, stats.no_timestamp) == (1, 1, 1)
    assert stats.malformed == {"unreadable timestamp": 1}
