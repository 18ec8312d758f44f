"""DANE-TA (TLSA usage 2) matched against the issuers a server sends, with real generated
chains: root CA <- intermediate <- leaf."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from checks import tls
from checks.smtp import peer_chain

NOW = dt.datetime.now(dt.timezone.utc)
DER = serialization.Encoding.DER


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def issue(cn: str, key, issuer_key, issuer_cn: str, *, ca: bool, sans: tuple[str, ...] = (),  # noqa: ANN001
          days: tuple[int, int] = (-1, 30)) -> x509.Certificate:  # fmt: skip
    b = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(issuer_cn)).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(NOW + dt.timedelta(days=days[0]))
         .not_valid_after(NOW + dt.timedelta(days=days[1])))  # fmt: skip
    if ca:
        b = b.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki() -> dict[str, x509.Certificate]:
    """root (self-signed) <- intermediate <- leaf for mx.example.net; an unrelated root; and a
    'root' that has the real root's name but another key (it signs nothing of this chain)."""
    root_key, inter_key, leaf_key, other_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(4))
    return {
        "root": issue("Root CA", root_key, root_key, "Root CA", ca=True),
        "inter": issue("Issuing CA", inter_key, root_key, "Root CA", ca=True),
        "leaf": issue("mx.example.net", leaf_key, inter_key, "Issuing CA", ca=False, sans=("mx.example.net",)),
        "expired": issue("mx.example.net", leaf_key, inter_key, "Issuing CA", ca=False, sans=("mx.example.net",),
                         days=(-30, -1)),
        "other": issue("Other CA", other_key, other_key, "Other CA", ca=True),
        "impostor": issue("Root CA", other_key, other_key, "Root CA", ca=True),
    }  # fmt: skip


def der(c: x509.Certificate) -> bytes:
    return c.public_bytes(DER)


def spki(c: x509.Certificate) -> bytes:
    return c.public_key().public_bytes(DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def chain(pki: dict, *names: str) -> tuple[bytes, ...]:
    return tuple(der(pki[n]) for n in names)


@pytest.mark.parametrize(
    "ta, selector, mtype",
    [("root", 0, 1), ("root", 1, 1), ("root", 1, 2), ("root", 0, 0), ("root", 1, 0), ("inter", 1, 1), ("inter", 0, 2)],
)
def test_dane_ta_matches_an_issuer_that_signs_down_to_the_leaf(pki, ta: str, selector: int, mtype: int) -> None:  # noqa: ANN001
    blob = der(pki[ta]) if selector == 0 else spki(pki[ta])
    data = blob.hex() if mtype == 0 else hashlib.sha256(blob).hexdigest() if mtype == 1 else hashlib.sha512(blob).hexdigest()
    rec = f"2 {selector} {mtype} {data.upper()}"  # dig may print upper case
    assert tls.dane_match(der(pki["leaf"]), [rec], chain(pki, "leaf", "inter", "root")) == ("match", rec)


def test_dane_ta_does_not_match_other_keys_or_a_broken_chain(pki) -> None:  # noqa: ANN001
    leaf = der(pki["leaf"])
    root_rec = f"2 1 1 {hashlib.sha256(spki(pki['root'])).hexdigest()}"
    other_rec = f"2 1 1 {hashlib.sha256(spki(pki['other'])).hexdigest()}"
    assert tls.dane_match(leaf, [other_rec], chain(pki, "leaf", "inter", "root"))[0] == "no-match"
    # the root the record names is sent, but the intermediate it should have signed is missing
    assert tls.dane_match(leaf, [root_rec], chain(pki, "leaf", "root"))[0] == "no-match"
    # a certificate that merely carries the digest's name: the record is for the impostor's key, which signs nothing here
    impostor_rec = f"2 1 1 {hashlib.sha256(spki(pki['impostor'])).hexdigest()}"
    assert tls.dane_match(leaf, [impostor_rec], chain(pki, "leaf", "inter", "impostor"))[0] == "no-match"
    # the server sent only its leaf: OpenSSL finds no trust anchor either
    assert tls.dane_match(leaf, [root_rec], chain(pki, "leaf"))[0] == "no-match"
    # a DANE-EE record of the leaf still matches alongside
    ee = f"3 1 1 {hashlib.sha256(spki(pki['leaf'])).hexdigest()}"
    assert tls.dane_match(leaf, [other_rec, ee], chain(pki, "leaf", "inter"))[0] == "match"


def test_unknown_chain_leaves_dane_ta_unjudged(pki) -> None:  # noqa: ANN001
    leaf = der(pki["leaf"])
    rec = f"2 1 1 {hashlib.sha256(spki(pki['root'])).hexdigest()}"
    assert tls.dane_match(leaf, [rec], None)[0] == "unusable"
    state, why = tls.dane_state(leaf, [rec], True, None)
    assert state == ("no-chain", "") and "could not capture" in why
    assert tls.judge("dane", True, tls.analyze(leaf, ["mx.example.net"]), None, state).accepted
    state, why = tls.dane_state(leaf, [rec], True, chain(pki, "leaf", "inter", "root"))
    assert state[0] == "match" and "DANE-TA" in why


def test_dane_ta_needs_a_matching_name_and_valid_dates(pki) -> None:  # noqa: ANN001
    rec = f"2 0 1 {hashlib.sha256(der(pki['root'])).hexdigest()}"
    full = chain(pki, "leaf", "inter", "root")
    state = tls.dane_match(der(pki["leaf"]), [rec], full)
    ok = tls.judge("dane", True, tls.analyze(der(pki["leaf"]), ["mx.example.net", "example.net"]), None, state)
    assert ok.accepted and "DANE-TA" in ok.why
    wrong = tls.judge("dane-only", True, tls.analyze(der(pki["leaf"]), ["mx.other.net"]), None, state)
    assert not wrong.accepted and wrong.cause_id == "E19" and "no name matches" in wrong.why
    expired_chain = chain(pki, "expired", "inter", "root")
    state = tls.dane_match(der(pki["expired"]), [rec], expired_chain)
    old = tls.judge("dane", True, tls.analyze(der(pki["expired"]), ["mx.example.net"]), None, state)
    assert state[0] == "match" and not old.accepted and "expired" in old.why
    # DANE-EE ignores names and dates (RFC 7672 3.1.1)
    ee = f"3 1 1 {hashlib.sha256(spki(pki['expired'])).hexdigest()}"
    state = tls.dane_match(der(pki["expired"]), [ee], expired_chain)
    assert tls.judge("dane", True, tls.analyze(der(pki["expired"]), ["mx.other.net"]), None, state).accepted


def test_unusable_records_mean_encrypt_for_dane_and_failure_for_dane_only(pki) -> None:  # noqa: ANN001
    leaf = der(pki["leaf"])
    state = tls.dane_match(leaf, ["1 1 1 " + "00" * 32, "3 7 1 00"], chain(pki, "leaf", "inter"))
    assert state == ("unusable", "")
    cert = tls.analyze(leaf, ["mx.example.net"])
    assert tls.judge("dane", True, cert, None, state).accepted
    assert not tls.judge("dane-only", True, cert, None, state).accepted


def test_peer_chain_falls_back_when_python_cannot_tell() -> None:
    assert peer_chain(object()) == ()  # type: ignore[arg-type]
