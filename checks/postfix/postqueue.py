"""Postfix queue listings -> QueuedMessage records. Pure, streaming; bad input is counted.

`postqueue -j` (Postfix 3.1+, src/postqueue/showq_json.c): JSON Lines, one object per
queue file. Members: queue_name, queue_id, arrival_time, message_size, forced_expire
(3.5+; one source snapshot spells it force_expired, both are read), sender, recipients[]
with address, delay_reason, orig_address (3.11+), bounce_reason (3.11+) and the
undocumented other_reason. A recipient may have no reason. Unknown members are ignored,
as postqueue(1) asks.

`postqueue -p` / `mailq` (src/postqueue/showq_compat.c, src/showq/showq.c before 3.1):

    -Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------     "%-11s %7ld %20.20s %s"
    1457084D84C     3414 Fri Jun 23 13:39:42  sender@example.com           long ids: "%-17s %8ld %19.19s %s"
    (delivery temporarily suspended: connect to ...: Connection timed out)
                                             rcpt@example.com

    -- 1248 Kbytes in 12 Requests.

A mark follows the id: "*" active, "!" hold, "#" forced to expire (3.5+, after * or !).
A "(reason)" line is printed only when it changes from the previous recipient's, right-
aligned to column 78 (so long ones start at column 0); "(reason unavailable)" means the
following recipients have none. The arrival time has no year. Lines are classified by
content, not by column, so listings whose indentation a forum or mailer collapsed, and
ids longer than the column (12-hex-digit inodes push the size right), still parse.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, tzinfo

from checks.postfix.text import text_lines as _lines

__all__ = [
    "QUEUE_ID_RE",
    "QUEUE_NAMES",
    "UNKNOWN_QUEUE",
    "ParseStats",
    "QueueListing",
    "QueuedMessage",
    "QueuedRecipient",
    "is_null_sender",
    "is_valid_queue_id",
    "iter_postqueue_json",
    "parse_mailq",
    "parse_postqueue_json",
]

# Short ids (src/global/mail_queue.h): 5 hex digits of microseconds + the inode number in
# hex ("%05X%lX"), so 6 to 21 upper-case hex digits. Long ids (enable_long_queue_ids):
# seconds in base 52 (6+ digits) + exactly 4 base-52 digits of microseconds + "z" + the
# inode in base 51, all in the "safe" alphabet 0-9 and letters without vowels
# (src/global/safe_ultostr.c); base 51 drops the last letter, z, which makes the final z
# the separator. Lengths are bounded by 64-bit values: 12 + 4 + 1 + 12.
_SAFE52 = "0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z"
_SAFE51 = "0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-y"
QUEUE_ID_RE = re.compile(rf"[0-9A-F]{{6,21}}|[{_SAFE52}]{{10,16}}z[{_SAFE51}]{{1,12}}")
_QUEUE_ID_MATCH = QUEUE_ID_RE.fullmatch

QUEUE_NAMES = ("maildrop", "incoming", "active", "deferred", "hold")
# mailq marks only active (*) and hold (!). An unmarked entry with a reason shown is taken
# as deferred (only a delivery attempt writes reasons; a released hold also returns to
# deferred with its old reason). An unmarked entry without reasons may be in maildrop,
# incoming or deferred (a deferred recipient can lack a reason): this value says so
# rather than guess.
UNKNOWN_QUEUE = "incoming/unknown"

_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
_WEEKDAYS = {d: i for i, d in enumerate(("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"))}

# asctime() gives "Mon Feb  4 13:35:18"; "??" was printed by old showq for a missing time.
_ENTRY = re.compile(
    r"\s*([0-9A-Za-z]+)([*!#]{0,2})\s+(\d+)\s+"
    r"(?:([A-Z][a-z]{2}) ([A-Z][a-z]{2}) {1,2}(\d{1,2}) (\d\d):(\d\d):(\d\d)|\?\?)"
    r"(?:\s+(.*?))?\s*",
    re.ASCII,
)
_TRAILER = re.compile(r"\s*--\s*(\d+)\s+Kbytes?\s+in\s+(\d+)\s+Requests?\.?\s*", re.ASCII)
_TOOL_MESSAGE = re.compile(r"\s*(?:\S*/)?(?:postqueue|postfix|sendmail|mailq|postdrop|postsuper)(?:\[\d+\])?: (?:warning|fatal|error|panic): ")
_MAILDROP_SENDER = re.compile(r"\(maildrop queue, sender UID \d+\)")
_NULL_SENDERS = frozenset({"", "<>", "MAILER-DAEMON"})


def is_valid_queue_id(s: object) -> bool:
    """True for a Postfix queue id, short or long, and nothing else: safe to hand to
    postsuper/postcat as one argv element (no whitespace, no shell metacharacters)."""
    return isinstance(s, str) and QUEUE_ID_RE.fullmatch(s) is not None


def is_null_sender(sender: str, empty_address_recipient: str = "MAILER-DAEMON") -> bool:
    """Whether a listed sender is the null sender <>. showq prints $empty_address_recipient
    (default MAILER-DAEMON) for it, so a real unqualified MAILER-DAEMON sender looks the same."""
    return sender in ("", "<>") or sender == empty_address_recipient


@dataclass(frozen=True, slots=True)
class QueuedRecipient:
    address: str
    delay_reason: str | None = None
    orig_address: str | None = None  # postqueue -j, 3.11+
    bounce_reason: str | None = None  # postqueue -j, 3.11+
    other_reason: str | None = None  # postqueue -j, undocumented


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    queue_id: str
    queue_name: str  # a QUEUE_NAMES member, or UNKNOWN_QUEUE for unmarked mailq entries
    arrival_time: float  # epoch seconds; 0.0 when the listing did not say (as Postfix uses 0)
    size: int
    sender: str
    recipients: tuple[QueuedRecipient, ...]
    forced_expire: bool = False

    @property
    def null_sender(self) -> bool:
        """Null-sender mail (bounces) expires after bounce_queue_lifetime instead."""
        return is_null_sender(self.sender)

    @property
    def reasons(self) -> tuple[str, ...]:
        """The distinct delay reasons, in recipient order."""
        return tuple(dict.fromkeys(r.delay_reason for r in self.recipients if r.delay_reason))


@dataclass
class ParseStats:
    """What a listing held besides good records: counted, with a few examples."""

    lines: int = 0
    records: int = 0
    malformed: int = 0
    examples: list[tuple[int, str, str]] = field(default_factory=list)  # (line no, why, text)
    warnings: list[str] = field(default_factory=list)  # "postqueue: warning: ..." lines
    empty_queue: bool = False  # "Mail queue is empty" seen
    trailer_kbytes: int | None = None  # from "-- N Kbytes in M Requests."
    trailer_requests: int | None = None
    long_ids: bool = False  # the long-id heading was seen
    weekday_mismatches: int = 0  # inferred year gives another weekday than the listing's
    wrapped_reasons: int = 0  # reason lines joined from several physical lines

    def bad(self, lineno: int, why: str, text: str) -> None:
        self.malformed += 1
        if len(self.examples) < 5:
            self.examples.append((lineno, why, text[:200]))

    @property
    def consistent(self) -> bool | None:
        """Whether the trailer's request count matches the records read (None: no trailer)."""
        if self.trailer_requests is None:
            return None
        return self.trailer_requests == self.records


