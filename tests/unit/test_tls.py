"""Certificates judged the way Postfix would: real certificates made here with `cryptography`."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from checks import tls

NOW = dt.datetime(2026, 11, 28, tzinfo=dt.timezone.utc)


def make_cert(cn: str, sans: tuple[str, ...] = (), days: tuple[int, int] = (-10, 90), issuer_key=None, issuer_name=None):  # noqa: ANN001, ANN201
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name or name).public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(NOW + dt.timedelta(days=days[0])).not_valid_after(NOW + dt.timedelta(days=days[1])))  # fmt: skip
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=False)
    cert = b.sign(issuer_key or key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.DER), key


def test_self_signed_with_matching_wildcard() -> None:
    der, _ = make_cert("mx.example.net", ("*.example.net",))
    c = tls.analyze(der, ["mx.example.net"], now=NOW)
    assert c.self_signed and c.name_match == "mx.example.net" and c.days_left == 90 and not c.expired


@pytest.mark.parametrize(
    "pattern, name, ok",
    [("*.example.net", "mx.example.net", True), ("*.example.net", "a.b.example.net", False),
     ("*.example.net", "example.net", False), ("MX.Example.NET", "mx.example.net.", True)],
)
def test_wildcards_follow_rfc6125(pattern: str, name: str, ok: bool) -> None:
    assert tls._wild_match(pattern, name) is ok


def test_expired_and_misnamed_and_ca_issued() -> None:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test CA")])
    der, _ = make_cert("mail.other.org", ("mail.other.org",), days=(-100, -1), issuer_key=ca_key, issuer_name=ca_name)
    c = tls.analyze(der, ["mx.example.net"], now=NOW)
    assert c.expired and not c.self_signed and c.name_match is None and c.issuer == "CN=Test CA"


@pytest.mark.parametrize(
    "level, offered, cert_kind, accepted, cause",
    [
        ("none", False, None, True, None),
        ("may", False, None, True, None),
        ("encrypt", False, None, False, "E16"),
        ("encrypt", True, "selfsigned", True, None),
        ("verify", True, "selfsigned", False, "E19"),
        ("secure", True, "expired", False, "E19"),
        ("verify", True, "misnamed", False, "E19"),
    ],
)
def test_judge_like_postfix(level: str, offered: bool, cert_kind: str | None, accepted: bool, cause: str | None) -> None:
    cert = None
    if cert_kind == "selfsigned":
        cert = tls.analyze(make_cert("mx.example.net", ("mx.example.net",))[0], ["mx.example.net"], now=NOW)
    elif cert_kind == "expired":
        cert = tls.analyze(make_cert("mx.example.net", ("mx.example.net",), days=(-9, -2))[0], ["mx.example.net"], now=NOW)
    elif cert_kind == "misnamed":
        cert = tls.analyze(make_cert("other.org", ("other.org",))[0], ["mx.example.net"], now=NOW)
    j = tls.judge(level, offered, cert, False if cert is not None and cert.self_signed else True)
    assert (j.accepted, j.cause_id) == (accepted, cause), j.why


def test_dane_ee_records() -> None:
    der, key = make_cert("mx.example.net", ("mx.example.net",))
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert tls.dane_match(der, [f"3 1 1 {hashlib.sha256(spki).hexdigest()}"])[0] == "match"
    assert tls.dane_match(der, [f"3 0 1 {hashlib.sha256(der).hexdigest()}"])[0] == "match"
    assert tls.dane_match(der, ["3 1 1 " + "00" * 32])[0] == "no-match"
    assert tls.dane_match(der, ["2 0 1 " + "00" * 32])[0] == "unusable"
    assert tls.dane_match(der, [])[0] == "none"
    assert tls.judge("dane", True, tls.analyze(der, [], now=NOW), None, ("no-match", ""),).cause_id == "E19"


def test_dane_uses_tlsa_only_when_dnssec_validated() -> None:
    """Postfix acts on TLSA records only from a validating resolver (AD): unvalidated ones are
    ignored, so a dane level falls back to opportunistic TLS instead of refusing."""
    der, key = make_cert("mx.example.net", ("mx.example.net",))
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    good, bad = [f"3 1 1 {hashlib.sha256(spki).hexdigest()}"], ["3 1 1 " + "00" * 32]
    assert tls.dane_state(der, good, True)[0] == ("match", good[0])
    state, why = tls.dane_state(der, bad, False)
    assert state == ("none", "") and "not DNSSEC-validated" in why
    cert = tls.analyze(der, [], now=NOW)
    assert tls.judge("dane", True, cert, None, state).accepted
    assert not tls.judge("dane-only", True, cert, None, state).accepted
    assert tls.judge("dane", True, cert, None, tls.dane_state(der, bad, True)[0]).cause_id == "E19"
