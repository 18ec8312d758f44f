"""The mail queue through a Target: listing, counts, a qshape-style age x domain matrix,
deferred recipients grouped by (cause, domain), and a per-message retry forecast.

Reading: `postqueue -j` (3.1+); when it fails as an unknown option, `postqueue -p`. Users
that authorized_mailq_users locks out, a stopped mail system and a missing Postfix each
get one clear line.

qshape (auxiliary/qshape/qshape.pl) is matched exactly: it counts RECIPIENTS (or, with -s,
one sender per message) per lower-cased domain, ages from the arrival time, bucket 1 is
age < t minutes, bucket b >= 2 is 2 + floor(log2(age / t)), capped at the last bucket.

Queue file mtime, which says when qmgr will try a deferred message again, is not in
`postqueue -j`. The forecast stats the queue file through the target when it can
($queue_directory/deferred/<first id character>/<id>, the default hash_queue_depth of 1);
otherwise it ASSUMES the message was deferred just now (last attempt = now), which gives
the latest next-attempt time the settings allow; the earliest is "now". Both are said in
the output (mtime_source "file" or "assumed").
"""

from __future__ import annotations

import functools
import math
import re
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Sequence

from checks.config import postfix_argv
from checks.errors import CommandNotFound, InputError, PfdiagError
from checks.postfix.postqueue import (
    QUEUE_NAMES,
    ParseStats,
    QueuedMessage,
    parse_mailq,
    parse_postqueue_json,
)
from checks.postfix.retry import Forecast, RetrySettings, forecast, next_delay
from checks.targets import Target

TICK_MINUTES = 5
BUCKETS = 10
_PERMISSION = re.compile(r"permission denied|not authorized|authorized_mailq_users|not allowed", re.I)
_DOWN = re.compile(r"mail system is down|Queue report unavailable", re.I)
_BAD_OPTION = re.compile(r"invalid option|illegal option|usage:", re.I)


def _now(target: Target, now: float | None) -> float:
    """The moment the listing describes: a recording's own time, not today's."""
    if now is not None:
        return now
    return getattr(target, "recorded_at", None) or time.time()


@dataclass
class QueueRead:
    messages: list[QueuedMessage]
    source: str  # "postqueue -j" or "postqueue -p"
    argv: tuple[str, ...]
    stats: ParseStats
    taken_at: float
    notes: list[str] = field(default_factory=list)


def _explain_failure(argv: Sequence[str], stderr: str, stdout: str, rc: int) -> str:
    text = (stderr.strip() or stdout.strip()).splitlines()
    last = text[-1] if text else f"exit {rc}"
    if _PERMISSION.search(stderr):
        return (f"{' '.join(argv)}: you may not read the mail queue ({last}); run as root or add this "
                "user to authorized_mailq_users")  # fmt: skip
    if _DOWN.search(stderr):
        return f"{' '.join(argv)}: Postfix is not running ({last}); start it with `postfix start`"
    return f"{' '.join(argv)} failed (exit {rc}): {last}"


def read_queue(target: Target, config_dir: str | None = None, now: float | None = None) -> QueueRead:
    argv = postfix_argv("postqueue", config_dir, "-j")
    try:
        res = target.run(argv)
    except CommandNotFound:
        raise InputError("postqueue not found: is Postfix installed here?") from None
    notes: list[str] = []
    if res.returncode != 0 and _BAD_OPTION.search(res.stderr) and not _PERMISSION.search(res.stderr):
        notes.append("postqueue -j is not supported (Postfix < 3.1): read postqueue -p instead")
        argv = postfix_argv("postqueue", config_dir, "-p")
        try:
            res = target.run(argv)
        except CommandNotFound:
            raise InputError("postqueue not found: is Postfix installed here?") from None
        if res.returncode != 0:
            raise InputError(_explain_failure(argv, res.stderr, res.stdout, res.returncode))
        stats = ParseStats()
        msgs = list(parse_mailq(res.stdout, stats=stats))
        return QueueRead(msgs, "postqueue -p", tuple(argv), stats, _now(target, now), notes)
    if res.returncode != 0:
        raise InputError(_explain_failure(argv, res.stderr, res.stdout, res.returncode))
    stats = ParseStats()
    msgs = list(parse_postqueue_json(res.stdout, stats))
    if stats.malformed:
        notes.append(f"{stats.malformed} malformed line(s) in the postqueue -j output were skipped")
    return QueueRead(msgs, "postqueue -j", tuple(argv), stats, _now(target, now), notes)


