"""Monitoring: what `pfdiag check` measures and how it says it.

collect() reads the queue (postqueue -j, each deferred recipient's delay_reason classified)
and, optionally, a recent log window (deferral lines per cause). It runs no probe: a check
runs every few minutes and must be fast. evaluate() applies thresholds and gives a Nagios/
Icinga verdict; render_nagios() and render_prometheus() write the two outputs; write_atomic()
puts a file in place so that a reader (node_exporter's textfile collector) never sees half.

Thresholds mean "alert when the value REACHES this number" (>=): `--warn 100` warns at 100
deferred messages, `--cause-crit E09=1` is critical from the first end-of-data timeout. The
perfdata carries the same numbers as its warn;crit fields.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

from checks.errors import PfdiagError, UsageError
from checks.postfix.postqueue import QUEUE_NAMES, QueuedMessage
from checks.targets import Target
from diagnose.textsafe import visible

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
STATE_NAMES = ("OK", "WARNING", "CRITICAL", "UNKNOWN")
NO_REASON = "no-reason"

# Causes that deserve an alert from the first message (see `pfdiag check --help`):
# end-of-data timeouts may deliver mail twice; the others are this server's own setup
# failing, which stops all mail of a transport and which no retry will fix.
DEFAULT_CAUSE_CRIT: dict[str, int] = {"E09": 1, "E10": 1, "E20": 1, "E30": 1, "E31": 1, "E32": 1, "E35": 1}
DEFAULT_CAUSE_WARN: dict[str, int] = {"E14": 1, "E33": 1, "E34": 1}


# ------------------------------------------------------------------ evidence


@dataclass
class CauseCount:
    """Deferred mail of one cause: in the queue now and in the log window."""

    cause_id: str
    title: str
    messages: int = 0  # deferred messages in the queue with a recipient of this cause
    recipients: int = 0
    oldest_arrival: float | None = None
    domains: Counter[str] = field(default_factory=Counter)  # domain -> messages
    log_deferrals: int = 0  # deferral lines in the window
    log_messages: int = 0  # distinct messages deferred in the window

    @property
    def count(self) -> int:
        """What the per-cause thresholds compare: messages hit by it now or in the window."""
        return max(self.messages, self.log_messages)


@dataclass
class MonitorState:
    where: str
    taken_at: float  # the queue's clock (a snapshot's recording time)
    queues: dict[str, int]  # messages per queue
    oldest_arrival: float | None  # oldest message not on hold
    causes: dict[str, CauseCount]
    domains: Counter[str]  # deferred messages per recipient domain
    log_since: float | None = None  # None: logs not read
    log_lines: int = 0
    notes: list[str] = field(default_factory=list)
    duration: float = 0.0

    @property
    def deferred(self) -> int:
        return self.queues.get("deferred", 0)

    @property
    def oldest_age(self) -> float:
        return max(0.0, self.taken_at - self.oldest_arrival) if self.oldest_arrival is not None else 0.0


def cause_title(cause_id: str) -> str:
    from diagnose.causes import get_cause

    if cause_id == NO_REASON:
        return "No reason recorded yet"
    try:
        return get_cause(cause_id).title
    except KeyError:
        return cause_id


def _domain(address: str) -> str:
    from checks.queue import domain_of

    return domain_of(address)


def tally_queue(messages: Iterable[QueuedMessage], cause_of: Callable[[str], str]) -> tuple[
        dict[str, int], float | None, dict[str, CauseCount], Counter[str]]:  # fmt: skip
    """(messages per queue, oldest arrival not on hold, causes, deferred messages per domain)."""
    queues: Counter[str] = Counter()
    causes: dict[str, CauseCount] = {}
    domains: Counter[str] = Counter()
    memo: dict[str, str] = {}
    oldest: float | None = None
    for m in messages:
        queues[m.queue_name] += 1
        if m.queue_name != "hold" and m.arrival_time > 0 and (oldest is None or m.arrival_time < oldest):
            oldest = m.arrival_time
        if m.queue_name != "deferred":
            continue
        seen: set[str] = set()
        seen_pairs: set[tuple[str, str]] = set()
        seen_domains: set[str] = set()
        for r in m.recipients:
            reason = r.delay_reason
            if reason:
                cid = memo.get(reason)
                if cid is None:
                    if len(memo) >= 65536:
                        memo.clear()
                    cid = memo[reason] = cause_of(reason)
            else:
                cid = NO_REASON
            c = causes.get(cid)
            if c is None:
                c = causes[cid] = CauseCount(cid, cause_title(cid))
            c.recipients += 1
            dom = _domain(r.address)
            if cid not in seen:
                seen.add(cid)
                c.messages += 1
                if m.arrival_time > 0 and (c.oldest_arrival is None or m.arrival_time < c.oldest_arrival):
                    c.oldest_arrival = m.arrival_time
            if (cid, dom) not in seen_pairs:
                seen_pairs.add((cid, dom))
                c.domains[dom] += 1
            if dom not in seen_domains:
                seen_domains.add(dom)
                domains[dom] += 1
    counts = {q: queues.get(q, 0) for q in QUEUE_NAMES}
    counts.update({q: n for q, n in queues.items() if q not in counts})
    return counts, oldest, causes, domains


def collect(target: Target, config_dir: str | None = None, since_seconds: float | None = 3600.0,
            now: float | None = None) -> MonitorState:  # fmt: skip
    """The queue and (unless since_seconds is None) the log window ending at the queue's clock."""
    from checks.queue import read_queue
    from diagnose.classify import queued_cause

    started = time.monotonic()
    read = read_queue(target, config_dir, now=now)
    queues, oldest, causes, domains = tally_queue(read.messages, queued_cause)
    state = MonitorState(target.where, read.taken_at, queues, oldest, causes, domains,
                         notes=list(read.notes))  # fmt: skip
    if since_seconds is not None:
        _read_logs(target, config_dir, state, read.taken_at - since_seconds)
    state.duration = time.monotonic() - started
    return state


