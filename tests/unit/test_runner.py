"""checks.runner, pfdiag's one concurrency runner: budgets, typed outcomes, the error rule."""

from __future__ import annotations

import threading
import time
from typing import Callable

import pytest

from checks.errors import InputError, PfdiagError
from checks.runner import Failed, Unfinished, run_within, start, values


def _after(seconds: float, value: object) -> object:
    time.sleep(seconds)
    return value


def test_tasks_run_at_once_and_come_back_in_order() -> None:
    t0 = time.monotonic()
    def task(i: int) -> Callable[[float], object]:
        return lambda deadline: _after(0.3, i)

    out = run_within(5, [(f"t{i}", task(i)) for i in range(4)])
    assert time.monotonic() - t0 < 0.9, "four 0.3 s tasks at once, not one after another"
    assert [o.label for o in out] == ["t0", "t1", "t2", "t3"] and values(out) == [0, 1, 2, 3]


def test_workers_limit_how_many_run_at_once() -> None:
    running, peak, lock = [0], [0], threading.Lock()

    def task(deadline: float) -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1

    run_within(None, [(str(i), task) for i in range(6)], workers=2)
    assert peak[0] == 2


def test_the_budget_ends_the_wait_and_names_what_did_not_finish() -> None:
    t0 = time.monotonic()
    out = run_within(0.3, [("slow", lambda d: time.sleep(2)), ("queued", lambda d: 1)], workers=1)
    assert time.monotonic() - t0 < 0.8
    assert isinstance(out[0].missing, Unfinished) and out[0].missing.started
    assert isinstance(out[1].missing, Unfinished) and not out[1].missing.started
    with pytest.raises(PfdiagError, match="slow: not finished within the budget"):
        out[0].unwrap()


def test_a_pfdiag_error_is_the_tasks_failure_and_keeps_its_type() -> None:
    def bad(deadline: float) -> int:
        raise InputError("postconf -h failed")

    out = run_within(None, [("ok", lambda d: 1), ("bad", bad)])
    assert out[0].unwrap() == 1 and isinstance(out[1].missing, Failed) and out[1].missing.error == "postconf -h failed"
    with pytest.raises(InputError):  # the exit code of the error a caller raises stays the same
        values(out)


def test_any_other_exception_is_a_bug_raised_in_the_callers_thread() -> None:
    with pytest.raises(ZeroDivisionError):
        run_within(None, [("bug", lambda d: 1 // 0)])


def test_start_overlaps_the_callers_work() -> None:
    job = start("config", lambda d: _after(0.2, "cfg"))
    assert not job.ready()
    time.sleep(0.3)
    assert job.ready() and job.wait()[0].unwrap() == "cfg"
    assert job.deadline == float("inf")
