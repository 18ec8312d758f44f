"""pfdiag probe DESTINATION: one SMTP conversation timed phase by phase against Postfix's
own smtp_*_timeout values, and (with --send-test) the end-of-data size ladder (E09)."""

from __future__ import annotations

ORDER = 40  # place in pfdiag --help

import argparse
import json
import re
import socket
import sys
import time
from dataclasses import dataclass, fields
from typing import Any

from checks.bind import BIND_NAMES, BindPlan, bind_plan, ip_literal
from checks.errors import ConnectRefused, PfdiagError, UsageError
from checks.model import Finding, Severity
from checks.postfix.defaults import SHORT_TIMEOUTS as _SHORT
from checks.smtp import (
    BODY,
    DATA,
    DEFAULT_LADDER_SIZES,
    END_OF_DATA,
    SMTPS_PORTS,
    LadderVerdict,
    MessageResult,
    PhaseTimeouts,
    ProbeResult,
    conclude_ladder,
    probe_address,
    send_test_messages,
    to_findings,
)
from diagnose.target_options import add_target_options, open_target

SCHEMA = "pfdiag.probe/1"
EXIT_PROBLEM = 4
DEFAULT_BUDGET = 120.0
_MAX_SIZE = 64 << 20
# No DNS for these (RFC 2606 / 6761): they never resolve, tests use [127.0.0.1].
_RESERVED_TLDS = ("test", "invalid", "example")
# --timeouts short: quick looks; a phase that needs longer is "would-time-out" only for this probe.
SHORT_TIMEOUTS = PhaseTimeouts(**_SHORT)
_TIMEOUT_NAMES = tuple(f.name for f in fields(PhaseTimeouts))

