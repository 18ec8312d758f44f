"""Run the deferral analysis over logs, in parallel when that pays.

Big plain log files are cut into byte ranges at line starts (checks.logs.plan_chunks)
and analysed by worker processes at once. A message's lines can straddle a cut,
so each worker after the first counts only the messages born in its own range
(cleanup's first line seen there) and hands back the lines of older messages;
merging the results in log order replays those lines on the state built so far.
The result is the same as one pass, which the tests check.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
from datetime import tzinfo
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Generator, Sequence

from checks.logs import STDIN, Chunk, ReadStats, plan_chunks, read_batches
from checks.targets import Target
from diagnose.deferrals import DeferralAnalysis, UnbornOverflow

CHUNK_MIN_BYTES = 24 * 1024 * 1024  # below this the fork and pickling cost more than they save
# Chunks per worker. Two per worker let a worker that gets less CPU (a machine shared with other
# work) take fewer: 5-12% less wall time at 1M lines with the CPUs busy, but the tree's memory
# rose from 52/64 to 63/83 MB at 1M/4M lines (more open results and unborn lines): one.
CHUNKS_PER_WORKER = 1
MAX_WORKERS = 8

_TARGET: Target | None = None  # handed to forked workers without pickling it


def available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _analyse(
    target: Target,
    chunks: Sequence[str | Chunk],
    since: float | None,
    until: float | None,
    first: bool,
    tz: tzinfo | None = None,
) -> tuple[DeferralAnalysis, ReadStats]:
    stats = ReadStats()
    births: set[str] | None = None if first else set()
    analysis = DeferralAnalysis(births=births)
    analysis.read(read_batches(target, chunks, stats, since, births, tz), stats, since, until)
    analysis.births = None  # the set is only needed while reading; do not send it back
    return analysis, stats


def _work(
    chunk: Chunk, since: float | None, until: float | None, first: bool, tz: tzinfo | None
) -> tuple[DeferralAnalysis, ReadStats] | None:
    """A worker's analysis of its chunk; None when the chunk is mostly lines of messages
    born before it (no cleanup lines in the log): the merging process reads it instead."""
    assert _TARGET is not None
    try:
        return _analyse(_TARGET, [chunk], since, until, first, tz)
    except UnbornOverflow:
        return None


# The parts of a worker's result sent as pickles of their own after the rest: one pickle of the
# whole held a memo entry for each of its ~60,000 objects and the whole output at once (+4-6 MB
# in each worker at its end, when the tree's memory peaks); in parts, the biggest part's.
_PARTS = ("unborn", "domains", "relays", "causes")


def _child(conn: Connection, chunk: Chunk, since: float | None, until: float | None, first: bool,
           tz: tzinfo | None) -> None:
    """A forked worker: its chunk's result (or the exception it met) down the pipe, then exit."""
    try:
        result = _work(chunk, since, until, first, tz)
        parts = []
        if result is not None:
            for name in _PARTS:
                parts.append(getattr(result[0], name))
                setattr(result[0], name, None)
        reply: tuple[bool, object] = (True, result)
    except BaseException as exc:  # noqa: BLE001 - handed to the parent, which raises it
        reply, parts = (False, exc), []
    try:
        try:
            conn.send(reply)
        except (OSError, KeyboardInterrupt):
            raise
        except Exception as exc:  # an unpicklable exception: its text still reaches the parent
            conn.send((False, RuntimeError(f"worker failed: {exc!r}")))
            parts = []
        while parts:
            conn.send(parts.pop(0))
    except (OSError, KeyboardInterrupt):  # the parent stopped listening (an error, Ctrl-C): nothing to tell
        pass
    finally:
        conn.close()


def _receive(conn: Connection) -> tuple[DeferralAnalysis, ReadStats] | None:
    """What _child sent, put together again; the worker's exception raised here."""
    ok, value = conn.recv()
    if not ok:
        assert isinstance(value, BaseException)
        raise value
    if value is not None:
        for name in _PARTS:
            setattr(value[0], name, conn.recv())
    return value


