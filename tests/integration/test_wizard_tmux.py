"""The interactive wizard in a real terminal (tmux send-keys / capture-pane), at 80 and 160
columns, every screen captured and read:

- a whole session against the live lab Postfix: where (this machine), the end-of-data question
  (say yes, read the recipient question, type a bad address, go back, say no), the report, the
  queue actions grouped per cause with titles (only those that fit), one picked, shown as a dry
  run and confirmed (the mail really is held), and the report saved for a ticket;
- `pfdiag --demo`: the report, and the plain statement that queue actions need the live host;
- a wrong SSH host: said, and "where" is asked again;
- no Postfix on this machine: "paste what you have" (a mailq listing file, pasted log lines).

No screen may hold a cut line: a word running straight into a box's right border.
`pfdiag` runs as an admin would type it; MAIL_CONFIG points Postfix's own commands (and so
pfdiag) at the lab instance, whose maillog_file is the lab log.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.lab.postfix import PostfixLab
from tests.lab.scenarios import SENDER

pytestmark = pytest.mark.lab


class Tmux:
    def __init__(self, name: str) -> None:
        self.name = name
        self.width = 160
        self.shots = 0

    def start(self, argv: list[str], env: dict[str, str], cwd: str, width: int = 160) -> None:
        # the tmux server's own environment (from whoever started it) may hold COLUMNS/LINES of another
        # terminal, and `env` only adds: the pane's size is said explicitly
        env = {**env, "COLUMNS": str(width), "LINES": "50"}
        exports = " ".join(f"{k}={_q(v)}" for k, v in env.items())
        cmd = f"cd {_q(cwd)} && env {exports} {' '.join(_q(a) for a in argv)}; echo WIZARD-EXIT=$?; sleep 60"
        argv = ["tmux", "new-session", "-d", "-s", self.name, "-x", str(width), "-y", "50", cmd]
        if subprocess.run(argv).returncode != 0:  # the previous test's server may just be exiting: once more
            time.sleep(1)
            subprocess.run(argv, check=True)
        self.width = width

    def screen(self, joined: bool = True) -> str:
        """The whole pane; joined: the lines the terminal wrapped at its width are one line again (-J),
        so that a pattern finds a sentence wherever the width broke it."""
        argv = ["tmux", "capture-pane", "-t", self.name, "-p", "-S", "-"] + (["-J"] if joined else [])
        return subprocess.run(argv, capture_output=True, text=True).stdout

    def keys(self, *keys: str) -> None:
        for k in keys:
            subprocess.run(["tmux", "send-keys", "-t", self.name, k], check=True)
            time.sleep(0.15)

    def text(self, s: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, "-l", s], check=True)
        time.sleep(0.15)

    def wait(self, pattern: str, timeout: float = 60.0, after: int = 0) -> int:
        """Wait until the regex appears after character offset `after`; return where it ends. A space in
        the pattern matches any run of white space: the wizard breaks long questions at spaces."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern.replace(" ", r"\s+"))
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


# a word (or a title) that runs straight into a box's right border: the text was cut there
CUT = re.compile(r"[^\s\u2500-\u257f]([─━]*)[╮╯┐┘│┃┓┛┤]\s*$")


def cut_lines(screen: str) -> list[str]:
    return [line for line in screen.splitlines() if CUT.search(line)]


def read_screen(tmux: Tmux) -> str:
    """The whole session so far; asserted free of cut lines, tracebacks and lines wider than the terminal."""
    screen = tmux.screen(joined=False)
    keep = os.environ.get("WIZARD_SCREENS")  # a directory: every screen read is kept there, to look at
    if keep:
        tmux.shots += 1
        Path(keep, f"{os.environ.get('PYTEST_CURRENT_TEST', 'test').split(' ')[0].split('::')[-1]}-{tmux.shots}.txt").write_text(screen)
    assert not cut_lines(screen), "cut lines:\n" + "\n".join(cut_lines(screen))
    assert "Traceback" not in screen
    assert max(len(line) for line in screen.splitlines()) <= tmux.width
    return screen


