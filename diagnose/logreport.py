"""`pfdiag logs` results: one dict (the documented JSON, docs/logs-json.md), and
text/Markdown renderings of that same dict, so every format says the same thing.
Renderers return strings; they never print.
"""

from __future__ import annotations

from collections import Counter

import io
import re
import time
from datetime import datetime, timezone
from typing import Any

from checks.logs import ReadStats
from diagnose import delays as delays_mod
from diagnose.deferrals import PARTS, DeferralAnalysis, quantile
from diagnose.textsafe import console, md_block, md_code, md_text, rich_markup, rich_text

SCHEMA = "pfdiag.logs/1"
TOP = 5
SAID_PER_CAUSE = 3  # Postfix's own warnings shown under each cause (most frequent first)
SAID_OTHER = 5  # and unrelated ones, in one short section at the end
# companion kinds that are no warning (TLS logged as it went) or are shown elsewhere (PIX: end of data)
NOT_WARNINGS = ("Untrusted TLS connection", "Trusted TLS connection", "Verified TLS connection",
                "Anonymous TLS connection", "PIX workarounds enabled")  # fmt: skip


def postfix_said(report: dict[str, Any]) -> tuple[dict[str, list[tuple[str, int]]], list[tuple[str, int]]]:
    """Postfix's own warning lines of the log (the report's "companions": lines without a queue id
    that name a problem, e.g. "SMTPS wrappermode ... requires setting smtp_tls_wrappermode = yes",
    "warning: connect to transport private/X"), each as (example line, count): under the cause
    their text classifies as when that cause is in the report, SAID_PER_CAUSE at most; the others
    apart (SAID_OTHER at most). Most frequent first."""
    from diagnose.classify import classify

    shown = {c["id"] for c in report.get("causes") or []}
    by_cause: dict[str, list[tuple[str, int]]] = {}
    other: list[tuple[str, int]] = []
    rows = sorted((report.get("companions") or {}).items(), key=lambda kv: (-kv[1]["count"], kv[0]))
    for kind, c in rows:
        example = c.get("example") or kind
        if kind.startswith(NOT_WARNINGS):
            continue
        _, sep, message = example.partition("]: ")
        cause = classify(message if sep else example).cause_id
        if cause in shown:
            by_cause.setdefault(cause, []).append((example, c["count"]))
        else:
            other.append((example, c["count"]))
    other.sort(key=lambda ex_n: not _GAVE_UP.search(ex_n[0]))  # fatal/panic first: a daemon stopped (stable)
    return {k: v[:SAID_PER_CAUSE] for k, v in by_cause.items()}, other[:SAID_OTHER]


_GAVE_UP = re.compile(r"\]: (?:fatal|panic): ")


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _cause_meta(cause_id: str) -> tuple[str, str, bool, str]:
    """(slug, title, is_root_cause, family) from the catalog; tolerant of unknown ids."""
    try:
        from diagnose.causes import get_cause

        cause = get_cause(cause_id)
        return cause.slug, cause.title, bool(getattr(cause, "root", True)), cause.family
    except Exception:
        return cause_id, cause_id, cause_id != "E11", "unknown"


