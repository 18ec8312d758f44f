"""DNS asked the way pfdiag asks it: input validation, the resolver (dnspython's, or a
TargetResolver asking over TCP from the mail host through the target), and one lookup as an
Answer. The checks are in checks.dns.records / checks.dns.policies, the MTA-STS policy fetch in
checks.dns.mtasts; checks.dns re-exports all of it.
"""

from __future__ import annotations

import ipaddress
import re
import time
from dataclasses import dataclass
from typing import Any, Iterable, Sequence, cast

import dns.exception
import dns.flags
import dns.name
import dns.rcode
import dns.rdatatype
import dns.resolver

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
