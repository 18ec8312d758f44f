"""pfdiag probe against STARTTLS peers that serve a CA-issued chain (leaf + issuing CA) made
here: the certificate names Postfix checks (match= of a policy entry, the main.cf defaults)
and DANE-TA (TLSA usage 2) matched against the issuer. Postfix configurations are real
main.cf files read with postconf -c (never started); names resolve through a DNS server on
loopback (tests/lab/authdns.py)."""

from __future__ import annotations

import datetime as dt
import json
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from diagnose.cli import main
from tests.lab.authdns import AuthDns
from tests.peers import SmtpPeer

pytestmark = pytest.mark.lab


@dataclass
class Chain:
    leaf: x509.Certificate
    ca: x509.Certificate
    pem: Path  # leaf, CA, then the leaf's key: what the peer serves


def make_chain(tmp_path: Path, sans: tuple[str, ...], ca_cn: str = "pfdiag Test CA") -> Chain:
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_cn)])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
          .not_valid_after(now + dt.timedelta(days=60))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, sans[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=False)
            .sign(ca_key, hashes.SHA256()))  # fmt: skip
    pem = tmp_path / f"chain-{sans[0]}.pem"
    pem.write_bytes(leaf.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM)
                    + key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))  # fmt: skip
    return Chain(leaf, ca, pem)


def chain_peer(chain: Chain) -> SmtpPeer:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(chain.pem))  # the leaf first, then the CA: both are sent
    return SmtpPeer(tls_context=ctx, lifetime=120).start()


def relay_conf(tmp_path: Path, host: str, port: int, *lines: str, policy: str = "") -> str:
    """main.cf whose relayhost is [host]:port (+ a texthash TLS policy table when given)."""
    conf = tmp_path / "postfix"
    conf.mkdir(exist_ok=True)
    extra = list(lines)
    if policy:
        (conf / "tls_policy").write_text(policy + "\n")
        extra.append(f"smtp_tls_policy_maps = texthash:{conf / 'tls_policy'}")
    (conf / "main.cf").write_text("\n".join(["compatibility_level = 3.6", f"relayhost = [{host}]:{port}", *extra]) + "\n")
    return str(conf)


def probe(conf: str, dns: AuthDns, capsys, *extra: str) -> tuple[int, dict]:  # noqa: ANN001
    rc = main(["probe", "match.test", "-c", conf, "--format", "json", "--budget", "20",
               "--resolver", f"127.0.0.1:{dns.port}", *extra])  # fmt: skip
    return rc, json.loads(capsys.readouterr().out)


@pytest.fixture
def dns() -> Iterator[AuthDns]:
    srv = AuthDns({("mail.match.test", "A"): ["127.0.0.1"]})
    yield srv
    srv.close()


# --- certificate names (match=) -----------------------------------------------------------


@pytest.mark.parametrize(
    "level, policy_match, sans, names, matched",
    [
        # secure default: nexthop, dot-nexthop = mail.match.test and its subdomains
        ("secure", "", ("mx9.match.test",), ["mail.match.test", ".mail.match.test"], None),
        # the policy entry's match= widens it to the whole domain
        ("secure", ".match.test", ("mx9.match.test",), [".match.test"], ".match.test"),
        # verify default: hostname (bracketed: the nexthop itself)
        ("verify", "", ("mail.match.test",), ["mail.match.test"], "mail.match.test"),
        # match= with a literal name and a keyword, ":"-separated
        ("verify", "other.test:nexthop", ("other.test",), ["other.test", "mail.match.test"], "other.test"),
    ],
)
def test_names_checked_follow_the_policy(level: str, policy_match: str, sans: tuple[str, ...], names: list[str],
                                         matched: str | None, tmp_path: Path, dns: AuthDns, capsys) -> None:  # noqa: ANN001  # fmt: skip
    chain = make_chain(tmp_path, sans)
    peer = chain_peer(chain)
    try:
        policy = f"[mail.match.test]:{peer.port} {level}" + (f" match={policy_match}" if policy_match else "")
        rc, doc = probe(relay_conf(tmp_path, "mail.match.test", peer.port, policy=policy), dns, capsys)
    finally:
        peer.stop()
    t = doc["tls"]
    assert t["policy"]["level"] == level and t["policy"]["match"] == policy_match
    n = t["name_check"]
    assert n["names"] == names and (n["nexthop"], n["hostname"]) == ("mail.match.test", "mail.match.test")
    assert n["source"] == (f"match={policy_match} of the policy entry" if policy_match
                           else f"smtp_tls_{level}_cert_match = {'hostname' if level == 'verify' else 'nexthop, dot-nexthop'} (default)")  # fmt: skip
    assert t["certificate"]["names_checked"] == names and t["certificate"]["name_match"] == matched
    # our test CA is in no system store: Postfix refuses either way, and says why
    assert t["postfix_would_deliver"] is False and rc == 4 and "not signed by a CA this system trusts" in t["why"]
    assert ("no name matches" in t["why"]) is (matched is None)


