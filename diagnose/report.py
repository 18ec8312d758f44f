"""The root-cause report: one dict (schema pfdiag.report/1, docs/report-json.md) and its
renderings. Renderers return strings and never print; redaction is a pass over the dict.

Exit codes of ``pfdiag report`` (and of the wizard) follow the verdict:
  0 no problem found, 4 deferrals with a root cause, 5 warnings only, 1 could not diagnose
  (the evidence could not be read, or no deferral could be explained); 2 usage error.
"""

from __future__ import annotations

import re
import time
from typing import Any, Mapping

from checks.model import Finding, Severity
from checks.targets.pasted import log_label, paste_file_label
from diagnose import __version__, outbreak
from diagnose.correlate import (EOD_CAUSES, REMOTE_FAMILIES, RankedCause, confidence_label, per_destination,
                                rank, services_of)
from diagnose.engine import Facts
from diagnose.fate import CLEARS_BY_ITSELF, FUTILE
from diagnose.textsafe import console, md_block, md_code, md_text, rich_markup, rich_text, visible

SCHEMA = "pfdiag.report/1"
EXIT = {"no-problem": 0, "root-cause": 4, "warnings": 5, "undiagnosed": 1}
HEADLINES = {
    "no-problem": "No deferred mail and nothing risky found",
    "root-cause": "Deferred mail: root cause found",
    "warnings": "No deferred mail, but warnings",
    "undiagnosed": "Could not diagnose",
}
MAX_CAUSES = 12  # shown in text and Markdown (the JSON carries every cause); --all-causes shows them all
MORE_HINT = "pfdiag report --all-causes (or -f json)"


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


DEFAULT_LOG = "/var/log/mail.log"  # only when no log was read: Debian's
_PLACEHOLDER = re.compile(r"<(?:domain|addr|host|port|mx-host|rcpt|queue-id|log|transport)>")
# a fix whose evidence placeholder stays empty still says what to do, in words
_IN_WORDS = {"<domain>": "the destination", "<addr>": "the next hop", "<host>": "the next hop", "<port>": "its port",
             "<mx-host>": "the MX host", "<rcpt>": "the recipient", "<queue-id>": "the queue id",
             "<transport>": "NAME"}  # fmt: skip
def recorded_tag(target: Mapping[str, Any]) -> str:
    """' (recorded snapshot)' / ' (pasted text)' after where a report's evidence comes from; '' when live."""
    if target.get("live", True):
        return ""
    return " (pasted text)" if target.get("kind") == "pasted" else " (recorded snapshot)"


_RCPT = re.compile(r"\bto=<([^<>\s]+@[^<>\s]+)>")
_QID = re.compile(r"\bpostfix/[\w/.-]+\[\d+\]: ([0-9A-F]{6,}|[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]{10,}): ")
_TRANSPORT = re.compile(r"connect to transport private/([\w.-]+)")


def _is_ip(text: str | None) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(str(text).removeprefix("ipv6:").removeprefix("IPv6:"))
        return True
    except ValueError:
        return False


def log_read(facts: Facts) -> str | None:
    """The log file the diagnosis read (the newest of them, uncompressed), for grep commands."""
    # lines pasted into the wizard (a temporary file) are no file on the mail host: its default log then
    files = [f for f in ((facts.logs or {}).get("input") or {}).get("files") or [] if f and f != "-" and not paste_file_label(f)]
    plain = [f for f in files if not f.endswith((".gz", ".bz2", ".xz", ".zst"))]
    return (plain or files or [None])[-1]


def missing_transport(rc: RankedCause, facts: Facts, route: Mapping[str, Any] | None) -> tuple[str | None, str | None]:
    """(the master.cf service qmgr could not reach, the line that says so) for E31: the transport
    named by qmgr's own warning ('connect to transport private/X'), else the one the destination's
    route names."""
    companions = (facts.logs or {}).get("companions") or {}
    for key, entry in companions.items():
        line = (entry or {}).get("example") or ""
        m = _TRANSPORT.search(line) if "transport" in key else None
        if m:
            return m.group(1), line
    for ex in rc.examples:
        m = _TRANSPORT.search(ex)
        if m:
            return m.group(1), ex
    if route is not None and route.get("transport"):
        return str(route["transport"]), None
    return None, None


def _soft_bounce_off(facts: Facts, route: Mapping[str, Any] | None) -> tuple[str, str]:
    """(where soft_bounce is on, in words; the command that turns it off there): the master.cf
    service of the destination (or any) that sets -o soft_bounce=yes, else main.cf."""
    cr = facts.config_report
    on: list[tuple[str, str]] = []
    main_on = True
    if cr is not None:
        on = [(svc, kind) for (svc, kind, name), v in sorted(cr.config.overrides.items())
              if name == "soft_bounce" and v.strip().lower() == "yes"]  # fmt: skip
        main_on = (cr.config.values.get("soft_bounce") or "no").strip().lower() == "yes"
    if route is not None and str(route.get("soft_bounce_origin", "")).startswith("master.cf "):
        svc = str(route.get("transport"))
        on = [(svc, "unix")] + [x for x in on if x != (svc, "unix")]
    if on:
        svc, kind = on[0]
        return (f"the {svc} service's -o soft_bounce=yes in master.cf; main.cf says {'yes' if main_on else 'no'}",
                f"postconf -PX '{svc}/{kind}/soft_bounce'")  # fmt: skip
    return "main.cf", "postconf -e 'soft_bounce = no'"


def _undo_timeout(route: Mapping[str, Any] | None) -> tuple[str, str]:
    """(where the destination's smtp_data_done_timeout is lowered, the command that undoes it)."""
    origin = str(((route or {}).get("origins") or {}).get("smtp_data_done_timeout") or "")
    m = re.match(r"master\.cf (\S+)/(\S+) -o ", origin)
    if m:
        return origin, f"postconf -PX '{m.group(1)}/{m.group(2)}/smtp_data_done_timeout'"
    if origin.startswith("main.cf "):
        return origin, "postconf -X smtp_data_done_timeout"
    return ("main.cf here; master.cf -o overrides: postconf -P '*/*/smtp_data_done_timeout'",
            "postconf -X smtp_data_done_timeout")


