"""pfdiag probe's TLS verdicts against live lab peers with certificates made here: an expired
certificate and a wrong name under a verify policy, and DANE with TLSA records served by a real
DNS server on loopback (tests/lab/authdns.py), validated (AD) or not."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import ssl
from pathlib import Path
from typing import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from diagnose.cli import main
from tests.lab.authdns import AuthDns
from tests.lab.postfix import PostfixLab
from tests.peers import SmtpPeer

pytestmark = pytest.mark.lab


def tls_peer(tmp_path: Path, name: str, days: tuple[int, int] = (-1, 30)) -> tuple[SmtpPeer, bytes]:
    """A STARTTLS peer with a self-signed certificate for `name`; returns it and the SPKI (DER)."""
    now = dt.datetime.now(dt.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now + dt.timedelta(days=days[0]))
            .not_valid_after(now + dt.timedelta(days=days[1]))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(key, hashes.SHA256()))  # fmt: skip
    pem = tmp_path / f"{name}.pem"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(pem))
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return SmtpPeer(tls_context=ctx, lifetime=120).start(), spki


def probe(domain: str, lab: PostfixLab, capsys, *extra: str) -> tuple[int, dict]:  # noqa: ANN001
    rc = main(["probe", domain, "-c", str(lab.config_dir), "--format", "json", "--budget", "20", *extra])
    return rc, json.loads(capsys.readouterr().out)["tls"]


@pytest.mark.parametrize("kind", ["expired", "misnamed"])
def test_verify_policy_rejects_expired_and_misnamed(kind: str, postfix_lab: PostfixLab, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    domain = f"{kind}-cert.test"
    peer, _ = tls_peer(tmp_path, "mx.elsewhere.test" if kind == "misnamed" else f"{domain}",
                       days=(-30, -2) if kind == "expired" else (-1, 30))  # fmt: skip
    try:
        postfix_lab.route(domain, peer.port, tls="verify")
        postfix_lab.apply()
        rc, t = probe(domain, postfix_lab, capsys)
    finally:
        peer.stop()
    c = t["certificate"]
    assert t["protocol"].startswith("TLSv1"), "the handshake completes even for a certificate Postfix would refuse"
    assert t["postfix_would_deliver"] is False and t["cause_id"] == "E19" and rc == 4
    if kind == "expired":
        assert c["expired"] is True and c["days_left"] < 0 and "expired" in t["why"]
    else:
        assert c["name_match"] is None and c["sans"] == ["mx.elsewhere.test"] and "no name matches" in t["why"]


@pytest.fixture
def dane_route(tmp_path: Path) -> Iterator[tuple[SmtpPeer, bytes, Path]]:
    """A Postfix configuration (read with postconf/postmap, never started: the lab guard keeps
    the running lab's next hops on [loopback], and TLSA needs a host name) whose relayhost is
    [mx.dane.test]:port at smtp_tls_security_level = dane."""
    peer, spki = tls_peer(tmp_path, "mx.dane.test")
    conf = tmp_path / "postfix"
    conf.mkdir()
    (conf / "main.cf").write_text(f"compatibility_level = 3.6\nrelayhost = [mx.dane.test]:{peer.port}\n"
                                  "smtp_tls_security_level = dane\nsmtp_dns_support_level = dnssec\n")  # fmt: skip
    yield peer, spki, conf
    peer.stop()


@pytest.mark.parametrize(
    "matching, ad, state, deliver",
    [(True, True, "match", True),  # DANE-EE 3 1 1 of this key, DNSSEC-validated
     (False, True, "no-match", False),  # validated records for another key: Postfix refuses (E19)
     (True, False, "none", True)],  # unvalidated TLSA: ignored, dane falls back to opportunistic TLS
)
def test_dane_tlsa_with_dnssec_status(matching: bool, ad: bool, state: str, deliver: bool, dane_route,
                                      capsys) -> None:  # noqa: ANN001  # fmt: skip
    peer, spki, conf = dane_route
    digest = hashlib.sha256(spki).hexdigest() if matching else "ab" * 32
    srv = AuthDns({("mx.dane.test", "A"): ["127.0.0.1"], (f"_{peer.port}._tcp.mx.dane.test", "TLSA"): [f"3 1 1 {digest}"]}, ad=ad)
    try:
        rc = main(["probe", "dane.test", "-c", str(conf), "--format", "json", "--budget", "20",
                   "--resolver", f"127.0.0.1:{srv.port}"])  # fmt: skip
        doc = json.loads(capsys.readouterr().out)
    finally:
        srv.close()
    t = doc["tls"]
    assert "relayhost" in json.dumps(doc["notes"]), "the next hop came from relayhost, resolved through our server"
    assert t["policy"]["level"] == "dane" and t["policy"]["source"].startswith("smtp_tls_security_level")
    d = t["dane"]
    assert d["tlsa_name"] == f"_{peer.port}._tcp.mx.dane.test" and d["records"] == [f"3 1 1 {digest}"]
    assert (d["dnssec"], d["state"], t["postfix_would_deliver"]) == (ad, state, deliver), t
    if not deliver:
        assert t["cause_id"] == "E19" and rc == 4
    if not ad:
        assert "not DNSSEC-validated" in d["why"]
