"""pfdiag dns end to end: the real command against the lab's dnsmasq and against small servers
of ours on loopback (a DNSBL that lists, one that answers with its error code, one that never
answers), in every output format, and the one-line errors for bad input."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from diagnose.cli import main
from tests.lab.authdns import AuthDns


def _json(capsys, argv: list[str]) -> tuple[int, dict]:  # noqa: ANN001
    rc = main(["dns", *argv, "--format", "json"])
    return rc, json.loads(capsys.readouterr().out)


def _by_check(doc: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for f in doc["findings"]:
        out.setdefault(f["check"], []).append(f)
    return out


@pytest.mark.lab
def test_domain_with_sending_ip_and_helo(dns_server, capsys) -> None:  # noqa: ANN001
    rc, doc = _json(capsys, ["ok.test", "--resolver", f"127.0.0.1:{dns_server.port}", "--no-compare",
                             "--sending-ip", "127.0.0.25", "--helo", "fcrdns.test", "--dnsbl-zones", "bl.test"])  # fmt: skip
    assert rc == 0 and not doc["problem"] and doc["sending_ips"] == ["127.0.0.25"]
    checks = _by_check(doc)
    assert {"dns.mx", "dns.spf", "dns.dmarc", "dns.mta_sts", "dns.tlsa", "dns.fcrdns", "dns.dnsbl", "dns.helo"} <= set(checks)
    assert checks["dns.fcrdns"][0]["severity"] == "ok" and checks["dns.helo"][0]["severity"] == "ok"
    assert checks["dns.dnsbl"][0]["severity"] == "ok"  # bl.test is NXDOMAIN in the lab zone: not listed
    mx = checks["dns.mx"][-1]
    assert mx["values"]["hosts"] == ["mx.ok.test", "mx2.ok.test"]  # preference order
    assert all(e["where"] == "local" for f in doc["findings"] for e in f["evidence"])


@pytest.mark.lab
def test_helo_that_does_not_resolve_is_e24(dns_server, capsys) -> None:  # noqa: ANN001
    rc, doc = _json(capsys, ["127.0.0.26", "--resolver", f"127.0.0.1:{dns_server.port}", "--no-dnsbl",
                             "--helo", "nohelo.test"])  # fmt: skip
    assert rc == 4
    checks = _by_check(doc)
    assert (checks["dns.helo"][0]["severity"], checks["dns.helo"][0]["cause_id"]) == ("problem", "E24")
    assert checks["dns.fcrdns"][0]["cause_id"] == "E24"  # 127.0.0.26 -> mismatch.test -> 127.0.0.27


@pytest.mark.lab
@pytest.mark.parametrize("domain, cause", [("servfail.test", "E12"), ("nxdomain.test", "E13"), ("noaddr.test", "E13"),
                                           ("nullmx.test", "E13"), ("mxservfail.test", "E12")])
def test_domain_failures_exit_4_with_the_cause(dns_server, capsys, domain: str, cause: str) -> None:  # noqa: ANN001
    rc, doc = _json(capsys, [domain, "--resolver", f"127.0.0.1:{dns_server.port}", "--no-compare"])
    assert rc == 4 and doc["problem"]
    assert cause in {f["cause_id"] for f in _by_check(doc)["dns.mx"] + _by_check(doc).get("dns.mx.address", [])}


@pytest.fixture
def dnsbl() -> Iterator[AuthDns]:
    srv = AuthDns({
        ("9.2.0.192.bl.test", "A"): ["127.0.0.2"], ("9.2.0.192.bl.test", "TXT"): ['"listed: trap hits"'],
        ("9.2.0.192.zen.test", "A"): ["127.255.255.254"],  # Spamhaus' answer to a public resolver
        ("9.2.0.192.in-addr.arpa", "PTR"): ["out.sender.test."], ("out.sender.test", "A"): ["192.0.2.9"],
    })  # fmt: skip
    yield srv
    srv.close()


def test_ip_listed_vs_zone_error(dnsbl: AuthDns, capsys) -> None:  # noqa: ANN001
    rc, doc = _json(capsys, ["192.0.2.9", "--resolver", f"127.0.0.1:{dnsbl.port}",
                             "--dnsbl-zones", "bl.test,zen.test,clean.test"])  # fmt: skip
    assert rc == 4 and doc["kind"] == "ip"
    by_zone = {f["values"]["zone"]: f for f in _by_check(doc)["dns.dnsbl"]}
    assert (by_zone["bl.test"]["severity"], by_zone["bl.test"]["cause_id"]) == ("problem", "E23")
    assert "trap hits" in by_zone["bl.test"]["summary"]
    assert by_zone["zen.test"]["severity"] == "warning" and by_zone["zen.test"]["cause_id"] is None
    assert by_zone["clean.test"]["severity"] == "ok"
    assert _by_check(doc)["dns.fcrdns"][0]["severity"] == "ok"


def test_silent_server_ends_within_the_budget(capsys) -> None:  # noqa: ANN001
    srv = AuthDns(mode="silent")
    try:
        t0 = time.monotonic()
        rc, doc = _json(capsys, ["quiet.test", "--resolver", f"127.0.0.1:{srv.port}", "--no-compare", "--budget", "3"])
        took = time.monotonic() - t0
    finally:
        srv.close()
    assert rc == 4 and took < 6, took  # timing on a shared 2-core machine: generous margin
    assert "E12" in {f["cause_id"] for f in doc["findings"]}


def test_text_and_markdown(dnsbl: AuthDns, capsys) -> None:  # noqa: ANN001
    argv = ["192.0.2.9", "--resolver", f"127.0.0.1:{dnsbl.port}", "--dnsbl-zones", "bl.test"]
    assert main(["dns", *argv]) == 4
    text = capsys.readouterr().out
    assert text.startswith("DNS of 192.0.2.9 via 127.0.0.1#") and "FAIL" in text and "[E23]" in text
    assert main(["dns", *argv, "--format", "md"]) == 4
    md = capsys.readouterr().out
    assert md.startswith("# DNS of 192.0.2.9") and "\n- FAIL" in md


@pytest.mark.parametrize(
    "argv, message",
    [
        (["bad name.test"], "invalid DNS name"),
        (["a..test"], "invalid DNS name"),
        (["ok.test", "--resolver", "nowhere:53"], "--resolver"),
        (["ok.test", "--resolver", "127.0.0.1:70000"], "--resolver"),
        (["ok.test", "--sending-ip", "1.2.3"], "--sending-ip"),
        (["ok.test", "--budget", "0"], "--budget"),
        (["ok.test", "--demo"], "no live DNS"),
    ],
)
def test_bad_input_is_one_line(capsys, argv: list[str], message: str) -> None:  # noqa: ANN001
    rc = main(["dns", *argv])
    err = capsys.readouterr().err
    assert rc in (1, 2) and message in err and "Traceback" not in err
    last = err.strip().splitlines()[-1]  # (--demo first says which target it uses)
    assert last.startswith("pfdiag: ") and message in last
