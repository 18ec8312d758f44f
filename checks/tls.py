"""TLS of a next hop as Postfix would judge it: the certificate, the policy, DANE.

* ``analyze(der, names)``: subject, issuer, SANs, validity and days left, self-signed, and
  whether a name Postfix would check matches (SAN dNSNames, the CN only without SANs; a
  leftmost "*" label, several labels with tls_wildcard_matches_multiple_labels; a name
  ".example.com" matches subdomains).
* ``name_rule(policy, nexthop, hostname)``: the names Postfix checks at verify/secure: the
  policy entry's match=, else smtp_tls_verify_cert_match / smtp_tls_secure_cert_match.
* ``policy_for(target, nexthop, domain)``: the effective smtp_tls_security_level, or the
  smtp_tls_policy_maps entry for the next hop (``[host]:port``, then the domain and its
  parents), read through the target with ``postmap -q``.
* ``judge(level, cert, trusted, tlsa)``: would Postfix deliver at that level with this
  certificate, and if not, the log line it would write.
* ``dane_match(der, records, chain)``: TLSA "usage selector mtype data" against the
  certificate (DANE-EE, usage 3) and against the issuers the server sent (DANE-TA, usage 2:
  the matching issuer must sign the chain down to the leaf).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from checks.errors import PfdiagError
from checks.targets import Target

if TYPE_CHECKING:  # datetime and hashlib (OpenSSL's libcrypto) load with a certificate: a probe of a
    import datetime as dt  # plaintext peer, which reads TLS_PARAMS and the policy only, needs neither

LEVELS = ("none", "may", "encrypt", "dane", "dane-only", "fingerprint", "verify", "secure")


@dataclass(frozen=True)
class CertInfo:
    """What a certificate says: names, issuer and validity."""
    subject: str
    issuer: str
    sans: tuple[str, ...]
    not_before: str
    not_after: str
    days_left: int
    expired: bool
    not_yet_valid: bool
    self_signed: bool
    names_checked: tuple[str, ...]
    name_match: str | None  # the name that matched, or None
    sha256: str


def _wild_match(pattern: str, name: str, multi_label: bool = False) -> bool:
    """Certificate name `pattern` against the reference `name` the way Postfix (OpenSSL's
    X509_check_host) does. A reference ".example.com" matches any name below example.com,
    a wildcard "*.example.com" included; multi_label: "*" may stand for several labels."""
    p, n = pattern.lower().rstrip("."), name.lower().rstrip(".")
    if n.startswith(".") and len(n) > 1:
        return len(p) > len(n) and p.endswith(n)
    if p == n:
        return True
    if p.startswith("*.") and len(p) > 2 and "." in n:
        if multi_label:
            return len(n) > len(p) - 1 and n.endswith(p[1:])
        return n.split(".", 1)[1] == p[2:]  # one label only, never the bare parent
    return False


def analyze(der: bytes, names: Sequence[str] = (), now: dt.datetime | None = None,
            multi_label: bool = False) -> CertInfo:  # fmt: skip
    import datetime as dt
    import hashlib

    from cryptography import x509
    from cryptography.x509.oid import NameOID

    cert = x509.load_der_x509_certificate(der)
    now = now or dt.datetime.now(dt.timezone.utc)
    try:
        sans = tuple(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        sans = ()
    cns = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    candidates = sans or tuple(str(c) for c in cns)
    match = next((n for n in names for pat in candidates if _wild_match(pat, n, multi_label)), None)
    not_after, not_before = cert.not_valid_after_utc, cert.not_valid_before_utc
    self_signed = cert.issuer == cert.subject
    if self_signed:
        try:  # an issuer equal to the subject, and its own key signed it
            cert.verify_directly_issued_by(cert)
        except Exception:  # noqa: BLE001 - a different CA with the same name: not self-signed
            self_signed = False
    return CertInfo(
        subject=cert.subject.rfc4514_string(), issuer=cert.issuer.rfc4514_string(), sans=sans,
        not_before=not_before.isoformat(), not_after=not_after.isoformat(),
        days_left=(not_after - now).days, expired=now > not_after, not_yet_valid=now < not_before,
        self_signed=self_signed, names_checked=tuple(names), name_match=match,
        sha256=hashlib.sha256(der).hexdigest(),
    )  # fmt: skip


def _association(der: bytes, selector: int, mtype: int) -> str:
    """The TLSA certificate association data of one certificate: full (0), SHA-256 (1), SHA-512 (2)
    of the whole certificate (selector 0) or its SubjectPublicKeyInfo (selector 1)."""
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    blob = der if selector == 0 else x509.load_der_x509_certificate(der).public_key().public_bytes(
        Encoding.DER, PublicFormat.SubjectPublicKeyInfo)  # fmt: skip
    return blob.hex() if mtype == 0 else hashlib.sha256(blob).hexdigest() if mtype == 1 else hashlib.sha512(blob).hexdigest()


def _signs_down_to_leaf(chain: Sequence[bytes], top: int) -> bool:
    """chain[0] <- chain[1] <- ... <- chain[top]: each certificate signed by the next one."""
    from cryptography import x509

    certs = [x509.load_der_x509_certificate(d) for d in chain[: top + 1]]
    for child, parent in zip(certs, certs[1:]):
        try:
            child.verify_directly_issued_by(parent)
        except Exception:  # noqa: BLE001 - wrong issuer name, bad signature, unsupported key: not a chain
            return False
    return True


def dane_match(der: bytes, records: Sequence[str], chain: Sequence[bytes] | None = None) -> tuple[str, str]:
    """("match" | "no-match" | "unusable" | "none", which record). Records as dig prints them.
    chain: what the server sent, leaf first; DANE-TA (usage 2) records match one of its
    issuers, which must sign the chain down to the leaf. None: the chain is unknown (not
    captured), so DANE-TA records cannot be used here and count as unusable."""
    if not records:
        return "none", ""
    issuers = [] if chain is None else list(chain[1:]) if chain and chain[0] == der else list(chain)
    full = [der, *issuers]
    usable = False
    for rec in records:
        parts = rec.split()
        if len(parts) < 4 or not all(p.isdigit() for p in parts[:3]):
            continue
        usage, selector, mtype, data = int(parts[0]), int(parts[1]), int(parts[2]), "".join(parts[3:]).lower()
        if usage not in (2, 3) or selector not in (0, 1) or mtype not in (0, 1, 2):
            continue  # PKIX usages (0, 1) Postfix ignores for SMTP (RFC 7672); unknown selectors/types
        if usage == 3:
            usable = True
            if _association(der, selector, mtype) == data:
                return "match", rec
            continue
        if chain is None:
            continue
        usable = True  # a server that sends no issuer cannot match: OpenSSL finds no trust anchor either
        for depth, cert in enumerate(issuers, 1):
            if _association(cert, selector, mtype) == data and _signs_down_to_leaf(full, depth):
                return "match", rec
    return ("no-match", "") if usable else ("unusable", "")


def dane_state(der: bytes, records: Sequence[str], authenticated: bool,
               chain: Sequence[bytes] | None = None) -> tuple[tuple[str, str], str]:  # fmt: skip
    """The TLSA verdict Postfix would act on, and why. Postfix uses TLSA records only from a
    validating resolver (AD set): unvalidated ones count as none (dane falls back to may).
    chain None: not captured; DANE-TA records are then "no-chain" (not judged)."""
    if records and not authenticated:
        return ("none", ""), (f"{len(records)} TLSA record(s) not DNSSEC-validated (no AD flag): "
                              "Postfix ignores them")  # fmt: skip
    state = dane_match(der, records, chain)
    if state[0] == "unusable" and chain is None and any(r.split()[:1] == ["2"] for r in records):
        state = ("no-chain", "")
    ta = state[1].split()[0] == "2" if state[1] else False
    return state, {"match": "a DNSSEC-validated TLSA record matches " + (
                       "an issuer the server sent (DANE-TA), which signs the chain down to the certificate"
                       if ta else "the certificate (DANE-EE)"),
                   "no-match": "DNSSEC-validated TLSA records, none matches the certificate or its chain",
                   "unusable": "DNSSEC-validated TLSA records, all of usages Postfix cannot use (PKIX 0/1, unknown "
                               "selector or type): Postfix uses TLS like 'encrypt'",
                   "no-chain": "only DANE-TA records, and this Python could not capture the server's chain to "
                               "match them: not judged",
                   "none": "no TLSA records"}[state[0]]  # fmt: skip


# postconf(5) defaults of the certificate name checks per level
MATCH_DEFAULTS = {"verify": "hostname", "secure": "nexthop, dot-nexthop"}
_MATCH_PARAMS = ("smtp_tls_verify_cert_match", "smtp_tls_secure_cert_match", "tls_wildcard_matches_multiple_labels")
#: what policy_for reads with postconf -x (a caller may read them along with its own: one postconf run)
TLS_PARAMS = ("smtp_tls_security_level", "smtp_tls_policy_maps", *_MATCH_PARAMS)


@dataclass
class Policy:
    """The TLS security level Postfix applies to a destination, and where it comes from."""
    level: str
    source: str  # "smtp_tls_policy_maps hash:/etc/postfix/tls_policy: [mx]:25 verify", "smtp_tls_security_level"
    match: str = ""  # match= attribute of a policy entry
    cert_match: dict[str, str] = field(default_factory=dict)  # smtp_tls_{verify,secure}_cert_match as configured
    multi_label: bool = True  # tls_wildcard_matches_multiple_labels


@dataclass(frozen=True)
class NameRule:
    """The names Postfix checks the certificate against, and where that rule came from."""

    patterns: tuple[str, ...]  # as configured: "nexthop", "dot-nexthop", "hostname", "example.com", ".example.com"
    source: str  # "match=... of the policy entry", "smtp_tls_secure_cert_match = nexthop, dot-nexthop (default)"
    names: tuple[str, ...]  # the reference names: "example.com", ".example.com" (subdomains)


def name_rule(policy: Policy, nexthop: str, hostname: str) -> NameRule | None:
    """For verify and secure: Postfix's match list with the strategies expanded. nexthop: the
    next-hop domain (the recipient domain, or the transport/relayhost host without [] and
    port); hostname: the server's name (the MX host; the nexthop itself when bracketed)."""
    level = policy.level.lower()
    if level not in MATCH_DEFAULTS:
        return None
    if policy.match:  # in a policy table only ":" separates
        patterns, source = [w for w in policy.match.split(":") if w], f"match={policy.match} of the policy entry"
    else:
        param = f"smtp_tls_{level}_cert_match"
        raw = policy.cert_match.get(param)
        default = raw is None or raw.strip() == MATCH_DEFAULTS[level]
        raw = MATCH_DEFAULTS[level] if raw is None else raw.strip()
        patterns, source = [w for w in re.split(r"[\s,:]+", raw) if w], f"{param} = {raw}" + (" (default)" if default else "")
    names: list[str] = []
    for pat in patterns:
        low = pat.lower()
        name = {"nexthop": nexthop, "dot-nexthop": f".{nexthop}" if nexthop else "", "hostname": hostname}.get(low, pat)
        if name and name != "." and name not in names:
            names.append(name)
    return NameRule(tuple(patterns), source, tuple(names))


