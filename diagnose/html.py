"""The report as one self-contained HTML page (no external CSS, JS, fonts or images): a heat strip
of the deferrals per cause by hour (plain HTML cells, readable on a phone), and an inline SVG chart
of the retry schedule.

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

from diagnose.report import _read_line, recorded_tag
from diagnose.textsafe import html as _safe

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}h3{font-size:1.05em}
table{border-collapse:collapse;margin:.5em 0;width:100%}th,td{border:1px solid #ddd;padding:.3em .5em;text-align:left;vertical-align:top}
th{background:#f4f4f4}code,pre{font:12px/1.4 ui-monospace,Menlo,Consolas,monospace}pre{background:#f7f7f7;padding:.6em;overflow-x:auto;white-space:pre-wrap;overflow-wrap:anywhere}
.verdict{padding:.8em 1em;border-radius:6px;margin:1em 0}.root-cause{background:#fde8e8}.warnings{background:#fff6dd}
.no-problem{background:#e6f6e6}.undiagnosed{background:#f1e6f8}.badge{display:inline-block;padding:.1em .5em;border-radius:4px;background:#444;color:#fff;font-size:.8em;margin-left:.5em}
.redacted{background:#1f4e79}.high{color:#a40000;font-weight:600}.medium{color:#8a5a00}.low{color:#666}.dup{color:#a40000;font-weight:600}
.fix-contact{border-left:3px solid #3a6ea5;padding-left:.5em}.muted{color:#666}svg{max-width:100%;height:auto;background:#fcfcfc;border:1px solid #eee}
.cause{break-inside:avoid-page}.do-now{border:2px solid #a40000;border-radius:6px;padding:.2em 1em .6em;margin:1em 0}
.do-now h2{border:none;margin-top:.4em}.do-now pre{margin:.3em 0}
.table-wrap{overflow-x:auto}
.hs{margin:.6em 0}.hs-row{display:flex;align-items:center;gap:.5em;margin:2px 0}.hs-label{flex:0 0 3.2em;font:12px ui-monospace,Menlo,Consolas,monospace}
.hs-cells{display:flex;flex:1;gap:1px;min-width:0}.hs-cells i{flex:1;height:16px;background:#f0f0f0;min-width:2px}
.hs-cells i.l1{background:#f9d3cd}.hs-cells i.l2{background:#ef9a8c}.hs-cells i.l3{background:#d9534f}.hs-cells i.l4{background:#8c0000}
.hs-steady{flex:1;font-size:.9em;color:#444;border-left:4px solid #d9534f;padding-left:.4em}
.hs-axis{display:flex;justify-content:space-between;margin-left:3.7em;font-size:11px;color:#666}
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


HEAT_COLUMNS = 48  # at most this many columns: a longer log is counted into 2, 3, 4, 6, 12 or 24-hour columns
_STEPS = (1, 2, 3, 4, 6, 12, 24)


def _level(n: int, top: int) -> int:
    """0 for none, else 1..4 on a log scale of the busiest cell: a change the eye sees is a change in level."""
    if n <= 0:
        return 0
    return 1 + min(3, int(3 * math.log1p(n) / math.log1p(max(top, 1)) + 1e-9)) if top > 1 else 4


def heat_strip(doc: Mapping[str, Any]) -> str:
    """Deferral lines per cause by hour, one row per cause (the report's order). A row that does not
    change from column to column is one line of text, and when no row changes the whole strip is one
    sentence: a server that defers all day the same way is said to, not drawn as identical bars."""
    hours = doc.get("log_hours") if isinstance(doc.get("log_hours"), Mapping) else {}
    rows: list[tuple[str, dict[int, int]]] = []
    for c in _maps(doc.get("causes"))[:MAX_LANES]:
        counts: dict[int, int] = {}
        for pair in _list((hours or {}).get(str(c.get("id")))):
            if isinstance(pair, (list, tuple)) and len(pair) == 2:
                t, n = _num(pair[0]), _num(pair[1])
                if t is not None and n is not None and n > 0:
                    counts[int(t // 3600)] = counts.get(int(t // 3600), 0) + int(n)
        if counts:
            rows.append((str(c.get("id")), counts))
    if not rows:
        return "<p class=muted>No deferral with a time in the logs: nothing to draw by hour.</p>"
    first = min(min(r) for _, r in rows)
    last = max(max(r) for _, r in rows)
    step = next((k for k in _STEPS if (last - first) // k + 1 <= HEAT_COLUMNS), 24 * ((last - first) // (24 * HEAT_COLUMNS) + 1))
    ncol = (last - first) // step + 1
    cols = [[0] * ncol for _ in rows]
    for i, (_, counts) in enumerate(rows):
        for h, n in counts.items():
            cols[i][(h - first) // step] += n
    top = max(max(r) for r in cols)
    unit = "hour" if step == 1 else f"{step} hours"
    start, end = first * 3600, (first + ncol * step) * 3600
    levels = [[_level(n, top) for n in r] for r in cols]
    steady = [len(set(lv)) == 1 for lv in levels]

    def rate(r: list[int]) -> str:
        return f"about {sum(r) / len(r):.0f} deferral(s) every {unit}"

    span = f"{_e(_full(start)[:16])} .. {_e(_full(end)[:16])} UTC"
    if all(steady):
        said = "; ".join(f"{_e(cid)} {rate(r)}" for (cid, _), r in zip(rows, cols))
        return f'<p class="hs hs-steady">No change from {span}: {said}.</p>'
    out = ['<div class=hs role=img aria-label="deferrals per cause by hour">']
    for (cid, _), r, lv, flat in zip(rows, cols, levels, steady):
        out.append(f'<div class=hs-row><span class=hs-label>{_e(cid)}</span>')
        if flat:
            out.append(f"<span class=hs-steady>no change: {rate(r)}</span></div>")
            continue
        cells = "".join(f'<i class=l{lv[k]} title="{_e(cid)} {_e(_full((first + k * step) * 3600)[5:16])} UTC: {n}"></i>'
                        for k, n in enumerate(r))  # fmt: skip
        out.append(f"<span class=hs-cells>{cells}</span></div>")
    mid = start + (end - start) / 2
    out.append(f"<div class=hs-axis><span>{_e(_when(start, end - start))}</span><span>{_e(_when(mid, end - start))}</span>"
               f"<span>{_e(_when(end, end - start))} UTC</span></div></div>")  # fmt: skip
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
    where = f"{_e(target.get('where'))}{_e(recorded_tag(target))}"
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
    if causes:
        parts.append("<h2>Deferrals by hour</h2>" + heat_strip(doc))
        parts.append("<p class=muted>Deferral lines in the logs per cause and hour; darker = more (hover a cell "
                     "for its count).</p>")  # fmt: skip
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
    # each thing once: a configuration risk shown under the retry schedule is not repeated as a warning
    shown_risks = {f"{r.get('parameter')}: {r.get('why')}" for r in _maps((retry or {}).get("risks")) if t}
    warnings = [w for w in _maps(doc.get("warnings")) if w.get("summary") not in shown_risks]
    if warnings:
        parts.append("<h2>Warnings</h2><ul>" + "".join(f"<li>{_e(w.get('summary'))}</li>" for w in warnings) + "</ul>")
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
