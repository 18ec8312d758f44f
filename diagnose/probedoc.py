"""The probe of one destination or of a set, as Postfix's smtp client would live it, and its
document (pfdiag.probe/1 and pfdiag.probe-set/1, docs/probe-json.md).

    read_postfix()   this Postfix's settings a probe needs: one postconf -x and one postconf -P
    probe_one()      route a destination (checks.nexthop), probe every address Postfix would try
                     (checks.probeset), the TLS verdict (diagnose.probetls), the vantage
                     comparison (diagnose.vantage) -> pfdiag.probe/1
    probe_set()      several destinations in one budget -> pfdiag.probe-set/1
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from checks.bind import BindPlan, bind_plan
from checks.errors import PfdiagError, UsageError
from checks.model import Finding, Severity
from checks.nexthop import Destination, is_reserved, nexthop_domain, parse_destination, resolver_for, route
from checks.postfix.defaults import SHORT_TIMEOUTS as _SHORT
from checks.postfix.defaults import TIMEOUT_NAMES
from checks.probeset import Failed, Outcome, ProbeJob, run_probes, run_within
from checks.config import start_probe_reading
from checks.smtp import BODY, DATA, END_OF_DATA, SMTPS_PORTS, PhaseResult, PhaseTimeouts, ProbeResult, to_findings
from checks.targets import Target
from checks.targets.base import Started

if TYPE_CHECKING:  # a plain probe never loads the size ladder's module
    from checks.smtp import LadderVerdict, MessageResult

SCHEMA = "pfdiag.probe/1"
SET_SCHEMA = "pfdiag.probe-set/1"
SHORT_TIMEOUTS = PhaseTimeouts(**_SHORT)


@dataclass(frozen=True)
class Settings:
    """How to probe (pfdiag probe's options; a plugin builds one too)."""

    budget: float = 120.0  # total wall time, seconds
    timeouts: Literal["postfix", "short"] = "postfix"
    helo: str | None = None  # None: the transport's smtp_helo_name
    mail_from: str = ""
    rcpt: str | None = None
    starttls: bool | Literal["auto"] = "auto"
    config_dir: str | None = None
    bind: str | None = None  # --bind
    resolver: str | None = None  # --resolver IP[:PORT]; None: the target's own


@dataclass
class PostfixView:
    """What this Postfix says about its smtp client: postconf -x values and master.cf -o overrides."""

    values: dict[str, str] = field(default_factory=dict)
    overrides: dict[tuple[str, str, str], str] = field(default_factory=dict)
    read: bool = False
    notes: list[str] = field(default_factory=list)
    plan: BindPlan = BindPlan()  # for the smtp service; plan_for(transport) for another
    bind: str | None = None  # --bind
    can_bind: bool = True

    def plan_for(self, transport: str) -> BindPlan:
        if transport == "smtp":
            return self.plan
        return bind_plan(self.values, self.overrides, self.bind, self.can_bind, transport)[0]

    def timeouts(self, settings: Settings, transport: str) -> tuple[PhaseTimeouts, str]:
        if settings.timeouts == "short":
            return SHORT_TIMEOUTS, "short (--timeouts short: quick look, not Postfix's values)"
        if not self.read:
            return PhaseTimeouts(), "Postfix defaults (this Postfix's values could not be read)"
        raw = {n: self.values[n] for n in TIMEOUT_NAMES if n in self.values}
        over = {n: v for (svc, _, n), v in self.overrides.items() if svc == transport and n in TIMEOUT_NAMES}
        where = "postconf" + (f" -c {settings.config_dir}" if settings.config_dir else "")
        try:
            t = PhaseTimeouts.from_postconf({**self.values, **raw, **over})
        except PfdiagError as exc:
            return PhaseTimeouts(), f"Postfix defaults (postconf value unusable: {exc})"
        said = f"; master.cf -o of {transport}: {', '.join(sorted(over))}" if over else ""
        return t, f"this Postfix's effective values ({where}){said}"

    def helo(self, settings: Settings, transport: str) -> str:
        from checks.probeset import helo_name

        name = settings.helo or helo_name(self.values, self.overrides, transport)
        if not name:
            raise PfdiagError("this Postfix's smtp_helo_name could not be read (postconf): give --helo NAME, the "
                              "name the mail host greets with")  # fmt: skip
        return name


def read_postfix(target: Target, settings: Settings, started: tuple[Started, Started] | None = None) -> PostfixView:
    """One postconf -x (timeouts, names, source addresses, TLS policy) and one postconf -P (master.cf
    -o overrides), run at once (checks.config.start_probe_reading, or ``started``: the two begun
    earlier by the caller): start-up of a quick probe is mostly these two processes."""
    from checks.postfix.postconf import parse_postconf, parse_postconf_p

    values, master = started or start_probe_reading(target, settings.config_dir)
    view = PostfixView()
    try:
        try:
            res = values.result()
            view.values, view.read = (parse_postconf(res.stdout), True) if res.ok else ({}, False)
            if not res.ok:
                view.notes.append(f"could not read this Postfix's settings (postconf: {res.stderr.strip()[:200]})")
        except PfdiagError as exc:
            view.notes.append(f"could not read this Postfix's settings ({exc})")
        try:
            over = master.result()  # within its 20 s; its PfdiagError (or not finishing) leaves no overrides
            if over.ok:
                view.overrides = parse_postconf_p(over.stdout)
        except PfdiagError:
            pass
    finally:
        values.close()
        master.close()
    view.bind, view.can_bind = settings.bind, type(target).__name__ != "SSHTarget"
    view.plan, more = bind_plan(view.values, view.overrides, view.bind, view.can_bind)
    view.notes += more
    return view


@dataclass
class Route:
    """Where Postfix would send a destination: its addresses in order and the transport."""
    dest: Destination
    hops: list[tuple[str, int]]  # every (address, port) in the order Postfix tries them
    transport: str
    name: str  # the host name the first address was found under ("" for an IP literal): TLSA, hostname
    nexthop: str  # the next-hop domain for Postfix's "nexthop" certificate match
    notes: list[str]


def plan(target: Target, text: str, settings: Settings) -> Route:
    """Where Postfix would send: checks.nexthop's one model for every form of DESTINATION."""
    dest = parse_destination(text)
    hop = route(target, dest, settings.config_dir, resolver_for(target, settings.resolver))
    if not hop.addresses:
        tld = dest.host.lower().rsplit(".", 1)[-1]
        if is_reserved(dest.host) and not settings.resolver:
            raise PfdiagError(f"{dest.host}: .{tld} names never resolve (RFC 2606/6761); give an address, e.g. "
                              f"[127.0.0.1]:{dest.port}, or --resolver IP[:PORT]")  # fmt: skip
        if not hop.deliverable_by_smtp:
            raise PfdiagError(f"{dest.host}: Postfix does not deliver it over SMTP ({'; '.join(hop.notes)})")
        raise PfdiagError(f"{dest.host}: no address ({'; '.join(hop.notes) or hop.source})")
    first = hop.addresses[0]
    notes = []
    if not dest.is_ip:
        notes += [f"next hop of {dest.host}: {hop.source}; transport {hop.transport}",
                  f"first address Postfix tries: {first.host}[{first.addr}]:{first.port} ({first.source})"]  # fmt: skip
    notes += hop.notes
    others = [f"{a.addr}:{a.port}" for a in hop.addresses[1:]]
    if others:
        notes.append(f"then, if that fails: {', '.join(others)}")
    name = "" if first.host == first.addr else first.host
    return Route(dest, [(a.addr, a.port) for a in hop.addresses], hop.transport, name,
                 nexthop_domain(hop.nexthop) or dest.host, notes)  # fmt: skip


def _job(view: PostfixView, settings: Settings, r: Route, address: str, port: int, **kw: Any) -> ProbeJob:
    timeouts, _ = view.timeouts(settings, r.transport)
    return ProbeJob(address, port, view.helo(settings, r.transport), timeouts, settings.mail_from, settings.rcpt,
                    settings.starttls, label=f"{address}:{port}", **{**view.plan_for(r.transport).kwargs(address), **kw})  # fmt: skip


def probe_one(target: Target, text: str, settings: Settings, view: PostfixView, *, deadline: float | None = None,
              ladder: tuple[str, tuple[int, ...]] | None = None, compare_here: bool = False,
              all_addresses: bool = True) -> dict[str, Any]:  # fmt: skip
    """pfdiag.probe/1 for one destination: its first address probed (with the ladder: test
    messages to ladder[0] of sizes ladder[1]), the others at once, all within the deadline."""
    deadline = deadline if deadline is not None else time.monotonic() + settings.budget
    r = plan(target, text, settings)
    address, port = r.hops[0]
    notes = list(r.notes) + list(view.notes)
    timeouts, source = view.timeouts(settings, r.transport)
    first = _job(view, settings, r, address, port)
    if port in SMTPS_PORTS:
        notes.append(f"port {port}: TLS from the first byte (SMTPS wrappermode)")
    lad = None
    jobs = [first]
    if ladder is not None:
        from checks.smtp import conclude_ladder, send_test_messages

        per = max(deadline - time.monotonic(), 0.1) / len(ladder[1])
        t0 = time.monotonic()
        results = send_test_messages(target, address, port, helo_name=first.helo_name, mail_from=settings.mail_from,
                                     rcpt_to=ladder[0], sizes=ladder[1], timeouts=timeouts, budget_per_message=per,
                                     starttls=settings.starttls, wrappermode=port in SMTPS_PORTS,
                                     **view.plan_for(r.transport).kwargs(address))  # fmt: skip
        notes.append(f"phases below are from the first test session ({results[0].size} B); "
                     f"{len(results)} session(s) in {time.monotonic() - t0:.1f} s, budget {per:.3g} s each")
        lad, jobs = (conclude_ladder(results), results), []
    elif all_addresses:
        jobs += [_job(view, settings, r, a, p) for a, p in r.hops[1:]]
    if compare_here:
        from checks.targets import LocalTarget

        if target.local_network:  # this machine already: nothing to compare with
            raise UsageError("--compare-here compares a mail host (--host) with this machine")
        jobs.append(ProbeJob(address, port, first.helo_name, timeouts, settings.mail_from, settings.rcpt,
                             settings.starttls, label="here", target=LocalTarget()))  # fmt: skip
    outcomes = run_probes(target, jobs, max(deadline - time.monotonic(), 0.0)) if jobs else []
    probe = classify_replies(lad[1][0].probe if lad else _value(outcomes[0]), r.name or None)
    from diagnose.probetls import tls_doc

    # the TLS policy of the transport Postfix routes this destination through (master.cf -o included)
    tls = tls_doc(target, probe, text, address, port, settings.config_dir, r.name,
                  lambda: resolver_for(target, settings.resolver), r.nexthop,
                  (view.values, view.overrides) if view.read else None,
                  max(min(20.0, deadline - time.monotonic()), 1.0), service=r.transport)  # fmt: skip
    doc = build(r, address, port, notes, timeouts, source, first.helo_name, probe, lad, tls)
    doc["bind"] = bind_doc(view.plan_for(r.transport), address, probe)
    doc["where"] = target.where
    doc["tls"] = tls
    doc["addresses"] = [_address_row(address, port, probe)]
    if ladder is None and len(r.hops) > 1 and all_addresses:
        from diagnose.vantage import family_difference

        doc["addresses"] += [_address_row(a, p, o) for (a, p), o in zip(r.hops[1:], outcomes[1:])]
        split = family_difference(doc["addresses"])
        if split is not None:
            doc["findings"].append(split)
            doc["problem"] = True
    if compare_here:
        from diagnose.vantage import compare_vantage

        doc["compare"] = compare_vantage(doc["probe"], probe_dict(_value(outcomes[-1])), target.where, port)
        doc["problem"] = doc["problem"] or doc["compare"]["differs"]
    return doc


def _value(o: Outcome[ProbeResult]) -> ProbeResult:
    if o.value is None:
        raise PfdiagError(f"{o.label}: {o.missing.error if isinstance(o.missing, Failed) else getattr(o.missing, 'reason', '')}")
    return o.value


def probe_set(target: Target, texts: list[str], settings: Settings, view: PostfixView,
              progress: Any = None) -> dict[str, Any]:  # fmt: skip
    """pfdiag.probe-set/1: every destination at once (first address each) within settings.budget;
    one that could not be probed, or did not finish within the budget, says so."""
    t0 = time.monotonic()

    def one(text: str) -> Any:
        return lambda deadline: probe_one(target, text, settings, view, deadline=deadline, all_addresses=False)

    outcomes = run_within(settings.budget, [(t, one(t)) for t in texts], progress=progress)
    docs = [o.value if o.value is not None else
            {"schema": SCHEMA, "destination": o.label, "problem": True, "findings": [],
             "error": o.missing.error if isinstance(o.missing, Failed) else getattr(o.missing, "reason", "")}
            for o in outcomes]  # fmt: skip
    return {"schema": SET_SCHEMA, "seconds": round(time.monotonic() - t0, 3), "where": target.where,
            "probes": docs, "problem": any(d.get("problem") for d in docs)}  # fmt: skip


# --- the document --------------------------------------------------------------------------


# the command a probe phase sent, as Postfix names it in "(in reply to X command)"
_COMMANDS = {"ehlo": "EHLO", "helo": "HELO", "ehlo-after-tls": "EHLO", "starttls": "STARTTLS", "mail": "MAIL FROM",
             "rcpt": "RCPT TO", "data": "DATA", "end-of-data": "end of DATA"}  # fmt: skip


def reply_reason(p: PhaseResult, host: str, address: str) -> str | None:
    """The deferral reason Postfix would log for this phase's 4xx/5xx reply ("host H[A] said: ...
    (in reply to RCPT TO command)", "host H[A] refused to talk to me: ..." at the greeting); None
    for a phase without a failing reply."""
    if p.reply_code is None or p.reply_code < 400 or not p.text:
        return None
    if p.name == "banner":
        return f"host {host}[{address}] refused to talk to me: {p.text}"
    cmd = _COMMANDS.get(p.name)
    return f"host {host}[{address}] said: {p.text}" + (f" (in reply to {cmd} command)" if cmd else "")


def classify_replies(r: ProbeResult, host: str | None = None) -> ProbeResult:
    """The probe's failing replies classified by the log classifier (diagnose.classify), the text
    Postfix would log for them: a greylisting 451 at RCPT TO is E21 here as in the logs and queue.
    The phase keeps its name; its cause_id becomes the classifier's (unless it has none)."""
    from dataclasses import replace

    changed = False
    phases = []
    for p in r.phases:
        reason = reply_reason(p, host or r.host, r.host)
        if reason is not None:
            from diagnose.classify import UNCLASSIFIED, classify

            c = classify(reason, status="deferred" if p.reply_code and p.reply_code < 500 else None)
            if c.cause_id != UNCLASSIFIED and c.cause_id != p.cause_id:
                p, changed = replace(p, cause_id=c.cause_id), True
        phases.append(p)
    return replace(r, phases=tuple(phases)) if changed else r


def report_probe_findings(target: Target, probe: ProbeResult, hop: dict[str, Any], config_dir: str | None,
                          budget: float = 10.0) -> list[Finding]:  # fmt: skip
    """The findings of one of the report's probes (checks.builtin smtp.nexthops, which gets this
    from the engine: checks never import diagnose), judged as pfdiag probe judges them: replies
    classified by the log classifier, and one verdict under the TLS policy of the destination's
    transport (a peer Postfix would refuse is never "talks SMTP normally")."""
    from diagnose.probetls import policy_findings, tls_doc

    probe = classify_replies(probe, hop.get("name"))
    tls = None
    if probe.starttls_offered is not None or probe.tls is not None:  # the conversation got to EHLO
        domain = str(hop.get("domain") or "")
        try:
            tls = tls_doc(target, probe, domain or f"[{probe.host}]:{probe.port}", probe.host, probe.port, config_dir,
                          budget=budget, service=str(hop.get("transport") or "smtp"))  # fmt: skip
        except PfdiagError:
            tls = None  # the policy could not be read: the conversation's findings stand alone
    return policy_findings(to_findings(probe), tls, probe)


def _phase_dict(p: Any) -> dict[str, Any]:
    return {"phase": p.name, "seconds": p.seconds, "verdict": p.verdict.value, "timeout_param": p.timeout_param,
            "timeout": p.timeout_value, "reply_code": p.reply_code, "enhanced_code": p.enhanced_code,
            "text": p.text, "detail": p.detail, "cause_id": p.cause_id,
            "cause_title": _title(p.cause_id) if p.reply_code and p.reply_code >= 400 else None}  # fmt: skip


def _title(cause_id: str | None) -> str | None:
    if not cause_id:
        return None
    try:
        from diagnose.causes import get_cause

        return get_cause(cause_id).title
    except KeyError:
        return None


def finding_dict(f: Finding) -> dict[str, Any]:
    return {"severity": str(f.severity), "cause_id": f.cause_id, "cause_title": _title(f.cause_id), "summary": f.summary}


def probe_dict(r: ProbeResult) -> dict[str, Any]:
    return {
        "host": r.host, "port": r.port, "seconds": r.seconds, "completed": r.completed,
        "phases": [_phase_dict(p) for p in r.phases],
        "banner": r.banner, "masked_banner": r.masked_banner, "esmtp": r.esmtp,
        "capabilities": list(r.capabilities), "starttls_offered": r.starttls_offered,
        "tls": None if r.tls is None else {"protocol": r.tls.protocol, "cipher": r.tls.cipher, "bits": r.tls.bits},
        "tls_capabilities": list(r.tls_capabilities), "error": r.error, "notes": list(r.notes),
        "transcript": list(r.transcript),
    }  # fmt: skip


def _ladder_dict(v: LadderVerdict, results: tuple[MessageResult, ...]) -> dict[str, Any]:
    by_size = {m.size: m for m in results}
    steps = []
    for st in v.steps:
        m = by_size.get(st.size)
        data = m.probe.phase(DATA) if m else None
        eod = m.probe.phase(END_OF_DATA) if m else None
        body = m.probe.phase(BODY) if m else None
        steps.append({
            "size": st.size, "message_id": st.message_id, "outcome": st.outcome, "detail": st.detail,
            "data_seconds": st.data_seconds, "data_reply": data.reply_code if data else None,
            "body_seconds": st.body_seconds, "body_verdict": body.verdict.value if body else None,
            "eod_seconds": st.eod_seconds, "eod_reply": eod.reply_code if eod else None,
            "eod_text": eod.text if eod else "",
        })  # fmt: skip
    return {"kind": v.kind, "explanation": v.explanation, "cause_id": v.cause_id,
            "first_failing_size": v.first_failing_size, "suggestions": list(v.suggestions), "steps": steps,
            "message_ids": [st.message_id for st in v.steps]}  # fmt: skip


def build(r: Route, address: str, port: int, notes: list[str], timeouts: PhaseTimeouts, source: str, helo: str,
          probe: ProbeResult, ladder: tuple[LadderVerdict, tuple[MessageResult, ...]] | None,
          tls: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """The document; ``tls`` (diagnose.probetls.tls_doc) decides the verdict with the conversation's:
    one verdict, the one Postfix's TLS policy for this destination gives."""
    from diagnose.probetls import policy_findings

    findings = policy_findings(to_findings(probe), tls, probe)
    if ladder is not None:
        findings += to_findings(ladder[0])
    worst = max((f.severity for f in findings), default=Severity.OK)
    return {
        "schema": SCHEMA,
        "destination": r.dest.text, "host": address if r.dest.is_domain else r.dest.host, "address": address,
        "port": port, "helo": helo, "timeouts_source": source,
        "timeouts": {n: getattr(timeouts, n) for n in TIMEOUT_NAMES},
        "notes": notes,
        "probe": _with_policy_notes(probe_dict(probe), tls),
        "ladder": None if ladder is None else _ladder_dict(*ladder),
        "findings": [finding_dict(f) for f in findings],
        "problem": worst >= Severity.WARNING,
    }  # fmt: skip


def _with_policy_notes(p: dict[str, Any], tls: dict[str, Any] | None) -> dict[str, Any]:
    """The session's generic note on a missing STARTTLS ("at security level may ...") gives way to
    the verdict of this destination's own policy (the findings say it) when the policy was read."""
    if tls is not None and tls.get("postfix_would_deliver") is not None:
        p["notes"] = [n for n in p["notes"] if not n.startswith("STARTTLS not offered:")]
    return p


def bind_doc(plan: BindPlan, address: str, probe: ProbeResult) -> dict[str, Any]:
    """Which source address Postfix would send from, and which one this probe used."""
    addr, origin = plan.for_address(address)
    used = probe.local_address.rsplit(":", 1)[0].strip("[]") if probe.local_address else None
    return {"address": addr, "from": origin or None, "enforce": plan.enforce,
            # the probe left from where Postfix would: its default source, or the bind address it got
            "reproduced": addr is None or (plan.can_bind and probe.bind_error is None and used == addr),
            "bind_error": probe.bind_error, "local_address": probe.local_address}  # fmt: skip


def _address_row(address: str, port: int, r: ProbeResult | Outcome[ProbeResult]) -> dict[str, Any]:
    if isinstance(r, Outcome):
        if r.value is None:
            error = r.missing.error if isinstance(r.missing, Failed) else getattr(r.missing, "reason", "")
            return {"address": address, "port": port, "ok": False, "phases": [], "error": error, "cause_id": None}
        r = classify_replies(r.value)  # the other addresses' replies: the log classifier's causes too
    bad = next((p for p in r.phases if p.verdict.value not in ("ok", "slow")), None)
    return {"address": address, "port": port, "ok": bad is None,
            "phases": [[p.name, p.verdict.value] for p in r.phases], "error": r.error,
            "cause_id": bad.cause_id if bad else None}  # fmt: skip