def _read_logs(target: Target, config_dir: str | None, state: MonitorState, since: float) -> None:
    """Deferrals per cause in the window; a missing or unreadable log is a note, not a failure
    (the queue is the main evidence). Files last written before the window are skipped, and a
    big plain local log is read from a byte offset found by bisection on its timestamps."""
    from checks.logs import Chunk, ReadStats, default_sources, read_lines
    from diagnose.deferrals import NOISE_DAEMONS, DeferralAnalysis

    try:
        sources = default_sources(target, config_dir)
    except PfdiagError as exc:
        state.notes.append(f"logs not read: {exc}")
        return
    chunks: list[str | Chunk] = []
    for path in sources:  # a file last written before the window holds nothing in it
        try:
            info = target.file_info(path)
        except (PfdiagError, OSError):
            chunks.append(path)
            continue
        if info.mtime < since:
            continue
        local = target.local_path(path)  # a file this process can seek in itself (None over SSH, in a bundle)
        start = window_offset(local, since, info.mtime) if local else 0
        # up to the size seen now: lines written while we read are the next check's
        chunks.append(Chunk(path, start, info.size) if start else path)
    state.log_since = since
    stats = ReadStats()
    analysis = DeferralAnalysis()
    try:
        analysis.add_all(read_lines(target, chunks, stats, since, None, NOISE_DAEMONS)).finish()
    except PfdiagError as exc:
        state.notes.append(f"logs not read: {exc}")
        state.log_since = None
        return
    state.log_lines = stats.postfix_lines
    for cid, cs in analysis.causes.items():
        if not (cs.events or cs.attempts):
            continue
        c = state.causes.get(cid)
        if c is None:
            c = state.causes[cid] = CauseCount(cid, cause_title(cid))
        c.log_deferrals += cs.events + cs.attempts
        c.log_messages += cs.messages


BISECT_ABOVE = 4 << 20  # bytes: a smaller log is simply read


def window_offset(path: str, since: float, mtime: float, min_size: int = BISECT_ABOVE) -> int:
    """A line start in a plain log file at or before the first line stamped >= since (0 when
    unsure): bisection on the stamps, so a check reads the last hour of a 2 GB log, not all of
    it. A compressed, small or unreadable file gives 0. Syslog stamps only go forward; a line
    read from the offset on is still filtered by time, so an early offset costs only time."""
    from checks.postfix.logline import LineParser

    if path.endswith((".gz", ".bz2", ".xz")):
        return 0
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError:
        return 0
    with fh:
        size = os.fstat(fh.fileno()).st_size
        if size < min_size:
            return 0

        def stamp_after(pos: int) -> tuple[int, float | None]:
            """(start of the first whole line after pos, its stamp) looking at a few lines."""
            fh.seek(pos)
            if pos:
                fh.readline()
            start = fh.tell()
            for _ in range(20):
                raw = fh.readline()
                if not raw:
                    break
                rec = LineParser(reference_time=mtime).parse(raw.decode("utf-8", "replace"))
                if rec is not None and rec.ts is not None:
                    return start, rec.ts
            return start, None

        lo, hi = 0, size  # invariant: the line at lo is before the window (or lo is 0)
        for _ in range(64):
            if hi - lo <= 1 << 16:
                break
            mid = (lo + hi) // 2
            start, ts = stamp_after(mid)
            if ts is None:
                return 0
            if ts < since:
                lo = start
            else:
                hi = mid
        return lo