class QueueListing(Iterator[QueuedMessage]):
    """An iterator of QueuedMessage that keeps its ParseStats at hand (.stats, .malformed)."""

    def __init__(self, records: Iterator[QueuedMessage], stats: ParseStats) -> None:
        self._records = records
        self.stats = stats

    def __iter__(self) -> QueueListing:
        return self

    def __next__(self) -> QueuedMessage:
        return next(self._records)

    @property
    def malformed(self) -> int:
        return self.stats.malformed

    @property
    def examples(self) -> list[tuple[int, str, str]]:
        return self.stats.examples


# ---------------------------------------------------------------- postqueue -j

# The parser's constructors of the two frozen dataclasses: the same objects (==, hash, frozen)
# as QueuedRecipient(...) / QueuedMessage(...), each slot set through its descriptor instead of
# the generated __init__'s object.__setattr__ per field: 0.66 -> 0.36 us a recipient and 1.23 ->
# 0.47 us a message, once per queue file (tests/unit/test_postqueue_json_fast.py compares them).
_new = object.__new__
_R_SET = tuple(getattr(QueuedRecipient, f).__set__ for f in QueuedRecipient.__slots__)
_M_SET = tuple(getattr(QueuedMessage, f).__set__ for f in QueuedMessage.__slots__)
assert QueuedRecipient.__slots__ == ("address", "delay_reason", "orig_address", "bounce_reason", "other_reason")
assert QueuedMessage.__slots__ == ("queue_id", "queue_name", "arrival_time", "size", "sender", "recipients",
                                   "forced_expire")  # fmt: skip


