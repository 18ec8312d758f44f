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
from typing import Callable, Iterable, NamedTuple, Sequence

from checks.config import postfix_argv
from checks.errors import CommandNotFound, InputError, PfdiagError
from checks.postfix.postqueue import (
    QUEUE_NAMES,
    ParseStats,
    QueuedMessage,
    iter_postqueue_json,
    parse_mailq,
)
from checks.postfix.retry import Forecast, RetrySettings, _first_step, forecast, next_delay, next_scan
from checks.targets import Target

TICK_MINUTES = 5
BUCKETS = 10
_PERMISSION = re.compile(r"permission denied|not authorized|authorized_mailq_users|not allowed", re.I)
_DOWN = re.compile(r"mail system is down|Queue report unavailable", re.I)
_BAD_OPTION = re.compile(r"invalid option|illegal option|usage:", re.I)


def listing_time(target: Target, now: float | None = None) -> float:
    """The moment the listing describes: a recording's own time, not today's."""
    if now is not None:
        return now
    return target.recorded_at or time.time()


@dataclass
class QueueRead:
    messages: list[QueuedMessage]
    source: str  # "postqueue -j" or "postqueue -p"
    argv: tuple[str, ...]
    stats: ParseStats
    taken_at: float
    notes: list[str] = field(default_factory=list)


def _drop(m: QueuedMessage) -> None:
    pass


def _explain_failure(argv: Sequence[str], stderr: str, stdout: str, rc: int) -> str:
    text = (stderr.strip() or stdout.strip()).splitlines()
    last = text[-1] if text else f"exit {rc}"
    if _PERMISSION.search(stderr):
        return (f"{' '.join(argv)}: you may not read the mail queue ({last}); run as root or add this "
                "user to authorized_mailq_users")  # fmt: skip
    if _DOWN.search(stderr):
        return f"{' '.join(argv)}: Postfix is not running ({last}); start it with `postfix start`"
    return f"{' '.join(argv)} failed (exit {rc}): {last}"


def queue_answers(target: Target, config_dir: str | None = None, timeout: float = 20) -> bool:
    """Whether `postqueue -j` lists the queue here (Postfix's showq answers): its first line is
    enough, so a queue of a million messages is neither waited for nor held (the rest of the
    listing is not read; the command is stopped)."""
    with target.stream(postfix_argv("postqueue", config_dir, "-j"), timeout) as out:
        for _line in out:
            return True  # showq answered; closing the stream stops postqueue
        return out.result().ok


def read_queue(
    target: Target, config_dir: str | None = None, now: float | None = None,
    on_message: Callable[[QueuedMessage], None] | None = None, keep: bool = True,
) -> QueueRead:  # fmt: skip
    """The queue listing. on_message gets each message as soon as it is parsed: with a
    target that streams, while postqueue is still writing (10,000 messages: ~0.3 s of
    postqueue that the caller's own work overlaps). taken_at is when the listing started.
    keep=False: .messages stays empty, for a caller that aggregates with on_message (a big
    queue is then never held in memory: 100,000 messages are some 100 MB as objects)."""
    taken = listing_time(target, now)
    argv = postfix_argv("postqueue", config_dir, "-j")
    stats = ParseStats()
    msgs: list[QueuedMessage] = []
    put: Callable[[QueuedMessage], None] = msgs.append if keep else _drop
    notes: list[str] = []

    def take(m: QueuedMessage) -> None:
        put(m)
        if on_message is not None:
            on_message(m)

    def mailq() -> QueueRead:
        try:
            return _read_mailq(target, config_dir, taken, msgs, take, notes)
        except CommandNotFound:
            raise InputError("postqueue not found: is Postfix installed here?") from None

    try:
        with target.stream(argv) as out:
            for m in iter_postqueue_json(out, stats):
                take(m)
            res = out.result()
    except CommandNotFound:  # no postqueue -j here: a recording (or pasted input) that holds only postqueue -p
        return mailq()
    # an old postqueue rejects -j before it lists anything; records read mean a real failure
    if res.returncode != 0 and not stats.records and _BAD_OPTION.search(res.stderr) and not _PERMISSION.search(res.stderr):
        notes.append("postqueue -j is not supported (Postfix < 3.1): read postqueue -p instead")
        return mailq()
    if res.returncode != 0:
        said = res.stdout or "\n".join(text for _, _, text in stats.examples)  # a stream's lines were parsed
        raise InputError(_explain_failure(argv, res.stderr, said, res.returncode))
    if not stats.records and not target.live:
        # a recording whose -j output is empty: its -p listing, when it has one, is the truth
        try:
            other = _read_mailq(target, config_dir, taken, msgs, take, notes)
        except CommandNotFound:
            other = None
        if other is not None and other.stats.records:
            other.notes.insert(0, f"the recorded postqueue -j output is empty but postqueue -p lists "
                                  f"{other.stats.records} message(s): read postqueue -p")
            return other
    if stats.malformed:
        notes.append(f"{stats.malformed} malformed line(s) in the postqueue -j output were skipped")
    return QueueRead(msgs, "postqueue -j", tuple(argv), stats, taken, notes)