def fill_values(rc: RankedCause, facts: Facts, route: Mapping[str, Any] | None = None) -> dict[str, str | None]:
    """What the placeholders of a cause's commands and fixes stand for, from the evidence."""
    hop = rc.hop or {}
    text = " ".join(rc.examples)
    rcpt = next((m.group(1) for ex in rc.examples if (m := _RCPT.search(ex))), None)
    qid = rc.queue_ids[0] if rc.queue_ids else next((m.group(1) for ex in rc.examples if (m := _QID.search(ex))), None)
    probed = next((p for p in facts.probe_targets if p.get("cause_id") == rc.id), None)
    port = hop.get("port") or (probed or {}).get("port")
    transport = missing_transport(rc, facts, route)[0] if rc.id == "E31" else (route or {}).get("transport")
    return {"<domain>": rc.top_domain, "<addr>": hop.get("addr"), "<host>": hop.get("host"),
            "<port>": str(port) if port else None, "<mx-host>": hop.get("host"), "<rcpt>": rcpt,
            "<queue-id>": qid, "<log>": log_read(facts) or DEFAULT_LOG, "<transport>": transport,
            "<timeout-where>": _undo_timeout(route)[0], "<undo-timeout>": _undo_timeout(route)[1],
            "<soft-bounce-where>": _soft_bounce_off(facts, route)[0], "<soft-bounce-off>": _soft_bounce_off(facts, route)[1],
            "_text": text}  # fmt: skip


def _fill(text: str, rc: RankedCause, values: Mapping[str, str | None] | None = None) -> str:
    if values is None:
        hop = rc.hop or {}
        values = {"<domain>": rc.top_domain, "<addr>": hop.get("addr"), "<host>": hop.get("host"),
                  "<port>": str(hop["port"]) if hop.get("port") else None, "<mx-host>": hop.get("host")}  # fmt: skip
    for key, value in values.items():
        if value and key.startswith("<"):
            text = text.replace(key, value)
    return text


def applies(command: str, values: Mapping[str, str | None]) -> bool:
    """Whether a confirm command makes sense for this evidence: every placeholder filled, `ls -l`
    only for a socket path, a TLSA lookup only for a host name (not an IP literal)."""
    for key in _PLACEHOLDER.findall(command):
        if not values.get(key):
            return False
    if "ls -l <addr>" in command and "/" not in str(values.get("<addr>") or ""):
        return False
    if "TLSA" in command and any(_is_ip(values.get(k)) for k in ("<mx-host>", "<host>") if k in command):
        return False
    return True


def _fix_applies(when: tuple[str, ...], values: Mapping[str, str | None]) -> bool:
    """A fix's ``when``: any of its texts in the evidence's reply text (any case), or ``port=N``: the
    next hop's port is N."""
    text = str(values.get("_text") or "").lower()
    port = str(values.get("<port>") or "")
    return not when or any(port == w[5:] if w.startswith("port=") else w.lower() in text for w in when)


def _fixes(rc: RankedCause, values: Mapping[str, str | None] | None = None) -> list[dict[str, str]]:
    """The cause's fixes; for the end-of-data causes, those of the two best supported underlying causes
    first (the catalog says which fix answers which), then the ones shown whichever leads. A fix
    that names a reply text the evidence does not hold (``when``) is not offered."""
    values = values or {}
    fixes = list(rc.cause.fixes)
    if values.get("_text"):
        fitting = [f for f in fixes if _fix_applies(f.when, values)]
        fixes = fitting or fixes
    if rc.id in EOD_CAUSES and rc.hypotheses:
        score = {h.id: h.score for h in rc.hypotheses}
        lead = {h.id for h in rc.hypotheses[:2]}
        chosen = [f for f in fixes if lead & set(f.hypotheses)]
        # by the score of the best hypothesis each fix answers; ties keep the catalog's order
        chosen.sort(key=lambda f: -max(score.get(h, 0.0) for h in f.hypotheses))
        rest = [f for f in fixes if f.always and f not in chosen]
        fixes = chosen + rest or fixes
    out = []
    for f in fixes:
        text = _fill(f.text, rc, values or None)
        for key, words in _IN_WORDS.items():
            text = text.replace(key, words)
        out.append({"kind": f.kind, "text": text})
    if rc.cause.family in REMOTE_FAMILIES and rc.top_domain and not any(f["kind"] == "contact" for f in out):
        out.append({"kind": "contact", "text": f"The cause is on the receiving side: contact postmaster@{rc.top_domain}"})
    return out


def _queue_actions(rc: RankedCause, domain: str | None = None) -> list[dict[str, Any]]:
    """Guarded pfdiag queue commands for the mail of this cause (and domain), in the order they are
    used; only those that fit the cause (the wizard's rule, diagnose.fate.fitting_actions): mail
    that every retry may deliver twice is held first and released after the fix; greylisted mail
    is retried, never held; mail whose retries are futile is held."""
    if not rc.queued_recipients:
        return []
    sel = ["--cause", rc.id] + (["--domain", domain] if domain else [])

    def act(action: str, why: str) -> dict[str, Any]:
        return {"action": action, "argv": ["pfdiag", "queue", action, *sel], "why": why}

    if rc.id in CLEARS_BY_ITSELF:  # holding would only delay the retry that clears it
        return [act("retry", f"{CLEARS_BY_ITSELF[rc.id]} accepts a retry: try it now instead of at its next retry")]
    if rc.id in FUTILE:
        return [act("hold", "retrying cannot help: keep the mail until you decide (return it with pfdiag queue "
                            "expire, or release it after a fix)")]  # fmt: skip
    if rc.id in EOD_CAUSES:  # every retry may deliver a duplicate: hold first
        return [act("hold", "now, while you fix it: every retry may deliver the message again"),
                act("release", "after the fix: take the held mail off hold"),
                act("retry", "then: try it at once instead of at its next retry (postqueue -i per message)")]  # fmt: skip
    return [act("retry", "after the fix: try this mail now instead of waiting for the next retry (postqueue -i per message)"),
            act("hold", "while you fix it: keep the mail, stop the retries (release it later with pfdiag queue release)")]  # fmt: skip


