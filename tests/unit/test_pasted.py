"""Pasted input from a support ticket (checks/targets/pasted.py): a mailq listing and log excerpts with
no mail host behind them; and recordings that hold only `postqueue -p` (checks/queue.read_queue)."""

from __future__ import annotations

import io
import json
import re
import time
from datetime import datetime
from pathlib import Path

import pytest

from checks.model import CommandResult
from checks.queue import read_queue
from checks.targets.bundle import SnapshotWriter
from checks.targets.pasted import PastedTarget
from checks.targets.snapshot import SnapshotTarget
from diagnose.cli import main
from tests.corpus import CORPUS

LISTING = "outini__pymailq__tests_samples_mailq.sample.txt"  # a real postqueue -p of 30 messages
NOW = "2018-08-01T12:00:00"


def _listing() -> Path:
    path = CORPUS / LISTING
    if not path.exists():
        pytest.skip(f"shared corpus not found at {CORPUS}")
    return path


def test_queue_from_a_pasted_listing_counts_every_entry_and_ages_from_now(capsys: pytest.CaptureFixture[str]) -> None:
    path = _listing()
    entries = len(re.findall(r"^[0-9A-F]{6,}[*!]?\s", path.read_text(), re.M))
    assert main(["queue", "--mailq", str(path), "--now", NOW, "-f", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["total_messages"] == entries == 30
    now = datetime.fromisoformat(NOW).timestamp()
    ages = {m["queue_id"]: m["age_seconds"] for m in doc["messages"]}
    # "Mon Jul 31 16:16:18" is the most recent such date before --now: 19 h 43 min 42 s earlier
    arrival = datetime(2018, 7, 31, 16, 16, 18).timestamp()
    assert ages["1FD2B11832C4"] == pytest.approx(now - arrival, abs=1)
    assert all(0 <= a < 366 * 86400 for a in ages.values())  # never negative, never years off


def test_without_now_the_newest_log_line_is_now(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text("Jul 31 18:00:00 mx postfix/qmgr[1]: 1FD2B11832C4: removed\n")
    t = PastedTarget(str(_listing()), logs=[str(log)])
    assert t.now_source == "the newest log line"
    newest = datetime(datetime.fromtimestamp(log.stat().st_mtime).year, 7, 31, 18, 0, 0).timestamp()
    assert t.recorded_at == newest


def test_without_now_or_log_the_clock_is_used_and_said() -> None:
    t = PastedTarget(str(_listing()))
    assert t.recorded_at is None and t.now_source == "this machine's clock" and t.warnings


def test_a_listing_on_stdin(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    data = _listing().read_bytes()

    class Stdin(io.TextIOWrapper):
        def isatty(self) -> bool:
            return False

    monkeypatch.setattr("sys.stdin", Stdin(io.BytesIO(data)))
    assert main(["queue", "--mailq", "-", "--now", NOW, "-f", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["total_messages"] == 30


@pytest.mark.parametrize("argv,message", [
    (["queue", "--now", NOW], "--now goes with --mailq"),
    (["queue", "--mailq", "/nonexistent/mailq.txt"], "cannot read the listing"),
    (["queue", "--mailq", "README.md"], "not a mailq / postqueue -p listing"),
    (["queue", "--mailq", "x", "--demo"], "cannot be used together"),
])  # fmt: skip
def test_what_cannot_be_used_is_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) in (1, 2)
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_report_from_a_pasted_listing_and_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "mail.log"
    log.write_text("Jul 31 16:20:00 mx postfix/qmgr[1]: 10DFD11830F2: from=<sender-1@testsend_domain.tld>, size=263, "
                   "nrcpt=1 (queue active)\nJul 31 16:20:01 mx postfix/qmgr[1]: 10DFD11830F2: to=<user-1@test-domain.tld>, "
                   "relay=none, delay=1, delays=0/0/0/0, dsn=4.3.0, status=deferred (mail transport unavailable)\n")
    assert main(["report", "--mailq", str(_listing()), "--log", str(log), "-f", "json"]) in (4, 5)
    doc = json.loads(capsys.readouterr().out)
    assert doc["target"]["where"].startswith("pasted:") and doc["causes"][0]["id"] == "E31"
    assert doc["causes"][0]["impact"]["queued_recipients"] == 29  # the held message is not deferred


def test_a_bundle_with_only_postqueue_p_is_read_at_its_own_time(tmp_path: Path) -> None:
    w = SnapshotWriter(host="mx", postfix_version="2.11.3")
    w.add_command(CommandResult(("postqueue", "-p"), 0, _listing().read_text(), ""))
    out = tmp_path / "p-only.tar.gz"
    w.write(str(out))
    with SnapshotTarget(str(out)) as snap:
        read = read_queue(snap)
        assert read.source == "postqueue -p" and len(read.messages) == 30
        assert all(0 <= read.taken_at - m.arrival_time < 366 * 86400 for m in read.messages)
        assert abs(read.taken_at - (snap.recorded_at or 0)) < 1 and read.taken_at <= time.time()


def test_a_bundle_whose_json_listing_is_empty_reads_the_p_listing(tmp_path: Path) -> None:
    w = SnapshotWriter(host="mx", postfix_version="3.7.11")
    w.add_command(CommandResult(("postqueue", "-j"), 0, "", ""))
    w.add_command(CommandResult(("postqueue", "-p"), 0, _listing().read_text(), ""))
    out = tmp_path / "j-empty.tar.gz"
    w.write(str(out))
    with SnapshotTarget(str(out)) as snap:
        read = read_queue(snap)
    assert read.source == "postqueue -p" and len(read.messages) == 30
    assert "postqueue -p lists 30 message(s)" in read.notes[0]
