"""The bad day, on the real lab Postfix: `pfdiag queue delete --yes` SIGKILLed in the middle of a
few hundred messages, and an action log that takes no data (/dev/full).

The killed run is a real subprocess. Its postsuper is the real one behind a wrapper that waits a
moment first, so the kill lands while a batch is in flight (intent on disk, no outcome) and the
orphaned postsuper still deletes that batch after pfdiag is gone, as on the bad day.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from checks.targets import LocalTarget
from diagnose import restore
from diagnose.cli import main
from tests.lab.postfix import PostfixLab
from tests.lab.scenarios import SENDER

pytestmark = pytest.mark.lab
REPO = Path(__file__).resolve().parents[2]
N = 200
BATCH = 10
KILL_AT = 6  # the delete intent that is in flight when the run is killed


def pfdiag(capsys: pytest.CaptureFixture[str], lab: PostfixLab, *args: str) -> tuple[int, str, str]:
    rc = main([args[0], "-c", str(lab.config_dir), *args[1:]])
    out, err = capsys.readouterr()
    return rc, out, err


def _records(log: Path) -> list[dict]:
    out = []
    for line in log.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:  # a line torn by the kill
            continue
    return out


def _wrapper(tmp_path: Path, name: str, script: str) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / name).write_text(script)
    os.chmod(bin_dir / name, 0o755)
    return bin_dir


def _many_deferred(lab: PostfixLab, n: int, tag: str) -> dict[str, str]:
    """queue id -> recipient of n greylisted messages after their first (deferred) attempt."""
    lab.clear_queue()
    with ThreadPoolExecutor(8) as pool:
        sent = list(pool.map(lambda i: lab.inject(SENDER, [f"{tag}{i}@greylist.test"], subject=f"{tag} {i}",
                                                  body=f"body of {tag} {i}\n"), range(n)))  # fmt: skip
    out = {}
    for inj in sent:
        d = lab.wait_first_attempt(inj, timeout=60)
        assert d[0].status == "deferred"
        out[d[0].queue_id] = inj.recipients[0]
    return out


def _queued_recipients(lab: PostfixLab) -> dict[str, str]:
    return {str(r["address"]): str(m["queue_id"]) for m in lab.postqueue_json() for r in m["recipients"]}


def test_sigkill_mid_delete_then_log_and_restore(postfix_lab: PostfixLab, capsys, tmp_path: Path) -> None:
    mine = _many_deferred(postfix_lab, N, "killed")
    backup, log = tmp_path / "backup", tmp_path / "actions.log"
    slow = _wrapper(tmp_path, "postsuper", "#!/bin/sh\nsleep 0.5\nexec /usr/sbin/postsuper \"$@\"\n")
    env = {**postfix_lab.env, "PATH": f"{slow}:{os.environ.get('PATH', '/usr/bin:/bin')}",
           "PFDIAG_QUEUE_BATCH": str(BATCH), "PYTHONPATH": str(REPO)}  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "diagnose.cli", "queue", "delete", "-c", str(postfix_lab.config_dir),
                             "--domain", "greylist.test", "--yes", "--backup-dir", str(backup),
                             "--action-log", str(log)], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 120
    try:
        while True:
            intents = [r for r in _records(log) if r.get("phase") == "intent"] if log.exists() else []
            if len(intents) >= KILL_AT:
                break
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the run never reached its 6th batch"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    time.sleep(1.5)  # the orphaned postsuper of the batch in flight finishes its work
    in_flight = intents[-1]
    records = _records(log)
    assert not any(r.get("phase") == "end" for r in records)
    assert not any(r.get("phase") == "done" and r.get("seq") == in_flight["seq"] for r in records)
    assert len(in_flight["ids"]) == BATCH and in_flight["argv"][0] == "postsuper"

    # the log shows the interrupted run and the ids of the batch in flight
    rc, out, _ = pfdiag(capsys, postfix_lab, "queue", "log", "--action-log", str(log))
    assert rc == 0 and "1 interrupted" in out and in_flight["run"] in out and "delete" in out
    assert all(q in out for q in in_flight["ids"]) and f"pfdiag queue restore {backup} --dry-run" in out
    # ... and so does the next `pfdiag queue` (one warning line on stderr; stdout stays JSON)
    rc, out, err = pfdiag(capsys, postfix_lab, "queue", "--format", "json", "--action-log", str(log))
    assert rc == 0 and json.loads(out)["schema"] == "pfdiag.queue/1"
    assert err.count("was interrupted") == 1 and in_flight["run"] in err

    # every message is queued, or backed up and recorded as deleted (or in doubt and not queued)
    queued = set(postfix_lab.queue_ids()) & set(mine)
    plan = restore.restore_plan(LocalTarget(postfix_lab.env), str(backup), str(postfix_lab.config_dir))
    to_send = {i.qid: i for i in plan.restore}
    assert queued.isdisjoint(to_send) and queued | set(to_send) == set(mine)
    # the batches before the one in flight are deleted and recorded; the orphaned postsuper of the
    # one in flight deleted some of it (it dies of SIGPIPE at its first report to the dead pfdiag)
    done = {q for r in records if r.get("phase") == "done" and r.get("action") == "delete" for q in r["ids"]}
    assert len(done) == (KILL_AT - 1) * BATCH and {q for q, i in to_send.items() if i.why == "deleted"} == done
    doubt = set(to_send) - done
    assert doubt and doubt <= set(in_flight["ids"]) and all(to_send[q].why.startswith("in doubt") for q in doubt)
    assert all(Path(i.file).exists() and i.copy and i.copy.recipients == [mine[q]] and i.copy.sender == SENDER
               for q, i in to_send.items())  # fmt: skip
    never_deleted = {q for q, why in plan.skip}
    assert never_deleted <= queued  # copies of mail still queued are listed as such, not restored

    # restore: a dry run first (no terminal), then for real; the mail is queued again
    rc, out, _ = pfdiag(capsys, postfix_lab, "queue", "restore", str(backup), "--action-log", str(log))
    assert rc == 0 and "nothing was sent" in out and f"{len(to_send)} message(s) to send again" in out
    rc, out, err = pfdiag(capsys, postfix_lab, "queue", "restore", str(backup), "--yes", "--action-log", str(log))
    assert rc == 0, err
    assert "was interrupted" in err  # said once more, then acknowledged by this run
    want = {mine[q] for q in to_send}
    deadline = time.monotonic() + 30
    while not want <= set(_queued_recipients(postfix_lab)):
        assert time.monotonic() < deadline, sorted(want - set(_queued_recipients(postfix_lab)))[:5]
        postfix_lab.kick_pickup()
        time.sleep(0.5)
    again = _queued_recipients(postfix_lab)
    assert all(again[r] not in mine for r in want)  # new queue ids: re-submitted, not revived
    q = next(iter(to_send))
    body = postfix_lab.postcat("-q", again[mine[q]], check=True).stdout
    assert f"body of killed {mine[q].removeprefix('killed').split('@')[0]}\n" in body and f"sender: {SENDER}" in body
    assert sum(1 for r in again if r in set(mine.values())) == N  # every message exactly once
    # a second to_send sends nothing, and the interrupted run is no longer announced
    rc, out, err = pfdiag(capsys, postfix_lab, "queue", "restore", str(backup), "--yes", "--action-log", str(log))
    assert rc == 0 and "nothing to restore" in out and "restored already" in out and "was interrupted" not in err
    postfix_lab.clear_queue()


def test_action_log_on_dev_full_stops_before_any_postsuper(postfix_lab: PostfixLab, capsys, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    mine = _many_deferred(postfix_lab, 3, "devfull")
    marker = tmp_path / "ran"
    spy = f"#!/bin/sh\necho \"$0 $*\" >> {marker}\nexec /usr/sbin/$(basename \"$0\") \"$@\"\n"
    _wrapper(tmp_path, "postsuper", spy)
    bin_dir = _wrapper(tmp_path, "postcat", spy)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    def state() -> set[tuple[str, str]]:
        return {(str(m["queue_id"]), str(m["queue_name"])) for m in postfix_lab.postqueue_json()}

    before = state()
    for action in ("hold", "delete"):
        rc, out, err = pfdiag(capsys, postfix_lab, "queue", action, "--domain", "greylist.test", "--yes",
                              "--backup-dir", str(tmp_path / "b"), "--action-log", "/dev/full")  # fmt: skip
        assert rc == 1 and err.count("\n") == 1, err
        assert err.startswith("pfdiag: /dev/full: cannot write the action log (No space left on device)")
        assert "nothing was changed" in err and "internal error" not in err
    assert not marker.exists()  # neither postsuper nor postcat ran
    assert not (tmp_path / "b").exists()
    assert state() == before and {q for q, _ in before} == set(mine)
    postfix_lab.clear_queue()