# ------------------------------------------------------------------ thresholds


@dataclass
class Thresholds:
    warn: int | None = 100
    crit: int | None = 500
    warn_age: float | None = 3600.0
    crit_age: float | None = 7200.0
    cause_warn: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_CAUSE_WARN))
    cause_crit: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_CAUSE_CRIT))


_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_duration(text: str, what: str) -> float:
    """'90m', '2h', '1d12h' or plain seconds ('3600')."""
    value = text.strip().lower()
    if value.isdigit():
        return float(value)
    m = _DURATION.match(value)
    if not value or not m or not any(m.groups()):
        raise UsageError(f"{what} {text!r}: expected a duration like 90m, 2h, 1d or seconds")
    d, h, mi, s = (int(g) if g else 0 for g in m.groups())
    return float(((d * 24 + h) * 60 + mi) * 60 + s)


def parse_count(text: str, what: str) -> int | None:
    """A threshold count; 'off' (or 'none') turns it off."""
    value = text.strip().lower()
    if value in ("off", "none"):
        return None
    if not value.isdigit() or int(value) < 1:
        raise UsageError(f"{what} {text!r}: expected a whole number of at least 1, or off")
    return int(value)


def parse_cause_thresholds(items: Sequence[str], what: str, into: dict[str, int]) -> None:
    """`E09=1`, `E21=50`, `E09=off` (also comma-separated) into the per-cause table."""
    from diagnose.causes import CAUSES

    for item in items:
        for part in item.split(","):
            key, sep, value = part.partition("=")
            cid = key.strip().upper()
            if not sep or not cid:
                raise UsageError(f"{what} {part!r}: expected CAUSE=N, e.g. E09=1")
            if cid not in CAUSES and cid != "UNCLASSIFIED":
                raise UsageError(f"{what} {part!r}: unknown cause {key.strip()!r} (see pfdiag explain --list)")
            cid = "unclassified" if cid == "UNCLASSIFIED" else cid
            n = parse_count(value, what)
            if n is None:
                into.pop(cid, None)
            else:
                into[cid] = n


def _level(value: float, warn: float | None, crit: float | None) -> int:
    if crit is not None and value >= crit:
        return CRITICAL
    if warn is not None and value >= warn:
        return WARNING
    return OK


@dataclass
class Verdict:
    state: int
    status_line: str
    long_lines: list[str]
    perfdata: list[str]
    reasons: list[str]  # what raised the state, in words


def perf_label(label: str) -> str:
    """A perfdata label, single-quoted when it holds a space, = or a quote (' doubled inside)."""
    if re.search(r"[\s='|]", label):
        return "'" + label.replace("'", "''") + "'"
    return label


def perf(label: str, value: float, uom: str = "", warn: float | None = None, crit: float | None = None,
         minimum: float | None = 0, maximum: float | None = None) -> str:  # fmt: skip
    """label=value[UOM];warn;crit;min;max with trailing empty fields dropped."""
    def num(x: float | None) -> str:
        return "" if x is None else (str(int(x)) if float(x).is_integer() else f"{x:.3f}")

    fields = [f"{num(value)}{uom}", num(warn), num(crit), num(minimum), num(maximum)]
    while len(fields) > 1 and fields[-1] == "":
        fields.pop()
    return f"{perf_label(label)}={';'.join(fields)}"


def plugin_text(text: object) -> str:
    """Outside text on a plugin line: visible (one line, controls written out) and no `|`,
    which would start the perfdata (written as \\x7c, visible()'s own notation)."""
    return visible(text).replace("|", "\\x7c")


def age_words(seconds: float) -> str:
    s = max(0.0, seconds)
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 172800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"


def cause_words(c: CauseCount, now: float, window: str | None) -> str:
    """'E09 No reply ...: 12 messages to example.com (+2 domains), oldest 52 min'."""
    head = f"{c.cause_id} {c.title}: "
    if c.messages:
        top = c.domains.most_common(1)
        where = f" to {plugin_text(top[0][0])}" if top else ""
        more = len(c.domains) - 1
        where += f" (+{more} more domain{'s' if more > 1 else ''})" if more > 0 else ""
        age = f", oldest {age_words(now - c.oldest_arrival)}" if c.oldest_arrival is not None else ""
        text = f"{c.messages} message{'s' if c.messages != 1 else ''} deferred{where}{age}"
        if c.log_deferrals:
            text += f"; {c.log_deferrals} deferral(s) in the logs{f' of the last {window}' if window else ''}"
        return head + text
    return head + (f"{c.log_deferrals} deferral(s) of {c.log_messages} message(s) in the logs"
                   f"{f' of the last {window}' if window else ''}, none queued now")  # fmt: skip


