"""Run tasks at once within one budget: pfdiag's only concurrency runner.

Everything pfdiag does at the same time goes through here: the probe sets (checks.probeset,
which adds the probe-specific parts), the diagnosis's collectors and checks
(diagnose.engine.run_parallel), the three postconf runs of checks.config.read_config, the
queue listing overlapping the configuration (diagnose.queuereport), the DNS report's lookups,
the fleet's hosts and the probe command's master.cf read. (checks/targets/streams.py's stderr
reader is I/O plumbing inside the target seam, not a task runner.)

A task is ``(label, task(deadline))``: it gets the batch's deadline (time.monotonic() based;
``inf`` for a batch without a budget) and should bound its own I/O by it. The runner returns
as soon as all tasks are done or the budget (plus ``grace``) has passed: a task still running
then, or never started, is an Unfinished outcome, never waited for (the workers are daemon
threads; a straggler ends at its own timeout and its result is dropped). A task's PfdiagError
is its Failed outcome (the exception kept); any other exception is a bug and is raised in the
caller's thread. A caller that must survive bugs (a plugin) catches them in its task.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Generic, Sequence, TypeVar

from checks.errors import PfdiagError

MAX_WORKERS = 16

T = TypeVar("T")
Task = Callable[[float], T]


@dataclass(frozen=True)
class Unfinished:
    """A task the budget ended before it finished (started) or before it could start."""

    label: str
    budget: float
    started: bool

    @property
    def reason(self) -> str:
        return f"not finished within the budget ({self.budget:g} s)" + ("" if self.started else "; never started")


@dataclass(frozen=True)
class Failed:
    """A task that could not be done (no address, a target that cannot connect): its error."""

    label: str
    error: str
    exc: PfdiagError | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """A task's result (value), or why there is none (missing: Unfinished or Failed)."""
    label: str
    value: T | None  # None when not done: see `missing`
    missing: Unfinished | Failed | None = None

    @property
    def done(self) -> bool:
        return self.missing is None

    def unwrap(self) -> T:
        """The value; a Failed task's own PfdiagError raised again, or one saying it did not finish."""
        if isinstance(self.missing, Failed):
            raise self.missing.exc if self.missing.exc is not None else PfdiagError(f"{self.label}: {self.missing.error}")
        if isinstance(self.missing, Unfinished):
            raise PfdiagError(f"{self.label}: {self.missing.reason}")
        return self.value  # type: ignore[return-value]  # done: the task's own value (which may be None)


class Batch(Generic[T]):
    """Tasks started on at most `workers` daemon threads; `wait()` collects them within the budget.

    budget None: no deadline (tasks get ``inf`` and bound themselves, e.g. a command's own timeout)."""

    def __init__(self, budget: float | None, tasks: Sequence[tuple[str, Task[T]]], *, workers: int = MAX_WORKERS,
                 progress: Callable[[int, int], None] | None = None, grace: float = 0.0,
                 name: str = "pfdiag-task") -> None:  # fmt: skip
        self.budget = budget
        self.deadline = math.inf if budget is None else time.monotonic() + max(budget, 0.0)
        self._tasks = list(tasks)
        self._grace = grace
        n = len(self._tasks)
        self._results: list[Outcome[T] | None] = [None] * n
        self._started = [False] * n
        self._crashed: list[BaseException] = []
        self._state = threading.Condition()
        self._queue = iter(range(n))
        self._finished = 0
        self._progress = progress
        for k in range(min(max(workers, 1), n)):
            threading.Thread(target=self._work, name=f"{name}-{k}", daemon=True).start()

    def _work(self) -> None:
        n = len(self._tasks)
        while True:
            with self._state:
                i = next(self._queue, None)
                if i is None:
                    return
                late = time.monotonic() >= self.deadline
                self._started[i] = not late
            label, task = self._tasks[i]
            outcome: Outcome[T]
            if late:
                outcome = Outcome(label, None, Unfinished(label, self.budget or 0.0, False))
            else:
                try:
                    outcome = Outcome(label, task(self.deadline))
                except PfdiagError as exc:
                    outcome = Outcome(label, None, Failed(label, str(exc), exc))
                except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                    self._crashed.append(exc)
                    outcome = Outcome(label, None, Failed(label, f"internal error: {exc!r}"))
            with self._state:
                self._results[i] = outcome
                self._finished += 1
                finished = self._finished
                self._state.notify_all()
            if self._progress is not None:
                self._progress(finished, n)

    def ready(self) -> bool:
        """Every task has finished (wait() returns at once)."""
        with self._state:
            return self._finished == len(self._tasks)

    def wait(self) -> list[Outcome[T]]:
        """The outcomes in task order, as soon as all are done or the deadline (plus grace) has passed."""
        n = len(self._tasks)
        with self._state:
            if self.deadline == math.inf:
                self._state.wait_for(lambda: self._finished == n)
            else:
                self._state.wait_for(lambda: self._finished == n,
                                     timeout=max(self.deadline - time.monotonic(), 0.0) + self._grace)  # fmt: skip
            if self._crashed:
                raise self._crashed[0]
            return [r if r is not None else Outcome(self._tasks[i][0], None,
                                                    Unfinished(self._tasks[i][0], self.budget or 0.0, self._started[i]))
                    for i, r in enumerate(self._results)]  # fmt: skip


def run_within(budget: float | None, tasks: Sequence[tuple[str, Task[T]]], *, workers: int = MAX_WORKERS,
               progress: Callable[[int, int], None] | None = None, grace: float = 0.0,
               name: str = "pfdiag-task") -> list[Outcome[T]]:  # fmt: skip
    """Run (label, task(deadline)) pairs on at most `workers` daemon threads; return in task
    order as soon as all are done or `budget` seconds have passed (plus `grace`)."""
    return Batch(budget, tasks, workers=workers, progress=progress, grace=grace, name=name).wait()


def start(label: str, task: Task[T], budget: float | None = None) -> Batch[T]:
    """One task in the background (overlapping the caller's own work): ``ready()``, then
    ``wait()[0].unwrap()`` for its value."""
    return Batch(budget, [(label, task)], workers=1, name=f"pfdiag-{label}")


def values(outcomes: Sequence[Outcome[T]]) -> list[T]:
    """Every outcome's value; the first one missing raised (Outcome.unwrap)."""
    return [o.unwrap() for o in outcomes]
