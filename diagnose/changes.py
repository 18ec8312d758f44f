"""What changed between two diagnoses: `pfdiag report --baseline OLD.json`.

compare() takes two report documents as `pfdiag report -f json` writes them (schema
pfdiag.report/1, docs/report-json.md) and says, per cause, whether it is new, resolved,
worse, better or unchanged, plus the queue and verdict before and after. Pure: no I/O
except load(), which reads the baseline file.

The baseline's moment is its queue's clock (`queue.now`; else `generated`). A cause is
RESOLVED when nothing of it is queued now and no deferral for it was logged after that
moment (its `last_seen` is not later) - the logs may still hold its old lines; or when it
is gone from the new report altogether (unless the new report left causes out:
`more_causes`, then it is "not listed"). A cause is NEW when the baseline did not have it
and it has mail queued now or a deferral logged after the baseline; one seen only in log
lines older than the baseline (a wider log window) is "earlier", not new. WORSE / BETTER
compare the recipients queued for it; the same number is "unchanged".

The renderers (text, Markdown, HTML) show outside text (domains, titles, warnings) through
diagnose/textsafe.py and return a section that insert() places at the top of a report.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Mapping

from checks.errors import InputError
from diagnose.textsafe import html, md_code, md_text, visible

SCHEMA = "pfdiag.report/1"
STATUSES = ("new", "worse", "resolved", "better", "unchanged", "earlier", "not-listed")
_LABEL = {"new": "new", "worse": "worse", "resolved": "resolved", "better": "better",
          "unchanged": "unchanged", "earlier": "earlier only", "not-listed": "not listed"}  # fmt: skip


@dataclass(frozen=True)
class Impact:
    queued_recipients: int
    queued_messages: int
    log_deferrals: int
    log_messages: int
    last_seen: str | None


@dataclass(frozen=True)
class CauseChange:
    id: str
    title: str
    status: str  # one of STATUSES
    before: Impact | None
    after: Impact | None
    new_domains: list[str]  # destinations it has now that the baseline did not list for it
    why: str  # the reason for the status, in words


@dataclass
class Changes:
    baseline_generated: str | None
    baseline_where: str | None
    generated: str | None
    where: str | None
    same_target: bool
    verdict_before: str | None
    verdict_after: str | None
    deferred_before: int | None
    deferred_after: int | None
    total_before: int | None
    total_after: int | None
    oldest_age_before: float | None
    oldest_age_after: float | None
    causes: list[CauseChange] = field(default_factory=list)
    new_warnings: list[str] = field(default_factory=list)
    resolved_warnings: list[str] = field(default_factory=list)

    def of(self, status: str) -> list[CauseChange]:
        return [c for c in self.causes if c.status == status]


def load(path: str) -> dict[str, Any]:
    """A saved `pfdiag report -f json`; one clear line when it is not one."""
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except OSError as exc:
        raise InputError(f"{path}: cannot read the baseline ({exc.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: the baseline is not JSON ({exc})") from None
    check(doc, path)
    return doc


def check(doc: object, name: str = "baseline") -> None:
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        got = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise InputError(f"{name}: not a pfdiag report (schema {got!r}; expected {SCHEMA}, "
                         "as written by pfdiag report -f json for one host)")  # fmt: skip
    if not isinstance(doc.get("causes"), list):
        raise InputError(f"{name}: a {SCHEMA} document without a causes list")


def _ts(text: Any) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _int(x: Any) -> int:
    return int(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else 0


def _impact(c: Mapping[str, Any]) -> Impact:
    imp = c.get("impact") or {}
    return Impact(_int(imp.get("queued_recipients")), _int(imp.get("queued_messages")), _int(imp.get("log_deferrals")),
                  _int(imp.get("log_messages")), c.get("last_seen") if isinstance(c.get("last_seen"), str) else None)  # fmt: skip


def _domains(c: Mapping[str, Any]) -> list[str]:
    return [str(d.get("domain")) for d in c.get("domains") or [] if isinstance(d, Mapping) and d.get("domain")]


def _moment(doc: Mapping[str, Any]) -> float | None:
    q = doc.get("queue") or {}
    now = q.get("now") if isinstance(q, Mapping) else None
    return float(now) if isinstance(now, (int, float)) else _ts(doc.get("generated"))


def _queue(doc: Mapping[str, Any]) -> tuple[int | None, int | None, float | None]:
    q = doc.get("queue")
    if not isinstance(q, Mapping):
        return None, None, None
    oldest = q.get("oldest") if isinstance(q.get("oldest"), Mapping) else None
    age = oldest.get("age_seconds") if oldest else None
    return _int((q.get("counts") or {}).get("deferred")), _int(q.get("total_messages")), \
        float(age) if isinstance(age, (int, float)) else None  # fmt: skip


def _warnings(doc: Mapping[str, Any]) -> list[str]:
    return [str(w.get("summary")) for w in doc.get("warnings") or [] if isinstance(w, Mapping) and w.get("summary")]


def _active(i: Impact) -> bool:
    return bool(i.queued_recipients or i.queued_messages or i.log_deferrals or i.log_messages)


def compare(old: Mapping[str, Any], new: Mapping[str, Any]) -> Changes:
    """The changes from the baseline `old` to the report `new` (both pfdiag.report/1)."""
    check(old, "baseline")
    check(new, "report")
    since = _moment(old)
    before = {str(c.get("id")): c for c in old["causes"] if isinstance(c, Mapping)}
    after = {str(c.get("id")): c for c in new["causes"] if isinstance(c, Mapping)}
    truncated = _int(new.get("more_causes")) > 0
    out: list[CauseChange] = []
    for cid, c in after.items():
        a = _impact(c)
        title = str(c.get("title") or cid)
        logged_since = since is None or ((_ts(a.last_seen) or 0) > since)
        old_c = before.get(cid)
        b = _impact(old_c) if old_c is not None else None
        new_doms = [d for d in _domains(c) if d not in set(_domains(old_c or {}))]
        if b is None or not _active(b):
            if a.queued_recipients or a.queued_messages or logged_since:
                out.append(CauseChange(cid, title, "new", b, a, new_doms, "not in the baseline"))
            else:
                out.append(CauseChange(cid, title, "earlier", b, a, [],
                                       "only in log lines older than the baseline (a wider log window)"))
        elif not (a.queued_recipients or a.queued_messages) and not logged_since:
            out.append(CauseChange(cid, title, "resolved", b, a, [], "nothing queued now and no deferral logged since the baseline"))
        elif a.queued_recipients > b.queued_recipients:
            out.append(CauseChange(cid, title, "worse", b, a, new_doms,
                                   f"queued recipients {b.queued_recipients} -> {a.queued_recipients}"))
        elif a.queued_recipients < b.queued_recipients:
            out.append(CauseChange(cid, title, "better", b, a, new_doms,
                                   f"queued recipients {b.queued_recipients} -> {a.queued_recipients}"))
        else:
            why = "still deferring" if logged_since else "nothing new logged since the baseline"
            out.append(CauseChange(cid, title, "unchanged", b, a, new_doms, f"{why}; {a.queued_recipients} queued recipient(s)"))
    for cid, c in before.items():
        if cid in after:
            continue
        b = _impact(c)
        if not _active(b):
            continue
        title = str(c.get("title") or cid)
        if truncated:
            out.append(CauseChange(cid, title, "not-listed", b, None, [], "left out of the new report (more_causes)"))
        else:
            out.append(CauseChange(cid, title, "resolved", b, None, [], "gone from the new report"))
    order = {s: i for i, s in enumerate(STATUSES)}
    out.sort(key=lambda ch: (order[ch.status], -(ch.after or ch.before or Impact(0, 0, 0, 0, None)).queued_recipients, ch.id))
    d0, t0, o0 = _queue(old)
    d1, t1, o1 = _queue(new)
    w0, w1 = _warnings(old), _warnings(new)
    where0 = (old.get("target") or {}).get("where")
    where1 = (new.get("target") or {}).get("where")
    return Changes(old.get("generated"), where0, new.get("generated"), where1, where0 == where1,
                   (old.get("verdict") or {}).get("status"), (new.get("verdict") or {}).get("status"),
                   d0, d1, t0, t1, o0, o1, out,
                   [w for w in w1 if w not in set(w0)], [w for w in w0 if w not in set(w1)])  # fmt: skip


def to_dict(ch: Changes) -> dict[str, Any]:
    """The report's `changes` object (docs/report-json.md)."""
    d = asdict(ch)
    d["counts"] = {s: len(ch.of(s)) for s in STATUSES}
    return d