def _evidence(rc: RankedCause, facts: Facts) -> list[dict[str, str]]:
    """Each line once: a queue reason already quoted inside a log line is not repeated."""
    where = facts.where
    examples: list[str] = []
    for ex in rc.examples:
        if not any(ex in seen for seen in examples):
            examples.append(ex)
    out = [{"kind": "log" if i == 0 and rc.log_example else "queue",
            "source": "mail log" if i == 0 and rc.log_example else "postqueue -j", "excerpt": ex, "where": where}
           for i, ex in enumerate(examples[:3])]  # fmt: skip
    for m in rc.delays_meaning[:2]:
        out.append({"kind": "delays", "source": "delays=a/b/c/d in the log", "excerpt": m, "where": where})
    for f in rc.confirmations[:4]:
        for ev in f.evidence[:1]:
            out.append({"kind": "check", "source": f"{f.check_id}: {ev.source}", "excerpt": f.summary, "where": ev.where})
    return out


def _cause_dict(i: int, rc: RankedCause, facts: Facts, domain: str | None = None) -> dict[str, Any]:
    c = rc.cause
    # the route of the one destination this cause is about (a focused report, or a cause of one destination)
    one = domain or (rc.top_domain if len(rc.domains) == 1 else None)
    route = facts.routes.get(one.lower()) if one else None
    values = fill_values(rc, facts, route)
    if rc.id == "E33" and not any(w.startswith("soft_bounce = yes is set by") for w in rc.why):
        rc.why.append(f"soft_bounce = yes is set by {values['<soft-bounce-where>']}")
    if rc.id == "E09" and route is not None and not any(w.startswith("this destination's transport") for w in rc.why):
        origin = str((route.get("origins") or {}).get("smtp_data_done_timeout") or "")
        wait = (route.get("timeouts") or {}).get("smtp_data_done_timeout")
        said = origin or (f"{float(wait):g} s, Postfix's default (set nowhere)" if wait is not None
                          else "Postfix's default (set nowhere)")  # fmt: skip
        rc.why.append(f"this destination's transport: {route.get('transport')}, via {route.get('source')}; its "
                      f"smtp_data_done_timeout: {said}")  # fmt: skip
    if rc.id == "E31":
        name, line = missing_transport(rc, facts, route)
        if name and not any(name in w for w in rc.why):
            rc.why.append(f"the transport qmgr could not reach: {name} (master.cf has no working '{name}' service)"
                          + (f"; qmgr logged: {line}" if line else ""))  # fmt: skip
    return {
        "rank": i, "id": rc.id, "slug": c.slug, "title": c.title, "family": c.family, "root_cause": rc.root,
        "confidence": rc.confidence, "confidence_label": confidence_label(rc.confidence), "why": rc.why,
        "tier": rc.tier, "why_ranked": rc.why_ranked, "folded": rc.folded, "folded_under": rc.folded_under,
        "expires_at": round(rc.expires_at) if rc.expires_at is not None else None,
        "impact": {"queued_recipients": rc.queued_recipients, "queued_messages": rc.queued_messages,
                   "log_deferrals": rc.log_deferrals, "log_messages": rc.log_messages,
                   "collateral_lines": rc.collateral_lines},
        "domains": [{"domain": d, "count": n} for d, n in rc.domains[:8]],
        "relays": [{"relay": r, "count": n} for r, n in rc.relays[:5]],
        "next_hop": rc.hop, "first_seen": rc.first_seen, "last_seen": rc.last_seen,
        "meaning": c.meaning, "evidence": _evidence(rc, facts),
        "underlying": [{"id": h.id, "title": h.title, "score": round(h.score, 2), "label": confidence_label(h.score),
                        "evidence": h.evidence, "against": h.against} for h in rc.hypotheses],
        "possible_duplicates": rc.duplicates_possible if rc.id in EOD_CAUSES else None,
        # an end-of-data cause shared by several destinations: each one's own d, timeout and best hypothesis
        "destinations": [] if domain else per_destination(rc, facts.logs, facts.findings, facts.routes,
                                                          ((facts.logs or {}).get("timeouts") or {}).get("values")),
        "fixes": _fixes(rc, values), "confirm_with": [_fill(x, rc, values) for x in c.checks if applies(x, values)],
        "queue_actions": _queue_actions(rc, domain), "queue_ids": rc.queue_ids[:50],
    }  # fmt: skip


def _finding_dict(f: Finding) -> dict[str, Any]:
    return {"check": f.check_id, "severity": str(f.severity), "summary": f.summary, "cause_id": f.cause_id,
            "evidence": [{"source": e.source, "excerpt": e.excerpt, "where": e.where} for e in f.evidence]}  # fmt: skip


def _retry(facts: Facts) -> dict[str, Any] | None:
    cfg = facts.config or {}
    if not cfg.get("timeline"):
        return None
    return {"settings": cfg.get("settings"), "timeline": cfg.get("timeline"), "risks": cfg.get("risks", [])}


