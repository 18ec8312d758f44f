"""The interactive wizard in a real terminal (tmux send-keys / capture-pane), through a
whole session against the live lab Postfix: where (this machine), the end-of-data question
(say yes, type a bad address, go back, say no), the report, one queue action picked, shown
as a dry run and confirmed (the mail really is held), and the report saved for a ticket.

`pfdiag` runs with no arguments, as an admin would type it; MAIL_CONFIG points Postfix's own
commands (and so pfdiag) at the lab instance, whose maillog_file is the lab log.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.lab.postfix import PostfixLab
from tests.lab.scenarios import SENDER

pytestmark = pytest.mark.lab


class Tmux:
    def __init__(self, name: str) -> None:
        self.name = name

    def start(self, argv: list[str], env: dict[str, str], cwd: str) -> None:
        exports = " ".join(f"{k}={_q(v)}" for k, v in env.items())
        cmd = f"cd {_q(cwd)} && env {exports} {' '.join(_q(a) for a in argv)}; echo WIZARD-EXIT=$?; sleep 60"
        subprocess.run(["tmux", "new-session", "-d", "-s", self.name, "-x", "160", "-y", "50", cmd], check=True)

    def screen(self) -> str:
        res = subprocess.run(["tmux", "capture-pane", "-t", self.name, "-p", "-S", "-"], capture_output=True, text=True)
        return res.stdout

    def keys(self, *keys: str) -> None:
        for k in keys:
            subprocess.run(["tmux", "send-keys", "-t", self.name, k], check=True)
            time.sleep(0.15)

    def text(self, s: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, "-l", s], check=True)
        time.sleep(0.15)

    def wait(self, pattern: str, timeout: float = 60.0, after: int = 0) -> int:
        """Wait until the regex appears after character offset `after`; return where it ends."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while True:
            screen = self.screen()
            m = rx.search(screen, after)
            if m:
                return m.end()
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} on the terminal within {timeout:g} s:\n{screen[-3000:]}")
            time.sleep(0.2)

    def kill(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)


def _q(s: str) -> str:
    import shlex

    return shlex.quote(s)


@pytest.fixture
def tmux() -> Tmux:
    if not shutil.which("tmux"):
        pytest.fail("tmux is not installed (tests/lab/install.sh installs it)")
    t = Tmux(f"pfdiag-wizard-{os.getpid()}")
    t.kill()
    yield t
    t.kill()


def test_whole_wizard_session(postfix_lab: PostfixLab, tmux: Tmux, tmp_path: Path) -> None:
    postfix_lab.clear_queue()
    sent = [postfix_lab.inject(SENDER, [f"w{n}@eod-stall.test"], subject=f"wizard {n}") for n in range(2)]
    ids = [postfix_lab.wait_first_attempt(inj, timeout=60)[0].queue_id for inj in sent]
    saved = tmp_path / "ticket.md"
    pfdiag = str(Path(sys.executable).with_name("pfdiag"))
    env = {"MAIL_CONFIG": str(postfix_lab.config_dir), "PATH": os.environ["PATH"], "TERM": "xterm-256color",
           "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8",
           # tmux's server has its own environment: the test's places (tests/conftest.py) are passed on by name
           **{k: v for k, v in os.environ.items() if k.startswith("PFDIAG_")}}  # fmt: skip
    tmux.start([pfdiag], env, str(tmp_path))

    pos = tmux.wait(r"Where is the Postfix whose mail is stuck\?")
    tmux.keys("Enter")  # this machine
    pos = tmux.wait(r"read the mail queue", after=pos)
    pos = tmux.wait(r"may pfdiag send 6 small-to-large REAL test messages", after=pos)
    tmux.keys("Up", "Enter")  # yes
    pos = tmux.wait(r"Recipient of the test messages.*\(< to go back\)", after=pos)
    tmux.text("not-an-address")
    tmux.keys("Enter")
    tmux.wait(r"an e-mail address like postmaster@example\.net", after=pos)  # validation, still asking
    tmux.keys("C-u")
    tmux.text("<")
    tmux.keys("Enter")  # back to the send question
    pos = tmux.wait(r"may pfdiag send 6 small-to-large REAL test messages", after=pos + 1)
    tmux.keys("Enter")  # the default: no
    pos = tmux.wait(r"talk SMTP to the next hops", after=pos)
    pos = tmux.wait(r"E09 No reply after the end of the message", after=pos, timeout=90)
    pos = tmux.wait(r"Review the queue actions now", after=pos)
    tmux.keys("Up", "Enter")  # yes
    pos = tmux.wait(r"Which queue actions\?", after=pos)
    tmux.keys("Space", "Enter")  # the first: hold E09 (every retry may deliver a duplicate)
    pos = tmux.wait(r"dry run|would run|DRY RUN|Dry run", after=pos)
    pos = tmux.wait(r"Run `pfdiag queue hold --cause E09", after=pos)
    tmux.text("y")
    pos = tmux.wait(r"done", after=pos)
    # the configuration fix of the cause found (the lab's smtp_data_done_timeout = 5s): offered, refused (default no)
    pos = tmux.wait(r"smtp_data_done_timeout: 5s -> 600s", after=pos)
    pos = tmux.wait(r"Apply this configuration change and reload Postfix\?", after=pos)
    tmux.keys("Enter")
    pos = tmux.wait(r"nothing was changed \(not confirmed\)", after=pos)
    pos = tmux.wait(r"Save this report for a ticket\?", after=pos)
    tmux.keys("Down", "Enter")  # Markdown
    pos = tmux.wait(r"File name:", after=pos)
    tmux.keys("C-u")
    tmux.text(str(saved))
    tmux.keys("Enter")
    tmux.wait(r"WIZARD-EXIT=4", after=pos)
    screen = tmux.screen()
    assert "Traceback" not in screen

    held = {m["queue_id"] for m in postfix_lab.postqueue_json() if m["queue_name"] == "hold"}
    assert set(ids) <= held, f"the confirmed hold did not hold the messages: {held}"
    text = saved.read_text()
    # (the lab log also holds earlier tests' deferrals: E09 need not be the first cause of the whole log)
    assert text.startswith("# pfdiag report: ") and "### " in text and "E09" in text and "eod-stall.test" in text
    postfix_lab.clear_queue()
