"""One message's whole story: every log line of its life, each delivery attempt with its cause,
where it is now and what happens to it next.

A trace is asked for by queue id, Message-ID or address. The logs are read twice when they can
be (files): the first pass finds the queue ids (an address's messages, the id behind a
Message-ID, the new id of a message requeued with postsuper -r, which pickup logs with
``orig_id=``), the second collects their lines, so a message's first lines (smtpd's client=,
cleanup's message-id=) are kept even when the line that names the address comes later. From
standard input there is one pass, and the trace says what it may have missed.

Memory is bounded: at most MAX_MESSAGES messages and MAX_LINES lines each are kept; the rest
is counted and said.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from checks.postfix.logline import LogLine
from checks.postfix.postqueue import QueuedMessage
from checks.postfix.retry import Forecast
from checks.postfix.status import Delivery, Expiry, parse_delivery
from diagnose.classify import classify

MAX_MESSAGES = 200
MAX_LINES = 2000
EOD_CAUSES = ("E09", "E10")  # the end-of-data timeout and its "lost connection" form: maybe delivered

_CLIENT = re.compile(r"client=(?P<host>[^\[,\s]*)\[(?P<addr>[^\]]*)\](?:.*?sasl_username=(?P<login>[^,\s]+))?")
_MSGID = re.compile(r"message-id=<?(?P<id>[^>\s]*)>?")
_QMGR = re.compile(r"from=<(?P<sender>[^>]*)>, size=(?P<size>\d+), nrcpt=(?P<nrcpt>\d+)")
_ORIG_ID = re.compile(r"\borig_id=(?P<id>[0-9A-Za-z]+)")
_TO = re.compile(r"\b(?:to|orig_to)=<(?P<addr>[^>]*)>")
_FROM = re.compile(r"\bfrom=<(?P<addr>[^>]*)>")
_NOTIFICATION = re.compile(r"(?:sender|postmaster) (?:non-delivery|delivery status|delay) notification: (?P<id>\S+)")
_QID_SHAPE = re.compile(r"[0-9A-Za-z]{5,20}")


@dataclass(frozen=True, slots=True)
class Key:
    """What the user asked about."""

    text: str
    kind: str  # "queue id", "message-id", "address"

    @classmethod
    def parse(cls, text: str) -> Key:
        t = text.strip()
        if t.startswith("<") and t.endswith(">") and len(t) > 2:
            return cls(t[1:-1], "message-id")
        if "@" in t:
            return cls(t.lower(), "address")
        if _QID_SHAPE.fullmatch(t):
            return cls(t, "queue id")
        raise ValueError(f"{text!r} is no queue id, <Message-ID> or address")


@dataclass(frozen=True, slots=True)
class Attempt:
    ts: float | None
    recipient: str
    status: str  # sent, deferred, bounced, SOFTBOUNCE, ...
    reason: str
    cause_id: str | None  # None for a delivery
    phase: str | None
    relay: str | None
    dsn: str | None
    delays: tuple[float, float, float, float] | None
    service: str
    raw: str


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A recipient that may have the message more than once: each end-of-data timeout may have
    been accepted by the receiver, and a later attempt delivered it again."""

    recipient: str
    timeouts: int  # attempts that timed out (or lost the connection) after the final "."
    later: str  # "sent" when a later attempt delivered it, else the status of the last attempt
    copies_at_most: int