def _queue_summary(facts: Facts) -> dict[str, Any] | None:
    q = facts.queue
    if q is None:
        return None
    if "arrivals" in q:  # the engine's digest (diagnose.queuereport.QueueDigest): computed as the queue was read
        nxt, exp, arrivals = q.get("next_attempt"), q.get("first_expiry"), q["arrivals"]
    else:  # a full queue report
        fcs = [m["forecast"] for m in q.get("messages", []) if m.get("forecast")]
        nxt = min((f["next_attempt_earliest"] for f in fcs), default=None)
        exp = min((f["expires_at"] for f in fcs), default=None)
        arrivals = [{"arrival": m["arrival_time"], "queue": m["queue_name"],
                     "causes": sorted({r["cause_id"] for r in m["recipients"] if r.get("cause_id")})}
                    for m in q.get("messages", [])[:2000]]  # fmt: skip
    return {"counts": q.get("counts"), "total_messages": q.get("total_messages"),
            "total_recipients": q.get("total_recipients"), "oldest": q.get("oldest"),
            "next_attempt": nxt, "first_expiry": exp, "now": q.get("now"), "arrivals": arrivals,
            "notes": q.get("notes", [])}  # fmt: skip


_SYSLOG_HOST = re.compile(r"^(?:\w{3} [ \d]\d \d\d:\d\d:\d\d|\d{4}-\d\d-\d\dT\S+) (\S+) \S*postfix")


def _server(facts: Facts) -> dict[str, Any]:
    """This server's own names (what redaction hides): postconf, else the syslog host field."""
    ident = facts.identity or {}
    host = ident.get("myhostname")
    if not host:
        for c in (facts.logs or {}).get("causes", []):
            m = _SYSLOG_HOST.match(c.get("example") or "")
            if m:
                host = m.group(1)
                break
    dest = [d for d in re.split(r"[\s,]+", ident.get("mydestination", "")) if d and "$" not in d and ":" not in d
            and "/" not in d and d != "localhost"]  # fmt: skip
    return {"myhostname": host or None, "mydomain": ident.get("mydomain") or None, "mydestination": dest}


def _lifetime(facts: Facts) -> float | None:
    life = (((facts.config or {}).get("timeline") or {}).get("lifetime"))
    return float(life) if life else None


def local_services(facts: Facts) -> dict[str, str] | None:
    """main.cf values and master.cf -o overrides of the local-service parameters (correlate.LOCAL_PARAMS);
    None when the configuration read holds none of them (then locality is judged from the address)."""
    cr = facts.config_report
    return services_of(cr.config) if cr is not None else None


def inward_findings(ranked: list[RankedCause], where: str) -> list[Finding]:
    """Its own finding beside the cause: a destination whose MX/A record resolves to loopback or
    private space (correlate.dns_points_inward said so in the cause's why)."""
    from checks.model import Evidence

    out = []
    for rc in ranked:
        said = next((w for w in rc.why if w.startswith("the destination's DNS points at")), None)
        if said:
            out.append(Finding("dns.inward-nexthop", Severity.WARNING, f"{rc.top_domain or rc.id}: {said}",
                               evidence=tuple(Evidence("mail log", ex, where) for ex in rc.examples[:1]),
                               values={"domain": rc.top_domain, "next_hop": rc.hop, "cause": rc.id}))  # fmt: skip
    return out


def build(facts: Facts, answers: Mapping[str, str], all_causes: bool = False) -> dict[str, Any]:
    """The report. ``causes`` holds every cause; text and Markdown show the first ``causes_shown``
    (MAX_CAUSES, or all of them with ``all_causes``) and say how to see the rest."""
    timeouts = ((facts.logs or {}).get("timeouts") or {}).get("values")
    domain = answers.get("domain") or None
    # focused on one destination: the timeouts of the transport that delivers to it (master.cf -o included)
    route = facts.routes.get(domain.lower()) if domain else None
    if route is not None:
        timeouts = route["timeouts"]
    ranked = rank(facts.logs, facts.queue, facts.findings, timeouts, domain=domain, lifetime=_lifetime(facts),
                  services=local_services(facts), route=route)  # fmt: skip
    causes = [_cause_dict(i + 1, rc, facts, domain) for i, rc in enumerate(ranked)]
    shown = len(causes) if all_causes else min(len(causes), MAX_CAUSES)
    warnings = [f for f in facts.findings if f.severity in (Severity.WARNING, Severity.PROBLEM) and not f.cause_id]
    warnings += inward_findings(ranked, facts.where)
    warnings += [f for f in facts.findings if f.check_id == "config.timeouts" and f.severity >= Severity.WARNING and f.cause_id]
    errors = [f for f in facts.findings if f.severity == Severity.ERROR]
    deferred = bool(ranked) or (not domain and bool(((facts.queue or {}).get("counts") or {}).get("deferred")))
    evidence_failed = facts.logs is None and facts.queue is None
    if evidence_failed or (deferred and (not ranked or all(r.id == "unclassified" for r in ranked))):
        status = "undiagnosed"
    elif deferred:
        status = "root-cause"
    elif warnings:
        status = "warnings"
    else:
        status = "no-problem"
    # the headline is the most harmful root cause, never collateral (ranked after every root cause)
    top = next((c for c in causes if c["root_cause"] and c["tier"] < 3), None)
    headline = HEADLINES[status]
    if top and status == "root-cause":
        headline = f"{top['id']} {top['title']}"
        if top["underlying"]:
            t = top["underlying"][0]["title"]
            headline += " - most likely: " + (t if t.startswith("Postfix") else t[:1].lower() + t[1:])
    from diagnose.vantage import live_evidence_missing  # missing evidence is a finding (helper probecfg)

    live = live_evidence_missing(facts.findings) if facts.live else None
    summary = _summary(status, ranked, facts) + ("; live evidence missing: could not reach any next hop from here" if live else "")
    doc = {
        "schema": SCHEMA,
        "pfdiag_version": __version__,
        "generated": _iso(time.time()),
        "target": {"where": facts.where, "live": facts.live, "kind": facts.kind},
        "server": _server(facts),
        "answers": {k: paste_file_label(v) or v if isinstance(v, str) else v for k, v in answers.items()},  # no temp path
        "verdict": {"status": status, "exit_code": EXIT[status], "headline": headline,
                    "summary": summary},
        "live_evidence": live,
        "read": _read(facts),
        "do_now": do_now(causes, facts.live) if status == "root-cause" else [],
        "causes": causes,
        "causes_shown": shown,
        "more_causes": len(causes) - shown,
        "more_causes_hint": MORE_HINT if len(causes) > shown else None,
        "warnings": [_finding_dict(f) for f in warnings],
        "errors": [_finding_dict(f) for f in errors],
        "findings": [_finding_dict(f) for f in facts.findings],
        "queue": _queue_summary(facts),
        "retry": _retry(facts),
        "log_window": (facts.logs or {}).get("window"),
        "log_hours": {c["id"]: c.get("hours") or [] for c in (facts.logs or {}).get("causes", [])},  # the HTML heat strip
        "log_input": {k: v for k, v in ((facts.logs or {}).get("input") or {}).items() if k != "files"} or None,
        "outcomes": (facts.logs or {}).get("outcomes"),
        "end_of_data": (facts.logs or {}).get("end_of_data"),
        "steps": [{"id": s.id, "title": s.title, "state": s.state, "seconds": s.seconds, "detail": s.detail,
                   "where": s.where} for s in facts.steps],
        "probed": facts.probe_targets,
    }  # fmt: skip
    outbreak.add_to(doc, facts.findings)  # one login/client behind E22/E23: its section and "Do this now" steps
    return doc


