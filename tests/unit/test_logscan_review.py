"""Review of the forked log workers: an error in this process mid-merge and Ctrl-C leave no
child process behind, and the collector's freeze is undone on every way out."""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import time

import pytest

from diagnose import logscan
from tests.unit.test_logscan import _report, _three_chunk_log


def test_an_error_while_merging_stops_the_workers_and_unfreezes(tmp_path, monkeypatch):
    from diagnose.deferrals import DeferralAnalysis

    log, min_bytes = _three_chunk_log(tmp_path)

    def merge(self, other):
        raise ValueError("merge failed (test)")

    monkeypatch.setattr(DeferralAnalysis, "merge", merge)
    before = gc.get_freeze_count()
    with pytest.raises(ValueError, match="merge failed"):
        _report(log, 3, monkeypatch, min_bytes)
    assert multiprocessing.active_children() == []
    assert gc.get_freeze_count() == before


def test_ctrl_c_in_the_parent_leaves_no_worker(tmp_path, monkeypatch):
    log, min_bytes = _three_chunk_log(tmp_path)
    real = logscan._work

    def work(chunk, *args):
        if chunk.start > 0:
            time.sleep(30)  # a slow worker: the parent is interrupted while it waits
        return real(chunk, *args)

    monkeypatch.setattr(logscan, "_work", work)
    parent = os.getpid()
    old = signal.signal(signal.SIGALRM, lambda *a: os.kill(parent, signal.SIGINT))
    signal.setitimer(signal.ITIMER_REAL, 1.0)
    t0 = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            _report(log, 3, monkeypatch, min_bytes)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert time.monotonic() - t0 < 10
    assert multiprocessing.active_children() == []
    assert gc.get_freeze_count() == 0


def test_no_process_to_be_had_leaves_no_pipe_open(tmp_path, monkeypatch):
    """fork() failing (EAGAIN: the machine is out of processes) for the second worker: the error
    reaches the caller, the first worker is stopped and neither worker's pipe stays open."""
    from multiprocessing.process import BaseProcess

    log, min_bytes = _three_chunk_log(tmp_path)
    real_start = BaseProcess.start
    started = []

    def start(self):
        if started:
            raise BlockingIOError(11, "Resource temporarily unavailable (test)")
        started.append(self)
        return real_start(self)

    monkeypatch.setattr(BaseProcess, "start", start)
    fds_before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(BlockingIOError):
        _report(log, 3, monkeypatch, min_bytes)
    assert multiprocessing.active_children() == []
    # no cycle collection first: what is still open here is open until the collector happens to run
    left = set(os.listdir("/proc/self/fd")) - fds_before
    assert left == set(), [os.readlink(f"/proc/self/fd/{fd}") for fd in left]
