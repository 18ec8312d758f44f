"""A SASL login without '@' (``bobby``) is hidden in every field of a redacted report and in every
format, with the one token its ``--sasl-user=`` commands get (diagnose/redact.py learns it)."""

from __future__ import annotations

import json
import re

import pytest

from checks.registry import Context
from checks.targets.local import LocalTarget
from diagnose import outbreak
from diagnose.redact import Redactor

from tests.unit.test_outbreak import _facts, flood_log


@pytest.fixture
def redacted(tmp_path):
    from diagnose import report
    from diagnose.rendering import redact

    facts = _facts(flood_log(tmp_path / "mail.log", login="bobby", addr="203.0.113.5"))
    ctx = Context(target=LocalTarget(), options={"collected": {"logs": facts.logs}, "budget": 30})
    facts.findings += outbreak.outbreak_check(ctx)
    doc = report.build(facts, {})
    assert doc["outbreak"]["lead"]["key"] == "bobby"  # the unredacted report names it
    return redact(doc)


def test_a_bare_login_is_one_token_everywhere(redacted):
    from diagnose import report
    from diagnose.html import render_html

    doc = redacted
    [token] = set(re.findall(r"--sasl-user=(login-[0-9a-f]{6})", json.dumps(doc)))
    ob = doc["outbreak"]
    assert ob["lead"]["key"] == token
    assert ob["top"]["logins"][0]["key"] == token
    assert ob["plan"]["stop"]["map_line"].startswith(f"{token} REJECT")
    notes = " ".join(ob["plan"]["stop"]["notes"])
    assert f"doveadm auth test {token}" in notes and f"doveadm kick {token}" in notes and f"saslpasswd2 -d {token}" in notes
    assert f"sasl_username={token}" in " ".join(ob["plan"]["next"])
    outputs = {"json": report.to_json(doc), "text": report.render_text(doc, width=200),
               "md": report.render_markdown(doc), "html": render_html(doc)}  # fmt: skip
    for fmt, out in outputs.items():
        assert not re.search(r"(?i)bobby", out), f"{fmt}: the login leaked"
        assert not re.search(r"203\.0\.113\.5", out), f"{fmt}: the client leaked"
        assert token in out, fmt
    # the other logins (user0..user3) too, each its own token
    assert not re.search(r"\buser[0-3]\b", outputs["json"])


def test_learned_logins_spare_the_words_of_the_report() -> None:
    r = Redactor()
    r.learn("client=unknown[192.0.2.1], sasl_username=bobby\nclient=h[192.0.2.2], sasl_username=a\n"
            "client=h[192.0.2.3], sasl_username=info\ndovecot: auth: passwd-file(carol.x,192.0.2.4,<s>): unknown user")
    bob, a, carol = r.token("login", "bobby"), r.token("login", "a"), r.token("login", "carol.x")
    assert r.text("bobby") == bob and r.text("Bobby REJECT account disabled") == f"{bob} REJECT account disabled"
    assert r.text("doveadm kick carol.x.") == f"doveadm kick {carol}."
    assert r.text("a") == a  # a field that is the login, however short
    assert r.text("doveadm auth test a") == f"doveadm auth test {a}"
    assert r.text("a dry run lists a few messages") == "a dry run lists a few messages"  # short: not in prose
    assert r.text("severity info") == "severity info"  # the report's own words stay
    assert r.text("bobbyx and xbobby and bobby@example.org") .startswith("bobbyx and xbobby and user-")
    assert r.value({"key": "info"}) == {"key": r.token("login", "info")}  # a submitter's key is the login


def test_a_traces_login_and_client_fields_are_hidden() -> None:
    """pfdiag trace's JSON (diagnose/tracereport.py): sasl_login and client "name[address]"."""
    from diagnose.rendering import redact

    doc = {"traces": [{"queue_id": "4A1B2C3D4E", "client": "laptop.corp.example[192.0.2.9]", "sasl_login": "zed",
                       "events": ["Dec  6 10:00:01 mx postfix/smtpd[1]: 4A1B2C3D4E: client=laptop.corp.example[192.0.2.9], "
                                  "sasl_username=zed"]}],
           "selection": {"sasl_user": "zed", "note": "pfdiag queue hold --sasl-user=zed --dry-run: 3 message(s) of zed"}}  # fmt: skip
    out = redact(doc)
    blob = json.dumps(out)
    assert "zed" not in blob and "laptop" not in blob and "192.0.2.9" not in blob, blob
    zed = out["traces"][0]["sasl_login"]
    assert zed.startswith("login-") and out["selection"]["sasl_user"] == zed
    assert out["selection"]["note"] == f"pfdiag queue hold --sasl-user={zed} --dry-run: 3 message(s) of {zed}"
    assert out["traces"][0]["client"].startswith("host-") and out["traces"][0]["queue_id"] == "4A1B2C3D4E"


def test_many_logins_are_found_as_well_as_a_few() -> None:
    few, many = Redactor(), Redactor()
    few.learn("sasl_username=carol7")
    many.learn("\n".join(f"client=h[192.0.2.{i}], sasl_username=carol{i}" for i in range(60)))  # past the alternation
    for r in (few, many):
        assert r.text("doveadm kick carol7; carol7 REJECT; carol70 stays") == (
            f"doveadm kick {r.token('login', 'carol7')}; {r.token('login', 'carol7')} REJECT; carol70 stays")