def policy_for(target: Target, nexthop: str, domain: str | None = None, config_dir: str | None = None,
               service: str = "smtp",
               preread: tuple[Mapping[str, str], Mapping[tuple[str, str, str], str]] | None = None) -> Policy:  # fmt: skip
    """preread: (postconf -x values holding TLS_PARAMS, postconf -P overrides) already read."""
    names = ("smtp_tls_security_level", *_MATCH_PARAMS)
    from checks.config import transport_settings, with_overrides  # imported on use: a quick probe's start-up

    # a master.cf -o override of the delivering service wins over main.cf (checks.config: the one reader)
    if preread is not None:
        conf = with_overrides({n: preread[0][n] for n in TLS_PARAMS if n in preread[0]}, preread[1], service, names)
    else:
        conf = transport_settings(target, config_dir, service, TLS_PARAMS, names)
    matches = {n: conf[n] for n in _MATCH_PARAMS[:2] if n in conf}
    multi = conf.get("tls_wildcard_matches_multiple_labels", "yes").strip().lower() != "no"
    tables = [t for t in re.split(r"[\s,]+", conf.get("smtp_tls_policy_maps", "")) if t]
    if tables:
        from checks.config import domain_keys, postmap_query
    keys = [nexthop] if nexthop else []
    if domain and tables:
        keys += domain_keys(domain)
    for table in tables:
        for key in keys:
            value = postmap_query(target, config_dir, key, table)
            if value:
                words = value.split()
                match = next((w.split("=", 1)[1] for w in words[1:] if w.startswith("match=")), "")
                return Policy(words[0], f"smtp_tls_policy_maps {table}: {key} {value}", match, matches, multi)
    return Policy(conf.get("smtp_tls_security_level") or "none", "smtp_tls_security_level (main.cf/master.cf)",
                  "", matches, multi)  # fmt: skip


