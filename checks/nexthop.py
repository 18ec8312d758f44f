"""Where Postfix's smtp client would deliver mail for a domain: the next hop, as Postfix finds it.

Order (transport(5), postconf(5)):
1. transport_maps, looked up through the target with ``postmap -q`` (so every map type
   Postfix knows works): the domain itself, then ``.parent`` entries for each parent
   domain, then ``*``. ``transport:nexthop``, where nexthop is ``[host]:port`` (no MX
   lookup), ``host:port`` or empty (the recipient domain). error:, discard:, retry: and
   local transports have no SMTP next hop.
2. relayhost, when set (``[host]`` = no MX lookup).
3. the domain itself: MX records in preference order (Postfix shuffles equal preferences;
   here they are sorted by name so that a report is reproducible), else its A/AAAA
   (each host's addresses sorted too: Postfix shuffles them, smtp_randomize_addresses).
Each host's addresses follow inet_protocols and smtp_address_preference, and at most
smtp_mx_address_limit addresses are kept, as Postfix does.

DNS goes through a resolver the caller passes; with none, only bracketed next hops resolve.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from checks.config import domain_keys, postconf_x, postmap_query
from checks.errors import PfdiagError, UsageError
from checks.targets import Target

NO_SMTP = ("error", "discard", "retry", "local", "virtual", "pipe", "lmtp-local", "hold")
_DOMAIN = re.compile(r"^(?=.{1,253}$)(?!-)[A-Za-z0-9-]{1,63}(?<!-)(?:\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*$")


@dataclass(frozen=True)
class Address:
    """One address Postfix would connect to, and where it was found."""
    host: str  # the name Postfix would log (MX host, or the IP for a literal)
    addr: str
    port: int
    source: str  # "transport_maps: .example.com smtp:[10.0.0.1]:2525", "MX 10 mx1.example.com", ...


@dataclass
class NextHop:
    """How Postfix routes a domain: transport, next hop and the addresses it would try."""
    domain: str
    transport: str = "smtp"  # the master.cf service that delivers (its -o overrides apply)
    nexthop: str = ""  # as configured: "[host]:port", "host", "" (the domain)
    source: str = ""  # where the route came from
    addresses: list[Address] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    deliverable_by_smtp: bool = True


def _lookup_keys(domain: str) -> list[str]:
    return domain_keys(domain) + ["*"]


def _split(text: str) -> tuple[str, str | None, bool] | None:
    """Postfix's next-hop syntax: "[host]:port", "[host]", "host:port", "host" (a bare IPv6
    literal has more than one colon) -> (host, port text or None, bracketed); None: malformed."""
    t = text.strip()
    if t.lower().startswith("inet:"):  # a socket type prefix (transport_maps, relayhost)
        t = t[5:]
    if t.startswith("["):
        end = t.find("]")
        if end < 0:
            return None
        host, rest = t[1:end], t[end + 1 :]
        if rest and not rest.startswith(":"):
            return None
        return host, (rest[1:] if rest else None), True
    if t.count(":") == 1:
        host, port = t.split(":", 1)
        return host, port, False
    return t, None, False


def split_nexthop(text: str, default_port: int = 25) -> tuple[str, int, bool]:
    """A configured next hop ("[host]:port" / "host:port" / "[ipv6]") -> (host, port, bracketed);
    lenient, as Postfix reads its own tables (a port it cannot read is the default)."""
    parts = _split(text)
    if parts is None:
        raise UsageError(f"bad next hop {text!r}")
    host, port, bracketed = parts
    if not host:
        host, port = text.strip(), None
    return host, int(port) if port and port.isdigit() else default_port, bracketed


def nexthop_domain(configured: str) -> str:
    """A transport/relayhost next hop as Postfix's "nexthop" strategy sees it: no socket type
    prefix (inet:), no enclosing brackets, no trailing port."""
    parts = _split(configured)
    return configured.strip() if parts is None else parts[0]


@dataclass(frozen=True)
class Destination:
    """A next hop as a user gives it (pfdiag probe, a plugin), with Postfix's meaning:
    "[host]:port" and "[host]" are not MX-looked-up; "host:port" is (the host's MX records, each
    on that port); a bare "domain" is routed like mail to it (transport_maps, relayhost, MX)."""

    text: str
    host: str  # hostname or IP literal, no brackets
    port: int
    bracketed: bool
    is_ip: bool
    port_given: bool = False

    @property
    def is_domain(self) -> bool:
        """A bare domain: routed like mail for it (transport_maps, relayhost, MX)."""
        return not (self.bracketed or self.is_ip or self.port_given)


def _valid_host(host: str) -> bool:
    return bool(_DOMAIN.match(host[:-1] if host.endswith(".") else host))


def parse_destination(text: str) -> Destination:
    """"[host]:port", "[host]", "host:port" or "domain" (port 25 unless given); UsageError when
    it is none of them."""
    from checks.bind import ip_literal

    bad = UsageError(f"invalid destination {text!r}: use [host]:port, [host], host:port or a domain")
    s = text.strip()
    if not s or any(c.isspace() or ord(c) < 32 for c in s) or s.lower().startswith("inet:"):
        raise bad
    parts = _split(s)
    if parts is None:
        raise bad
    host, port_text, bracketed = parts
    if not bracketed and s.count(":") > 1:  # a bare IPv6 literal
        host, port_text = s, None
    port = 25
    if port_text is not None:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise UsageError(f"invalid port in destination {text!r}: 1..65535")
        port = int(port_text)
    ip = ip_literal(host)
    if ip is None and (":" in host or not _valid_host(host) or host.replace(".", "").isdigit()):
        raise bad
    return Destination(text, ip or host.rstrip("."), port, bracketed, ip is not None, port_text is not None)


def resolve_nexthop(target: Target, domain: str, config_dir: str | None = None, resolver: Any = None) -> NextHop:
    d = domain.strip().lower().rstrip(".")
    if not _DOMAIN.match(d):
        raise UsageError(f"invalid domain {domain!r}")
    hop = NextHop(d)
    try:
        conf = postconf_x(target, config_dir, "transport_maps", "relayhost", "inet_protocols", "smtp_address_preference",
                         "smtp_mx_address_limit", "default_transport", "relay_transport")  # fmt: skip
    except PfdiagError as exc:
        conf = {}
        hop.notes.append(f"postconf failed ({exc}): Postfix's defaults assumed")
    routed = False
    for table in [t for t in re.split(r"[\s,]+", conf.get("transport_maps", "")) if t]:
        for key in _lookup_keys(d):
            try:
                value = postmap_query(target, config_dir, key, table)
            except PfdiagError as exc:
                hop.notes.append(f"postmap -q {key} {table} failed: {exc}")
                break
            if value is None:
                continue
            transport, _, nexthop = value.partition(":")
            hop.transport = transport or conf.get("default_transport", "smtp") or "smtp"
            hop.nexthop, hop.source, routed = nexthop, f"transport_maps {table}: {key} {value}", True
            break
        if routed:
            break
    if not routed and conf.get("relayhost"):
        hop.transport = conf.get("relay_transport", "relay").split(":")[0] or "relay"
        hop.nexthop, hop.source = conf["relayhost"], f"relayhost = {conf['relayhost']}"
    elif not routed:
        hop.transport = (conf.get("default_transport") or "smtp").split(":")[0]
        hop.source = "the domain's own MX records (no transport map entry, no relayhost)"
    if hop.transport in NO_SMTP:
        hop.deliverable_by_smtp = False
        hop.notes.append(f"transport {hop.transport!r}: no SMTP next hop")
        return hop
    target_host, port, bracketed = split_nexthop(hop.nexthop or d)
    _fill(hop, target_host, port, bracketed, conf, resolver)
    return hop


_ROUTING = ("inet_protocols", "smtp_address_preference", "smtp_mx_address_limit")


def route(target: Target, dest: Destination, config_dir: str | None = None, resolver: Any = None) -> NextHop:
    """Every address Postfix would try for `dest`, in its order: a bare domain is routed like
    mail for it (resolve_nexthop); a given next hop ([host]:port, host:port, an IP) is looked up
    as Postfix looks up a transport's next hop: MX unless bracketed, then A/AAAA."""
    if dest.is_domain:
        return resolve_nexthop(target, dest.host, config_dir, resolver)
    hop = NextHop(dest.host, "smtp", dest.text.strip(), f"given as {dest.text.strip()}")
    if _is_ip(dest.host):  # an address is used as given: the routing settings would go unread (one postconf less)
        _fill(hop, dest.host, dest.port, True, {}, resolver)
        return hop
    try:
        conf = postconf_x(target, config_dir, *_ROUTING)
    except PfdiagError as exc:
        conf = {}
        hop.notes.append(f"postconf failed ({exc}): Postfix's defaults assumed")
    _fill(hop, dest.host, dest.port, dest.bracketed or dest.is_ip, conf, resolver)
    return hop


