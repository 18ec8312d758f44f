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

The package: checks.dns.resolver (validation, resolvers, lookup), checks.dns.records (MX,
FCrDNS, HELO, SPF), checks.dns.policies (DMARC, MTA-STS TXT, TLSA, DNSBL), checks.dns.compare
(two resolvers, to_findings), checks.dns.mtasts (the MTA-STS policy over HTTPS). Every name
callers use is re-exported here.
"""

from __future__ import annotations

from checks.resolvconf import HOST_RESOLV as HOST_RESOLV  # the names the one-module checks.dns offered too
from checks.resolvconf import chroot_resolv as chroot_resolv
from checks.resolvconf import parse_resolv_conf as parse_resolv_conf
from checks.resolvconf import read_resolv_conf as read_resolv_conf

from checks.dns.resolver import (  # noqa: F401
    Answer,
    asks_from,
    DEFAULT_DNSBL_ZONES,
    ERROR,
    _finding as _finding,
    _ip as _ip,
    lookup,
    make_resolver,
    _name as _name,
    _no_nameservers_status as _no_nameservers_status,
    NODATA,
    NoReserved,
    NXDOMAIN,
    OK,
    RESERVED_TLDS,
    resolv_conf_servers,
    RESOLV_HOST,
    resolver_for,
    route_resolver,
    _servers as _servers,
    SERVFAIL,
    SPF_LOOKUP_LIMIT,
    SPF_LOOKUP_MECHANISMS,
    SPF_VOID_LIMIT,
    TargetResolver,
    TEMPORARY,
    TIMEOUT,
    _txt as _txt,
)
from checks.dns.records import (  # noqa: F401
    fcrdns,
    FcrdnsResult,
    helo_check,
    HeloResult,
    mx_check,
    _mx_host as _mx_host,
    MxHost,
    MxResult,
    _same_ip as _same_ip,
    spf_check,
    _SPF_MECH as _SPF_MECH,
    _SPF_MOD as _SPF_MOD,
    _spf_records as _spf_records,
    SpfResult,
)
from checks.dns.policies import (  # noqa: F401
    dmarc_check,
    DmarcResult,
    dnsbl_check,
    _dnsbl_status as _dnsbl_status,
    DnsblResult,
    DnsblZoneResult,
    LISTED,
    mta_sts_txt,
    MtaStsResult,
    NOT_LISTED,
    REFUSED,
    _tags as _tags,
    tlsa_check,
    TlsaResult,
)
from checks.dns.compare import (  # noqa: F401
    compare_resolvers,
    ComparisonRow,
    ResolverComparison,
    server_drift,
    to_findings,
)
from checks.dns.mtasts import (  # noqa: F401
    MAX_POLICY,
    mta_sts_policy,
    MtaStsPolicy,
    parse_mta_sts_policy,
)

__all__ = ['Answer', 'asks_from', 'DEFAULT_DNSBL_ZONES', 'ERROR', 'lookup', 'make_resolver', 'NODATA', 'NoReserved', 'NXDOMAIN', 'OK', 'RESERVED_TLDS', 'resolv_conf_servers', 'RESOLV_HOST', 'resolver_for', 'route_resolver', 'SERVFAIL', 'SPF_LOOKUP_LIMIT', 'SPF_LOOKUP_MECHANISMS', 'SPF_VOID_LIMIT', 'TargetResolver', 'TEMPORARY', 'TIMEOUT', 'fcrdns', 'FcrdnsResult', 'helo_check', 'HeloResult', 'mx_check', 'MxHost', 'MxResult', 'spf_check', 'SpfResult', 'dmarc_check', 'DmarcResult', 'dnsbl_check', 'DnsblResult', 'DnsblZoneResult', 'LISTED', 'mta_sts_txt', 'MtaStsResult', 'NOT_LISTED', 'REFUSED', 'tlsa_check', 'TlsaResult', 'compare_resolvers', 'ComparisonRow', 'ResolverComparison', 'server_drift', 'to_findings', 'MAX_POLICY', 'mta_sts_policy', 'MtaStsPolicy', 'parse_mta_sts_policy']