def _read_mailq(target: Target, config_dir: str | None, taken: float, msgs: list[QueuedMessage],
                take: Callable[[QueuedMessage], None], notes: list[str]) -> QueueRead:
    """postqueue -p, its yearless arrival times dated against the listing's own time (a recording's,
    not today's); CommandNotFound when the target has no such command."""
    argv = postfix_argv("postqueue", config_dir, "-p")
    res = target.run(argv)
    if res.returncode != 0:
        raise InputError(_explain_failure(argv, res.stderr, res.stdout, res.returncode))
    stats = ParseStats()
    for m in parse_mailq(res.stdout, now=taken, stats=stats):
        take(m)
    return QueueRead(msgs, "postqueue -p", tuple(argv), stats, taken, notes)


# ------------------------------------------------------------------ counts and matrix


def counts(messages: Iterable[QueuedMessage]) -> dict[str, int]:
    """Messages per queue; every Postfix queue is present (0 when empty)."""
    return counts_of(Counter(m.queue_name for m in messages))


def counts_of(c: Counter[str] | dict[str, int]) -> dict[str, int]:
    """counts() from a tally of queue names (in the order they were first seen)."""
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
    return min(1 + int(math.log(m) / _LN2), buckets - 1)


_LN2 = math.log(2)  # the very float math.log(2) gives each time: the same buckets


def domain_of(address: str) -> str:
    """qshape's domain: lower-cased, after the last @, stray dots trimmed; <> is MAILER-DAEMON."""
    if address in ("", "<>"):
        return "MAILER-DAEMON"
    tail = address.rpartition("@")[2]
    d = _DOMAINS.get(tail)
    if d is None:
        if len(_DOMAINS) >= 65536:  # a queue has far fewer destinations; a pathological one must not grow us
            _DOMAINS.clear()
        d = _DOMAINS[tail] = tail.lower().replace("..", ".").strip(".") or "MAILER-DAEMON"
    return d


_DOMAINS: dict[str, str] = {}  # the part after the last @ -> qshape's domain: few distinct ones


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
    tally = AgeTally(now, by=by, queues=queues, buckets=buckets, tick=tick)
    for m in messages:
        tally.add(m)
    return tally.matrix(top)