def wizard_env(**extra: str) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "TERM": "xterm-256color", "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8",
            "MAIL_CONFIG": os.environ.get("MAIL_CONFIG", ""),
            # tmux's server has its own environment: the test's places (tests/conftest.py) are passed on by name
            **{k: v for k, v in os.environ.items() if k.startswith("PFDIAG_")}, **extra}  # fmt: skip


PFDIAG = str(Path(sys.executable).with_name("pfdiag"))


def _q(s: str) -> str:
    import shlex

    return shlex.quote(s)


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    if not shutil.which("tmux"):
        pytest.fail("tmux is not installed (tests/lab/install.sh installs it)")
    t = Tmux(f"pfdiag-wizard-{os.getpid()}")
    t.kill()
    yield t
    t.kill()


@pytest.mark.parametrize("width", [80, 160])
def test_whole_wizard_session(postfix_lab: PostfixLab, tmux: Tmux, tmp_path: Path, width: int) -> None:
    postfix_lab.clear_queue()
    sent = [postfix_lab.inject(SENDER, [f"w{n}@eod-stall.test"], subject=f"wizard {n}") for n in range(2)]
    ids = [postfix_lab.wait_first_attempt(inj, timeout=60)[0].queue_id for inj in sent]
    saved = tmp_path / "ticket.md"
    pfdiag = str(Path(sys.executable).with_name("pfdiag"))
    env = {"MAIL_CONFIG": str(postfix_lab.config_dir), "PATH": os.environ["PATH"], "TERM": "xterm-256color",
           "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8",
           # tmux's server has its own environment: the test's places (tests/conftest.py) are passed on by name
           **{k: v for k, v in os.environ.items() if k.startswith("PFDIAG_")}}  # fmt: skip
    tmux.start([pfdiag], env, str(tmp_path), width)

    pos = tmux.wait(r"Where is the Postfix whose mail is stuck\?")
    tmux.keys("Enter")  # this machine
    pos = tmux.wait(r"read the mail queue", after=pos)
    pos = tmux.wait(r"End-of-data timeouts to eod-stall\.test: may pfdiag send 6 small-to-large REAL test", after=pos)
    tmux.keys("Up", "Enter")  # yes
    pos = tmux.wait(r"Recipient of the test messages:\s*\(< to go back\)", after=pos)
    # what the test does and where it goes: the destination, its next hop, any mailbox behind it
    read_screen(tmux)
    asked = " ".join(tmux.screen().split())
    assert "The test messages go to the next hop of eod-stall.test (" in asked
    assert "Any mailbox behind that next hop will do" in asked
    tmux.text("not-an-address")
    tmux.keys("Enter")
    tmux.wait(r"an e-mail address like postmaster@example\.net", after=pos)  # validation, still asking
    tmux.keys("C-u")
    tmux.text("<")
    tmux.keys("Enter")  # back to the send question
    pos = tmux.wait(r"may pfdiag\s+send 6 small-to-large REAL test messages", after=pos + 1)
    tmux.keys("Enter")  # the default: no
    pos = tmux.wait(r"talk SMTP to the next hops", after=pos)
    pos = tmux.wait(r"E09 No reply after the end of the message", after=pos, timeout=90)
    pos = tmux.wait(r"Review the queue actions now", after=pos)
    tmux.keys("Up", "Enter")  # yes
    pos = tmux.wait(r"Which queue actions\?", after=pos)
    time.sleep(0.5)
    read_screen(tmux)
    menu = tmux.screen()[pos:]
    # grouped per cause, titled with the id, the title and how many wait; only what fits now: the
    # end-of-data mail is held while it is fixed, never retried before a fix
    group = re.search(r"E09 No reply after the end of the message[^\n]* · (\d+) queued\n((?:\s+»?\s*[○●] .*\n)+)", menu)
    assert group, menu
    assert int(group.group(1)) >= 2 and re.findall(r"[○●] (\w+)", group.group(2)) == ["hold"], group.group(0)
    assert "while you fix it: every retry may deliver it twice" in group.group(2)
    assert not re.search(r"E21 .*\n\s+»?\s*[○●] hold", menu), "greylisting is never held"
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
    read_screen(tmux)

    held = {m["queue_id"] for m in postfix_lab.postqueue_json() if m["queue_name"] == "hold"}
    assert set(ids) <= held, f"the confirmed hold did not hold the messages: {held}"
    text = saved.read_text()
    # (the lab log also holds earlier tests' deferrals: E09 need not be the first cause of the whole log)
    assert text.startswith("# pfdiag report: ") and "### " in text and "E09" in text and "eod-stall.test" in text
    postfix_lab.clear_queue()


