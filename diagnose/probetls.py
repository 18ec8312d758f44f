"""The TLS verdict of a probe: the certificate the probe saw, this Postfix's TLS policy for the
next hop (smtp_tls_policy_maps, smtp_tls_security_level), DANE (TLSA from the route's resolver)
and whether Postfix would deliver with them - the line it would log when it would not.
Evidence comes from checks.tls (policy, certificate analysis, chain verification, DANE match)."""

from __future__ import annotations

from typing import Any

from checks.bind import ip_literal as _ip
from checks.errors import PfdiagError
from checks.model import Finding, Severity
from checks.nexthop import nexthop_domain
from checks.smtp import SMTPS_PORTS, ProbeResult

Preread = tuple[dict[str, str], dict[tuple[str, str, str], str]]


def tls_doc(target: Any, probe: ProbeResult, original: str, address: str, port: int,
            config_dir: str | None, tlsa_host: str = "", resolver: Any = None,
            nexthop: str = "", preread: Preread | None = None, budget: float = 20.0,
            service: str = "smtp") -> dict[str, Any] | None:  # fmt: skip
    """The certificate the probe saw, this Postfix's TLS policy for the next hop, and whether
    Postfix would deliver with it (the verdict Postfix logs when it would not). resolver: a
    callable giving the route's resolver, called only for DANE (building one costs start-up);
    service: the master.cf service Postfix routes the destination through (its -o overrides count)."""
    from checks import tls

    domain = None if original.startswith("[") or _ip(original.split(":")[0]) else original.split(":")[0]
    try:
        policy = tls.policy_for(target, f"[{tlsa_host or address}]:{port}", domain, config_dir,  # the nexthop as routed
                                service=service or "smtp", preread=preread)
    except PfdiagError as exc:
        policy = tls.Policy("may", f"policy not readable ({exc}): Postfix's default assumed")
    nexthop = nexthop or nexthop_domain(original)
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
        # from the source address the first handshake used, when it could bind one
        source = probe.source if probe.source and not probe.bind_error else None
        trusted, trust_detail = tls.verify_chain(target, address, port, source, budget)
    dane, dane_doc = ("none", ""), None
    if cert is not None and policy.level in ("dane", "dane-only"):
        dane, dane_doc = _dane(tls, probe, port, tlsa_host or domain or "", resolver)
    verdict = tls.judge(policy.level, probe.starttls_offered or port in SMTPS_PORTS, cert, trusted, dane)
    if dane_doc and dane_doc["state"] == "lookup-failed":
        verdict = tls.Judgement(False, dane_doc["why"], "E12", f"TLSA lookup error for {dane_doc['tlsa_name']}")
    if probe.starttls_offered is None and cert is None and port not in SMTPS_PORTS:
        # no EHLO answer and no handshake: whether the server offers STARTTLS is not known
        verdict = tls.Judgement(True, "not judged: the conversation ended before the EHLO reply (see the phases)")
    names_doc = {"names": list(rule.names), "patterns": list(rule.patterns), "source": rule.source,
                 "nexthop": nexthop, "hostname": hostname} if rule else None  # fmt: skip
    if rule and cert is not None and cert.name_match is None and verdict.cause_id == "E19":
        verdict.why += f" [names from {rule.source}]"
    return {"dane": dane_doc, "policy": {"level": policy.level, "source": policy.source, "match": policy.match,
                                        "service": service or "smtp"},
            "name_check": names_doc,
            "protocol": probe.tls.protocol if probe.tls else None, "cipher": probe.tls.cipher if probe.tls else None,
            "certificate": tls.describe(cert) if cert else None, "trusted": trusted, "trust_detail": trust_detail,
            "chain": _chain_doc(probe.tls.peer_chain) if probe.tls and probe.tls.peer_chain else None,
            "postfix_would_deliver": verdict.accepted if verdict.why[:11] != "not judged:" else None, "why": verdict.why, "cause_id": verdict.cause_id,
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
    if resolver is None or (isinstance(resolver, nexthop._NoReserved) and nexthop.is_reserved(host)):
        doc["why"] = "TLSA not looked up (no resolver for this target, or a reserved name: use --resolver)"
        return ("none", ""), doc
    from checks.dns import lookup

    ans = lookup(getattr(resolver, "inner", resolver), doc["tlsa_name"], "TLSA")
    doc.update(records=list(ans.records), dnssec=ans.authenticated, status=ans.status)
    if ans.temporary:  # Postfix defers a dane destination whose TLSA lookup fails
        doc.update(state="lookup-failed", why=f"TLSA lookup {ans.status}: Postfix defers DANE destinations")
        return ("no-match", ""), doc
    if probe.tls is None:  # not reached: DANE is judged only with a certificate
        return ("none", ""), doc
    chain = probe.tls.peer_chain or None  # never empty when captured: the leaf is always sent
    state, why = tls.dane_state(probe.tls.peer_certificate, ans.records, ans.authenticated, chain)
    doc.update(state=state[0], matched=state[1], why=why)
    return state, doc


# --- one verdict ------------------------------------------------------------------------------

OPTIONAL = ("none", "may")  # levels at which Postfix delivers without (verified) TLS


def policy_findings(findings: list[Finding], tls: dict[str, Any] | None, probe: ProbeResult) -> list[Finding]:
    """The conversation's findings (checks.smtp.to_findings) under Postfix's TLS policy for this
    destination: one verdict. When the policy refuses the peer (no STARTTLS at encrypt, a
    certificate that fails verify), "talks SMTP normally" becomes that refusal (E16/E18/E19, what
    Postfix would log); when TLS is optional, a missing STARTTLS or an unverifiable certificate
    is said to be no cause (Postfix delivers in clear or unverified)."""
    if tls is None or (probe.starttls_offered is None and tls.get("certificate") is None):
        return findings  # no EHLO answer, no handshake: the conversation's own failure is the verdict
    level, source = tls["policy"]["level"].lower(), tls["policy"]["source"]
    service = tls["policy"].get("service") or "smtp"
    via = f"TLS policy {level} ({source}" + (f"; transport {service}" if service != "smtp" else "") + ")"
    addr = f"{probe.host}:{probe.port}"
    main = next((f for f in findings if f.severity == Severity.OK), None)
    rest = [f for f in findings if f is not main and not _is_no_starttls(f)]
    if tls["postfix_would_deliver"] is False:
        said = f" (it logs: {tls['postfix_would_log']})" if tls.get("postfix_would_log") else ""
        talk = "; the SMTP conversation itself works" if main is not None else ""
        verdict = Finding(main.check_id if main else "smtp.probe", Severity.PROBLEM,
                          f"{addr}: Postfix would NOT deliver here: {tls['why']}, under {via}{said}{talk}",
                          tls.get("cause_id") or "E19", main.evidence if main else (), dict(main.values) if main else {})  # fmt: skip
        return [verdict, *rest]  # a failed conversation keeps its finding, after the policy's verdict
    if level in OPTIONAL or level in ("dane",) and "falls back to may" in tls["why"]:
        notes = []
        if probe.starttls_offered is False:
            notes.append(f"{addr} does not offer STARTTLS: under {via} Postfix delivers in clear; not the cause "
                         "of a deferral")  # fmt: skip
        elif tls.get("trusted") is False or (tls.get("certificate") or {}).get("self_signed"):
            notes.append(f"{addr}: the certificate would not pass verify ({tls.get('trust_detail')}), but under {via} "
                         "Postfix delivers over unverified TLS; not the cause of a deferral")  # fmt: skip
        if notes:
            ev = main.evidence if main else ()
            return findings[:1] + [Finding("smtp.probe", Severity.INFO, n, None, ev) for n in notes] + \
                [f for f in findings[1:] if not _is_no_starttls(f)]  # fmt: skip
    return findings


def _is_no_starttls(f: Finding) -> bool:
    return f.cause_id is None and f.severity == Severity.INFO and "does not offer STARTTLS" in f.summary