@dataclass
class Judgement:
    """Whether Postfix would deliver over the TLS it met, and why (not)."""
    accepted: bool
    why: str
    cause_id: str | None = None
    log_line: str = ""  # what Postfix would log when it refuses
    notes: list[str] = field(default_factory=list)


def judge(level: str, offered: bool | None, cert: CertInfo | None, trusted: bool | None,
          dane: tuple[str, str] = ("none", "")) -> Judgement:  # fmt: skip
    """Would Postfix deliver to this next hop at `level`? `trusted`: the chain verified against
    the CA store (None: not checked)."""
    lvl = level.lower()
    if lvl == "none":
        return Judgement(True, "TLS is not used (security level none)")
    if lvl == "may":
        return Judgement(True, "opportunistic TLS: any certificate, or plaintext when TLS fails")
    if not offered:
        return Judgement(False, f"level {lvl} requires TLS, and the server does not offer STARTTLS", "E16",
                         "TLS is required, but was not offered by host ...")
    if cert is None:
        return Judgement(False, "no certificate was obtained (the handshake failed)", "E18", "Cannot start TLS: handshake failure")
    if lvl == "encrypt":
        return Judgement(True, "encrypt: any certificate is accepted, only TLS itself is required")
    if lvl in ("dane", "dane-only"):
        state, rec = dane
        if state == "match" and rec.split()[0] == "2":  # a trust anchor: the leaf's name and dates count too
            problems = ([f"the certificate expired on {cert.not_after[:10]}"] if cert.expired else []) + (
                [f"no name matches ({', '.join(cert.names_checked) or 'none given'}; certificate: "
                 f"{', '.join(cert.sans) or cert.subject})"] if cert.name_match is None else [])  # fmt: skip
            if problems:
                return Judgement(False, f"DANE-TA TLSA {rec} matches the issuer, but " + "; ".join(problems),
                                 "E19", "Server certificate not verified")  # fmt: skip
            return Judgement(True, f"DANE-TA: the issuer matches TLSA {rec} and the name {cert.name_match} matches")
        if state == "match":
            return Judgement(True, f"DANE: the certificate matches TLSA {rec}")
        if state == "no-match":
            return Judgement(False, "DANE: no TLSA record matches the certificate or its chain", "E19",
                             "Server certificate not verified")  # fmt: skip
        if state == "no-chain":
            return Judgement(True, "DANE-TA records could not be matched (the server's chain was not captured): not judged")
        if lvl == "dane-only" and state in ("none", "unusable"):  # no fallback to may or encrypt
            return Judgement(False, "dane-only and no usable TLSA record", "E19", "TLSA records unusable")
        if state == "unusable":
            return Judgement(True, "TLSA records found but all unusable: Postfix uses TLS like 'encrypt' (any certificate)")
        return Judgement(True, "dane without usable TLSA records: Postfix falls back to may")
    if lvl in ("verify", "secure", "fingerprint"):
        problems = []
        if cert.expired:
            problems.append(f"the certificate expired on {cert.not_after[:10]}")
        if cert.self_signed:
            problems.append("it is self-signed")
        elif trusted is False:
            problems.append("it is not signed by a CA this system trusts")
        if cert.name_match is None and lvl != "fingerprint":
            problems.append(f"no name matches ({', '.join(cert.names_checked) or 'none given'}; certificate: "
                            f"{', '.join(cert.sans) or cert.subject})")  # fmt: skip
        if problems:
            return Judgement(False, f"level {lvl}: " + "; ".join(problems), "E19", "Server certificate not verified")
        return Judgement(True, f"level {lvl}: a trusted chain and a matching name")
    return Judgement(True, f"unknown level {lvl!r}: not judged")