HELP = """\
Talks SMTP to DESTINATION the way Postfix's smtp(8) client does (connect, greeting,
EHLO, STARTTLS, MAIL, [RCPT], RSET, QUIT: nothing is sent by default) and times every
phase against this Postfix's smtp_*_timeout values. With --send-test it delivers real
test messages of growing size to --to and tells a path-MTU black hole from a receiver
that is slow after "." (E09) or an SMTP-inspecting firewall.

DESTINATION:
  [host]:port, [host]     no MX lookup (like Postfix's brackets)
  domain                  routed like Postfix: transport_maps, relayhost, MX, A/AAAA
  host:port               the host's own A/AAAA, no MX lookup
  port defaults to 25; 465 speaks TLS from the first byte (SMTPS)

exit status: 0 every phase ok, 1 error (e.g. a snapshot/--demo target: a probe needs a
live target), 2 usage error, 4 a problem found (a phase slow, timing out, failing, or a
size ladder that is not healthy)

examples:
  pfdiag probe '[192.0.2.25]'
  pfdiag probe mx.example.net:25 --rcpt postmaster@example.net --timeouts short
  pfdiag probe '[192.0.2.25]' --send-test --to me@example.net --sizes 300,4096,65536
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("probe", help="talk SMTP to a server, time each phase against Postfix's timeouts",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("destination", metavar="DESTINATION", nargs="+",
                   help="[host]:port, [host], host:port or domain; several are probed at once within --budget")
    p.add_argument("--helo", metavar="NAME", help="EHLO name (default: smtp_helo_name of this Postfix, else the FQDN)")
    p.add_argument("--from", dest="mail_from", metavar="ADDR", default="", help="MAIL FROM address (default: <>)")
    p.add_argument("--rcpt", metavar="ADDR", help="also try RCPT TO (then RSET and QUIT; nothing is sent)")
    p.add_argument("--bind", metavar="ADDRESS", help="send from this local IP address (default: this Postfix's "
                   "smtp_bind_address / smtp_bind_address6 for the address family probed)")
    p.add_argument("--starttls", choices=("auto", "yes", "no"), default="auto", help="auto: when offered (default)")
    p.add_argument("--budget", type=float, default=DEFAULT_BUDGET, metavar="SECONDS",
                   help=f"total time to spend (default {DEFAULT_BUDGET:g}); a phase cut short by it is 'undecided'")
    p.add_argument("--timeouts", choices=("postfix", "short"), default="postfix",
                   help="postfix: this server's smtp_*_timeout values (defaults if postconf fails); short: quick look")
    p.add_argument("-c", "--config-dir", metavar="DIR", help="Postfix configuration directory (postconf -c DIR)")
    p.add_argument("--send-test", action="store_true", help="send REAL test messages of growing size (needs --to)")
    p.add_argument("--to", metavar="ADDRESS", help="recipient of the test messages: a mailbox you control")
    p.add_argument("--sizes", metavar="N,N,...", help=f"test message body sizes in bytes "
                   f"(default {','.join(map(str, DEFAULT_LADDER_SIZES))})")  # fmt: skip
    p.add_argument("--yes", action="store_true", help="send the test messages without asking")
    p.add_argument("--resolver", metavar="IP[:PORT]",
                   help="DNS server for a domain's MX lookup (default: the target's own resolver; reserved names never)")
    p.add_argument("--compare-here", action="store_true",
                   help="with --host: also probe from this machine and compare the two vantage points")
    p.add_argument("-f", "--format", choices=("text", "md", "json"), default="text")
    add_target_options(p)
    p.set_defaults(func=run)


# --- destination -------------------------------------------------------------------------

_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


@dataclass(frozen=True)
class Destination:
    text: str
    host: str  # hostname or IP literal, no brackets
    port: int
    bracketed: bool
    is_ip: bool
    name: str = ""  # the host name Postfix found the address under (MX or nexthop host): TLSA is asked for it
    nexthop: str = ""  # the next-hop domain (recipient domain, or transport/relayhost host): "nexthop" name checks


def _valid_host(host: str) -> bool:
    name = host[:-1] if host.endswith(".") else host
    return 0 < len(name) <= 253 and all(_LABEL.match(label) for label in name.split("."))


_ip = ip_literal  # an IP literal ("ipv6:" prefix allowed) -> the address, else None


def parse_destination(text: str) -> Destination:
    bad = UsageError(f"invalid destination {text!r}: use [host]:port, [host], host:port or a domain")
    s = text.strip()
    if not s or any(c.isspace() or ord(c) < 32 for c in s):
        raise bad
    port_text = None
    if s.startswith("["):
        end = s.find("]")
        if end < 0:
            raise bad
        host, rest, bracketed = s[1:end], s[end + 1 :], True
        if rest:
            if not rest.startswith(":"):
                raise bad
            port_text = rest[1:]
    else:
        bracketed = False
        if s.count(":") > 1:  # a bare IPv6 literal
            host = s
        elif ":" in s:
            host, port_text = s.split(":", 1)
        else:
            host = s
    port = 25
    if port_text is not None:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise UsageError(f"invalid port in destination {text!r}: 1..65535")
        port = int(port_text)
    ip = _ip(host)
    if ip is None and (host.count(":") or not _valid_host(host) or host.replace(".", "").isdigit()):
        raise bad
    return Destination(text, ip or host.rstrip("."), port, bracketed, ip is not None)


def resolve(dest: Destination) -> tuple[list[str], list[str]]:
    """(addresses, notes). Only A/AAAA of the host itself; reserved names are never looked up."""
    notes = []
    if not dest.bracketed:
        notes.append("MX lookup not implemented yet, probing the host's address")
    if dest.is_ip:
        return [dest.host], notes
    tld = dest.host.lower().rsplit(".", 1)[-1]
    if tld in _RESERVED_TLDS:
        raise PfdiagError(f"{dest.host}: .{tld} names never resolve (RFC 2606/6761); give an address, e.g. [127.0.0.1]:{dest.port}")
    try:
        infos = socket.getaddrinfo(dest.host, dest.port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise PfdiagError(f"{dest.host}: no address ({getattr(exc, 'strerror', None) or exc})") from None
    addrs = list(dict.fromkeys(str(i[4][0]) for i in infos))
    if not addrs:
        raise PfdiagError(f"{dest.host}: no address")
    if len(addrs) > 1:
        notes.append(f"{dest.host} has {len(addrs)} addresses; probing {addrs[0]} only (not probed: {', '.join(addrs[1:])})")
    return addrs, notes


def _route_resolver(target: Any, spec: str | None) -> Any:
    from checks import nexthop

    if spec:
        from checks.dns import resolver_for as dns_resolver

        return dns_resolver(target, spec)[0]  # asked for by name: used as given
    local = nexthop.resolver_for(target)
    if local is not None or type(target).__name__ != "SSHTarget":
        return local
    from checks.dns import resolver_for as dns_resolver

    try:  # the mail host's own resolv.conf, asked from there; reserved names still never
        return nexthop._NoReserved(dns_resolver(target, "system")[0])
    except PfdiagError:
        return None


def route(target: Any, dest: Destination, config_dir: str | None,
          resolver_spec: str | None = None) -> tuple[Destination, list[tuple[str, int]], list[str]]:  # fmt: skip
    """A bare domain goes where Postfix would send its mail: transport_maps, relayhost, MX.
    Returns the first next hop and every (address, port) in the order Postfix tries them."""
    from checks.nexthop import resolve_nexthop

    hop = resolve_nexthop(target, dest.host, config_dir, _route_resolver(target, resolver_spec))
    reserved = dest.host.lower().rsplit(".", 1)[-1] in _RESERVED_TLDS
    if reserved and not resolver_spec and not hop.source.startswith("transport_maps"):
        resolve(dest)  # says why a reserved name is never looked up (unless a server was named)
    if not hop.deliverable_by_smtp:
        raise PfdiagError(f"{dest.host}: Postfix does not deliver it over SMTP ({'; '.join(hop.notes)})")
    if not hop.addresses:
        addresses, notes = resolve(dest)
        return dest, [(a, dest.port) for a in addresses], [f"next hop: {hop.source}", *hop.notes, *notes]
    first = hop.addresses[0]
    notes = [f"next hop of {dest.host}: {hop.source}; transport {hop.transport}",
             f"first address Postfix tries: {first.host}[{first.addr}]:{first.port} ({first.source})", *hop.notes]
    others = [f"{a.addr}:{a.port}" for a in hop.addresses[1:]]
    if others:
        notes.append(f"then, if that fails: {', '.join(others)}")
    nexthop = _nexthop_domain(hop.nexthop) or dest.host
    routed = Destination(dest.text, first.addr, first.port, True, True, "" if first.host == first.addr else first.host, nexthop)
    return routed, [(a.addr, a.port) for a in hop.addresses], notes


def _nexthop_domain(configured: str) -> str:
    """A transport/relayhost next hop as Postfix's "nexthop" strategy sees it: no socket type
    prefix (inet:), no enclosing brackets, no trailing port."""
    text = configured.strip()
    if text.lower().startswith("inet:"):
        text = text[5:]
    if text.startswith("["):
        return text[1 : text.find("]")] if "]" in text else text[1:]
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


def parse_sizes(text: str | None) -> tuple[int, ...]:
    if text is None:
        return DEFAULT_LADDER_SIZES
    out = []
    for part in text.split(","):
        p = part.strip()
        if not p.isdigit() or not 1 <= int(p) <= _MAX_SIZE:
            raise UsageError(f"--sizes: {part!r} is not a size in bytes (1..{_MAX_SIZE})")
        out.append(int(p))
    if not out:
        raise UsageError("--sizes needs at least one size")
    return tuple(out)


# --- settings from this Postfix ------------------------------------------------------------



Preread = tuple[dict[str, str], dict[tuple[str, str, str], str]]


def _light_settings(target: Any, config_dir: str | None) -> Preread:
    """The source-address and TLS-policy settings in one postconf -x and one postconf -P run,
    both at once: start-up of a quick probe is mostly these two processes."""
    import threading

    from checks.postfix.postconf import parse_postconf, parse_postconf_p
    from checks.tls import TLS_PARAMS

    postconf = ["postconf", *(("-c", config_dir) if config_dir else ())]  # checks.config.postfix_argv, without its imports
    master: list[Any] = []

    def read_master() -> None:
        try:
            master.append(target.run([*postconf, "-P"], timeout=20))
        except PfdiagError as exc:
            master.append(exc)

    thread = threading.Thread(target=read_master, daemon=True)
    thread.start()
    try:
        res = target.run([*postconf, "-x", *BIND_NAMES, *TLS_PARAMS], timeout=20)
    finally:
        thread.join()
    values = parse_postconf(res.stdout) if res.ok else {}
    over = master[0]
    if isinstance(over, PfdiagError):
        raise over
    return values, (parse_postconf_p(over.stdout) if over.ok else {})


def postfix_settings(target: Any, args: argparse.Namespace) -> tuple[PhaseTimeouts, str, str, list[str], BindPlan, Preread | None]:
    """(timeouts, where the timeouts came from, HELO name, notes, source addresses, and the
    TLS settings when they were read along: tls_doc need not read them again)."""
    notes: list[str] = []
    values: dict[str, str] | None = None
    overrides: dict[tuple[str, str, str], str] = {}
    preread: Preread | None = None
    need_helo = not args.helo
    try:
        if args.timeouts == "postfix" or need_helo:
            from checks.config import read_config

            rep = read_config(target, args.config_dir, names=(*_TIMEOUT_NAMES, "smtp_helo_name", "myhostname", *BIND_NAMES))
            values = {k: v for k, v in rep.config.values.items() if v is not None}
            overrides = dict(rep.config.overrides)
        else:  # no timeouts or HELO name needed: two light postconf runs instead of read_config's three
            preread = values, overrides = _light_settings(target, args.config_dir)
    except PfdiagError as exc:
        notes.append(f"could not read this Postfix's settings ({exc})")
    if args.timeouts == "short":
        timeouts, source = SHORT_TIMEOUTS, "short (--timeouts short: quick look, not Postfix's values)"
    elif values is not None:
        try:
            timeouts = PhaseTimeouts.from_postconf({k: v for k, v in values.items() if k in _TIMEOUT_NAMES})
            source = "this Postfix's effective values (postconf" + (f" -c {args.config_dir}" if args.config_dir else "") + ")"
        except PfdiagError as exc:
            timeouts, source = PhaseTimeouts(), f"Postfix defaults (postconf value unusable: {exc})"
    else:
        timeouts, source = PhaseTimeouts(), "Postfix defaults (this Postfix's values could not be read)"
    helo = args.helo
    if not helo:
        cand = (values or {}).get("smtp_helo_name") or (values or {}).get("myhostname") or ""
        helo = cand if cand and "$" not in cand else socket.getfqdn()
    plan, more = bind_plan(values or {}, overrides, getattr(args, "bind", None),
                           can_bind=type(target).__name__ != "SSHTarget")  # fmt: skip
    return timeouts, source, helo, notes + more, plan, preread


# --- the document --------------------------------------------------------------------------


def _phase_dict(p: Any) -> dict[str, Any]:
    return {"phase": p.name, "seconds": p.seconds, "verdict": p.verdict.value, "timeout_param": p.timeout_param,
            "timeout": p.timeout_value, "reply_code": p.reply_code, "enhanced_code": p.enhanced_code,
            "text": p.text, "detail": p.detail, "cause_id": p.cause_id}  # fmt: skip


def _finding_dict(f: Finding) -> dict[str, Any]:
    title = None
    if f.cause_id:
        try:
            from diagnose.causes import get_cause

            title = get_cause(f.cause_id).title
        except KeyError:
            title = None
    return {"severity": str(f.severity), "cause_id": f.cause_id, "cause_title": title, "summary": f.summary}


def _probe_dict(r: ProbeResult) -> dict[str, Any]:
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


def build(dest: Destination, address: str, notes: list[str], timeouts: PhaseTimeouts, source: str, helo: str,
          probe: ProbeResult, ladder: tuple[LadderVerdict, tuple[MessageResult, ...]] | None) -> dict[str, Any]:
    findings = to_findings(probe)
    if ladder is not None:
        findings += to_findings(ladder[0])
    worst = max((f.severity for f in findings), default=Severity.OK)
    return {
        "schema": SCHEMA,
        "destination": dest.text, "host": dest.host, "address": address, "port": dest.port,
        "helo": helo, "timeouts_source": source,
        "timeouts": {n: getattr(timeouts, n) for n in _TIMEOUT_NAMES},
        "notes": notes,
        "probe": _probe_dict(probe),
        "ladder": None if ladder is None else _ladder_dict(*ladder),
        "findings": [_finding_dict(f) for f in findings],
        "problem": worst >= Severity.WARNING,
    }  # fmt: skip


def bind_doc(plan: BindPlan, address: str, probe: ProbeResult) -> dict[str, Any]:
    """Which source address Postfix would send from, and which one this probe used."""
    addr, origin = plan.for_address(address)
    used = probe.local_address.rsplit(":", 1)[0].strip("[]") if probe.local_address else None
    return {"address": addr, "from": origin or None, "enforce": plan.enforce,
            # the probe left from where Postfix would: its default source, or the bind address it got
            "reproduced": addr is None or (plan.can_bind and probe.bind_error is None and used == addr),
            "bind_error": probe.bind_error, "local_address": probe.local_address}  # fmt: skip


def tls_doc(target: Any, probe: ProbeResult, original: str, address: str, port: int,
            config_dir: str | None, tlsa_host: str = "", resolver: Any = None,
            nexthop: str = "", preread: Preread | None = None) -> dict[str, Any] | None:  # fmt: skip
    """The certificate the probe saw, this Postfix's TLS policy for the next hop, and whether
    Postfix would deliver with it (the verdict Postfix logs when it would not). resolver: a
    callable giving the route's resolver, called only for DANE (building one costs start-up)."""
    from checks import tls

    domain = None if original.startswith("[") or _ip(original.split(":")[0]) else original.split(":")[0]
    try:
        policy = tls.policy_for(target, f"[{tlsa_host or address}]:{port}", domain, config_dir,  # the nexthop as routed
                                preread=preread)
    except PfdiagError as exc:
        policy = tls.Policy("may", f"policy not readable ({exc}): Postfix's default assumed")
    nexthop = nexthop or _nexthop_domain(original)
    hostname = tlsa_host or nexthop  # bracketed (no MX lookup): hostname is the nexthop
    rule = tls.name_rule(policy, nexthop, hostname)
    cert = None
    if probe.tls is not None and probe.tls.peer_certificate:
        names = list(rule.names) if rule else list(dict.fromkeys(n for n in (hostname, nexthop) if n))
        cert = tls.analyze(probe.tls.peer_certificate, names, multi_label=policy.multi_label)
    if probe.starttls_offered is None and cert is None and policy.level in ("none", "may"):
        return None
    trusted, trust_detail = (False, "self-signed") if cert is not None and cert.self_signed else (None, "not checked")
    if cert is not None and not cert.self_signed and policy.level in ("verify", "secure"):
        trusted, trust_detail = _verify_chain(target, address, port, probe)
    dane, dane_doc = ("none", ""), None
    if cert is not None and policy.level in ("dane", "dane-only"):
        dane, dane_doc = _dane(tls, probe, port, tlsa_host or domain or "", resolver)
    verdict = tls.judge(policy.level, probe.starttls_offered or port in SMTPS_PORTS, cert, trusted, dane)
    if dane_doc and dane_doc["state"] == "lookup-failed":
        verdict = tls.Judgement(False, dane_doc["why"], "E12", f"TLSA lookup error for {dane_doc['tlsa_name']}")
    names_doc = {"names": list(rule.names), "patterns": list(rule.patterns), "source": rule.source,
                 "nexthop": nexthop, "hostname": hostname} if rule else None  # fmt: skip
    if rule and cert is not None and cert.name_match is None and verdict.cause_id == "E19":
        verdict.why += f" [names from {rule.source}]"
    return {"dane": dane_doc, "policy": {"level": policy.level, "source": policy.source, "match": policy.match},
            "name_check": names_doc,
            "protocol": probe.tls.protocol if probe.tls else None, "cipher": probe.tls.cipher if probe.tls else None,
            "certificate": tls.describe(cert) if cert else None, "trusted": trusted, "trust_detail": trust_detail,
            "chain": _chain_doc(probe.tls.peer_chain) if probe.tls and probe.tls.peer_chain else None,
            "postfix_would_deliver": verdict.accepted, "why": verdict.why, "cause_id": verdict.cause_id,
            "postfix_would_log": verdict.log_line}  # fmt: skip


