"""DNS checks against real DNS servers on loopback: the lab's dnsmasq zone for every mail-DNS
case, a small authoritative server of ours for DNSBL answers and for hostile behaviour, and
the mail host's own view through SSH (DNS over TCP through a direct-tcpip channel)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from checks import dns as d
from checks.model import Severity
from diagnose.cli import main
from tests.lab.authdns import AuthDns

pytestmark = pytest.mark.lab


@pytest.fixture
def r(dns_server):  # noqa: ANN001
    return d.make_resolver(["127.0.0.1"], port=dns_server.port, timeout=3)


def causes(results) -> set:  # noqa: ANN001
    return {f.cause_id for f in d.to_findings(results) if f.severity >= Severity.PROBLEM}


@pytest.mark.parametrize(
    "name, rdtype, status",
    [("ok.test", "MX", "ok"), ("nxdomain.test", "A", "nxdomain"), ("mx.nodata.test", "A", "nodata"),
     ("servfail.test", "A", "servfail"), ("mx.ok.test", "A", "ok")],
)
def test_lookup_statuses_are_told_apart(r, name: str, rdtype: str, status: str) -> None:  # noqa: ANN001
    ans = d.lookup(r, name, rdtype)
    assert ans.status == status and ans.latency >= 0


def test_mx_in_preference_order(r) -> None:  # noqa: ANN001
    res = d.mx_check(r, "ok.test")
    assert [(h.preference, h.exchange) for h in res.hosts] == [(10, "mx.ok.test"), (20, "mx2.ok.test")]
    assert causes(res) == set()


@pytest.mark.parametrize(
    "domain, cause",
    [("nullmx.test", "E13"), ("noaddr.test", "E13"), ("nodata.test", "E13"), ("mxservfail.test", "E12")],
)
def test_mx_problems(r, domain: str, cause: str) -> None:  # noqa: ANN001
    assert cause in causes(d.mx_check(r, domain))


def test_mx_that_is_a_cname_is_a_warning(r) -> None:  # noqa: ANN001
    fs = d.to_findings(d.mx_check(r, "cname.test"))
    assert any(f.severity == Severity.WARNING and "CNAME" in f.summary for f in fs)


def test_fcrdns(r) -> None:  # noqa: ANN001
    assert d.fcrdns(r, "127.0.0.25").confirmed_names == ("fcrdns.test",)
    assert causes(d.fcrdns(r, "127.0.0.26")) == {"E24"}


def test_spf_dmarc_mta_sts_tlsa(r) -> None:  # noqa: ANN001
    spf = d.spf_check(r, "ok.test")
    assert spf.record == "v=spf1 ip4:127.0.0.0/8 -all" and spf.lookups == 0 and not spf.errors
    assert d.dmarc_check(r, "ok.test").tags.get("p") == "reject"
    assert d.mta_sts_txt(r, "ok.test").id == "20260101T000000"
    tlsa = d.tlsa_check(r, "mx.ok.test")
    assert tlsa.answer.ok and tlsa.answer.records[0].startswith("3 1 1 ")
    # dnsmasq here does not validate: Postfix would not use these records for DANE
    assert not tlsa.answer.authenticated
    assert any(f.severity == Severity.WARNING and "NOT DNSSEC-validated" in f.summary for f in d.to_findings(tlsa))


def test_tlsa_from_a_validating_resolver_is_usable() -> None:
    srv = AuthDns({("_25._tcp.mx.sec.test", "TLSA"): ["3 1 1 " + "ab" * 32]}, ad=True)
    try:
        tlsa = d.tlsa_check(d.make_resolver(["127.0.0.1"], port=srv.port), "mx.sec.test")
        assert tlsa.answer.authenticated
        assert [f.severity for f in d.to_findings(tlsa)] == [Severity.OK]
    finally:
        srv.close()


@pytest.fixture
def bl() -> Iterator[AuthDns]:
    srv = AuthDns({
        ("2.0.0.127.bl.test", "A"): ["127.0.0.2"], ("2.0.0.127.bl.test", "TXT"): ['"listed: spam trap hits"'],
        ("2.0.0.127.refused.test", "A"): ["127.255.255.254"],  # Spamhaus: query via a public resolver
    })  # fmt: skip
    yield srv
    srv.close()


def test_dnsbl_listed_vs_zone_error_vs_clean(bl: AuthDns) -> None:
    res = d.dnsbl_check(d.make_resolver(["127.0.0.1"], port=bl.port), "127.0.0.2", ["bl.test", "refused.test", "clean.test"])
    by_zone = {z.zone: z.status for z in res.zones}
    assert by_zone["bl.test"] == d.LISTED and by_zone["clean.test"] == d.NOT_LISTED
    assert by_zone["refused.test"] not in (d.LISTED, d.NOT_LISTED), "a zone's error code is not a listing"
    assert res.listed == ("bl.test",)


@pytest.mark.parametrize("mode, statuses", [("silent", {"timeout"}), ("garbage", {"timeout", "error"}),
                                            ("wrong-id", {"timeout", "error"})])
def test_hostile_servers_end_within_budget(mode: str, statuses: set) -> None:
    srv = AuthDns({("x.test", "A"): ["127.0.0.9"]}, mode=mode)
    try:
        t0 = time.monotonic()
        ans = d.lookup(d.make_resolver(["127.0.0.1"], port=srv.port, timeout=2), "x.test", "A")
        assert time.monotonic() - t0 < 4 and ans.status in statuses, ans
    finally:
        srv.close()


def test_truncated_udp_falls_back_to_tcp() -> None:
    srv = AuthDns({("big.test", "A"): ["127.0.0.9"]}, mode="truncated")
    try:
        ans = d.lookup(d.make_resolver(["127.0.0.1"], port=srv.port, timeout=3), "big.test", "A")
        assert ans.status == "ok" and ans.records == ("127.0.0.9",)
    finally:
        srv.close()


def test_mail_host_view_over_ssh(dns_server, ssh: dict, r) -> None:  # noqa: ANN001
    from checks.targets.ssh import SSHTarget

    with SSHTarget.open("mx1", ssh_config=ssh["config"], known_hosts=ssh["known_hosts"]) as t:
        remote, described = d.resolver_for(t, f"127.0.0.1:{dns_server.port}")
        assert "asked from ssh:mx1" in described
        # (not servfail.test: the lab's dnsmasq forwards it to a UDP-only responder, and over
        # TCP dnsmasq then closes the connection instead of answering SERVFAIL)
        for name, rdtype in (("ok.test", "MX"), ("nxdomain.test", "A"), ("mx.nodata.test", "A"), ("mx.ok.test", "A")):
            a, b = d.lookup(remote, name, rdtype), d.lookup(r, name, rdtype)
            assert (a.status, sorted(a.records)) == (b.status, sorted(b.records)), (name, a, b)
        assert causes(d.mx_check(remote, "nullmx.test")) == {"E13"}


def test_dns_command(dns_server, capsys) -> None:  # noqa: ANN001
    rc = main(["dns", "nullmx.test", "--resolver", f"127.0.0.1:{dns_server.port}", "--format", "json"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 4 and doc["schema"] == "pfdiag.dns/1" and doc["problem"]
    assert any(f["cause_id"] == "E13" for f in doc["findings"])
    rc = main(["dns", "ok.test", "--resolver", f"127.0.0.1:{dns_server.port}", "--format", "json", "--no-compare"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0 and any(f["check"] == "dns.tlsa" for f in doc["findings"])
    rc = main(["dns", "127.0.0.26", "--resolver", f"127.0.0.1:{dns_server.port}", "--no-dnsbl", "--format", "json"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 4 and any(f["cause_id"] == "E24" for f in doc["findings"])


def test_dns_command_over_ssh(dns_server, ssh: dict, capsys) -> None:  # noqa: ANN001
    rc = main(["dns", "ok.test", "--host", "mx1", "--ssh-config", ssh["config"], "--known-hosts", ssh["known_hosts"],
               "--resolver", f"127.0.0.1:{dns_server.port}", "--format", "json"])  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0 and doc["where"] == "ssh:mx1"
    assert all(e["where"] == "ssh:mx1" for f in doc["findings"] for e in f["evidence"])


def test_spf_counts_lookups_through_includes() -> None:
    recs = {("big.test", "TXT"): ['"v=spf1 ' + " ".join(f"include:i{n}.test" for n in range(6)) + ' -all"']}
    for n in range(6):
        recs[(f"i{n}.test", "TXT")] = ['"v=spf1 a mx -all"']  # 2 more lookups each
    recs[("bad.test", "TXT")] = ['"v=spf1 ip4:300.1.1.1 -all"']
    srv = AuthDns(recs)
    try:
        res = d.make_resolver(["127.0.0.1"], port=srv.port, timeout=3)
        big = d.spf_check(res, "big.test")
        assert big.lookups > d.SPF_LOOKUP_LIMIT  # counting stops once the limit is passed (RFC 7208 4.6.4)
        assert any(f.severity >= Severity.WARNING for f in d.to_findings(big))
        assert d.spf_check(res, "bad.test").errors, "an invalid ip4 is a permerror"
    finally:
        srv.close()


@pytest.mark.parametrize("domain", ["servfail.test", "mxservfail.test"])
def test_report_confirms_a_dns_deferral_by_asking_again(domain: str, dns_lab, dns_server, capsys) -> None:  # noqa: ANN001
    """A Postfix in the lab's DNS namespace defers for a SERVFAIL; pfdiag report names E12 and
    its DNS check asks the same zone again (the same dnsmasq zone, on loopback) and confirms it."""
    pf = dns_lab.postfix
    since = pf.fresh_window([("lab@sender.test", [f"user@{domain}"], {"subject": domain})], clear=False, timeout=30)
    rc = main(["report", "-f", "json", "-c", str(pf.config_dir), "--log", str(pf.log_path), "--since", since,
               "--domain", domain, "--resolver", f"127.0.0.1:{dns_server.port}", "--budget", "30"])  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    top = doc["causes"][0]
    assert rc == 4 and top["id"] == "E12", [(c["id"], c["domains"]) for c in doc["causes"]]
    confirm = [f for f in doc["findings"] if f["check"] == "dns.destinations" and f["cause_id"] == "E12"]
    assert confirm, doc["findings"]
    assert any("dns.destinations" in e["source"] for e in top["evidence"]), "the confirmation is shown as evidence"


def test_mta_sts_policy_fetched_over_https(tmp_path) -> None:  # noqa: ANN001
    """A real HTTPS server on loopback serves the policy for mta-sts.sts.test (its certificate made
    here and trusted explicitly); DNS from our server. enforce + an MX outside the policy's mx list
    is a problem; a wrong certificate name makes the policy unreachable, as for a real sender."""
    import datetime as dtm
    import http.server
    import ssl
    import threading

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from checks.targets import LocalTarget

    def cert_for(name: str) -> str:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dtm.datetime.now(dtm.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - dtm.timedelta(days=1))
                .not_valid_after(now + dtm.timedelta(days=30))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
                .sign(key, hashes.SHA256()))  # fmt: skip
        path = tmp_path / f"{name}.pem"
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        return str(path)

    policy = b"version: STSv1\r\nmode: enforce\r\nmx: mx.sts.test\r\nmax_age: 86400\r\n"

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            ok = self.path == "/.well-known/mta-sts.txt"
            self.send_response(200 if ok else 404)
            self.send_header("Content-Length", str(len(policy) if ok else 0))
            self.end_headers()
            if ok:
                self.wfile.write(policy)

        def log_message(self, *a: object) -> None:
            pass

    def serve(pem: str) -> http.server.HTTPServer:
        httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pem)
        httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        return httpd

    good = cert_for("mta-sts.sts.test")
    dns_srv = AuthDns({("mta-sts.sts.test", "A"): ["127.0.0.1"], ("_mta-sts.sts.test", "TXT"): ['"v=STSv1; id=1"']})
    httpd = serve(good)
    try:
        r = d.make_resolver(["127.0.0.1"], port=dns_srv.port)
        pol = d.mta_sts_policy(LocalTarget(), r, "sts.test", port=httpd.server_address[1], cafile=good)
        assert (pol.status, pol.mode, pol.mx) == ("ok", "enforce", ("mx.sts.test",))
        assert [f.severity for f in pol.findings(["mx.sts.test"])] == [Severity.OK]
        bad = pol.findings(["mx.other.test"])
        assert bad[0].severity == Severity.PROBLEM and "not in its mx" in bad[0].summary
        wrong = d.mta_sts_policy(LocalTarget(), r, "sts.test", port=httpd.server_address[1], cafile=cert_for("elsewhere.test"))
        assert wrong.status == "unreachable" and "certificate" in wrong.detail
    finally:
        httpd.shutdown()
        dns_srv.close()


def test_spf_redirect_and_void_lookups() -> None:
    srv = AuthDns({
        ("red.test", "TXT"): ['"v=spf1 redirect=base.test"'],
        ("base.test", "TXT"): ['"v=spf1 a mx include:inc.test ?all"'], ("inc.test", "TXT"): ['"v=spf1 ip4:192.0.2.0/24 -all"'],
        ("void.test", "TXT"): ['"v=spf1 include:gone1.test include:gone2.test include:gone3.test -all"'],
    })  # fmt: skip
    try:
        res = d.make_resolver(["127.0.0.1"], port=srv.port, timeout=3)
        red = d.spf_check(res, "red.test")
        assert red.lookups == 4 and not red.errors, red.chain  # redirect + a + mx + include, followed recursively
        assert [f.severity for f in d.to_findings(red)] == [Severity.OK]
        void = d.spf_check(res, "void.test")
        assert len(void.void_lookups) == 3
        assert any("void lookups" in f.summary and f.severity == Severity.PROBLEM for f in d.to_findings(void))
    finally:
        srv.close()


def test_resolver_health_differences(dns_server, r, tmp_path) -> None:  # noqa: ANN001
    other = AuthDns({("ok.test", "MX"): ["10 elsewhere.test."]})  # a resolver with other answers
    silent = AuthDns(mode="silent")
    try:
        cmp = d.compare_resolvers(r, d.make_resolver(["127.0.0.1"], port=other.port), [("ok.test", "MX"), "mx.ok.test"])
        assert cmp.differs and all(f.severity == Severity.WARNING for f in d.to_findings(cmp))
        cmp = d.compare_resolvers(r, d.make_resolver(["127.0.0.1"], port=silent.port, timeout=1), [("ok.test", "MX")])
        [f] = d.to_findings(cmp)
        assert (f.severity, f.cause_id) == (Severity.PROBLEM, "E12") and "timeout" in f.summary
        assert not d.compare_resolvers(r, r, [("ok.test", "MX")]).differs
    finally:
        other.close()
        silent.close()
    # the chroot copy is read from the queue directory; a stale copy lists other servers
    from checks.targets import LocalTarget

    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "resolv.conf").write_text("nameserver 192.0.2.53\n")
    chroot, described = d.resolver_for(LocalTarget(), "chroot", str(tmp_path))
    assert chroot.nameservers == ["192.0.2.53"] and str(tmp_path / "etc" / "resolv.conf") in described
    f = d.server_drift(r, chroot, "/etc/resolv.conf", "chroot")
    assert (f.severity, f.cause_id) == (Severity.WARNING, "E12")
    assert d.server_drift(chroot, chroot, "a", "b").severity == Severity.OK
    with pytest.raises(Exception, match="cannot read"):
        d.resolver_for(LocalTarget(), "chroot", str(tmp_path / "missing"))


def test_truncated_without_tcp_is_a_clear_failure() -> None:
    srv = AuthDns({("big.test", "A"): ["127.0.0.9"]}, mode="truncated-no-tcp")
    try:
        t0 = time.monotonic()
        ans = d.lookup(d.make_resolver(["127.0.0.1"], port=srv.port, timeout=2), "big.test", "A")
        assert time.monotonic() - t0 < 4 and ans.temporary and not ans.records, ans
        [f] = d.to_findings(ans)
        assert (f.severity, f.cause_id) == (Severity.PROBLEM, "E12")
    finally:
        srv.close()
