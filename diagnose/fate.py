"""A queued message's fate in one phrase: what happens to it if nothing is changed.

One implementation for `pfdiag queue` (each entry's `fate`, diagnose/queuereport.py) and
`pfdiag trace` (diagnose/tracereport.py). It reads only plain facts: the queue the message
is in, the cause of its last deferral, and its forecast (next attempt, expiry)."""

from __future__ import annotations

import time

# mail deferred for these causes usually passes at the next retry by itself
CLEARS_BY_ITSELF = {"E21": "greylisting"}
# retrying cannot help: what to do instead
FUTILE = {
    "E33": "retrying is futile (5xx kept by soft_bounce): return it now or hold it",
    "E37": "retrying is futile (the receiver refused it permanently): return it now or hold it",
}


def human(seconds: float, *, prose: bool = False) -> str:
    """A duration in its two largest units: '4m', '1h20m', '2d03h' for tables, or with prose=True
    '4 min', '1 h 20 min', '2 d 3 h' for a sentence. The one duration format of the reports."""
    s = int(abs(seconds))
    if s < 60:
        return f"{s} s" if prose else f"{s}s"
    if s < 3600:
        return f"{s // 60} min" if prose else f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600} h {(s % 3600) // 60:02d} min" if prose else f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400} d {(s % 86400) // 3600} h" if prose else f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def _day(ts: float) -> str:
    return time.strftime("%m-%d %H:%M", time.localtime(ts))


def fate(queue_name: str, queue_id: str, cause_id: str | None, *, now: float, next_attempt: float | None = None,
         expires_at: float | None = None, expiring: bool = False) -> str:  # fmt: skip
    """The phrase for a message in `queue_name`, deferred last for `cause_id` (None: no cause
    known), with its forecast (next_attempt, expires_at: epoch seconds; expiring: its next
    attempt is its last) when it is deferred."""
    if queue_name == "hold":
        return f"on hold: nothing happens until it is released (pfdiag queue release --id {queue_id})"
    if queue_name != "deferred":
        return f"in the {queue_name} queue: being delivered now"
    if cause_id in FUTILE:
        return FUTILE[cause_id]
    if next_attempt is None:
        nxt = "the next retry"
    elif next_attempt > now + 1:
        nxt = f"the next retry in {human(next_attempt - now, prose=True)}"
    else:
        nxt = "the next retry (the next queue scan)"
    if cause_id in CLEARS_BY_ITSELF:
        return f"clears at {nxt} ({CLEARS_BY_ITSELF[cause_id]})"
    if expiring:
        return f"bounces after {nxt} unless that attempt succeeds"
    if expires_at is None:
        return f"waits for {nxt}"
    unless = f"unless the {cause_id} problem is fixed" if cause_id and cause_id != "no-reason" else "unless an attempt succeeds"
    return f"bounces on {_day(expires_at)} {unless}"


# Which queue actions fit a cause, and when. Holding is for mail whose every retry may do harm
# (an end-of-data timeout may deliver it again); retrying now is for mail that a retry helps:
# after its fix was applied, or when the cause clears by itself (greylisting accepts the retry).
# A cause that clears by itself is never held; one where retrying is futile is never retried.
def fitting_actions(cause_id: str, fixed: bool) -> list[tuple[str, str]]:
    """[(action, why)] for the queued mail of a cause, in the order they make sense."""
    from diagnose.correlate import EOD_CAUSES

    if cause_id in EOD_CAUSES:
        if fixed:
            return [("release", "the fix is applied: take the held mail off hold"),
                    ("retry", "the fix is applied: try this mail now")]  # fmt: skip
        return [("hold", "while you fix it: every retry may deliver it twice")]
    if cause_id in FUTILE:
        return [("hold", "retrying cannot help: keep it until you decide")]
    if cause_id in CLEARS_BY_ITSELF:
        return [("retry", f"{CLEARS_BY_ITSELF[cause_id]} accepts a retry: try it now")]
    if fixed:
        return [("retry", "the fix is applied: try this mail now")]
    return []


def first_cause(cause_ids: list[str | None]) -> str | None:
    """The cause a message's fate follows: a futile one if any recipient has one (retrying is
    futile for those recipients whatever the others do), else the first known."""
    known = [c for c in cause_ids if c and c != "no-reason"]
    return next((c for c in known if c in FUTILE), known[0] if known else None)


__all__ = ["CLEARS_BY_ITSELF", "FUTILE", "fate", "first_cause", "fitting_actions"]