def _read(facts: Facts) -> dict[str, Any]:
    """What the diagnosis read, for the reader: the log files and the window they covered, where the
    queue listing came from, what the timings were compared with, and the checks that did not run."""
    logs = facts.logs or {}
    window = logs.get("window") or {}
    return {
        "logs": [log_label(f) for f in ((logs.get("input") or {}).get("files")) or []],  # pasted lines: named so
        "log_window": [window.get("first_line"), window.get("last_line")] if window else None,
        "queue": (facts.queue or {}).get("source"),
        "config": ((logs.get("timeouts") or {}).get("source")),
        "not_run": [{"check": st.id, "state": st.state, "why": st.detail} for st in facts.steps
                    if st.state in ("skipped", "error", "timeout")],
    }  # fmt: skip


def _read_line(doc: Mapping[str, Any]) -> str:
    r = doc.get("read") or {}
    logs = ", ".join(r.get("logs") or []) or "no log"
    w = r.get("log_window") or [None, None]
    span = f" ({_short_ts(w[0])} .. {_short_ts(w[1])})" if w[0] and w[1] else ""
    return f"read: {logs}{span}; queue: {r.get('queue') or 'not read'}; timings: {r.get('config') or 'Postfix defaults'}"


def _short_ts(iso: str) -> str:
    return iso.replace("T", " ")[:16]


def _split_fix(text: str, kind: str) -> tuple[str, str | None]:
    """'Local override: postconf -X ...' -> ('Local override', 'postconf -X ...'): the catalog's fixes
    lead with what they are for; what follows the colon is the change itself. A fix that is not a
    change on this machine (contact, advice, wait) stays one sentence."""
    head, sep, rest = text.partition(": ")
    if sep and len(head) <= 60 and rest and kind in ("postconf", "master.cf", "queue", "service", "network", "dns") \
            and _COMMAND_START.match(rest) and ";" not in rest:  # fmt: skip
        return head, rest
    return text, None


# what a pasteable command starts with; anything else after the colon is instructions in words ("add to
# master.cf ..., then postconf -e ...; postmap ..."), shown as a sentence rather than as one shell command
_COMMAND_START = re.compile(r"(?:postconf|postmap|postfix|postsuper|postqueue|pfdiag|systemctl|sysctl|ip|iptables|nft|"
                            r"doveadm|dig|swaks|openssl|chmod|chown|install|mkdir|ln|cp|mv|sed) ")


def _shell_lines(command: str, width: int) -> list[str]:
    """A long command split for the terminal at spaces outside quotes, each line but the last
    ending in " \\": pasted into a shell it is still the one command (never split inside quotes,
    where a backslash-newline would become part of the value)."""
    if not command or len(command) <= width:
        return [command] if command else []
    words, cur, quote = [], "", ""
    for ch in command:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == " ":
            words.append(cur)
            cur = ""
            continue
        cur += ch
    words.append(cur)
    lines, line = [], ""
    for w in words:
        if line and len(line) + 1 + len(w) > width - 2:
            lines.append(line + " \\")
            line = "  " + w
        else:
            line = f"{line} {w}" if line else w
    return lines + [line]


def do_now(causes: list[dict[str, Any]], live: bool) -> list[dict[str, Any]]:
    """At most three steps, in order, for the admin who has to act now: stop harm first (hold mail
    that every retry may deliver twice), then the fix the evidence supports best, then what to do
    after the fix. Each step: {"step": sentence, "command": the exact command or None, "cause": id}."""
    roots = [c for c in causes if c["root_cause"] and c.get("tier", 2) < 3 and c["id"] != "unclassified"]
    if not roots:
        return []
    top, steps = roots[0], []
    one = top["domains"][0]["domain"] if len(top["domains"]) == 1 else None
    sel = ["--cause", top["id"], *(["--domain", one] if one else [])]
    eod = top["id"] in EOD_CAUSES and (top["impact"]["queued_recipients"] or top.get("possible_duplicates"))
    if eod:
        steps.append({"step": "Hold this mail now: every retry may deliver it again",
                      "command": " ".join(["pfdiag", "queue", "hold", *sel]), "cause": top["id"]})
    fixes = [f for f in top["fixes"] if f["kind"] not in ("advice",)] or top["fixes"]
    if fixes:
        sentence, command = _split_fix(fixes[0]["text"], fixes[0]["kind"])
        steps.append({"step": sentence, "command": command, "cause": top["id"], "kind": fixes[0]["kind"]})
    if top["fixes"] and top["fixes"][0]["kind"] == "wait":
        pass  # nothing to release or retry: it clears by itself
    elif eod:
        steps.append({"step": "After the fix, release the held mail and try it at once",
                      "command": " ".join(["pfdiag", "queue", "release", *sel]) + " && "
                                 + " ".join(["pfdiag", "queue", "retry", *sel]), "cause": top["id"]})  # fmt: skip
    elif top["impact"]["queued_recipients"]:
        steps.append({"step": "After the fix, try the waiting mail at once instead of at its next retry",
                      "command": " ".join(["pfdiag", "queue", "retry", *sel]), "cause": top["id"]})
    for other in roots[1:]:  # room left: the next cause's first fix
        if len(steps) >= 3:
            break
        if other["fixes"]:
            sentence, command = _split_fix(other["fixes"][0]["text"], other["fixes"][0]["kind"])
            steps.append({"step": f"{other['id']}: {sentence}", "command": command, "cause": other["id"],
                          "kind": other["fixes"][0]["kind"]})
    return steps[:3]


