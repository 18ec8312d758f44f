"""checks.queue.queue_answers: whether Postfix's queue listing answers here, decided from the
first line of `postqueue -j` (a real child process: a stand-in postqueue script on PATH), so a
huge queue is neither waited for nor held in memory, and a stopped mail system says no."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from checks.queue import queue_answers
from checks.targets.local import LocalTarget


def _target_with(tmp_path: Path, script: str) -> LocalTarget:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "postqueue"
    exe.write_text("#!/bin/sh\n" + script)
    exe.chmod(0o755)
    return LocalTarget(env={**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin"})


def test_an_endless_listing_answers_at_its_first_line_and_the_command_is_stopped(tmp_path: Path) -> None:
    # 'yes' writes a record line forever: far more than any bounded run() would keep
    pid_file = tmp_path / "pid"
    t = _target_with(tmp_path, f'echo $$ > {pid_file}\nexec yes \'{{"queue_name": "deferred", "queue_id": "4AB12C3D4E"}}\'\n')
    start = time.monotonic()
    assert queue_answers(t) is True
    assert time.monotonic() - start < 5
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):  # stopped and reaped, not left writing
        os.kill(pid, 0)


def test_a_mail_system_that_is_down_does_not_answer(tmp_path: Path) -> None:
    t = _target_with(tmp_path, 'echo "postqueue: fatal: Queue report unavailable - mail system is down" >&2\nexit 69\n')
    assert queue_answers(t) is False


def test_an_empty_queue_answers(tmp_path: Path) -> None:
    t = _target_with(tmp_path, "exit 0\n")
    assert queue_answers(t) is True


def test_a_listing_that_hangs_before_its_first_line_is_bounded_by_the_timeout(tmp_path: Path) -> None:
    from checks.errors import CommandTimeout

    t = _target_with(tmp_path, "exec sleep 30\n")
    start = time.monotonic()
    with pytest.raises(CommandTimeout):
        queue_answers(t, timeout=1)
    assert time.monotonic() - start < 5