# ------------------------------------------------------------------ rendering (from the dict)


def _age(s: Any) -> str:
    if not isinstance(s, (int, float)):
        return "-"
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h" if s < 172800 else f"{s / 86400:.1f} d"


def _delta(a: Any, b: Any) -> str:
    if not isinstance(a, int) or not isinstance(b, int):
        return f"{a if a is not None else '-'} -> {b if b is not None else '-'}"
    return f"{a} -> {b}" + (f" ({b - a:+d})" if b != a else "")


def _lines(ch: Mapping[str, Any]) -> list[tuple[str, str, list[str], str]]:
    """(label, our words around the cause, outside text, its lead-in) per line, for all three
    renderers: the third element holds the destinations (outside text) to be escaped per format."""
    rows: list[tuple[str, str, list[str], str]] = []
    for c in ch.get("causes") or []:
        if c["status"] == "unchanged":
            continue
        a, b = c.get("after") or {}, c.get("before") or {}
        if c["status"] == "resolved":
            tail = f"{b.get('queued_recipients', 0)} queued recipient(s) at the baseline; {c['why']}"
        elif c["status"] == "new":
            tail = f"{a.get('queued_recipients', 0)} queued recipient(s), {a.get('log_deferrals', 0)} log deferral(s)"
        else:
            tail = str(c["why"])
        lead = "to" if c["status"] == "new" else "now also to"
        rows.append((_LABEL.get(c["status"], c["status"]), f"{c['id']} {c['title']}: {tail}", list(c.get("new_domains") or [])[:5], lead))
    return rows


