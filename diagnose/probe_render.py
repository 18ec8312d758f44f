"""pfdiag probe's text and Markdown output of a pfdiag.probe/1 document (diagnose.probedoc)."""

from __future__ import annotations

from typing import Any

from diagnose.textsafe import md_code, md_text, visible


def _code(p: dict[str, Any]) -> str:
    if p["reply_code"] is None:
        return "-"
    return f"{p['reply_code']}" + (f" {p['enhanced_code']}" if p["enhanced_code"] else "")


def _short(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _secs(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _header_lines(doc: dict[str, Any]) -> list[str]:
    pr = doc["probe"]
    out = [f"SMTP probe of {doc['destination']} -> {doc['address']} port {doc['port']} as EHLO {doc['helo']}"]
    out += [f"note: {n}" for n in doc["notes"]]
    out.append(f"timeouts: {doc['timeouts_source']}")
    b = doc.get("bind")
    if b is not None:
        want = f"{b['address']} ({b['from']})" if b["address"] else "the default (no smtp_bind_address for this family)"
        seen = f"; connected from {b['local_address']}" if b["local_address"] else ""
        out.append(f"source address: {want}{seen}" + (f"; BIND FAILED: {b['bind_error']}" if b["bind_error"] else ""))
    out.append(f"banner: {pr['banner'] or '(none)'}")
    if pr["masked_banner"]:
        out.append("masked banner: SMTP-inspecting firewall (Cisco PIX/ASA fixup) in the path")
    offered = {True: "yes", False: "no", None: "unknown (no EHLO answer)"}[pr["starttls_offered"]]
    caps = ", ".join(pr["capabilities"]) or "-"
    out.append(f"capabilities: {caps}; STARTTLS offered: {offered}")
    tls = pr["tls"]
    out.append("TLS: " + (f"{tls['protocol']} {tls['cipher']} ({tls['bits']} bits)" if tls else "not used"))
    return out


def _phase_rows(doc: dict[str, Any]) -> list[list[str]]:
    return [[p["phase"], f"{p['seconds']:.3f}", p["verdict"], f"{p['timeout_param']}={p['timeout']:g}",
             _code(p), p.get("cause_id") or "-", _short(p["text"] or p["detail"])] for p in doc["probe"]["phases"]]  # fmt: skip


def _ladder_rows(lad: dict[str, Any]) -> list[list[str]]:
    rows = []
    for st in lad["steps"]:
        data = f"{_secs(st['data_seconds'])} s -> {st['data_reply'] or '-'}"
        eod = f"{_secs(st['eod_seconds'])} s -> {st['eod_reply'] or '-'}"
        rows.append([str(st["size"]), data, f"{_secs(st['body_seconds'])} s", eod, st["outcome"], st["message_id"]])
    return rows


_PHASE_HEAD = ["phase", "seconds", "verdict", "Postfix timeout", "reply", "cause", "text"]
_LADDER_HEAD = ["size", "DATA -> 354", "body write", "'.' -> reply", "verdict", "Message-ID"]


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows]]


def _finding_line(f: dict[str, Any]) -> str:
    cause = f" [{f['cause_id']} {f['cause_title']}]" if f["cause_id"] else ""
    return f"{f['severity']}{cause}: {f['summary']}"


