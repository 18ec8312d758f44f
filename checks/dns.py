"""DNS checks (postfix-deferrals.md §3 B E12-E15, E23, E24, E26) with a dnspython Resolver
that the caller passes: nothing here asks the machine's resolver unless the caller built one
that does.

Every function returns a frozen dataclass; ``to_findings(*results)`` turns them into Findings
(check_id ``dns.*``). DNS failures (SERVFAIL, NXDOMAIN, NODATA, timeouts) are results, never
exceptions; only bad input (an invalid name or IP address) raises ``UsageError``.

Stable API (checks/nexthop.py, checks/tls.py and diagnose use it; keep these signatures):

    make_resolver(["127.0.0.1"], port=5353, timeout=3)
                                    -> a resolver asked from THIS machine (UDP, TCP on truncation)
    resolver_for(target, "system"|"chroot"|"IP[:PORT]", queue_directory, timeout)
                                    -> (resolver, description): DNS as the target sees it; over
                                       SSH a TargetResolver (DNS over TCP via target.connect);
                                       a snapshot refuses system/chroot (no live network)
    lookup(r, name, "MX")           -> Answer(status ok|nxdomain|nodata|servfail|timeout|error,
                                       records, latency, server, canonical, authenticated=AD bit)
                                       every resolver above is accepted; Answer.temporary is
                                       servfail/timeout/error (Postfix defers: E12)
    tlsa_check(r, mx_host, port=25) -> TlsaResult(.answer: Answer, .records; .answer.authenticated)
    mx_check(r, domain)             -> MxResult     (null MX, CNAME targets, no address, A fallback)
    fcrdns(r, ip)                   -> FcrdnsResult (PTR -> A/AAAA must contain the IP)
    helo_check(r, name, ip)         -> HeloResult   (the HELO name resolves, to the sending IP)
    spf_check / dmarc_check / mta_sts_txt / tlsa_check
    dnsbl_check(r, ip, zones)       -> DnsblResult  (listed / not listed / refused / timeout)
    compare_resolvers(a, b, names)  -> ResolverComparison
    mta_sts_policy(target, r, domain) -> MtaStsPolicy (HTTPS GET through target.connect: mode, mx)
    to_findings(*results)           -> [Finding]
"""

from __future__ import annotations

import ipaddress
import re
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence, cast

import dns.exception
import dns.flags
import dns.name
import dns.rcode
import dns.rdatatype
import dns.resolver
import dns.reversename

from checks.errors import UsageError
from checks.model import Evidence, Finding, Severity
from checks.resolvconf import HOST_RESOLV, chroot_resolv, parse_resolv_conf, read_resolv_conf
from checks.targets.base import Target

OK, NXDOMAIN, NODATA, SERVFAIL, TIMEOUT, ERROR = "ok", "nxdomain", "nodata", "servfail", "timeout", "error"
TEMPORARY = (SERVFAIL, TIMEOUT, ERROR)
# SORBS closed in 2024; Barracuda answers only registered resolvers: neither is a default.
DEFAULT_DNSBL_ZONES = ("zen.spamhaus.org", "bl.spamcop.net", "psbl.surriel.com", "bl.mailspike.net")
SPF_LOOKUP_LIMIT = 10  # RFC 7208 4.6.4
SPF_VOID_LIMIT = 2  # RFC 7208 4.6.4: more than 2 lookups answered NXDOMAIN/NODATA is a permerror
SPF_LOOKUP_MECHANISMS = ("include", "a", "mx", "ptr", "exists")


# -- input validation and the resolver


def _name(name: str) -> str:
    """A syntactically valid DNS name (no trailing dot), or UsageError."""
    if not isinstance(name, str) or not name.strip() or any(c.isspace() for c in name.strip()):
        raise UsageError(f"invalid DNS name: {name!r}")
    try:
        n = dns.name.from_text(name.strip())
    except (dns.exception.DNSException, ValueError) as exc:
        raise UsageError(f"invalid DNS name {name!r}: {exc}") from None
    text = n.to_text(omit_final_dot=True)
    if text in ("", "@"):
        raise UsageError(f"invalid DNS name: {name!r}")
    return text