def _fill(hop: NextHop, target_host: str, port: int, bracketed: bool, conf: dict[str, str], resolver: Any) -> None:
    """hop.addresses for a next hop host: an IP as is; else its MX hosts (unless bracketed) or
    its own A/AAAA, each host's addresses after inet_protocols / smtp_address_preference, at most
    smtp_mx_address_limit of them."""
    limit_text = conf.get("smtp_mx_address_limit") or "5"
    limit = int(limit_text) if limit_text.isdigit() else 5
    protocols = conf.get("inet_protocols", "all")
    preference = conf.get("smtp_address_preference", "any")
    if _is_ip(target_host):
        ip = target_host[5:] if target_host.lower().startswith("ipv6:") else target_host
        hop.addresses.append(Address(ip, ip, port, hop.source))
        return
    if resolver is None:
        hop.notes.append(f"{target_host}: not resolved (no resolver for this target)")
        return
    hosts: list[tuple[str, str]] = []  # (host, how found)
    if bracketed:
        hosts.append((target_host, hop.source))
    else:
        mx = _query(resolver, target_host, "MX", hop)
        if mx:
            for pref, name in sorted(mx, key=lambda r: (r[0], r[1])):
                if name in (".", ""):
                    hop.notes.append(f"{target_host} has a null MX: it accepts no mail")
                    return
                hosts.append((name, f"MX {pref} {name} of {target_host}"))
        else:
            hosts.append((target_host, f"A/AAAA of {target_host} (no MX)"))
    for name, how in hosts:
        for a in _addresses(resolver, name, protocols, preference, hop):
            if len(hop.addresses) >= limit:
                hop.notes.append(f"smtp_mx_address_limit = {limit}: further addresses are not tried")
                return
            hop.addresses.append(Address(name, a, port, how))


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text[5:] if text.lower().startswith("ipv6:") else text)
        return True
    except ValueError:
        return False


