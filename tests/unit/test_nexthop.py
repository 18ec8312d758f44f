"""Next hops found the way Postfix's smtp client finds them, from real configuration read by the
real postconf/postmap (a config directory made here; no Postfix runs) and DNS answers from a real
server on loopback (tests/lab/authdns.py): transport_maps forms, relayhost, MX order, address
family and the address limit."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from checks.dns import make_resolver
from checks.nexthop import resolve_nexthop
from checks.targets import LocalTarget
from tests.lab.authdns import AuthDns

pytestmark = pytest.mark.skipif(shutil.which("postmap") is None, reason="Postfix's postmap is not installed")

TRANSPORT = """\
exact.test        smtp:[192.0.2.10]:2525
.parent.test      relay:gw.parent.test
parent.test       smtp:[192.0.2.11]
default-tr.test   :[192.0.2.12]
bounce.test       error:5.1.1 no such domain here
void.test         discard:silently dropped
mxonly.test       smtp:
"""


def config(tmp_path: Path, **main: str) -> str:
    d = tmp_path / "postfix"
    d.mkdir(exist_ok=True)
    lines = {"compatibility_level": "3.6", **main}
    (d / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in lines.items()))
    if "transport_maps" in main:
        (d / "transport").write_text(TRANSPORT)
        subprocess.run(["postmap", "-c", str(d), f"hash:{d}/transport"], check=True)
    return str(d)


@pytest.fixture
def dns() -> Iterator[AuthDns]:
    srv = AuthDns({
        ("mx.test", "MX"): ["20 b.mx.test.", "10 z.mx.test.", "10 a.mx.test."],
        ("a.mx.test", "A"): ["192.0.2.1", "192.0.2.2"], ("a.mx.test", "AAAA"): ["2001:db8::1"],
        ("z.mx.test", "A"): ["192.0.2.3"], ("b.mx.test", "A"): ["192.0.2.4"],
        ("gw.parent.test", "MX"): ["5 a.mx.test."],
        ("nomx.test", "A"): ["192.0.2.9"], ("mxonly.test", "MX"): ["10 a.mx.test."],
        ("relay.test", "A"): ["192.0.2.20"], ("relay.test", "MX"): ["10 b.mx.test."],
    })  # fmt: skip
    yield srv
    srv.close()


def hop(tmp_path: Path, dns: AuthDns | None, domain: str, **main: str):  # noqa: ANN201
    resolver = make_resolver(["127.0.0.1"], port=dns.port) if dns else None
    return resolve_nexthop(LocalTarget(), domain, config(tmp_path, **main), resolver)


def addrs(h) -> list[tuple[str, int]]:  # noqa: ANN001
    return [(a.addr, a.port) for a in h.addresses]


def test_transport_map_forms(tmp_path: Path, dns: AuthDns) -> None:
    tm = {"transport_maps": f"hash:{tmp_path}/postfix/transport"}
    h = hop(tmp_path, dns, "exact.test", **tm)
    assert (h.transport, addrs(h)) == ("smtp", [("192.0.2.10", 2525)])
    assert h.source.endswith("exact.test smtp:[192.0.2.10]:2525") and h.addresses[0].source == h.source
    # the bare domain key matches only itself; subdomains need the .parent form (transport(5))
    assert addrs(hop(tmp_path, dns, "parent.test", **tm)) == [("192.0.2.11", 25)]
    sub = hop(tmp_path, dns, "a.b.parent.test", **tm)
    assert sub.transport == "relay" and sub.nexthop == "gw.parent.test" and ".parent.test" in sub.source
    assert addrs(sub) == [("192.0.2.1", 25), ("192.0.2.2", 25), ("2001:db8::1", 25)], "not bracketed: its MX"
    assert [a.source for a in sub.addresses][0] == "MX 5 a.mx.test of gw.parent.test"
    # an empty transport is default_transport; error: and discard: have no SMTP next hop
    assert hop(tmp_path, dns, "default-tr.test", **tm, default_transport="smtp").transport == "smtp"
    for d in ("bounce.test", "void.test"):
        h = hop(tmp_path, dns, d, **tm)
        assert not h.deliverable_by_smtp and not h.addresses and "no SMTP next hop" in h.notes[0]
    # an empty nexthop is the recipient domain: its MX records
    assert addrs(hop(tmp_path, dns, "mxonly.test", **tm))[0] == ("192.0.2.1", 25)


def test_mx_order_is_preference_then_name(tmp_path: Path, dns: AuthDns) -> None:
    h = hop(tmp_path, dns, "mx.test", smtp_mx_address_limit="10")
    assert [a.host for a in h.addresses] == ["a.mx.test"] * 3 + ["z.mx.test", "b.mx.test"]
    assert h.addresses[3].source == "MX 10 z.mx.test of mx.test"
    assert addrs(hop(tmp_path, dns, "nomx.test")) == [("192.0.2.9", 25)], "no MX: the domain's own address"


def test_address_family_preference_and_limit(tmp_path: Path, dns: AuthDns) -> None:
    assert addrs(hop(tmp_path, dns, "mx.test", inet_protocols="ipv4", smtp_mx_address_limit="2")) == [
        ("192.0.2.1", 25), ("192.0.2.2", 25)]  # fmt: skip
    h = hop(tmp_path, dns, "mx.test", inet_protocols="all", smtp_address_preference="ipv6", smtp_mx_address_limit="2")
    assert addrs(h) == [("2001:db8::1", 25), ("192.0.2.1", 25)]
    assert any("smtp_mx_address_limit = 2" in n for n in h.notes)
    assert "2001:db8::1" not in [a.addr for a in hop(tmp_path, dns, "mx.test", inet_protocols="ipv4").addresses]


def test_relayhost_bracketed_skips_mx(tmp_path: Path, dns: AuthDns) -> None:
    h = hop(tmp_path, dns, "anything.test", relayhost="[relay.test]:587")
    assert h.transport == "relay" and h.source == "relayhost = [relay.test]:587"
    assert addrs(h) == [("192.0.2.20", 587)]
    h = hop(tmp_path, dns, "anything.test", relayhost="relay.test")
    assert addrs(h) == [("192.0.2.4", 25)] and h.addresses[0].source == "MX 10 b.mx.test of relay.test"


def test_without_a_resolver_only_literal_next_hops_resolve(tmp_path: Path) -> None:
    assert addrs(hop(tmp_path, None, "x.test", relayhost="[192.0.2.30]:2525")) == [("192.0.2.30", 2525)]
    h = hop(tmp_path, None, "x.test", relayhost="[relay.test]")
    assert not h.addresses and "not resolved" in h.notes[0]


def test_a_given_next_hop_follows_postfix_syntax(tmp_path: Path, dns: AuthDns) -> None:
    """One parser, Postfix's meaning: host:port is MX-looked-up (each MX host on that port),
    [host]:port is not, an IP is itself; a bare domain is routed like mail (relayhost here)."""
    from checks.nexthop import parse_destination, route

    resolver = make_resolver(["127.0.0.1"], port=dns.port)
    conf = config(tmp_path, relayhost="[192.0.2.99]", inet_protocols="ipv4")

    def given(text: str) -> list[tuple[str, int]]:
        return addrs(route(LocalTarget(), parse_destination(text), conf, resolver))

    assert given("mx.test:2525") == [("192.0.2.1", 2525), ("192.0.2.2", 2525), ("192.0.2.3", 2525), ("192.0.2.4", 2525)]
    assert route(LocalTarget(), parse_destination("mx.test:2525"), conf, resolver).addresses[0].source == "MX 10 a.mx.test of mx.test"
    assert given("[a.mx.test]:2525") == [("192.0.2.1", 2525), ("192.0.2.2", 2525)], "bracketed: no MX lookup"
    assert given("nomx.test:587") == [("192.0.2.9", 587)], "no MX: the host's own address"
    assert given("[192.0.2.7]:26") == [("192.0.2.7", 26)] and given("[ipv6:2001:db8::7]") == [("2001:db8::7", 25)]
    assert given("mx.test") == [("192.0.2.99", 25)], "a bare domain goes where its mail goes: the relayhost"
    assert parse_destination("mx.test:2525").port_given and parse_destination("mx.test").is_domain