def _run_workers(
    chunks: Sequence[Chunk], workers: int, since: float | None, until: float | None, tz: tzinfo | None
) -> Generator[tuple[DeferralAnalysis, ReadStats] | None, None, None]:
    """The workers' results in chunk order. Each chunk gets a forked process that exits as soon
    as its result is sent (at most `workers` at once): a finished worker's memory is freed while
    the others work and while this process merges, where a pool's idle workers kept theirs to the end."""
    ctx = multiprocessing.get_context("fork")
    running: dict[int, tuple[Connection, BaseProcess]] = {}
    done: dict[int, tuple[DeferralAnalysis, ReadStats] | None] = {}
    started = 0
    try:
        for want in range(len(chunks)):
            while want not in done:
                while started < len(chunks) and len(running) < workers:
                    recv, send = ctx.Pipe(duplex=False)
                    try:
                        child = ctx.Process(target=_child, args=(send, chunks[started], since, until, started == 0, tz), daemon=True)
                        child.start()
                    except BaseException:  # no process to be had (EAGAIN): the pipe is not left open
                        recv.close()
                        raise
                    finally:
                        send.close()
                    running[started] = (recv, child)
                    started += 1
                ready = wait([conn for conn, _ in running.values()])
                for k in [k for k, (conn, _) in running.items() if conn in ready]:
                    conn, proc = running.pop(k)
                    try:
                        done[k] = _receive(conn)
                    except EOFError:
                        proc.join()
                        raise RuntimeError(f"a log worker died (exit status {proc.exitcode})") from None
                    finally:
                        conn.close()
                        proc.join()
                        proc.close()  # its two sentinel pipe ends now, not when the collector finds it
            yield done.pop(want)
    finally:
        for conn, proc in running.values():  # an error or an abandoned merge: stop the rest
            proc.terminate()
            proc.join()
            proc.close()
            conn.close()


def analyse_logs(
    target: Target,
    sources: Sequence[str],
    since: float | None = None,
    until: float | None = None,
    workers: int | None = None,
    tz: tzinfo | None = None,
) -> tuple[DeferralAnalysis, ReadStats]:
    """(finished analysis, read statistics) of the sources, oldest first."""
    n = available_cpus() if workers is None else max(1, workers)
    n = min(n, MAX_WORKERS)
    # Workers are forked: only for files this process can open itself. A remote target's
    # connection (an SSH session and its threads) must never be shared with a forked child.
    local = n > 1 and STDIN not in sources and all(target.local_path(s) is not None for s in sources if isinstance(s, str))
    chunks = plan_chunks(target, sources, n * CHUNKS_PER_WORKER, CHUNK_MIN_BYTES) if local else []
    if len(chunks) < 2 or "fork" not in multiprocessing.get_all_start_methods():
        analysis, stats = _analyse(target, list(sources), since, until, True, tz)
        return analysis.finish(), stats
    global _TARGET
    _TARGET = target
    gc.freeze()  # the collector would write to every object inherited at the fork: each worker would copy them
    results = _run_workers(chunks, min(n, len(chunks)), since, until, tz)
    try:
        first = next(results)
        assert first is not None, "the first chunk keeps no lines for a merge"
        analysis, stats = first
        for chunk, result in zip(chunks[1:], results):
            if result is None:  # read here, on the state of the chunks before it: one pass's result
                analysis.read(read_batches(target, [chunk], stats, since, None, tz), stats, since, until)
                continue
            part, part_stats = result
            analysis.merge(part)
            del part, result  # the worker's counters are merged: free them before the next result arrives
            stats.merge(part_stats)
    finally:
        results.close()  # on an error here: the workers still running are stopped
        _TARGET = None
        gc.unfreeze()
    return analysis.finish(), stats