def _query(resolver: Any, name: str, rtype: str, hop: NextHop) -> list[tuple[int, str]]:
    import dns.exception
    import dns.resolver

    try:
        answer = resolver.resolve(name, rtype)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except dns.exception.DNSException as exc:
        hop.notes.append(f"{rtype} {name}: {type(exc).__name__}")
        return []
    if rtype == "MX":
        return [(int(r.preference), r.exchange.to_text(omit_final_dot=True)) for r in answer]
    return [(0, r.to_text()) for r in answer]


def _addresses(resolver: Any, name: str, protocols: str, preference: str, hop: NextHop) -> list[str]:
    want4 = protocols in ("all", "ipv4") or "ipv4" in protocols
    want6 = protocols in ("all", "ipv6") or "ipv6" in protocols
    # Postfix shuffles a host's addresses (smtp_randomize_addresses = yes): sorted here, so
    # that a report is reproducible
    v4 = sorted((a for _, a in _query(resolver, name, "A", hop)), key=ipaddress.ip_address) if want4 else []
    v6 = sorted((a for _, a in _query(resolver, name, "AAAA", hop)), key=ipaddress.ip_address) if want6 else []
    if preference == "ipv6":
        return v6 + v4
    if preference == "ipv4":
        return v4 + v6
    return v4 + v6  # "any": Postfix picks randomly; this keeps a report reproducible


def describe(hop: NextHop) -> dict[str, Any]:
    return {"domain": hop.domain, "transport": hop.transport, "nexthop": hop.nexthop, "source": hop.source,
            "addresses": [a.__dict__ for a in hop.addresses], "notes": hop.notes,
            "deliverable_by_smtp": hop.deliverable_by_smtp}  # fmt: skip


def resolve_many(target: Target, domains: Sequence[str], config_dir: str | None = None, resolver: Any = None) -> list[NextHop]:
    return [resolve_nexthop(target, d, config_dir, resolver) for d in domains]


RESERVED_TLDS = ("test", "invalid", "example", "localhost")  # RFC 2606 / 6761: never asked of DNS


def is_reserved(name: str) -> bool:
    return name.rstrip(".").rsplit(".", 1)[-1].lower() in RESERVED_TLDS


def resolver_for(target: Target, spec: str | None = None) -> Any:
    """The resolver that sees DNS as `target` does, or None when there is none: this machine's
    own for a local target; over SSH the mail host's resolv.conf, asked from the mail host
    (checks.dns.TargetResolver: DNS over TCP through the target); nothing for a snapshot.
    Reserved names (RESERVED_TLDS) are never sent to these. spec "IP[:PORT]": that server,
    asked from the target, used as given (reserved names too: a lab's server)."""
    if spec:
        from checks.dns import resolver_for as dns_resolver

        return dns_resolver(target, spec)[0]
    if not target.live:  # a recording: nothing to ask
        return None
    if target.local_network:  # this machine's own sockets: its own resolver, built on first use
        return _NoReserved(None, _local_resolver)  # (dnspython costs ~30 ms of start-up: a [literal] needs none)
    from checks.dns import resolver_for as dns_resolver

    try:
        return _NoReserved(dns_resolver(target, "system")[0])
    except PfdiagError:
        return None


def _local_resolver() -> Any:
    import dns.resolver

    r = dns.resolver.Resolver()
    r.lifetime = 5.0
    return r


class _NoReserved:
    """A resolver that refuses reserved names instead of sending them to the network.
    ``make`` builds the inner resolver when it is first needed."""

    def __init__(self, inner: Any, make: Callable[[], Any] | None = None) -> None:
        self._inner, self._make = inner, make

    @property
    def inner(self) -> Any:
        if self._inner is None and self._make is not None:
            self._inner, self._make = self._make(), None
        return self._inner

    def resolve(self, name: str, rtype: str) -> Any:
        import dns.resolver

        if is_reserved(name):
            raise dns.resolver.NXDOMAIN()
        return self.inner.resolve(name, rtype)


def first_address(target: Target, domain: str, config_dir: str | None = None) -> dict[str, Any] | None:
    """{host, addr, port, transport, source} of the first address Postfix would try, or None."""
    try:
        hop = resolve_nexthop(target, domain, config_dir, resolver_for(target))
    except PfdiagError:
        return None
    if not hop.addresses:
        return None
    a = hop.addresses[0]
    return {"host": a.addr, "name": a.host, "port": a.port, "transport": hop.transport, "source": a.source}
