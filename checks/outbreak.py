"""Who submits the mail that receivers rate-limit or block: the join of smtpd's ``client=`` lines
(client address, SASL login) and qmgr's ``from=<...>`` lines to the deferrals of chosen causes.

One focused pass over the mail log, asked for only when those deferrals dominate (diagnose/outbreak.py
decides and reads the result); the per-line analysis of ``pfdiag logs`` does not do it. The same
join of ``client=`` lines serves ``pfdiag queue --sasl-user/--client`` (diagnose/queueselect.py):
:class:`SubmitterJoin` is that one join.

Memory is bounded whatever the log holds: at most MAX_IDS queue ids are remembered at once (a
message's entry goes when qmgr logs ``removed``, the oldest first when there are too many: its
deferrals then count as "not joined"), and each tally keeps at most MAX_KEYS logins, clients or
senders (past that the least counted half is dropped and the drop is counted). The pass stops at
its deadline and says it did (``complete``). checks/ does not import diagnose: the caller passes
the classifier that names a deferral's cause.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from checks.logs import ReadStats, read_lines
from checks.postfix.logline import LogLine
from checks.postfix.status import Delivery, parse_delivery
from checks.targets import Target

MAX_IDS = 200_000  # queue ids whose submitter and sender are remembered at once
MAX_KEYS = 2_000  # logins, clients, senders (each) counted at once
TOP = 5  # shares kept per kind
CHECK_EVERY = 4096  # lines between two looks at the deadline
# daemons whose lines this pass never reads (counted by read_lines, not parsed)
SKIP = frozenset({"cleanup", "postscreen", "anvil", "tlsmgr", "scache", "trivial-rewrite", "verify", "dnsblog", "tlsproxy"})
_CLIENT = re.compile(r"client=(?P<host>[^\[,\s]*)\[(?P<addr>[^\]]*)\](?:.*?\bsasl_username=(?P<login>[^,\s]+))?")


@dataclass(frozen=True, slots=True)
class Submitter:
    """smtpd's ``client=host[addr], sasl_method=..., sasl_username=LOGIN`` of one message."""

    addr: str  # the address in brackets ("unknown" when smtpd did not know it)
    host: str = ""
    login: str | None = None


def parse_client(text: str) -> Submitter | None:
    """The submitter named by a ``client=`` line's text (after the queue id), or None."""
    m = _CLIENT.match(text)
    return Submitter(m["addr"], m["host"], m["login"]) if m else None


class SubmitterJoin:
    """smtpd's ``client=`` line of each queue id: who submitted the message. ``wanted``: only those
    ids (then nothing is forgotten); otherwise at most ``limit`` ids, the oldest forgotten first
    (``forgotten`` counts them) and an id dropped by :meth:`forget` when its message is gone."""

    def __init__(self, wanted: Iterable[str] | None = None, limit: int = MAX_IDS) -> None:
        self.wanted = None if wanted is None else set(wanted)
        self.limit = limit
        self.origins: dict[str, Submitter] = {}
        self.forgotten = 0

    def see(self, line: LogLine) -> Submitter | None:
        """The line's submitter when it is smtpd's client= line of an id wanted (kept), else None."""
        qid = line.queue_id
        if qid is None or not line.text.startswith("client=") or line.program != "smtpd":
            return None
        if self.wanted is not None and qid not in self.wanted:
            return None
        s = parse_client(line.text)
        if s is None:
            return None
        origins = self.origins
        origins[qid] = s
        if self.wanted is None and len(origins) > self.limit:
            del origins[next(iter(origins))]
            self.forgotten += 1
        return s

    def forget(self, qid: str) -> None:
        self.origins.pop(qid, None)


@dataclass(frozen=True, slots=True)
class Share:
    """One login, client address or sender: its messages deferred for the causes, and all its
    messages submitted in the window read (at least the deferred ones)."""

    key: str
    deferred: int
    total: int


