"""Pasted input has no configuration by design: the report says so as a note (timings compared with
Postfix's defaults), never as "not checked: ... postconf not found"; and it names pasted log lines
as such, never by the wizard's temporary file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import pytest

from checks.targets.pasted import NO_CONFIG, NoConfiguration
from diagnose import flow, report, session
from diagnose.cli import main
from tests.corpus import CORPUS

LOG = ("Jul 31 16:20:00 mx postfix/qmgr[1]: 10DFD11830F2: from=<sender-1@testsend_domain.tld>, size=263, "
       "nrcpt=1 (queue active)\nJul 31 16:20:01 mx postfix/qmgr[1]: 10DFD11830F2: to=<user-1@test-domain.tld>, "
       "relay=none, delay=1, delays=0/0/0/0, dsn=4.3.0, status=deferred (mail transport unavailable)\n")  # fmt: skip


def _listing() -> Path:
    path = CORPUS / "outini__pymailq__tests_samples_mailq.sample.txt"
    if not path.exists():
        pytest.skip(f"shared corpus not found at {CORPUS}")
    return path


def test_the_report_of_pasted_input_notes_the_missing_configuration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "mail.log"
    log.write_text(LOG)
    assert main(["report", "--mailq", str(_listing()), "--log", str(log), "-f", "json"]) in (4, 5)
    doc = json.loads(capsys.readouterr().out)
    assert doc["errors"] == [], doc["errors"]  # no "not checked: read the configuration: postconf not found"
    assert doc["read"]["config"] == NoConfiguration.timings and doc["read"]["logs"] == [str(log)]
    assert {"check": "config", "state": "skipped", "why": NO_CONFIG} in doc["read"]["not_run"]
    assert main(["report", "--mailq", str(_listing()), "--log", str(log), "-f", "text"]) in (4, 5)
    text = capsys.readouterr().out
    assert "postconf not found" not in text and "not checked" not in text, text
    assert "timings: Postfix defaults (no configuration given: pasted input)" in " ".join(text.replace("│", " ").split())
    md = report.render_markdown(doc)
    assert "could not be checked" not in md and "timings: Postfix defaults (no configuration given: pasted input)" in md


def test_the_wizard_names_pasted_lines_not_its_temporary_files() -> None:
    listing = _listing()
    replies = iter(["pasted", listing.read_text(), LOG])

    def answerer(q: flow.Question, answers: Mapping[str, str]) -> Any:
        return next(replies) if q.key in ("target", "mailq", "pasted_log") else session.report_mode_answerer(q, answers)

    out = session.run(answerer, {}, session.Options(budget=20, interactive=True, include_plugins=False))
    assert Path(out.answers["pasted_log"]).name.startswith("pfdiag-pasted-log-")  # the readers read a temporary file
    doc = report.build(out.facts, out.answers)
    assert doc["read"]["logs"] == ["pasted log lines"] and doc["target"]["where"] == "pasted:mailq listing"
    assert doc["errors"] == [], doc["errors"]
    for text in (report.render_text(doc, width=200), report.render_markdown(doc), report.to_json(doc)):  # no temporary path
        assert "pfdiag-pasted-log-" not in text and "pfdiag-mailq-" not in text
        assert "read: pasted log lines (" in text or "**Read:** pasted log lines (" in text or '"pasted log lines"' in text
    # the commands to run on the mail host grep its log, not a file that was here
    assert "/var/log/mail.log" in " ".join(doc["causes"][0]["confirm_with"])


def test_the_queue_of_a_pasted_listing_notes_it_plainly(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["queue", "--mailq", str(_listing()), "--now", "2018-08-01T12:00:00", "-f", "json"]) == 0
    notes = json.loads(capsys.readouterr().out)["notes"]
    assert f"{NO_CONFIG} (forecasts too)" in notes and not any("not readable" in n for n in notes), notes
