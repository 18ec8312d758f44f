"""The report as one self-contained HTML page (no external CSS, JS, fonts or images), with two
inline SVG charts drawn here: a timeline of the deferrals per cause, and the retry schedule.

Everything that comes from the report is escaped: it holds log lines and remote servers'
replies, which are attacker-controlled text. Charts are capped so that a 10,000-message queue
still gives a page of a few hundred KB (arrivals are binned per lane).
"""

from __future__ import annotations

import time
from html import escape
from typing import Any, Iterable, Mapping

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}h3{font-size:1.05em}
table{border-collapse:collapse;margin:.5em 0;width:100%}th,td{border:1px solid #ddd;padding:.3em .5em;text-align:left;vertical-align:top}
th{background:#f4f4f4}code,pre{font:12px/1.4 ui-monospace,Menlo,Consolas,monospace}pre{background:#f7f7f7;padding:.6em;overflow-x:auto;white-space:pre-wrap;word-break:break-all}
.verdict{padding:.8em 1em;border-radius:6px;margin:1em 0}.root-cause{background:#fde8e8}.warnings{background:#fff6dd}
.no-problem{background:#e6f6e6}.undiagnosed{background:#f1e6f8}.badge{display:inline-block;padding:.1em .5em;border-radius:4px;background:#444;color:#fff;font-size:.8em;margin-left:.5em}
.high{color:#a40000;font-weight:600}.medium{color:#8a5a00}.low{color:#666}.dup{color:#a40000;font-weight:600}
.fix-contact{border-left:3px solid #3a6ea5;padding-left:.5em}.muted{color:#666}svg{max-width:100%;height:auto;background:#fcfcfc;border:1px solid #eee}
@media print{body{margin:0;max-width:none}svg{border:none}}
"""
MAX_MARKS = 400  # arrival marks per lane before they are binned


def _e(x: Any) -> str:
    return escape("" if x is None else str(x), quote=True)


def _parse_iso(text: str | None) -> float | None:
    from datetime import datetime

    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _when(ts: float) -> str:
    return time.strftime("%m-%d %H:%M", time.gmtime(ts))


def deferral_timeline(doc: Mapping[str, Any], width: int = 1000) -> str:
    """One lane per cause: first..last seen in the logs as a bar, queued arrivals as ticks."""
    causes = list(doc.get("causes") or [])[:12]
    arrivals = list(((doc.get("queue") or {}).get("arrivals")) or [])
    lanes: list[tuple[str, float | None, float | None, list[float]]] = []
    for c in causes:
        marks = [a["arrival"] for a in arrivals if c["id"] in (a.get("causes") or [])]
        lanes.append((c["id"], _parse_iso(c.get("first_seen")), _parse_iso(c.get("last_seen")), marks))
    points = [t for _, a, b, m in lanes for t in (a, b, *m) if t is not None]
    height = 40 + 26 * max(1, len(lanes))
    if not points:
        return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} 60" role="img" aria-label="no timeline">'
                '<text x="10" y="35" fill="#666">no timestamps to draw: no deferral in the logs or the queue</text></svg>')
    lo, hi = min(points), max(points)
    if hi - lo < 60:
        lo, hi = lo - 30, hi + 30
    left, right = 70, width - 20

    def x(t: float) -> float:
        return left + (t - lo) / (hi - lo) * (right - left)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
           'aria-label="deferrals over time, per cause">']  # fmt: skip
    for k in range(5):  # time axis
        t = lo + (hi - lo) * k / 4
        out.append(f'<line x1="{x(t):.1f}" y1="20" x2="{x(t):.1f}" y2="{height - 18}" stroke="#e4e4e4"/>'
                   f'<text x="{x(t):.1f}" y="{height - 4}" font-size="11" text-anchor="middle" fill="#555">{_e(_when(t))} UTC</text>')  # fmt: skip
    for i, (cid, first, last, marks) in enumerate(lanes):
        y = 30 + 26 * i
        out.append(f'<text x="4" y="{y + 4}" font-size="12" fill="#222">{_e(cid)}</text>')
        if first is not None:
            x1, x2 = x(first), x(last if last is not None else first)
            out.append(f'<rect x="{x1:.1f}" y="{y - 6}" width="{max(3.0, x2 - x1):.1f}" height="12" rx="3" fill="#d9534f" '
                       f'opacity=".55"><title>{_e(cid)}: deferred in the logs from {_e(_when(first))} to '
                       f'{_e(_when(last or first))} UTC</title></rect>')  # fmt: skip
        if len(marks) > MAX_MARKS:  # bin: one tick per pixel column that has arrivals
            cols: dict[int, int] = {}
            for t in marks:
                cols[int(x(t))] = cols.get(int(x(t)), 0) + 1
            ticks = [(float(c), n) for c, n in sorted(cols.items())]
        else:
            ticks = [(x(t), 1) for t in marks]
        for xx, n in ticks:
            out.append(f'<line x1="{xx:.1f}" y1="{y - 9}" x2="{xx:.1f}" y2="{y + 9}" stroke="#1f4e79" stroke-width="1.5">'
                       f'<title>{n} queued message(s) arrived here</title></line>')  # fmt: skip
    out.append("</svg>")
    return "".join(out)


def retry_schedule(doc: Mapping[str, Any], width: int = 1000) -> str:
    """The attempts of one message after its arrival, the delay warning and the expiry."""
    t = (doc.get("retry") or {}).get("timeline") or {}
    offsets = [float(o) for o in (t.get("attempt_offsets") or [])]
    expires = t.get("expires_offset")
    warning = t.get("warning_offset")
    if not offsets:
        return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} 60" role="img" aria-label="no schedule">'
                '<text x="10" y="35" fill="#666">the retry settings could not be read</text></svg>')
    end = float(expires or max(offsets) or 1.0)
    # a log scale: the first minutes matter to the admin as much as the last days
    import math

    def x(s: float) -> float:
        return 20 + math.log1p(max(0.0, s)) / math.log1p(end) * (width - 60)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} 110" role="img" '
           'aria-label="retry schedule of one message">',
           f'<line x1="20" y1="50" x2="{x(end):.1f}" y2="50" stroke="#888"/>']  # fmt: skip
    for i, o in enumerate(offsets):
        out.append(f'<circle cx="{x(o):.1f}" cy="50" r="4" fill="#1f4e79"><title>attempt {i + 1}: +{_e(_dur(o))}</title></circle>')
        if i < 8 or i == len(offsets) - 1:
            out.append(f'<text x="{x(o):.1f}" y="{35 - 12 * (i % 2)}" font-size="10" text-anchor="middle" fill="#333">+{_e(_dur(o))}</text>')
    if warning:
        out.append(f'<line x1="{x(float(warning)):.1f}" y1="30" x2="{x(float(warning)):.1f}" y2="70" stroke="#e0a800" stroke-width="2"/>'
                   f'<text x="{x(float(warning)):.1f}" y="85" font-size="11" text-anchor="middle" fill="#8a5a00">delay warning +{_e(_dur(float(warning)))}</text>')  # fmt: skip
    out.append(f'<line x1="{x(end):.1f}" y1="30" x2="{x(end):.1f}" y2="70" stroke="#a40000" stroke-width="2"/>'
               f'<text x="{x(end):.1f}" y="100" font-size="11" text-anchor="end" fill="#a40000">expires, returned to sender: '
               f'+{_e(_dur(end))}</text></svg>')  # fmt: skip
    return "".join(out)


def _dur(s: float) -> str:
    return f"{s:.0f}s" if s < 120 else f"{s / 60:.0f}m" if s < 7200 else f"{s / 3600:.1f}h" if s < 172800 else f"{s / 86400:.1f}d"


def _rows(head: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    h = "".join(f"<th>{_e(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def _cause(c: Mapping[str, Any]) -> str:
    out = [f'<h3 id="{_e(c["id"])}">{_e(c["rank"])}. {_e(c["id"])} {_e(c["title"])}'
           f'{"" if c["root_cause"] else " <span class=badge>collateral</span>"}</h3>',
           f"<p>{_e(c['meaning'])}</p>",
           f'<p>Confidence: <span class="{_e(c["confidence_label"])}">{_e(c["confidence_label"])} '
           f'({c["confidence"]:.2f})</span></p><ul>' + "".join(f"<li>{_e(w)}</li>" for w in c["why"]) + "</ul>"]  # fmt: skip
    if c.get("possible_duplicates"):
        out.append(f'<p class="dup">{_e(c["possible_duplicates"])} message(s) may have been delivered twice.</p>')
    if c.get("underlying"):
        out.append("<p>Underlying cause, best supported first:</p><ol>")
        for h in c["underlying"]:
            ev = "".join(f"<li>+ {_e(x)}</li>" for x in h["evidence"]) + "".join(f"<li>- {_e(x)}</li>" for x in h["against"])
            out.append(f'<li><b>{_e(h["title"])}</b> <span class="{_e(h["label"])}">({_e(h["label"])} {h["score"]:.2f})</span><ul>{ev}</ul></li>')
        out.append("</ol>")
    if c.get("evidence"):
        out.append("<p>Evidence:</p><pre>" + "\n".join(f"[{_e(e['where'])}] {_e(e['excerpt'])}" for e in c["evidence"]) + "</pre>")
    if c.get("fixes"):
        out.append("<p>Fix:</p><ul>" + "".join(f'<li class="fix-{_e(f["kind"])}"><b>{_e(f["kind"])}</b>: {_e(f["text"])}</li>'
                                              for f in c["fixes"]) + "</ul>")  # fmt: skip
    if c.get("confirm_with"):
        out.append("<p>Confirm with:</p><pre>" + "\n".join(f"$ {_e(x)}" for x in c["confirm_with"]) + "</pre>")
    if c.get("queue_actions"):
        out.append("<p>Queue (guarded: dry run and confirmation first):</p><pre>" +
                   "\n".join(f"{_e(' '.join(a['argv']))}    # {_e(a['why'])}" for a in c["queue_actions"]) + "</pre>")  # fmt: skip
    return "".join(out)


def render_html(doc: Mapping[str, Any]) -> str:
    v = doc["verdict"]
    q = doc.get("queue") or {}
    badge = ' <span class="badge">redacted</span>' if doc.get("redacted") else ""
    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>pfdiag report: {_e(v['headline'])}</title><style>{CSS}</style></head><body>",
        f"<h1>pfdiag report{badge}</h1>",
        f'<div class="verdict {_e(v["status"])}"><b>{_e(v["headline"])}</b><br>{_e(v["summary"])}<br>'
        f'<span class=muted>verdict {_e(v["status"])} (exit {_e(v["exit_code"])}) &middot; where: {_e(doc["target"]["where"])}'
        f'{"" if doc["target"].get("live") else " (recorded snapshot)"} &middot; generated {_e(doc.get("generated"))} '
        f'by pfdiag {_e(doc.get("pfdiag_version"))}</span></div>',
    ]  # fmt: skip
    if q:
        counts = ", ".join(f"{k} {n}" for k, n in (q.get("counts") or {}).items() if n) or "empty"
        parts.append(f"<p>Queue: {_e(q.get('total_messages'))} message(s) ({_e(counts)}).</p>")
    if doc.get("causes"):
        parts.append("<h2>Causes, most important first</h2>")
        parts.append(_rows(("#", "cause", "confidence", "queued recipients", "deferred messages (log)", "top destination"),
                           [(c["rank"], f"{c['id']} {c['title']}" + ("" if c["root_cause"] else " (collateral)"),
                             f"{c['confidence_label']} {c['confidence']:.2f}", c["impact"]["queued_recipients"],
                             c["impact"]["log_messages"], c["domains"][0]["domain"] if c["domains"] else "-")
                            for c in doc["causes"]]))  # fmt: skip
        parts.append("<h2>Deferrals over time</h2>" + deferral_timeline(doc))
        parts.append("<p class=muted>Bars: first to last deferral in the logs; ticks: arrival of each message still queued.</p>")
        parts += [_cause(c) for c in doc["causes"]]
    if doc.get("retry"):
        t = doc["retry"]["timeline"]
        parts.append("<h2>Retry schedule</h2>" + retry_schedule(doc))
        parts.append(f"<p>{_e(t.get('attempt_count'))} attempts after arrival ({_e(t.get('summary'))}), then the message "
                     "expires and is returned to the sender.</p>")  # fmt: skip
    if doc.get("warnings"):
        parts.append("<h2>Warnings</h2><ul>" + "".join(f"<li>{_e(w['summary'])}</li>" for w in doc["warnings"]) + "</ul>")
    if doc.get("errors"):
        parts.append("<h2>What could not be checked</h2><ul>" + "".join(f"<li>{_e(e['summary'])}</li>" for e in doc["errors"]) + "</ul>")
    parts.append("<h2>Checks run</h2>" + _rows(("check", "state", "seconds", "where", "detail"),
                                                [(s["id"], s["state"], f"{s['seconds']:.2f}", s["where"], s["detail"])
                                                 for s in doc.get("steps", [])]))  # fmt: skip
    parts.append("</body></html>\n")
    return "".join(parts)