def render_text(doc: dict[str, Any]) -> str:
    out = _header_lines(doc) + [""] + _table(_PHASE_HEAD, _phase_rows(doc))
    if doc["probe"]["notes"]:
        out += [""] + [f"* {n}" for n in doc["probe"]["notes"]]
    lad = doc["ladder"]
    if lad:
        out += ["", "End-of-data size ladder:"] + _table(_LADDER_HEAD, _ladder_rows(lad))
        out += ["", f"conclusion: {lad['kind']}" + (f" ({lad['cause_id']})" if lad["cause_id"] else "")
                + f": {lad['explanation']}"]  # fmt: skip
        out += [f"  - {s}" for s in lad["suggestions"]]
        out.append("Message-IDs sent (look for duplicates at the recipient): " + " ".join(lad["message_ids"]))
    out += ["", "Findings:"] + [f"  {_finding_line(f)}" for f in doc["findings"]]
    if len(doc.get("addresses") or []) > 1:
        out += ["", "Every address, in the order Postfix tries them:"]
        for i, a in enumerate(doc["addresses"], 1):
            state = "ok" if a["ok"] else f"FAILS: {a['error'] or 'see phases'}"
            out.append(f"  {i}. {a['address']}:{a['port']}  {state}")
    if doc.get("tls"):
        t = doc["tls"]
        c = t["certificate"]
        out += ["", f"TLS: {t['protocol'] or '-'} {t['cipher'] or ''}; policy {t['policy']['level']} ({t['policy']['source']})"]
        if t.get("chain") and len(t["chain"]) > 1:
            out.append("  chain sent: " + " <- ".join(x["subject"] for x in t["chain"]))
        if t.get("dane"):
            d = t["dane"]
            out.append(f"  DANE: {d['state']}" + (f" ({d['matched']})" if d["matched"] else "") + f": {d['why']}")
        if c:
            out.append(f"  certificate: {c['subject']}, issuer {c['issuer']}, SANs {', '.join(c['sans']) or '-'}, "
                       f"expires {c['not_after'][:10]} ({c['days_left']} days){', SELF-SIGNED' if c['self_signed'] else ''}"
                       f"{', name matches ' + c['name_match'] if c['name_match'] else ''}")  # fmt: skip
        if t.get("name_check"):
            n = t["name_check"]
            out.append(f"  names checked: {', '.join(n['names']) or '-'} ({n['source']}; nexthop {n['nexthop'] or '-'}, "
                       f"hostname {n['hostname'] or '-'})")  # fmt: skip
        would = {True: "Postfix would deliver", False: "Postfix would NOT deliver", None: "TLS policy"}[t["postfix_would_deliver"]]
        out.append(f"  {would}: {t['why']}"
                   + (f" (it logs: {t['postfix_would_log']})" if t["postfix_would_log"] and not t["postfix_would_deliver"] else ""))  # fmt: skip
    if doc.get("compare"):
        c = doc["compare"]
        out += ["", f"Compared with this machine: {c['conclusion']}"]
        for label, p in ((c["where"][0], c["there"]), ("this machine", c["here"])):
            out.append(f"  {label}: " + ", ".join(f"{ph['phase']} {ph['verdict']}" for ph in p["phases"]))
    return "\n".join(map(visible, out)) + "\n"  # banners, replies, names: control characters written out (textsafe)


def _md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    esc = md_text  # replies are outside text: escaped, '|' included (diagnose.textsafe)
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(map(esc, r)) + " |" for r in rows]


def render_md(doc: dict[str, Any]) -> str:
    out = [f"# SMTP probe of {md_text(doc['destination'])}", ""] + [f"- {md_text(ln)}" for ln in _header_lines(doc)[1:]]
    out += ["", "## Phases", ""] + _md_table(_PHASE_HEAD, _phase_rows(doc))
    if doc["probe"]["notes"]:
        out += [""] + [f"- {md_text(n)}" for n in doc["probe"]["notes"]]
    lad = doc["ladder"]
    if lad:
        out += ["", "## End-of-data size ladder", ""] + _md_table(_LADDER_HEAD, _ladder_rows(lad))
        out += ["", f"**{md_text(lad['kind'])}**" + (f" ({lad['cause_id']})" if lad["cause_id"] else "") + f": {md_text(lad['explanation'])}", ""]
        out += [f"- {md_text(s)}" for s in lad["suggestions"]]
        out += ["", "Message-IDs sent: " + ", ".join(md_code(m) for m in lad["message_ids"])]
    out += ["", "## Findings", ""] + [f"- {md_text(_finding_line(f))}" for f in doc["findings"]]
    return "\n".join(out) + "\n"