@pytest.mark.parametrize("width", [80, 160])
def test_demo_says_queue_actions_need_the_live_host(tmux: Tmux, tmp_path: Path, width: int) -> None:
    """`pfdiag --demo` (a top-level option): the report, and instead of no actions at all, the plain
    statement that queue actions need the live host and how to get there."""
    tmux.start([PFDIAG, "--demo"], wizard_env(), str(tmp_path), width)
    pos = tmux.wait(r"Save this report for a ticket\?", timeout=90)
    screen = read_screen(tmux)
    flat = " ".join(screen.split())
    assert "using the demo snapshot shipped with pfdiag" in flat and "Do this now" in flat
    assert "Queue actions (hold, retry, release) change a live Postfix, and this is a recording" in flat
    assert "run pfdiag on the mail host, or `pfdiag --host HOST` from here" in flat
    # the headline is longer than a panel title can be even at 120 columns: a short title, the headline whole inside
    assert "╭─ Deferred mail: root cause found ─" in screen
    panel = screen[screen.index("╭─ Deferred mail") : screen.index("╰")]
    assert "E09 No reply after the end of the message (possible duplicates) - most likely: the receiving server is slow" \
        in " ".join(panel.replace("│", " ").split())  # fmt: skip
    assert "next retry in 0 s" not in flat
    tmux.keys("Enter")  # no
    tmux.wait(r"WIZARD-EXIT=4", after=pos)


@pytest.mark.parametrize("width", [80, 160])
def test_a_wrong_ssh_host_is_asked_again(tmux: Tmux, tmp_path: Path, width: int) -> None:
    argv = [PFDIAG, "--ssh-config", os.devnull, "--known-hosts", str(tmp_path / "kh"), "--ssh-timeout", "5"]
    tmux.start(argv, wizard_env(), str(tmp_path), width)
    pos = tmux.wait(r"Where is the Postfix whose mail is stuck\?")
    tmux.keys("Down", "Enter")  # a mail host over SSH
    pos = tmux.wait(r"SSH host \(\[user@\]host\[:port\] or an ssh_config alias\):", after=pos)
    tmux.text("root@127.0.0.1:1")
    tmux.keys("Enter")
    pos = tmux.wait(r"pfdiag: cannot reach 127\.0\.0\.1:1", after=pos, timeout=30)
    pos = tmux.wait(r"Where is the Postfix whose mail is stuck\?", after=pos)  # asked again, not the end
    read_screen(tmux)
    tmux.keys("Down", "Down", "Down", "Down", "Enter")  # the demo snapshot
    pos = tmux.wait(r"Save this report for a ticket\?", after=pos, timeout=90)
    read_screen(tmux)
    tmux.keys("Enter")
    tmux.wait(r"WIZARD-EXIT=4", after=pos)


