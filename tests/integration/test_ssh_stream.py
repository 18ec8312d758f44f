"""SSHTarget.stream against the real OpenSSH server of tests/lab/sshd.py: lines arrive
while the remote command runs, and its end is judged like run() (status, stderr without
the wrapper's pid line, a missing program, the deadline with the command killed).
pfdiag queue --host streams postqueue through it (tests/integration/test_snapshot.py)."""

from __future__ import annotations

import time

import pytest

from checks.errors import CommandNotFound, CommandTimeout
from checks.queue import read_queue
from checks.targets import LocalTarget
from checks.targets.ssh import SSHTarget
from tests.lab import sshd as lab
from tests.lab.postfix import PostfixLab

pytestmark = pytest.mark.lab


@pytest.fixture
def target(ssh: dict[str, str], server: lab.Sshd):
    t = SSHTarget.open("mx1", ssh_config=ssh["config"], known_hosts=ssh["known_hosts"], command_timeout=20)
    yield t
    t.close()


def test_lines_arrive_while_the_remote_command_runs(target: SSHTarget) -> None:
    argv = ["sh", "-c", "echo first; sleep 1.5; printf 'second\\r\\nno newline'"]
    t0 = time.monotonic()
    with target.stream(argv) as out:
        it = iter(out)
        assert next(it) == "first"
        first_at = time.monotonic() - t0
        assert list(it) == ["second", "no newline"]
        res = out.result()
    assert first_at < 1.2, f"the first line waited for the whole command ({first_at:.2f} s)"
    assert res.returncode == 0 and res.stdout == "" and res.stderr == ""  # the pid line is not the command's


def test_status_and_stderr_like_run(target: SSHTarget) -> None:
    argv = ["sh", "-c", "echo out; echo 'it failed' >&2; exit 4"]
    with target.stream(argv) as out:
        lines = list(out)
        res = out.result()
    ran = target.run(argv)
    assert lines == ran.stdout.splitlines() == ["out"]
    assert (res.returncode, res.stderr) == (ran.returncode, ran.stderr) == (4, "it failed\n")


def test_missing_program_is_command_not_found(target: SSHTarget) -> None:
    with pytest.raises(CommandNotFound, match="pfdiag-no-such-tool: command not found on ssh:mx1"):
        with target.stream(["pfdiag-no-such-tool", "-j"]) as out:
            list(out)
    assert target.run(["true"]).ok  # the connection is still good


def test_overrun_is_command_timeout_and_the_remote_command_is_killed(target: SSHTarget, server: lab.Sshd) -> None:
    t0 = time.monotonic()
    with pytest.raises(CommandTimeout, match="no answer within 1 s on ssh:mx1"):
        with target.stream(["sh", "-c", "echo started; exec sleep 30"], timeout=1) as out:
            assert next(iter(out)) == "started"
            list(out)
    assert time.monotonic() - t0 < 4
    deadline = time.monotonic() + 4
    while any(lab.cmdline(p) == ["sleep", "30"] for p in lab.descendants(server.pid)):
        assert time.monotonic() < deadline, "the timed-out command still runs on the host"
        time.sleep(0.05)


def test_read_queue_over_ssh_streams_the_lab_queue(target: SSHTarget, postfix_lab: PostfixLab) -> None:
    from tests.lab.scenarios import SENDER

    inj = postfix_lab.inject(SENDER, ["ssh-stream@greylist.test"], subject="ssh stream")
    qid = postfix_lab.wait_first_attempt(inj, timeout=30)[0].queue_id
    seen = []
    remote = read_queue(target, str(postfix_lab.config_dir), on_message=seen.append)
    local = read_queue(LocalTarget(), str(postfix_lab.config_dir))
    assert remote.source == "postqueue -j" and seen == remote.messages
    assert qid in {m.queue_id for m in remote.messages}
    assert {m.queue_id: m for m in remote.messages} == {m.queue_id: m for m in local.messages}