class AgeTally:
    """age_matrix() one message at a time (as a streamed listing arrives)."""

    def __init__(self, now: float, *, by: str = "recipient", queues: Sequence[str] | None = None,
                 buckets: int = BUCKETS, tick: int = TICK_MINUTES) -> None:  # fmt: skip
        self.now, self.by, self.queues, self.buckets, self.tick = now, by, queues, buckets, tick
        self.per: dict[str, list[int]] = {}
        self.total = [0] * buckets

    def add(self, m: QueuedMessage, domains: Sequence[str] | None = None) -> None:
        """domains: the recipients' domain_of(), when the caller has them already."""
        if self.queues is not None and m.queue_name not in self.queues:
            return
        b = bucket_index(self.now - m.arrival_time, self.buckets, self.tick)
        if self.by == "sender":
            domains = [domain_of(m.sender)]
        elif domains is None:
            domains = [domain_of(r.address) for r in m.recipients]
        self.total[b] += len(domains)
        per = self.per
        for d in domains:
            row = per.get(d)
            if row is None:
                row = per[d] = [0] * self.buckets
            row[b] += 1

    def matrix(self, top: int = 20) -> Matrix:
        ranked = sorted(self.per.items(), key=lambda kv: (-sum(kv[1]), len(kv[0]), kv[0]))
        total = list(self.total)
        rows = [("TOTAL", sum(total), total)] + [(d, sum(c), c) for d, c in ranked[:top]]
        return Matrix(bucket_headings(self.buckets, self.tick), rows, self.by, max(0, len(ranked) - top))


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
    tally = GroupTally(cause_of)
    for m in messages:
        tally.add(m)
    return tally.groups()


class GroupTally:
    """group_deferred() one message at a time. Each distinct reason text is classified
    once: a stuck queue repeats a handful of reasons thousands of times."""

    def __init__(self, cause_of: Callable[[str], str]) -> None:
        self._cause_of = cause_of
        self._causes: dict[str, str] = {}
        self._groups: dict[tuple[str, str], Group] = {}

    def cause(self, reason: str | None) -> str | None:
        """The cause id of one reason text (None for no reason), memoised."""
        if not reason:
            return None
        c = self._causes.get(reason)
        if c is None:
            if len(self._causes) >= 65536:  # reasons carry hosts and ids; bound the memo
                self._causes.clear()
            c = self._causes[reason] = self._cause_of(reason)
        return c

    def add(self, m: QueuedMessage, domains: Sequence[str] | None = None) -> None:
        """domains: the recipients' domain_of(), when the caller has them already."""
        if m.queue_name != "deferred":
            return
        groups = self._groups
        if domains is None:
            domains = [domain_of(r.address) for r in m.recipients]
        for r, domain in zip(m.recipients, domains):
            key = (self.cause(r.delay_reason) or "no-reason", domain)
            g = groups.get(key)
            if g is None:
                g = groups[key] = Group(key[0], key[1], 0, set(), r.delay_reason or "", m.arrival_time)
            g.recipients += 1
            g.messages.add(m.queue_id)
            if m.arrival_time < g.oldest_arrival:
                g.oldest_arrival = m.arrival_time

    def groups(self) -> list[Group]:
        return sorted(self._groups.values(), key=lambda g: (-g.recipients, g.cause_id, g.domain))


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
    """The deferred queue file's mtime (qmgr's "eligible again" time), when the target lets us
    stat it. One message: a stat; QueueFiles for a whole listing."""
    if not queue_directory or m.queue_name != "deferred":
        return None
    return _stat_mtime(target.file_info, f"{queue_directory.rstrip('/')}/deferred", m.queue_id)


def _stat_mtime(info: Callable[[str], object], base: str, qid: str) -> float | None:
    for path in (f"{base}/{qid[0]}/{qid}", f"{base}/{qid}"):  # hash_queue_depth 1 (the default), or none
        try:
            return info(path).mtime  # type: ignore[attr-defined]
        except (PfdiagError, OSError, AttributeError):
            continue
    return None