def _chain_doc(chain: tuple[bytes, ...]) -> list[dict[str, str]]:
    """What the server sent, leaf first: subject, issuer and SHA-256 of each certificate."""
    import hashlib

    from cryptography import x509

    out = []
    for der in chain[:10]:
        try:
            c = x509.load_der_x509_certificate(der)
            out.append({"subject": c.subject.rfc4514_string(), "issuer": c.issuer.rfc4514_string(),
                        "sha256": hashlib.sha256(der).hexdigest()})  # fmt: skip
        except ValueError:
            out.append({"subject": "(unparsable certificate)", "issuer": "", "sha256": hashlib.sha256(der).hexdigest()})
    return out


def _dane(tls: Any, probe: ProbeResult, port: int, host: str, resolver: Any) -> tuple[tuple[str, str], dict[str, Any]]:
    """TLSA for _port._tcp.host from the resolver the route used, with its DNSSEC status."""
    from checks import nexthop

    resolver = resolver() if callable(resolver) else resolver
    doc: dict[str, Any] = {"tlsa_name": f"_{port}._tcp.{host}" if host else None, "records": [], "dnssec": None,
                           "status": None, "state": "none", "matched": "", "why": ""}  # fmt: skip
    if not host or _ip(host):
        doc["why"] = "the next hop is an IP address: no TLSA name, Postfix's dane falls back to may"
        return ("none", ""), doc
    if resolver is None or (isinstance(resolver, nexthop._NoReserved) and host.rsplit(".", 1)[-1].lower() in _RESERVED_TLDS):
        doc["why"] = "TLSA not looked up (no resolver for this target, or a reserved name: use --resolver)"
        return ("none", ""), doc
    from checks.dns import lookup

    ans = lookup(getattr(resolver, "inner", resolver), doc["tlsa_name"], "TLSA")
    doc.update(records=list(ans.records), dnssec=ans.authenticated, status=ans.status)
    if ans.temporary:  # Postfix defers a dane destination whose TLSA lookup fails
        doc.update(state="lookup-failed", why=f"TLSA lookup {ans.status}: Postfix defers DANE destinations")
        return ("no-match", ""), doc
    chain = probe.tls.peer_chain or None  # never empty when captured: the leaf is always sent
    state, why = tls.dane_state(probe.tls.peer_certificate, ans.records, ans.authenticated, chain)
    doc.update(state=state[0], matched=state[1], why=why)
    return state, doc


