"""Postfix log lines -> LogLine records. Pure, streaming, never raises on input.

Formats met in the wild (postfix-deferrals.md §1.1 and ../shared/corpus):

    Nov 28 11:58:01 mx postfix/smtp[123]: 4AB12C3D4E: to=<...>, ...      traditional, no year
    2026-11-28T11:58:01.123456+01:00 mx postfix/smtp[123]: ...            RFC 3339 (rsyslog)
    2026-11-28T11:58:01+0100 mx postfix/smtp[123]: ...                    journald short-iso
    2026 Nov 28 11:58:01.123 mx postfix/smtp[123]: ...                    year first
    {"MESSAGE": "...", "SYSLOG_IDENTIFIER": "postfix/smtp", ...}           journalctl -o json
    postfix/smtp[123]: ...                                                 no timestamp, no host
    ... postfix/smtp[123]: [ID 197553 mail.info] 4AB12C3D4E: ...          Solaris vendor token
    ... postfix/smtp[123] 4AB12C3D4E: ...                                  colon missing after [pid]
    ... postfix-out/smtp[1]:  postfix/submission/smtpd[1]:  postfix-203.0.113.5/smtp[1]:

The program token is found by a search rather than anchored, so that junk a
collector put in front of it does not lose the line; what stands before it is
read as "timestamp host" when it can be, and otherwise counted as a bad stamp.
"""

from __future__ import annotations

import calendar
import json
import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo

MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}

# Postfix's syslog_name is "postfix" by default, "postfix-NAME" for extra instances,
# and services may add a level ("postfix/submission/smtpd"). A preceding
# whitespace/start keeps "/usr/libexec/postfix/smtpd" in a message from matching.
_PROGRAM = re.compile(r"(postfix[^\s\[\]:/]*)((?:/[^\s\[\]:/]+)+)?(?:\[(\d+)\])?(:?)(?: |$)")
_VENDOR_TOKEN = re.compile(r"\[ID \d+ [\w.]+\] ")
# Short ids are hex; long ids (enable_long_queue_ids) are base-52 time, "z", base-51 inode.
# Long: 6+4 base-52 digits of seconds and microseconds (z included), "z", base-51 inode (no z).
_QUEUE_ID = re.compile(r"([0-9A-F]{5,15}|[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]{10}z[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-y]+|NOQUEUE): ")
# Anything else standing in the queue-id position (anonymised logs: "3A1B2C3D4E5XXXX"; ids of other
# builds): 5-20 letters/digits before ": ", with a digit in it or in capitals throughout, so that a
# daemon's own words ("warning: ", "statistics: ") are never taken for an id.
_LOOSE_ID = re.compile(r"([0-9A-Za-z]{5,20}): ")


def _loose_queue_id(text: str) -> re.Match[str] | None:
    m = _LOOSE_ID.match(text)
    if m is None or m[1] == "NOQUEUE":
        return None
    qid = m[1]
    if any(c.isdigit() for c in qid) or (qid.isupper() and len(qid) >= 8):
        return m
    return None


# The commonest envelopes in one match (traditional syslog and RFC 3339), with the
# queue id: most lines of a busy log take this path; everything else falls back.
_FAST = re.compile(
    r"((?:[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d)|(?:\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?)) "
    r"(\S+) (postfix[^\s\[\]:/]*)/([^\s\[\]:]+)\[(\d+)\]: "
    r"(?:([0-9A-F]{5,15}|[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]{10}z[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-y]+|NOQUEUE): )?"
)
FAST_ENVELOPE = _FAST  # groups: stamp, host, syslog name, service, pid, queue id (or None)
_TRADITIONAL = re.compile(r"([A-Z][a-z]{2}) {1,2}(\d{1,2}) (\d\d):(\d\d):(\d\d)(\.\d+)?$")
_YEAR_FIRST = re.compile(r"(\d{4}) ([A-Z][a-z]{2}) {1,2}(\d{1,2}) (\d\d):(\d\d):(\d\d)(\.\d+)?$")
_ISO = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(\.\d+)?(Z|[+-]\d\d:?\d\d)?$"
)