@dataclass
class MessageTrace:
    queue_id: str
    lines: list[LogLine] = field(default_factory=list)
    dropped_lines: int = 0
    first_ts: float | None = None
    client: str | None = None  # smtpd's client=host[addr]
    sasl_login: str | None = None
    message_id: str | None = None
    sender: str | None = None
    size: int | None = None
    nrcpt: int | None = None
    attempts: list[Attempt] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    end: str | None = None  # "removed", "expired", "force-expired"; None: still there at the end of the log
    end_ts: float | None = None
    requeued_from: str | None = None
    requeued_as: list[str] = field(default_factory=list)
    notifications: list[str] = field(default_factory=list)  # bounce/delay notices it caused
    held: bool = False
    later_attempts: list[Attempt] = field(default_factory=list)  # its successors' (postsuper -r), in order
    queued: QueuedMessage | None = None  # where it is now (postqueue), when it still is
    forecast: Forecast | None = None

    @property
    def recipients(self) -> list[str]:
        return list(dict.fromkeys(a.recipient for a in self.attempts))

    def duplicates(self) -> list[Duplicate]:
        """Per recipient: end-of-data timeouts followed by another attempt, this message's own or,
        after postsuper -r, its successor's (the same mail under a new queue id)."""
        out = []
        chain = self.attempts + self.later_attempts
        for rcpt in self.recipients:
            mine = [a for a in chain if a.recipient == rcpt]
            timeouts = [i for i, a in enumerate(mine) if a.cause_id in EOD_CAUSES]
            if not timeouts:
                continue
            later = mine[timeouts[0] + 1:]
            if not later:  # timed out last: the next retry may deliver it again
                if self.end is None and not self.requeued_as:
                    out.append(Duplicate(rcpt, len(timeouts), "pending", len(timeouts) + 1))
                continue
            sent = any(a.status == "sent" for a in later)
            out.append(Duplicate(rcpt, len(timeouts), "sent" if sent else later[-1].status,
                                 len(timeouts) + (1 if sent else 0)))
        return out


@dataclass
class Trace:
    key: Key
    messages: list[MessageTrace]
    more_messages: int = 0  # matching messages beyond MAX_MESSAGES, not kept
    one_pass: bool = False  # read once (stdin): lines before the first match may be missing
    files: list[str] = field(default_factory=list)


class _Finder:
    """Pass one: which queue ids belong to the key."""

    def __init__(self, key: Key) -> None:
        self.key = key
        self.ids: dict[str, None] = {key.text: None} if key.kind == "queue id" else {}
        self.more = 0

    def _add(self, qid: str) -> None:
        if qid in self.ids or qid == "NOQUEUE":
            return
        if len(self.ids) >= MAX_MESSAGES:
            self.more += 1
            return
        self.ids[qid] = None

    def see(self, line: LogLine) -> None:
        qid, text = line.queue_id, line.text
        if qid is None:
            return
        k = self.key
        if k.kind == "address":
            if ("to=<" in text or "from=<" in text) and any(
                m["addr"].lower() == k.text for rx in (_TO, _FROM) for m in rx.finditer(text)
            ):
                self._add(qid)
        elif k.kind == "message-id":
            if text.startswith("message-id=") and _MSGID.match(text) and _MSGID.match(text)["id"] == k.text:  # type: ignore[index]
                self._add(qid)
        if "orig_id=" in text:  # postsuper -r: the message lives on under a new id
            m = _ORIG_ID.search(text)
            if m and m["id"] in self.ids:
                self._add(qid)
            elif m and qid in self.ids:  # the id asked for is the new one: its earlier life too
                self._add(m["id"])


def find_ids(key: Key, lines: Iterable[LogLine]) -> tuple[list[str], int]:
    finder = _Finder(key)
    for line in lines:
        finder.see(line)
    return list(finder.ids), finder.more


def collect(key: Key, ids: Iterable[str], lines: Iterable[LogLine], *, grow: bool = False) -> tuple[dict[str, MessageTrace], int]:
    """Pass two: the lines of those ids, as MessageTraces. grow=True (one pass) also follows ids
    the key reveals on the way."""
    finder = _Finder(key)
    for qid in ids:
        finder._add(qid)
    traces: dict[str, MessageTrace] = {}
    for line in lines:
        if grow:
            finder.see(line)
        lid = line.queue_id
        if lid is None or lid not in finder.ids:
            continue
        t = traces.get(lid)
        if t is None:
            t = traces[lid] = MessageTrace(lid)
        _add_line(t, line)
    return traces, finder.more