class QueueFiles:
    """queue_file_mtime() for many messages: each hash directory is listed once (with the
    files' times), not one stat per message: over SSH that is 16 round trips instead of 10,000."""

    def __init__(self, target: Target, queue_directory: str | None) -> None:
        self._info = target.file_info
        self._list = target.list_dir
        self._base = f"{queue_directory.rstrip('/')}/deferred" if queue_directory else None
        self._dirs: dict[str, dict[str, float] | None] = {}

    def _listing(self, directory: str) -> dict[str, float] | None:
        if directory not in self._dirs:
            try:
                self._dirs[directory] = {f.path.rsplit("/", 1)[-1]: f.mtime for f in self._list(directory)}
            except (PfdiagError, OSError, AttributeError):
                self._dirs[directory] = None
        return self._dirs[directory]

    def mtime(self, m: QueuedMessage) -> float | None:
        if self._base is None or m.queue_name != "deferred":
            return None
        base, qid = self._base, m.queue_id
        listing = self._listing(f"{base}/{qid[0]}")  # the default hash_queue_depth of 1
        if listing is not None:
            if qid in listing:
                return listing[qid]
        elif self._listing(base) is None:  # neither directory can be read (a snapshot without queue files):
            return None  # no stat of a file in them would do better, and 10,000 failing ones cost time
        return _stat_mtime(self._info, base, qid)  # written since the listing, or another layout


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


# Distinct (next due, now) offsets to arrival memoised: a burst of mail has few (a 10,000-message
# fill over SMTP: some hundreds), a queue built up over days one per message, where a memo only
# costs memory (65,536 Forecasts with their timelines were 50 MB; 16,384 are some 13 MB).
FORECASTS_MEMO = 16384


class ForecastRow(NamedTuple):
    """forecast_message()'s numbers, absolute and unrounded, without the timelines."""

    mtime_source: str
    next_earliest: float
    next_latest: float
    expires_at: float
    expires_latest: float
    lifetime_ends: float
    remaining_attempts: tuple[int, int]
    overdue: bool
    expiring: bool


class Forecaster:
    """forecast_message() for the many messages of one listing, as ForecastRow: the same
    schedule arithmetic, memoised per (times relative to arrival, sender kind) without
    hashing the settings or copying a Forecast per message."""

    def __init__(self, now: float, settings: RetrySettings) -> None:
        self.now, self.settings = now, settings
        self._memo: dict[tuple[float, float, bool, bool], _Relative] = {}
        self._checked = False  # forecast() accepted these settings (settings.check()): the steady path may run

    def _relative(self, key: tuple[float, float, bool, bool]) -> _Relative:
        """_relative_forecast(*key)'s numbers for a row. Once the backoff has stopped growing (a
        message that has waited longer than maximal_backoff_time: nearly all of a queue that
        has waited for hours or days, where each message has offsets of its own and a memo
        does not help) computed as forecast() and timeline() compute them there, on the same
        floats in the same order (_steady_relative); otherwise forecast() itself."""
        mtime_offset, now_offset, null_sender, forced_expire = key
        if self._checked:
            got = _steady_relative(float(mtime_offset), float(now_offset), self.settings, null_sender, forced_expire)
            if got is not None:
                return got
        f = _relative_forecast(mtime_offset, now_offset, self.settings, null_sender, forced_expire)
        self._checked = True
        return (f.next_attempt_earliest, f.next_attempt_latest, f.expires_at, f.expires_at_latest, f.lifetime_ends,
                f.remaining_attempts, f.overdue, f.expiring)  # fmt: skip

    def next_earliest(self, m: QueuedMessage, mtime: float | None = None) -> float:
        """row(m, mtime).next_earliest without the schedule: the same arithmetic (forecast()'s
        max(mtime, now), on the offsets to arrival rounded as the memo keys are)."""
        if mtime is None:
            return self.now
        a = m.arrival_time
        return max(float(round(mtime - a)), float(round(self.now - a))) + a

    def expiry_floor(self, m: QueuedMessage) -> float | None:
        """A lower bound of row(m, ...).expires_at whatever the mtime: the attempt that returns
        the mail ends at or after arrival + its lifetime. None for a forced expiry (then the
        next attempt returns it, maybe earlier)."""
        if m.forced_expire:
            return None
        return m.arrival_time + self.settings.lifetime(m.null_sender)

    def row(self, m: QueuedMessage, mtime: float | None = None) -> ForecastRow:
        now, a = self.now, m.arrival_time
        due = now + next_delay(now - a, self.settings) if mtime is None else mtime
        key = (round(due - a), round(now - a), m.null_sender, m.forced_expire)
        base = self._memo.get(key)
        if base is None:
            if len(self._memo) >= FORECASTS_MEMO:  # as the lru_cache below: bounded whatever the queue size
                self._memo.clear()
            base = self._memo[key] = self._relative(key)
        next_earliest, next_latest, expires, expires_latest, lifetime_ends, remaining, overdue, expiring = base
        return ForecastRow("assumed" if mtime is None else "file", now if mtime is None else next_earliest + a,
                           next_latest + a, expires + a, expires_latest + a, lifetime_ends + a, remaining, overdue,
                           expiring)  # fmt: skip


