"""DNS checks of where mail goes and who sends it: MX, FCrDNS (PTR), the HELO name, SPF."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

import dns.resolver
import dns.reversename

from checks.errors import UsageError
from checks.model import Finding, Severity
from checks.dns.resolver import (
    NODATA,
    NXDOMAIN,
    OK,
    SPF_LOOKUP_LIMIT,
    SPF_LOOKUP_MECHANISMS,
    SPF_VOID_LIMIT,
    Answer,
    _finding,
    _ip,
    _name,
    _txt,
    lookup,
)

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