def _verify_chain(target: Any, address: str, port: int, probe: ProbeResult) -> tuple[bool | None, str]:
    """A second handshake that verifies the chain against this system's CA store (as Postfix
    does at verify/secure with smtp_tls_CAfile/CApath unset... or set to the same store)."""
    import ssl

    ctx = ssl.create_default_context()
    ctx.check_hostname = False  # names are judged separately, with Postfix's match rules
    # from the source address the first handshake used, when it could bind one
    bind = {"source": probe.source, "bind_fallback": True} if probe.source and not probe.bind_error else {}
    try:
        again = probe_address(target, address, port, helo_name="pfdiag.invalid", starttls=True, tls_context=ctx,
                              timeouts=SHORT_TIMEOUTS, total_budget=20, wrappermode=port in SMTPS_PORTS,
                              **bind)  # fmt: skip
    except PfdiagError as exc:
        return None, f"not checked: {exc}"
    if again.tls is not None:
        return True, "the chain verifies against this system's CA store"
    bad = next((p for p in again.phases if p.verdict.value != "ok"), None)
    detail = bad.detail if bad else "the verifying handshake failed"
    return (False, detail) if "verif" in detail.lower() or "certificate" in detail.lower() else (None, f"not checked: {detail}")


def compare_vantage(there: dict[str, Any], here: dict[str, Any], where: str, port: int) -> dict[str, Any]:
    """The same probe from the mail host and from this machine: where does it break?"""

    def first_bad(p: dict[str, Any]) -> dict[str, Any] | None:
        return next((ph for ph in p["phases"] if ph["verdict"] not in ("ok", "slow")), None)

    bad_there, bad_here = first_bad(there), first_bad(here)
    if bad_there and not bad_here:
        if bad_there["phase"] == "connect":
            why = (f"from {where} the connection to port {port} fails ({bad_there['detail']}) while it works from here: "
                   f"outbound port {port} is blocked on the mail host or its network (provider, firewall, security group)")  # fmt: skip
        else:
            why = f"from {where} it fails at {bad_there['phase']} ({bad_there['detail']}), from here it works: the mail host's path or address is treated differently"
    elif bad_here and not bad_there:
        why = f"from here it fails at {bad_here['phase']}, from {where} it works: this machine's network is the odd one out"
    elif bad_there and bad_here:
        why = f"it fails from both vantage points ({bad_there['phase']} / {bad_here['phase']}): the destination itself"
    else:
        why = "both vantage points reach the destination alike"
    return {"where": [where, "local"], "differs": bool(bad_there) != bool(bad_here), "conclusion": why,
            "there": there, "here": here}  # fmt: skip


