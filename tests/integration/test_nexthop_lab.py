"""Next hops found the way Postfix finds them, against the lab's real transport map (postmap -q
through the target), and the end-of-data test reached through it from `pfdiag report`."""

from __future__ import annotations

import json

import pytest

from checks.nexthop import _lookup_keys, first_address, resolve_nexthop, split_nexthop
from checks.targets import LocalTarget
from diagnose.cli import main
from tests.lab.postfix import PostfixLab
from tests.lab.scenarios import PeerSet

pytestmark = pytest.mark.lab


def test_transport_map_route(postfix_lab: PostfixLab, smtp_peers: PeerSet) -> None:
    hop = resolve_nexthop(LocalTarget(), "greylist.test", str(postfix_lab.config_dir))
    assert hop.transport == "smtp" and hop.source.startswith("transport_maps")
    assert [(a.addr, a.port) for a in hop.addresses] == [("127.0.0.1", smtp_peers.port("greylist"))]


def test_unrouted_reserved_domain_is_never_asked_of_dns(postfix_lab: PostfixLab) -> None:
    # not in the transport map, no relayhost: MX lookup - refused for an RFC 6761 name, no packet sent
    assert first_address(LocalTarget(), "nowhere.invalid", str(postfix_lab.config_dir)) is None


@pytest.mark.parametrize(
    "text, expected",
    [("[192.0.2.1]:2525", ("192.0.2.1", 2525, True)), ("[2001:db8::1]", ("2001:db8::1", 25, True)),
     ("mx.example.net:587", ("mx.example.net", 587, False)), ("example.net", ("example.net", 25, False))],
)
def test_split_nexthop(text: str, expected: tuple) -> None:
    assert split_nexthop(text) == expected


def test_lookup_keys_follow_transport5() -> None:
    assert _lookup_keys("a.b.example") == ["a.b.example", ".b.example", ".example", "*"]


def test_report_runs_the_size_ladder_when_asked(postfix_lab: PostfixLab, smtp_peers: PeerSet, capsys) -> None:
    """The seed problem measured: the receiver answers '.' only after 8 s (over the lab's 5 s
    smtp_data_done_timeout) at every size: a receiver slow after DATA, not the path MTU."""
    rc = main(["report", "-f", "json", "-c", str(postfix_lab.config_dir), "--log", str(postfix_lab.log_path),
               "--since", "1m", "--budget", "150", "--domain", "slow-data-late.test",
               "--answer", "symptom=eod", "--answer", "send_test=yes", "--answer", "test_to=me@slow-data-late.test"])  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    ladder = [f for f in doc["findings"] if "end-of-data test:" in f["summary"]]
    assert ladder and "slow-after-data" in ladder[0]["summary"], doc["findings"]
    assert ladder[0]["cause_id"] == "E09"
    excerpt = ladder[0]["evidence"][0]["excerpt"]
    assert excerpt.count("<pfdiag-") == 6, "every test message's Message-ID is quoted, to look for duplicates"
    assert {s["id"]: s["state"] for s in doc["steps"]}["smtp.eod_ladder"] == "ok"
    if doc["causes"]:
        top = doc["causes"][0]
        assert top["id"] == "E09" and top["underlying"][0]["id"] in ("slow-receiver", "local-timeout")
    assert rc in (0, 4, 5)


def test_probe_a_domain_goes_where_postfix_would(postfix_lab: PostfixLab, smtp_peers: PeerSet, capsys) -> None:
    rc = main(["probe", "greylist.test", "-c", str(postfix_lab.config_dir), "--format", "json", "--budget", "20"])
    doc = json.loads(capsys.readouterr().out)
    text = json.dumps(doc)
    assert "127.0.0.1" in text and str(smtp_peers.port("greylist")) in text
    assert "transport_maps" in text, "the report says how the next hop was found"
    assert rc in (0, 4)


@pytest.mark.parametrize("name, level, deliver", [("self-signed", "verify", False), ("tls-ok", "may", True)])
def test_probe_judges_tls_with_the_lab_policy(name: str, level: str, deliver: bool, postfix_lab: PostfixLab,
                                              smtp_peers: PeerSet, capsys) -> None:  # fmt: skip
    rc = main(["probe", f"{name}.test", "-c", str(postfix_lab.config_dir), "--format", "json", "--budget", "20"])
    doc = json.loads(capsys.readouterr().out)
    t = doc["tls"]
    assert t["policy"]["level"] == level and t["policy"]["source"].startswith("smtp_tls_policy_maps")
    assert t["certificate"]["self_signed"] is True and t["protocol"].startswith("TLSv1")
    assert t["postfix_would_deliver"] is deliver
    if not deliver:
        assert t["cause_id"] == "E19" and rc == 4 and "Server certificate not verified" in t["postfix_would_log"]


def test_verify_policy_checks_the_chain_against_the_ca_store(postfix_lab: PostfixLab, tmp_path, capsys) -> None:
    """A certificate issued by a private CA (not self-signed) under a verify policy: the chain
    does not verify against this system's CA store, so Postfix would not deliver (E19)."""
    import datetime as dt
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from tests.peers import SmtpPeer

    now = dt.datetime.now(dt.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pfdiag private test CA")])
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mx.ca-issued.test")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("mx.ca-issued.test")]), critical=False)
            .sign(ca_key, hashes.SHA256()))  # fmt: skip
    pem = tmp_path / "cert.pem"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(pem))
    peer = SmtpPeer(tls_context=ctx, lifetime=120).start()
    try:
        postfix_lab.route("ca-issued.test", peer.port, tls="verify")
        postfix_lab.apply()
        rc = main(["probe", "ca-issued.test", "-c", str(postfix_lab.config_dir), "--format", "json", "--budget", "20"])
        t = json.loads(capsys.readouterr().out)["tls"]
    finally:
        peer.stop()
    assert t["policy"]["level"] == "verify" and t["certificate"]["self_signed"] is False
    assert t["trusted"] is False and "certificate" in t["trust_detail"].lower(), t["trust_detail"]
    assert t["postfix_would_deliver"] is False and t["cause_id"] == "E19" and rc == 4


def test_probe_follows_mx_preference_to_every_address(dns_server, tmp_path, capsys) -> None:  # noqa: ANN001
    """A Postfix configuration with no transport map and no relayhost (a real main.cf read by the real
    postconf): mail for ok.test goes by its MX records (the lab zone: 10 mx.ok.test = 127.0.0.2,
    20 mx2.ok.test = 127.0.0.3), both tried in that order. Nothing listens on port 25 there, so both
    attempts fail, each reported."""
    import shutil

    conf = tmp_path / "postfix"
    conf.mkdir()
    (conf / "main.cf").write_text("compatibility_level = 3.6\nrelayhost =\ntransport_maps =\n"
                                  "default_transport = smtp\ninet_protocols = ipv4\n")  # fmt: skip
    shutil.copy("/etc/postfix/master.cf", conf / "master.cf")
    rc = main(["probe", "ok.test", "-c", str(conf), "--resolver", f"127.0.0.1:{dns_server.port}",
               "--timeouts", "short", "--format", "json", "--budget", "20"])  # fmt: skip
    out, err = capsys.readouterr()
    assert out, err
    doc = json.loads(out)
    assert [(a["address"], a["port"]) for a in doc["addresses"]] == [("127.0.0.2", 25), ("127.0.0.3", 25)]
    assert not any(a["ok"] for a in doc["addresses"]) and rc == 4
    assert any("MX 10 mx.ok.test" in n for n in doc["notes"]) and any("then, if that fails" in n for n in doc["notes"])
