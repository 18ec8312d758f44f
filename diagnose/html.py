"""The report as one self-contained HTML page (no external CSS, JS, fonts or images), with two
inline SVG charts drawn here: a timeline of the deferrals per cause, and the retry schedule.

Everything that comes from the report is escaped (diagnose.textsafe: control and bidi
characters written out, then HTML-escaped): it holds log lines and remote servers'
replies, which are attacker-controlled text. The renderer reads the dict defensively (a field
that is missing or null is skipped, never a traceback), and the charts aggregate: arrivals are
counted into at most BINS columns per lane, so a 10,000-message queue gives a page of the same
size as a 10-message one.
"""

from __future__ import annotations

import math
import shlex
import time
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Sequence

from diagnose.report import _read_line
from diagnose.textsafe import html as _safe

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}h3{font-size:1.05em}
table{border-collapse:collapse;margin:.5em 0;width:100%}th,td{border:1px solid #ddd;padding:.3em .5em;text-align:left;vertical-align:top}
th{background:#f4f4f4}code,pre{font:12px/1.4 ui-monospace,Menlo,Consolas,monospace}pre{background:#f7f7f7;padding:.6em;overflow-x:auto;white-space:pre-wrap;word-break:break-all}
.verdict{padding:.8em 1em;border-radius:6px;margin:1em 0}.root-cause{background:#fde8e8}.warnings{background:#fff6dd}
.no-problem{background:#e6f6e6}.undiagnosed{background:#f1e6f8}.badge{display:inline-block;padding:.1em .5em;border-radius:4px;background:#444;color:#fff;font-size:.8em;margin-left:.5em}
.redacted{background:#1f4e79}.high{color:#a40000;font-weight:600}.medium{color:#8a5a00}.low{color:#666}.dup{color:#a40000;font-weight:600}
.fix-contact{border-left:3px solid #3a6ea5;padding-left:.5em}.muted{color:#666}svg{max-width:100%;height:auto;background:#fcfcfc;border:1px solid #eee}
.cause{break-inside:avoid-page}.do-now{border:2px solid #a40000;border-radius:6px;padding:.2em 1em .6em;margin:1em 0}
.do-now h2{border:none;margin-top:.4em}.do-now pre{margin:.3em 0}
.table-wrap{overflow-x:auto}
@media print{body{margin:0;max-width:none;font-size:11pt}svg{border:none}pre{white-space:pre-wrap}h2{break-after:avoid}a{color:inherit}}
"""
MAX_LANES = 12  # the report lists at most 12 causes (report.MAX_CAUSES); one lane each, plus "other"
BINS = 160  # arrival columns per lane: a huge queue is counted into bins, not drawn message by message
LABELLED_ATTEMPTS = 10  # attempts with a text label on the retry chart (all get a mark and a tooltip)
SVG_OPEN = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" role="img" aria-label="{label}">'


def _e(x: Any) -> str:
    """Every value of the page goes through here: control and bidi characters written out
    visibly, then HTML-escaped (diagnose.textsafe)."""
    return _safe(x)


def _num(x: Any) -> float | None:
    """A finite number from the dict, or None (a hand-edited or partial report may hold anything)."""
    if isinstance(x, bool) or not isinstance(x, (int, float, str)):
        return None
    try:
        v = float(x)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def _parse_iso(text: Any) -> float | None:
    """first_seen/last_seen are UTC ('...Z'); a naive time is read as UTC too, never as this machine's zone."""
    if not isinstance(text, str) or not text:
        return None
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp()


def _when(ts: float, span: float) -> str:
    """An axis label with as much precision as the span needs (seconds for a burst, dates for days)."""
    fmt = "%H:%M:%S" if span < 600 else "%H:%M" if span < 86400 else "%m-%d %H:%M" if span < 30 * 86400 else "%Y-%m-%d"
    return time.strftime(fmt, time.gmtime(ts))


def _full(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def _dur(s: float) -> str:
    return f"{s:.0f}s" if s < 120 else f"{s / 60:.0f}m" if s < 7200 else f"{s / 3600:.1f}h" if s < 172800 else f"{s / 86400:.1f}d"


def _empty_chart(width: int, label: str, text: str) -> str:
    return SVG_OPEN.format(w=width, h=60, label=_e(label)) + f'<text x="10" y="35" fill="#666">{_e(text)}</text></svg>'


def _lanes(doc: Mapping[str, Any]) -> tuple[list[tuple[str, float | None, float | None, list[float]]], int]:
    """(cause id, first seen, last seen, arrival times) per lane; arrivals of no listed cause get an 'other' lane."""
    causes = [c for c in (doc.get("causes") or []) if isinstance(c, Mapping) and c.get("id")]
    shown = causes[:MAX_LANES]
    ids = {str(c["id"]): i for i, c in enumerate(shown)}
    marks: list[list[float]] = [[] for _ in shown]
    other: list[float] = []
    for a in ((doc.get("queue") or {}).get("arrivals")) or []:
        t = _num(a.get("arrival")) if isinstance(a, Mapping) else None
        if t is None:
            continue
        hit = [ids[c] for c in (a.get("causes") or []) if isinstance(c, str) and c in ids]
        for i in hit:
            marks[i].append(t)
        if not hit:
            other.append(t)
    lanes = [(str(c["id"]), _parse_iso(c.get("first_seen")), _parse_iso(c.get("last_seen")), m) for c, m in zip(shown, marks)]
    if other:
        lanes.append(("other", None, None, other))
    return lanes, len(causes) - len(shown)


def deferral_timeline(doc: Mapping[str, Any], width: int = 1000) -> str:
    """One lane per cause: first..last deferral in the logs as a bar, queued messages' arrivals as columns."""
    lanes, hidden = _lanes(doc)
    points = [t for _, a, b, m in lanes for t in (a, b) if t is not None] + [t for *_, m in lanes for t in m]
    if not points:
        return _empty_chart(width, "no timeline", "no timestamps to draw: no deferral in the logs and no queued message")
    lo, hi = min(points), max(points)
    pad = max((hi - lo) * 0.03, 2.0) if hi > lo else 30.0  # room at the ends; a single point gets a minute
    lo, hi = lo - pad, hi + pad
    left, right, pitch = 80, width - 20, 28
    height = 50 + pitch * len(lanes)

    def x(t: float) -> float:
        return left + (t - lo) / (hi - lo) * (right - left)

    out = [SVG_OPEN.format(w=width, h=height, label="deferrals over time, per cause")]
    for k in range(5):  # time axis: five gridlines, labels in UTC
        t = lo + (hi - lo) * k / 4
        anchor = "start" if k == 0 else "end" if k == 4 else "middle"
        out.append(f'<line x1="{x(t):.1f}" y1="16" x2="{x(t):.1f}" y2="{height - 22}" stroke="#e4e4e4"/>'
                   f'<text x="{x(t):.1f}" y="{height - 6}" font-size="11" text-anchor="{anchor}" fill="#555">'
                   f'{_e(_when(t, hi - lo))}{" UTC" if k == 4 else ""}</text>')  # fmt: skip
    col = (right - left) / BINS
    for i, (cid, first, last, marks) in enumerate(lanes):
        y = 30 + pitch * i
        out.append(f'<text x="4" y="{y + 4}" font-size="12" fill="#222">{_e(cid)}</text>')
        bins: dict[int, int] = {}
        for t in marks:
            k = min(BINS - 1, int((t - lo) / (hi - lo) * BINS))
            bins[k] = bins.get(k, 0) + 1
        top = max(bins.values(), default=1)
        for k, n in sorted(bins.items()):  # a column per bin, its height grows with the count
            h = 3 + 8 * math.log1p(n) / math.log1p(top)
            out.append(f'<rect x="{left + k * col:.1f}" y="{y - h:.1f}" width="{max(1.5, col - .5):.1f}" '
                       f'height="{2 * h:.1f}" fill="#1f4e79"><title>{n} queued message(s) of {_e(cid)} arrived '
                       f'{_e(_full(lo + k * (hi - lo) / BINS))}..{_e(_full(lo + (k + 1) * (hi - lo) / BINS))} '
                       f'UTC</title></rect>')  # fmt: skip
        ends = [t for t in (first, last) if t is not None]
        if ends:
            a, b = min(ends), max(ends)
            out.append(f'<rect x="{x(a):.1f}" y="{y - 5}" width="{max(3.0, x(b) - x(a)):.1f}" height="10" rx="3" '
                       f'fill="#d9534f" opacity=".75"><title>{_e(cid)}: deferred in the logs from {_e(_full(a))} '
                       f'to {_e(_full(b))} UTC</title></rect>')  # fmt: skip
    if hidden:
        out.append(f'<text x="{right}" y="12" font-size="11" text-anchor="end" fill="#666">{hidden} more cause(s) not drawn</text>')
    out.append("</svg>")
    return "".join(out)


def _schedule(t: Mapping[str, Any]) -> tuple[list[float], float | None, float | None, int]:
    offsets = sorted(v for v in (_num(o) for o in (t.get("attempt_offsets") or [])) if v is not None and v >= 0)
    expires = _num(t.get("expires_offset")) or _num(t.get("lifetime"))
    warning = _num(t.get("warning_offset"))
    count = int(_num(t.get("attempt_count")) or len(offsets))
    return offsets, expires if expires and expires > 0 else None, warning if warning and warning > 0 else None, count


def retry_schedule(doc: Mapping[str, Any], width: int = 1000) -> str:
    """The attempts of one message after its arrival, the delay warning and the expiry, on a log time axis."""
    t = (doc.get("retry") or {}).get("timeline") or {}
    offsets, expires, warning, count = _schedule(t if isinstance(t, Mapping) else {})
    if not offsets and not expires:
        return _empty_chart(width, "no schedule", "the retry settings could not be read")
    end = max([expires or 0.0, *offsets, 1.0])
    left, right, axis = 20, width - 30, 55

    def x(s: float) -> float:  # a log scale: the first minutes matter to the admin as much as the last days
        return left + math.log1p(max(0.0, s)) / math.log1p(end) * (right - left)

    out = [SVG_OPEN.format(w=width, h=120, label="retry schedule of one message"),
           f'<line x1="{left}" y1="{axis}" x2="{x(end):.1f}" y2="{axis}" stroke="#888"/>']  # fmt: skip
    for i, o in enumerate(offsets):
        out.append(f'<circle cx="{x(o):.1f}" cy="{axis}" r="4" fill="#1f4e79"><title>attempt {i + 1}: +{_e(_dur(o))} '
                   f'after arrival</title></circle>')  # fmt: skip
        if i < LABELLED_ATTEMPTS or i == len(offsets) - 1:
            out.append(f'<text x="{x(o):.1f}" y="{axis - 14 - 12 * (i % 2)}" font-size="10" text-anchor="middle" '
                       f'fill="#333">+{_e(_dur(o))}</text>')  # fmt: skip
    if offsets and count > len(offsets) and expires:  # the report lists the first attempts only: the rest, dashed
        out.append(f'<line x1="{x(offsets[-1]):.1f}" y1="{axis}" x2="{x(expires):.1f}" y2="{axis}" stroke="#1f4e79" '
                   f'stroke-width="3" stroke-dasharray="2 4"><title>{count - len(offsets)} more attempt(s) until '
                   f'expiry</title></line>')  # fmt: skip
    if warning:
        out.append(f'<line x1="{x(warning):.1f}" y1="{axis - 25}" x2="{x(warning):.1f}" y2="{axis + 15}" stroke="#e0a800" '
                   f'stroke-width="2"/><text x="{x(warning):.1f}" y="{axis + 30}" font-size="11" text-anchor="middle" '
                   f'fill="#8a5a00">delay warning to the sender +{_e(_dur(warning))}</text>')  # fmt: skip
    if expires:
        out.append(f'<line x1="{x(expires):.1f}" y1="{axis - 25}" x2="{x(expires):.1f}" y2="{axis + 15}" stroke="#a40000" '
                   f'stroke-width="2"/><text x="{x(expires):.1f}" y="{axis + 48}" font-size="11" text-anchor="end" '
                   f'fill="#a40000">expires, returned to sender: +{_e(_dur(expires))}</text>')  # fmt: skip
    out.append("</svg>")
    return "".join(out)


def _rows(head: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    h = "".join(f"<th>{_e(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<div class=table-wrap><table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table></div>"  # a phone scrolls it


def _list(items: Sequence[Any] | None) -> list[Any]:
    return [x for x in (items or []) if x is not None]


def _maps(items: Sequence[Any] | None) -> list[Mapping[str, Any]]:
    return [x for x in (items or []) if isinstance(x, Mapping)]


def _conf(c: Mapping[str, Any]) -> str:
    v = _num(c.get("confidence") if "confidence" in c else c.get("score"))
    label = c.get("confidence_label") or c.get("label") or ""
    return f"{label} {v:.2f}".strip() if v is not None else str(label)


def _fixes(fixes: list[Any]) -> str:
    kinds: dict[str, list[str]] = {}  # grouped by kind, in the order the report gives them
    for f in fixes:
        if isinstance(f, Mapping):
            kinds.setdefault(str(f.get("kind") or "action"), []).append(str(f.get("text") or ""))
    out = ["<p>Fix:</p><ul>"]
    for kind, texts in kinds.items():
        inner = "".join(f"<li><code>{_e(t)}</code></li>" if kind in ("postconf", "master.cf", "queue") else f"<li>{_e(t)}</li>"
                        for t in texts)  # fmt: skip
        out.append(f'<li class="fix-{_e(kind)}"><b>{_e(kind)}</b><ul>{inner}</ul></li>')
    return "".join(out) + "</ul>"


def _cause(c: Mapping[str, Any]) -> str:
    cid = c.get("id")
    collateral = "" if c.get("root_cause", True) else " <span class=badge>collateral</span>"
    label = str(c.get("confidence_label") or "")
    out = [f'<section class="cause"><h3 id="{_e(cid)}">{_e(c.get("rank"))}. {_e(cid)} {_e(c.get("title"))}{collateral}</h3>',
           f"<p>{_e(c.get('meaning'))}</p>",
           f'<p>Confidence: <span class="{_e(label)}">{_e(_conf(c))}</span></p>',
           "<ul>" + "".join(f"<li>{_e(w)}</li>" for w in _list(c.get("why"))) + "</ul>"]  # fmt: skip
    hop = c.get("next_hop")
    if isinstance(hop, Mapping) and (hop.get("host") or hop.get("addr")):
        out.append(f"<p>Next hop: <code>{_e(hop.get('host'))}[{_e(hop.get('addr'))}]:{_e(hop.get('port'))}</code>; "
                   f"seen {_e(c.get('first_seen'))} .. {_e(c.get('last_seen'))}</p>")  # fmt: skip
    if c.get("possible_duplicates"):
        out.append(f'<p class="dup">{_e(c["possible_duplicates"])} message(s) may have been delivered twice '
                   "(timed out at end of data, then delivered by a later attempt).</p>")  # fmt: skip
    if c.get("underlying"):
        out.append("<p>Underlying cause, best supported first:</p><ol>")
        for h in _maps(c["underlying"]):
            ev = "".join(f"<li>for: {_e(x)}</li>" for x in _list(h.get("evidence"))) + "".join(
                f"<li>against: {_e(x)}</li>" for x in _list(h.get("against")))
            out.append(f'<li><b>{_e(h.get("title"))}</b> <span class="{_e(h.get("label"))}">({_e(_conf(h))})</span>'
                       f"<ul>{ev}</ul></li>")  # fmt: skip
        out.append("</ol>")
    if c.get("evidence"):
        out.append("<p>Evidence (where it was measured, then what was seen):</p><pre>" + "\n".join(
            f"[{_e(e.get('where'))}] {_e(e.get('source'))}: {_e(e.get('excerpt'))}" for e in _maps(c["evidence"])) + "</pre>")
    if c.get("fixes"):
        out.append(_fixes(_list(c["fixes"])))
    if c.get("confirm_with"):
        out.append("<p>Confirm with:</p><pre>" + "\n".join(_e(x) for x in _list(c["confirm_with"])) + "</pre>")
    actions = [a for a in _maps(c.get("queue_actions")) if a.get("argv")]
    if actions:  # one command per line, shell-quoted so a copy and paste runs exactly this argv
        out.append("<p>Queue actions (guarded: a dry run and a confirmation first):</p><pre>" + "\n".join(
            f"# {_e(a.get('why'))}\n{_e(shlex.join(str(x) for x in a['argv']))}" for a in actions) + "</pre>")
    return "".join(out) + "</section>"


def _header(doc: Mapping[str, Any]) -> list[str]:
    v = doc.get("verdict") or {}
    target = doc.get("target") or {}
    status = str(v.get("status") or "undiagnosed")
    badge = ' <span class="badge redacted">redacted</span>' if doc.get("redacted") else ""
    where = f"{_e(target.get('where'))}{'' if target.get('live', True) else ' (recorded snapshot)'}"
    return [
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>pfdiag report: {_e(v.get('headline'))}</title><style>{CSS}</style></head><body>",
        f"<h1>pfdiag report{badge}</h1>",
        f'<div class="verdict {_e(status)}"><b>{_e(v.get("headline"))}</b><br>{_e(v.get("summary"))}<br>'
        f'<span class=muted>where: {where} &middot; {_e(_read_line(doc))}</span></div>',
    ]  # fmt: skip


def _footer(doc: Mapping[str, Any]) -> str:
    """pfdiag's own bookkeeping, last: the verdict's code, the schema, when and by which version."""
    v = doc.get("verdict") or {}
    return (f'<p class=muted>verdict {_e(v.get("status"))} (exit {_e(v.get("exit_code"))}) &middot; generated '
            f'{_e(doc.get("generated"))} by pfdiag {_e(doc.get("pfdiag_version"))} &middot; {_e(doc.get("schema"))}</p>')


def render_html(doc: Mapping[str, Any]) -> str:
    """One page for a browser, a ticket attachment or a printer; no script, nothing loaded from elsewhere."""
    parts = _header(doc)
    steps = _maps(doc.get("do_now"))
    if steps:  # what to do first, before the evidence: each step a sentence and its exact command
        live = (doc.get("target") or {}).get("live", True)
        parts.append('<div class="do-now"><h2>Do this now</h2>'
                     + ("" if live else '<p class=muted>Run these on the mail host: this report comes from a recording.</p>')
                     + "<ol>" + "".join(f"<li>{_e(st.get('step'))}"
                                        + (f"<pre>{_e(st.get('command'))}</pre>" if st.get("command") else "") + "</li>"
                                        for st in steps) + "</ol></div>")  # fmt: skip
    q = doc.get("queue") or {}
    if q:
        counts = ", ".join(f"{k} {n}" for k, n in (q.get("counts") or {}).items() if n) or "empty"
        parts.append(f"<p>Queue: {_e(q.get('total_messages'))} message(s), {_e(q.get('total_recipients'))} "
                     f"recipient(s) ({_e(counts)}).</p>")  # fmt: skip
    causes = _maps(doc.get("causes"))
    if causes:
        parts.append("<h2>Causes, most important first</h2>")
        rows = []
        for c in causes:
            imp = c.get("impact") or {}
            dom = next((d.get("domain") for d in _maps(c.get("domains"))), None)
            rows.append((c.get("rank"), f"{c.get('id')} {c.get('title') or ''}" + ("" if c.get("root_cause", True) else " (collateral)"),
                         _conf(c), imp.get("queued_recipients"), imp.get("log_messages"), dom or "-"))  # fmt: skip
        parts.append(_rows(("#", "cause", "confidence", "queued recipients", "deferred messages (log)", "top destination"), rows))
    if causes or (q.get("arrivals") if q else None):
        parts.append("<h2>Deferrals over time</h2>" + deferral_timeline(doc))
        drawn, total = len(q.get("arrivals") or []), _num(q.get("total_messages"))
        note = f" Arrivals drawn for {drawn} of {total:.0f} queued messages." if total and drawn < total else ""
        parts.append("<p class=muted>Bars: first to last deferral in the logs; columns: arrivals of the messages still "
                     f"queued (taller = more messages).{_e(note)}</p>")  # fmt: skip
    parts += [_cause(c) for c in causes]
    retry = doc.get("retry") or {}
    t = retry.get("timeline") if isinstance(retry, Mapping) else None
    if t:
        parts.append("<h2>Retry schedule</h2>" + retry_schedule(doc))
        parts.append(f"<p>{_e(t.get('attempt_count'))} delivery attempts after arrival ({_e(t.get('summary'))}), "
                     "then the message expires and is returned to the sender.</p>")  # fmt: skip
        risks = _maps(retry.get("risks"))
        if risks:
            parts.append("<ul>" + "".join(f"<li><code>{_e(r.get('parameter'))}</code>: {_e(r.get('why'))}</li>" for r in risks) + "</ul>")
    if doc.get("warnings"):
        parts.append("<h2>Warnings</h2><ul>" + "".join(f"<li>{_e(w.get('summary'))}</li>" for w in _maps(doc["warnings"])) + "</ul>")
    if doc.get("errors"):
        parts.append("<h2>What could not be checked</h2><ul>" + "".join(
            f"<li>{_e(e.get('check'))}: {_e(e.get('summary'))}</li>" for e in _maps(doc["errors"])) + "</ul>")
    steps = _maps(doc.get("steps"))
    if steps:
        parts.append("<h2>Steps that ran</h2>" + _rows(
            ("step", "state", "seconds", "where", "detail"),
            [(s.get("title") or s.get("id"), s.get("state"), f"{_num(s.get('seconds')) or 0:.2f}", s.get("where"), s.get("detail"))
             for s in steps]))  # fmt: skip
    parts.append(_footer(doc))
    parts.append("</body></html>\n")
    return "".join(parts)
