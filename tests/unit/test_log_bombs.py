"""`pfdiag logs` on the inputs of a bad day (issue 13): real files, the real CLI in a child
process, its peak memory (the child and its worker processes) and its time measured.

Gigabytes of NUL cost nothing here: sparse files (os.truncate) hold no blocks, and the
compressed bombs are one small compressed unit of NUL bytes written many times over
(gzip, bzip2 and xz all read concatenated streams as one), so they decompress to far
more than they weigh. Before the bounded reader, each of these took memory like twice
the longest line (gigabytes), or hung, or ended in an internal error (exit 3).
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import pty
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from checks.logs import IMPLAUSIBLE, LONG_LINE, MAX_LINE, NUL_BYTES, BoundedLines, ReadStats

REPO = Path(__file__).resolve().parents[2]
LAB_LOG = REPO / "tests" / "data" / "lab" / "postfix.log"  # 257 real lines of the test lab's Postfix
LAB_LINES = 257
LAB_DEFERRED = 60
GiB = 1 << 30
MAX_RSS_MB = 400  # a regression fails this long before it can hurt the machine (see _limits)


def _pfdiag() -> list[str]:
    exe = Path(sys.executable).parent / "pfdiag"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "diagnose.cli"]


@dataclass
class Run:
    code: int | None  # None: killed at the deadline
    out: str
    err: str
    rss_mb: float  # peak RSS of the child and of every process it waited for (its workers)
    seconds: float

    @property
    def report(self) -> dict:
        return json.loads(self.out)


# Runs the CLI as its own child and writes "exit-code peak-RSS-KiB" to argv[1]. A launcher,
# because a child forked straight from pytest would report pytest's own size as its peak
# (the RSS before exec counts). 2 GB of address space: a reader that buffers a whole "line"
# of NULs dies of MemoryError at once instead of swapping a shared machine to death.
_LAUNCHER = """
import os, resource, subprocess, sys
result, timeout, close_stdin, argv = sys.argv[1], float(sys.argv[2]), sys.argv[3] == "1", sys.argv[4:]
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
if close_stdin:
    os.close(0)
proc = subprocess.Popen(argv)
try:
    code = proc.wait(timeout)
except subprocess.TimeoutExpired:
    proc.kill()
    proc.wait()
    code = "timeout"
with open(result, "w") as fh:
    fh.write(f"{code} {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}")
