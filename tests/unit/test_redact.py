"""diagnose/redact.Redactor, the parts test_report_redaction.py does not pin down: the token
shapes, keyed stability, IPv6 in its forms, the syslog short name, client reverse-DNS names,
what must survive untouched, and value() over a JSON-like report."""

from __future__ import annotations

import re

from diagnose.redact import Redactor

KEY = b"k" * 32


def test_token_shapes_match_the_documented_examples() -> None:
    r = Redactor(KEY, own_hostnames=["mx1.corp.example"], own_domains=["corp.example"])
    out = r.text("from=<alice@corp.example> connect from unknown[203.0.113.5] on mx1.corp.example")
    assert re.search(r"from=<user-[0-9a-f]{6}@domain-[0-9a-f]{6}\.invalid>", out), out
    assert re.search(r"unknown\[ip-[0-9a-f]{6}\]", out) and re.search(r"on host-[0-9a-f]{6}$", out), out


def test_same_key_same_token_other_key_other_token() -> None:
    line = "to=<alice@customer.org>, client=unknown[203.0.113.5]"
    a, b, c = Redactor(KEY), Redactor(KEY), Redactor(b"x" * 32)
    assert a.text(line) == b.text(line) != c.text(line)
    assert a.text("ALICE@customer.org").split("@")[0] == a.text(line).split("<")[1].split("@")[0], "case-insensitive"
    assert Redactor().text(line) != Redactor().text(line), "a fresh random key per Redactor"


def test_ipv6_client_in_compressed_and_full_form_gets_one_token() -> None:
    r = Redactor(KEY)
    r.learn("connect from unknown[2001:db8:77::15]")
    short = r.text("client=unknown[2001:db8:77::15]")
    full = r.text("later: 2001:db8:77:0:0:0:0:15 again")
    tok = re.search(r"ip-[0-9a-f]{6}", short).group(0)  # type: ignore[union-attr]
    assert "2001:db8" not in short + full and tok in full


def test_learned_client_is_hidden_even_in_next_hop_context() -> None:
    r = Redactor(KEY)
    r.learn("connect from unknown[198.51.100.77]")
    assert "198.51.100.77" not in r.text("connect to relay.partner.net[198.51.100.77]:25: Connection refused")
    # an address never seen as a client, after relay=, is a next hop: kept
    assert "142.250.27.26" in r.text("relay=gmail-smtp-in.l.google.com[142.250.27.26]:25")


def test_client_reverse_dns_name_hidden_but_provider_kept() -> None:
    r = Redactor(KEY)
    out = r.text("connect from mail.customer-a.example[198.51.100.77] ... relay=mx.provider.net[192.0.2.9]:25")
    assert "customer-a" not in out and "mx.provider.net[192.0.2.9]" in out


def test_syslog_short_name_is_the_same_host_token() -> None:
    r = Redactor(KEY, own_hostnames=["mx1.corp.example"])
    a, b = r.text("Nov 28 10:00:00 mx1 postfix/smtp[1]: x"), r.text("banner mx1.corp.example ESMTP")
    tok = re.search(r"host-[0-9a-f]{6}", a).group(0)  # type: ignore[union-attr]
    assert tok in b and "mx1" not in a + b


def test_what_the_diagnosis_needs_is_untouched() -> None:
    r = Redactor(KEY, own_hostnames=["mx1.corp.example"], own_domains=["corp.example"])
    line = ("Nov 28 17:43:35 mx1 postfix/smtp[17312]: DF0C41661F7: to=<a@gmail.com>, relay=gmail-smtp-in.l.google.com"
            "[142.250.27.26]:25, delay=5.2, delays=0.02/0.07/0.04/5.1, dsn=4.7.28, status=deferred (host "
            "gmail-smtp-in.l.google.com[142.250.27.26] said: 421-4.7.28 unusual rate of unsolicited mail)")  # fmt: skip
    out = r.text(line)
    for kept in ("Nov 28 17:43:35", "postfix/smtp[17312]", "DF0C41661F7", "gmail.com", "dsn=4.7.28", "421-4.7.28",
                 "status=deferred", "gmail-smtp-in.l.google.com[142.250.27.26]:25", "unusual rate"):
        assert kept in out, (kept, out)
    assert r.text("127.0.0.1 and ::1") == "127.0.0.1 and ::1"


def test_value_walks_a_report_and_keeps_field_names_and_numbers() -> None:
    r = Redactor(KEY, own_domains=["corp.example"])
    doc = {"causes": [{"id": "E21", "count": 3, "ok": True, "samples": ["to=<bob@corp.example>"], "bob@corp.example": None}],
           "where": ("ssh:mx1.corp.example",)}  # fmt: skip
    out = r.value(doc)
    assert out["causes"][0]["id"] == "E21" and out["causes"][0]["count"] == 3 and out["causes"][0]["ok"] is True
    assert "bob@corp.example" in out["causes"][0], "keys are field names"
    assert "corp.example" not in out["causes"][0]["samples"][0] and "corp.example" not in out["where"][0]
    assert out["causes"][0]["samples"][0] == r.text("to=<bob@corp.example>"), "one token for one input"