def _profile(counters: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    return {p: {"median": quantile(counters[p], 0.5), "p95": quantile(counters[p], 0.95)} for p in PARTS}


def to_dict(
    analysis: DeferralAnalysis,
    stats: ReadStats,
    since: float | None = None,
    until: float | None = None,
    timeouts: dict[str, float] | None = None,
) -> dict[str, Any]:
    a = analysis.finish()
    root_events = sum(c.events for c in a.causes.values())
    causes = []
    for c in sorted(a.causes.values(), key=lambda c: (-c.events, -c.collateral, c.cause_id)):
        if not (c.events or c.collateral or c.attempts):
            continue
        slug, title, root, family = _cause_meta(c.cause_id)
        profile = _profile(c.delays)
        has_delays = any(c.delays[p] for p in PARTS)
        causes.append(
            {
                "id": c.cause_id,
                "slug": slug,
                "title": title,
                "root_cause": root,
                "deferrals": c.events,
                "collateral": c.collateral,
                "other_mx_failures": c.attempts,
                "softbounce": c.softbounce,
                "messages": c.messages,
                "share": round(c.events / root_events, 4) if root_events else 0.0,
                "first_seen": _iso(c.first_seen),
                "last_seen": _iso(c.last_seen),
                "hours": [[h * 3600, n] for h, n in sorted(c.hours.items())],  # [start of the hour (epoch), deferral lines]
                "top_domains": c.domains.most_common(TOP),
                "top_relays": c.relays.most_common(TOP),
                "phases": dict(c.phases.most_common()),
                "dsn": dict(c.dsns.most_common(TOP)),
                "delays": profile if has_delays else None,
                "delays_meaning": delays_mod.explain(profile, timeouts, _phase(c.phases), family == "reply") if has_delays else [],
                "example": c.example,
                # each top destination's own delays= profile and first line: a report focused on one
                # domain reasons from these, not from the cause's values over every destination
                "by_domain": {d: {"delays": _profile(sl.delays) if any(sl.delays[p] for p in PARTS) else None,
                                  "example": sl.example}
                              for d, _ in c.domains.most_common(TOP) if (sl := c.by_domain.get(d)) is not None},
            }
        )

    def places(table: dict, key: str) -> list[dict[str, Any]]:
        rows = [
            {
                key: name,
                "deferred": p.deferred,
                "collateral": p.collateral,
                "sent": p.sent,
                "bounced": p.bounced,
                "causes": dict(p.causes.most_common(TOP)) if p.causes else {},
            }
            for name, p in table.items()
            if p.deferred or p.collateral
        ]
        rows.sort(key=lambda r: (-(r["deferred"] + r["collateral"]), r[key]))
        return rows[:50]

    eod = a.eod
    return {
        "schema": SCHEMA,
        "generated": _iso(time.time()),
        "window": {
            "since": _iso(since),
            "until": _iso(until),
            "first_line": _iso(a.first_ts),
            "last_line": _iso(a.last_ts),
        },
        "input": {
            "files": stats.files,
            "lines": stats.lines,
            "postfix_lines": stats.postfix_lines,
            "other_program_lines": stats.other_lines,
            "outside_window": stats.outside_window,
            "without_timestamp": stats.no_timestamp,
            "malformed": {
                kind: {"count": n, "examples": stats.examples.get(kind, [])} for kind, n in sorted(stats.malformed.items())
            },
            "truncated_reasons": a.truncated_reasons,
            "warnings": list(stats.warnings),  # damaged files: what follows misses their end
        },
        "totals": {
            "statuses": dict(a.statuses.most_common()),
            "deferral_lines": a.deferral_lines,
            "root_deferral_lines": root_events,
            "collateral_lines": a.collateral_lines,
            "messages_deferred": a.messages_deferred,
        },
        "traffic": _traffic(a),
        "causes": causes,
        "domains": places(a.domains, "domain"),
        "relays": places(a.relays, "relay"),
        "outcomes": {
            "delivered_later": a.outcomes.delivered_later,
            "bounced_later": a.outcomes.bounced_later,
            "expired": a.outcomes.expired,
            "deleted": a.outcomes.deleted,
            "still_deferred": a.outcomes.still_deferred,
            "unresolved": a.outcomes.unresolved,
        },
        "end_of_data": {
            "messages": eod.messages,
            "recipients": eod.recipients,
            "delivered_later_possible_duplicates": eod.delivered_later,
            "still_deferred": eod.still_deferred,
            "expired_or_bounced": eod.expired_or_bounced,
            "message_sizes": dict(eod.sizes.most_common()),
            "hosts": eod.hosts.most_common(TOP),
            "pix_workarounds": eod.pix_workarounds.most_common(TOP),
        },
        "companions": {k: {"count": n, "example": a.companion_examples.get(k)} for k, n in a.companions.most_common()},
    }


def _traffic(a: DeferralAnalysis) -> dict[str, int]:
    """Whole-traffic totals, counted as pflogsumm's grand totals (docs/logs-json.md)."""
    sts, t = a.statuses, a.traffic
    return {
        "received": t.received,
        "delivered": sts["sent"] - t.forwarded,
        "forwarded": t.forwarded,
        "deferred": a.messages_deferred,
        "deferrals": sts["deferred"],
        "bounced": sts["bounced"],
        "rejected": t.rejected,
        "reject_warnings": t.reject_warnings,
        "held": t.held,
        "discarded": t.discarded,
        "expired": sts["expired"] + sts["force-expired"],
    }


def traffic_lines(report: dict[str, Any]) -> list[str]:
    """The whole traffic in two lines, for the top of the text and Markdown reports."""
    t = report.get("traffic")
    if not t:
        return []
    return [
        f"traffic: {t['received']:,} received, {t['delivered']:,} delivered"
        + (f", {t['forwarded']:,} forwarded" if t["forwarded"] else "")
        + f", {t['deferred']:,} deferred ({t['deferrals']:,} deferrals), {t['bounced']:,} bounced, {t['expired']:,} expired",
        f"refused: {t['rejected']:,} rejected"
        + (f", {t['reject_warnings']:,} reject warnings" if t["reject_warnings"] else "")
        + f", {t['held']:,} held, {t['discarded']:,} discarded",
    ]


# -- text (rich) -------------------------------------------------------------------


def _short(iso: str | None) -> str:
    """'2026-11-28T10:00:00Z' -> '2026-11-28 10:00' for narrow table cells."""
    return iso[:16].replace("T", " ") if iso else "?"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _top(pairs: list) -> str:
    return ", ".join(f"{k} ({n})" for k, n in pairs) or "-"


def _prof(p: dict | None) -> str:
    if not p:
        return "-"
    return " / ".join(f"{_num(p[x]['median'])}|{_num(p[x]['p95'])}" for x in PARTS)


def render_text(report: dict[str, Any], width: int = 120, color: bool = False) -> str:
    """Every value from the log (domains, relays, reply texts, unreadable lines) reaches rich
    through diagnose.textsafe: shown literally, never parsed as markup."""
    from rich.table import Table

    buf = io.StringIO()
    con = console(buf, width=width, force_terminal=color, no_color=not color)
    inp, tot = report["input"], report["totals"]
    w = report["window"]
    for warning in inp.get("warnings", []):
        con.print(rich_text(f"warning: {warning}", "bold red"), soft_wrap=True)
    con.print(rich_markup("[bold]Postfix deferrals[/bold]  {} .. {} (UTC)", _short(w["first_line"]), _short(w["last_line"])))
    if report.get("timeouts"):
        con.print(rich_markup("timings compared with: {}", report["timeouts"]["source"]))
    con.print(
        f"read {inp['lines']:,} lines from {len(inp['files'])} file(s): {inp['postfix_lines']:,} from Postfix, "
        f"{inp['other_program_lines']:,} from other programs"
        + (f", {inp['outside_window']:,} outside the time window" if inp["outside_window"] else "")
    )
    sts = tot["statuses"]
    for line in traffic_lines(report):
        con.print(line)
    con.print(
        "deliveries: " + (", ".join(f"{k} {v:,}" for k, v in sts.items()) or "none")
        + f"; {tot['messages_deferred']:,} message(s) deferred at least once"
    )
    if not report["causes"]:
        con.print("\n[green]No deferrals in this log.[/green]")
    else:
        wide = width >= 110  # narrow terminals get the essentials; details follow per cause
        t = Table(title="\nDeferral causes (most frequent first)", title_justify="left", box=None, pad_edge=False)
        t.add_column("cause", overflow="fold", min_width=44 if wide else 24)
        for col in ("deferrals", "share", "collateral", "msgs"):
            t.add_column(col, justify="right", no_wrap=True)
        t.add_column("last seen", no_wrap=True)
        if wide:
            t.add_column("top destination", overflow="ellipsis", no_wrap=True, max_width=32)
        for c in report["causes"]:
            label = f"{c['id']} {c['title']}" + ("" if c["root_cause"] else " (collateral)")
            row = [
                label,
                f"{c['deferrals']:,}",
                _pct(c["share"]),
                f"{c['collateral']:,}",
                f"{c['messages']:,}",
                _short(c["last_seen"]),
            ]
            if wide:
                row.append(_top(c["top_domains"][:1]))
            t.add_row(*map(rich_text, row))
        con.print(t)
        said, _ = postfix_said(report)
        for c in report["causes"]:
            con.print(rich_markup(
                "\n[bold]{} {}[/bold] — {} deferral(s), {} collateral, {} message(s), {} .. {}", c["id"], c["title"],
                f"{c['deferrals']:,}", f"{c['collateral']:,}", f"{c['messages']:,}", _short(c["first_seen"]), _short(c["last_seen"])))  # fmt: skip
            con.print(rich_markup("  to:      {}", _top(c["top_domains"])))
            if c["top_relays"]:
                con.print(rich_markup("  via:     {}", _top(c["top_relays"])))
            if c["delays"]:
                parts = "  ".join(f"{p} {_num(c['delays'][p]['median'])}|{_num(c['delays'][p]['p95'])}" for p in PARTS)
                con.print(f"  delays:  {parts}  (median|p95 s)")
            for line in c["delays_meaning"]:
                con.print(rich_markup("           - {}", line))
            if c["other_mx_failures"]:
                con.print(f"  also {c['other_mx_failures']:,} failure(s) at one MX host before the next was tried")
            if c["example"]:
                con.print(rich_markup("  e.g.     {}", c["example"]), soft_wrap=True)
            for line, n in said.get(c["id"], []):
                con.print(rich_markup("  postfix: {}  ({}x)", line, f"{n:,}"), soft_wrap=True)
        _render_places(con, Table, report["domains"], "domain", "Destinations with deferrals", width)
        _render_places(con, Table, report["relays"], "relay", "Next hops with deferrals", width)
    o = report["outcomes"]
    con.print(
        f"\nRecipients deferred at least once: delivered later {o['delivered_later']:,}, bounced later {o['bounced_later']:,}, "
        f"expired {o['expired']:,}, deleted {o['deleted']:,}, still deferred at the end of the log {o['still_deferred']:,}"
        + (f", no end seen {o['unresolved']:,}" if o["unresolved"] else "")
        + "."
    )
    e = report["end_of_data"]
    if e["messages"]:
        con.print(
            f"\n[bold yellow]End-of-data timeouts[/bold yellow]: {e['messages']:,} message(s), {e['recipients']:,} recipient(s). "
            f"{e['delivered_later_possible_duplicates']:,} recipient(s) got the mail from a later attempt and MAY HAVE IT TWICE; "
            f"{e['still_deferred']:,} still deferred; {e['expired_or_bounced']:,} expired or bounced."
        )
        con.print(rich_markup("  hosts: {}; message sizes: {}", _top(e["hosts"]), _top(list(e["message_sizes"].items()))))
        if e["pix_workarounds"]:
            con.print(rich_markup("  Postfix turned on its PIX firewall workarounds for: {}", _top(e["pix_workarounds"])))
    other = postfix_said(report)[1]
    if other:
        con.print("\n[bold]Other Postfix warnings[/bold] (no deferral cause in this log; a daemon's fatal/panic first, then most frequent):")
        for line, n in other:
            con.print(rich_markup("  {}  ({}x)", line, f"{n:,}"), soft_wrap=True)
    if inp["malformed"]:
        con.print("\n[bold]Lines that could not be read as they are[/bold] (counted):")
        for kind, m in inp["malformed"].items():
            con.print(rich_markup("  {}: {}", kind, f"{m['count']:,}"))
            for ex in m["examples"][:2]:
                con.print(rich_markup("    {}", ex), soft_wrap=True)
    return buf.getvalue()


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:g}"


