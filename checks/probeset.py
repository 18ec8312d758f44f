"""Run a set of probes at once within ONE budget: the only probe runner (the diagnosis's
smtp.nexthops check, `pfdiag probe D1 D2 ...`, the other addresses of one destination, and
plugins all use it), on checks.runner (pfdiag's one concurrency runner).

The budget rule: ``budget`` seconds of wall time for the whole set. Every task gets the set's
deadline; a probe waits, per phase, min(Postfix's timeout for it, its own cap, what is left of
the budget) - its sockets get timeouts derived from that deadline, so no read outlives it.
When the deadline passes the runner returns at once: a task still running or never started is
reported as Unfinished ("not finished within the budget"), never waited for (the workers are
daemon threads; a straggler ends at its own socket timeout and its result is dropped).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Literal, Sequence, TypeVar

from checks import runner
from checks.runner import Failed, Outcome, Unfinished
from checks.smtp import SMTPS_PORTS, PhaseTimeouts, ProbeResult, probe_address
from checks.targets import Target

__all__ = ["GRACE", "MAX_WORKERS", "Failed", "Outcome", "ProbeJob", "Unfinished", "helo_name", "run_probes", "run_within"]

MAX_WORKERS = 16  # connections at once: a probe waits on the network, not the CPU
# After the deadline a probe that ran into it still records its "undecided" verdict: this long.
GRACE = 0.3

T = TypeVar("T")


def run_within(budget: float, tasks: Sequence[tuple[str, Callable[[float], T]]], *, workers: int = MAX_WORKERS,
               progress: Callable[[int, int], None] | None = None) -> list[Outcome[T]]:  # fmt: skip
    """checks.runner.run_within with the probes' GRACE: (label, task(deadline)) pairs on at most
    `workers` daemon threads, back in task order when all are done or the budget has passed. A
    task's PfdiagError is its Failed outcome; any other exception is a bug and is raised here."""
    return runner.run_within(budget, tasks, workers=workers, progress=progress, grace=GRACE, name="pfdiag-probe")


@dataclass(frozen=True)
class ProbeJob:
    """One probe_address call: where to, and how Postfix's client would talk there."""

    host: str  # an IP address (or a name the target resolves)
    port: int
    helo_name: str
    timeouts: PhaseTimeouts = PhaseTimeouts()
    mail_from: str = ""
    rcpt_to: str | None = None
    starttls: bool | Literal["auto"] = "auto"
    wrappermode: bool | None = None  # None: TLS from the first byte on the SMTPS port (465)
    source: str | None = None  # bind address (checks.bind.BindPlan.kwargs)
    bind_fallback: bool = False
    tls_context: Any = None
    cap: float | None = None  # this probe's own limit, seconds, under the set's budget
    label: str = ""
    target: Target | None = None  # another vantage point than the set's target

    def run(self, target: Target, deadline: float) -> ProbeResult:
        left = deadline - time.monotonic()
        if self.cap is not None:
            left = min(left, self.cap)
        return probe_address(self.target or target, self.host, self.port, helo_name=self.helo_name,
                             mail_from=self.mail_from, rcpt_to=self.rcpt_to, timeouts=self.timeouts,
                             starttls=self.starttls, tls_context=self.tls_context, total_budget=max(left, 0.0),
                             wrappermode=self.port in SMTPS_PORTS if self.wrappermode is None else self.wrappermode,
                             source=self.source, bind_fallback=self.bind_fallback)  # fmt: skip


def run_probes(target: Target, jobs: Sequence[ProbeJob], budget: float, *, workers: int = MAX_WORKERS,
               progress: Callable[[int, int], None] | None = None) -> list[Outcome[ProbeResult]]:  # fmt: skip
    """Every job at once within `budget` seconds in all (run_within); results in job order."""
    tasks = [(job.label or f"{job.host}:{job.port}", lambda deadline, job=job: job.run(target, deadline)) for job in jobs]
    return run_within(budget, tasks, workers=workers, progress=progress)


def helo_name(values: dict[str, str], overrides: dict[tuple[str, str, str], str], transport: str = "smtp") -> str | None:
    """The name Postfix's smtp client greets with for `transport`: a master.cf `-o
    smtp_helo_name` of that service, else smtp_helo_name, both with $names expanded from
    `values` (which postconf -x already expanded); myhostname when smtp_helo_name is unread.
    None when nothing says: a probe must not make up a name (this machine's is not the mail
    host's)."""
    raw = overrides.get((transport, "unix", "smtp_helo_name"))
    for text in (raw, values.get("smtp_helo_name"), values.get("myhostname")):
        name = _expand(text, values) if text else None
        if name:
            return name
    return None


def _expand(text: str, values: dict[str, str], depth: int = 0) -> str | None:
    """$name, ${name} and $(name) from `values`; None when one stays unknown."""
    import re

    missing = False

    def sub(m: re.Match[str]) -> str:
        nonlocal missing
        v = values.get(m.group(1) or m.group(2) or m.group(3) or "")
        if v is None:
            missing = True
            return ""
        return v

    out = re.sub(r"\$(?:\{(\w+)\}|\((\w+)\)|(\w+))", sub, text.strip())
    if missing or ("$" in out and depth >= 3):
        return None
    return _expand(out, values, depth + 1) if "$" in out else out