# A row's numbers relative to an arrival at 0: next attempt (earliest, latest), expiry (estimate,
# latest), lifetime end, remaining attempts (fewest, most), overdue, expiring.
_Relative = tuple[float, float, float, float, float, tuple[int, int], bool, bool]


def _steady_end(at: float, lag: float, settings: RetrySettings, lifetime: float, forced_expire: bool,
                steady: float) -> tuple[float, int] | None:  # fmt: skip
    """timeline(settings, 0.0, first_attempt=at, lag=...)'s (expires_at, attempt_count) with no
    attempt duration, when its first attempt already backs off by the steady (largest) delay:
    then timeline() leaves its loop after that attempt and computes the rest; these are its
    steps. lag: what _pickup adds (0.0 for "none", queue_run_delay for "max"). None when the
    backoff still grows at `at` (timeline steps through those attempts: ask it)."""
    ends = at + 0.0
    expire_at = 0.0 + lifetime
    if forced_expire or ends >= expire_at:
        return ends, 1
    delay = next_delay(ends - 0.0, settings)
    if delay != steady:
        return None
    next_at = (ends + delay) + lag
    period = next_at - at
    last_step = _first_step(at, period, 0.0, expire_at)
    return at + last_step * period + 0.0, 1 + last_step


def _steady_relative(mtime: float, now: float, settings: RetrySettings, null_sender: bool,
                     forced_expire: bool) -> _Relative | None:  # fmt: skip
    """forecast(0.0, mtime, now, settings, ...)'s numbers of a row, step for step as forecast()
    computes them, when both of its timelines start in the steady backoff (_steady_end);
    else None. The settings must have passed settings.check() (forecast() checks them)."""
    qrd = settings.queue_run_delay
    earliest, latest, overdue = next_scan(mtime, now, qrd)
    lifetime = settings.lifetime(null_sender)
    steady = max(settings.minimal_backoff_time, settings.maximal_backoff_time)
    early = _steady_end(earliest, 0.0, settings, lifetime, forced_expire, steady)
    if early is None:
        return None
    late = _steady_end(latest, qrd, settings, lifetime, forced_expire, steady)
    if late is None:
        return None
    lifetime_ends = 0.0 + lifetime
    expiring = forced_expire or earliest + 0.0 >= lifetime_ends
    expires_latest = latest + 0.0 if expiring else max(latest, lifetime_ends + steady + qrd) + 0.0
    return earliest, latest, early[0], expires_latest, lifetime_ends, (late[1], early[1]), overdue, expiring


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


@functools.lru_cache(maxsize=FORECASTS_MEMO)
def _relative_forecast(mtime_offset: float, now_offset: float, settings: RetrySettings, null_sender: bool,
                       forced_expire: bool) -> Forecast:  # fmt: skip
    # the timelines inside stay relative to an arrival at 0: nothing outside this module reads them
    return forecast(0.0, float(mtime_offset), float(now_offset), settings, null_sender=null_sender,
                    forced_expire=forced_expire, max_listed=1)