def _summary(status: str, ranked: list[RankedCause], facts: Facts) -> str:
    if status == "undiagnosed" and facts.logs is None and facts.queue is None:
        return "neither the logs nor the queue could be read: see the errors below"
    roots = [r for r in ranked if r.root and r.id != "unclassified"]
    if not roots:
        return "nothing is deferred" if status != "undiagnosed" else "deferrals found, but none matched a known cause"
    waiting = sum(r.queued_recipients for r in ranked)
    parts = [f"{len(roots)} root cause(s)", f"{waiting} recipient(s) waiting in the queue"]
    dup = next((r.duplicates_possible for r in ranked if r.id in EOD_CAUSES and r.duplicates_possible), 0)
    if dup:
        parts.append(f"{dup} message(s) may have been delivered twice (end-of-data timeout, then a later success)")
    return "; ".join(parts)


# ------------------------------------------------------------------ renderings


def to_json(doc: Mapping[str, Any]) -> str:
    import json

    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def _ago(ts: float | None, now: float | None) -> str:
    if ts is None or now is None:
        return "-"
    s = ts - now
    sign = "in " if s >= 0 else ""
    s = abs(s)
    text = f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h" if s < 172800 else f"{s / 86400:.1f} d"
    return f"{sign}{text}" + ("" if sign else " ago")


def next_retry(doc: Mapping[str, Any]) -> str:
    """When the queue is tried next, as far as the evidence tells. Without the queue files' times (a
    snapshot, pasted text, an unreadable spool) the forecast assumes the last attempt ended just now,
    so it would say "in 0 s": then the time is unknown, and the last logged attempt is named instead."""
    from diagnose.queuereport import ASSUMED_NOTE

    q = doc.get("queue") or {}
    nxt, now = q.get("next_attempt"), q.get("now")
    if nxt is None or now is None or nxt > now + 1 or ASSUMED_NOTE not in (q.get("notes") or []):
        return _ago(nxt, now)
    seen = [str(c["last_seen"]) for c in doc.get("causes") or [] if c.get("last_seen")]
    last = f", last attempt logged {_short_ts(max(seen))}" if seen else ""
    return f"unknown (no queue file times{last})"


def render_markdown(doc: Mapping[str, Any]) -> str:
    """Every value from the report is Markdown-escaped or in a code span (diagnose.textsafe)."""
    v = doc["verdict"]
    out = [f"# pfdiag report: {md_text(v['headline'])}", "",
           f"- **Verdict:** {md_text(v['status'])} (exit {v['exit_code']}) - {md_text(v['summary'])}",
           f"- **Where:** {md_code(doc['target']['where'])}" + recorded_tag(doc["target"]),
           f"- **Read:** {md_text(_read_line(doc).removeprefix('read: '))}",
           f"- **Generated:** {md_text(doc['generated'])} by pfdiag {md_text(doc['pfdiag_version'])}", ""]  # fmt: skip
    if doc.get("live_evidence"):
        out[-1:-1] = [f"- **Live checks:** {md_text(doc['live_evidence']['message'])}"]
    if doc.get("do_now"):
        out += ["## Do this now", ""] + ([] if doc["target"]["live"] else
                                        ["Run these on the mail host: this report comes from a recording.", ""])
        for i, st in enumerate(doc["do_now"], 1):
            out.append(f"{i}. {md_text(st['step'])}" + (f": {md_code(st['command'])}" if st.get("command") else ""))
        out.append("")
    q = doc.get("queue")
    if q:
        counts = ", ".join(f"{k} {n}" for k, n in (q.get("counts") or {}).items() if n)
        out += [f"- **Queue:** {q.get('total_messages', 0)} message(s) ({md_text(counts or 'empty')}); "
                f"next retry {next_retry(doc)}; first expiry {_ago(q.get('first_expiry'), q.get('now'))}", ""]  # fmt: skip
    if doc["causes"]:
        out += ["## Causes, most important first", "",
                "| # | Cause | Confidence | Queued rcpts | Deferred msgs (log) | Top destination |",
                "|---|---|---|---|---|---|"]  # fmt: skip
        for c in _shown(doc):
            dom = md_code(c["domains"][0]["domain"], table=True) if c["domains"] else "-"
            out.append(f"| {c['rank']} | {md_text(c['id'])} {md_text(c['title'])}{md_text(_tag(c))} | "
                       f"{md_text(c['confidence_label'])} ({c['confidence']:.2f}) | {c['impact']['queued_recipients']} | "
                       f"{c['impact']['log_messages']} | {dom} |")  # fmt: skip
        out.append("")
        if doc.get("more_causes"):
            out += [f"{doc['more_causes']} more cause(s), less harmful, not listed here: see them with "
                    f"{md_code(doc.get('more_causes_hint') or MORE_HINT)}.", ""]  # fmt: skip
        for c in _shown(doc):  # a ticket: every listed cause in detail
            out += _md_cause(c)
    if outbreak.text_lines(doc):
        out += ["## Outbreak triage", ""] + md_block(outbreak.text_lines(doc)) + [""]
    if doc["warnings"]:
        out += ["## Warnings", ""] + [f"- {md_text(w['summary'])}" for w in doc["warnings"]] + [""]
    if doc.get("retry"):
        t = doc["retry"]["timeline"]
        out += ["## Retry schedule", "", f"Attempts after arrival: {md_text(t.get('summary'))}; "
                f"{t.get('attempt_count')} attempts before the message expires and bounces "
                f"(after {_dur(t.get('lifetime'))}).", ""]  # fmt: skip
    if doc["errors"]:
        out += ["## What could not be checked", ""] + [f"- {md_text(e['summary'])}" for e in doc["errors"]] + [""]
    out += ["## Checks run", "", "| Check | State | Seconds | Where |", "|---|---|---|---|"]
    out += [f"| {md_text(s['id'])} | {md_text(s['state'])} | {s['seconds']:.2f} | {md_text(s['where'])} |" for s in doc["steps"]]
    return "\n".join(out) + "\n"


