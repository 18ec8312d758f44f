"""Parallel chunked analysis must give exactly the one-pass result, including
for messages whose lines straddle a chunk boundary (deferred early, delivered,
expired or still queued much later)."""

from __future__ import annotations

import json
import random

import pytest

from checks.logs import Chunk, plan_chunks
from checks.targets import LocalTarget
from diagnose import logscan
from diagnose.logreport import to_dict

EOD = "conversation with mx.slow.test[192.0.2.25] timed out while sending end of data -- message may be sent more than once"
REASONS = (
    "connect to mx.dead.test[192.0.2.99]:25: Connection timed out",
    "host mx.grey.test[192.0.2.4] said: 450 4.7.1 <u@grey.test>: Recipient address rejected: Greylisted (in reply to RCPT TO command)",
    EOD,
    "delivery temporarily suspended: " + EOD,
)


def _stamp(t: int) -> str:
    d, rest = divmod(t, 86400)
    return f"Nov {1 + d:2d} {rest // 3600:02d}:{rest // 60 % 60:02d}:{rest % 60:02d}"


def write_log(path, messages=3000, seed=7):
    """Messages with retries spread over days, so that many straddle any cut."""
    rnd = random.Random(seed)
    events = []
    for i in range(messages):
        q = f"{i + 0x10000:X}"
        t = i * 40
        events.append((t, f"postfix/cleanup[2]: {q}: message-id=<{i}@here.test>"))
        events.append((t, f"postfix/smtpd[3]: connect from client.here.test[198.51.100.7]"))
        deferrals = rnd.choice((0, 0, 1, 2, 5))
        for k in range(deferrals):
            t += rnd.randint(60, 20000)
            reason = rnd.choice(REASONS)
            prog = "qmgr" if reason.startswith("delivery") else "smtp"
            events.append((t, f"postfix/qmgr[1]: {q}: from=<s@here.test>, size={rnd.randint(300, 90000)}, nrcpt=1 (queue active)"))
            events.append((t, f"postfix/{prog}[4]: {q}: to=<r{i}@d{i % 9}.test>, relay=none, delay=600, delays=0.1/0/0.2/600, dsn=4.4.2, status=deferred ({reason})"))
        end = rnd.random()
        t += rnd.randint(60, 20000)
        if end < 0.8:
            events.append((t, f"postfix/smtp[4]: {q}: to=<r{i}@d{i % 9}.test>, relay=mx.d.test[192.0.2.1]:25, delay=1, delays=0.1/0/0.2/0.5, dsn=2.0.0, status=sent (250 ok)"))
            events.append((t, f"postfix/qmgr[1]: {q}: removed"))
        elif end < 0.9:
            events.append((t, f"postfix/qmgr[1]: {q}: from=<s@here.test>, status=expired, returned to sender"))
            events.append((t, f"postfix/qmgr[1]: {q}: removed"))
        # else: still queued at the end of the log
    events.sort(key=lambda e: e[0])
    with open(path, "w") as fh:
        for t, text in events:
            fh.write(f"{_stamp(t)} mx {text}\n")


def _report(path, workers, monkeypatch, min_bytes):
    monkeypatch.setattr(logscan, "CHUNK_MIN_BYTES", min_bytes)
    analysis, stats = logscan.analyse_logs(LocalTarget(), [str(path)], workers=workers)
    report = to_dict(analysis, stats)
    report.pop("generated")
    return json.dumps(report, sort_keys=True, indent=1)