def evaluate(state: MonitorState, th: Thresholds, window: str | None = None, long_causes: int = 8) -> Verdict:
    reasons: list[tuple[int, str]] = []
    lvl = _level(state.deferred, th.warn, th.crit)
    if lvl:
        reasons.append((lvl, f"{state.deferred} deferred >= {th.crit if lvl == CRITICAL else th.warn}"))
    age = state.oldest_age
    lvl = _level(age, th.warn_age, th.crit_age)
    if lvl:
        limit = th.crit_age if lvl == CRITICAL else th.warn_age
        reasons.append((lvl, f"oldest message {age_words(age)} >= {age_words(limit or 0)}"))
    cause_level: dict[str, int] = {}
    for cid, c in state.causes.items():
        lvl = _level(c.count, th.cause_warn.get(cid), th.cause_crit.get(cid))
        cause_level[cid] = lvl
        if lvl:
            limit = th.cause_crit.get(cid) if lvl == CRITICAL else th.cause_warn.get(cid)
            where = " in the log window" if c.log_messages > c.messages else ""
            reasons.append((lvl, f"{cid} {c.count} message(s){where} >= {limit}"))
    worst = max((r[0] for r in reasons), default=OK)
    ranked = sorted(state.causes.values(), key=lambda c: (-cause_level[c.cause_id], -c.messages, -c.log_messages, c.cause_id))
    now = state.taken_at
    if ranked:
        summary = cause_words(ranked[0], now, window)
        tail = f"; {state.deferred} deferred in all" if state.deferred != ranked[0].messages else ""
    elif state.deferred:
        summary, tail = f"{state.deferred} deferred", ""
    else:
        summary, tail = "no deferred mail", ""
    if state.oldest_arrival is not None and (not ranked or not ranked[0].messages):
        tail += f"; oldest queued {age_words(age)}"
    why = "; ".join(text for lvl, text in sorted(reasons, key=lambda r: -r[0]) if lvl == worst) if worst else ""
    line = f"{STATE_NAMES[worst]} - {summary}{tail}" + (f" ({why})" if why else "")
    long_lines = [cause_words(c, now, window) for c in ranked[1:long_causes + 1]]
    if len(ranked) > long_causes + 1:
        long_lines.append(f"... and {len(ranked) - long_causes - 1} more cause(s)")
    long_lines += [f"note: {plugin_text(n)}" for n in state.notes]
    pd = [perf("deferred", state.deferred, "", th.warn, th.crit),
          perf("oldest_age", round(age), "s", th.warn_age, th.crit_age)]  # fmt: skip
    pd += [perf(q, n) for q, n in state.queues.items() if q != "deferred" and q in QUEUE_NAMES]
    for c in sorted(state.causes.values(), key=lambda c: c.cause_id):
        pd.append(perf(f"cause_{c.cause_id}", c.count, "", th.cause_warn.get(c.cause_id), th.cause_crit.get(c.cause_id)))
    if state.log_since is not None:
        pd.append(perf("log_deferrals", sum(c.log_deferrals for c in state.causes.values())))
    pd.append(perf("duration", round(state.duration, 3), "s"))
    return Verdict(worst, line, long_lines, pd, [t for _, t in reasons])


def render_nagios(v: Verdict) -> str:
    """The status line with the perfdata after `|`, then the long output (one cause a line)."""
    first = f"{plugin_text(v.status_line)} | {' '.join(v.perfdata)}"
    return "\n".join([first, *(plugin_text(line) for line in v.long_lines)]) + "\n"


def unknown_line(message: object) -> str:
    return f"UNKNOWN - {plugin_text(message)}\n"


# ------------------------------------------------------------------ Prometheus


def label_value(text: object, limit: int = 200) -> str:
    """A label value in the text exposition format: shown visibly (controls and non-UTF-8
    bytes written out), bounded, then \\ " and newline escaped as the format wants."""
    s = visible(text)
    if len(s) > limit:
        s = s[: limit - 3] + "..."
    return s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class _Metrics:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, help_text: str, kind: str = "gauge") -> None:
        self.lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]

    def sample(self, name: str, value: float, labels: Mapping[str, object] | None = None) -> None:
        lab = ""
        if labels:
            lab = "{" + ",".join(f'{k}="{label_value(v)}"' for k, v in labels.items()) + "}"
        if math.isnan(value):
            num = "NaN"
        else:
            num = str(int(value)) if float(value).is_integer() else repr(float(value))
        self.lines.append(f"{name}{lab} {num}")