def _add_line(t: MessageTrace, line: LogLine) -> None:
    if len(t.lines) < MAX_LINES:
        t.lines.append(line)
    else:
        t.dropped_lines += 1
    if t.first_ts is None:
        t.first_ts = line.ts
    text = line.text
    if text.startswith("client="):
        m = _CLIENT.match(text)
        if m:
            t.client = f"{m['host']}[{m['addr']}]"
            t.sasl_login = m["login"] or t.sasl_login
        return
    if text.startswith("message-id="):
        m = _MSGID.match(text)
        t.message_id = (m["id"] if m else None) or t.message_id
        return
    if "orig_id=" in text:
        m = _ORIG_ID.search(text)
        if m:
            t.requeued_from = m["id"]
    if text.startswith("from=<") and "status=" not in text:
        m = _QMGR.match(text)
        if m:
            t.sender, t.size, t.nrcpt = m["sender"], int(m["size"]), int(m["nrcpt"])
        return
    if text == "removed":
        t.end, t.end_ts = "removed", line.ts
        return
    if text in ("placed on hold", "released from hold"):
        t.held = text == "placed on hold"
        return
    if text.startswith("warning: ") or text.startswith(("error: ", "fatal: ", "panic: ")):
        t.warnings.append(text)
        return
    m = _NOTIFICATION.match(text)
    if m:
        t.notifications.append(m["id"])
        return
    if "status=" in text:
        d = parse_delivery(text)
        if isinstance(d, Expiry):
            t.end, t.end_ts = d.status, line.ts
            if d.sender and t.sender is None:
                t.sender = d.sender
        elif isinstance(d, Delivery):
            c = None if d.status == "sent" else classify(d.reason, status=d.status, dsn=d.dsn)
            t.attempts.append(Attempt(line.ts, d.to, d.status, d.reason, c.cause_id if c else None,
                                      c.phase if c else None, d.relay, d.dsn, d.delays, line.service, line.raw))


def trace(key: Key, read: Callable[[], Iterator[LogLine]], *, rereadable: bool) -> Trace:
    """read() gives the log's lines from the start each time it is called."""
    if not rereadable:
        traces, more = collect(key, [key.text] if key.kind == "queue id" else [], read(), grow=True)
        return _finish(key, traces, more, one_pass=True)
    ids, more = find_ids(key, read())
    traces, _ = collect(key, ids, read())
    return _finish(key, traces, more, one_pass=False)


def _finish(key: Key, traces: dict[str, MessageTrace], more: int, *, one_pass: bool) -> Trace:
    for t in traces.values():
        if t.requeued_from and t.requeued_from in traces:
            traces[t.requeued_from].requeued_as.append(t.queue_id)
    ordered = sorted(traces.values(), key=lambda t: (t.first_ts is None, t.first_ts or 0.0, t.queue_id))
    for t in reversed(ordered):  # successors first: a chain of requeues collects every later attempt
        for new in t.requeued_as:
            t.later_attempts += traces[new].attempts + traces[new].later_attempts
    return Trace(key, ordered, more, one_pass)


def attach_queue(tr: Trace, queued: Iterable[QueuedMessage], forecast_of: Callable[[QueuedMessage], Forecast | None]) -> None:
    """Where each traced message is now (a postqueue listing), and its forecast when deferred."""
    wanted = {t.queue_id: t for t in tr.messages}
    for m in queued:
        t = wanted.get(m.queue_id)
        if t is None and tr.key.kind == "queue id" and m.queue_id == tr.key.text:
            t = MessageTrace(m.queue_id)
            tr.messages.append(t)
            wanted[m.queue_id] = t
        if t is None:
            continue
        t.queued = m
        if m.queue_name == "deferred":
            t.forecast = forecast_of(m)