# ------------------------------------------------------------------ counts and matrix


def counts(messages: Iterable[QueuedMessage]) -> dict[str, int]:
    """Messages per queue; every Postfix queue is present (0 when empty)."""
    c = Counter(m.queue_name for m in messages)
    out = {q: c.get(q, 0) for q in QUEUE_NAMES}
    out.update({q: n for q, n in c.items() if q not in out})  # e.g. "incoming/unknown" from mailq
    return out


def bucket_headings(buckets: int = BUCKETS, tick: int = TICK_MINUTES) -> list[str]:
    """qshape's column headings after T: 5 10 20 ... 1280 1280+ (maximum age, minutes)."""
    heads, t = [], tick
    for _ in range(buckets - 1):
        heads.append(str(t))
        t *= 2
    heads.append(f"{t // 2}+")
    return heads


def bucket_index(age_seconds: float, buckets: int = BUCKETS, tick: int = TICK_MINUTES) -> int:
    """0-based column of an age, as qshape's bucket() minus one."""
    m = age_seconds / (60 * tick)
    if m < 1:
        return 0
    return min(1 + int(math.log(m) / math.log(2)), buckets - 1)


def domain_of(address: str) -> str:
    """qshape's domain: lower-cased, after the last @, stray dots trimmed; <> is MAILER-DAEMON."""
    a = address.lower()
    if a in ("", "<>"):
        return "MAILER-DAEMON"
    a = a.rsplit("@", 1)[-1]
    a = re.sub(r"\.\.", ".", a).strip(".")
    return a or "MAILER-DAEMON"


@dataclass
class Matrix:
    headings: list[str]  # bucket headings (T is the total column, not listed here)
    rows: list[tuple[str, int, list[int]]]  # (domain, total, per bucket); TOTAL first
    by: str
    hidden: int = 0  # domains beyond `top`


def age_matrix(
    messages: Iterable[QueuedMessage], now: float, *, by: str = "recipient", top: int = 20,
    queues: Sequence[str] | None = None, buckets: int = BUCKETS, tick: int = TICK_MINUTES,
) -> Matrix:  # fmt: skip
    """qshape's table for the given queues (all when None)."""
    per: dict[str, list[int]] = {}
    total = [0] * buckets
    for m in messages:
        if queues is not None and m.queue_name not in queues:
            continue
        b = bucket_index(now - m.arrival_time, buckets, tick)
        for addr in ([m.sender] if by == "sender" else [r.address for r in m.recipients]):
            total[b] += 1
            per.setdefault(domain_of(addr), [0] * buckets)[b] += 1
    ranked = sorted(per.items(), key=lambda kv: (-sum(kv[1]), len(kv[0]), kv[0]))
    rows = [("TOTAL", sum(total), total)] + [(d, sum(c), c) for d, c in ranked[:top]]
    return Matrix(bucket_headings(buckets, tick), rows, by, max(0, len(ranked) - top))


# ------------------------------------------------------------------ grouping


@dataclass
class Group:
    cause_id: str
    domain: str
    recipients: int
    messages: set[str]
    example: str  # one reason text
    oldest_arrival: float