# --- rendering -----------------------------------------------------------------------------


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
             _code(p), _short(p["text"] or p["detail"])] for p in doc["probe"]["phases"]]  # fmt: skip


def _ladder_rows(lad: dict[str, Any]) -> list[list[str]]:
    rows = []
    for st in lad["steps"]:
        data = f"{_secs(st['data_seconds'])} s -> {st['data_reply'] or '-'}"
        eod = f"{_secs(st['eod_seconds'])} s -> {st['eod_reply'] or '-'}"
        rows.append([str(st["size"]), data, f"{_secs(st['body_seconds'])} s", eod, st["outcome"], st["message_id"]])
    return rows


_PHASE_HEAD = ["phase", "seconds", "verdict", "Postfix timeout", "reply", "text"]
_LADDER_HEAD = ["size", "DATA -> 354", "body write", "'.' -> reply", "verdict", "Message-ID"]


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows]]


def family_difference(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A finding when every address of one IP version fails and one of the other works: an
    IPv6 route or firewall that is broken (or an IPv4 address that is blocked) is met by Postfix
    on whichever addresses smtp_address_preference puts first, and costs a connect timeout each."""
    by = {4: [r for r in rows if ":" not in r["address"]], 6: [r for r in rows if ":" in r["address"]]}
    if not by[4] or not by[6]:
        return None
    works = {v: any(r["ok"] for r in by[v]) for v in (4, 6)}
    if works[4] == works[6]:
        return None
    bad, good = (6, 4) if works[4] else (4, 6)
    cause = next((r.get("cause_id") for r in by[bad] if r.get("cause_id")), None)  # as the probe classified it
    failing = ", ".join(f"{r['address']} ({r['error'] or 'see phases'})" for r in by[bad][:3])
    return _finding_dict(Finding(
        "smtp.address-family", Severity.PROBLEM,
        f"every IPv{bad} address fails ({failing}) while IPv{good} works: Postfix meets this on the IPv{bad} "
        f"addresses smtp_address_preference lets it try (default any: in random order), each costing up to "
        f"smtp_connect_timeout; fix the IPv{bad} route or firewall, or set smtp_address_preference = ipv{good} "
        "(or inet_protocols) until it is fixed", cause))  # fmt: skip


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
        out.append(f"  Postfix would {'deliver' if t['postfix_would_deliver'] else 'NOT deliver'}: {t['why']}"
                   + (f" (it logs: {t['postfix_would_log']})" if t["postfix_would_log"] and not t["postfix_would_deliver"] else ""))  # fmt: skip
    if doc.get("compare"):
        c = doc["compare"]
        out += ["", f"Compared with this machine: {c['conclusion']}"]
        for label, p in ((c["where"][0], c["there"]), ("this machine", c["here"])):
            out.append(f"  {label}: " + ", ".join(f"{ph['phase']} {ph['verdict']}" for ph in p["phases"]))
    return "\n".join(out) + "\n"


def _md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    esc = lambda c: c.replace("|", "\\|")  # noqa: E731
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(map(esc, r)) + " |" for r in rows]


def render_md(doc: dict[str, Any]) -> str:
    out = [f"# SMTP probe of {doc['destination']}", ""] + [f"- {ln}" for ln in _header_lines(doc)[1:]]
    out += ["", "## Phases", ""] + _md_table(_PHASE_HEAD, _phase_rows(doc))
    if doc["probe"]["notes"]:
        out += [""] + [f"- {n}" for n in doc["probe"]["notes"]]
    lad = doc["ladder"]
    if lad:
        out += ["", "## End-of-data size ladder", ""] + _md_table(_LADDER_HEAD, _ladder_rows(lad))
        out += ["", f"**{lad['kind']}**" + (f" ({lad['cause_id']})" if lad["cause_id"] else "") + f": {lad['explanation']}", ""]
        out += [f"- {s}" for s in lad["suggestions"]]
        out += ["", "Message-IDs sent: " + ", ".join(f"`{m}`" for m in lad["message_ids"])]
    out += ["", "## Findings", ""] + [f"- {_finding_line(f)}" for f in doc["findings"]]
    return "\n".join(out) + "\n"


# --- run -----------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    if len(args.destination) == 1:
        return run_one(args, args.destination[0])
    return run_set(args)


def _progress(futures: list[Any], total: int) -> None:
    """A progress bar on a terminal's stderr while the set runs (stdout, JSON included, has none)."""
    if not sys.stderr.isatty():
        return
    from concurrent.futures import as_completed

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("probing {task.completed}/{task.total} destinations"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("probe", total=total)
        for _ in as_completed(futures):
            bar.advance(task)


def run_set(args: argparse.Namespace) -> int:
    """Several destinations at once: the set takes about as long as its slowest member."""
    from concurrent.futures import ThreadPoolExecutor

    if args.send_test or args.compare_here:
        raise UsageError("--send-test and --compare-here take one destination")
    dests = [parse_destination(d) for d in args.destination]  # usage errors before any connection
    if len(dests) > 50:
        raise UsageError("at most 50 destinations at once")
    target = _live_target(args)
    timeouts, source, helo, notes, plan, preread = postfix_settings(target, args)
    t0 = time.monotonic()

    def one(text: str) -> dict[str, Any]:
        try:
            return _probe_doc(args, target, parse_destination(text), timeouts, source, helo, list(notes), plan, preread)
        except PfdiagError as exc:
            return {"schema": SCHEMA, "destination": text, "error": str(exc), "problem": True, "findings": []}

    with ThreadPoolExecutor(max_workers=len(dests), thread_name_prefix="pfdiag-probe") as pool:
        futures = [pool.submit(one, d) for d in args.destination]
        _progress(futures, len(dests))
        docs = [f.result() for f in futures]
    doc = {"schema": "pfdiag.probe-set/1", "seconds": round(time.monotonic() - t0, 3), "where": target.where,
           "probes": docs, "problem": any(d.get("problem") for d in docs)}  # fmt: skip
    if args.format == "json":
        sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    else:
        parts = []
        for d in docs:
            parts.append(f"== {d['destination']}: {d['error']}\n" if d.get("error") else (render_md(d) if args.format == "md" else render_text(d)))
        sys.stdout.write("\n".join(parts))
    return EXIT_PROBLEM if doc["problem"] else 0


def _probe_doc(args: argparse.Namespace, target: Any, dest: Destination, timeouts: PhaseTimeouts, source: str,
               helo: str, notes: list[str], plan: BindPlan, preread: Preread | None = None) -> dict[str, Any]:  # fmt: skip
    original = dest.text
    if not dest.bracketed and not dest.is_ip and ":" not in dest.text:
        dest, hops, more = route(target, dest, args.config_dir, getattr(args, "resolver", None))
        addresses = [a for a, _ in hops]
    else:
        addresses, more = resolve(dest)
    notes += more
    starttls = {"auto": "auto", "yes": True, "no": False}[args.starttls]
    wrapper = dest.port in SMTPS_PORTS
    if wrapper:
        notes.append(f"port {dest.port}: TLS from the first byte (SMTPS wrappermode)")
    try:
        probe = probe_address(target, addresses[0], dest.port, helo_name=helo, mail_from=args.mail_from,
                              rcpt_to=args.rcpt, timeouts=timeouts, starttls=starttls, total_budget=args.budget,
                              wrappermode=wrapper, **plan.kwargs(addresses[0]))  # fmt: skip
    except ConnectRefused as exc:
        raise PfdiagError(f"a probe needs a live target: {exc}") from None
    doc = build(dest, addresses[0], notes, timeouts, source, helo, probe, None)
    doc["bind"] = bind_doc(plan, addresses[0], probe)
    doc["where"] = target.where
    doc["tls"] = tls_doc(target, probe, original, addresses[0], dest.port, args.config_dir, dest.name,
                         lambda: _route_resolver(target, getattr(args, "resolver", None)), dest.nexthop, preread)
    if doc["tls"] and not doc["tls"]["postfix_would_deliver"]:
        doc["problem"] = True
    return doc


def _address_row(address: str, port: int, r: ProbeResult) -> dict[str, Any]:
    bad = next((p for p in r.phases if p.verdict.value not in ("ok", "slow")), None)
    return {"address": address, "port": port, "ok": bad is None,
            "phases": [[p.name, p.verdict.value] for p in r.phases], "error": r.error,
            "cause_id": bad.cause_id if bad else None}  # fmt: skip


def _live_target(args: argparse.Namespace) -> Any:
    if getattr(args, "snapshot", None) or getattr(args, "demo", False):  # said before opening (and importing) it
        raise PfdiagError("a probe needs a live target: a snapshot (or --demo) is a recording and cannot open connections")
    target, notice = open_target(args)
    if notice and args.format != "json":
        print(notice, file=sys.stderr)
    return target


def _confirm(prompt: str, **kw: Any) -> bool:
    from diagnose import actions as act  # only when sending: a plain probe stays light

    return act.confirm(prompt, **kw)


def run_one(args: argparse.Namespace, destination: str) -> int:
    dest = parse_destination(destination)
    if args.budget is None or not args.budget > 0 or args.budget > 86400:
        raise UsageError("--budget must be a number of seconds, 0 < SECONDS <= 86400")
    sizes = parse_sizes(args.sizes)
    if args.send_test and not (args.to and args.to.strip()):
        raise UsageError("--send-test needs --to ADDRESS (a mailbox you control at the destination)")
    if (args.to or args.sizes) and not args.send_test:
        raise UsageError("--to and --sizes go with --send-test")
    target = _live_target(args)
    if args.send_test and not _confirm(
        f"Send {len(sizes)} REAL test message(s) ({','.join(map(str, sizes))} bytes) to <{args.to}> via {dest.text}?",
        yes=args.yes, dry_run=False, interactive=sys.stdin.isatty(),
    ):
        if not sys.stdin.isatty():
            raise UsageError("--send-test sends real mail: confirm on a terminal or pass --yes")
        raise PfdiagError("not confirmed: no test message was sent")
    if not dest.bracketed and not dest.is_ip and ":" not in dest.text:
        dest, hops, notes = route(target, dest, args.config_dir, getattr(args, "resolver", None))
    else:
        addresses, notes = resolve(dest)
        hops = [(a, dest.port) for a in addresses]
    address = hops[0][0]
    timeouts, source, helo, more, plan, preread = postfix_settings(target, args)
    notes += more
    starttls = {"auto": "auto", "yes": True, "no": False}[args.starttls]
    wrapper = dest.port in SMTPS_PORTS
    if wrapper:
        notes.append(f"port {dest.port}: TLS from the first byte (SMTPS wrappermode)")
    ladder = None
    try:
        if args.send_test:
            t0 = time.monotonic()
            results = send_test_messages(
                target, address, dest.port, helo_name=helo, mail_from=args.mail_from, rcpt_to=args.to.strip(),
                sizes=sizes, timeouts=timeouts, budget_per_message=args.budget / len(sizes), starttls=starttls,
                wrappermode=wrapper, **plan.kwargs(address))  # fmt: skip
            notes.append(f"phases below are from the first test session ({results[0].size} B); "
                         f"{len(results)} session(s) in {time.monotonic() - t0:.1f} s, budget {args.budget / len(sizes):.3g} s each")
            probe = results[0].probe
            ladder = (conclude_ladder(results), results)
        else:
            probe = probe_address(target, address, dest.port, helo_name=helo, mail_from=args.mail_from,
                                  rcpt_to=args.rcpt, timeouts=timeouts, starttls=starttls,
                                  total_budget=args.budget, wrappermode=wrapper, **plan.kwargs(address))  # fmt: skip
    except ConnectRefused as exc:
        raise PfdiagError(f"a probe needs a live target: {exc}") from None
    doc = build(dest, address, notes, timeouts, source, helo, probe, ladder)
    doc["bind"] = bind_doc(plan, address, probe)
    doc["where"] = target.where
    doc["tls"] = tls_doc(target, probe, destination, address, dest.port, args.config_dir, dest.name,
                         lambda: _route_resolver(target, getattr(args, "resolver", None)), dest.nexthop, preread)
    if doc["tls"] and not doc["tls"]["postfix_would_deliver"]:
        doc["problem"] = True
    doc["addresses"] = [_address_row(address, dest.port, probe)]
    if len(hops) > 1 and not args.send_test:  # Postfix tries the next address when one fails: so do we, at once
        from concurrent.futures import ThreadPoolExecutor

        def other(hop: tuple[str, int]) -> dict[str, Any]:
            try:
                r = probe_address(target, hop[0], hop[1], helo_name=helo, mail_from=args.mail_from, rcpt_to=args.rcpt,
                                  timeouts=timeouts, starttls=starttls, total_budget=args.budget,
                                  wrappermode=hop[1] in SMTPS_PORTS, **plan.kwargs(hop[0]))  # fmt: skip
                return _address_row(hop[0], hop[1], r)
            except PfdiagError as exc:
                return {"address": hop[0], "port": hop[1], "ok": False, "phases": [], "error": str(exc), "cause_id": None}

        with ThreadPoolExecutor(max_workers=min(8, len(hops) - 1)) as pool:
            doc["addresses"] += list(pool.map(other, hops[1:]))
        split = family_difference(doc["addresses"])
        if split is not None:
            doc["findings"].append(split)
            doc["problem"] = True
    if getattr(args, "compare_here", False):
        from checks.targets import LocalTarget

        if isinstance(target, LocalTarget):
            raise UsageError("--compare-here compares a mail host (--host) with this machine")
        here = probe_address(LocalTarget(), address, dest.port, helo_name=helo, mail_from=args.mail_from,
                             rcpt_to=args.rcpt, timeouts=timeouts, starttls=starttls, total_budget=args.budget,
                             wrappermode=wrapper)  # fmt: skip
        doc["compare"] = compare_vantage(doc["probe"], _probe_dict(here), target.where, dest.port)
        doc["problem"] = doc["problem"] or doc["compare"]["differs"]
    if args.format == "json":
        text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    elif args.format == "md":
        text = render_md(doc)
    else:
        text = render_text(doc)
    sys.stdout.write(text)
    return EXIT_PROBLEM if doc["problem"] else 0
