"""pfdiag explain with a pasted log line or reason text (diagnose/paste.py), as tickets and blogs carry them."""

from __future__ import annotations

import io
import json

import pytest

from diagnose.cli import main
from diagnose.paste import PasteError, normalise, read_pasted

EOD = ("conversation with mx.example.com[192.0.2.10] timed out while sending end of data -- message may be sent "
       "more than once")
FULL = ("Dec  6 03:12:44 mx1 postfix/smtp[2211]: 4F2A31C2B: to=<ann@example.com>, relay=mx.example.com[192.0.2.10]:25, "
        f"delay=612, delays=0.1/0/1.2/611, dsn=4.4.2, status=deferred ({EOD})")


@pytest.mark.parametrize("pasted,cause,status", [
    (FULL, "E09", "deferred"),  # the whole syslog line
    (FULL.split(": ", 2)[2], "E09", "deferred"),  # without the syslog prefix and queue id
    (EOD, "E09", None),  # the reason alone
    (EOD.replace(" -- ", " — "), "E09", None),  # a blog's em dash
    (EOD.replace(" -- ", " – ").replace("mx.example.com[192.0.2.10]", "xxx[xxx.xxx.xxx.xxx]"), "E09", None),
    (f"`{EOD}`", "E09", None),  # a Markdown code span
    (EOD[:60] + "\n   " + EOD[60:], "E09", None),  # wrapped by a mail client
    ("status=deferred (connect to mx.foo.example[192.0.2.3]:25: Connection timed out)", "E01", "deferred"),
    ('{"MESSAGE": "4F2A31C2B: to=<a@b.example>, relay=none, delay=1, delays=0/0/1/0, dsn=4.4.1, status=deferred '
     '(connect to b.example[192.0.2.4]:25: Connection refused)", "SYSLOG_IDENTIFIER": "postfix/smtp"}', "E02", "deferred"),
    ("host mx.example.org[192.0.2.30] said: 450 4.2.0 <u@example.org>: Recipient address rejected: Greylisted, see "
     "http://postgrey.schweikert.ch/help/example.org.html (in reply to RCPT TO command)", "E21", None),
    ("Jan 10 10:00:01 mx postfix/qmgr[123]: 4F2A31C2B: status=deferred (bounce failed)", "E31", "deferred"),
    ("Jan 10 10:00:01 mx postfix/qmgr[123]: 4F2A31C2B: from=<a@b.example>, status=expired, returned to sender",
     "E38", "expired"),
])  # fmt: skip
def test_pasted_text_is_classified_like_the_log(pasted: str, cause: str, status: str | None) -> None:
    r = read_pasted(pasted)
    assert (r.classification.cause_id, r.status) == (cause, status)
    assert r.recognised


def test_what_was_changed_is_said() -> None:
    text, notes = normalise(EOD.replace(" -- ", " — ").replace("mx.example.com", "xxx"))
    assert " -- message may be sent more than once" in text
    assert any("dash" in n for n in notes) and any("placeholder" in n for n in notes)


@pytest.mark.parametrize("nothing", ["", "   ", "\n\t"])
def test_nothing_to_explain_is_an_error(nothing: str) -> None:
    with pytest.raises(PasteError):
        read_pasted(nothing)


def test_explain_cli_pasted_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", FULL]) == 0
    out = capsys.readouterr().out
    assert out.startswith("This text shows E09 eod-timeout at end-of-data")
    assert "d ≈ 611 s ≈ smtp_data_done_timeout" in out and "Fix:" in out


def test_explain_cli_json_and_stdin(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(FULL + "\n"))
    assert main(["explain", "-", "-f", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["cause_id"], doc["phase"], doc["dsn"], doc["next_hop"]["addr"]) == ("E09", "end-of-data", "4.4.2", "192.0.2.10")


@pytest.mark.parametrize("argv,rc,where,message", [
    (["explain", "this is not a postfix line at all"], 1, "err", "does not recognise this reason text"),
    (["explain", "E99"], 2, "err", "unknown cause or check 'E99'"),
    (["explain", "   "], 2, "err", "nothing to explain"),
])  # fmt: skip
def test_explain_cli_what_it_cannot_use_exits_non_zero(argv: list[str], rc: int, where: str, message: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == rc
    captured = capsys.readouterr()
    assert message in (captured.err if where == "err" else captured.out)


def test_control_characters_of_a_paste_are_shown_visibly(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "host mx.x[192.0.2.1] said: 451 4.3.0 \x1b[2Jqq read error (in reply to end of DATA command)"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\\x1b[2Jqq read error" in out
