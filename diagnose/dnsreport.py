"""The DNS report (``pfdiag dns DOMAIN|IP``): the lookups that decide where mail goes and whether
it is accepted, asked at once within a budget through the resolver the target sees, as a
document (docs/dns-json.md) with its text and Markdown rendering."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Callable

from checks import dns as d
from checks.config import queue_directory
from checks.errors import PfdiagError, UsageError
from checks.model import Finding, Severity
from checks.runner import Failed, Unfinished, run_within
from checks.targets.base import Target

SCHEMA = "pfdiag.dns/1"


@dataclass
class Request:
    subject: str
    resolver: str = "system"  # system | chroot | IP[:PORT]
    sending_ips: list[str] = field(default_factory=list)
    helo: str | None = None
    dnsbl_zones: list[str] | None = None  # None: d.DEFAULT_DNSBL_ZONES
    dnsbl: bool = True
    compare: bool = True
    budget: float = 20.0
    config_dir: str | None = None

    def checked(self) -> tuple[str | None, list[str], list[str]]:
        """(the subject as an IP address or None, sending IPs, DNSBL zones); UsageError for bad input."""
        if not 0 < self.budget <= 600:
            raise UsageError("--budget must be a number of seconds, 0 < SECONDS <= 600")
        try:
            ip: str | None = str(ipaddress.ip_address(self.subject))
        except ValueError:
            ip = None
            d._name(self.subject)  # a clear usage error for a bad name
        sending = []
        for text in ([ip] if ip else []) + list(self.sending_ips):
            try:
                sending.append(str(ipaddress.ip_address(text.strip())))
            except ValueError:
                raise UsageError(f"--sending-ip: {text!r} is not an IP address") from None
        zones = [d._name(z.strip()) for z in self.dnsbl_zones if z.strip()] if self.dnsbl_zones else list(d.DEFAULT_DNSBL_ZONES)
        if self.helo:
            d._name(self.helo)
        return ip, list(dict.fromkeys(sending)), zones


def _finding(f: Finding, where: str) -> dict[str, Any]:
    return {"check": f.check_id, "severity": str(f.severity), "summary": f.summary, "cause_id": f.cause_id,
            "values": f.values, "evidence": [{"source": e.source, "excerpt": e.excerpt, "where": where} for e in f.evidence]}  # fmt: skip


def _noted(fn: Callable[[], Any]) -> Callable[[float], Any]:
    """A lookup as a runner task: whatever it raises is a note of the report, as before (the
    resolver's own exceptions are not PfdiagErrors)."""

    def task(_deadline: float) -> Any:
        try:
            return fn()
        except PfdiagError:
            raise
        except Exception as exc:
            raise PfdiagError(str(exc)) from exc

    return task


def build(target: Target, req: Request) -> dict[str, Any]:
    """Every lookup the request calls for, at once, within req.budget seconds: the document."""
    subject = req.subject
    ip, sending, zones = req.checked()
    queue_dir = queue_directory(target, req.config_dir)
    timeout = max(1.0, min(5.0, req.budget / 3))
    resolver, described = d.resolver_for(target, req.resolver, queue_dir, timeout)
    where = d.asks_from(target, resolver)
    jobs: dict[str, Any] = {}
    for addr in sending:
        jobs[f"fcrdns {addr}"] = lambda addr=addr: d.fcrdns(resolver, addr)
        if req.dnsbl:
            jobs[f"dnsbl {addr}"] = lambda addr=addr: d.dnsbl_check(resolver, addr, zones)
    if not ip:
        jobs["mx"] = lambda: d.mx_check(resolver, subject)
        jobs["spf"] = lambda: d.spf_check(resolver, subject)
        jobs["dmarc"] = lambda: d.dmarc_check(resolver, subject)
        jobs["mta-sts"] = lambda: d.mta_sts_txt(resolver, subject)
    helo = req.helo
    if helo:
        jobs["helo"] = lambda: d.helo_check(resolver, helo, sending[0] if sending else None)
    compare = None
    drift = None
    if req.compare and req.resolver == "system" and not ip:
        try:
            chroot, chroot_desc = d.resolver_for(target, "chroot", queue_dir, timeout)
            compare = (chroot, chroot_desc)
            drift = d.server_drift(resolver, chroot, d.RESOLV_HOST, d.chroot_resolv(queue_dir))
            jobs["compare"] = lambda: d.compare_resolvers(resolver, chroot, [(subject, "MX"), (subject, "A")])
        except Exception as exc:  # no chroot copy: nothing to compare, say so
            compare = (None, f"not compared: {exc}")
    outcomes = run_within(req.budget, [(name, _noted(fn)) for name, fn in jobs.items()], workers=max(len(jobs), 1),
                          name="pfdiag-dns")  # fmt: skip
    findings: list[Finding] = [drift] if drift else []
    results: dict[str, Any] = {}
    notes: list[str] = []
    for o in outcomes:
        if isinstance(o.missing, Unfinished):
            notes.append(f"{o.label}: not finished within the {req.budget:g} s budget")
        elif isinstance(o.missing, Failed):
            notes.append(f"{o.label}: {o.missing.error}")
        else:
            results[o.label] = o.value
            findings.extend(d.to_findings(o.value))
    if "mx" in results and not ip:  # TLSA of the MX hosts: what DANE would use
        for host in [h.exchange for h in getattr(results["mx"], "hosts", ())][:3]:
            findings.extend(d.to_findings(d.tlsa_check(resolver, host)))
    sts = results.get("mta-sts")
    if sts is not None and sts.record:  # the policy itself, fetched as an MTA-STS sender would
        policy = d.mta_sts_policy(target, resolver, subject, timeout=max(2.0, req.budget / 3))
        findings.extend(policy.findings([h.exchange for h in getattr(results.get("mx"), "hosts", ())]))
    routing = None if ip else delivery_route(target, subject, req.config_dir)
    if routing is not None and not routing["uses_dns"]:
        findings = [_not_for_delivery(f, subject, routing) for f in findings]
        findings.insert(0, Finding("dns.route", Severity.INFO, routing["said"],
                                   values={"transport": routing["transport"], "nexthop": routing["nexthop"]}))  # fmt: skip
    return {
        "schema": SCHEMA, "subject": subject, "kind": "ip" if ip else "domain", "where": where, "routing": routing,
        "sending_ips": sending, "helo": req.helo, "budget": req.budget,
        "resolver": described, "compared_with": compare[1] if compare else None,
        "findings": [_finding(f, where) for f in findings], "notes": notes,
        "problem": any(f.severity >= Severity.PROBLEM for f in findings),
    }  # fmt: skip


# what the destination's own DNS decides: where its mail goes (MX, A fallback) and how it is secured
DELIVERY_CHECKS = ("dns.mx", "dns.mx.cname", "dns.mx.address", "dns.tlsa", "dns.mta_sts_policy", "dns.lookup")


def delivery_route(target: Target, domain: str, config_dir: str | None) -> dict[str, Any] | None:
    """How this Postfix delivers mail for ``domain`` (checks.nexthop.resolve_nexthop, without
    DNS): {"transport", "nexthop", "source", "uses_dns", "said"}; None when it cannot be told
    (no postconf: a plain DNS question then). ``uses_dns`` is False for a transport_maps route to
    a bracketed next hop or an IP ([host]:port: no MX lookup) and for a transport that is not
    SMTP (error, discard, lmtp:unix:...): the domain's MX records then play no part in delivery."""
    from checks.nexthop import NO_SMTP, resolve_nexthop, split_nexthop

    try:
        hop = resolve_nexthop(target, domain, config_dir, None)
    except PfdiagError:
        return None
    if not hop.source.startswith("transport_maps"):
        return None
    host, _port, bracketed = split_nexthop(hop.nexthop or domain)
    literal = _is_ip(host)
    local = hop.transport in NO_SMTP or hop.nexthop.startswith(("unix:", "/")) or hop.transport.startswith("lmtp")
    uses_dns = not (bracketed or literal or local)
    target_text = f"{hop.transport}:{hop.nexthop}" if hop.nexthop else hop.transport
    said = (f"{domain} is routed by transport_maps to {target_text} ({hop.source}): "
            + ("DNS is not used for its delivery; its MX records only matter to other senders" if not uses_dns
               else f"its own MX records are not used; {host}'s are"))  # fmt: skip
    return {"transport": hop.transport, "nexthop": hop.nexthop, "source": hop.source, "uses_dns": uses_dns,
            "said": said}  # fmt: skip


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.removeprefix("ipv6:").removeprefix("IPv6:"))
        return True
    except ValueError:
        return False


