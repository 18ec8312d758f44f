"""Delivery status lines with every optional field (postfix-deferrals.md §1.1)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings, strategies as st

from checks.postfix.logline import LineParser
from checks.postfix.status import Delivery, Expiry, parse_delivery, parse_pix, parse_qmgr_from
from tests.corpus import corpus_files, need_corpus

FULL = (
    "to=<user@example.net>, orig_to=<alias@example.net>, relay=mx.example.net[192.0.2.25]:25, conn_use=3, "
    "delay=605, delays=0.1/0.02/0.3/600, tls=may:none, dsn=4.4.2, status=deferred "
    "(conversation with mx.example.net[192.0.2.25] timed out while sending end of data -- message may be sent more than once)"
)


def test_every_optional_field():
    d = parse_delivery(FULL)
    assert isinstance(d, Delivery)
    assert (d.to, d.orig_to, d.relay, d.conn_use, d.delay, d.delays, d.tls, d.dsn, d.status) == (
        "user@example.net", "alias@example.net", "mx.example.net[192.0.2.25]:25", 3, 605.0,
        (0.1, 0.02, 0.3, 600.0), "may:none", "4.4.2", "deferred",
    )
    assert d.reason.endswith("may be sent more than once")
    assert d.relay_host == "mx.example.net" and d.domain == "example.net"


@pytest.mark.parametrize(
    "text,status,reason",
    [
        # reason with parentheses: up to the LAST ")"
        ("to=<a@b.test>, relay=x[1.2.3.4]:25, delay=1, delays=0/0/0/1, dsn=4.7.1, status=deferred (host x[1.2.3.4] said: 450 4.7.1 <a@b.test>: Recipient address rejected: Greylisted (in reply to RCPT TO command))",
         "deferred", "host x[1.2.3.4] said: 450 4.7.1 <a@b.test>: Recipient address rejected: Greylisted (in reply to RCPT TO command)"),
        # Postfix 2.x: no delays=, no dsn=
        ("to=<a@b.test>, relay=none, delay=0, status=deferred (connect to example.com[10.0.0.1]: Connection refused)",
         "deferred", "connect to example.com[10.0.0.1]: Connection refused"),
        # collector junk after the closing parenthesis
        ("to=<admin@corp.com>, relay=none, delay=89758, delays=89758/0.02/0/0, dsn=4.4.1, status=deferred (delivery temporarily suspended: connect to mail.corp.com[1.1.1.1]:25: Connection timed out) 215",
         "deferred", "delivery temporarily suspended: connect to mail.corp.com[1.1.1.1]:25: Connection timed out"),
        ("to=<a@b.test>, relay=none, delay=1, delays=1/0/0/0, dsn=4.5.0, status=SOFTBOUNCE (host x[1.2.3.4] said: 550 5.1.1 no (in reply to RCPT TO command))",
         "SOFTBOUNCE", "host x[1.2.3.4] said: 550 5.1.1 no (in reply to RCPT TO command)"),
        ("to=<a@b.test>, relay=none, delay=0.01, delays=0.01/0/0/0, dsn=5.1.1, status=undeliverable-but-not-cached (User unknown)",
         "undeliverable-but-not-cached", "User unknown"),
    ],
)
def test_status_and_reason(text, status, reason):
    d = parse_delivery(text)
    assert isinstance(d, Delivery)
    assert (d.status, d.reason) == (status, reason)


def test_truncated_reason_is_kept_and_flagged():
    d = parse_delivery("to=<a@b.test>, relay=none, delay=1, dsn=4.4.1, status=deferred (connect to x[1.2.3.4]:25: Conn")
    assert d.truncated and d.reason == "connect to x[1.2.3.4]:25: Conn"


def test_forum_copy_with_stripped_angle_brackets():
    d = parse_delivery("to=, relay=none, delay=1, dsn=4.4.1, status=deferred (connect to x[1.2.3.4]:25: Connection refused)")
    assert d.to == "" and d.status == "deferred"


@pytest.mark.parametrize("status", ["expired", "force-expired"])
def test_expiry(status):
    e = parse_delivery(f"from=<sender@example.org>, status={status}, returned to sender")
    assert isinstance(e, Expiry) and (e.sender, e.status) == ("sender@example.org", status)


def test_not_status_lines():
    assert parse_delivery("from=<a@b.test>, size=100, nrcpt=1 (queue active)") is None
    assert parse_delivery("message-id=<status=deferred@x>") is None


def test_qmgr_and_pix():
    q = parse_qmgr_from("from=<>, size=4102, nrcpt=1 (queue active)")
    assert (q.sender, q.size, q.nrcpt) == ("", 4102, 1)
    p = parse_pix("enabling PIX workarounds: disable_esmtp,delay_dotcrlf for mx.example.net[192.0.2.25]:25")
    assert (p.workarounds, p.host, p.addr, p.port) == (("disable_esmtp", "delay_dotcrlf"), "mx.example.net", "192.0.2.25", 25)


_STATUS_IN_LINE = re.compile(r"\bstatus=(sent|deferred|bounced|expired|force-expired|SOFTBOUNCE|deliverable|undeliverable\S*)\b")


def test_every_status_line_in_the_corpus_is_parsed():
    need_corpus()
    seen = parsed = 0
    missed = []
    for path in corpus_files():
        parser = LineParser()
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if not _STATUS_IN_LINE.search(line):
                continue
            seen += 1
            rec = parser.parse(line)
            event = parse_delivery(rec.text) if rec else None
            if event is None:
                missed.append(f"{path.name}: {line[:160]}")
            else:
                parsed += 1
    assert seen > 300
    assert not missed, "\n".join(missed[:20])


@settings(max_examples=400, deadline=None)
@given(st.text())
def test_no_text_crashes_the_status_parser(text):
    parse_delivery(text)
    parse_delivery("to=<a@b>, status=" + text)
    parse_qmgr_from(text)
    parse_pix("enabling PIX workarounds: " + text)


@pytest.mark.parametrize("delay, delays", [("1.2.3", "0/0/0/0"), ("1.5", "1..2/0/0/0"), ("1.", "./0/0/0")])
def test_a_status_line_with_unreadable_delays_is_read_without_them(delay, delays):
    """[\\d.]+ of the fast regex that is no number: the line is still a Delivery (read as the
    general path reads it: no such delay), not a ValueError (`pfdiag trace` exited 3)."""
    text = (f"to=<u@d.example>, relay=none, delay={delay}, delays={delays}, dsn=4.4.1, "
            "status=deferred (connect to mx.d.example[198.51.100.6]:25: Connection timed out)")
    d = parse_delivery(text)
    assert isinstance(d, Delivery) and d.status == "deferred" and d.to == "u@d.example" and d.dsn == "4.4.1"
    assert d.reason.endswith("Connection timed out")
    assert d.delay == {"1.2.3": None, "1.5": 1.5, "1.": 1.0}[delay]
    assert d.delays == ((0.0, 0.0, 0.0, 0.0) if delays == "0/0/0/0" else None)
