"""Deferral analysis of a stream of Postfix log lines (what `pfdiag logs` reports).

One pass, bounded memory: counters per cause, destination and relay; quantiles
of delays=a/b/c/d from value counts (two significant digits, as Postfix logs the
delays under 100 s, so the distinct values stay few); and a per-message state
that is dropped when qmgr logs "removed" or when a message has been silent for
longer than any queue lifetime, so memory follows the queue, not the log.
"""

from __future__ import annotations

import math
import re
from collections import Counter, OrderedDict
from dataclasses import dataclass, field, fields
from typing import Iterable

from checks.logs import EARLIEST, ReadStats, latest_time, take
from checks.postfix.logline import FAST_ENVELOPE, LineParser, LogLine
from checks.postfix.status import (
    ATTEMPT_PREFIXES,
    COMPANION_PREFIXES,
    Delivery,
    Expiry,
    parse_delivery,
    parse_pix,
)
from checks.postfix.status import FAST_STATUS as STATUS_FAST
from diagnose.classify import Classification, classify

EOD_CAUSES = ("E09", "E10")  # end-of-data timeout / lost after end of data: duplicate risk
DEFERRED = ("deferred", "SOFTBOUNCE")
EVICT_AFTER = 10 * 86400.0  # longer than any sane maximal_queue_lifetime (default 5d)
MAX_KEYS = 5000
MAX_SIZES = 200_000  # sizes of messages whose "removed" line never came are dropped oldest first  # per-counter cap on distinct domains/relays: memory must not follow the log
PARTS = ("a", "b", "c", "d")
# per cause, the destinations whose own delays= values and example line are kept (the per-destination
# reasoning of a report focused on one domain); further domains only count in the cause's totals
MAX_DOMAIN_SLICES = 200
# Lines of messages born before a chunk that its worker may keep for the merge. A normal
# log needs few (the messages in the queue when the chunk starts); one without cleanup's
# lines (a grep for postfix/smtp) would keep all of them: past this, the chunk is read
# again by the merging process instead (see diagnose.logscan), so memory stays bounded.
MAX_UNBORN = 100_000


class UnbornOverflow(Exception):
    """A chunk holds too many lines of messages born before it (see MAX_UNBORN)."""


class CappedCounter(Counter):
    """A Counter that stops adding new keys past a cap (counted under '(other)')."""

    def bump(self, key: str, n: int = 1) -> None:
        if key in self or len(self) < MAX_KEYS:
            self[key] += n
        else:
            self["(other)"] += n

    def merge(self, other: Counter) -> None:
        for key, n in other.items():
            self.bump(key, n)


def quantile(values: Counter, q: float) -> float | None:
    """Exact quantile (nearest rank) of a value->count multiset."""
    total = sum(values.values())
    if not total:
        return None
    rank = max(1, round(q * total + 0.5 - 1e-9)) if q < 1 else total
    seen = 0
    for value in sorted(values):
        seen += values[value]
        if seen >= rank:
            return value
    return max(values)


@dataclass
class CauseStats:
    cause_id: str
    events: int = 0  # deferral status lines that name this cause directly
    collateral: int = 0  # "delivery temporarily suspended: <this cause>" lines
    attempts: int = 0  # soft failures at a non-last MX (no status= line)
    messages: int = 0
    first_seen: float | None = None
    last_seen: float | None = None
    domains: CappedCounter = field(default_factory=CappedCounter)
    relays: CappedCounter = field(default_factory=CappedCounter)
    phases: Counter = field(default_factory=Counter)
    dsns: Counter = field(default_factory=Counter)
    delays: dict[str, Counter] = field(default_factory=lambda: {p: Counter() for p in PARTS})
    example: str | None = None
    example_ts: float | None = None
    softbounce: int = 0
    hours: Counter = field(default_factory=Counter)  # deferral lines per hour (epoch // 3600): the report's heat strip
    by_domain: dict[str, DomainSlice] = field(default_factory=dict)  # at most MAX_DOMAIN_SLICES

    def slice(self, domain: str) -> DomainSlice | None:
        got = self.by_domain.get(domain)
        if got is None and len(self.by_domain) < MAX_DOMAIN_SLICES:
            got = self.by_domain[domain] = DomainSlice()
        return got

    def example_from(self, line: LogLine) -> None:
        if self.example is None:
            self.example, self.example_ts = line.raw, line.ts

    def merge(self, o: "CauseStats") -> None:
        for name in ("events", "collateral", "attempts", "messages", "softbounce"):
            setattr(self, name, getattr(self, name) + getattr(o, name))
        self.seen(o.first_seen)
        self.seen(o.last_seen)
        self.domains.merge(o.domains)
        self.relays.merge(o.relays)
        self.phases.update(o.phases)
        self.dsns.update(o.dsns)
        self.hours.update(o.hours)
        for part in PARTS:
            self.delays[part].update(o.delays[part])
        if o.example is not None and (self.example is None or (o.example_ts or 0) < (self.example_ts or 0)):
            self.example, self.example_ts = o.example, o.example_ts
        for dom, sl in o.by_domain.items():
            mine = self.slice(dom)
            if mine is not None:
                mine.merge(sl)

    def seen(self, ts: float | None) -> None:
        if ts is None:
            return
        if self.first_seen is None or ts < self.first_seen:
            self.first_seen = ts
        if self.last_seen is None or ts > self.last_seen:
            self.last_seen = ts


