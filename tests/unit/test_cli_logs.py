"""`pfdiag logs` as a user runs it: main(argv) -> exit code, one-line errors."""

from __future__ import annotations

import gzip
import json

import pytest

from diagnose.cli import main
from tests.corpus import CORPUS, need_corpus

GREYLIST_LOG = (
    "Dec  7 13:28:02 mail postfix/smtp[18832]: A17F830001CA: to=<u@recipient.test>, relay=mx.recipient.test[192.0.2.4]:25, "
    "delay=0.75, delays=0/0.03/0.66/0.06, dsn=4.7.1, status=deferred (host mx.recipient.test[192.0.2.4] said: 450 4.7.1 "
    "<u@recipient.test>: Recipient address rejected: Greylisted (in reply to RCPT TO command))\n"
)


def test_json_report_has_documented_top_level_keys(tmp_path, capsys):
    log = tmp_path / "mail.log"
    log.write_text(GREYLIST_LOG)
    assert main(["logs", str(log), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["schema"] == "pfdiag.logs/1"
    assert set(report) >= {"window", "input", "totals", "causes", "domains", "relays", "outcomes", "end_of_data", "companions"}
    assert report["totals"]["statuses"] == {"deferred": 1}
    assert report["causes"][0]["deferrals"] == 1
    assert report["causes"][0]["top_domains"] == [["recipient.test", 1]]


def test_text_and_markdown_render(tmp_path, capsys):
    log = tmp_path / "mail.log.1.gz"
    with gzip.open(log, "wt") as fh:
        fh.write(GREYLIST_LOG)
    assert main(["logs", str(log)]) == 0
    assert "recipient.test" in capsys.readouterr().out
    out_file = tmp_path / "report.md"
    assert main(["logs", str(log), "-f", "md", "-o", str(out_file)]) == 0
    assert out_file.read_text().startswith("## Postfix deferrals")


@pytest.mark.parametrize(
    "argv,code,message",
    [
        (["logs", "/nonexistent/mail.log"], 1, "No such file"),
        (["logs", "--since", "yesterday-ish", "/dev/null"], 2, "cannot read the time"),
        (["logs", "--format", "xml", "/dev/null"], 2, "invalid choice"),
        (["logs", "--since", "1h", "--until", "2h", "/dev/null"], 2, "earlier than"),
        (["nonsense"], 2, "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_non_zero(argv, code, message, capsys):
    assert main(argv) == code
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_binary_and_empty_inputs(tmp_path, capsys):
    junk = tmp_path / "junk.log"
    junk.write_bytes(b"\x00\xff" * 1000)
    assert main(["logs", str(junk)]) == 1
    assert "binary data" in capsys.readouterr().err
    empty = tmp_path / "mail.log"
    empty.write_text("")
    assert main(["logs", str(empty)]) == 1
    assert "no Postfix log lines" in capsys.readouterr().err


def test_every_corpus_log_is_read_without_a_crash(capsys):
    need_corpus()
    ok = 0
    for path in sorted(CORPUS.glob("*.txt")):
        code = main(["logs", str(path), "--format", "json"])
        out, err = capsys.readouterr()
        assert code in (0, 1), f"{path.name}: exit {code}: {err}"
        assert "Traceback" not in err and "internal error" not in err, f"{path.name}: {err}"
        if code == 0:
            report = json.loads(out)
            unclassified = [c["example"] for c in report["causes"] if c["id"] == "unclassified"]
            assert not unclassified, f"{path.name}: deferrals left unclassified: {unclassified}"
            ok += 1
        else:
            assert "no Postfix log lines" in err, f"{path.name}: {err}"
    assert ok >= 60


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert "pfdiag" in capsys.readouterr().out
    assert main([]) == 0
    assert "logs" in capsys.readouterr().out


def test_time_zone_option(tmp_path, capsys):
    log = tmp_path / "mail.log"
    log.write_text("Nov 28 10:00:00 mx postfix/qmgr[1]: ABCDE1: removed\n" + GREYLIST_LOG.replace("Dec  7 13:28:02", "Nov 28 10:00:00"))
    assert main(["logs", str(log), "-f", "json", "--tz", "UTC"]) == 0
    utc = json.loads(capsys.readouterr().out)["window"]["first_line"]
    assert main(["logs", str(log), "-f", "json", "--tz", "+02:00"]) == 0
    plus2 = json.loads(capsys.readouterr().out)["window"]["first_line"]
    assert utc.endswith("T10:00:00Z") and plus2.endswith("T08:00:00Z")
    assert main(["logs", str(log), "--tz", "Mars/Olympus"]) == 2
    assert "unknown time zone" in capsys.readouterr().err


def test_without_a_local_log_the_demo_is_shown_and_said(capsys, monkeypatch):
    monkeypatch.setenv("PFDIAG_MAIL_LOGS", "/nonexistent/mail.log")
    monkeypatch.setenv("PATH", "/nonexistent")  # no postconf -> no maillog_file either
    monkeypatch.setenv("PFDIAG_SBIN_PATH", "")
    assert main(["logs", "-f", "json"]) == 0
    out, err = capsys.readouterr()
    assert "no Postfix log found here" in err and "demo snapshot" in err
    assert json.loads(out)["causes"][0]["id"] == "E09"
