"""SSHTarget and the CLI against a hostile SSH server (tests/lab/hostile_sshd.py, its own
process on 127.0.0.1): one that never answers exec requests, one that answers and then
stays silent, one that floods stdout (lines, or one endless line), one that never sends
the SSH banner. Each must end within 3 x the SSH timeout with one clear line and a
non-3 exit, and a flood must not grow the client's memory (its peak RSS is measured
with os.wait4 on the child that runs it).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from checks.errors import CommandTimeout, TargetError
from checks.targets.ssh import SSHTarget
from tests.lab import hostile_sshd

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 1.0  # --ssh-timeout / io_timeout of the target-level tests
CLI_TIMEOUT = 2.0  # the CLI's --ssh-timeout: room for the interpreter's start on a busy machine
RSS_LIMIT_KB = 400 * 1024


@pytest.fixture
def hostile(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[hostile_sshd.Hostile]:
    with hostile_sshd.running(request.param, tmp_path) as server:
        yield server


def _open(server: hostile_sshd.Hostile, **kw: float) -> SSHTarget:
    options = {"connect_timeout": TIMEOUT, "io_timeout": TIMEOUT, "command_timeout": 30.0, **kw}
    return SSHTarget.open(server.spec, ssh_config=os.devnull, known_hosts=server.known_hosts,
                          identity=server.client_key, **options)  # type: ignore[arg-type]  # fmt: skip


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text and "\n" not in text, text
    return text


def _run_measured(argv: list[str], budget: float) -> tuple[int, str, float, int]:
    """Run argv as a child, reaped with os.wait4 for its own peak RSS: (exit code, stderr,
    seconds, ru_maxrss in KiB). stdout is discarded; stderr (one-line errors) is kept."""
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    env["PYTHONPATH"] = str(ROOT)
    err_file = Path(os.environ.get("TMPDIR", "/tmp")) / f"pfdiag-hostile-{os.getpid()}-{time.monotonic_ns()}.err"
    start = time.monotonic()
    with open(err_file, "wb") as err, open(os.devnull, "wb") as devnull:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=devnull, stderr=err)
    deadline = start + budget + 30
    try:
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                os.wait4(proc.pid, 0)
                raise AssertionError(f"{argv[:3]}... still running after {budget + 30:g} s")
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)  # Popen must not try to reap it again
        return proc.returncode, err_file.read_text(), time.monotonic() - start, usage.ru_maxrss
    finally:
        err_file.unlink(missing_ok=True)


def _pfdiag(server: hostile_sshd.Hostile, command: list[str], timeout: float = CLI_TIMEOUT) -> tuple[int, str, float, int]:
    return _run_measured([sys.executable, "-c", "import sys; from diagnose.cli import main; sys.exit(main())",
                          *command, *server.cli_options(timeout)], 3 * timeout)  # fmt: skip


# --- the target --------------------------------------------------------------------------------


@pytest.mark.parametrize("hostile", ["nobanner"], indirect=True)
def test_a_server_that_never_sends_its_banner_fails_the_connect_in_time(hostile: hostile_sshd.Hostile) -> None:
    start = time.monotonic()
    with pytest.raises(TargetError, match=r"no SSH handshake .* within 1 s") as exc:
        _open(hostile)
    assert time.monotonic() - start < 3 * TIMEOUT
    _one_line(exc.value)


@pytest.mark.parametrize("hostile", ["noexec"], indirect=True)
def test_an_exec_request_never_answered_times_out_and_later_calls_fail_at_once(hostile: hostile_sshd.Hostile) -> None:
    with _open(hostile) as target:
        start = time.monotonic()
        with pytest.raises(CommandTimeout, match=r"postconf -n on ssh:127\.0\.0\.1: the SSH server did not answer") as exc:
            target.run(["postconf", "-n"], timeout=20)  # the caller's own, longer deadline: the request's holds
        assert time.monotonic() - start < 3 * TIMEOUT
        _one_line(exc.value)
        # the server is stuck: nothing else waits for it again (a stream, SFTP)
        start = time.monotonic()
        for call in (lambda: target.stream(["postqueue", "-j"]), lambda: target.file_info("/var/log/mail.log")):
            with pytest.raises(TargetError, match="stopped answering") as exc:
                call()
            _one_line(exc.value)
        assert time.monotonic() - start < TIMEOUT


@pytest.mark.parametrize("hostile", ["silent"], indirect=True)
def test_a_command_that_stays_silent_and_sftp_that_never_answers_time_out(hostile: hostile_sshd.Hostile) -> None:
    with _open(hostile) as target:
        for call in (
            lambda: target.run(["postconf", "-n"], timeout=20),
            lambda: list(target.stream(["postqueue", "-j"], timeout=20)),
        ):
            start = time.monotonic()
            with pytest.raises(CommandTimeout, match=r"nothing from it for 1 s on ssh:127\.0\.0\.1; stopped it") as exc:
                call()
            assert time.monotonic() - start < 3 * TIMEOUT
            _one_line(exc.value)
        start = time.monotonic()
        with pytest.raises(CommandTimeout, match=r"no answer within 1 s \(SFTP\)") as exc:
            target.file_info("/var/log/mail.log")  # subsystem granted, no version packet ever
        assert time.monotonic() - start < 3 * TIMEOUT
        _one_line(exc.value)
        with pytest.raises(TargetError, match="SFTP server stopped answering"):
            target.list_dir("/var/log")  # not a second wait


@pytest.mark.parametrize("hostile", ["flood", "longline"], indirect=True)
def test_a_flood_stops_at_the_output_cap_and_a_stream_cuts_long_lines(hostile: hostile_sshd.Hostile) -> None:
    with _open(hostile, max_output=4 << 20, max_line=4096) as target:
        start = time.monotonic()
        with pytest.raises(TargetError, match=r"postconf -n: more than 4194304 bytes of output \(the limit\)") as exc:
            target.run(["postconf", "-n"])
        assert time.monotonic() - start < 3 * TIMEOUT
        _one_line(exc.value)
        longest = lines = 0
        with pytest.raises(CommandTimeout, match=r"no answer within 1.5 s on ssh:127\.0\.0\.1; stopped it"):
            with target.stream(["postqueue", "-j"], timeout=1.5) as out:
                for line in out:
                    lines += 1
                    longest = max(longest, len(line))
        if hostile.mode == "longline":  # one endless line: handed out cut at the cap, the rest dropped
            assert lines == 1 and longest == 4096 and out.truncated_lines == 1
        else:
            assert lines > 10 and longest == 99 and out.truncated_lines == 0


# --- memory: the flood in a child process, its peak RSS measured -----------------------------------

_STREAM_FOR = """
import os, sys
from checks.errors import PfdiagError
from checks.targets.ssh import SSHTarget
spec, known, key, seconds = sys.argv[1:5]
t = SSHTarget.open(spec, ssh_config=os.devnull, known_hosts=known, identity=key, connect_timeout=2, io_timeout=2)
lines = 0
try:
    with t.stream(["postqueue", "-j"], timeout=float(seconds)) as out:
        for line in out:
            lines += 1