@dataclass(slots=True)
class DomainSlice:
    """One cause's deferrals to one destination: its own delays= values and first line."""

    delays: dict[str, Counter] = field(default_factory=lambda: {p: Counter() for p in PARTS})
    example: str | None = None
    example_ts: float | None = None

    def merge(self, o: "DomainSlice") -> None:
        for part in PARTS:
            self.delays[part].update(o.delays[part])
        if o.example is not None and (self.example is None or (o.example_ts or 0) < (self.example_ts or 0)):
            self.example, self.example_ts = o.example, o.example_ts


@dataclass(slots=True)
class PlaceStats:
    """Outcomes for one destination domain or one relay. A busy server sends to thousands
    of domains that never defer: they carry no cause counter (slots, and None until used)."""

    sent: int = 0
    deferred: int = 0
    collateral: int = 0
    bounced: int = 0
    causes: Counter | None = None

    def count_cause(self, cause_id: str) -> None:
        if self.causes is None:
            self.causes = Counter()
        self.causes[cause_id] += 1

    def merge(self, o: "PlaceStats") -> None:
        self.sent += o.sent
        self.deferred += o.deferred
        self.collateral += o.collateral
        self.bounced += o.bounced
        if o.causes:
            if self.causes is None:
                self.causes = Counter()
            self.causes.update(o.causes)


class _Rcpt:
    __slots__ = ("deferrals", "eod", "final")

    def __init__(self) -> None:
        self.deferrals = 0
        self.eod = False
        self.final: str | None = None


class _Msg:
    __slots__ = ("last", "size", "rcpts", "causes", "eod")

    def __init__(self, ts: float) -> None:
        self.last = ts
        self.size: int | None = None
        self.rcpts: dict[str, _Rcpt] = {}
        self.causes: set[str] = set()
        self.eod = False


@dataclass
class Outcomes:
    """What became of recipients that were deferred at least once."""

    delivered_later: int = 0
    bounced_later: int = 0
    expired: int = 0
    deleted: int = 0  # removed by postsuper (an operator) while deferred
    still_deferred: int = 0  # no end seen by the end of the log
    unresolved: int = 0  # no final status seen: lines missing from the log, or silent for days


@dataclass
class EndOfData:
    """Deliveries that met an end-of-data timeout: the receiver may already have
    the message, so a later successful attempt may have delivered it twice."""

    messages: int = 0
    recipients: int = 0
    delivered_later: int = 0  # possible duplicates
    still_deferred: int = 0
    expired_or_bounced: int = 0
    sizes: Counter = field(default_factory=Counter)  # message size buckets of affected mail
    hosts: CappedCounter = field(default_factory=CappedCounter)
    pix_workarounds: CappedCounter = field(default_factory=CappedCounter)


@dataclass
class Traffic:
    """Whole-traffic counts beside the statuses, as pflogsumm's grand totals define them
    (pflogsumm 1.1.5): received = smtpd/postscreen 'QUEUEID: client=' lines and pickup
    'sender=/uid=' lines; rejected, reject warnings, held, discarded = smtpd 'QUEUEID:
    reject|reject_warning|hold|discard: ' lines and cleanup header/body checks and
    milters ('reject|milter-reject|warning|hold|discard: header|body|END-OF-MESSAGE');
    forwarded = status=sent lines 'forwarded as' (pflogsumm does not count them as delivered)."""

    received: int = 0
    forwarded: int = 0
    rejected: int = 0
    reject_warnings: int = 0
    held: int = 0
    discarded: int = 0

    def merge(self, o: "Traffic") -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(o, f.name))