@dataclass(slots=True)
class LogLine:
    """One Postfix log line, split into its envelope and its message."""

    ts: float | None  # epoch seconds; None when the line has no readable timestamp
    host: str | None
    syslog_name: str  # "postfix", "postfix-out", "postfix-203.0.113.5"
    service: str  # "smtp", "qmgr", "submission/smtpd", "amavis/smtp"
    pid: int | None
    queue_id: str | None  # None for lines without one; "NOQUEUE" is kept as is
    text: str  # the message after "QUEUEID: " (or the whole message)
    raw: str
    bad_stamp: bool = False  # something stood before the program that is not a known timestamp

    @property
    def program(self) -> str:
        """The last path element, the daemon that wrote the line: smtp, qmgr, smtpd..."""
        return self.service.rpartition("/")[2]


# Returned instead of a LogLine for lines of daemons the caller asked to skip.
SKIPPED = LogLine(None, None, "", "", None, None, "", "")


class YearTracker:
    """Infers the year of yearless (traditional syslog) timestamps.

    The first stamp takes the year of `reference` (the file's mtime, or now), or the
    year before when that would put it more than a day after the reference. Then a
    month that jumps back by more than six (Dec -> Jan) starts a new year. No line is
    dated more than a day after the reference: a log holds nothing newer than itself."""

    def __init__(self, reference: float | None = None) -> None:
        self.reference = time.time() if reference is None else reference
        self.year: int | None = None
        self.last_month = 0

    def year_for(self, month: int, day: int) -> int:
        if self.year is None:
            ref = datetime.fromtimestamp(self.reference)
            year = ref.year
            try:
                if datetime(year, month, day) > ref + timedelta(days=1):
                    year -= 1
            except ValueError:  # Feb 29 in a non-leap year: the previous leap year is meant
                year -= 1
            self.year, self.last_month = year, month
        elif month < self.last_month - 6:
            self.year += 1
            self.last_month = month
        elif month > self.last_month + 6:
            return self.year - 1  # a straggler from before the boundary: do not move the state
        else:
            self.last_month = month
        if self._after_reference(self.year, month, day):
            return self.year - 1  # lines out of order (a pasted excerpt): never a date after the file
        return self.year

    def _after_reference(self, year: int, month: int, day: int) -> bool:
        """A log holds no line written more than a day after the file itself (its mtime)."""
        try:
            return datetime(year, month, day) > datetime.fromtimestamp(self.reference) + timedelta(days=1)
        except ValueError:  # Feb 29 of a year without one
            return True


class StampParser:
    """Timestamp text -> epoch seconds, memoised: many lines share a second."""

    def __init__(self, years: YearTracker | None = None, tz: tzinfo | None = None) -> None:
        self.years = years or YearTracker()
        self.tz = tz  # None: naive stamps are local time, as syslog writes them
        self.cache: dict[str, float] = {}  # stamp -> epoch: emptied, never replaced (readers may hold it)
        self._hours: dict[tuple[int, int, int, int], float] = {}  # (y, mo, d, h) -> epoch of hh:00:00
        self._minutes: dict[str, float] = {}  # "Nov  2 11:58" -> epoch of 11:58:00

    def parse(self, stamp: str) -> float | None:
        # A hit needs no year check: the tracker sees every new minute (a month
        # only changes with one), and both caches are emptied when the year moves on.
        hit = self.cache.get(stamp)
        if hit is not None:
            return hit
        if not stamp:
            return None
        # A traditional stamp ("Nov  2 11:58:01") new to the cache is most often a new
        # second of a minute already seen: its minute's epoch plus the seconds.
        minute = stamp[:12] if len(stamp) == 15 and stamp[12] == ":" and stamp[13:].isdigit() else None
        base = self._minutes.get(minute) if minute is not None else None
        if base is not None and int(stamp[13:]) < 61:
            value: float | None = base + int(stamp[13:])
        else:
            year = self.years.year
            value = self._parse(stamp)
            if self.years.year != year and year is not None:
                # a new year began: "Nov  2 11:58" from now on is another day
                self.cache.clear()
                self._minutes.clear()
            if value is not None and minute is not None:
                if len(self._minutes) > 1024:
                    self._minutes.clear()
                self._minutes[minute] = value - int(stamp[13:])
        if value is not None:
            if len(self.cache) > 4096:
                self.cache.clear()
            self.cache[stamp] = value
        return value

    def _naive(self, y: int, mo: int, d: int, h: int, mi: int, s: int, frac: str | None) -> float:
        # Local time is resolved once per hour (mktime is slow, and zones change
        # offset on the hour); minutes and seconds are then plain arithmetic.
        extra = float(frac) if frac else 0.0
        key = (y, mo, d, h)
        base = self._hours.get(key)
        if base is None:
            if self.tz is not None:
                base = datetime(y, mo, d, h, tzinfo=self.tz).timestamp()
            else:
                base = time.mktime((y, mo, d, h, 0, 0, 0, 0, -1))
            if len(self._hours) > 1024:
                self._hours.clear()
            self._hours[key] = base
        if not (0 <= mi < 60 and 0 <= s < 61):
            raise ValueError("minute or second out of range")
        return base + mi * 60 + s + extra

    def _parse(self, stamp: str) -> float | None:
        try:
            m = _TRADITIONAL.match(stamp)
            if m:
                month = MONTHS.get(m[1])
                if month is None:
                    return None
                day = int(m[2])
                year = self.years.year_for(month, day)
                return self._naive(year, month, day, int(m[3]), int(m[4]), int(m[5]), m[6])
            m = _ISO.match(stamp)
            if m:
                y, mo, d, h, mi, s = (int(m[i]) for i in range(1, 7))
                off = m[8]
                if off is None:
                    return self._naive(y, mo, d, h, mi, s, m[7])
                base = calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0)) + (float(m[7]) if m[7] else 0.0)
                if off == "Z":
                    return base
                sign = -1 if off[0] == "-" else 1
                digits = off[1:].replace(":", "")
                return base - sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
            m = _YEAR_FIRST.match(stamp)
            if m:
                month = MONTHS.get(m[2])
                if month is None:
                    return None
                return self._naive(int(m[1]), month, int(m[3]), int(m[4]), int(m[5]), int(m[6]), m[7])
        except (ValueError, OverflowError, OSError):  # Feb 30, year 0, ... from damaged lines
            return None
        return None


