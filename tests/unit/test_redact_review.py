"""Adversarial review of redaction: passwords written into the configuration, logins in the forms
real mail logs write them (Dovecot beside Postfix, user=<...>), one token per value whether it
appears in an address or alone, and one token per value across the JSON, Markdown and HTML of
one redacted report."""

from __future__ import annotations

import json
import re

import pytest

from diagnose.cli import main
from diagnose.redact import Redactor, scrub_secrets
from tests.corpus import corpus_files, need_corpus

KEY = b"r" * 32


def test_sasl_passwords_in_the_configuration_are_hidden() -> None:
    r = Redactor(KEY)
    texts = {
        "main.cf static": "smtp_sasl_password_maps = static:alice:S3cretPass1",
        "main.cf inline, continued": "smtp_sasl_password_maps =\n    inline:{ [smtp.relay.example]:587 = alice@relay.example:S3cretPass2 }\nrelayhost = [smtp.relay.example]:587",
        "master.cf -o": "submission unix - - n - - smtp\n  -o lmtp_sasl_password_maps=static:{bob:S3cretPass3}",
        "postconf output": "smtp_sasl_password_maps = proxy:static:carol:S3cretPass4",
    }  # fmt: skip
    for what, text in texts.items():
        out = r.text(text)
        assert "S3cretPass" not in out and not re.search(r"\b(alice|bob|carol)\b", out), (what, out)
        assert re.search(r"(static|inline):\{?secret-[0-9a-f]{6}", out), (what, out)
    kept = "smtp_sasl_password_maps = hash:/etc/postfix/sasl_passwd\nrelayhost = [smtp.relay.example]:587"
    assert r.text(kept) == kept  # a map that names a file holds no secret; the relay is needed
    # also without a Redactor: for snapshots and reports that are not redacted
    assert scrub_secrets(texts["main.cf static"]) == "smtp_sasl_password_maps = static:secret-redacted"


def test_dovecot_auth_user_beside_postfix_is_hidden() -> None:
    r = Redactor(KEY)
    out = r.text("Nov 28 10:00:01 mx1 dovecot: auth: passwd-file(dave.k,203.0.113.9,<AbCd>): Password mismatch")
    assert "dave.k" not in out and re.search(r"passwd-file\(login-[0-9a-f]{6},ip-[0-9a-f]{6}", out), out


def test_a_login_that_is_an_address_gets_the_address_token_and_keeps_its_brackets() -> None:
    r = Redactor(KEY, own_domains=["corp.example"])
    login = r.text("dovecot: imap-login: Login: user=<erin@corp.example>, method=PLAIN")
    rcpt = r.text("to=<erin@corp.example>, status=deferred")
    token = re.search(r"to=<([^>]+)>", rcpt).group(1)  # type: ignore[union-attr]
    assert f"user=<{token}>," in login, (login, rcpt)
    assert r.text("sasl_username=frank") == f"sasl_username={r.token('login', 'frank')}"


def test_own_hostname_is_one_token_in_an_address_and_alone() -> None:
    r = Redactor(KEY, own_hostnames=["mx1.corp.example"], own_domains=["corp.example"])
    alone = re.search(r"host-[0-9a-f]{6}", r.text("banner mx1.corp.example ESMTP")).group(0)  # type: ignore[union-attr]
    assert r.text("<postmaster@mx1.corp.example>").endswith(f"@{alone}>")
    inner = re.search(r"host-[0-9a-f]{6}", r.text("relay mail.corp.example")).group(0)  # type: ignore[union-attr]
    assert r.text("bob@mail.corp.example").endswith(f"@{inner}")
    assert ".invalid" in r.text("bob@corp.example")  # the domain itself: its domain token


def test_no_sasl_login_from_the_corpus_survives() -> None:
    need_corpus()
    lines = [ln.rstrip("\n") for f in corpus_files() for ln in f.read_text(errors="replace").splitlines()
             if "sasl_username=" in ln or "sasl_sender=" in ln]  # fmt: skip
    assert lines, "the corpus has SASL lines"
    r = Redactor(KEY)
    for ln in lines:
        r.learn(ln)
    for ln in lines:
        out = r.text(ln)
        for m in re.finditer(r"sasl_(?:username|sender)=([^\s,;>]+)", ln):
            value = m.group(1)
            assert f"={value}" not in out, (value, out)
            assert m.group(0).split("=", 1)[0] + "=" in out, (value, out)  # the field name stays
            assert f"{value.split('@', 1)[0]}@" not in out, (value, out)


def test_one_redacted_report_uses_the_same_tokens_in_json_markdown_and_html(capsys: pytest.CaptureFixture[str]) -> None:
    from diagnose.commands.report import redact, render

    line = ("Nov 28 17:43:36 mx1 postfix/smtpd[1]: 4A1B2C3D4E: client=laptop.corp.example[203.0.113.5], "
            "sasl_username=carol; to=<alice@corp.example>")  # fmt: skip
    assert main(["report", "--demo", "-f", "json"]) in (0, 1, 2, 3, 4)
    doc = json.loads(capsys.readouterr().out)
    doc["server"] = {"myhostname": "mx1.corp.example", "mydomain": "corp.example", "mydestination": []}
    doc["verdict"]["headline"] = f"evidence: {line}"
    red = redact(doc)
    head = red["verdict"]["headline"]
    tokens = set(re.findall(r"(?:user|domain|host|ip|login)-[0-9a-f]{6}", head))
    assert len(tokens) >= 4, head
    for secret in ("carol", "alice", "corp.example", "203.0.113.5", "laptop"):
        assert secret not in head
    for fmt in ("json", "md", "html"):
        text = render(red, fmt, False)
        for secret in ("carol", "alice@", "corp.example", "203.0.113.5"):
            assert secret not in text, (fmt, secret)
        found = set(re.findall(r"(?:user|domain|host|ip|login)-[0-9a-f]{6}", text))
        assert tokens <= found, (fmt, tokens - found)


def test_a_redacted_fleet_report_hides_the_inventory_names() -> None:
    from diagnose.commands.report import redact

    name = "mx01.corp.example"
    doc = {"schema": "pfdiag.fleet/1",
           "hosts": [{"host": name, "address": "admin@10.1.2.3:22", "status": "unreachable",
                      "headline": f"{name}: connect refused", "error": "refused", "report": None}],
           "comparison": {"unreachable": [{"host": name, "address": "admin@10.1.2.3:22", "error": "refused"}],
                          "causes": [{"id": "E03", "hosts": [name], "meaning": f"only {name}: look at that host"}]}}  # fmt: skip
    out = json.dumps(redact(doc))
    assert "10.1.2.3" not in out and "admin" not in out
    assert "corp.example" not in out and "mx01" not in out