def _recipient(address: str, delay_reason: str | None, orig_address: str | None = None,
               bounce_reason: str | None = None, other_reason: str | None = None,
               _set: tuple[Callable[[object, object], None], ...] = _R_SET) -> QueuedRecipient:  # fmt: skip
    """QueuedRecipient(address, delay_reason, ...), built faster (see above)."""
    r: QueuedRecipient = _new(QueuedRecipient)
    _set[0](r, address)
    _set[1](r, delay_reason)
    _set[2](r, orig_address)
    _set[3](r, bounce_reason)
    _set[4](r, other_reason)
    return r


def _message(queue_id: str, queue_name: str, arrival_time: float, size: int, sender: str,
             recipients: tuple[QueuedRecipient, ...], forced_expire: bool,
             _set: tuple[Callable[[object, object], None], ...] = _M_SET) -> QueuedMessage:  # fmt: skip
    """QueuedMessage(...) with every field, built faster (see above)."""
    m: QueuedMessage = _new(QueuedMessage)
    _set[0](m, queue_id)
    _set[1](m, queue_name)
    _set[2](m, arrival_time)
    _set[3](m, size)
    _set[4](m, sender)
    _set[5](m, recipients)
    _set[6](m, forced_expire)
    return m



_INF = float("inf")
_FLOAT_INT = 2**1024 - 2**970  # the smallest int that float() cannot convert (rounds up to 2**1024: OverflowError)


def _opt_str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _json_record(obj: object, _r: Callable[..., QueuedRecipient] = _recipient,
                 _m: tuple[Callable[[object, object], None], ...] = _M_SET) -> QueuedMessage | str:  # fmt: skip
    """One decoded object -> a record, or the reason it is not one. Hot (once per queue
    file): the optional members are read inline rather than through _opt_str, and the
    types are compared with type() is, not isinstance(): obj is what json decodes, whose
    values are exactly dict, list, str, int, float, bool or None (a bool is not an int here)."""
    if type(obj) is not dict:
        return "not a JSON object"
    get = obj.get
    qid = get("queue_id")
    if type(qid) is not str or _QUEUE_ID_MATCH(qid) is None:
        return "missing or invalid queue_id"
    rcpts = get("recipients", [])
    if type(rcpts) is not list:
        return "recipients is not a list"
    recipients = []
    for r in rcpts:
        if type(r) is not dict:
            return "recipient without an address"
        address = r.get("address")
        if type(address) is not str:
            return "recipient without an address"
        delay = r.get("delay_reason")
        if len(r) == 2 and delay is not None:  # the common shape: address and delay_reason only
            recipients.append(_r(address, delay if type(delay) is str and delay else None))
            continue
        recipients.append(_r(address, _opt_str(delay), _opt_str(r.get("orig_address")),
                             _opt_str(r.get("bounce_reason")), _opt_str(r.get("other_reason"))))  # fmt: skip
    arrival = get("arrival_time", 0)
    size = get("message_size", 0)
    sender = get("sender", "")
    t = type(arrival)
    if t is not int and t is not float:
        return "arrival_time is not a number"
    if not (-_FLOAT_INT < arrival < _FLOAT_INT if t is int else -_INF < arrival < _INF):
        return "arrival_time is out of range"  # an int float() cannot convert; NaN, Infinity, 1e400
    if type(size) is not int:
        return "message_size is not an integer"
    if type(sender) is not str:
        return "sender is not a string"
    queue_name = get("queue_name")
    expire = obj["forced_expire"] if "forced_expire" in obj else get("force_expired", False)
    m: QueuedMessage = _new(QueuedMessage)  # _message(...), inline
    _m[0](m, qid)
    _m[1](m, queue_name if type(queue_name) is str and queue_name else UNKNOWN_QUEUE)
    _m[2](m, float(arrival))
    _m[3](m, size)
    _m[4](m, sender)
    _m[5](m, tuple(recipients))
    _m[6](m, expire is True or (type(expire) is int and expire != 0))
    return m


