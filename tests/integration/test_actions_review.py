"""Adversarial tests of the queue actions' promises ("nothing is lost", "every action is logged")
against the real lab Postfix: a backup that cannot be whole, a copy already on disk, a message
with 8-bit bytes, a postsuper that cannot be run, a message that moved queue after the plan.

Greylisted mail stays deferred, so each test injects its own message(s). pytest's stdin is not a
terminal: actions that should run get --yes.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from checks.queue import read_queue
from checks.targets import LocalTarget
from diagnose import actions as act
from diagnose.cli import main
from tests.lab.postfix import SENDMAIL, Injected, PostfixLab, build_message, make_message_id
from tests.lab.scenarios import SENDER

pytestmark = pytest.mark.lab


def _deferred(lab: PostfixLab, body: bytes | str, tag: str) -> str:
    """Queue id of one greylisted message (body given as raw bytes or text) after its first attempt."""
    mid = make_message_id(tag)
    rcpt = f"{tag}@greylist.test"
    if isinstance(body, str):
        data = build_message(SENDER, [rcpt], subject=tag, message_id=mid, body=body)
    else:  # raw bytes, e.g. 8-bit Latin-1 that is not UTF-8: handed to sendmail as they are
        head = build_message(SENDER, [rcpt], subject=tag, message_id=mid, body="x\n")
        data = head[: head.index(b"\n\n") + 2] if b"\n\n" in head else head.split(b"\r\n\r\n")[0] + b"\n\n"
        data += body
    proc = subprocess.run([SENDMAIL, "-C", str(lab.config_dir), "-f", SENDER, "-t", "-i"], input=data,
                          capture_output=True, env=lab.env, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    d = lab.wait_first_attempt(Injected(mid, SENDER, (rcpt,), len(data), tag), timeout=30)
    assert d[0].status == "deferred"
    return d[0].queue_id


def pfdiag(capsys: pytest.CaptureFixture[str], lab: PostfixLab, *args: str) -> tuple[int, str, str]:
    rc = main([args[0], "-c", str(lab.config_dir), *args[1:]])
    out, err = capsys.readouterr()
    return rc, out, err


def _log(path: Path) -> list[dict[str, object]]:
    """The command records of the action log (without the run's start/end and the intents)."""
    return [r for r in map(json.loads, path.read_text().splitlines()) if r.get("phase", "done") == "done"]


@contextmanager
def file_size_limit(limit: int = 4096) -> Iterator[None]:
    """Files this process and its children write stop growing at `limit` bytes (RLIMIT_FSIZE):
    the kernel's EFBIG, as with a full disk, without filling one. SIGXFSZ ignored so that the
    write fails instead of killing the writer."""
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old_limit[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)


def test_full_disk_during_the_backup_deletes_nothing(postfix_lab, capsys, tmp_path):
    qid = _deferred(postfix_lab, "a long body line that fills the backup\n" * 400, "review-fulldisk")
    backup, log = tmp_path / "b", tmp_path / "a.log"
    with file_size_limit():
        rc, out, err = pfdiag(capsys, postfix_lab, "queue", "delete", "--id", qid, "--yes",
                              "--backup-dir", str(backup), "--action-log", str(log))  # fmt: skip
    assert rc == 1 and err.count("\n") == 1 and "backup failed" in err and qid in err
    assert postfix_lab.queued(qid) is not None  # not deleted
    assert list(backup.iterdir()) == []  # no partial copy that looks like a backup
    records = _log(log)
    assert [r["action"] for r in records] == ["backup"] and "not saved" in str(records[0]["result"])
    postfix_lab.postsuper("-d", qid)


def test_a_copy_already_in_the_backup_dir_is_kept_and_a_new_one_written(postfix_lab, capsys, tmp_path):
    qid = _deferred(postfix_lab, "second run, same directory\n", "review-samedir")
    backup = tmp_path / "b"
    backup.mkdir()
    (backup / f"{qid}.postcat").write_text("an earlier run's copy\n")
    rc, out, err = pfdiag(capsys, postfix_lab, "queue", "delete", "--id", qid, "--yes",
                          "--backup-dir", str(backup), "--action-log", str(tmp_path / "a.log"))  # fmt: skip
    assert rc == 0, err
    assert (backup / f"{qid}.postcat").read_text() == "an earlier run's copy\n"
    assert "second run, same directory" in (backup / f"{qid}.1.postcat").read_text()
    assert postfix_lab.queued(qid) is None


def test_a_symlink_in_the_backup_dir_is_not_followed(postfix_lab, capsys, tmp_path):
    qid = _deferred(postfix_lab, "symlink\n", "review-symlink")
    backup, victim = tmp_path / "b", tmp_path / "victim"
    backup.mkdir()
    victim.write_text("must stay\n")
    (backup / f"{qid}.postcat").symlink_to(victim)
    rc, _, err = pfdiag(capsys, postfix_lab, "queue", "delete", "--id", qid, "--yes",
                        "--backup-dir", str(backup), "--action-log", str(tmp_path / "a.log"))  # fmt: skip
    assert rc == 0, err
    assert victim.read_text() == "must stay\n"
    assert "*** MESSAGE FILE END" in (backup / f"{qid}.1.postcat").read_text()


def test_backup_dir_that_is_a_file_is_one_line_and_deletes_nothing(postfix_lab, capsys, tmp_path):
    qid = _deferred(postfix_lab, "backup dir is a file\n", "review-dirfile")
    (tmp_path / "b").write_text("")
    rc, _, err = pfdiag(capsys, postfix_lab, "queue", "delete", "--id", qid, "--yes",
                        "--backup-dir", str(tmp_path / "b"), "--action-log", str(tmp_path / "a.log"))  # fmt: skip
    assert rc == 1 and err.count("\n") == 1 and "nothing was deleted" in err
    assert postfix_lab.queued(qid) is not None
    postfix_lab.postsuper("-d", qid)


def test_8bit_message_is_backed_up_byte_for_byte(postfix_lab, capsys, tmp_path):
    body = "caf\u00e9 in Latin-1, not UTF-8\n".encode("latin-1")
    qid = _deferred(postfix_lab, body, "review-8bit")
    backup = tmp_path / "b"
    rc, _, err = pfdiag(capsys, postfix_lab, "queue", "delete", "--id", qid, "--yes",
                        "--backup-dir", str(backup), "--action-log", str(tmp_path / "a.log"))  # fmt: skip
    assert rc == 0, err
    saved = (backup / f"{qid}.postcat").read_bytes()
    assert body in saved  # the 0xE9 byte itself, not U+FFFD
    assert postfix_lab.queued(qid) is None


def test_postsuper_that_hangs_is_logged_and_one_line(postfix_lab, capsys, tmp_path, monkeypatch):
    """A postsuper that never answers (a stuck lock, NFS): the run stops with one line and the
    action log says which command did not finish, for which ids."""
    qid = _deferred(postfix_lab, "postsuper hangs\n", "review-hang")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "postsuper").write_text("#!/bin/sh\nexec sleep 30\n")
    os.chmod(fake / "postsuper", 0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    monkeypatch.setattr(act, "COMMAND_TIMEOUT", 1.0)
    log = tmp_path / "a.log"
    rc, _, err = pfdiag(capsys, postfix_lab, "queue", "hold", "--id", qid, "--yes", "--action-log", str(log))
    assert rc == 1 and err.count("\n") == 1
    records = _log(log)
    assert records[-1]["action"] == "hold" and records[-1]["ids"] == [qid]
    assert records[-1]["returncode"] is None and "no answer within" in str(records[-1]["result"])
    monkeypatch.undo()
    assert postfix_lab.queued(qid)["queue_name"] == "deferred"
    postfix_lab.postsuper("-d", qid)


def test_a_message_that_moved_queue_after_the_plan_is_not_touched(postfix_lab, tmp_path):
    """The plan shows the message deferred; before it runs, the message moves (here: to hold,
    standing in for deferred -> active). delete must not follow it there: "not found"."""
    qid = _deferred(postfix_lab, "moved after the plan\n", "review-moved")
    target = LocalTarget(postfix_lab.env)
    cfg = str(postfix_lab.config_dir)
    chosen, _ = act.select(read_queue(target, cfg).messages, act.Selection(ids=[qid]), lambda r: "")
    assert [m.queue_name for m in chosen] == ["deferred"]
    plan = act.build_plan("delete", chosen, cfg, str(tmp_path / "b"))
    assert [qid, "deferred"] == plan.commands[-1][-2:]  # the queue the plan showed, in the argv
    postfix_lab.postsuper("-h", qid, check=True)
    log = act.ActionLog(str(tmp_path / "a.log"))
    try:
        result = act.execute(target, plan, cfg, log)
    finally:
        log.close()
    assert not result.ok and result.not_found == [qid] and result.saved == {}
    assert f"{qid}: now in the hold queue, not deferred" in result.outcomes[-1].detail
    assert postfix_lab.queued(qid)["queue_name"] == "hold"  # still there
    assert "now in the hold queue" in _log(tmp_path / "a.log")[-1]["result"]
    postfix_lab.postsuper("-d", qid)


def test_a_count_mismatch_names_exactly_the_message_that_was_gone(postfix_lab, tmp_path):
    """Two messages planned, one removed before the run: the other is held, and the report
    names the one that was gone, not the whole postsuper batch."""
    a = _deferred(postfix_lab, "stays\n", "review-pair-a")
    b = _deferred(postfix_lab, "goes\n", "review-pair-b")
    target = LocalTarget(postfix_lab.env)
    cfg = str(postfix_lab.config_dir)
    chosen, _ = act.select(read_queue(target, cfg).messages, act.Selection(ids=[a, b]), lambda r: "")
    plan = act.build_plan("hold", chosen, cfg)
    postfix_lab.postsuper("-d", b, check=True)
    log = act.ActionLog(str(tmp_path / "a.log"))
    try:
        result = act.execute(target, plan, cfg, log)
    finally:
        log.close()
    assert result.not_found == [b]
    assert postfix_lab.queued(a)["queue_name"] == "hold"
    assert any(o.ok and "Placed on hold: 1 of 1" in o.detail for o in result.outcomes)
    postfix_lab.postsuper("-d", a)


def test_release_of_a_message_that_is_not_held_touches_nothing(postfix_lab, capsys, tmp_path):
    qid = _deferred(postfix_lab, "never held\n", "review-release")
    log = tmp_path / "a.log"
    rc, out, err = pfdiag(capsys, postfix_lab, "queue", "release", "--id", qid, "--yes", "--action-log", str(log))
    assert rc == 1 and err.count("\n") == 1 and qid in err
    assert f"{qid}: is in the deferred queue, not hold" in out
    assert [r["action"] for r in _log(log)] == ["recheck"]  # no postsuper ran
    assert postfix_lab.queued(qid)["queue_name"] == "deferred"
    postfix_lab.postsuper("-d", qid)