def _ip(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(str(ip).strip())
    except ValueError:
        raise UsageError(f"invalid IP address: {ip!r}") from None


def make_resolver(nameservers: Sequence[str], port: int = 53, timeout: float = 3.0) -> dns.resolver.Resolver:
    """A Resolver(configure=False) asking ``nameservers`` from this machine (a resolv.conf is
    read through its target: checks.resolvconf, resolver_for). ``timeout`` bounds a whole lookup."""
    servers = list(nameservers)
    if not servers:
        raise UsageError("make_resolver: no nameservers given")
    for s in servers:
        _ip(s)
    if timeout <= 0:
        raise UsageError(f"make_resolver: timeout must be positive, not {timeout}")
    r = dns.resolver.Resolver(configure=False)
    r.use_edns(0, dns.flags.DO, 1232)  # ask for DNSSEC, so a validating resolver says so (AD)
    r.nameservers = servers
    r.port = int(port)
    r.timeout = r.lifetime = float(timeout)
    return r


def _servers(resolver: dns.resolver.Resolver) -> str:
    return ", ".join(f"{s}#{resolver.port}" if resolver.port != 53 else str(s) for s in resolver.nameservers)


# -- one lookup


@dataclass(frozen=True)
class Answer:
    """One lookup as dig would show it."""

    name: str
    rdtype: str
    status: str  # ok / nxdomain / nodata / servfail / timeout / error
    records: tuple[str, ...] = ()
    latency: float = 0.0
    server: str = ""
    canonical: str = ""  # the name the answer is for, after CNAMEs ("" when none)
    detail: str = ""  # rcode or exception text for error statuses
    authenticated: bool = False  # the resolver set AD: it validated the answer with DNSSEC

    @property
    def ok(self) -> bool:
        return self.status == OK

    @property
    def temporary(self) -> bool:
        return self.status in TEMPORARY

    @property
    def via_cname(self) -> bool:
        return bool(self.canonical) and self.canonical.lower() != self.name.lower()

    def describe(self) -> str:
        return f"dig @{self.server} {self.name} {self.rdtype}"

    def excerpt(self) -> str:
        head = f"status={self.status} latency={self.latency:.3f}s"
        if self.detail:
            head += f" ({self.detail})"
        if self.via_cname:
            head += f" cname->{self.canonical}"
        if self.authenticated:
            head += " ad (DNSSEC-validated)"
        return "\n".join([head, *self.records])

    def evidence(self) -> Evidence:
        return Evidence(source=self.describe(), excerpt=self.excerpt())


def _no_nameservers_status(exc: dns.resolver.NoNameservers) -> tuple[str, str]:
    rcodes: list[str] = []
    for err in exc.kwargs.get("errors", []) or []:
        resp = err[4] if len(err) > 4 else None
        if resp is not None and hasattr(resp, "rcode"):
            rcodes.append(dns.rcode.to_text(resp.rcode()))
        elif len(err) > 3:
            rcodes.append(str(err[3]))
    if "SERVFAIL" in rcodes:
        return SERVFAIL, "SERVFAIL"
    if rcodes and all("timed out" in r.lower() or "timeout" in r.lower() for r in rcodes):
        return TIMEOUT, "; ".join(rcodes)
    return ERROR, "; ".join(dict.fromkeys(r for r in rcodes if r)) or str(exc)


def lookup(resolver: dns.resolver.Resolver, name: str, rdtype: str) -> Answer:
    """Ask ``resolver`` for ``name``/``rdtype``; every DNS outcome is a status, never raised."""
    qname = _name(name)
    try:
        rdt = dns.rdatatype.from_text(rdtype.upper())
    except (dns.exception.DNSException, ValueError, AttributeError):
        raise UsageError(f"invalid record type: {rdtype!r}") from None
    rdtext = dns.rdatatype.to_text(rdt)
    server = _servers(resolver)
    start = time.monotonic()

    def done(status: str, records: Iterable[str] = (), canonical: str = "", detail: str = "", ad: bool = False) -> Answer:
        return Answer(qname, rdtext, status, tuple(records), time.monotonic() - start, server, canonical, detail, ad)

    try:
        ans = resolver.resolve(qname, rdt, search=False, raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN:
        return done(NXDOMAIN, detail="NXDOMAIN")
    except dns.resolver.LifetimeTimeout as exc:
        return done(TIMEOUT, detail=str(exc))
    except dns.exception.Timeout as exc:
        return done(TIMEOUT, detail=str(exc))
    except dns.resolver.NoNameservers as exc:
        status, detail = _no_nameservers_status(exc)
        return done(status, detail=detail)
    except dns.resolver.YXDOMAIN:
        return done(ERROR, detail="YXDOMAIN")
    except (dns.exception.DNSException, OSError) as exc:
        return done(ERROR, detail=f"{type(exc).__name__}: {exc}")
    ns = getattr(ans, "nameserver", None)
    if ns:
        port = getattr(ans, "port", resolver.port)
        server = f"{ns}#{port}" if port != 53 else str(ns)
    canonical = ans.canonical_name.to_text(omit_final_dot=True) if ans.canonical_name else ""
    ad = bool(getattr(ans, "response", None) is not None and ans.response.flags & dns.flags.AD)
    if ans.rrset is None or len(ans.rrset) == 0:
        return done(NODATA, canonical=canonical, detail="NOERROR, no answer", ad=ad)
    return done(OK, (r.to_text() for r in ans.rrset), canonical, ad=ad)


def _txt(record: str) -> str:
    """The text of a TXT record as dnspython prints it ('"a" "b"' -> 'ab')."""
    return "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', record)) if record.startswith('"') else record


def _finding(check_id: str, severity: Severity, summary: str, cause: str | None = None,
             answers: Iterable[Answer] = (), **values: Any) -> Finding:  # fmt: skip
    return Finding(check_id, severity, summary, cause, tuple(a.evidence() for a in answers), dict(values))


# -- MX


@dataclass(frozen=True)
class MxHost:
    preference: int
    exchange: str
    a: Answer
    aaaa: Answer
    cname_target: str = ""  # the exchange is a CNAME to this (RFC 2181 10.3 forbids it)

    @property
    def addresses(self) -> tuple[str, ...]:
        return self.a.records + self.aaaa.records

    @property
    def temporary(self) -> bool:
        return not self.addresses and (self.a.temporary or self.aaaa.temporary)


@dataclass(frozen=True)
class MxResult:
    domain: str
    mx: Answer
    hosts: tuple[MxHost, ...] = ()  # preference order
    null_mx: bool = False
    fallback: tuple[Answer, ...] = ()  # A/AAAA of the domain itself when it has no MX

    @property
    def fallback_addresses(self) -> tuple[str, ...]:
        return tuple(r for a in self.fallback for r in a.records)

    def findings(self) -> list[Finding]:
        d, mx = self.domain, self.mx
        if mx.temporary:
            return [_finding("dns.mx", Severity.PROBLEM,
                             f"MX lookup for {d} failed temporarily ({mx.status}, {mx.latency:.2f}s): "
                             "Postfix defers with 'Name service error ... try again'", "E12", [mx],
                             status=mx.status, latency=mx.latency)]  # fmt: skip
        if mx.status == NXDOMAIN:
            return [_finding("dns.mx", Severity.PROBLEM, f"{d} does not exist (NXDOMAIN): Host not found",
                             "E13", [mx], status=mx.status)]  # fmt: skip
        if self.null_mx:
            return [_finding("dns.mx", Severity.PROBLEM, f"Domain {d} does not accept mail (nullMX, RFC 7505)",
                             "E13", [mx], null_mx=True)]  # fmt: skip
        if mx.status == NODATA:
            addrs = self.fallback_addresses
            if addrs:
                return [_finding("dns.mx", Severity.WARNING,
                                 f"{d} has no MX; Postfix falls back to its A/AAAA: {', '.join(addrs)}",
                                 None, [mx, *self.fallback], fallback=list(addrs))]  # fmt: skip
            if any(a.temporary for a in self.fallback):
                return [_finding("dns.mx", Severity.PROBLEM,
                                 f"{d} has no MX and its A/AAAA lookup failed temporarily", "E12",
                                 [mx, *self.fallback])]  # fmt: skip
            return [_finding("dns.mx", Severity.PROBLEM,
                             f"{d} has no MX and no A/AAAA: Host found but no data record of requested type",
                             "E13", [mx, *self.fallback])]  # fmt: skip
        out: list[Finding] = []
        for h in self.hosts:
            if h.cname_target:
                out.append(_finding("dns.mx.cname", Severity.WARNING,
                                    f"MX host {h.exchange} of {d} is a CNAME to {h.cname_target} "
                                    "(RFC 2181 10.3; some MTAs refuse it)", None, [h.a], host=h.exchange))  # fmt: skip
            if h.temporary:
                out.append(_finding("dns.mx.address", Severity.PROBLEM,
                                    f"address lookup of MX host {h.exchange} failed temporarily", "E12",
                                    [h.a, h.aaaa], host=h.exchange))  # fmt: skip
            elif not h.addresses:
                out.append(_finding("dns.mx.address", Severity.PROBLEM,
                                    f"MX host {h.exchange} of {d} has no A/AAAA ({h.a.status}/{h.aaaa.status}); "
                                    "bounced, or deferred with smtp_defer_if_no_mx_address_found=yes", "E13",
                                    [h.a, h.aaaa], host=h.exchange))  # fmt: skip
        usable = [h for h in self.hosts if h.addresses]
        if usable:
            sev = Severity.OK if len(usable) == len(self.hosts) else Severity.WARNING
            out.append(_finding("dns.mx", sev, f"{d} MX: " + ", ".join(
                f"{h.preference} {h.exchange} ({' '.join(h.addresses)})" for h in self.hosts),
                None, [mx], hosts=[h.exchange for h in self.hosts], usable=[h.exchange for h in usable]))  # fmt: skip
        else:
            out.append(_finding("dns.mx", Severity.PROBLEM, f"no MX host of {d} has a usable address",
                                "E12" if any(h.temporary for h in self.hosts) else "E13", [mx],
                                hosts=[h.exchange for h in self.hosts]))  # fmt: skip
        return out


def _mx_host(resolver: dns.resolver.Resolver, pref: int, exchange: str) -> MxHost:
    a = lookup(resolver, exchange, "A")
    aaaa = lookup(resolver, exchange, "AAAA")
    target = ""
    for ans in (a, aaaa):
        if ans.via_cname:
            target = ans.canonical
    if not target and not a.records and not aaaa.records and not a.temporary:
        cn = lookup(resolver, exchange, "CNAME")
        if cn.records:
            target = cn.records[0].rstrip(".")
    return MxHost(pref, exchange, a, aaaa, target)


def mx_check(resolver: dns.resolver.Resolver, domain: str) -> MxResult:
    """MX of ``domain`` in preference order and each host's addresses, as Postfix's smtp does."""
    domain = _name(domain)
    mx = lookup(resolver, domain, "MX")
    if mx.status == NODATA:
        return MxResult(domain, mx, fallback=(lookup(resolver, domain, "A"), lookup(resolver, domain, "AAAA")))
    if not mx.ok:
        return MxResult(domain, mx)
    pairs: list[tuple[int, str]] = []
    for rec in mx.records:
        pref, _, exch = rec.partition(" ")
        pairs.append((int(pref), exch.strip().rstrip(".")))
    pairs.sort(key=lambda p: p[0])
    if any(ex in ("", ".") for _, ex in pairs):
        return MxResult(domain, mx, null_mx=True)
    return MxResult(domain, mx, tuple(_mx_host(resolver, p, ex) for p, ex in pairs))


# -- FCrDNS (E24)


@dataclass(frozen=True)
class FcrdnsResult:
    ip: str
    ptr: Answer
    forward: tuple[tuple[str, Answer], ...] = ()  # (PTR name, its A or AAAA answer)
    confirmed_names: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(r.rstrip(".") for r in self.ptr.records)

    @property
    def confirmed(self) -> bool:
        return bool(self.confirmed_names)

    def findings(self) -> list[Finding]:
        fwd = [a for _, a in self.forward]
        if self.confirmed:
            return [_finding("dns.fcrdns", Severity.OK,
                             f"{self.ip} -> {', '.join(self.confirmed_names)} -> {self.ip} (forward-confirmed)",
                             None, [self.ptr, *fwd], names=list(self.confirmed_names))]  # fmt: skip
        if self.ptr.temporary:
            why = f"PTR lookup for {self.ip} failed temporarily ({self.ptr.status})"
        elif not self.ptr.ok:
            why = f"{self.ip} has no PTR record ({self.ptr.status})"
        elif any(a.temporary for a in fwd):
            why = f"forward lookup of {', '.join(self.names)} failed temporarily"
        else:
            why = f"{self.ip} -> {', '.join(self.names)}, but no such name resolves back to {self.ip}"
        return [_finding("dns.fcrdns", Severity.PROBLEM,
                         why + ": receivers reject with 'cannot find your hostname'", "E24",
                         [self.ptr, *fwd], names=list(self.names))]  # fmt: skip


def fcrdns(resolver: dns.resolver.Resolver, ip: str) -> FcrdnsResult:
    """PTR of ``ip``, then A (or AAAA for IPv6) of each PTR name must contain ``ip``."""
    addr = _ip(ip)
    rev = dns.reversename.from_address(str(addr)).to_text(omit_final_dot=True)
    ptr = lookup(resolver, rev, "PTR")
    rdtype = "A" if addr.version == 4 else "AAAA"
    forward: list[tuple[str, Answer]] = []
    confirmed: list[str] = []
    for rec in ptr.records if ptr.ok else ():
        name = rec.rstrip(".")
        try:
            ans = lookup(resolver, name, rdtype)
        except UsageError:
            continue
        forward.append((name, ans))
        if any(_same_ip(r, addr) for r in ans.records):
            confirmed.append(name)
    return FcrdnsResult(str(addr), ptr, tuple(forward), tuple(confirmed))


def _same_ip(text: str, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    try:
        return ipaddress.ip_address(text) == addr
    except ValueError:
        return False



@dataclass(frozen=True)
class HeloResult:
    """The HELO name must resolve (E24 'Helo command rejected: Host not found'), ideally to the
    sending IP."""

    name: str
    a: Answer
    aaaa: Answer
    sending_ip: str | None = None

    @property
    def addresses(self) -> tuple[str, ...]:
        return self.a.records + self.aaaa.records

    def findings(self) -> list[Finding]:
        ev = [self.a, self.aaaa]
        if not self.addresses:
            temp = self.a.temporary or self.aaaa.temporary
            return [_finding("dns.helo", Severity.PROBLEM,
                             f"HELO name {self.name} has no address ({self.a.status}/{self.aaaa.status}): receivers "
                             "reject with 'Helo command rejected: Host not found'", "E12" if temp else "E24", ev)]  # fmt: skip
        if self.sending_ip and not any(_same_ip(r, _ip(self.sending_ip)) for r in self.addresses):
            return [_finding("dns.helo", Severity.WARNING,
                             f"HELO name {self.name} resolves to {', '.join(self.addresses)}, not to the sending IP "
                             f"{self.sending_ip} (strict receivers check this)", "E24", ev,
                             addresses=list(self.addresses))]  # fmt: skip
        return [_finding("dns.helo", Severity.OK, f"HELO name {self.name} resolves to {', '.join(self.addresses)}",
                         None, ev, addresses=list(self.addresses))]  # fmt: skip


def helo_check(resolver: Any, helo: str, sending_ip: str | None = None) -> HeloResult:
    """A/AAAA of the HELO name, and whether they contain ``sending_ip``."""
    name = _name(helo)
    if sending_ip is not None:
        sending_ip = str(_ip(sending_ip))
    return HeloResult(name, lookup(resolver, name, "A"), lookup(resolver, name, "AAAA"), sending_ip)


# -- SPF (E26)


@dataclass(frozen=True)
class SpfResult:
    domain: str
    txt: Answer
    record: str | None = None  # the v=spf1 record of the domain
    records: tuple[str, ...] = ()  # all v=spf1 records found (several = permerror)
    lookups: int = 0  # DNS-querying terms, counted through include/redirect
    chain: tuple[str, ...] = ()  # "domain: term" for every counted term, in order
    errors: tuple[str, ...] = ()  # permerror causes (syntax, missing included record, loop)
    temperrors: tuple[str, ...] = ()  # include/redirect targets whose TXT lookup failed
    answers: tuple[Answer, ...] = ()  # every TXT lookup made (evidence)
    void_lookups: tuple[str, ...] = ()  # include/redirect targets that were NXDOMAIN/NODATA

    @property
    def over_limit(self) -> bool:
        return self.lookups > SPF_LOOKUP_LIMIT

    def findings(self) -> list[Finding]:
        d = self.domain
        ev = self.answers or (self.txt,)
        if self.txt.temporary or self.temperrors:
            what = self.temperrors or (f"{d}: TXT {self.txt.status}",)
            return [_finding("dns.spf", Severity.PROBLEM, "SPF temperror: " + "; ".join(what) +
                             " (receivers answer 451 4.7.24 Temporary SPF validation error)", "E26", ev)]  # fmt: skip
        if not self.records:
            return [_finding("dns.spf", Severity.WARNING, f"{d} has no SPF record (v=spf1 TXT)", None, ev)]
        if len(self.records) > 1:
            return [_finding("dns.spf", Severity.PROBLEM,
                             f"{d} has {len(self.records)} SPF records: permerror (RFC 7208 3.2)", None, ev,
                             records=list(self.records))]  # fmt: skip
        out: list[Finding] = []
        if self.over_limit:
            out.append(_finding("dns.spf", Severity.PROBLEM,
                                f"SPF of {d} needs {self.lookups} DNS lookups (limit {SPF_LOOKUP_LIMIT}): permerror",
                                None, ev, lookups=self.lookups, chain=list(self.chain)))  # fmt: skip
        if len(self.void_lookups) > SPF_VOID_LIMIT:
            out.append(_finding("dns.spf", Severity.PROBLEM,
                                f"SPF of {d} has {len(self.void_lookups)} void lookups (limit {SPF_VOID_LIMIT}, "
                                f"RFC 7208 4.6.4): permerror: {'; '.join(self.void_lookups)}", None, ev,
                                void_lookups=list(self.void_lookups)))  # fmt: skip
        for err in self.errors:
            out.append(_finding("dns.spf", Severity.PROBLEM, f"SPF of {d}: {err}", None, ev))
        if not out:
            out.append(_finding("dns.spf", Severity.OK, f"SPF of {d}: {self.record} ({self.lookups} lookups)",
                                None, ev, lookups=self.lookups))  # fmt: skip
        return out


_SPF_MECH = re.compile(r"^([+\-~?]?)(all|include|a|mx|ptr|ip4|ip6|exists)(?:([:/])(.*))?$", re.I)
_SPF_MOD = re.compile(r"^([a-z][a-z0-9_.\-]*)=(.*)$", re.I)


def _spf_records(ans: Answer) -> list[str]:
    recs = [_txt(r) for r in ans.records]
    return [r for r in recs if r.lower() == "v=spf1" or r.lower().startswith("v=spf1 ")]


def spf_check(resolver: dns.resolver.Resolver, domain: str) -> SpfResult:
    """The v=spf1 TXT record of ``domain`` and its DNS lookup count through include/redirect."""
    domain = _name(domain)
    answers: list[Answer] = []
    chain: list[str] = []
    errors: list[str] = []
    temperrors: list[str] = []
    void: list[str] = []
    first = lookup(resolver, domain, "TXT")
    answers.append(first)
    records = _spf_records(first)
    if first.temporary or len(records) != 1:
        return SpfResult(domain, first, records[0] if len(records) == 1 else None, tuple(records),
                         answers=tuple(answers))  # fmt: skip
    visiting: list[str] = []

    def walk(dom: str, record: str) -> None:
        visiting.append(dom.lower())
        redirect: str | None = None
        for term in record.split()[1:]:
            if len(chain) > SPF_LOOKUP_LIMIT + 10:  # far past the limit: stop walking
                break
            m = _SPF_MECH.match(term)
            if m:
                mech, sep, arg = m.group(2).lower(), m.group(3), m.group(4)
                if mech in ("include", "exists") and (sep != ":" or not arg):
                    errors.append(f"{dom}: '{term}' needs a domain")
                    continue
                if mech in ("ip4", "ip6"):
                    try:
                        net = ipaddress.ip_network(arg or "", strict=False)
                        if net.version != int(mech[-1]) or sep != ":":
                            raise ValueError
                    except ValueError:
                        errors.append(f"{dom}: invalid {mech} term '{term}'")
                    continue
                if mech == "all" and sep:
                    errors.append(f"{dom}: invalid term '{term}'")
                    continue
                if mech in SPF_LOOKUP_MECHANISMS:
                    chain.append(f"{dom}: {term}")
                    if mech == "include":
                        sub = arg.split("/", 1)[0]
                        _follow(dom, sub, f"include:{sub}")
                continue
            m2 = _SPF_MOD.match(term)
            if m2:
                key, val = m2.group(1).lower(), m2.group(2)
                if key == "redirect":
                    if not val:
                        errors.append(f"{dom}: 'redirect=' needs a domain")
                    elif redirect is not None:
                        errors.append(f"{dom}: several redirect= modifiers")
                    else:
                        redirect = val
                elif key == "exp" and not val:
                    errors.append(f"{dom}: 'exp=' needs a domain")
                continue
            errors.append(f"{dom}: unknown term '{term}'")
        if redirect is not None and not any(t.lower().lstrip("+-~?") == "all" for t in record.split()[1:]):
            chain.append(f"{dom}: redirect={redirect}")
            _follow(dom, redirect, f"redirect={redirect}")
        visiting.pop()

    def _follow(dom: str, target: str, how: str) -> None:
        if "%{" in target:
            return  # macro: expanded per message, not checkable here
        try:
            target_name = _name(target)
        except UsageError:
            errors.append(f"{dom}: invalid domain in {how}")
            return
        if target_name.lower() in visiting:
            errors.append(f"{dom}: {how} loops back to {target_name}")
            return
        if len(chain) > SPF_LOOKUP_LIMIT:
            return
        ans = lookup(resolver, target_name, "TXT")
        answers.append(ans)
        if ans.temporary:
            temperrors.append(f"{how} from {dom}: TXT {ans.status}")
            return
        if ans.status in (NXDOMAIN, NODATA):
            void.append(f"{how} from {dom}: {ans.status}")
        recs = _spf_records(ans)
        if len(recs) != 1:
            errors.append(f"{how} from {dom}: {target_name} has {len(recs)} SPF records (permerror)")
            return
        walk(target_name, recs[0])

    walk(domain, records[0])
    return SpfResult(domain, first, records[0], tuple(records), len(chain), tuple(chain), tuple(errors),
                     tuple(temperrors), tuple(answers), tuple(void))  # fmt: skip


# -- DMARC, MTA-STS, TLSA


def _tags(record: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for part in record.split(";"):
        k, sep, v = part.partition("=")
        if sep and k.strip():
            tags[k.strip().lower()] = v.strip()
    return tags


@dataclass(frozen=True)
class DmarcResult:
    domain: str
    txt: Answer
    records: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def record(self) -> str | None:
        return self.records[0] if len(self.records) == 1 else None

    @property
    def policy(self) -> str | None:
        return self.tags.get("p")

    def findings(self) -> list[Finding]:
        d = self.domain
        if self.txt.temporary:
            return [_finding("dns.dmarc", Severity.PROBLEM, f"_dmarc.{d} TXT lookup failed ({self.txt.status})",
                             "E26", [self.txt])]  # fmt: skip
        if not self.records:
            return [_finding("dns.dmarc", Severity.WARNING, f"{d} has no DMARC record", None, [self.txt])]
        if len(self.records) > 1:
            return [_finding("dns.dmarc", Severity.PROBLEM, f"{d} has {len(self.records)} DMARC records (ignored)",
                             None, [self.txt])]  # fmt: skip
        if self.policy not in ("none", "quarantine", "reject"):
            return [_finding("dns.dmarc", Severity.PROBLEM, f"DMARC record of {d} lacks a valid p= tag",
                             None, [self.txt], tags=dict(self.tags))]  # fmt: skip
        return [_finding("dns.dmarc", Severity.OK, f"DMARC of {d}: p={self.policy}", None, [self.txt],
                         policy=self.policy)]  # fmt: skip


def dmarc_check(resolver: dns.resolver.Resolver, domain: str) -> DmarcResult:
    domain = _name(domain)
    ans = lookup(resolver, f"_dmarc.{domain}", "TXT")
    recs = tuple(r for r in (_txt(x) for x in ans.records) if r.replace(" ", "").upper().startswith("V=DMARC1"))
    return DmarcResult(domain, ans, recs, _tags(recs[0]) if len(recs) == 1 else {})


@dataclass(frozen=True)
class MtaStsResult:
    domain: str
    txt: Answer
    record: str | None = None
    id: str | None = None

    def findings(self) -> list[Finding]:
        if self.txt.temporary:
            return [_finding("dns.mta_sts", Severity.WARNING, f"_mta-sts.{self.domain} TXT lookup failed "
                             f"({self.txt.status})", None, [self.txt])]  # fmt: skip
        if self.record is None:
            return [_finding("dns.mta_sts", Severity.INFO, f"{self.domain} publishes no MTA-STS TXT record",
                             None, [self.txt])]  # fmt: skip
        if not self.id:
            return [_finding("dns.mta_sts", Severity.PROBLEM, f"MTA-STS TXT of {self.domain} lacks id=",
                             None, [self.txt])]  # fmt: skip
        return [_finding("dns.mta_sts", Severity.OK, f"MTA-STS of {self.domain}: id={self.id}", None, [self.txt],
                         id=self.id)]  # fmt: skip


def mta_sts_txt(resolver: dns.resolver.Resolver, domain: str) -> MtaStsResult:
    domain = _name(domain)
    ans = lookup(resolver, f"_mta-sts.{domain}", "TXT")
    recs = [r for r in (_txt(x) for x in ans.records) if r.replace(" ", "").startswith("v=STSv1")]
    if len(recs) != 1:
        return MtaStsResult(domain, ans)
    return MtaStsResult(domain, ans, recs[0], _tags(recs[0]).get("id") or None)


@dataclass(frozen=True)
class TlsaResult:
    host: str
    port: int
    answer: Answer

    @property
    def records(self) -> tuple[str, ...]:
        return self.answer.records

    def findings(self) -> list[Finding]:
        a = self.answer
        if a.temporary:
            return [_finding("dns.tlsa", Severity.PROBLEM, f"TLSA lookup error for {self.host}:{self.port} "
                             f"({a.status}): DANE destinations defer", "E12", [a])]  # fmt: skip
        if not a.records:
            return [_finding("dns.tlsa", Severity.INFO, f"no TLSA records for {self.host}:{self.port}", None, [a])]
        if not a.authenticated:
            return [_finding("dns.tlsa", Severity.WARNING, f"{len(a.records)} TLSA record(s) for {self.host}:{self.port}, "
                             "but NOT DNSSEC-validated by this resolver (no AD flag): Postfix uses TLSA only from a "
                             "validating resolver (smtp_dns_support_level = dnssec), else DANE falls back to "
                             "opportunistic TLS", None, [a], records=list(a.records), dnssec=False)]  # fmt: skip
        return [_finding("dns.tlsa", Severity.OK, f"{len(a.records)} DNSSEC-validated TLSA record(s) for "
                         f"{self.host}:{self.port}", None, [a], records=list(a.records), dnssec=True)]  # fmt: skip


def tlsa_check(resolver: dns.resolver.Resolver, mx_host: str, port: int = 25) -> TlsaResult:
    host = _name(mx_host)
    if not 0 < int(port) < 65536:
        raise UsageError(f"invalid port: {port!r}")
    return TlsaResult(host, int(port), lookup(resolver, f"_{int(port)}._tcp.{host}", "TLSA"))


# -- DNSBL (E23)

LISTED, NOT_LISTED, REFUSED = "listed", "not_listed", "refused"


@dataclass(frozen=True)
class DnsblZoneResult:
    zone: str
    query: str
    status: str  # listed / not_listed / refused / timeout / error
    codes: tuple[str, ...] = ()
    reason: str = ""  # the TXT record, when listed
    answer: Answer | None = None


@dataclass(frozen=True)
class DnsblResult:
    ip: str
    zones: tuple[DnsblZoneResult, ...]

    @property
    def listed(self) -> tuple[str, ...]:
        return tuple(z.zone for z in self.zones if z.status == LISTED)

    def findings(self) -> list[Finding]:
        out: list[Finding] = []
        for z in self.zones:
            ev = [z.answer] if z.answer else []
            if z.status == LISTED:
                out.append(_finding("dns.dnsbl", Severity.PROBLEM, f"{self.ip} is listed in {z.zone} "
                                    f"({', '.join(z.codes)}){': ' + z.reason if z.reason else ''}", "E23", ev,
                                    zone=z.zone, codes=list(z.codes), reason=z.reason))  # fmt: skip
            elif z.status == REFUSED:
                out.append(_finding("dns.dnsbl", Severity.WARNING, f"{z.zone} refused this query (public/open "
                                    f"resolver or over limit: {', '.join(z.codes)}): {self.ip} not checked",
                                    None, ev, zone=z.zone, codes=list(z.codes)))  # fmt: skip
            elif z.status == NOT_LISTED:
                out.append(_finding("dns.dnsbl", Severity.OK, f"{self.ip} is not listed in {z.zone}", None, ev,
                                    zone=z.zone))  # fmt: skip
            else:
                out.append(_finding("dns.dnsbl", Severity.ERROR, f"{z.zone} lookup for {self.ip} failed "
                                    f"({z.status})", None, ev, zone=z.zone))  # fmt: skip
        return out


def _dnsbl_status(codes: Iterable[str]) -> str:
    listed = refused = odd = False
    for c in codes:
        try:
            a = ipaddress.ip_address(c)
        except ValueError:
            odd = True
            continue
        if a in ipaddress.ip_network("127.255.255.0/24") or a == ipaddress.ip_address("127.0.0.1"):
            refused = True  # Spamhaus-style error codes; RFC 5782 never lists 127.0.0.1 (URIBL: "refused")
        elif a in ipaddress.ip_network("127.0.0.0/8"):
            listed = True
        else:
            odd = True  # outside 127/8: a hijacking resolver, not a DNSBL answer
    if refused:
        return REFUSED
    if listed:
        return LISTED
    return ERROR if odd else NOT_LISTED


def dnsbl_check(resolver: dns.resolver.Resolver, ip: str, zones: Iterable[str] = DEFAULT_DNSBL_ZONES) -> DnsblResult:
    """Look ``ip`` up in each DNSBL zone (reversed octets / nibbles + zone, type A, TXT if listed)."""
    addr = _ip(ip)
    rev = dns.reversename.from_address(str(addr)).to_text(omit_final_dot=True)
    rev = rev.rsplit(".in-addr.arpa", 1)[0] if addr.version == 4 else rev.rsplit(".ip6.arpa", 1)[0]
    out: list[DnsblZoneResult] = []
    for zone in zones:
        zone = _name(zone)
        q = f"{rev}.{zone}"
        ans = lookup(resolver, q, "A")
        if ans.status in (NXDOMAIN, NODATA):
            out.append(DnsblZoneResult(zone, q, NOT_LISTED, answer=ans))
        elif ans.ok:
            status = _dnsbl_status(ans.records)
            reason = ""
            if status == LISTED:
                txt = lookup(resolver, q, "TXT")
                reason = " ".join(_txt(r) for r in txt.records)
            out.append(DnsblZoneResult(zone, q, status, ans.records, reason, ans))
        else:
            out.append(DnsblZoneResult(zone, q, ans.status, answer=ans))
    return DnsblResult(str(addr), tuple(out))


# -- two resolvers (system vs chroot resolv.conf)


@dataclass(frozen=True)
class ComparisonRow:
    name: str
    rdtype: str
    a: Answer
    b: Answer
    differences: tuple[str, ...] = ()


@dataclass(frozen=True)
class ResolverComparison:
    a_server: str
    b_server: str
    rows: tuple[ComparisonRow, ...]

    @property
    def differs(self) -> bool:
        return any(r.differences for r in self.rows)

    def findings(self) -> list[Finding]:
        out: list[Finding] = []
        for r in self.rows:
            if not r.differences:
                continue
            temp = r.a.temporary != r.b.temporary
            out.append(_finding("dns.resolvers", Severity.PROBLEM if temp else Severity.WARNING,
                                f"{r.name} {r.rdtype}: {self.a_server} and {self.b_server} differ: "
                                + "; ".join(r.differences), "E12" if temp else None, [r.a, r.b],
                                differences=list(r.differences)))  # fmt: skip
        if not out:
            out.append(_finding("dns.resolvers", Severity.OK, f"{self.a_server} and {self.b_server} agree on "
                                f"{len(self.rows)} queries", None))  # fmt: skip
        return out


def compare_resolvers(a: dns.resolver.Resolver, b: dns.resolver.Resolver,
                      names: Iterable[str | tuple[str, str]], slow_factor: float = 5.0,
                      slow_min: float = 0.5) -> ResolverComparison:  # fmt: skip
    """The same queries through ``a`` and ``b``; ``names`` are "name" (type A) or (name, type).
    A latency difference counts when one side is ``slow_factor`` times and ``slow_min`` s slower."""
    rows: list[ComparisonRow] = []
    for item in names:
        name, rdtype = (item, "A") if isinstance(item, str) else item
        x, y = lookup(a, name, rdtype), lookup(b, name, rdtype)
        diffs: list[str] = []
        if x.status != y.status:
            diffs.append(f"status {x.status} vs {y.status}")
        elif sorted(x.records) != sorted(y.records):
            diffs.append(f"answers {sorted(x.records)} vs {sorted(y.records)}")
        lo, hi = sorted((x.latency, y.latency))
        if hi - lo >= slow_min and hi >= slow_factor * max(lo, 1e-3):
            diffs.append(f"latency {x.latency:.3f}s vs {y.latency:.3f}s")
        rows.append(ComparisonRow(x.name, x.rdtype, x, y, tuple(diffs)))
    return ResolverComparison(_servers(a), _servers(b), tuple(rows))


def server_drift(system: Any, chroot: Any, system_path: str, chroot_path: str) -> Finding:
    """Postfix's chroot copy of resolv.conf must list the same nameservers as the system's:
    a stale copy (postfix start/reload refreshes it on Debian) sends chrooted smtp elsewhere (E12)."""
    a, b = [str(x) for x in system.nameservers], [str(x) for x in chroot.nameservers]
    ev = (Evidence(system_path, "nameservers: " + ", ".join(a)), Evidence(chroot_path, "nameservers: " + ", ".join(b)))
    if a == b:
        return Finding("dns.resolv_conf", Severity.OK, f"{chroot_path} lists the same nameservers as {system_path}",
                       None, ev)  # fmt: skip
    return Finding("dns.resolv_conf", Severity.WARNING,
                   f"{chroot_path} ({', '.join(b)}) differs from {system_path} ({', '.join(a)}): chrooted smtp "
                   "processes ask other servers (a stale copy? postfix reload/restart refreshes it)", "E12", ev,
                   {"system": a, "chroot": b})  # fmt: skip


def to_findings(*results: Any) -> list[Finding]:
    """Findings of any results of this module (MxResult, FcrdnsResult, ..., or a bare Answer)."""
    out: list[Finding] = []
    for r in results:
        if isinstance(r, Answer):
            sev = Severity.OK if r.ok else Severity.PROBLEM if r.temporary else Severity.WARNING
            out.append(_finding("dns.lookup", sev, f"{r.name} {r.rdtype}: {r.status}",
                                "E12" if r.temporary else None, [r], status=r.status))  # fmt: skip
        elif hasattr(r, "findings"):
            out.extend(r.findings())
        else:
            raise UsageError(f"to_findings: not a DNS check result: {type(r).__name__}")
    return out


# -- the target's own view: DNS asked from the mail host


class TargetResolver:
    """A resolver that asks from the target's vantage point: DNS over TCP (RFC 7766) through
    ``target.connect`` - locally a socket, over SSH a direct-tcpip channel from the mail host -
    to the nameservers of the target's resolv.conf. It offers the part of dnspython's Resolver
    that ``lookup`` uses, and raises the same exceptions, so every check works unchanged."""

    def __init__(self, target: Target, nameservers: Sequence[str], port: int = 53, timeout: float = 3.0) -> None:
        if not nameservers:
            raise UsageError("no nameservers to ask")
        for s in nameservers:
            _ip(s)
        self.target = target
        self.nameservers = list(nameservers)
        self.port = int(port)
        self.timeout = self.lifetime = float(timeout)

    def _ask(self, server: str, wire: bytes, deadline: float) -> bytes:
        import struct

        conn = self.target.connect(server, self.port, max(0.1, deadline - time.monotonic()))
        try:
            conn.settimeout(max(0.1, deadline - time.monotonic()))
            conn.sendall(struct.pack("!H", len(wire)) + wire)
            data = b""
            need = 2
            while len(data) < need:
                if time.monotonic() > deadline:
                    raise dns.exception.Timeout()
                conn.settimeout(max(0.1, deadline - time.monotonic()))
                chunk = conn.recv(min(65537, need - len(data)))
                if not chunk:
                    raise dns.exception.DNSException("connection closed by the nameserver")
                data += chunk
                if len(data) >= 2 and need == 2:
                    need = 2 + struct.unpack("!H", data[:2])[0]
            return data[2:need]
        finally:
            conn.close()

    def resolve(self, qname: Any, rdtype: Any, search: bool = False, raise_on_no_answer: bool = True) -> Any:
        import dns.entropy
        import dns.message
        import dns.rdataclass

        from checks.errors import PfdiagError

        name = qname if isinstance(qname, dns.name.Name) else dns.name.from_text(str(qname))
        rdt = dns.rdatatype.RdataType.make(rdtype)
        deadline = time.monotonic() + self.lifetime
        errors: list[tuple[Any, ...]] = []
        q = dns.message.make_query(name, rdt, use_edns=True, want_dnssec=True)
        for server in self.nameservers:
            q.id = dns.entropy.random_16()
            try:
                resp = dns.message.from_wire(self._ask(server, q.to_wire(), deadline))
            except (dns.exception.Timeout, TimeoutError):  # socket.timeout is TimeoutError since 3.10
                errors.append((server, True, self.port, "timed out", None))
                continue
            except (PfdiagError, OSError, dns.exception.DNSException) as exc:
                errors.append((server, True, self.port, f"{type(exc).__name__}: {exc}", None))
                continue
            if resp.id != q.id:
                errors.append((server, True, self.port, "reply to another query", None))
                continue
            rcode = resp.rcode()
            if rcode == dns.rcode.NXDOMAIN:
                raise dns.resolver.NXDOMAIN(qnames=[name], responses={name: resp})
            if rcode != dns.rcode.NOERROR:
                errors.append((server, True, self.port, dns.rcode.to_text(rcode), resp))
                continue
            answer = dns.resolver.Answer(name, rdt, dns.rdataclass.IN, cast(Any, resp), server, self.port)
            if raise_on_no_answer and answer.rrset is None:
                raise dns.resolver.NoAnswer(response=resp)
            return answer
        if errors and all(e[3] == "timed out" for e in errors):
            raise dns.resolver.LifetimeTimeout(timeout=self.lifetime, errors=errors)
        raise dns.resolver.NoNameservers(request=q, errors=errors)


def resolv_conf_servers(text: str) -> list[str]:
    """The nameserver lines of a resolv.conf; none means 127.0.0.1, as in libc."""
    return parse_resolv_conf(text).servers


def resolver_for(target: Target, source: str = "system", queue_directory: str = "/var/spool/postfix",
                 timeout: float = 3.0) -> tuple[Any, str]:  # fmt: skip
    """(resolver, description) for DNS as `target` sees it: the one place that decides it.

    source: "system" (the target's /etc/resolv.conf), "chroot" (Postfix's copy in the queue
    directory, what chrooted smtp processes use), or "IP[:PORT]" (that server, asked from the
    target). A target whose sockets are this machine's (``target.local_network``) or that
    has none (a recording: only "IP[:PORT]", asked from here) gets dnspython's resolver; any
    other target a TargetResolver, whose queries go over TCP from the target itself."""
    if not target.live and source in ("system", "chroot"):
        raise UsageError("a snapshot has no live DNS: give --resolver IP[:PORT] to ask a server from here")
    here = target.local_network or not target.live
    if source not in ("system", "chroot"):
        if source.startswith("["):  # [IPv6] or [IPv6]:PORT
            host, _, rest = source[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else rest or ""
        elif source.count(":") == 1:  # IPv4:PORT
            host, _, port = source.partition(":")
        else:  # an address alone (IPv6 without brackets too)
            host, port = source, ""
        if port and not (port.isdigit() and 0 < int(port) < 65536):
            raise UsageError(f"--resolver {source!r}: the port must be 1..65535")
        port_n = int(port) if port else 53
        try:
            host = str(ipaddress.ip_address(host))
        except ValueError:
            raise UsageError(f"--resolver {source!r}: use system, chroot or IP[:PORT] ([IPv6]:PORT)") from None
        if not here:
            return TargetResolver(target, [host], port_n, timeout), f"{host}#{port_n} asked from {target.where}"
        suffix = "" if target.live else " from this machine"
        return make_resolver([host], port=port_n, timeout=timeout), f"{host}#{port_n}{suffix}"
    path = RESOLV_HOST if source == "system" else chroot_resolv(queue_directory)
    servers = read_resolv_conf(target, path).servers
    if here:
        return make_resolver(servers, timeout=timeout), f"{path} ({', '.join(servers)})"
    return TargetResolver(target, servers, 53, timeout), f"{path} on {target.where} ({', '.join(servers)}), asked from there"


RESERVED_TLDS = ("test", "invalid", "example", "localhost")  # RFC 2606 / 6761: never asked of a real resolver


class NoReserved:
    """A resolver that answers NXDOMAIN for names under reserved TLDs instead of sending them out."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:  # nameservers, port, lifetime: the inner resolver's
        return getattr(self.inner, name)

    def resolve(self, name: Any, rtype: Any, *args: Any, **kwargs: Any) -> Any:
        if str(name).rstrip(".").rsplit(".", 1)[-1].lower() in RESERVED_TLDS:
            raise dns.resolver.NXDOMAIN()
        return self.inner.resolve(name, rtype, *args, **kwargs)


def route_resolver(target: Target, spec: str | None = None, timeout: float = 5.0) -> Any:
    """The resolver that finds next hops as the Postfix on ``target`` would: ``spec``
    (system|chroot|IP[:PORT]) used as given; else the target's own resolv.conf (asked from
    the target), reserved names never sent; None for a target without live DNS (a snapshot)
    or whose resolv.conf cannot be read (bracketed and transport-mapped hops still resolve)."""
    from checks.errors import PfdiagError

    if spec:
        return resolver_for(target, spec, timeout=timeout)[0]
    if not target.live:
        return None
    try:
        return NoReserved(resolver_for(target, "system", timeout=timeout)[0])
    except PfdiagError:
        return None


def asks_from(target: Target, resolver: Any) -> str:
    """Where the lookups of ``resolver`` (from resolver_for) come from: the target, or this machine."""
    return target.where if isinstance(resolver, TargetResolver) else "local"


RESOLV_HOST = HOST_RESOLV  # the name this module used


# -- MTA-STS policy (RFC 8461): fetched over HTTPS from the target's vantage point


@dataclass(frozen=True)
class MtaStsPolicy:
    domain: str
    status: str  # ok | unreachable | http-error | invalid
    mode: str | None = None  # enforce | testing | none
    mx: tuple[str, ...] = ()
    max_age: int | None = None
    detail: str = ""
    where: str = "local"

    def covers(self, mx_host: str) -> bool:
        h = mx_host.lower().rstrip(".")
        return any(h == p or (p.startswith("*.") and h.count(".") >= 1 and h.split(".", 1)[1] == p[2:]) for p in self.mx)

    def findings(self, mx_hosts: Sequence[str] = ()) -> list[Finding]:
        ev = (Evidence(f"GET https://mta-sts.{self.domain}/.well-known/mta-sts.txt", self.detail, self.where),)
        if self.status != OK:
            return [Finding("dns.mta_sts_policy", Severity.WARNING, f"MTA-STS policy of {self.domain}: {self.status} "
                            f"({self.detail}); senders that enforce MTA-STS defer", None, ev)]  # fmt: skip
        uncovered = [h for h in mx_hosts if not self.covers(h)]
        if self.mode == "enforce" and uncovered:
            return [Finding("dns.mta_sts_policy", Severity.PROBLEM, f"MTA-STS of {self.domain} is enforce, but MX "
                            f"{', '.join(uncovered)} is not in its mx: list ({', '.join(self.mx)}): senders that "
                            "enforce MTA-STS refuse to deliver there", "E19", ev,
                            {"mode": self.mode, "mx": list(self.mx)})]  # fmt: skip
        return [Finding("dns.mta_sts_policy", Severity.OK, f"MTA-STS policy of {self.domain}: mode {self.mode}, mx "
                        f"{', '.join(self.mx)}, max_age {self.max_age} (Postfix applies it only through an MTA-STS "
                        "policy server such as postfix-mta-sts-resolver)", None, ev,
                        {"mode": self.mode, "mx": list(self.mx)})]  # fmt: skip


def parse_mta_sts_policy(domain: str, text: str, where: str = "local") -> MtaStsPolicy:
    fields_: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields_.setdefault(key.strip().lower(), []).append(value.strip())
    if fields_.get("version") != ["STSv1"]:
        return MtaStsPolicy(domain, "invalid", detail="no 'version: STSv1' line", where=where)
    mode = (fields_.get("mode") or [""])[0]
    if mode not in ("enforce", "testing", "none"):
        return MtaStsPolicy(domain, "invalid", detail=f"bad mode {mode!r}", where=where)
    age = (fields_.get("max_age") or [""])[0]
    return MtaStsPolicy(domain, OK, mode, tuple(m.lower() for m in fields_.get("mx", [])),
                        int(age) if age.isdigit() else None, text.strip()[:400], where)  # fmt: skip


def mta_sts_policy(target: Any, resolver: Any, domain: str, *, port: int = 443, cafile: str | None = None,
                   timeout: float = 10.0) -> MtaStsPolicy:  # fmt: skip
    """GET the policy like an MTA-STS sender: https://mta-sts.DOMAIN/.well-known/mta-sts.txt, the
    certificate verified for that name, through target.connect (from the mail host over SSH)."""
    import ssl

    from checks.errors import PfdiagError

    domain = _name(domain)
    host = f"mta-sts.{domain}"
    where = target.where
    a = lookup(resolver, host, "A")
    if not a.ok:
        return MtaStsPolicy(domain, "unreachable", detail=f"{host} A: {a.status}", where=where)
    ctx = ssl.create_default_context(cafile=cafile)
    deadline = time.monotonic() + timeout
    try:
        conn = target.connect(a.records[0], port, timeout)
    except PfdiagError as exc:
        return MtaStsPolicy(domain, "unreachable", detail=str(exc), where=where)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=host)

    def pump(op: Any) -> Any:
        while True:
            try:
                result = op()
                if outgoing.pending:
                    conn.sendall(outgoing.read())
                return result
            except ssl.SSLWantReadError:
                if outgoing.pending:
                    conn.sendall(outgoing.read())
                if time.monotonic() > deadline:
                    raise TimeoutError("no answer in time") from None
                conn.settimeout(max(0.1, deadline - time.monotonic()))
                data = conn.recv(65536)
                if not data:
                    incoming.write_eof()
                else:
                    incoming.write(data)

    try:
        pump(tls.do_handshake)
        pump(lambda: tls.write(f"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()))
        body = b""
        while len(body) < 65536:
            try:
                chunk = pump(lambda: tls.read(16384))
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                break
            if not chunk:
                break
            body += chunk
    except ssl.SSLCertVerificationError as exc:
        return MtaStsPolicy(domain, "unreachable", detail=f"certificate of {host} not valid: {exc.verify_message}", where=where)
    except (ssl.SSLError, OSError, TimeoutError, PfdiagError) as exc:
        return MtaStsPolicy(domain, "unreachable", detail=f"{type(exc).__name__}: {exc}", where=where)
    finally:
        conn.close()
    head, _, payload = body.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1", "replace")
    if " 200 " not in status_line + " ":
        return MtaStsPolicy(domain, "http-error", detail=status_line or "no HTTP answer", where=where)
    if b"transfer-encoding: chunked" in head.lower():
        payload = _dechunk(payload)
    return parse_mta_sts_policy(domain, payload.decode("utf-8", "replace"), where)


def _dechunk(data: bytes) -> bytes:
    out, rest = b"", data
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        try:
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
        except ValueError:
            break
        if size == 0:
            break
        out, rest = out + rest[:size], rest[size + 2 :]
    return out