@pytest.mark.parametrize("workers", [2, 3, 5])
def test_parallel_equals_one_pass(tmp_path, monkeypatch, workers):
    log = tmp_path / "mail.log"
    write_log(log)
    size = log.stat().st_size
    chunks = plan_chunks(LocalTarget(), [str(log)], workers, size // (workers * 2))
    assert len(chunks) == workers and all(isinstance(c, Chunk) for c in chunks)
    assert sum(c.end - c.start for c in chunks) == size
    serial = _report(log, 1, monkeypatch, size)
    parallel = _report(log, workers, monkeypatch, size // (workers * 2))
    assert parallel == serial
    assert json.loads(serial)["outcomes"]["delivered_later"] > 100  # the log does exercise straddling


def test_compressed_files_are_not_split(tmp_path):
    import gzip

    path = tmp_path / "mail.log.1.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("x\n" * 100000)
    assert plan_chunks(LocalTarget(), [str(path)], 4, 10) == [Chunk(str(path))]


@pytest.mark.parametrize("cleanup", [True, False])
def test_worker_memory_is_capped_when_messages_are_born_elsewhere(tmp_path, monkeypatch, cleanup):
    """Without cleanup's lines (a log grepped for the delivery agents) no message is born in
    any chunk, and a worker would keep every line of its chunk for the merge: past
    MAX_UNBORN it gives up and the merging process reads that chunk itself. Same result."""
    from diagnose import deferrals

    log = tmp_path / "mail.log"
    write_log(log)
    if not cleanup:
        log.write_text("".join(line for line in log.read_text().splitlines(True) if "postfix/cleanup" not in line))
    monkeypatch.setattr(deferrals, "MAX_UNBORN", 4000)  # with cleanup lines a chunk keeps ~3,000 here, without ~5,000
    monkeypatch.setattr(logscan, "CHUNKS_PER_WORKER", 1)  # a third of the log per chunk
    fallbacks = []
    real = logscan.read_batches

    def spy(target, sources, *args):  # the merging process reading a chunk a worker gave up
        fallbacks.extend(sources)
        return real(target, sources, *args)

    size = log.stat().st_size
    serial = _report(log, 1, monkeypatch, size)
    fallbacks.clear()
    monkeypatch.setattr(logscan, "read_batches", spy)
    parallel = _report(log, 3, monkeypatch, size // 6)
    assert parallel == serial
    if cleanup:
        assert fallbacks == []  # born in their chunks: only the few straddling messages are kept
    else:
        assert len(fallbacks) == 2 and all(isinstance(c, Chunk) and c.start > 0 for c in fallbacks)


def _three_chunk_log(tmp_path):
    log = tmp_path / "mail.log"
    write_log(log)
    return log, log.stat().st_size // 6


def test_a_worker_exits_once_its_result_is_sent(tmp_path, monkeypatch):
    """Each chunk's process ends when its result is in: while the second chunk's result is
    merged, the first two workers are gone (a pool's idle workers held their memory to the end)."""
    import multiprocessing

    from diagnose.deferrals import DeferralAnalysis

    log, min_bytes = _three_chunk_log(tmp_path)
    alive = []
    real = DeferralAnalysis.merge

    def merge(self, other):
        alive.append(len(multiprocessing.active_children()))
        return real(self, other)

    monkeypatch.setattr(DeferralAnalysis, "merge", merge)
    serial = _report(log, 1, monkeypatch, log.stat().st_size)
    assert alive == []
    parallel = _report(log, 3, monkeypatch, min_bytes)
    assert parallel == serial
    assert len(alive) == 2 and alive[0] <= 1 and alive[1] == 0  # only the third chunk's may still run
    assert multiprocessing.active_children() == []


def test_more_chunks_than_workers(tmp_path, monkeypatch):
    """A log rotated into four files, two workers: a process per file, two at a time, the
    results merged in file order: the one-pass result."""
    whole = tmp_path / "whole.log"
    write_log(whole, messages=1600)
    lines = whole.read_text().splitlines(True)
    logs_ = []
    for k in range(4):
        path = tmp_path / f"mail.log.{k}"
        path.write_text("".join(lines[k * len(lines) // 4 : (k + 1) * len(lines) // 4]))
        logs_.append(str(path))
    monkeypatch.setattr(logscan, "CHUNK_MIN_BYTES", 1 << 30)  # no file is split: one chunk each
    assert len(plan_chunks(LocalTarget(), logs_, 2, 1 << 30)) == 4
    import multiprocessing.context

    running = []
    real_start = multiprocessing.context.ForkProcess.start

    def start(self):
        real_start(self)
        running.append(len(multiprocessing.active_children()))

    monkeypatch.setattr(multiprocessing.context.ForkProcess, "start", start)
    serial = to_dict(*logscan.analyse_logs(LocalTarget(), logs_, workers=1))
    assert running == []
    parallel = to_dict(*logscan.analyse_logs(LocalTarget(), logs_, workers=2))
    assert len(running) == 4 and max(running) <= 2
    for report in (serial, parallel):
        report.pop("generated")
    assert json.dumps(parallel, sort_keys=True) == json.dumps(serial, sort_keys=True)


def test_a_workers_error_is_raised_here_and_the_others_stopped(tmp_path, monkeypatch):
    import multiprocessing

    from checks.errors import InputError

    log, min_bytes = _three_chunk_log(tmp_path)
    real = logscan._work

    def work(chunk, *args):
        if chunk.start > 0 and chunk.end == log.stat().st_size:
            raise InputError(f"{chunk.path}: cannot read (test)")
        return real(chunk, *args)

    monkeypatch.setattr(logscan, "_work", work)
    with pytest.raises(InputError, match="cannot read \\(test\\)"):
        _report(log, 3, monkeypatch, min_bytes)
    assert multiprocessing.active_children() == []


def test_a_worker_that_dies_is_an_error_not_a_hang(tmp_path, monkeypatch):
    import multiprocessing
    import os

    log, min_bytes = _three_chunk_log(tmp_path)

    def work(chunk, *args):
        os._exit(9)

    monkeypatch.setattr(logscan, "_work", work)
    with pytest.raises(RuntimeError, match="a log worker died \\(exit status 9\\)"):
        _report(log, 3, monkeypatch, min_bytes)
    assert multiprocessing.active_children() == []
