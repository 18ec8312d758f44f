"""DNS checks of published policies and reputation: DMARC, the MTA-STS TXT record, TLSA (DANE), DNSBLs."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Iterable

import dns.resolver
import dns.reversename

from checks.errors import UsageError
from checks.model import Finding, Severity
from checks.dns.resolver import DEFAULT_DNSBL_ZONES, ERROR, NODATA, NXDOMAIN, OK, Answer, _finding, _ip, _name, _txt, lookup

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