class Tally:
    """deferred/total per key, bounded to ``limit`` keys: past it the least counted half goes."""

    def __init__(self, limit: int = MAX_KEYS) -> None:
        self.limit = limit
        self.counts: dict[str, list[int]] = {}
        self.dropped = 0

    def _row(self, key: str) -> list[int]:
        row = self.counts.get(key)
        if row is None:
            if len(self.counts) >= self.limit:
                keep = sorted(self.counts.items(), key=lambda kv: (-kv[1][0], -kv[1][1]))[: self.limit // 2]
                self.dropped += len(self.counts) - len(keep)
                self.counts = dict(keep)
            row = self.counts[key] = [0, 0]
        return row

    def total(self, key: str) -> None:
        self._row(key)[1] += 1

    def deferred(self, key: str) -> None:
        self._row(key)[0] += 1

    def top(self, n: int = TOP) -> tuple[Share, ...]:
        rows = sorted(self.counts.items(), key=lambda kv: (-kv[1][0], -kv[1][1], kv[0]))[:n]
        return tuple(Share(k, d, max(t, d)) for k, (d, t) in rows if d)


@dataclass(frozen=True)
class SubmitterEvidence:
    """Who submitted the messages deferred for ``causes`` in the log window read."""

    causes: tuple[str, ...]
    deferred_messages: int  # messages deferred at least once for one of the causes
    by_cause: dict[str, int]  # those messages per cause (the first cause each was deferred for)
    joined: int  # of them, with smtpd's client= line read (the rest came through pickup, or before the window)
    with_sender: int  # of them, with qmgr's from= line read
    logins: tuple[Share, ...]  # SASL logins, most deferred first
    clients: tuple[Share, ...]  # client addresses
    senders: tuple[Share, ...]  # envelope senders (<> for bounces)
    pairs: tuple[Share, ...]  # "LOGIN CLIENT": which address each login came from
    files: tuple[str, ...]
    since: float | None
    lines: int
    seconds: float
    complete: bool  # read to the end before the deadline
    forgotten: int  # queue ids dropped from the bounded join before their deferral
    dropped_keys: int  # keys dropped from the bounded tallies
    examples: tuple[str, ...] = field(default=())  # a few deferral lines (raw) of the causes


def scan(target: Target, sources: Iterable[str], since: float | None, *, cause_of: Callable[[str, str | None], str],
         causes: Iterable[str], deadline: float, max_ids: int = MAX_IDS, max_keys: int = MAX_KEYS) -> SubmitterEvidence:  # fmt: skip
    """One pass over the log: for each message deferred for one of ``causes`` (``cause_of(reason,
    dsn)`` names a deferral's cause), its SASL login, client address and sender; with each one's
    total of messages in the window. Stops at ``deadline`` (time.monotonic())."""
    wanted = tuple(causes)
    join = SubmitterJoin(limit=max_ids)
    senders: dict[str, str] = {}  # qid -> envelope sender (bounded like the join)
    counted: dict[str, None] = {}  # qids already counted as deferred (bounded)
    logins, clients, froms, pairs = Tally(max_keys), Tally(max_keys), Tally(max_keys), Tally(max_keys)
    by_cause: dict[str, int] = {}
    memo: dict[tuple[str, str | None], str] = {}
    examples: list[str] = []
    deferred = joined = with_sender = forgotten = n = 0
    complete = True
    stats = ReadStats()
    t0 = time.monotonic()
    for line in read_lines(target, sources, stats, since=since, skip_daemons=SKIP):
        n += 1
        if n % CHECK_EVERY == 0 and time.monotonic() > deadline:
            complete = False
            break
        qid = line.queue_id
        if qid is None or qid == "NOQUEUE":
            continue
        text = line.text
        prog = line.program
        if prog == "smtpd":
            s = join.see(line)
            if s is not None:
                clients.total(s.addr)
                if s.login:
                    logins.total(s.login)
                    pairs.total(f"{s.login} {s.addr}")
            continue
        if prog == "qmgr":
            if text.startswith("from=<") and qid not in senders:
                end = text.find(">", 6)
                if end >= 0:
                    sender = text[6:end] or "<>"
                    senders[qid] = sender
                    froms.total(sender)
                    if len(senders) > max_ids:
                        del senders[next(iter(senders))]
                        forgotten += 1
            elif text == "removed":
                join.forget(qid)
                senders.pop(qid, None)
                counted.pop(qid, None)
            continue
        if "status=deferred" not in text or qid in counted:
            continue
        d = parse_delivery(text)
        if not isinstance(d, Delivery):
            continue
        key = (d.reason, d.dsn)
        known = memo.get(key)
        cid = known if known is not None else cause_of(d.reason, d.dsn)
        if known is None and len(memo) < 4096:
            memo[key] = cid
        if cid not in wanted:
            continue
        counted[qid] = None
        if len(counted) > max_ids:
            del counted[next(iter(counted))]
        deferred += 1
        by_cause[cid] = by_cause.get(cid, 0) + 1
        if len(examples) < 3:
            examples.append(line.raw)
        s = join.origins.get(qid)
        if s is not None:
            joined += 1
            clients.deferred(s.addr)
            if s.login:
                logins.deferred(s.login)
                pairs.deferred(f"{s.login} {s.addr}")
        its_sender = senders.get(qid)
        if its_sender is not None:
            with_sender += 1
            froms.deferred(its_sender)
    return SubmitterEvidence(
        wanted, deferred, by_cause, joined, with_sender, logins.top(), clients.top(), froms.top(), pairs.top(TOP * 2),
        tuple(dict.fromkeys(stats.files)), since, stats.lines, round(time.monotonic() - t0, 3), complete,
        forgotten + join.forgotten, logins.dropped + clients.dropped + froms.dropped + pairs.dropped, tuple(examples),
    )  # fmt: skip


__all__ = ["MAX_IDS", "MAX_KEYS", "Share", "Submitter", "SubmitterEvidence", "SubmitterJoin", "Tally", "parse_client", "scan"]