def _shown(doc: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list(doc["causes"][: doc.get("causes_shown", len(doc["causes"]))])


def _tag(c: Mapping[str, Any]) -> str:
    if c.get("folded_under"):
        return f" (collateral of {c['folded_under']})"
    return "" if c["root_cause"] else " (collateral)"


def _ranked_phrase(c: Mapping[str, Any]) -> str:
    return f"ranked {c['rank']}: {c['why_ranked']}" if c.get("why_ranked") else ""


def _dur(seconds: float | None) -> str:
    if not seconds:
        return "-"
    return f"{seconds / 86400:g} d" if seconds >= 86400 else f"{seconds / 3600:g} h"


def _destination_lines(c: Mapping[str, Any]) -> list[str]:
    """One line per destination of a shared end-of-data cause (the whole report, no --domain): its
    own d values, the timeout its transport waits and where that is set, its best underlying cause.
    Nothing when one destination carries the cause (the cause's own lines say it all)."""
    dests = c.get("destinations") or []
    if len(dests) < 2:
        return []
    out = []
    for d in dests[:8]:
        best = (d.get("underlying") or [{}])[0]
        wait = d.get("smtp_data_done_timeout")
        said = f"{d['domain']}: d median {_num(d.get('d_median'))} s"
        if wait is not None:
            said += f"; its {d.get('transport') or 'smtp'} transport waits {_num(wait)} s ({d.get('timeout_set_by') or 'default'})"
        if best.get("title"):
            t = best["title"]
            said += f" -> most likely: {t if t.startswith('Postfix') else t[:1].lower() + t[1:]} ({best.get('score', 0):.2f})"
        out.append(said)
    if len(dests) > 8:
        out.append(f"... and {len(dests) - 8} more destination(s) in the JSON report")
    return out


def _num(x: Any) -> str:
    return "?" if x is None else f"{float(x):g}"


def _md_cause(c: Mapping[str, Any]) -> list[str]:
    out = [f"### {c['rank']}. {md_text(c['id'])} {md_text(c['title'])}", "", md_text(c["meaning"]), ""]
    if c.get("why_ranked"):
        out.append(f"- {md_text(_ranked_phrase(c))}")
    out += [f"- confidence **{md_text(c['confidence_label'])}**: " + "; ".join(md_text(w) for w in c["why"])]
    if c.get("possible_duplicates"):
        out.append(f"- **{c['possible_duplicates']} message(s) may have been delivered twice**")
    out.append("")
    if c["underlying"]:
        out += ["Underlying cause, best supported first:", ""]
        for h in c["underlying"]:
            out.append(f"1. **{md_text(h['title'])}** ({md_text(h['label'])}, {h['score']:.2f})")
            out += [f"   - {md_text(e)}" for e in h["evidence"]] + [f"   - against: {md_text(a)}" for a in h["against"]]
        out.append("")
    if _destination_lines(c):
        out += ["Per destination (each read from its own lines and its transport's settings):", ""]
        out += [f"- {md_text(d)}" for d in _destination_lines(c)] + [""]
    if c["evidence"]:
        out += ["Evidence:", ""] + md_block(f"[{e['where']}] {e['excerpt']}" for e in c["evidence"]) + [""]
    if c["fixes"]:
        out += ["Fix:", ""] + [f"- ({md_text(f['kind'])}) {md_text(f['text'])}" for f in c["fixes"]] + [""]
    if c["queue_actions"]:
        out += ["Queue (guarded: dry run and confirmation first):", ""]
        out += [f"- {md_code(' '.join(a['argv']))} - {md_text(a['why'])}" for a in c["queue_actions"]] + [""]
    return out


def hang(con: Any, width: int, head: Any, text: Any, *, indent: int = 2, hang: int = 2, style: str = "") -> None:
    """One paragraph: ``head`` (a rich Text of ours, styled) then the ``text`` (shown literally), wrapped
    at ``width`` with the first line at ``indent`` and the lines after it ``hang`` further in: a
    wrapped paragraph never starts again at the margin."""
    import textwrap

    from rich.text import Text

    lead = head.plain if head is not None else ""
    body = visible(text)
    lines = textwrap.wrap(lead + body, max(20, width - 1), initial_indent=" " * indent,
                          subsequent_indent=" " * (indent + hang), break_on_hyphens=False) or [""]  # fmt: skip
    first = lines[0]
    if head is not None and lead and first[indent:].startswith(lead):
        out = Text(" " * indent)
        out.append_text(head)
        out.append(first[indent + len(lead):], style=style)
    else:
        out = Text(first, style=style)
    for rest in lines[1:]:
        out.append("\n" + rest, style=style)
    con.print(out, overflow="fold")  # one print: the wizard's progress lines come from several threads


def _title_fits(headline: str, width: int) -> bool:
    return len(headline) <= width - 8  # a panel title beside its corners and spaces


def render_text(doc: Mapping[str, Any], width: int = 100, color: bool = False) -> str:
    """For the terminal: rich panels and tables. Every value from the report goes through
    diagnose.textsafe: shown literally, never parsed as markup (it holds log lines and replies)."""
    from io import StringIO

    from rich.panel import Panel
    from rich.table import Table

    buf = StringIO()
    con = console(buf, width=width, force_terminal=color, color_system="standard" if color else None, soft_wrap=False)
    v = doc["verdict"]
    style = {"root-cause": "bold red", "warnings": "yellow", "no-problem": "green", "undiagnosed": "bold magenta"}[v["status"]]
    body = rich_markup("{}\nwhere: {}", v["summary"], doc["target"]["where"])
    title = v["headline"]
    if not _title_fits(title, width):  # a panel title is cut at the border: a short one, the whole headline in the body
        title = HEADLINES[v["status"]]
        body = rich_markup(f"[{style}]{{}}[/]\n", v["headline"]).append_text(body)
    body.append(recorded_tag(doc["target"]))
    q = doc.get("queue")
    if q:
        counts = ", ".join(f"{k} {n}" for k, n in (q.get("counts") or {}).items() if n)
        body.append_text(rich_markup("\nqueue: {} message(s) ({}); next retry {}; first expiry {}", q.get("total_messages", 0),
                                     counts or "empty", next_retry(doc),
                                     _ago(q.get("first_expiry"), q.get("now"))))  # fmt: skip
    body.append_text(rich_markup("\n{}", _read_line(doc)))
    if doc.get("live_evidence"):
        body.append_text(rich_markup("\n[bold]{}[/]", doc["live_evidence"]["message"]))
    con.print(Panel(body, title=rich_text(title, style), title_align="left"))
    if doc.get("do_now"):
        import textwrap

        con.print(rich_markup("[bold]Do this now[/]" + ("" if doc["target"]["live"] else
                                                      " (on the mail host: this report comes from a recording)")))
        for i, st in enumerate(doc["do_now"], 1):
            said = st["step"] + (":" if st.get("command") else "")
            for line in textwrap.wrap(visible(said), width - 1, initial_indent=f"{i}. ", subsequent_indent="   "):
                con.print(rich_text(line))
            for line in _shell_lines(st.get("command") or "", width - 3):  # copied and pasted as it is
                con.print(rich_markup("   [bold]{}[/]", line), soft_wrap=True)
        con.print()
    if doc["causes"]:
        narrow = width < 100  # short column titles and no scores: the cause titles get the room
        t = Table(title="Causes, most important first", title_justify="left", expand=False)
        for col in ("#", "cause", "conf." if narrow else "confidence", "queued", "in log" if narrow else "log msgs", "destination"):
            t.add_column(col, overflow="fold")
        for c in _shown(doc):
            dom = c["domains"][0]["domain"] if c["domains"] else "-"
            conf = c["confidence_label"] if narrow else f"{c['confidence_label']} {c['confidence']:.2f}"
            t.add_row(rich_text(c["rank"]), rich_text(f"{c['id']} {c['title']}" + _tag(c)), rich_text(conf),
                      rich_text(c["impact"]["queued_recipients"]), rich_text(c["impact"]["log_messages"]), rich_text(dom))  # fmt: skip
        con.print(t)
        if doc.get("more_causes"):
            con.print(rich_markup("{} more cause(s), less harmful, not listed here: see them with {}", doc["more_causes"],
                                  doc.get("more_causes_hint") or MORE_HINT))  # fmt: skip
        for c in doc["causes"][:3]:
            con.print()
            hang(con, width, rich_markup("[bold]{}. {} {}[/]", c["rank"], c["id"], c["title"]),
                  f"  ({c['confidence_label']} confidence)", indent=0, hang=3)  # fmt: skip
            hang(con, width, None, c["meaning"], hang=0)
            if c.get("why_ranked"):
                hang(con, width, None, _ranked_phrase(c), style="bold")
            for w in c["why"]:
                hang(con, width, rich_text("- "), w)
            if c.get("possible_duplicates"):
                hang(con, width, rich_markup("[bold red]! {} message(s) may have been delivered twice[/]", c["possible_duplicates"]), "")
            for h in c["underlying"][:3]:
                hang(con, width, rich_markup("[bold]? {}[/] ", h["title"]), f"({h['label']} {h['score']:.2f})")
                for e in h["evidence"]:
                    hang(con, width, rich_text("+ "), e, indent=6)
                for a in h["against"]:
                    hang(con, width, rich_text("- "), a, indent=6)
            for d in _destination_lines(c):
                hang(con, width, rich_text("> "), d, hang=4)
            for e in c["evidence"][:3]:
                hang(con, width, rich_markup("[dim]evidence ({}):[/] ", e["where"]), e["excerpt"], hang=4)
            for f in c["fixes"][:4]:
                hang(con, width, rich_markup("[green]fix ({}):[/] ", f["kind"]), f["text"], hang=4)
            for a in c["queue_actions"]:
                hang(con, width, rich_markup("[cyan]queue:[/] {}  ", " ".join(a["argv"])), a["why"], hang=4)
    for i, line in enumerate(outbreak.text_lines(doc)):  # one login/client behind E22/E23
        con.print(*([""] if i == 0 else []), rich_text(line, "bold" if i == 0 else ""), soft_wrap=True, sep="\n")
    for w in doc["warnings"]:
        hang(con, width, rich_markup("[yellow]warning:[/] "), w["summary"], indent=0)
    if doc.get("retry"):
        t = doc["retry"]["timeline"]
        con.print()
        hang(con, width, rich_markup("[bold]Retry schedule[/] "), f"(after arrival): {t.get('summary')}; {t.get('attempt_count')} "
              f"attempts before the message expires after {_dur(t.get('lifetime')).replace(' ', chr(0xA0))}", indent=0)  # fmt: skip
    for e in doc["errors"]:
        hang(con, width, rich_markup("[magenta]not checked:[/] "), e["summary"], indent=0)
    return buf.getvalue()