def render_prometheus(state: MonitorState | None, top: int = 10, *, verdict: Verdict | None = None,
                      error: str | None = None, now: float | None = None) -> str:  # fmt: skip
    """Text exposition format (0.0.4, what node_exporter's textfile collector reads).
    state None: only pfdiag_up 0 and the run time (the collection failed)."""
    m = _Metrics()
    m.family("pfdiag_up", "1 when pfdiag read the queue, 0 when the last run failed")
    m.sample("pfdiag_up", 0 if state is None else 1)
    m.family("pfdiag_last_run_timestamp_seconds", "When pfdiag last ran (Unix time)")
    m.sample("pfdiag_last_run_timestamp_seconds", round(time.time() if now is None else now, 3))
    if state is None:
        return "\n".join(m.lines) + "\n"
    m.family("pfdiag_queue_read_timestamp_seconds", "The queue's clock when it was read (a snapshot: its recording time)")
    m.sample("pfdiag_queue_read_timestamp_seconds", round(state.taken_at, 3))
    m.family("pfdiag_run_duration_seconds", "How long reading the queue and logs took")
    m.sample("pfdiag_run_duration_seconds", round(state.duration, 3))
    m.family("pfdiag_queue_messages", "Messages in each Postfix queue")
    for q, n in state.queues.items():
        m.sample("pfdiag_queue_messages", n, {"queue": q})
    m.family("pfdiag_queue_oldest_age_seconds", "Age of the oldest message not on hold (0: none)")
    m.sample("pfdiag_queue_oldest_age_seconds", round(state.oldest_age))
    causes = sorted(state.causes.values(), key=lambda c: c.cause_id)
    m.family("pfdiag_cause_info", "Title of each cause seen (join on cause)")
    for c in causes:
        m.sample("pfdiag_cause_info", 1, {"cause": c.cause_id, "title": c.title})
    def per_cause(name: str, help_text: str, value: Callable[[Any], float | None]) -> None:
        """One family with a sample per cause that has a value (0 and None are left out)."""
        m.family(name, help_text)
        for c in causes:
            v = value(c)
            if v:
                m.sample(name, v, {"cause": c.cause_id})

    per_cause("pfdiag_deferred_messages", "Deferred messages in the queue by cause (a message may count under two)",
              lambda c: c.messages)
    per_cause("pfdiag_deferred_recipients", "Deferred recipients in the queue by cause", lambda c: c.recipients)
    per_cause("pfdiag_deferred_oldest_age_seconds", "Age of the oldest deferred message of each cause",
              lambda c: None if c.oldest_arrival is None else round(max(0.0, state.taken_at - c.oldest_arrival)))
    if state.log_since is not None:
        m.family("pfdiag_log_window_seconds", "Length of the log window read")
        m.sample("pfdiag_log_window_seconds", round(state.taken_at - state.log_since))
        per_cause("pfdiag_log_deferrals", "Deferral log lines by cause in the log window", lambda c: c.log_deferrals)
        per_cause("pfdiag_log_deferred_messages", "Distinct messages deferred by cause in the log window",
                  lambda c: c.log_messages)
    m.family("pfdiag_deferred_destination_messages",
             f"Deferred messages by recipient domain: the top {top}, the rest as domain=\"other\"")
    ranked = sorted(state.domains.items(), key=lambda kv: (-kv[1], kv[0]))
    for dom, n in ranked[:top]:
        m.sample("pfdiag_deferred_destination_messages", n, {"domain": dom})
    rest = sum(n for _, n in ranked[top:])
    if rest:
        m.sample("pfdiag_deferred_destination_messages", rest, {"domain": "other"})
    if verdict is not None:
        m.family("pfdiag_check_status", "pfdiag check's verdict with its thresholds: 0 OK, 1 WARNING, 2 CRITICAL")
        m.sample("pfdiag_check_status", verdict.state)
    return "\n".join(m.lines) + "\n"


# ------------------------------------------------------------------ atomic write


def write_atomic(path: str, text: str, mode: int = 0o644) -> None:
    """Write text to path so that a reader sees the old file or the new one, never a part:
    a temporary file in the same directory (not ending in .prom: the textfile collector
    skips it), fsync, rename over the target, fsync the directory."""
    directory = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fchmod(fh.fileno(), mode)  # mkstemp's 0600 would hide it from node_exporter's user
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)