def _iter_json(lines: Iterable[str], stats: ParseStats) -> Iterator[QueuedMessage]:
    loads, scan = json.loads, _SCAN_ONCE
    for lineno, line in enumerate(lines, 1):
        stats.lines += 1
        if not line or line.isspace():
            continue
        try:
            # postqueue's lines start with "{": the C scanner directly, without json.loads'
            # three Python-level calls; anything else (leading blanks, trailing data) through loads
            try:
                obj, end = scan(line, 0)
                if end != len(line):
                    obj = loads(line)
            except StopIteration:  # nothing JSON at column 0
                obj = loads(line)
        except (ValueError, RecursionError):
            if _TOOL_MESSAGE.match(line):
                stats.warnings.append(line.strip())
            else:
                stats.bad(lineno, "not JSON", line)
            continue
        rec = _json_record(obj)
        if isinstance(rec, str):
            stats.bad(lineno, rec, line)
            continue
        stats.records += 1
        yield rec


def iter_postqueue_json(lines: Iterable[str], stats: ParseStats) -> Iterator[QueuedMessage]:
    """parse_postqueue_json() for lines already decoded and without line ends (what
    Target.stream yields), one layer less per line; malformed lines go to stats."""
    return _iter_json(lines, stats)


# json.loads' own decoder settings (the defaults); scan_once is set in JSONDecoder.__init__, unknown to the stubs
_SCAN_ONCE: Callable[[str, int], tuple[object, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def parse_postqueue_json(
    text_or_lines: str | bytes | Iterable[str | bytes], stats: ParseStats | None = None
) -> QueueListing:
    """`postqueue -j` output (a string, bytes, or an iterable of lines such as an open
    file) -> QueueListing of QueuedMessage, lazily. Malformed lines go to .stats."""
    stats = stats if stats is not None else ParseStats()
    return QueueListing(_iter_json(_lines(text_or_lines), stats), stats)


# ---------------------------------------------------------------- postqueue -p / mailq


class _ArrivalClock:
    """Yearless "Mon Feb 24 13:35:18" -> epoch seconds: the most recent such date that is
    not in the future relative to `now`. `slack` (default one day) tolerates a clock that
    differs between the host that listed the queue and the caller's `now`: without it, a
    message queued a minute "after" now would be dated a whole year back."""

    def __init__(self, now: float, tz: tzinfo | None, slack: float) -> None:
        self.now, self.tz, self.slack = now, tz, slack
        self._cache: dict[tuple[int, int, int, int, int], tuple[float, int]] = {}

    def _epoch(self, y: int, mo: int, d: int, h: int, mi: int, s: int) -> float:
        if self.tz is not None:
            return datetime(y, mo, d, h, mi, s, tzinfo=self.tz).timestamp()
        return time.mktime((y, mo, d, h, mi, s, 0, 0, -1))

    def resolve(self, mo: int, d: int, h: int, mi: int, s: int) -> tuple[float, int] | None:
        key = (mo, d, h, mi, s)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        limit = self.now + self.slack
        ref = datetime.fromtimestamp(self.now, self.tz) if self.tz else datetime.fromtimestamp(self.now)
        # Feb 29 can be up to 8 years back (1900, 2100 are not leap years): try that far.
        for year in range(ref.year + 1, ref.year - 9, -1):
            try:
                ts = self._epoch(year, mo, d, h, mi, s)
                weekday = datetime(year, mo, d).weekday()
            except (ValueError, OverflowError, OSError):
                continue
            if ts <= limit:
                self._cache[key] = (ts, weekday)
                return ts, weekday
        return None


@dataclass(slots=True)
class _Entry:
    """A mailq entry while its recipient lines are read."""

    queue_id: str
    queue_name: str | None  # None until the end: "deferred" if a reason was shown
    arrival: float
    size: int
    sender: str
    forced_expire: bool
    recipients: list[QueuedRecipient] = field(default_factory=list)
    seen_reason: bool = False

    def record(self) -> QueuedMessage:
        queue = self.queue_name or ("deferred" if self.seen_reason else UNKNOWN_QUEUE)
        return QueuedMessage(
            self.queue_id, queue, self.arrival, self.size, self.sender, tuple(self.recipients), self.forced_expire
        )


def _iter_mailq(lines: Iterable[str], stats: ParseStats, clock: _ArrivalClock) -> Iterator[QueuedMessage]:
    entry: _Entry | None = None  # the message being read
    reason: str | None = None  # applies to following recipients until it changes
    open_reason: list[str] | None = None  # a "(reason" whose ")" has not come yet
    open_at = 0

    def finish() -> QueuedMessage | None:
        nonlocal entry
        done, entry = entry, None
        if done is None:
            return None
        stats.records += 1
        return done.record()

    def close_reason(complete: bool) -> None:
        nonlocal open_reason, reason
        if open_reason is None:
            return
        text = " ".join(open_reason)
        if complete:
            text = text[:-1]
        else:
            stats.bad(open_at, "reason without its closing parenthesis", "(" + text)
        reason = None if text == "reason unavailable" else text
        if entry is not None:
            entry.seen_reason = entry.seen_reason or reason is not None
        stats.wrapped_reasons += len(open_reason) > 1
        open_reason = None

    for lineno, raw in enumerate(lines, 1):
        stats.lines += 1
        line = raw.strip()
        if open_reason is not None:
            # A continuation of a wrapped reason starts at column 0 and is prose (or ends
            # the reason); an indented single word is the next recipient instead.
            if line and not raw[:1].isspace() and (" " in line or line.endswith(")")) and not _ENTRY.fullmatch(raw):
                open_reason.append(line)
                if line.endswith(")"):
                    close_reason(True)
                continue
            close_reason(False)
        if not line:
            rec = finish()
            if rec is not None:
                yield rec
            reason = None
            continue
        if line.startswith("-") and ("Queue ID" in line or "Q-ID" in line):
            stats.long_ids = stats.long_ids or line.startswith("----Queue ID")
            continue
        m = _TRAILER.fullmatch(line)
        if m is not None:
            rec = finish()
            if rec is not None:
                yield rec
            stats.trailer_kbytes, stats.trailer_requests = int(m[1]), int(m[2])
            continue
        if line == "Mail queue is empty":
            stats.empty_queue = True
            continue
        if _TOOL_MESSAGE.match(line):
            stats.warnings.append(line)
            continue
        m = _ENTRY.fullmatch(raw)
        if m is not None:
            qid, marks = m[1], m[2]
            if not is_valid_queue_id(qid):
                stats.bad(lineno, "entry with an invalid queue id", raw)
                rec = finish()
                if rec is not None:
                    yield rec
                continue
            rec = finish()
            if rec is not None:
                yield rec
            reason = None
            arrival = 0.0
            if m[4] is not None:
                month = _MONTHS.get(m[5])
                resolved = None
                if month is not None:
                    resolved = clock.resolve(month, int(m[6]), int(m[7]), int(m[8]), int(m[9]))
                if resolved is None:
                    stats.bad(lineno, "unreadable arrival time", raw)
                else:
                    arrival, weekday = resolved
                    if _WEEKDAYS.get(m[4]) != weekday:
                        stats.weekday_mismatches += 1
            sender = m[10] or ""
            queue_name = "active" if "*" in marks else "hold" if "!" in marks else None
            if _MAILDROP_SENDER.fullmatch(sender):
                sender, queue_name = "", "maildrop"
            if sender.startswith("<") and sender.endswith(">"):
                sender = sender[1:-1]
            entry = _Entry(qid, queue_name, arrival, int(m[3]), sender, "#" in marks)
            continue
        if line.startswith("("):
            if entry is None:
                stats.bad(lineno, "reason outside a queue entry", raw)
                continue
            if line.endswith(")"):
                reason = line[1:-1]
                if reason == "reason unavailable":
                    reason = None
                else:
                    entry.seen_reason = True
            else:
                open_reason, open_at = [line[1:]], lineno
            continue
        if entry is None:
            stats.bad(lineno, "line outside a queue entry", raw)
            continue
        address = line[1:-1] if line.startswith("<") and line.endswith(">") else line
        entry.recipients.append(QueuedRecipient(address, reason))
    if open_reason is not None:
        close_reason(False)
    rec = finish()
    if rec is not None:
        yield rec


def parse_mailq(
    text_or_lines: str | bytes | Iterable[str | bytes],
    now: float | None = None,
    *,
    tz: tzinfo | None = None,
    stats: ParseStats | None = None,
    future_slack: float = 86400.0,
) -> QueueListing:
    """`postqueue -p` / `mailq` output -> QueueListing of QueuedMessage, lazily.

    now: when the listing was taken (default: the current time); the yearless arrival
    times are put in the most recent year that does not make them later than now (plus
    `future_slack`). tz: the listing host's zone (None = this machine's local time).
    queue_name: "active" for *, "hold" for !, "maildrop" for unreadable maildrop files,
    "deferred" when a reason is shown, else UNKNOWN_QUEUE."""
    stats = stats if stats is not None else ParseStats()
    clock = _ArrivalClock(time.time() if now is None else now, tz, future_slack)
    return QueueListing(_iter_mailq(_lines(text_or_lines), stats, clock), stats)