def _not_for_delivery(f: Finding, domain: str, routing: dict[str, Any]) -> Finding:
    """A problem of the domain's own delivery DNS is no problem for this Postfix, which routes the
    domain by transport_maps without DNS: shown as information, saying why."""
    from dataclasses import replace

    if f.check_id not in DELIVERY_CHECKS or f.severity < Severity.WARNING:
        return f
    return replace(f, severity=Severity.INFO, cause_id=None,
                   summary=f"{f.summary} (not used for delivery here: transport_maps routes {domain} to "
                           f"{routing['transport']}:{routing['nexthop']})")  # fmt: skip


def render(doc: dict[str, Any], md: bool = False) -> str:
    """Plain text, or Markdown with md=True. DNS answers, names and error texts are outside
    text: written out visibly, in Markdown escaped or in code spans (diagnose.textsafe)."""
    from diagnose.textsafe import md_code, md_text, visible

    marks = {"ok": "ok  ", "info": "info", "warning": "WARN", "problem": "FAIL", "error": "ERR "}
    esc = md_text if md else visible
    head = f"DNS of {esc(doc['subject'])} via {esc(doc['resolver'])}" + (
        f" (compared with {esc(doc['compared_with'])})" if doc["compared_with"] else "")
    out = [f"# {head}", ""] if md else [head, ""]
    for f in doc["findings"]:
        cause = f" [{f['cause_id']}]" if f["cause_id"] else ""
        line = f"{marks.get(f['severity'], esc(f['severity']))} {esc(f['summary'])}{esc(cause)}"
        out.append(f"- {line}" if md else line)
        for e in f["evidence"][:2]:
            ex = e["excerpt"].splitlines()[0] if e["excerpt"] else ""
            out.append(f"    {esc(e['source'])}: {md_code(ex) if md else visible(ex)}")
    for n in doc["notes"]:
        out.append(f"note: {esc(n)}")
    return "\n".join(out) + "\n"


def line_owners(doc: dict[str, Any]) -> list[str]:
    """The severity each line of render() belongs to ("" for headers, evidence and notes)."""
    out = ["", ""]
    for f in doc["findings"]:
        out.append(f["severity"])
        out += [""] * len(f["evidence"][:2])
    return out + [""] * len(doc["notes"])
