"""The certificate names Postfix checks at verify/secure (postconf(5) smtp_tls_verify_cert_match,
smtp_tls_secure_cert_match, a policy entry's match=): real certificates made here."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from checks import tls
from checks.nexthop import nexthop_domain as _nexthop_domain

NOW = dt.datetime(2026, 11, 29, tzinfo=dt.timezone.utc)


CA_KEY = ec.generate_private_key(ec.SECP256R1())
CA_NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Match Test CA")])


def cert(cn: str, *sans: str) -> bytes:
    """A leaf issued by a CA (not self-signed: the name check is what decides here)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(CA_NAME).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(NOW - dt.timedelta(days=1))
         .not_valid_after(NOW + dt.timedelta(days=30)))  # fmt: skip
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=False)
    return b.sign(CA_KEY, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def policy(level: str, match: str = "", **cert_match: str) -> tls.Policy:
    return tls.Policy(level, "test", match, {f"smtp_tls_{k}_cert_match": v for k, v in cert_match.items()})


# the recipient domain example.com, routed by MX to mx1.mail-host.net
NEXTHOP, HOSTNAME = "example.com", "mx1.mail-host.net"


@pytest.mark.parametrize(
    "pol, names, source",
    [
        (policy("verify"), ("mx1.mail-host.net",), "smtp_tls_verify_cert_match = hostname (default)"),
        (policy("secure"), ("example.com", ".example.com"), "smtp_tls_secure_cert_match = nexthop, dot-nexthop (default)"),
        (policy("verify", verify="hostname, nexthop:dot-nexthop"), ("mx1.mail-host.net", "example.com", ".example.com"),
         "smtp_tls_verify_cert_match = hostname, nexthop:dot-nexthop"),
        (policy("secure", "example.com:.example.com:hostname", secure="nexthop"),
         ("example.com", ".example.com", "mx1.mail-host.net"), "match=example.com:.example.com:hostname of the policy entry"),
        (policy("secure", "NextHop"), ("example.com",), "match=NextHop of the policy entry"),  # keywords ignore case
    ],
)
def test_name_rule_expands_postfix_strategies(pol: tls.Policy, names: tuple[str, ...], source: str) -> None:
    rule = tls.name_rule(pol, NEXTHOP, HOSTNAME)
    assert rule is not None and rule.names == names and rule.source == source


def test_no_name_rule_below_verify() -> None:
    assert all(tls.name_rule(policy(lv), NEXTHOP, HOSTNAME) is None for lv in ("none", "may", "encrypt", "dane", "fingerprint"))


@pytest.mark.parametrize(
    "level, sans, ok",
    [
        ("verify", ("mx1.mail-host.net",), True),
        ("verify", ("example.com",), False),  # verify checks the MX host name, not the domain
        ("secure", ("mx1.mail-host.net",), False),  # secure does not trust the (unauthenticated) MX name
        ("secure", ("example.com",), True),
        ("secure", ("smtp.in.example.com",), True),  # dot-nexthop: any depth below the domain
        ("secure", ("*.example.com",), True),  # a wildcard names only subdomains: dot-nexthop accepts it
        ("secure", ("notexample.com",), False),  # a suffix that is not a label boundary
        ("verify", ("*.mail-host.net",), True),
    ],
)
def test_certificates_against_default_rules(level: str, sans: tuple[str, ...], ok: bool) -> None:
    rule = tls.name_rule(policy(level), NEXTHOP, HOSTNAME)
    assert rule is not None
    c = tls.analyze(cert("ignored.cn.test", *sans), rule.names, now=NOW, multi_label=True)
    assert (c.name_match is not None) is ok and c.names_checked == rule.names
    verdict = tls.judge(level, True, c, True)
    assert verdict.accepted is ok and (ok or "no name matches" in verdict.why)


def test_common_name_counts_only_without_sans() -> None:
    rule = tls.name_rule(policy("verify"), NEXTHOP, HOSTNAME)
    assert rule is not None
    assert tls.analyze(cert("mx1.mail-host.net"), rule.names, now=NOW).name_match == "mx1.mail-host.net"
    assert tls.analyze(cert("mx1.mail-host.net", "other.test"), rule.names, now=NOW).name_match is None


def test_multi_label_wildcards_follow_tls_wildcard_matches_multiple_labels() -> None:
    """postconf(5): MX 'example.com.mx1.example.net' with a '*.example.net' certificate."""
    der = cert("x", "*.example.net")
    assert tls.analyze(der, ["example.com.mx1.example.net"], now=NOW, multi_label=True).name_match
    assert tls.analyze(der, ["example.com.mx1.example.net"], now=NOW, multi_label=False).name_match is None
    assert tls.analyze(der, ["example.net"], now=NOW, multi_label=True).name_match is None


@pytest.mark.parametrize(
    "configured, domain",
    [("[mx.example.net]:2525", "mx.example.net"), ("inet:[mx.example.net]", "mx.example.net"),
     ("relay.example.net:587", "relay.example.net"), ("example.org", "example.org"), ("[2001:db8::1]:25", "2001:db8::1")],
)
def test_nexthop_domain_strips_prefix_brackets_and_port(configured: str, domain: str) -> None:
    assert _nexthop_domain(configured) == domain
