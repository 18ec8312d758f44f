"""The DNS lab: dnsmasq answering the lab zone, and a real Postfix resolving through it.

``dns_server`` is dnsmasq on 127.0.0.1:<port> (asked here with dnspython, as pfdiag's DNS
checks will); ``dns_lab`` is a Postfix inside the pfdiag-lab-dns network namespace, whose
resolver is the namespace's dnsmasq: SERVFAIL, NXDOMAIN, NODATA, null MX, CNAME and loop
cases are real lookups there, and nothing can leave the namespace.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import dns.message
import dns.query
import dns.rcode
import dns.resolver
import pytest

from tests.lab.dns import TLSA_DATA, DnsLab, DnsServer
from tests.lab.postfix import Delivery
from tests.lab.scenarios import DNS_SCENARIOS, SENDER, DnsScenario

pytestmark = pytest.mark.lab


def _answers(server: DnsServer, name: str, rdtype: str) -> list[str]:
    return sorted(r.to_text() for r in server.resolver().resolve(name, rdtype))


@pytest.mark.parametrize(
    ("name", "rdtype", "want"),
    [
        ("ok.test", "MX", ["10 mx.ok.test.", "20 mx2.ok.test."]),
        ("mx.ok.test", "A", ["127.0.0.2"]),
        ("dual.ok.test", "A", ["127.0.0.1"]),
        ("dual.ok.test", "AAAA", ["::1"]),
        ("nullmx.test", "MX", ["0 ."]),
        ("cname.test", "MX", ["10 alias.cname.test."]),
        ("alias.cname.test", "CNAME", ["mx.ok.test."]),
        ("noaddr.test", "MX", ["10 mx.noaddr.test."]),
        ("ok.test", "TXT", ['"v=spf1 ip4:127.0.0.0/8 -all"']),
        ("_dmarc.ok.test", "TXT", ['"v=DMARC1; p=reject; rua=mailto:dmarc@ok.test"']),
        ("_mta-sts.ok.test", "TXT", ['"v=STSv1; id=20260101T000000"']),
        ("_smtp._tls.ok.test", "TXT", ['"v=TLSRPTv1; rua=mailto:tlsrpt@ok.test"']),
        ("_25._tcp.mx.ok.test", "TLSA", [f"3 1 1 {TLSA_DATA[6:]}"]),
        ("2.0.0.127.in-addr.arpa", "PTR", ["mx.ok.test."]),
        ("25.0.0.127.in-addr.arpa", "PTR", ["fcrdns.test."]),
        ("fcrdns.test", "A", ["127.0.0.25"]),
        ("26.0.0.127.in-addr.arpa", "PTR", ["mismatch.test."]),
        ("mismatch.test", "A", ["127.0.0.27"]),
    ],
)
def test_dns_server_records(dns_server: DnsServer, name: str, rdtype: str, want: list[str]) -> None:
    assert _answers(dns_server, name, rdtype) == want


@pytest.mark.parametrize(
    ("name", "rdtype", "rcode"),
    [
        ("servfail.test", "MX", dns.rcode.SERVFAIL),
        ("mx.servfail.test", "A", dns.rcode.SERVFAIL),
        ("nxdomain.test", "MX", dns.rcode.NXDOMAIN),
        ("mx.noaddr.test", "A", dns.rcode.NXDOMAIN),
        ("mx.nodata.test", "A", dns.rcode.NOERROR),  # NODATA: the name exists, no address
        ("example.com", "A", dns.rcode.REFUSED),  # no upstream: nothing outside the zone is forwarded
    ],
)
def test_dns_server_failures(dns_server: DnsServer, name: str, rdtype: str, rcode: dns.rcode.Rcode) -> None:
    q = dns.message.make_query(name, rdtype)
    r = dns.query.udp(q, "127.0.0.1", port=dns_server.port, timeout=3)
    assert r.rcode() == rcode
    assert r.answer == []


def test_servfail_is_fast(dns_server: DnsServer) -> None:
    with pytest.raises(dns.resolver.NoNameservers):
        dns_server.resolver(timeout=2).resolve("mx.servfail.test", "A")
    assert any("mx.servfail.test" in q for q in dns_server.queries())


@pytest.fixture(scope="module")
def dns_attempts(dns_lab: DnsLab) -> dict[str, list[Delivery]]:
    pf = dns_lab.postfix

    def send(s: DnsScenario) -> list[Delivery]:
        inj = pf.inject(SENDER, [f"user@{s.domain}"], subject=s.domain)
        return pf.wait_first_attempt(inj, timeout=30)

    with ThreadPoolExecutor(8) as pool:
        return dict(zip((s.domain for s in DNS_SCENARIOS), pool.map(send, DNS_SCENARIOS)))


@pytest.mark.parametrize("s", DNS_SCENARIOS, ids=lambda s: s.domain)
def test_postfix_in_the_namespace_resolves_for_real(
    s: DnsScenario, dns_attempts: dict[str, list[Delivery]], dns_lab: DnsLab
) -> None:
    (d,) = dns_attempts[s.domain]
    assert (d.status, d.dsn, d.relay) == (s.status, s.dsn, s.relay), d.line
    assert re.search(s.reason, d.reason), d.line
    log = dns_lab.postfix.log_lines()
    for c in s.companions:
        assert any(re.search(c, ln) for ln in log), c
    queued = dns_lab.postfix.queued(d.queue_id)
    if s.status == "deferred":
        assert queued is not None
        assert queued["recipients"][0]["delay_reason"] == d.reason
    else:
        assert queued is None


def test_namespace_queries_went_to_its_dnsmasq(dns_attempts: dict[str, list[Delivery]], dns_lab: DnsLab) -> None:
    assert dns_lab.ns.dnsmasq is not None
    queries = dns_lab.ns.dnsmasq.queries()
    assert "query[MX] servfail.test from 127.0.0.1" in queries
    assert "query[MX] ok.test from 127.0.0.1" in queries
    assert dns_lab.ns.query("mx.servfail.test", "AAAA") == ("SERVFAIL", 0)


def test_dns_lab_is_isolated(dns_lab: DnsLab) -> None:
    assert dns_lab.postfix.loopback_violations() == []
    assert dns_lab.ns.query("example.com", "A") == ("REFUSED", 0)
