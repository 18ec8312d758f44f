"""Redaction of reports for tickets: who and where become stable keyed tokens; what the
diagnosis needs (codes, reason texts, providers' next hops, queue ids) stays."""

from __future__ import annotations

import json
import re

import pytest

from diagnose.cli import main
from diagnose.redact import Redactor

LINES = [
    "Nov 28 17:43:35 mx1.corp.example postfix/smtp[17312]: DF0C41661F7: to=<alice@customer.org>, "
    "orig_to=<bob@corp.example>, relay=gmail-smtp-in.l.google.com[142.250.1.27]:25, delay=5.2, "
    "delays=0.02/0.07/0.04/5.1, dsn=4.4.2, status=deferred (conversation with gmail-smtp-in.l.google.com"
    "[142.250.1.27] timed out while sending end of data -- message may be sent more than once)",
    "Nov 28 17:43:36 mx1 postfix/smtpd[1]: connect from unknown[203.0.113.5]",
    "Nov 28 17:43:36 mx1 postfix/smtpd[1]: 4A1B2C3D4E: client=laptop.corp.example[2001:db8::42], sasl_username=carol",
    "Nov 28 17:43:37 mx1 postfix/smtp[2]: 4A1B2C3D4E: to=<dave.o'neil+tag@corp.example>, relay=none, delay=1, "
    "delays=0/0/1/0, dsn=4.4.1, status=deferred (connect to mail.partner.net[198.51.100.7]:25: Connection timed out)",
    "host mx.customer.org[198.51.100.9] said: 451 4.7.1 <alice@customer.org>: Recipient address rejected: greylisted",
]
SECRETS = ["alice", "bob@", "corp.example", "203.0.113.5", "2001:db8::42", "carol", "dave.o'neil", "mx1"]
KEPT = ["gmail-smtp-in.l.google.com[142.250.1.27]", "4.4.2", "451 4.7.1", "DF0C41661F7", "4A1B2C3D4E",
        "customer.org", "mail.partner.net[198.51.100.7]", "mx.customer.org[198.51.100.9]", "Recipient address rejected",
        "17:43:35", "delays=0.02/0.07/0.04/5.1"]  # fmt: skip


@pytest.fixture
def red() -> Redactor:
    return Redactor(own_hostnames=["mx1.corp.example"], own_domains=["corp.example"])


def test_no_secret_survives_and_the_diagnosis_does(red: Redactor) -> None:
    out = "\n".join(red.text(line) for line in LINES)
    for s in SECRETS:
        assert s not in out, f"{s!r} leaked:\n{out}"
    for k in KEPT:
        assert k in out, f"{k!r} was lost:\n{out}"


def test_tokens_are_stable_within_one_redactor_and_differ_between_keys(red: Redactor) -> None:
    a = red.text("to=<alice@customer.org>")
    assert a == red.text("again: to=<alice@customer.org>").split(": ", 1)[1]
    assert re.fullmatch(r"to=<user-[0-9a-f]{6}@customer\.org>", a)
    assert red.text("mx1 said") .split()[0] == red.text("mx1.corp.example said").split()[0]
    other = Redactor(own_hostnames=["mx1.corp.example"], own_domains=["corp.example"])
    assert other.text("to=<alice@customer.org>") != a


def test_value_walks_structures(red: Redactor) -> None:
    doc = {"causes": [{"evidence": [{"excerpt": LINES[1]}], "count": 3}], "key alice@customer.org": None}
    out = red.value(doc)
    assert "203.0.113.5" not in json.dumps(out["causes"]) and out["causes"][0]["count"] == 3
    assert "key alice@customer.org" in out  # keys are field names, kept


def test_report_redact_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--demo", "-f", "json"]) == 4
    plain = capsys.readouterr().out
    assert main(["report", "--demo", "-f", "json", "--redact"]) == 4
    red = capsys.readouterr().out
    doc = json.loads(red)
    assert doc["redacted"] is True
    addresses = set(re.findall(r"[\w.+-]+@[\w.-]+\.test", plain))
    assert addresses, "the demo has addresses to hide"
    roles = {a for a in addresses if a.startswith("postmaster@")}  # pfdiag's own advice: "ask postmaster@<domain>"
    assert roles and all(a in red for a in roles)
    for a in addresses - roles:
        assert a not in red, f"{a} survived redaction"
    assert " mx1 " in plain and " mx1 " not in red  # the server's own (syslog) name
    # the same diagnosis: causes, counts and codes survive
    before = json.loads(plain)
    assert [(c["id"], c["impact"]) for c in before["causes"]] == [(c["id"], c["impact"]) for c in doc["causes"]]
    assert "4.4.2" in red and "timed out while sending end of data" in red