def group_deferred(messages: Iterable[QueuedMessage], cause_of: Callable[[str], str]) -> list[Group]:
    """Deferred recipients by (cause, destination domain). cause_of maps a reason text to a
    cause id (diagnose passes its classifier: checks does not import diagnose)."""
    groups: dict[tuple[str, str], Group] = {}
    for m in messages:
        if m.queue_name != "deferred":
            continue
        for r in m.recipients:
            cause = cause_of(r.delay_reason) if r.delay_reason else "no-reason"
            key = (cause, domain_of(r.address))
            g = groups.get(key)
            if g is None:
                g = groups[key] = Group(cause, key[1], 0, set(), r.delay_reason or "", m.arrival_time)
            g.recipients += 1
            g.messages.add(m.queue_id)
            g.oldest_arrival = min(g.oldest_arrival, m.arrival_time)
    return sorted(groups.values(), key=lambda g: (-g.recipients, g.cause_id, g.domain))


# ------------------------------------------------------------------ forecast


@dataclass
class MessageForecast:
    queue_id: str
    mtime_source: str  # "file": the queue file's mtime; "assumed": deferred just now
    next_earliest: float
    next_latest: float
    expires_at: float
    expires_latest: float
    forecast: Forecast


def queue_file_mtime(target: Target, queue_directory: str | None, m: QueuedMessage) -> float | None:
    """The deferred queue file's mtime (qmgr's "eligible again" time), when the target lets us stat it."""
    if not queue_directory or m.queue_name != "deferred":
        return None
    base = f"{queue_directory.rstrip('/')}/deferred"
    for path in (f"{base}/{m.queue_id[0]}/{m.queue_id}", f"{base}/{m.queue_id}"):
        try:
            return target.file_info(path).mtime
        except (PfdiagError, OSError, AttributeError):
            continue
    return None


def forecast_message(
    m: QueuedMessage, now: float, settings: RetrySettings, mtime: float | None = None
) -> MessageForecast:
    if mtime is None:
        # Assumption (documented): the last attempt ended now, so qmgr set mtime = now + delay.
        assumed = now + next_delay(now - m.arrival_time, settings)
        fc = _forecast(m.arrival_time, assumed, now, settings, m.null_sender, m.forced_expire)
        return MessageForecast(m.queue_id, "assumed", now, fc.next_attempt_latest, fc.expires_at,
                               fc.expires_at_latest, fc)  # fmt: skip
    fc = _forecast(m.arrival_time, mtime, now, settings, m.null_sender, m.forced_expire)
    return MessageForecast(m.queue_id, "file", fc.next_attempt_earliest, fc.next_attempt_latest,
                           fc.expires_at, fc.expires_at_latest, fc)  # fmt: skip


def _forecast(arrival: float, mtime: float, now: float, settings: RetrySettings, null_sender: bool,
              forced_expire: bool) -> Forecast:  # fmt: skip
    """qmgr's schedule does not depend on the clock, only on times relative to arrival: a queue
    of 10,000 messages has few distinct (mtime - arrival, now - arrival) pairs to the second,
    so each pair is computed once and shifted. Reports round to the second anyway."""
    base = _relative_forecast(round(mtime - arrival), round(now - arrival), settings, null_sender, forced_expire)
    shift = arrival

    def at(t: float | None) -> float | None:
        return None if t is None else t + shift

    return replace(base, next_attempt_earliest=base.next_attempt_earliest + shift,
                   next_attempt_latest=base.next_attempt_latest + shift, expires_at=base.expires_at + shift,
                   expires_at_earliest=base.expires_at_earliest + shift,
                   expires_at_latest=base.expires_at_latest + shift, lifetime_ends=base.lifetime_ends + shift,
                   last_attempt=at(base.last_attempt), warning_at=at(base.warning_at))  # fmt: skip


@functools.lru_cache(maxsize=65536)
def _relative_forecast(mtime_offset: float, now_offset: float, settings: RetrySettings, null_sender: bool,
                       forced_expire: bool) -> Forecast:  # fmt: skip
    # the timelines inside stay relative to an arrival at 0: nothing outside this module reads them
    return forecast(0.0, float(mtime_offset), float(now_offset), settings, null_sender=null_sender,
                    forced_expire=forced_expire, max_listed=1)