def test_paste_what_you_have(tmux: Tmux, tmp_path: Path) -> None:
    """No Postfix here (none on PATH, no log): the wizard asks what the user has; a mailq listing
    given as a file and log lines pasted into the terminal are diagnosed."""
    from tests.corpus import CORPUS

    listing = CORPUS / "outini__pymailq__tests_samples_mailq.sample.txt"
    if not listing.exists():
        pytest.fail(f"shared corpus not found at {CORPUS}")
    env = wizard_env(PATH=f"{Path(sys.executable).parent}:/usr/bin:/bin", PFDIAG_SBIN_PATH="")  # no postconf: nothing here
    tmux.start([PFDIAG], env, str(tmp_path), 80)
    pos = tmux.wait(r"Where is the Postfix whose mail is stuck\?")
    tmux.keys("Enter")  # this machine
    pos = tmux.wait(r"There is no Postfix to diagnose on this machine\. What do you have\?", after=pos, timeout=30)
    assert "nothing to diagnose on this machine" in tmux.screen()
    tmux.keys("Up", "Up", "Up", "Enter")  # a mailq listing and/or log lines
    pos = tmux.wait(r"mailq listing: paste it or type a file name, then Esc Enter", after=pos)
    tmux.text(str(listing))
    tmux.keys("Escape", "Enter")
    pos = tmux.wait(r"Log lines: paste them or type a file name, then Esc Enter", after=pos)
    for n in range(2):
        tmux.text(f"Aug  1 11:5{n}:01 mx postfix/smtp[12{n}]: 3F1A2B4C5{n}: to=<u{n}@partner.test>, "
                  "relay=mx.partner.test[192.0.2.7]:25, delay=900, delays=0.1/0/0.2/600, dsn=4.4.2, status=deferred "
                  "(conversation with mx.partner.test[192.0.2.7] timed out while sending end of data -- message may be "
                  "sent more than once)")  # fmt: skip
        tmux.keys("Enter")
    tmux.keys("Escape", "Enter")
    pos = tmux.wait(r"Save this report for a ticket\?", after=pos, timeout=90)
    flat = " ".join(read_screen(tmux).split())
    assert "reading pasted input" in flat and "queue: 30 message(s)" in flat and "E09" in flat
    assert "Queue actions (hold, retry, release) change a live Postfix" in flat
    tmux.keys("Enter")
    tmux.wait(r"WIZARD-EXIT=\d", after=pos)


@pytest.mark.parametrize("symptom, keys, found", [
    ("eod", ("Up", "Up", "Up", "Enter"), "pfdiag found no 'timed out while sending end of data'"),
    ("slow", ("Up", "Enter"), "pfdiag found deliveries that took 5 minutes or more (delay= in status=sent lines): "
                              "1 log line(s) of 1 message(s)"),
])  # fmt: skip
def test_the_symptom_answer_is_searched_for(tmux: Tmux, tmp_path: Path, symptom: str, keys: tuple[str, ...],
                                            found: str) -> None:  # fmt: skip
    """Nothing deferred in what was read: the wizard asks what was noticed, looks for it, and says what it
    found and where it looked (here: pasted log lines with one delivery that took 20 minutes)."""
    env = wizard_env(PATH=f"{Path(sys.executable).parent}:/usr/bin:/bin", PFDIAG_SBIN_PATH="")  # no postconf: nothing here
    tmux.start([PFDIAG], env, str(tmp_path), 80)
    pos = tmux.wait(r"Where is the Postfix whose mail is stuck\?")
    tmux.keys("Enter")  # this machine
    pos = tmux.wait(r"What do you have\?", after=pos, timeout=30)
    tmux.keys("Up", "Up", "Up", "Enter")  # a mailq listing and/or log lines
    pos = tmux.wait(r"mailq listing: paste it", after=pos)
    tmux.keys("Escape", "Enter")  # none
    pos = tmux.wait(r"Log lines: paste them", after=pos)
    tmux.text("Aug  1 11:58:01 mx postfix/smtp[123]: 3F1A2B4C5D: to=<a@partner.test>, relay=mx.partner.test[192.0.2.7]:25, "
              "delay=1200, delays=600/0/0.2/600, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 1234)")  # fmt: skip
    tmux.keys("Escape", "Enter")
    pos = tmux.wait(r"Nothing is deferred right now\. What did you notice\?", after=pos, timeout=30)
    tmux.keys(*keys)
    # (a syslog line has no year: the newest past Aug 1)
    pos = tmux.wait(r"It looked in the pasted log lines \(\d{4}-08-01 11:58 \.\. \d{4}-08-01 11:58\) and no queue listing\.",
                    after=pos, timeout=30)  # fmt: skip
    assert found in " ".join(tmux.screen().split())
    pos = tmux.wait(r"Save this report for a ticket\?", after=pos, timeout=60)
    read_screen(tmux)
    tmux.keys("Enter")
    tmux.wait(r"WIZARD-EXIT=0", after=pos)
