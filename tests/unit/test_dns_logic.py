"""DNS check logic that needs no server: name validation, DNSBL code meanings, resolv.conf
and MTA-STS policy parsing, which findings a result turns into."""

from __future__ import annotations

import pytest

from checks import dns as d
from checks.errors import UsageError
from checks.model import Severity
from checks.targets import SnapshotTarget


@pytest.mark.parametrize("name", ["", "   ", "a b.test", "x" * 64 + ".test", "a..b", "a\nb.test"])
def test_invalid_names_are_usage_errors(name: str) -> None:
    with pytest.raises(UsageError):
        d._name(name)


@pytest.mark.parametrize("name, want", [("Example.COM.", "Example.COM"), ("ok.test", "ok.test")])
def test_valid_names(name: str, want: str) -> None:
    assert d._name(name) == want


@pytest.mark.parametrize("ip", ["300.1.1.1", "example.com", "", "1.2.3"])
def test_invalid_ips(ip: str) -> None:
    with pytest.raises(UsageError):
        d._ip(ip)


@pytest.mark.parametrize(
    "codes, status",
    [
        (["127.0.0.2"], d.LISTED),
        (["127.0.0.4", "127.0.0.10"], d.LISTED),
        (["127.255.255.254"], d.REFUSED),  # Spamhaus: query via a public/open resolver
        (["127.255.255.255"], d.REFUSED),  # Spamhaus: excessive number of queries
        (["127.255.255.252"], d.REFUSED),  # Spamhaus: typing error in the zone name
        (["127.0.0.2", "127.255.255.254"], d.REFUSED),  # an error code wins: the answer is not trustworthy
        (["127.0.0.1"], d.REFUSED),  # RFC 5782: 127.0.0.1 is never listed; URIBL-style "query refused"
        (["192.0.2.1"], d.ERROR),  # outside 127/8: a hijacking resolver, not a DNSBL answer
        ([], d.NOT_LISTED),
    ],
)
def test_dnsbl_code_meaning(codes: list[str], status: str) -> None:
    assert d._dnsbl_status(codes) == status


def test_resolv_conf_servers() -> None:
    text = "# c\nsearch lab\nnameserver 192.0.2.53 # first\nnameserver fe80::1%eth0\n; x\noptions timeout:1\n"
    assert d.resolv_conf_servers(text) == ["192.0.2.53", "fe80::1"]
    assert d.resolv_conf_servers("search x\n") == ["127.0.0.1"]  # libc's default


@pytest.mark.parametrize(
    "text, status, mode",
    [
        ("version: STSv1\nmode: enforce\nmx: mx.ok.test\nmx: *.ok.test\nmax_age: 86400\n", "ok", "enforce"),
        ("version: STSv1\r\nmode: testing\r\nmx: mx.ok.test\r\nmax_age: 600\r\n", "ok", "testing"),
        ("version: STSv2\nmode: enforce\n", "invalid", None),
        ("version: STSv1\nmode: strict\n", "invalid", None),
        ("<html>not found</html>", "invalid", None),
    ],
)
def test_mta_sts_policy_parsing(text: str, status: str, mode: str | None) -> None:
    pol = d.parse_mta_sts_policy("ok.test", text)
    assert (pol.status, pol.mode) == (status, mode)


def test_mta_sts_enforce_with_uncovered_mx_is_a_problem() -> None:
    pol = d.parse_mta_sts_policy("ok.test", "version: STSv1\nmode: enforce\nmx: *.ok.test\nmax_age: 60\n")
    assert pol.covers("mx.ok.test") and not pol.covers("a.b.ok.test") and not pol.covers("mx.other.test")
    [f] = pol.findings(["mx.other.test"])
    assert (f.severity, f.cause_id) == (Severity.PROBLEM, "E19")
    assert pol.findings(["mx.ok.test"])[0].severity == Severity.OK


def _ans(name: str, rdtype: str, status: str, *records: str) -> d.Answer:
    return d.Answer(name, rdtype, status, tuple(records), 0.01, "127.0.0.1")


@pytest.mark.parametrize(
    "mx, fallback, severity, cause",
    [
        (_ans("x.test", "MX", "servfail"), (), Severity.PROBLEM, "E12"),
        (_ans("x.test", "MX", "timeout"), (), Severity.PROBLEM, "E12"),
        (_ans("x.test", "MX", "nxdomain"), (), Severity.PROBLEM, "E13"),
        (_ans("x.test", "MX", "nodata"), (_ans("x.test", "A", "ok", "192.0.2.1"),), Severity.WARNING, None),
        (_ans("x.test", "MX", "nodata"), (_ans("x.test", "A", "nodata"), _ans("x.test", "AAAA", "nodata")),
         Severity.PROBLEM, "E13"),
        (_ans("x.test", "MX", "nodata"), (_ans("x.test", "A", "servfail"),), Severity.PROBLEM, "E12"),
    ],
)
def test_mx_result_findings(mx: d.Answer, fallback: tuple, severity: Severity, cause: str | None) -> None:
    [f] = d.MxResult("x.test", mx, fallback=fallback).findings()
    assert (f.severity, f.cause_id) == (severity, cause)


def test_null_mx_is_e13() -> None:
    [f] = d.MxResult("x.test", _ans("x.test", "MX", "ok", "0 ."), null_mx=True).findings()
    assert (f.severity, f.cause_id) == (Severity.PROBLEM, "E13")


@pytest.mark.parametrize(
    "a, sending, severity, cause",
    [
        (_ans("h.test", "A", "ok", "192.0.2.1"), "192.0.2.1", Severity.OK, None),
        (_ans("h.test", "A", "ok", "192.0.2.1"), "192.0.2.9", Severity.WARNING, "E24"),
        (_ans("h.test", "A", "nxdomain"), None, Severity.PROBLEM, "E24"),
        (_ans("h.test", "A", "timeout"), None, Severity.PROBLEM, "E12"),
    ],
)
def test_helo_findings(a: d.Answer, sending: str | None, severity: Severity, cause: str | None) -> None:
    aaaa = _ans("h.test", "AAAA", "nodata" if a.status != "timeout" else "timeout")
    [f] = d.HeloResult("h.test", a, aaaa, sending).findings()
    assert (f.severity, f.cause_id) == (severity, cause)


def test_default_dnsbl_zones_are_valid_names() -> None:
    assert all(d._name(z) == z for z in d.DEFAULT_DNSBL_ZONES) and "dnsbl.sorbs.net" not in d.DEFAULT_DNSBL_ZONES


def test_snapshot_has_no_live_dns() -> None:
    from diagnose.target_options import demo_path

    snap = SnapshotTarget(demo_path())
    with pytest.raises(UsageError, match="no live DNS"):
        d.resolver_for(snap, "system")
    _, described = d.resolver_for(snap, "127.0.0.1:5353")
    assert "127.0.0.1#5353" in described


@pytest.mark.parametrize("source", ["1.2.3.4:0", "1.2.3.4:99999", "dns.example:53", "300.1.1.1"])
def test_bad_resolver_sources(source: str) -> None:
    from checks.targets import LocalTarget

    with pytest.raises(UsageError):
        d.resolver_for(LocalTarget(), source)