_SMTPD_EVENT = re.compile(r"\[\d+\]: \w+: (?:(client)=.|(reject|reject_warning|hold|discard): )")
_CLEANUP_EVENT = re.compile(r"\]: .*?\b((?:milter-)?reject|warning|hold|discard): (?:header|body|END-OF-MESSAGE) ")
_PICKUP_EVENT = re.compile(r"\[\d+\]: .*?: (?:sender|uid)=")
# The services whose lines pflogsumm reads for these counts ("postfix/" and an optional
# "smtps/" or "submission/" before the daemon): not postfix/amavis/smtpd, a content filter's re-injection.
_TRAFFIC_PATHS = {
    f"{lead}{daemon}": kind
    for lead in ("", "smtps/", "submission/")
    for daemon, kind in (("smtpd", "smtpd"), ("postscreen", "smtpd"), ("cleanup", "cleanup"), ("pickup", "pickup"))
}
_TRAFFIC_FIELD = {
    "reject": "rejected",
    "milter-reject": "rejected",
    "reject_warning": "reject_warnings",
    "warning": "reject_warnings",
    "hold": "held",
    "discard": "discarded",
}


# read()'s hot path: FAST_ENVELOPE capturing only the stamp, the service and the queue id (host,
# syslog name and pid are only needed for a LogLine: FAST_ENVELOPE again, on the few lines that take one),
# and FAST_STATUS for status=sent only, capturing what read() counts: the recipient, the relay and
# whether the reason starts with "forwarded as ". The same matches with fewer strings made.
def _uncapture(pattern: str, groups: tuple[str, ...]) -> str:
    for group in groups:
        assert group in pattern, group
        pattern = pattern.replace(group, group[1:-1] if group.startswith("(") else group.replace("(", "", 1).replace(")", "", 1))
    return pattern


_READ_ENVELOPE = re.compile(_uncapture(FAST_ENVELOPE.pattern, (r"(\S+)", r"(postfix[^\s\[\]:/]*)", r"\[(\d+)\]")))
_SENT = re.compile(
    _uncapture(STATUS_FAST.pattern, (r"<([^>]*)>, )?", r"(\d+)", r"([\d.]+)", r"tls=([^,\s]*)")).replace(
        r"status=(\S+) \((.*)\)", r"status=sent \((forwarded as )?.*\)"
    )
)
assert _SENT.groups == 3 and _SENT.pattern.endswith(r"status=sent \((forwarded as )?.*\)")


# Daemons whose lines never carry a delivery outcome or its evidence: on a busy
# server they are most of the log (connect/disconnect, message-id, postscreen).
NOISE_DAEMONS = frozenset(
    ("smtpd", "cleanup", "postscreen", "anvil", "pickup", "tlsproxy", "dnsblog", "scache", "tlsmgr", "proxymap", "sendmail", "postdrop")
)