except PfdiagError as exc:
    print(f"{lines} lines, {out.truncated_lines} cut: {exc}", file=sys.stderr)
    sys.exit(1)
"""


@pytest.mark.parametrize("hostile", ["flood", "longline"], indirect=True)
def test_ten_seconds_of_flood_keep_the_client_small(hostile: hostile_sshd.Hostile) -> None:
    rc, err, took, rss = _run_measured([sys.executable, "-c", _STREAM_FOR, hostile.spec, hostile.known_hosts,
                                        hostile.client_key, "10"], 10)  # fmt: skip
    assert rc == 1 and "no answer within 10 s" in err, err
    assert 10 <= took < 10 + 3 * 2, took
    assert rss < RSS_LIMIT_KB, f"peak RSS {rss // 1024} MiB while {err.strip()}"
    print(f"{hostile.mode} stream for 10 s: exit {rc} after {took:.2f} s, peak RSS {rss // 1024} MiB: {err.strip()}")


# --- the CLI -------------------------------------------------------------------------------------


# queue over a flood is left out: its listing is streamed (bounded lines) until the whole-command
# deadline, max(--ssh-timeout, 30 s); the ten-second test above measures such a stream.
@pytest.mark.parametrize(
    ("hostile", "command"),
    [("nobanner", ["logs"]), ("noexec", ["logs"]), ("silent", ["logs"]), ("flood", ["logs"]), ("longline", ["logs"]),
     ("nobanner", ["queue"]), ("noexec", ["queue"]), ("silent", ["queue"])],  # fmt: skip
    indirect=["hostile"],
)
def test_cli_over_a_hostile_server_ends_in_time_with_one_line(hostile: hostile_sshd.Hostile, command: list[str]) -> None:
    rc, err, took, rss = _pfdiag(hostile, command)
    lines = err.strip().splitlines()
    assert rc in (1, 2) and len(lines) == 1 and lines[0].startswith("pfdiag: "), (rc, err)
    assert took < 3 * CLI_TIMEOUT, (took, err)
    assert rss < RSS_LIMIT_KB, f"peak RSS {rss // 1024} MiB"
    print(f"{hostile.mode} {command[0]}: exit {rc} after {took:.2f} s, peak RSS {rss // 1024} MiB: {lines[0]}")
