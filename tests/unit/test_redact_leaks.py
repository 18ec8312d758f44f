"""The leaks and over-redactions of issue 13, in every report format: quoted local parts, the
machine's syslog name when it is not myhostname, HELO names, Message-ID left parts, the text
header_checks logs; and never Postfix's service names (local, relay=local) or pfdiag's advice."""

from __future__ import annotations

import html
import json
import re

import pytest

from diagnose.cli import main
from diagnose.redact import Redactor

KEY = b"k" * 32
LINES = [
    "Dec  6 15:28:33 vmhost7 postfix/cleanup[2201]: 3175C16E13B: message-id=<20261206.secretleft.1234@corp.example>",
    "Dec  6 15:28:33 vmhost7 postfix/cleanup[2201]: 3175C16E13B: warning: header Subject: Quarterly salary review "
    "from laptop.customer-lan.org[203.0.113.77]; from=<ceo@corp.example> to=<\"John Q. Doe\"@corp.example> "
    "proto=ESMTP helo=<laptop.customer-lan.org>",
    "Dec  6 15:28:34 vmhost7 postfix/local[2202]: 3175C16E13B: to=<\"John Q. Doe\"@corp.example>, relay=local, "
    "delay=1, delays=0/0/0/1, dsn=5.1.1, status=bounced (unknown user)",
    "2026-12-06T15:28:35.123456+00:00 vmhost7 postfix/smtpd[2203]: NOQUEUE: reject: RCPT from unknown[198.51.100.23]: "
    "450 4.7.1 <pc9>: Helo command rejected: Host not found; from=<a@b.org> to=<c@corp.example> proto=ESMTP "
    "helo=<secret-helo.example.net>",
    "Dec  6 15:28:36 vmhost7 postfix/cleanup[2204]: 4A1B2C3D4E: message-id=<CAF=x+Y_very-long-left-part-that-goes-on"
    "-and-on-for-more-than-sixty-four-characters.abcdefgh@mail.gmail.com>",
]
SECRETS = ["vmhost7", "20261206.secretleft.1234", "Quarterly salary review", "John Q. Doe", "laptop.customer-lan.org",
           "secret-helo.example.net", "203.0.113.77", "198.51.100.23", "ceo@", "corp.example", "mx1",
           "very-long-left-part", "mail.gmail.com"]  # fmt: skip
KEPT = ["postfix/local[2202]", "relay=local", "dsn=5.1.1", "status=bounced (unknown user)", "450 4.7.1",
        "Helo command rejected: Host not found", "warning: header Subject: text-",
        "3175C16E13B", "15:28:34"]  # fmt: skip


def test_each_case_in_a_line() -> None:
    r = Redactor(KEY, own_hostnames=["mx1.corp.example"], own_domains=["corp.example"])
    for ln in LINES:
        r.learn(ln)
    out = "\n".join(r.text(ln) for ln in LINES)
    for s in SECRETS:
        assert s not in out, (s, out)
    for k in KEPT:
        assert k in out, (k, out)
    # one token per value: the quoted mailbox in the warning and in the delivery line
    assert len(set(re.findall(r'to=<(user-[0-9a-f]{6})@', out))) == 2  # John (twice, one token) and c@
    john = r.token("user", "John Q. Doe")
    assert out.count(john) == 2
    # the syslog name: one token in every line, and elsewhere in text (a Received: header)
    host = r.token("host", "vmhost7")
    assert all(host in ln for ln in out.splitlines()) and r.text("Received: by vmhost7 (Postfix)") == f"Received: by {host} (Postfix)"


@pytest.mark.parametrize("text", [
    "local     unix  -       n       n       -       -       local",
    "relay=local, delay=0.1, status=sent (delivered to mailbox)",
    "Ask postmaster@example.org to enable STARTTLS, or fix the middlebox",
    "smtp      unix  -       -       n       -       -       smtp",
    "retry     unix  -       -       n       -       -       error",
])  # fmt: skip
def test_service_names_and_advice_stay(text: str) -> None:
    # a local target is named "local", a lab host "smtp" or "mail": never this server's name
    r = Redactor(KEY, own_hostnames=["local", "smtp", "mail.corp.example", "retry"], own_domains=["corp.example"])
    r.learn("Dec  6 15:28:33 local postfix/qmgr[1]: X: removed")
    assert r.text(text) == text


def test_postmaster_as_a_login_or_a_logged_address_is_still_hidden() -> None:
    r = Redactor(KEY)
    assert "postmaster" not in r.text("warning: unknown[192.0.2.1]: SASL LOGIN authentication failed, sasl_username=postmaster@example.org")
    assert "postmaster" not in r.text("to=<root@example.com>, orig_to=<postmaster@example.com>, relay=local")


def _leaks(text: str) -> list[str]:
    return [s for s in SECRETS if s in text or html.escape(s) in text]


def test_every_report_format_is_clean(capsys: pytest.CaptureFixture[str]) -> None:
    from diagnose.commands.report import redact, render

    assert main(["report", "--demo", "-f", "json"]) in (0, 1, 2, 3, 4)
    doc = json.loads(capsys.readouterr().out)
    doc["server"] = {"myhostname": "mx1.corp.example", "mydomain": "corp.example", "mydestination": []}
    doc["verdict"]["headline"] = f"evidence: {LINES[1]}"
    doc["causes"][0]["evidence"][:0] = [{"kind": "log", "source": "mail log", "excerpt": ln, "where": "local"} for ln in LINES]
    plain = {fmt: render(doc, fmt, False) for fmt in ("text", "md", "json", "html")}
    assert all(_leaks(t) for t in plain.values()), "the unredacted report carries the values"
    red = redact(doc)
    tokens = None
    for fmt in ("text", "md", "json", "html"):
        text = render(red, fmt, False)
        assert not _leaks(text), (fmt, _leaks(text))
        assert "relay=local" in text and "postmaster@" in text, fmt
        found = set(re.findall(r"(?:user|host|msgid|text)-[0-9a-f]{6}", text))
        tokens = found if tokens is None else tokens
        assert found & tokens and {t for t in tokens if t.startswith(("msgid", "text"))} <= found, fmt


def test_a_quoted_local_part_as_json_writes_it_gets_the_same_token() -> None:
    r = Redactor(KEY)
    listed = r.text(json.dumps({"address": '"John Q. Doe"@greylist.test'}))  # postqueue -j
    logged = r.text('to=<"John Q. Doe"@greylist.test>, status=deferred')
    tok = r.token("user", "John Q. Doe")
    assert listed == f'{{"address": "{tok}@greylist.test"}}' and logged.startswith(f"to=<{tok}@greylist.test>")
