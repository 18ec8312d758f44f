"""What the operator noticed, looked for in the evidence: the wizard's symptom answer.

When nothing is deferred, the wizard asks what was noticed ("timed out while sending end of
data" in the log, mail that stays in the queue, mail that arrives late). The answer is a search:
the same log files the diagnosis read, every line of them (not only the window the deferral
analysis kept), and the queue listing it read. The result says how many log lines and messages
show the symptom, which cause they belong to, and where pfdiag looked - so that the operator
knows whether "nothing found" means "not there" or "not in what was read".
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

from checks.errors import PfdiagError
from checks.targets.base import Target

SEARCH_SECONDS = 20.0  # the whole search, however big the logs
SLOW_SECONDS = 300.0  # a delivery that took this long counts as "late"
_EOD = re.compile(r"timed out while sending (?:end of data|message body)")
_REASON = re.compile(r"status=\w+ \((.*)\)\s*$")
_DELAY = re.compile(r"\bdelay=(\d+(?:\.\d+)?)")

LOOKED_FOR = {
    "eod": "'timed out while sending end of data' (or '... message body')",
    "stuck": "messages waiting in the queue",
    "slow": f"deliveries that took {SLOW_SECONDS / 60:g} minutes or more (delay= in status=sent lines)",
}


@dataclass
class SymptomSearch:
    symptom: str  # eod | stuck | slow
    files: list[str]
    window: tuple[str | None, str | None]  # first and last line the diagnosis read (ISO), if known
    queue_source: str | None  # where the queue listing came from, None: not read
    lines: int = 0  # matching log lines
    messages: int = 0  # distinct queue ids among them
    causes: dict[str, int] = field(default_factory=dict)  # cause id -> matching lines
    queued: int = 0  # queued messages that show the symptom
    first: float | None = None  # time of the first and last matching line
    last: float | None = None
    worst: float | None = None  # slow: the longest delay seen (seconds)
    complete: bool = True  # every line was read within the deadline
    detail: str = ""  # stuck: what the queue holds

    @property
    def hits(self) -> int:
        return self.lines + self.queued

    def where(self) -> str:
        logs = ", ".join(self.files) or "no log file"
        span = f" ({self.window[0].replace('T', ' ')[:16]} .. {self.window[1].replace('T', ' ')[:16]})" \
            if self.window[0] and self.window[1] else ""  # fmt: skip
        queue = f"the queue ({self.queue_source})" if self.queue_source else "no queue listing"
        return f"{logs}{span}" + ("" if self.complete else ", not to the end: out of time") + f" and {queue}"

    def sentence(self) -> str:
        """What was found, and where pfdiag looked: one paragraph for the terminal."""
        what = LOOKED_FOR[self.symptom]
        if self.symptom == "stuck":
            found = self.detail or "the queue is empty"
        elif not self.lines and not self.queued:
            found = f"found no {what}"
        else:
            parts = []
            if self.lines:
                span = f", {_hm(self.first)} .. {_hm(self.last)}" if self.first and self.last else ""
                parts.append(f"{self.lines} log line(s) of {self.messages} message(s){span}")
            if self.queued:
                parts.append(f"{self.queued} queued message(s)")
            causes = ", ".join(f"{c} ({n})" for c, n in sorted(self.causes.items(), key=lambda kv: -kv[1]))
            found = f"found {what}: " + " and ".join(parts) + (f"; cause {causes}" if causes else "")
            if self.symptom == "slow" and self.worst:
                found += f"; the longest took {self.worst / 60:.0f} min"
        return f"pfdiag {found}. It looked in {self.where()}."


def _hm(ts: float | None) -> str:
    return "?" if ts is None else time.strftime("%m-%d %H:%M", time.localtime(ts))


def search(target: Target, logs: Mapping[str, Any] | None, queue: Mapping[str, Any] | None, symptom: str,
           seconds: float = SEARCH_SECONDS) -> SymptomSearch:  # fmt: skip
    """Look for `symptom` in every line of the log files the diagnosis read and in its queue digest."""
    from checks.logs import ReadStats, read_lines
    from diagnose.classify import classify
    from diagnose.correlate import EOD_CAUSES

    logs, queue = logs or {}, queue or {}
    files = [str(f) for f in ((logs.get("input") or {}).get("files") or [])]
    w = logs.get("window") or {}
    found = SymptomSearch(symptom, files, (w.get("first_line"), w.get("last_line")), queue.get("source"))
    if symptom == "stuck":
        counts = {k: n for k, n in (queue.get("counts") or {}).items() if n}
        oldest = (queue.get("oldest") or {}).get("age_seconds")
        found.queued = int(queue.get("total_messages") or 0)
        if found.queued:
            from diagnose.fate import human

            found.detail = (f"found {found.queued} message(s) in the queue ("
                            + ", ".join(f"{k} {n}" for k, n in counts.items()) + ")"
                            + (f", the oldest {human(float(oldest), prose=True)} old" if oldest else ""))  # fmt: skip
        return found
    if symptom == "eod":
        for g in queue.get("groups") or []:
            if g.get("cause_id") in EOD_CAUSES:
                found.queued += len(g.get("messages") or [])
    ids: set[str] = set()
    deadline = time.monotonic() + seconds
    try:
        for n, line in enumerate(read_lines(target, files, ReadStats())):
            if n % 4096 == 0 and time.monotonic() > deadline:
                found.complete = False
                break
            text = line.text
            if symptom == "eod":
                if not _EOD.search(text):
                    continue
                m = _REASON.search(text)
                cause = classify(m.group(1) if m else text).cause_id
            else:  # slow
                if "status=sent" not in text:
                    continue
                d = _DELAY.search(text)
                if not d or float(d.group(1)) < SLOW_SECONDS:
                    continue
                found.worst = max(found.worst or 0.0, float(d.group(1)))
                cause = ""
            found.lines += 1
            if cause:
                found.causes[cause] = found.causes.get(cause, 0) + 1
            if line.queue_id and len(ids) < 100_000:
                ids.add(line.queue_id)
            if line.ts is not None:
                found.first = line.ts if found.first is None else min(found.first, line.ts)
                found.last = line.ts if found.last is None else max(found.last, line.ts)
    except PfdiagError:
        found.complete = False
    found.messages = len(ids)
    return found