def describe(cert: CertInfo) -> dict[str, Any]:
    return {k: getattr(cert, k) for k in cert.__dataclass_fields__}


def verify_chain(target: Target, address: str, port: int, source: str | None = None,
                 budget: float = 20.0) -> tuple[bool | None, str]:  # fmt: skip
    """A second handshake that verifies the chain against this system's CA store (as Postfix
    does at verify/secure with smtp_tls_CAfile/CApath unset... or set to the same store), from
    `source` when the first probe bound one. (True, why) verified, (False, OpenSSL's reason)
    refused, (None, why) not checked."""
    import ssl

    from checks.postfix.defaults import SHORT_TIMEOUTS
    from checks.smtp import SMTPS_PORTS, PhaseTimeouts, probe_address

    ctx = ssl.create_default_context()
    ctx.check_hostname = False  # names are judged separately, with Postfix's match rules
    bind = {"source": source, "bind_fallback": True} if source else {}
    try:
        again = probe_address(target, address, port, helo_name="pfdiag.invalid", starttls=True, tls_context=ctx,
                              timeouts=PhaseTimeouts(**SHORT_TIMEOUTS), total_budget=max(budget, 0.1),
                              wrappermode=port in SMTPS_PORTS, **bind)  # type: ignore[arg-type]  # fmt: skip
    except PfdiagError as exc:
        return None, f"not checked: {exc}"
    if again.tls is not None:
        return True, "the chain verifies against this system's CA store"
    bad = next((p for p in again.phases if p.verdict.value != "ok"), None)
    detail = bad.detail if bad else "the verifying handshake failed"
    return (False, detail) if "verif" in detail.lower() or "certificate" in detail.lower() else (None, f"not checked: {detail}")
