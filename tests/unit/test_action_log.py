"""The write-ahead action log, the interrupted-run warning, the backup manifest and the parsing
of postcat copies for `pfdiag queue restore` (tests/data/postcat-deferred.txt is a real
`postcat -q` copy made by the lab's delete; the lab tests run the whole thing for real)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from checks.errors import InputError
from checks.postfix.postqueue import QueuedMessage
from diagnose import actions as act
from diagnose import restore

REAL_COPY = Path(__file__).resolve().parents[1] / "data" / "postcat-deferred.txt"


def test_parse_a_real_postcat_copy() -> None:
    c = restore.parse_copy(REAL_COPY.read_bytes())
    assert c.sender == "lab@sender.test" and c.recipients == ["killed106@greylist.test"]
    assert c.content.startswith(b"Received: by lab.pfdiag.test") and c.content.endswith(b"\n\nbody of killed 106\n")


def test_parse_skips_delivered_recipients_and_lines_in_the_body_that_look_like_records() -> None:
    data = (b"*** ENVELOPE RECORDS deferred/ABC123 ***\nsender: a@x.test\nrecipient: one@y.test\n"
            b"done_recipient: gone@y.test\n*** MESSAGE CONTENTS deferred/ABC123 ***\nSubject: s\n\n"
            b"recipient: fake@evil.test\n*** HEADER EXTRACTED deferred/ABC123 ***\ncaf\xe9 8-bit\n"
            b"*** HEADER EXTRACTED deferred/ABC123 ***\nrecipient: two@y.test\n*** MESSAGE FILE END deferred/ABC123 ***\n")  # fmt: skip
    c = restore.parse_copy(data)
    assert c.recipients == ["one@y.test", "two@y.test"]  # not the delivered one, not the body's line
    assert c.content == b"Subject: s\n\nrecipient: fake@evil.test\n*** HEADER EXTRACTED deferred/ABC123 ***\ncaf\xe9 8-bit\n"


def test_null_sender_and_a_torn_copy() -> None:
    whole = REAL_COPY.read_bytes().replace(b"sender: lab@sender.test\n", b"sender: \n")
    assert restore.parse_copy(whole).sender == ""
    with pytest.raises(InputError, match="not a whole postcat copy"):
        restore.parse_copy(REAL_COPY.read_bytes().split(b"*** HEADER EXTRACTED")[0])


def test_dev_full_fails_at_the_first_record_and_close_is_quiet() -> None:
    log = act.ActionLog("/dev/full")
    with pytest.raises(InputError, match=r"^/dev/full: cannot write the action log \(No space left on device\); nothing was changed$"):
        log.begin("hold", ["ABCDEF12345"])
    log.close()  # the buffered record cannot be written either: no OSError escapes


def test_check_writable(tmp_path: Path) -> None:
    act.check_writable(str(tmp_path / "new" / "dir" / "a.log"))  # created by ActionLog
    with pytest.raises(InputError, match="a directory"):
        act.check_writable(str(tmp_path))
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="cannot create it"):
        act.check_writable(str(tmp_path / "file" / "a.log"))


def _dead_run(path: Path, run: str, *, intent_ids: list[str], done: bool) -> None:
    recs = [{"time": "2026-01-01T10:00:00+0000", "run": run, "phase": "start", "action": "delete", "pid": 999999999,
             "proc_start": "1", "ids": intent_ids, "backup_dir": "/b", "acknowledges": []},
            {"run": run, "phase": "intent", "seq": 1, "action": "delete", "ids": intent_ids[:1], "argv": ["postsuper"]},
            {"run": run, "phase": "done", "seq": 1, "action": "delete", "ids": intent_ids[:1], "argv": ["postsuper"]},
            {"run": run, "phase": "intent", "seq": 2, "action": "delete", "ids": intent_ids[1:], "argv": ["postsuper"]}]  # fmt: skip
    if done:
        recs += [{"run": run, "phase": "done", "seq": 2}, {"run": run, "phase": "end", "ok": True}]
    with path.open("a") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in recs)


def test_interrupted_runs_name_the_ids_in_doubt(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    _dead_run(log, "r1", intent_ids=["AAA111", "BBB222", "CCC333"], done=False)
    _dead_run(log, "r2", intent_ids=["DDD444", "EEE555"], done=True)
    with log.open("a") as fh:
        fh.write('{"run": "r1", "phase": "do')  # torn by the kill
    [r] = act.interrupted_runs(str(log))
    assert (r.run, r.action, r.in_doubt, r.time) == ("r1", "delete", ["BBB222", "CCC333"], "2026-01-01T10:00:00+0000")
    line = r.line(str(log))
    assert "run r1 (started 2026-01-01T10:00:00+0000) was interrupted" in line and "BBB222 CCC333" in line
    assert "pfdiag queue restore /b --dry-run" in line
    # a later run that showed the warning acknowledges it: not shown again, still in the history
    later = act.ActionLog(str(log))
    later.begin("hold", ["FFF666"], acknowledges=["r1"])
    later.end(True)
    later.close()
    assert act.interrupted_runs(str(log)) == []
    assert log.read_text().splitlines()[-3] == '{"run": "r1", "phase": "do'  # the next run began on a new line
    assert [r.run for r in act.interrupted_runs(str(log), include_acknowledged=True)] == ["r1"]


def test_a_run_still_going_is_not_interrupted(tmp_path: Path) -> None:
    log = act.ActionLog(str(tmp_path / "a.log"))
    log.begin("hold", ["AAA111"])
    log.intent("hold", ["AAA111"], ["postsuper", "-h", "AAA111"])
    assert act.interrupted_runs(str(tmp_path / "a.log")) == []  # this very process: running
    log.close()
    assert act.interrupted_runs("/dev/full") == [] and act.interrupted_runs(str(tmp_path / "none")) == []


def test_batch_size_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PFDIAG_QUEUE_BATCH", "7")
    assert [len(b) for b in act._batches([str(i) for i in range(20)])] == [7, 7, 6]
    for bad, want in (("0", 1), ("100000", act.BATCH), ("x", act.BATCH)):
        monkeypatch.setenv("PFDIAG_QUEUE_BATCH", bad)
        assert act.batch_size() == want


def _msg(qid: str, arrival: float) -> QueuedMessage:
    return QueuedMessage(queue_name="deferred", queue_id=qid, arrival_time=arrival, size=1, sender="a@x.test",
                         recipients=(), forced_expire=False)  # fmt: skip


def test_restore_plan_follows_the_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = REAL_COPY.read_bytes()
    states = {"AAA111": ["copied", "deleting", "deleted"], "BBB222": ["copied"], "CCC333": ["copied", "deleting"],
              "DDD444": ["copied", "deleting"], "EEE555": ["copied", "deleting", "deleted", "restoring", "restored"],
              "FFF666": ["copied", "deleting", "gone"]}  # fmt: skip
    m = act.Manifest(str(tmp_path), "run1")
    for qid, seq in states.items():
        (tmp_path / f"{qid}.postcat").write_bytes(copy)
        for st in seq:
            m.put(st, [qid], **({"file": f"{qid}.postcat", "arrival_time": 1000.0} if st == "copied" else {}))
    m.close()
    queued = [_msg("DDD444", 1000.0), _msg("BBB222", 1000.0), _msg("FFF666", 5000.0)]  # FFF666: a reused id
    monkeypatch.setattr(restore, "read_queue", lambda target, cfg: type("R", (), {"messages": queued})())
    plan = restore.restore_plan(object(), str(tmp_path), "/etc/postfix-x")  # type: ignore[arg-type]
    assert {i.qid: i.why.split(":")[0] for i in plan.restore} == {"AAA111": "deleted", "CCC333": "in doubt",
                                                                  "FFF666": "in doubt"}  # fmt: skip
    assert dict(plan.skip) == {"BBB222": "never deleted (a copy of mail that stayed queued)",
                               "DDD444": "in doubt, but still queued: not deleted", "EEE555": "restored already"}  # fmt: skip
    argv = plan.restore[0].argv
    assert argv == ["sendmail", "-C", "/etc/postfix-x", "-G", "-i", "-f", "lab@sender.test", "--", "killed106@greylist.test"]
    text = restore.render_restore_plan(plan)
    assert "3 message(s) to send again" in text and "may have been delivered just before" in text


def test_no_manifest_no_restore(tmp_path: Path) -> None:
    (tmp_path / "AAA111.postcat").write_bytes(REAL_COPY.read_bytes())
    with pytest.raises(InputError, match="cannot tell deleted copies from copies of mail still queued"):
        restore.read_manifest(str(tmp_path))
    assert os.listdir(tmp_path) == ["AAA111.postcat"]


def test_queue_log_and_the_restore_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from diagnose.cli import main

    log = tmp_path / "a.log"
    _dead_run(log, "r1", intent_ids=["AAA111", "BBB222"], done=False)
    assert main(["queue", "log", "--action-log", str(log)]) == 0
    out = capsys.readouterr().out
    assert "1 recent run(s), 1 interrupted" in out and "run r1" in out and "BBB222" in out
    assert main(["queue", "log", "--action-log", str(log), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["interrupted"][0]["in_doubt"] == ["BBB222"] and doc["recent_runs"][0]["run"] == "r1"
    assert main(["queue", "log", "--action-log", str(tmp_path / "none")]) == 1
    assert main(["queue", "restore", "--action-log", str(log)]) == 2
    assert "say which backup directory" in capsys.readouterr().err
    assert main(["queue", "hold", str(tmp_path), "--id", "AAA111"]) == 2
    assert main(["queue", "restore", str(tmp_path), "--action-log", str(log)]) == 1  # no manifest there
    err = capsys.readouterr().err
    assert err.count("was interrupted") == 1 and err.strip().endswith("nothing restored")


def test_an_action_log_with_foreign_lines_is_read_past_them(tmp_path) -> None:
    # a JSON line that is not an object (5, "x", []) or a torn one: skipped, never an AttributeError
    log = tmp_path / "actions.log"
    log.write_text('5\n"text"\n[]\n{"run": "r1", "phase": "start", "pid": 1, "action": "hold", "ids": ["ABC123"]}\n'
                   '{"run": "r1", "phase": "intent", "seq": 1, "ids": ["ABC123"], "argv": ["postsuper", "-h"]}\n{"run": ')
    from diagnose.actionlog import interrupted_runs, json_records

    assert [r.get("phase") for r in json_records(str(log))] == ["start", "intent"]
    assert [r.run for r in interrupted_runs(str(log))] == ["r1"]
