"""pfdiag report --budget N is the whole diagnosis: it ends within N seconds plus a small margin
whatever hangs - an SSH host that never sends its banner, one that never answers a command
(tests/lab/hostile_sshd.py, a real paramiko server on 127.0.0.1), with an SSH timeout far longer
than the budget. Each runs the real CLI as a child process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab import hostile_sshd

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
BUDGET = 20.0
MARGIN = 5.0


@pytest.fixture
def hostile(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[hostile_sshd.Hostile]:
    with hostile_sshd.running(request.param, tmp_path) as server:
        yield server


@pytest.mark.parametrize("hostile", ["nobanner", "noexec", "silent"], indirect=True)
def test_report_ends_within_its_budget_whatever_the_host_does(hostile: hostile_sshd.Hostile) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    env["PYTHONPATH"] = str(ROOT)
    start = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "diagnose.cli", "report", "--budget", f"{BUDGET:g}", "-f", "json",
                          *hostile.cli_options(120)], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=BUDGET + 60)  # fmt: skip
    took = time.monotonic() - start
    assert took < BUDGET + MARGIN, f"{hostile.mode}: {took:.1f} s (rc {res.returncode}) {res.stderr[-300:]}"
    assert res.returncode in (1, 4, 5), res.stderr  # a report or one line, never a traceback (3)
    assert "Traceback" not in res.stderr