def test_main_cf_cert_match_setting_is_used(tmp_path: Path, dns: AuthDns, capsys) -> None:  # noqa: ANN001
    chain = make_chain(tmp_path, ("relay.elsewhere.test",))
    peer = chain_peer(chain)
    try:
        conf = relay_conf(tmp_path, "mail.match.test", peer.port, "smtp_tls_security_level = secure",
                          "smtp_tls_secure_cert_match = nexthop, relay.elsewhere.test")  # fmt: skip
        rc, doc = probe(conf, dns, capsys)
    finally:
        peer.stop()
    n = doc["tls"]["name_check"]
    assert n["source"] == "smtp_tls_secure_cert_match = nexthop, relay.elsewhere.test"
    assert n["names"] == ["mail.match.test", "relay.elsewhere.test"]
    assert doc["tls"]["certificate"]["name_match"] == "relay.elsewhere.test"


# --- DANE-TA (usage 2) ----------------------------------------------------------------------


def _spki_sha256(cert: x509.Certificate) -> str:
    import hashlib

    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


@pytest.mark.parametrize(
    "ta, leaf_name, state, deliver, words",
    [
        ("ours", "mail.match.test", "match", True, "DANE-TA: the issuer matches TLSA"),
        ("other", "mail.match.test", "no-match", False, "no TLSA record matches"),
        ("ours", "wrong.match.test", "match", False, "no name matches"),  # a TA vouches for the CA, not for any name
    ],
)
def test_dane_ta_against_the_chain_the_peer_sends(ta: str, leaf_name: str, state: str, deliver: bool, words: str,
                                                  tmp_path: Path, capsys) -> None:  # noqa: ANN001  # fmt: skip
    chain = make_chain(tmp_path, (leaf_name,))
    ca = chain.ca if ta == "ours" else make_chain(tmp_path, ("unrelated.test",), "Unrelated CA").ca
    peer = chain_peer(chain)
    record = f"2 1 1 {_spki_sha256(ca)}"
    srv = AuthDns({("mail.match.test", "A"): ["127.0.0.1"], (f"_{peer.port}._tcp.mail.match.test", "TLSA"): [record]}, ad=True)
    try:
        conf = relay_conf(tmp_path, "mail.match.test", peer.port, "smtp_tls_security_level = dane",
                          "smtp_dns_support_level = dnssec")  # fmt: skip
        rc, doc = probe(conf, srv, capsys)
        text_rc = main(["probe", "match.test", "-c", conf, "--budget", "20", "--resolver", f"127.0.0.1:{srv.port}"])
        text = capsys.readouterr().out
    finally:
        srv.close()
        peer.stop()
    t = doc["tls"]
    assert [c["subject"] for c in t["chain"]] == [f"CN={leaf_name}", f"CN={chain.ca.subject.rfc4514_string()[3:]}"]
    d = t["dane"]
    assert d["records"] == [record] and d["dnssec"] is True and d["state"] == state
    assert t["postfix_would_deliver"] is deliver and words in t["why"], t["why"]
    assert rc == text_rc == (0 if deliver else 4)
    assert "chain sent: CN=" in text and f"DANE: {state}" in text
    if not deliver:
        assert t["cause_id"] == "E19"


def test_quick_probe_reads_the_tls_policy_with_the_source_settings(tmp_path: Path, dns: AuthDns, capsys) -> None:  # noqa: ANN001
    """--timeouts short --helo: one postconf -x and one postconf -P serve the source address and the
    TLS policy alike; the policy table, a master.cf -o override and match= still count."""
    chain = make_chain(tmp_path, ("mx9.match.test",))
    peer = chain_peer(chain)
    try:
        conf = relay_conf(tmp_path, "mail.match.test", peer.port, "smtp_tls_security_level = may",
                          "smtp_tls_secure_cert_match = nexthop", "smtp_bind_address = 127.0.0.7",
                          policy=f"[mail.match.test]:{peer.port} secure match=.match.test")  # fmt: skip
        (Path(conf) / "master.cf").write_text("smtp unix - - n - - smtp\n  -o tls_wildcard_matches_multiple_labels=no\n")
        rc, doc = probe(conf, dns, capsys, "--timeouts", "short", "--helo", "quick.test")
    finally:
        peer.stop()
    t = doc["tls"]
    assert doc["bind"]["local_address"].startswith("127.0.0.7:")
    assert t["policy"]["level"] == "secure" and t["policy"]["source"].startswith("smtp_tls_policy_maps texthash:")
    assert t["name_check"]["names"] == [".match.test"] and t["certificate"]["name_match"] == ".match.test"
    assert rc == 4 and "not signed by a CA this system trusts" in t["why"]


def test_the_chain_check_binds_like_the_probe(tmp_path: Path, dns: AuthDns, capsys) -> None:  # noqa: ANN001
    """At verify the probe makes a second handshake to check the chain against the CA store:
    it leaves from Postfix's source address too (smtp_bind_address), like the first."""
    from tests.peers import SourceRecordingPeer

    chain = make_chain(tmp_path, ("mail.match.test",))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(chain.pem))
    with SourceRecordingPeer(tls_context=ctx, lifetime=60) as peer:
        conf = relay_conf(tmp_path, "mail.match.test", peer.port, "smtp_tls_security_level = verify",
                          "smtp_bind_address = 127.0.0.2")  # fmt: skip
        (Path(conf) / "master.cf").write_text("smtp unix - - n - - smtp\n")  # postconf -P reads it
        rc, doc = probe(conf, dns, capsys)
        assert doc["tls"]["trusted"] is False  # our test CA is not in the system store: the second handshake ran
        assert len(peer.sources) == 2 and set(peer.sources) == {"127.0.0.2"}, peer.sources
