"""pfdiag queue and its actions against the real lab Postfix (tests/lab): greylisted mail
(451 4.7.1 on every attempt) stays deferred, so each test has a message of its own to act on.

pfdiag runs in-process through main([...]) with `-c <lab config dir>`; pytest's stdin is not a
terminal, so every action that should run gets --yes (without it: a dry run, tested too).
The stopped-Postfix test stops the lab and starts it again; it runs last.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from diagnose.cli import main
from diagnose.commands.config import SEED
from tests.lab.postfix import PostfixLab

pytestmark = pytest.mark.lab
QSHAPE = "/usr/sbin/qshape"
N = 8  # one message per test that consumes one


@pytest.fixture(scope="module")
def deferred(postfix_lab: PostfixLab) -> list[str]:
    """Queue ids of N greylisted messages after their first (deferred) attempt."""
    return postfix_lab.deferred_mail(N, "queue-actions", body="body of message {i}\n")


@pytest.fixture()
def pool(deferred: list[str]) -> list[str]:
    return deferred


def _take(pool: list[str]) -> str:
    return pool.pop()


def pfdiag(capsys: pytest.CaptureFixture[str], lab: PostfixLab, *args: str) -> tuple[int, str, str]:
    rc = main([args[0], "-c", str(lab.config_dir), *args[1:]])
    out, err = capsys.readouterr()
    return rc, out, err


def test_deferred_mail_in_queue_json_with_its_cause(postfix_lab, pool, capsys):
    rc, out, _ = pfdiag(capsys, postfix_lab, "queue", "--format", "json")
    assert rc == 0
    rep = json.loads(out)
    mine = {m["queue_id"]: m for m in rep["messages"]}
    for qid in pool:
        m = mine[qid]
        assert m["queue_name"] == "deferred"
        assert m["recipients"][0]["cause_id"] == "E21"  # greylisting
        assert m["forecast"]["mtime_source"] == "file"  # root can stat the queue file
        assert m["forecast"]["next_attempt_earliest"] > rep["now"]  # backoff not over yet
    group = next(g for g in rep["groups"] if g["domain"] == "greylist.test")
    assert group["cause_id"] == "E21" and set(pool) <= set(group["messages"])
    assert rep["counts"]["deferred"] >= len(pool)


def _qshape(lab: PostfixLab, queue: str) -> dict[str, list[int]]:
    proc = subprocess.run([QSHAPE, "-c", str(lab.config_dir), queue], capture_output=True, text=True, check=True,
                          env=lab.env, timeout=30)  # fmt: skip
    rows = {}
    for line in proc.stdout.splitlines()[1:]:
        parts = line.split()
        if parts:
            rows[parts[0]] = [int(x) for x in parts[1:]]
    return rows


def test_counts_agree_with_real_qshape(postfix_lab, pool, capsys):
    if not Path(QSHAPE).exists():
        pytest.skip("qshape is not installed (postfix package's /usr/sbin/qshape)")
    rc, out, _ = pfdiag(capsys, postfix_lab, "queue", "--format", "json", "--shape-queues", "deferred")
    assert rc == 0
    ours = {r["domain"]: [r["total"], *r["buckets"]] for r in json.loads(out)["matrix"]["rows"]}
    theirs = _qshape(postfix_lab, "deferred")
    assert ours == theirs
    assert ours["TOTAL"][0] >= len(pool)


def test_without_yes_and_terminal_it_is_a_dry_run(postfix_lab, pool, capsys):
    qid = pool[-1]
    rc, out, _ = pfdiag(capsys, postfix_lab, "queue", "hold", "--id", qid)
    assert rc == 0
    assert f"-h {qid}" in out and "nothing was changed" in out
    assert postfix_lab.queued(qid)["queue_name"] == "deferred"


def test_hold_then_release(postfix_lab, pool, capsys, tmp_path):
    qid, log = _take(pool), tmp_path / "actions.log"
    rc, out, err = pfdiag(capsys, postfix_lab, "queue", "hold", "--id", qid, "--yes", "--action-log", str(log))
    assert rc == 0, err
    assert postfix_lab.queued(qid)["queue_name"] == "hold"
    assert "Placed on hold: 1 of 1" in out
    rc, _, err = pfdiag(capsys, postfix_lab, "queue", "release", "--id", qid, "--queue", "hold", "--yes",
                        "--action-log", str(log))  # fmt: skip
    assert rc == 0, err
    assert postfix_lab.queued(qid)["queue_name"] == "deferred"
    records = [json.loads(line) for line in log.read_text().splitlines()]
    # two runs, each: start, the intent (on disk before postsuper ran), its outcome, end
    assert [(r["phase"], r.get("action")) for r in records] == [
        ("start", "hold"), ("intent", "hold"), ("done", "hold"), ("end", None),
        ("start", "release"), ("intent", "release"), ("done", "release"), ("end", None)]  # fmt: skip
    done = records[2]
    assert done["ids"] == [qid] and done["argv"][0] == "postsuper" and done["returncode"] == 0
    assert records[1]["seq"] == done["seq"] and records[1]["argv"] == done["argv"] and records[3]["ok"] is True


def test_requeue_gives_a_new_id(postfix_lab, pool, capsys, tmp_path):
    qid = _take(pool)
    mark = postfix_lab.mark()
    rc, _, err = pfdiag(capsys, postfix_lab, "queue", "requeue", "--id", qid, "--yes",
                        "--action-log", str(tmp_path / "a.log"))  # fmt: skip
    assert rc == 0, err
    postfix_lab.kick_pickup()
    m = postfix_lab.wait_for_log(rf"postfix/pickup\[\d+\]: (\w+): uid=\d+ from=<[^>]*> orig_id={qid}\b", 15, mark)
    assert m.group(1) != qid
    assert postfix_lab.queued(qid) is None


def test_retry_tries_one_message_now(postfix_lab, pool, capsys, tmp_path):
    qid = _take(pool)
    mark = postfix_lab.mark()
    rc, _, err = pfdiag(capsys, postfix_lab, "queue", "retry", "--id", qid, "--yes",
                        "--action-log", str(tmp_path / "a.log"))  # fmt: skip
    assert rc == 0, err
    postfix_lab.wait_for_log(rf": {qid}: to=<[^>]+>.*status=deferred", 15, mark)


def test_delete_with_backup(postfix_lab, pool, capsys, tmp_path):
    qid, backup = _take(pool), tmp_path / "backup"
    rc, out, err = pfdiag(capsys, postfix_lab, "queue", "delete", "--id", qid, "--yes", "--backup-dir", str(backup),
                          "--action-log", str(tmp_path / "a.log"))  # fmt: skip
    assert rc == 0, err
    saved = (backup / f"{qid}.postcat").read_text()
    assert "Subject: queue-actions" in saved  # headers
    assert re.search(r"body of message \d", saved)  # and body
    assert "*** ENVELOPE RECORDS" in saved
    assert postfix_lab.queued(qid) is None
    assert "Deleted: 1 of 1" in out


def test_expire_returns_to_sender(postfix_lab, pool, capsys, tmp_path):
    qid = _take(pool)
    mark = postfix_lab.mark()
    rc, _, err = pfdiag(capsys, postfix_lab, "queue", "expire", "--id", qid, "--yes",
                        "--action-log", str(tmp_path / "a.log"))  # fmt: skip
    assert rc == 0, err
    postfix_lab.wait_for_log(rf"qmgr\[\d+\]: {qid}: from=<[^>]*>, status=force-expired, returned to sender", 15, mark)


def test_invalid_id_is_one_line(postfix_lab, capsys):
    rc, out, err = pfdiag(capsys, postfix_lab, "queue", "delete", "--id", "../../etc/passwd", "--yes")
    assert rc == 2 and err.count("\n") == 1 and "not a Postfix queue id" in err


def test_unknown_id_is_not_found(postfix_lab, pool, capsys, tmp_path):
    log = tmp_path / "a.log"
    rc, _, err = pfdiag(capsys, postfix_lab, "queue", "delete", "--id", "ABCDEF123456", "--yes",
                        "--action-log", str(log))  # fmt: skip
    assert rc == 1 and "not found" in err and err.count("\n") == 1
    assert not log.exists()  # nothing ran


def test_config_apply_seed_then_restore(postfix_lab, capsys, tmp_path):
    log = tmp_path / "config.log"
    before = postfix_lab.postconf("-h", "minimal_backoff_time", "queue_run_delay").split()
    rc, _, err = pfdiag(capsys, postfix_lab, "config", "--propose", "seed", "--apply", "--action-log", str(log))
    assert rc == 0 and "nothing was changed" in err  # no terminal, no --yes
    assert not log.exists()
    try:
        rc, out, err = pfdiag(capsys, postfix_lab, "config", "--propose", "seed", "--apply", "--yes", "--action-log", str(log))
        assert rc == 0, err
        assert postfix_lab.postconf("-h", "minimal_backoff_time", "queue_run_delay").split() == ["120s", "100s"]
        # diagnose.configfix: a run (start, intent/done per command, end); the outcomes carry the values before
        records = [r for r in map(json.loads, log.read_text().splitlines()) if r.get("phase") == "done"]
        assert [r["argv"][-1] for r in records] == ["bounce_queue_lifetime=24h", "reload"]
        assert records[0]["before"]["minimal_backoff_time"] == before[0]
    finally:
        # the lab's main.cf leaves these at their defaults: remove what --apply wrote
        postfix_lab.postconf_edit("-X", *SEED)
        assert postfix_lab.postconf("-h", "minimal_backoff_time", "queue_run_delay").split() == before
        postfix_lab.reload()


def test_stopped_postfix_is_a_clear_error_and_loses_nothing(postfix_lab, pool, capsys, tmp_path):
    qid = _take(pool)
    postfix_lab.stop(release=False)
    try:
        rc, _, err = pfdiag(capsys, postfix_lab, "queue", "delete", "--id", qid, "--yes",
                            "--backup-dir", str(tmp_path / "b"), "--action-log", str(tmp_path / "a.log"))  # fmt: skip
        assert rc == 1 and "not running" in err and err.count("\n") == 1
        rc, out, err = pfdiag(capsys, postfix_lab, "queue", "--format", "json")  # root still reads the queue
        assert rc == 0 and "NOT running" in json.loads(out)["notes"][0]
        assert qid in out
        # postcat reads the queue file directly: the message is still there, untouched
        assert "body of message" in postfix_lab.postcat("-q", qid, check=True).stdout
        assert not (tmp_path / "a.log").exists() and not (tmp_path / "b").exists()
    finally:
        postfix_lab.start()