def _find_program(line: str) -> re.Match[str] | None:
    """The program token: 'postfix...' at the start or after white space.
    str.find first, because a regex search from every position is slow on big logs."""
    i = line.find("postfix")
    while i >= 0:
        if i == 0 or line[i - 1] in " \t":
            m = _PROGRAM.match(line, i)
            if m:
                return m
        i = line.find("postfix", i + 7)
    return None


def _split_prefix(prefix: str) -> tuple[str, str | None]:
    """'Nov 28 11:58:01 mx ' -> ('Nov 28 11:58:01', 'mx'). The host is the last word."""
    prefix = prefix.rstrip()
    if not prefix:
        return "", None
    stamp, _, host = prefix.rpartition(" ")
    if not stamp:  # a lone word: a host without a stamp, or a stamp without a host
        return ("", host) if not host[:1].isdigit() else (host, None)
    return stamp, host


class LineParser:
    """Parses lines of one stream (one file): keeps the year and stamp caches."""

    def __init__(
        self, reference_time: float | None = None, tz: tzinfo | None = None, births: set[str] | None = None
    ) -> None:
        self.stamps = StampParser(YearTracker(reference_time), tz)
        # Queue ids whose creation we saw: cleanup logs a message's first line
        # ("message-id=..."). Collected even when cleanup's lines are skipped.
        self.births = births

    def parse(self, line: str, skip: frozenset[str] = frozenset()) -> LogLine | None:
        """A LogLine, or None when the line is not from Postfix at all.

        Lines of the daemons named in `skip` (the last part of the service name)
        return SKIPPED without being parsed further: cheap counting of noise."""
        if skip:
            # Noise first, without a regex: "... postfix/smtpd[123]: ..." is most of a busy log.
            i = line.find(" postfix/")
            if i > 0:
                j = line.find("[", i + 9, i + 48)
                if j > 0:
                    daemon = line[i + 9 : j]
                    if "/" in daemon:  # postfix/submission/smtpd: the daemon is the last part
                        daemon = daemon[daemon.rfind("/") + 1 :]
                    if daemon in skip:
                        if self.births is not None and daemon == "cleanup":
                            self._birth(line, j)
                        return SKIPPED
        f = _FAST.match(line)
        if f is not None:
            stamp, host, name, service, pid, qid = f.groups()
            if service in skip or service.rpartition("/")[2] in skip:
                if self.births is not None and qid and service == "cleanup" and line.startswith("message-id=", f.end()):
                    self.births.add(qid)
                return SKIPPED
            end = f.end()
            if not line.startswith("[ID ", end):
                line = line.rstrip("\r\n")
                ts = self.stamps.parse(stamp)
                if qid is None and 4 < line.find(": ", end, end + 22):
                    q = _loose_queue_id(line[end:])
                    if q is not None:
                        qid, end = q[1], end + q.end()
                return LogLine(ts, host, name, service, int(pid), qid, line[end:], line, ts is None)
        if "postfix" not in line and "status=" not in line and "removed" not in line and line[:1] != "{":
            return None  # another program's line: the commonest miss, decided cheaply
        line = line.rstrip("\r\n")
        if line.startswith("{"):
            return self._parse_json(line)
        m = _find_program(line)
        if m is None:
            return self._parse_bare(line)
        syslog_name, path, pid = m[1], m[2], m[3]
        service = path[1:] if path else ""
        if not service and not pid:
            return None  # a bare word "postfix" in some other program's message
        if skip and service.rpartition("/")[2] in skip:
            return SKIPPED
        text = line[m.end():]
        if text.startswith("[ID "):
            v = _VENDOR_TOKEN.match(text)
            if v:
                text = text[v.end():]
        stamp, host = _split_prefix(line[: m.start()])
        ts = self.stamps.parse(stamp) if stamp else None
        bad = bool(stamp) and ts is None
        q = _QUEUE_ID.match(text) or _loose_queue_id(text)
        qid = None
        if q:
            qid = q[1]
            text = text[q.end():]
        return LogLine(ts, host, syslog_name, service, int(pid) if pid else None, qid, text, line, bad)

    def _birth(self, line: str, bracket: int) -> None:
        """cleanup's 'QUEUEID: message-id=' line is the first of every message."""
        k = line.find("]: ", bracket)
        if k > 0:
            q = _QUEUE_ID.match(line, k + 3) or _loose_queue_id(line[k + 3:])
            if q and line.startswith("message-id=", k + 3 + q.end() - q.start()):
                self.births.add(q[1])  # type: ignore[union-attr]

    def _parse_bare(self, line: str) -> LogLine | None:
        """A message without its syslog envelope, as log pipelines store it:
        'QUEUEID: to=<...>, ..., status=...' or even 'to=<...>, ..., status=...'."""
        q = _QUEUE_ID.match(line)
        text = line[q.end():] if q else line
        if "status=" in text and text.startswith(("to=", "from=")):
            return LogLine(None, None, "", "", None, q[1] if q else None, text, line, False)
        if q and (text.startswith("from=<") or text == "removed"):
            return LogLine(None, None, "", "", None, q[1], text, line, False)
        return None

    def _parse_json(self, line: str) -> LogLine | None:
        """journalctl -o json: SYSLOG_IDENTIFIER + MESSAGE + __REALTIME_TIMESTAMP (µs)."""
        try:
            rec = json.loads(line)
        except ValueError:
            return None
        if not isinstance(rec, dict):
            return None
        ident = rec.get("SYSLOG_IDENTIFIER")
        msg = rec.get("MESSAGE")
        if isinstance(msg, list):  # journald stores non-UTF-8 messages as byte arrays
            try:
                msg = bytes(msg).decode("utf-8", "replace")
            except (TypeError, ValueError):
                return None
        if not isinstance(ident, str) or not isinstance(msg, str) or not ident.startswith("postfix"):
            return None
        syslog_name, _, service = ident.partition("/")
        ts = None
        raw_ts = rec.get("__REALTIME_TIMESTAMP") or rec.get("_SOURCE_REALTIME_TIMESTAMP")
        if isinstance(raw_ts, str) and raw_ts.isascii() and raw_ts.isdigit() and len(raw_ts) <= 20:
            ts = int(raw_ts) / 1e6  # longer: past any time a float or the calendar can hold
        pid_text = rec.get("SYSLOG_PID") or rec.get("_PID")
        pid = int(pid_text) if isinstance(pid_text, str) and pid_text.isascii() and pid_text.isdigit() else None
        host = rec.get("_HOSTNAME") if isinstance(rec.get("_HOSTNAME"), str) else None
        text = msg
        q = _QUEUE_ID.match(text) or _loose_queue_id(text)
        qid = None
        if q:
            qid = q[1]
            text = text[q.end():]
        return LogLine(ts, host, syslog_name, service, pid, qid, text, line, ts is None)


def looks_like_postfix(line: str) -> bool:
    """Cheap test for lines that mention Postfix but did not parse: counted as malformed."""
    return "postfix" in line