def _render_places(con: Any, table_cls: Any, rows: list[dict], key: str, title: str, width: int) -> None:
    if not rows:
        return
    t = table_cls(title=f"\n{title}", title_justify="left", box=None, pad_edge=False)
    t.add_column(key, overflow="ellipsis", no_wrap=True, max_width=max(16, min(48, width - 64)))
    for col in ("deferred", "collateral", "sent", "bounced"):
        t.add_column(col, justify="right", no_wrap=True)
    t.add_column("causes", overflow="fold", min_width=16)
    for r in rows[:10]:
        t.add_row(*map(rich_text, (r[key], f"{r['deferred']:,}", f"{r['collateral']:,}", f"{r['sent']:,}", f"{r['bounced']:,}",
                                   _top(list(r["causes"].items())))))  # fmt: skip
    if len(rows) > 10:
        t.add_row(f"... {len(rows) - 10} more (see --format json)", "", "", "", "", "")
    con.print(t)


# -- Markdown ----------------------------------------------------------------------


def render_markdown(report: dict[str, Any]) -> str:
    """Values from the log are Markdown-escaped or fenced (diagnose.textsafe)."""
    inp, tot, w = report["input"], report["totals"], report["window"]
    out = [
        *(f"> **Warning:** {md_code(warning)}\n" for warning in inp.get("warnings", [])),
        "## Postfix deferrals",
        "",
        f"Log window: {md_text(w['first_line'] or '?')} .. {md_text(w['last_line'] or '?')}; "
        f"{inp['lines']:,} lines read, {inp['postfix_lines']:,} from Postfix; "
        f"{tot['deferral_lines']:,} deferral lines ({tot['collateral_lines']:,} collateral), "
        f"{tot['messages_deferred']:,} messages deferred at least once.",
        "",
        *(f"{md_text(line)}  " for line in traffic_lines(report)),
        "",
    ]
    if report["causes"]:
        out += [
            "| cause | deferrals | share | collateral | messages | first seen | last seen | top destinations | delays a/b/c/d median\\|p95 (s) |",
            "|---|---:|---:|---:|---:|---|---|---|---|",
        ]
        for c in report["causes"]:
            out.append(
                "| "
                + " | ".join(
                    md_text(x)
                    for x in (
                        f"{c['id']} {c['title']}",
                        c["deferrals"],
                        _pct(c["share"]),
                        c["collateral"],
                        c["messages"],
                        c["first_seen"] or "?",
                        c["last_seen"] or "?",
                        _top(c["top_domains"][:3]),
                        _prof(c["delays"]),
                    )
                )
                + " |"
            )
        said, _ = postfix_said(report)
        for c in report["causes"]:
            out += ["", f"### {md_text(c['id'])} {md_text(c['title'])}", ""]
            for line in c["delays_meaning"]:
                out.append(f"- {md_text(line)}")
            if c["example"]:
                out += [""] + md_block([c["example"]])
            if said.get(c["id"]):
                out += ["", "Postfix said (count):", ""] + md_block(f"{line}  ({n}x)" for line, n in said[c["id"]])
    else:
        out.append("No deferrals in this log.")
    o, e = report["outcomes"], report["end_of_data"]
    out += [
        "",
        f"Recipients deferred at least once: delivered later {o['delivered_later']}, bounced later {o['bounced_later']}, "
        f"expired {o['expired']}, deleted {o['deleted']}, still deferred {o['still_deferred']}, no end seen {o['unresolved']}.",
    ]
    if e["messages"]:
        out += [
            "",
            f"**End-of-data timeouts:** {e['messages']} message(s); {e['delivered_later_possible_duplicates']} delivered "
            "by a later attempt and may have arrived twice.",
        ]
    other = postfix_said(report)[1]
    if other:
        out += ["", "### Other Postfix warnings", "", "No deferral cause in this log; a daemon's fatal/panic first, then most frequent (count):", ""]
        out += md_block(f"{line}  ({n}x)" for line, n in other)
    if inp["malformed"]:
        out += ["", "Lines that could not be read as they are: " + ", ".join(f"{md_text(k)} {m['count']}" for k, m in inp["malformed"].items())]
    return "\n".join(out) + "\n"


def _phase(phases: Counter) -> str | None:
    """The phase most of a cause's reasons name, when most do (a mixed cause is read without one)."""
    if not phases:
        return None
    phase, n = phases.most_common(1)[0]
    return phase if phase and n * 2 > sum(phases.values()) else None