def _head(ch: Mapping[str, Any]) -> list[str]:
    out = [f"verdict {ch.get('verdict_before')} -> {ch.get('verdict_after')}; deferred "
           f"{_delta(ch.get('deferred_before'), ch.get('deferred_after'))}; oldest "
           f"{_age(ch.get('oldest_age_before'))} -> {_age(ch.get('oldest_age_after'))}"]  # fmt: skip
    n = ch.get("counts") or {}
    out.append(", ".join(f"{n.get(s, 0)} {_LABEL[s]}" for s in STATUSES if n.get(s)) or "no cause changed")
    return out


def render_text(ch: Mapping[str, Any]) -> str:
    out = [f"Changes since the baseline of {visible(ch.get('baseline_generated'))} ({visible(ch.get('baseline_where'))}):"]
    if not ch.get("same_target"):
        out.append(f"  note: the baseline is from {visible(ch.get('baseline_where'))}, this report from {visible(ch.get('where'))}")
    out += [f"  {visible(h)}" for h in _head(ch)]
    for label, text, doms, lead in _lines(ch):
        extra = f" ({lead} {', '.join(visible(d) for d in doms)})" if doms else ""
        out.append(f"  {label + ':':<13} {visible(text)}{extra}")
    out += [f"  {'new warning:':<13} {visible(w)}" for w in ch.get("new_warnings") or []]
    out += [f"  {'warning gone:':<13} {visible(w)}" for w in ch.get("resolved_warnings") or []]
    return "\n".join(out) + "\n\n"


def render_md(ch: Mapping[str, Any]) -> str:
    out = [f"## Changes since the baseline of {md_text(ch.get('baseline_generated'))}", ""]
    if not ch.get("same_target"):
        out.append(f"- note: the baseline is from {md_code(ch.get('baseline_where'))}, this report from {md_code(ch.get('where'))}")
    out += [f"- {md_text(h)}" for h in _head(ch)]
    for label, text, doms, lead in _lines(ch):
        extra = f" ({lead} {', '.join(md_code(d) for d in doms)})" if doms else ""
        out.append(f"- **{md_text(label)}:** {md_text(text)}{extra}")
    out += [f"- **new warning:** {md_text(w)}" for w in ch.get("new_warnings") or []]
    out += [f"- **warning gone:** {md_text(w)}" for w in ch.get("resolved_warnings") or []]
    return "\n".join(out) + "\n\n"


def render_html(ch: Mapping[str, Any]) -> str:
    items = []
    if not ch.get("same_target"):
        items.append(f"<li>note: the baseline is from <code>{html(ch.get('baseline_where'))}</code>, this report from "
                     f"<code>{html(ch.get('where'))}</code></li>")  # fmt: skip
    items += [f"<li>{html(h)}</li>" for h in _head(ch)]
    for label, text, doms, lead in _lines(ch):
        extra = f" ({lead} {', '.join(f'<code>{html(d)}</code>' for d in doms)})" if doms else ""
        items.append(f'<li class="change {html(label.split()[0])}"><b>{html(label)}:</b> {html(text)}{extra}</li>')
    items += [f"<li><b>new warning:</b> {html(w)}</li>" for w in ch.get("new_warnings") or []]
    items += [f"<li><b>warning gone:</b> {html(w)}</li>" for w in ch.get("resolved_warnings") or []]
    return (f'<section class="changes"><h2>Changes since the baseline of {html(ch.get("baseline_generated"))}</h2>'
            f"<ul>{''.join(items)}</ul></section>")  # fmt: skip


def insert(text: str, ch: Mapping[str, Any], fmt: str) -> str:
    """The changes section at the top of a rendered report (JSON carries `changes` itself)."""
    if fmt == "json":
        return text
    if fmt == "md":
        section = render_md(ch)
        at = text.find("\n## ")
        return text + "\n" + section if at < 0 else text[: at + 1] + section + text[at + 1:]
    if fmt == "html":
        section = render_html(ch)
        at = text.find("<h2>")
        if at < 0:
            at = text.find("</body>")
        return text + section if at < 0 else text[:at] + section + text[at:]
    return render_text(ch) + text