class DeferralAnalysis:
    """Feed LogLines with add(); read the results after finish()."""

    def __init__(self, births: set[str] | None = None) -> None:
        # Chunk mode (a piece of a log after the first): messages not born in this
        # chunk may carry state from earlier chunks, so their lines are kept in
        # `unborn` for the merge to replay in order, instead of being counted here.
        self.births = births
        self.unborn: list[tuple[float | None, str]] = []  # (time, raw line): a third of a LogLine's memory
        self.causes: dict[str, CauseStats] = {}
        self.domains: dict[str, PlaceStats] = {}
        self.relays: dict[str, PlaceStats] = {}
        self.statuses: Counter = Counter()
        self.outcomes = Outcomes()
        self.eod = EndOfData()
        self.companions: Counter = Counter()
        self.companion_examples: dict[str, str] = {}
        self.first_ts: float | None = None
        self.last_ts: float | None = None
        self.deferral_lines = 0
        self.collateral_lines = 0
        self.messages_deferred = 0
        self.truncated_reasons = 0
        self.traffic = Traffic()
        self._msgs: OrderedDict[str, _Msg] = OrderedDict()  # messages with a deferral
        self._sizes: dict[str, int] = {}  # queue id -> size, for every message in the queue
        self._finished = False

    # -- feeding -----------------------------------------------------------------

    def add_all(self, lines: Iterable[LogLine]) -> "DeferralAnalysis":
        for line in lines:
            self.add(line)
        return self

    def add(self, line: LogLine) -> None:
        ts = line.ts
        if ts is not None:
            if self.last_ts is None or ts > self.last_ts:
                self.last_ts = ts
                if self.first_ts is None:
                    self.first_ts = ts
            elif self.first_ts is None or ts < self.first_ts:
                self.first_ts = ts
        qid = line.queue_id
        text = line.text
        births = self.births
        if births is not None and qid is not None and qid != "NOQUEUE" and qid not in births:
            self.unborn.append((line.ts, line.raw))
            if len(self.unborn) > MAX_UNBORN:
                raise UnbornOverflow(f"more than {MAX_UNBORN:,} lines of older messages")
            return
        if "status=" in text:
            m = STATUS_FAST.match(text)
            if m is not None:  # the common full form: no Delivery object on the hot path
                to, _, relay, _, _, a, b, c, d, _, dsn, status, reason = m.groups()
                if status in DEFERRED:
                    delays: tuple[float, float, float, float] | None
                    try:
                        delays = (float(a), float(b), float(c), float(d))
                    except ValueError:  # [\d.]+ that is no number ("1..2"): no delays, as parse_delivery reads it
                        delays = None
                    self._deferral(line, qid, to, status, relay, dsn, delays, reason, False)
                else:
                    self._final(qid, to, status, relay, reason)
                return
            event = parse_delivery(text)
            if isinstance(event, Delivery):
                if event.status in DEFERRED:
                    self._deferral(
                        line, qid, event.to, event.status, event.relay, event.dsn, event.delays, event.reason, event.truncated
                    )
                else:
                    self._final(qid, event.to, event.status, event.relay, event.reason)
            elif isinstance(event, Expiry) and qid:
                self._expiry(qid, event)
            return
        if qid is None or qid == "NOQUEUE":
            if text.startswith(COMPANION_PREFIXES):
                self._companion(line)
            return
        if text == "removed":
            if births is not None:
                births.discard(qid)  # gone: a later message may reuse the id
            self._sizes.pop(qid, None)
            msg = self._msgs.pop(qid, None)
            if msg is not None:
                self._finalise(msg, deleted=line.program == "postsuper")
            return
        if text.startswith("from=<"):
            # every message passes here: keep only its size, in a flat dict
            k = text.find(", size=")
            if k > 0:
                end = text.find(",", k + 7)
                size = text[k + 7 : end]
                if size.isdigit():
                    sizes = self._sizes
                    sizes[qid] = int(size)
                    if len(sizes) > MAX_SIZES:
                        del sizes[next(iter(sizes))]
            return
        if text.startswith("enabling PIX"):
            pix = parse_pix(text)
            if pix is not None:
                # a port other than SMTP's 25 is kept: peers on one address but different ports are
                # different next hops (a report focused on one destination keeps only its own)
                port = f":{pix.port}" if pix.port and pix.port != 25 else ""
                self.eod.pix_workarounds.bump(f"{pix.host}[{pix.addr}]{port}")
                self._companion(line, "PIX workarounds enabled")
            return
        if line.program in ("smtp", "lmtp") and text.startswith(ATTEMPT_PREFIXES):
            # a soft failure at one MX host before the next one is tried
            c = classify(text)
            stats = self._cause(c.cause_id)
            stats.attempts += 1
            stats.seen(ts)
            stats.example_from(line)

    def read(
        self,
        batches: Iterable[tuple[LineParser, list[str]]],
        stats: ReadStats,
        since: float | None = None,
        until: float | None = None,
    ) -> "DeferralAnalysis":
        """Read raw lines (checks.logs.read_batches): the same result and statistics as
        add_all(read_lines(..., NOISE_DAEMONS, births)), in less time. Most lines of a busy
        log only need counting: another program's line and a noise daemon's line are told
        by a few str.find calls (the test LineParser.parse makes first), and only some noise
        lines are looked at again, for the traffic counts and the queue ids born. The
        commonest Postfix lines left (qmgr's from= and removed, status=sent, TLS companions)
        are handled here without a LogLine; every other line takes the exact per-line path
        (checks.logs.take, then add)."""
        latest = latest_time()
        skip = NOISE_DAEMONS
        births = self.births
        traffic = self.traffic
        envelope = _READ_ENVELOPE.match
        full_envelope = FAST_ENVELOPE.match
        sent_of = _SENT.match
        smtpd_event = _SMTPD_EVENT.match
        msgs = self._msgs
        sizes = self._sizes
        statuses = self.statuses
        companions = self.companions
        companion_examples = self.companion_examples
        companion_prefixes = COMPANION_PREFIXES
        domains = self.domains
        relays = self.relays
        inf = float("inf")
        earliest = EARLIEST
        windowed = since is not None or until is not None
        for parser, lines in batches:
            stamp_of = parser.stamps.parse
            seen_stamps = parser.stamps.cache  # a hit needs no call (see StampParser.parse)
            noise = other = taken = 0
            lo, hi = inf, -inf  # first and last time of the lines handled here, folded in before add()
            for line in lines:
                i = line.find(" postfix/")
                if i > 0:
                    j = line.find("[", i + 9, i + 48)
                    if j > 0:
                        path = daemon = line[i + 9 : j]
                        if "/" in daemon:  # postfix/submission/smtpd: the daemon is the last part
                            daemon = daemon[daemon.rfind("/") + 1 :]
                        if daemon in skip:  # what LineParser.parse skips, counted here
                            noise += 1
                            if births is not None and daemon == "cleanup":
                                parser._birth(line, j)
                            counted = _TRAFFIC_PATHS.get(path)
                            if counted is None:
                                continue
                            if counted == "smtpd":
                                m = smtpd_event(line, j)
                                if m is not None:
                                    if m[1]:
                                        traffic.received += 1
                                    else:
                                        kind = _TRAFFIC_FIELD[m[2]]
                                        setattr(traffic, kind, getattr(traffic, kind) + 1)
                            elif counted == "cleanup":
                                if ": header " in line or ": body " in line or ": END-OF-MESSAGE " in line:
                                    m = _CLEANUP_EVENT.search(line, j)
                                    if m is not None:
                                        kind = _TRAFFIC_FIELD[m[1]]
                                        setattr(traffic, kind, getattr(traffic, kind) + 1)
                            elif _PICKUP_EVENT.match(line, j):
                                traffic.received += 1
                            continue
                        f = envelope(line)
                        if f is not None and line[-1:] != "\r":
                            stamp, service, qid = f.groups()
                            end = f.end()
                            if (
                                (service == path or (service not in skip and service.rpartition("/")[2] not in skip))
                                and not line.startswith("[ID ", end)
                                and (qid is not None or line.find(": ", end, end + 22) <= 4)
                            ):
                                ts = seen_stamps.get(stamp) or stamp_of(stamp)
                                if ts is not None and earliest <= ts <= latest:
                                    # the line as parse() and admit() would take it: a LogLine only when needed
                                    taken += 1
                                    if windowed and ((since is not None and ts < since) or (until is not None and ts >= until)):
                                        stats.outside_window += 1
                                        continue
                                    if births is None or qid is None or qid == "NOQUEUE" or qid in births:
                                        if line.find("status=", end) >= 0:
                                            m = sent_of(line, end) if line.find("status=sent (", end) > 0 else None
                                            if m is not None:
                                                if ts > hi:
                                                    hi = ts
                                                if ts < lo:
                                                    lo = ts
                                                statuses["sent"] += 1
                                                to, relay, forwarded = m.groups()
                                                if forwarded:
                                                    traffic.forwarded += 1
                                                at = to.rfind("@")
                                                domain = to[at + 1 :].lower() if at >= 0 else "(none)"
                                                place = domains.get(domain) or self._place(domains, domain)
                                                place.sent += 1
                                                if relay and relay != "none":
                                                    host = relay.partition("[")[0]
                                                    place = relays.get(host) or self._place(relays, host)
                                                    place.sent += 1
                                                if msgs and qid in msgs:
                                                    self._final_state(qid, to, "sent")
                                                continue
                                        else:
                                            text = line[end:]
                                            if qid is None or qid == "NOQUEUE":
                                                if ts > hi:
                                                    hi = ts
                                                if ts < lo:
                                                    lo = ts
                                                if text.startswith(companion_prefixes):
                                                    kind = _companion_kind(text)
                                                    companions[kind] += 1
                                                    if kind not in companion_examples:
                                                        companion_examples[kind] = line
                                                continue
                                            elif text == "removed":
                                                if ts > hi:
                                                    hi = ts
                                                if ts < lo:
                                                    lo = ts
                                                if births is not None:
                                                    births.discard(qid)
                                                sizes.pop(qid, None)
                                                if msgs:
                                                    msg = msgs.pop(qid, None)
                                                    if msg is not None:
                                                        self._finalise(msg, deleted=service.rpartition("/")[2] == "postsuper")
                                                continue
                                            elif text.startswith("from=<"):
                                                if ts > hi:
                                                    hi = ts
                                                if ts < lo:
                                                    lo = ts
                                                k = text.find(", size=")
                                                if k > 0:
                                                    size = text[k + 7 : text.find(",", k + 7)]
                                                    if size.isdigit():
                                                        sizes[qid] = int(size)
                                                        if len(sizes) > MAX_SIZES:
                                                            del sizes[next(iter(sizes))]
                                                continue
                                    lo, hi = self._fold(lo, hi)
                                    e = full_envelope(line)  # the same match, with the fields a LogLine holds
                                    assert e is not None
                                    _, host, name, _, pid, _ = e.groups()
                                    self.add(LogLine(ts, host, name, service, int(pid), qid, line[end:], line, False))
                                    continue
                elif "postfix" not in line and "status=" not in line and "removed" not in line and line[:1] != "{":
                    other += 1  # another program's line (LineParser.parse returns None for it)
                    continue
                lo, hi = self._fold(lo, hi)
                rec = take(parser, line, skip, stats, since, until, latest)
                if rec is not None:
                    self.add(rec)
            self._fold(lo, hi)
            stats.lines += noise + other + taken
            stats.postfix_lines += noise + taken
            stats.other_lines += other
        return self

    def _fold(self, lo: float, hi: float) -> tuple[float, float]:
        """The first and last times seen by read() into first_ts/last_ts (add() reads last_ts)."""
        if hi >= lo:
            if self.last_ts is None or hi > self.last_ts:
                self.last_ts = hi
            if self.first_ts is None or lo < self.first_ts:
                self.first_ts = lo
        return float("inf"), float("-inf")

    def _msg(self, qid: str, ts: float | None) -> _Msg:
        msg = self._msgs.get(qid)
        now = ts if ts is not None else (self.last_ts or 0.0)
        if msg is None:
            msg = self._msgs[qid] = _Msg(now)
            msg.size = self._sizes.get(qid)
            self._evict(now)
        else:
            msg.last = now
            self._msgs.move_to_end(qid)
        return msg

    def _evict(self, now: float) -> None:
        msgs = self._msgs
        while msgs:
            qid, oldest = next(iter(msgs.items()))
            if now - oldest.last <= EVICT_AFTER:
                break
            del msgs[qid]
            self._finalise(oldest)

    def _cause(self, cause_id: str) -> CauseStats:
        stats = self.causes.get(cause_id)
        if stats is None:
            stats = self.causes[cause_id] = CauseStats(cause_id)
        return stats

    def _place(self, table: dict[str, PlaceStats], key: str) -> PlaceStats:
        place = table.get(key)
        if place is None:
            if len(table) >= MAX_KEYS:
                key = "(other)"
                place = table.get(key)
            if place is None:
                place = table[key] = PlaceStats()
        return place

    def _final(self, qid: str | None, to: str, status: str, relay: str | None, reason: str = "") -> None:
        """A non-deferral status: sent, bounced, ... (the hot path of a healthy log)."""
        self.statuses[status] += 1
        at = to.rfind("@")
        domain = to[at + 1 :].lower() if at >= 0 else "(none)"
        if status == "sent":
            if reason.startswith("forwarded as "):
                self.traffic.forwarded += 1
            place = self.domains.get(domain) or self._place(self.domains, domain)
            place.sent += 1
            if relay and relay != "none":
                host = relay.partition("[")[0]
                place = self.relays.get(host) or self._place(self.relays, host)
                place.sent += 1
        elif status == "bounced":
            self._place(self.domains, domain).bounced += 1
        else:
            return
        if qid is not None:
            self._final_state(qid, to, status)

    def _final_state(self, qid: str, to: str, status: str) -> None:
        msg = self._msgs.get(qid)
        if msg is not None:
            rcpt = msg.rcpts.get(to)
            if rcpt is not None and rcpt.final is None:
                rcpt.final = status
                self._resolve(rcpt)

    def _deferral(
        self,
        line: LogLine,
        qid: str | None,
        to: str,
        status: str,
        relay_field: str | None,
        dsn: str | None,
        delays: tuple[float, float, float, float] | None,
        reason: str,
        truncated: bool,
    ) -> None:
        self.statuses[status] += 1
        ts = line.ts
        domain = to[to.rfind("@") + 1 :].lower() if "@" in to else "(none)"
        if truncated:
            self.truncated_reasons += 1
        c = classify(reason, status=status, dsn=dsn)
        self.deferral_lines += 1
        stats = self._cause(c.cause_id)
        stats.seen(ts)
        if ts is not None:
            stats.hours[int(ts // 3600)] += 1
        if c.collateral:
            self.collateral_lines += 1
            stats.collateral += 1
        else:
            stats.events += 1
            stats.example_from(line)
            if c.phase:
                stats.phases[c.phase] += 1
            if dsn:
                stats.dsns[dsn] += 1
            own = stats.slice(domain)
            if own is not None and own.example is None:
                own.example, own.example_ts = line.raw, ts
            if delays is not None and _INF not in delays:  # 400 digits: float() gives inf, no delay
                a, b, c2, d = map(_delay_value, delays)
                for parts in (stats.delays, own.delays if own is not None else None):
                    if parts is not None:
                        parts["a"][a] += 1
                        parts["b"][b] += 1
                        parts["c"][c2] += 1
                        parts["d"][d] += 1
        if status == "SOFTBOUNCE":
            stats.softbounce += 1
        stats.domains.bump(domain)
        relay_host = relay_field.partition("[")[0] if relay_field and relay_field != "none" else None
        relay = relay_host or c.host or (c.addr and f"[{c.addr}]")
        if relay:
            stats.relays.bump(relay)
        place = self._place(self.domains, domain)
        if c.collateral:
            place.collateral += 1
        else:
            place.deferred += 1
        place.count_cause(c.cause_id)
        if relay and not c.collateral:
            rp = self._place(self.relays, relay)
            rp.deferred += 1
            rp.count_cause(c.cause_id)
        if qid is None or qid == "NOQUEUE":  # a bare status message: nothing to follow up
            stats.messages += 1
            return
        msg = self._msg(qid, ts)
        if c.cause_id not in msg.causes:
            msg.causes.add(c.cause_id)
            stats.messages += 1
        rcpt = msg.rcpts.get(to)
        if rcpt is None:
            if not msg.rcpts:  # the first deferral of this message
                self.messages_deferred += 1
            rcpt = msg.rcpts[to] = _Rcpt()
        rcpt.deferrals += 1
        if c.cause_id in EOD_CAUSES and not c.collateral:
            if not rcpt.eod:
                rcpt.eod = True
                self.eod.recipients += 1
            if not msg.eod:
                msg.eod = True
                self.eod.messages += 1
                self.eod.sizes[_size_bucket(msg.size)] += 1
            self.eod.hosts.bump(c.host or relay or "(unknown)")

    def _expiry(self, qid: str, e: Expiry) -> None:
        self.statuses[e.status] += 1
        msg = self._msgs.get(qid)
        if msg is None:
            return
        for rcpt in msg.rcpts.values():
            if rcpt.final is None:
                rcpt.final = "expired"
                self._resolve(rcpt)

    def _resolve(self, rcpt: _Rcpt) -> None:
        if rcpt.deferrals == 0:
            return
        final = rcpt.final
        if final == "sent":
            self.outcomes.delivered_later += 1
            if rcpt.eod:
                self.eod.delivered_later += 1
        elif final == "bounced":
            self.outcomes.bounced_later += 1
            if rcpt.eod:
                self.eod.expired_or_bounced += 1
        elif final == "expired":
            self.outcomes.expired += 1
            if rcpt.eod:
                self.eod.expired_or_bounced += 1

    def _finalise(self, msg: _Msg | None, deleted: bool = False) -> None:
        """A message left the queue (or fell silent): settle recipients without an end."""
        if msg is None:
            return
        for rcpt in msg.rcpts.values():
            if rcpt.final is None and rcpt.deferrals:
                if deleted:
                    self.outcomes.deleted += 1
                else:  # removed without a final line we saw, or silent for days: a log gap
                    self.outcomes.unresolved += 1

    def _companion(self, line: LogLine, kind: str | None = None) -> None:
        if kind is None:
            kind = _companion_kind(line.text)
        self.companions[kind] += 1
        self.companion_examples.setdefault(kind, line.raw)

    def finish(self) -> "DeferralAnalysis":
        """Messages still in state at the end of the log are still deferred."""
        if self._finished:
            return self
        self._finished = True
        for msg in self._msgs.values():
            for rcpt in msg.rcpts.values():
                if rcpt.final is None and rcpt.deferrals:
                    self.outcomes.still_deferred += 1
                    if rcpt.eod:
                        self.eod.still_deferred += 1
        self._msgs.clear()
        return self

    def merge(self, o: "DeferralAnalysis") -> "DeferralAnalysis":
        """Append the analysis of the next chunk of the same log (see births):
        first replay its lines about older messages on this state, then add its
        counts and the open states of the messages born in it."""
        if o.unborn:
            # read again here; the time comes from the worker, which knew the file's year
            parser = LineParser()
            for ts, raw in o.unborn:
                rec = parser.parse(raw)
                if rec is not None:
                    rec.ts = ts
                    self.add(rec)
        for qid, msg in o._msgs.items():
            older = self._msgs.pop(qid, None)
            if older is not None:  # an id reused while we never saw the old message leave
                self._finalise(older)
            self._msgs[qid] = msg
        self._sizes.update(o._sizes)
        while len(self._sizes) > MAX_SIZES:
            del self._sizes[next(iter(self._sizes))]
        for cid, cs in o.causes.items():
            self._cause(cid).merge(cs)
        for table, other in ((self.domains, o.domains), (self.relays, o.relays)):
            for key, place in other.items():
                self._place(table, key).merge(place)
        self.statuses.update(o.statuses)
        for name in ("delivered_later", "bounced_later", "expired", "deleted", "still_deferred", "unresolved"):
            setattr(self.outcomes, name, getattr(self.outcomes, name) + getattr(o.outcomes, name))
        for name in ("messages", "recipients", "delivered_later", "still_deferred", "expired_or_bounced"):
            setattr(self.eod, name, getattr(self.eod, name) + getattr(o.eod, name))
        self.eod.sizes.update(o.eod.sizes)
        self.eod.hosts.merge(o.eod.hosts)
        self.eod.pix_workarounds.merge(o.eod.pix_workarounds)
        self.companions.update(o.companions)
        self.traffic.merge(o.traffic)
        for kind, ex in o.companion_examples.items():
            self.companion_examples.setdefault(kind, ex)
        for ts in (o.first_ts, o.last_ts):
            if ts is not None:
                self.first_ts = ts if self.first_ts is None else min(self.first_ts, ts)
                self.last_ts = ts if self.last_ts is None else max(self.last_ts, ts)
        for name in ("deferral_lines", "collateral_lines", "messages_deferred", "truncated_reasons"):
            setattr(self, name, getattr(self, name) + getattr(o, name))
        return self

    @property
    def messages_in_state(self) -> int:
        return len(self._msgs)


def _two_digits(seconds: float) -> float:
    """Postfix logs delays below 100 s with two significant digits, and longer ones in
    whole seconds: a retried message's queue time (a) can take any of 400,000 values in
    five days. Kept to two significant digits too (130780 -> 130000, within 5 %), the
    value counts behind the quantiles stay a few hundred however long the log is."""
    if seconds < 100:
        return seconds
    scale = 10.0 ** (int(math.log10(seconds)) - 1)
    return round(seconds / scale) * scale


# Delay value -> the value kept (_two_digits), one float object per distinct value kept: the
# delays= counters of every cause and destination slice share their keys instead of holding
# a float each (~25,000 keys in a worker at 2M lines; they grew with the log). The kept values
# are few (two significant digits); the cap only guards against a log of odd delays.
_DELAY_VALUES: dict[float, float] = {}
_INF = math.inf
MAX_DELAY_VALUES = 8192


def _delay_value(seconds: float) -> float:
    kept = _DELAY_VALUES.get(seconds)
    if kept is None:
        kept = _two_digits(seconds)
        if len(_DELAY_VALUES) < MAX_DELAY_VALUES:
            kept = _DELAY_VALUES[seconds] = _DELAY_VALUES.setdefault(kept, kept)
    return kept


def _size_bucket(size: int | None) -> str:
    if size is None:
        return "unknown"
    for limit, label in ((2048, "<2 KB"), (16384, "2-16 KB"), (131072, "16-128 KB"), (1048576, "128 KB-1 MB")):
        if size < limit:
            return label
    return ">=1 MB"


_COMPANION_BY_WORD: dict[str, tuple[str, ...]] = {}
for _prefix in COMPANION_PREFIXES:
    _COMPANION_BY_WORD.setdefault(_prefix.split(" ", 1)[0], ())
    _COMPANION_BY_WORD[_prefix.split(" ", 1)[0]] += (_prefix,)


def _companion_kind(text: str) -> str:
    """The companion prefix a line starts with (looked up by its first word)."""
    for prefix in _COMPANION_BY_WORD.get(text.split(" ", 1)[0], ()):
        if text.startswith(prefix):
            return prefix.strip().rstrip(":")
    return text[:40]


def classification_of(reason: str, status: str | None = None) -> Classification:
    """Exposed for renderers that show an example's details."""
    return classify(reason, status=status)