"""


def run_cli(*args: str, stdin: int | None = subprocess.DEVNULL, timeout: float = 90,
            prefix: tuple[str, ...] = (), close_stdin: bool = False) -> Run:  # fmt: skip
    """The CLI in a child process: its exit code, output, time, and peak RSS (of it and
    of the worker processes it waited for)."""
    with tempfile.NamedTemporaryFile("r", prefix="pfdiag-run-") as result:
        argv = [sys.executable, "-c", _LAUNCHER, result.name, str(timeout), "1" if close_stdin else "0",
                *prefix, *_pfdiag(), *args]  # fmt: skip
        start = time.monotonic()
        proc = subprocess.run(argv, stdin=stdin, capture_output=True, cwd=REPO, timeout=timeout + 30)
        seconds = time.monotonic() - start
        code, rss = result.read().split()
    return Run(None if code == "timeout" else int(code), proc.stdout.decode(errors="replace"),
               proc.stderr.decode(errors="replace"), int(rss) / 1024, seconds)  # fmt: skip


def assert_bounded(run: Run, seconds: float = 60) -> None:
    assert run.code is not None, f"no answer within the deadline: {run.err[-500:]}"
    assert run.rss_mb < MAX_RSS_MB, f"peak RSS {run.rss_mb:.0f} MB"
    assert run.seconds < seconds, f"{run.seconds:.1f} s"
    assert "Traceback" not in run.err and "internal error" not in run.err, run.err


def assert_one_line_error(run: Run, *words: str) -> None:
    assert_bounded(run, seconds=20)
    assert run.code == 1, (run.code, run.err)
    assert run.err.count("\n") == 1 and run.err.startswith("pfdiag: "), run.err
    for word in words:
        assert word in run.err, run.err
    assert run.out == ""


def assert_lab_counts(report: dict, lines: int = LAB_LINES) -> None:
    """Every real line of the lab log was read, and its deferrals counted."""
    assert report["input"]["postfix_lines"] == lines
    assert report["totals"]["statuses"]["deferred"] == LAB_DEFERRED


def _repeat(path: Path, unit: bytes, times: int, tail: bytes = b"") -> None:
    with open(path, "wb") as fh:
        for _ in range(times):
            fh.write(unit)
        fh.write(tail)


# -- gigabytes of NUL --------------------------------------------------------------------


def test_sparse_file_of_nul_without_any_line_is_refused_quickly(tmp_path):
    """/dev/zero as a file: 4 GiB of NUL and no line end. Before: MemoryError, exit 3."""
    path = tmp_path / "mail.log"
    path.touch()
    os.truncate(path, 4 * GiB)
    run = run_cli("logs", str(path))
    assert_one_line_error(run, "no Postfix log lines", "1 line(s) with NUL bytes", "binary data")


def test_dev_zero_is_refused(tmp_path):
    run = run_cli("logs", "/dev/zero")
    assert_one_line_error(run, "/dev/zero: a device")
    run = run_cli("logs", "-", stdin=os.open("/dev/zero", os.O_RDONLY))
    assert_one_line_error(run, "stdin is a device")


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_copytruncate_hole_then_real_lines(tmp_path, jobs):
    """logrotate copytruncate: the writer goes on at its old offset, leaving a sparse hole
    of 3 GiB of NUL in front of the lines written since. Before: 6.3 GB of memory and half
    of it rejected. Now the hole is skipped and counted, every line after it read; with two
    workers the file is also cut in two (the cut lands after the hole)."""
    path = tmp_path / "mail.log"
    with open(path, "wb") as fh:
        fh.seek(3 * GiB)
        fh.write(LAB_LOG.read_bytes())
    run = run_cli("logs", "--jobs", jobs, "--format", "json", str(path))
    assert_bounded(run)
    assert run.code == 0, run.err
    report = run.report
    assert_lab_counts(report)
    nul = report["input"]["malformed"][NUL_BYTES]
    assert nul["count"] == 1
    assert nul["examples"][0].startswith(f"{3 * GiB:,} NUL bytes removed from a line: Nov 28 17:43:29 lab postfix/")


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_hole_in_the_middle_is_read_through_in_bounded_memory(tmp_path, jobs):
    """A hole after some lines is not skipped by SEEK_DATA (it is not at the start of what a
    reader opens): 512 MiB of NUL go through the line reader, in a worker with --jobs 2."""
    data = LAB_LOG.read_bytes()
    half = data.index(b"\n", len(data) // 2) + 1
    path = tmp_path / "mail.log"
    with open(path, "wb") as fh:
        fh.write(data[:half])
        fh.seek(half + 512 * (1 << 20))
        fh.write(data[half:])
    run = run_cli("logs", "--jobs", jobs, "--format", "json", str(path))
    assert_bounded(run)
    assert run.code == 0, run.err
    assert_lab_counts(run.report)
    assert run.report["input"]["malformed"][NUL_BYTES]["count"] == 1


@pytest.mark.parametrize("kind", ["gz", "bz2", "xz"])
def test_compressed_bomb_of_nul_then_real_lines(tmp_path, kind):
    """A small rotated file that expands to 384 MiB of NUL (one line: no line end) and then
    the real lines: the decompressor's output is read in bounded pieces."""
    compress = {"gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress}[kind]
    unit = compress(b"\0" * (16 << 20))
    path = tmp_path / f"mail.log.1.{kind}"
    _repeat(path, unit, 24, compress(LAB_LOG.read_bytes()))
    assert path.stat().st_size < 2 << 20
    run = run_cli("logs", "--format", "json", str(path))
    assert_bounded(run, seconds=80)
    assert run.code == 0, run.err
    assert_lab_counts(run.report)
    assert run.report["input"]["malformed"][NUL_BYTES]["examples"][0].startswith(f"{384 << 20:,} NUL bytes removed")


def test_nul_bomb_through_stdin(tmp_path):
    path = tmp_path / "bomb.gz"
    _repeat(path, gzip.compress(b"\0" * (16 << 20)), 24, gzip.compress(LAB_LOG.read_bytes()))
    with open(path, "rb") as fh:
        run = run_cli("logs", "--format", "json", "-", stdin=fh.fileno())
    assert_bounded(run)
    assert run.code == 0, run.err
    assert_lab_counts(run.report)


def test_one_nul_in_the_first_line_no_longer_rejects_the_file(tmp_path):
    """Before: 'binary data, not a text log', exit 1, for a whole valid log."""
    data = LAB_LOG.read_bytes()
    path = tmp_path / "mail.log"
    path.write_bytes(data[:20] + b"\0" + data[20:])
    run = run_cli("logs", "--format", "json", str(path))
    assert_bounded(run, seconds=20)
    assert run.code == 0, run.err
    assert_lab_counts(run.report)
    assert run.report["input"]["malformed"][NUL_BYTES]["count"] == 1


def test_overlong_line_is_counted_and_skipped(tmp_path):
    """A 256 MiB line (no NUL) between real lines: skipped as it is read, never buffered."""
    data = LAB_LOG.read_bytes()
    half = data.index(b"\n", len(data) // 2) + 1
    path = tmp_path / "mail.log"
    with open(path, "wb") as fh:
        fh.write(data[:half])
        fh.write(b"Nov 28 17:44:00 lab postfix/smtp[1]: " + b"x" * (256 << 20) + b"\n")
        fh.write(data[half:])
    run = run_cli("logs", "--format", "json", str(path))
    assert_bounded(run)
    assert run.code == 0, run.err
    report = run.report
    assert_lab_counts(report)
    assert report["input"]["lines"] == LAB_LINES  # the long line is counted as malformed only
    long = report["input"]["malformed"][LONG_LINE]
    assert long["count"] == 1
    assert long["examples"][0].startswith(f"a line of {(256 << 20) + 37:,} characters: Nov 28 17:44:00 lab postfix/smtp[1]: xxx")


def test_line_reader_limits_and_counts():
    """BoundedLines on its own: line ends, NULs, a line at the limit and one past it."""
    import io

    text = "a\n\x00\x00b\nc" + "\x00" * 3 + "\n" + "x" * MAX_LINE + "\n" + "y" * (MAX_LINE + 1) + "\nlast"
    stats = ReadStats()
    reader = BoundedLines(io.StringIO(text), stats)
    got = list(reader)
    assert got == ["a", "b", "c", "x" * MAX_LINE, "last"]
    assert reader.count == 6
    assert stats.malformed == {NUL_BYTES: 2, LONG_LINE: 1}
    assert stats.examples[NUL_BYTES] == ["2 NUL bytes removed from a line: b", "3 NUL bytes removed from a line: c"]
    stats = ReadStats()
    assert list(BoundedLines(io.StringIO("\x00" * 10), stats, leading_nuls=5)) == []
    assert stats.examples[NUL_BYTES] == ["15 NUL bytes removed from a line that held nothing else"]


# -- damaged compressed files ----------------------------------------------------------------


def _compressed_lab(tmp_path: Path, kind: str) -> tuple[Path, bytes]:
    compress = {"gz": gzip.compress, "bz2": lambda b: bz2.compress(b, 1), "xz": lzma.compress}[kind]
    data = compress(LAB_LOG.read_bytes() * 20)  # 5,140 lines; bzip2 in 100 kB blocks, so half holds some
    return tmp_path / f"mail.log.1.{kind}", data


def test_gzip_with_a_bad_crc_is_a_warning_at_the_top(tmp_path):
    """Before: analysed as data, exit 0, the CRC error at the bottom among 'malformed'."""
    path, data = _compressed_lab(tmp_path, "gz")
    damaged = bytearray(data)
    damaged[-6] ^= 0xFF  # the CRC32 in the trailer
    path.write_bytes(bytes(damaged))
    run = run_cli("logs", str(path))
    assert_bounded(run, seconds=20)
    assert run.code == 0, run.err
    first = run.out.splitlines()[0]
    assert first.startswith(f"warning: {path} is damaged after line ")
    assert "the rest was not read" in first and "CRC check failed" in first
    assert run.err.startswith(f"pfdiag: warning: {path} is damaged after line ")
    run = run_cli("logs", "--format", "json", str(path))
    warning = run.report["input"]["warnings"][0]
    read = run.report["input"]["lines"]
    assert read == LAB_LINES * 20  # the CRC is checked at the end: every line came before it
    assert f"damaged after line {read:,}:" in warning
    run = run_cli("logs", "--format", "md", str(path))
    assert run.out.startswith(f"> **Warning:** `{path} is damaged after line ")


@pytest.mark.parametrize("kind", ["gz", "bz2", "xz"])
def test_truncated_compressed_file_names_the_line(tmp_path, kind):
    path, data = _compressed_lab(tmp_path, kind)
    path.write_bytes(data[: len(data) // 2])
    run = run_cli("logs", "--format", "json", str(path))
    assert_bounded(run, seconds=20)
    assert run.code == 0, run.err
    inp = run.report["input"]
    assert 0 < inp["lines"] < LAB_LINES * 20
    assert inp["warnings"] == [
        f"{path} is damaged after line {inp['lines']:,}: the rest was not read "
        + inp["warnings"][0].split("the rest was not read ", 1)[1]
    ]
    assert "damaged or truncated" in inp["warnings"][0]


def test_compressed_file_damaged_before_any_line_is_an_error(tmp_path):
    path, data = _compressed_lab(tmp_path, "gz")
    path.write_bytes(data[:12] + b"\xff" * 64)
    run = run_cli("logs", str(path))
    assert_one_line_error(run, f"{path} is damaged after line 0", "the rest was not read")


# -- inputs that are not files ----------------------------------------------------------------


def test_fifo_without_a_writer_does_not_hang(tmp_path):
    fifo = tmp_path / "mail.log"
    os.mkfifo(fifo)
    run = run_cli("logs", str(fifo), timeout=20)
    assert_one_line_error(run, "no Postfix log lines", "0 lines read")


def test_fifo_with_a_writer_is_read(tmp_path):
    fifo = tmp_path / "mail.log"
    os.mkfifo(fifo)
    writer = subprocess.Popen(["sh", "-c", 'cat "$1" > "$2"', "sh", str(LAB_LOG), str(fifo)])
    try:
        time.sleep(0.3)  # the writer waits in open() for us; give it its turn first
        run = run_cli("logs", "--format", "json", str(fifo), timeout=30)
    finally:
        writer.kill()
        writer.wait()
    assert_bounded(run, seconds=30)
    assert run.code == 0, run.err
    assert_lab_counts(run.report)


def test_closed_stdin_and_terminal_stdin(tmp_path):
    """Before: AttributeError (exit 3) with stdin closed; a wait for typing on a terminal."""
    run = run_cli("logs", "-", close_stdin=True)
    assert_one_line_error(run, "stdin is closed")
    primary, secondary = pty.openpty()
    try:
        run = run_cli("logs", "-", stdin=secondary, timeout=20)
    finally:
        os.close(primary)
        os.close(secondary)
    assert_one_line_error(run, "stdin is a terminal")


def test_socket_path_is_refused(tmp_path):
    path = tmp_path / "mail.log"
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(path))
        run = run_cli("logs", str(path))
    finally:
        sock.close()
    assert_one_line_error(run, str(path), "cannot read")


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv to become nobody")
@pytest.mark.parametrize("jobs", [[], ["--jobs", "1"]])
def test_unreadable_file_is_one_line_before_any_work(jobs):
    """Root reads everything: the child runs as nobody. Before: PermissionError in the
    chunk planner, exit 3, with the default workers. The readable file named first is big
    enough to be split for workers: the error must come before it is read."""
    top = Path(tempfile.mkdtemp(prefix="pfdiag-unreadable-"))
    try:
        top.chmod(0o755)
        big = top / "mail.log.1"
        with open(big, "wb") as fh:
            fh.seek(64 << 20)  # 64 MiB: cut in pieces for the workers
            fh.write(LAB_LOG.read_bytes())
        big.chmod(0o644)
        secret = top / "mail.log"
        secret.write_bytes(LAB_LOG.read_bytes())
        secret.chmod(0)
        become = ("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups")
        run = run_cli("logs", *jobs, str(big), str(secret), prefix=become)
        assert_one_line_error(run, f"{secret}: cannot read (Permission denied)")
        run = run_cli("logs", *jobs, str(top), prefix=become)  # found in a directory: the same
        assert_one_line_error(run, f"{secret}: cannot read (Permission denied)")
    finally:
        shutil.rmtree(top)


def test_report_with_a_missing_log_fails_at_once(tmp_path):
    """Before: the whole diagnosis ran (queue, config, probes), then a box saying the logs failed."""
    run = run_cli("report", "--log", str(tmp_path / "absent.log"), timeout=30)
    assert_one_line_error(run, "absent.log: No such file or directory")
    assert run.seconds < 10


# -- timestamps --------------------------------------------------------------------------------


def test_huge_journal_timestamp_is_a_malformed_line_not_a_crash(tmp_path):
    """journalctl -o json with __REALTIME_TIMESTAMP = 10**30 (and 5,000 digits).
    Before: OverflowError, exit 3."""
    message = ("ABCDEF1234: to=<a@b.example>, relay=none, delay=1, delays=0/0/1/0, dsn=4.4.1, "
               "status=deferred (connect to b.example[192.0.2.1]:25: Connection timed out)")  # fmt: skip
    good = str(int(time.time() - 3600) * 10**6)
    records = [
        {"MESSAGE": message, "SYSLOG_IDENTIFIER": "postfix/smtp", "__REALTIME_TIMESTAMP": stamp, "SYSLOG_PID": "1"}
        for stamp in (str(10**30), "9" * 5000, good)
    ]
    path = tmp_path / "journal.json"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    run = run_cli("logs", "--format", "json", str(path))
    assert_bounded(run, seconds=20)
    assert run.code == 0, run.err
    inp = run.report["input"]
    assert inp["postfix_lines"] == 3
    assert inp["malformed"]["unreadable timestamp"]["count"] == 2
    assert inp["without_timestamp"] == 2
    assert run.report["totals"]["statuses"]["deferred"] == 3
    run = run_cli("logs", str(path))  # the text report too
    assert run.code == 0 and "internal error" not in run.err


def test_implausible_years_are_flagged_not_accepted(tmp_path):
    """1970 and 9999 in RFC 3339 stamps: before, the window ran from 1970 to 9999."""
    line = ("{} mx postfix/smtp[1]: ABCDEF123{}: to=<a@b.example>, relay=none, delay=1, delays=0/0/1/0, dsn=4.4.1, "
            "status=deferred (connect to b.example[192.0.2.1]:25: Connection timed out)\n")  # fmt: skip
    path = tmp_path / "mail.log"
    path.write_text(
        line.format("1970-01-01T00:00:01+00:00", 1) + line.format("9999-12-31T00:00:01+00:00", 2)
        + line.format("1989-12-31T23:59:59Z", 3) + LAB_LOG.read_text()
    )  # fmt: skip
    run = run_cli("logs", "--format", "json", str(path))
    assert_bounded(run, seconds=20)
    assert run.code == 0, run.err
    report = run.report
    assert report["input"]["malformed"][IMPLAUSIBLE]["count"] == 3
    assert report["input"]["without_timestamp"] == 3
    assert report["window"]["first_line"].startswith(time.strftime("%Y"))  # the lab log's year (this one)
    assert report["totals"]["statuses"]["deferred"] == LAB_DEFERRED + 3


def test_log_text_that_looks_like_rich_markup_is_shown_as_it_is(tmp_path):
    """Before: MarkupError (exit 3) from a line holding '[/x]'; '[red]' vanished."""
    path = tmp_path / "mail.log"
    path.write_text(
        "Nov 28 10:00:00 mx postfix/smtp[1]: ABCDE1: to=<a@[/x]b.example>, relay=none, delay=1, delays=0/0/1/0, "
        "dsn=4.4.1, status=deferred (host b[192.0.2.1] said: 451 [red]try[/red] later [/bold] (in reply to RCPT TO command))\n"
        "Nov 28 10:00:01 mx postfix [/bold] a line that does not parse\n"
    )
    run = run_cli("logs", str(path))
    assert_bounded(run, seconds=20)
    assert run.code == 0, run.err
    assert "451 [red]try[/red] later [/bold]" in run.out
    assert "[/x]b.example (1)" in run.out
    assert "    Nov 28 10:00:01 mx postfix [/bold] a line that does not parse" in run.out
