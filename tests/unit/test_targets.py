"""The Target seam: LocalTarget on this machine, SnapshotTarget on bundles."""

from __future__ import annotations

import gzip
import json
import socket
import tarfile

import pytest

from checks.errors import CommandNotFound, CommandTimeout, ConnectFailed, ConnectRefused, InputError
from checks.model import CommandResult
from checks.targets import LocalTarget, SnapshotTarget, Target
from checks.targets.bundle import SnapshotWriter


def test_local_run_argv_and_errors():
    t = LocalTarget()
    assert isinstance(t, Target)
    r = t.run(["printf", "%s|", "a b", "$(echo no-shell)"])
    assert r.ok and r.stdout == "a b|$(echo no-shell)|"  # argv, never a shell
    r = t.run(["sh", "-c", "echo err >&2; exit 3"])
    assert (r.returncode, r.stderr.strip()) == (3, "err")
    with pytest.raises(CommandNotFound, match="no-such-program-xyz: command not found"):
        t.run(["no-such-program-xyz"])
    with pytest.raises(CommandTimeout, match="no answer within 0.2 s"):
        t.run(["sleep", "5"], timeout=0.2)


def test_local_connect_kinds():
    t = LocalTarget()
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        conn = t.connect("127.0.0.1", port, timeout=2)
        conn.close()
    with pytest.raises(ConnectFailed) as exc:
        t.connect("127.0.0.1", port, timeout=2)  # nothing listens any more
    assert exc.value.kind == "refused"


def test_local_open_text_compressed_and_invalid_utf8(tmp_path):
    p = tmp_path / "x.gz"
    with gzip.open(p, "wb") as fh:
        fh.write(b"caf\xe9 ok\n")
    assert LocalTarget().open_text(str(p)).read() == "caf\ufffd ok\n"
    with pytest.raises(InputError, match="is a directory"):
        LocalTarget().open_text(str(tmp_path))


def _bundle(tmp_path):
    w = SnapshotWriter(host="mx.lab.test", postfix_version="3.7.11")
    w.add_command(CommandResult(("postconf", "-h", "relayhost"), 0, "[relay.test]:587\n", ""))
    w.add_file("/var/log/mail.log", b"Nov 28 10:00:00 mx postfix/qmgr[1]: ABCDE1: removed\n", 1764324000.0)
    w.add_file("/var/log/mail.log.1", b"old\n", 1764224000.0)
    out = tmp_path / "bundle.tar.gz"
    w.write(str(out))
    return out


def test_snapshot_round_trip(tmp_path):
    snap = SnapshotTarget(str(_bundle(tmp_path)))
    assert snap.where == "snapshot:bundle.tar.gz"
    r = snap.run(["postconf", "-h", "relayhost"])
    assert r.ok and r.stdout == "[relay.test]:587\n"
    with pytest.raises(CommandNotFound, match="not recorded"):
        snap.run(["postqueue", "-j"])
    assert snap.open_text("/var/log/mail.log").read().endswith("removed\n")
    assert snap.file_info("/var/log/mail.log").mtime == 1764324000.0
    assert [f.path for f in snap.list_dir("/var/log")] == ["/var/log/mail.log", "/var/log/mail.log.1"]
    assert snap.is_dir("/var/log") and not snap.is_dir("/etc")
    with pytest.raises(ConnectRefused, match="a snapshot is a recording"):
        snap.connect("127.0.0.1", 25, 1)


def test_snapshot_directory_form_and_bad_bundles(tmp_path):
    bundle = _bundle(tmp_path)
    unpacked = tmp_path / "dir"
    with tarfile.open(bundle) as tar:
        tar.extractall(unpacked, filter="data")
    assert SnapshotTarget(str(unpacked)).run(["postconf", "-h", "relayhost"]).ok
    with pytest.raises(InputError, match="no such snapshot"):
        SnapshotTarget(str(tmp_path / "absent.tar.gz"))
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a tar")
    with pytest.raises(InputError, match="cannot unpack snapshot"):
        SnapshotTarget(str(junk))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no manifest.json"):
        SnapshotTarget(str(tmp_path / "empty"))
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(InputError, match="not a pfdiag snapshot"):
        SnapshotTarget(str(wrong))


def test_snapshot_entries_cannot_escape_the_bundle(tmp_path):
    d = tmp_path / "evil"
    d.mkdir()
    (d / "manifest.json").write_text(
        json.dumps({"format": "pfdiag-snapshot", "version": 1, "commands": [], "files": [{"path": "/etc/passwd", "stored": "../../../../etc/passwd"}]})
    )
    with pytest.raises(InputError, match="outside the bundle"):
        SnapshotTarget(str(d)).open_text("/etc/passwd")


def test_snapshot_knows_when_it_was_recorded(tmp_path):
    w = SnapshotWriter(extra={"created": "2026-11-28T17:43:41Z"})
    out = tmp_path / "b.tar.gz"
    w.write(str(out))
    assert SnapshotTarget(str(out)).recorded_at == 1795887821.0


class _Tty:
    def isatty(self) -> bool:
        return True


def test_passphrase_prompt_only_when_someone_can_answer(monkeypatch):
    import io
    import sys

    from diagnose import target_options

    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert target_options._passphrase_prompt() is None, "cron/pipes: never block on a prompt"
    monkeypatch.setattr(sys, "stdin", _Tty())
    asked = []
    monkeypatch.setattr("getpass.getpass", lambda text: asked.append(text) or "s3cret")
    ask = target_options._passphrase_prompt()
    assert callable(ask) and ask("passphrase for /k") == "s3cret" and asked == ["passphrase for /k: "]


def test_snapshot_symlink_out_of_a_directory_bundle_is_refused(tmp_path):
    (tmp_path / "commands").mkdir()
    (tmp_path / "commands" / "1.out").symlink_to("/etc/hostname")
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "pfdiag-snapshot", "version": 1, "commands": [
        {"argv": ["postconf", "-n"], "returncode": 0, "stdout": "commands/1.out", "stderr": ""}]}))
    with pytest.raises(InputError, match="outside the bundle"):
        SnapshotTarget(str(tmp_path)).run(["postconf", "-n"])


def test_run_into_copies_stdout_byte_for_byte(tmp_path) -> None:
    """A backup of mail that is not UTF-8 must be exact: run_into writes stdout undecoded."""
    sink = tmp_path / "copy"
    with open(sink, "wb") as fh:
        res = LocalTarget().run_into(["printf", "caf\\351\\n"], fh)
    assert res.ok and res.stdout == "" and sink.read_bytes() == b"caf\xe9\n"
    with open(tmp_path / "x", "wb") as fh, pytest.raises(CommandNotFound):
        LocalTarget().run_into(["pfdiag-no-such-command"], fh)


def test_local_start_overlaps_and_behaves_as_run(tmp_path):
    """LocalTarget.start(): the command runs while the caller works (no thread: os.posix_spawn and
    pipes); result() gives what run() gives, within the deadline counted from start()."""
    import os
    import time

    t = LocalTarget()
    marker = tmp_path / "ran"
    t0 = time.monotonic()
    started = t.start(["sh", "-c", f"sleep 0.3; echo out; echo err >&2; touch {marker}; exit 5"], timeout=5)
    assert time.monotonic() - t0 < 0.25  # start() did not wait for it
    time.sleep(0.4)  # the caller's own work: the command finishes meanwhile
    assert marker.exists()
    t1 = time.monotonic()
    r = started.result()
    assert time.monotonic() - t1 < 0.2 and (r.returncode, r.stdout, r.stderr) == (5, "out\n", "err\n")
    assert r.argv[0] == "sh" and r.duration >= 0.3 and started.result() is r  # collected once
    # the deadline runs from start(): waiting in result() for a command past it kills it
    slow = t.start(["sleep", "5"], timeout=0.3)
    with pytest.raises(CommandTimeout, match="no answer within 0.3 s"):
        slow.result()
    assert t.run(["sh", "-c", "kill -9 $$"]).returncode == -9  # a signal, as subprocess says it
    assert t.run(["sh", "-c", "cat"]).stdout == ""  # stdin is /dev/null: nothing waits for input
    # sbin on PATH, as run() always had it; bytes that are not UTF-8 are replaced, not raised
    assert "\ufffd" in t.run(["printf", "\\377ok"]).stdout
    # close(): a command no longer wanted is ended and reaped, not left running
    gone = t.start(["sleep", "30"], timeout=60)
    pid = gone.pid
    gone.close()
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def test_local_run_output_is_bounded(monkeypatch):
    from checks.errors import TargetError
    from checks.targets import local

    monkeypatch.setattr(local, "MAX_OUTPUT", 1000)
    with pytest.raises(TargetError, match="more than"):
        LocalTarget().run(["head", "-c", "5000", "/dev/zero"])


def test_default_start_runs_on_a_thread_and_reraises():
    """Target.start()'s default for a target without its own (SSH, a recording): run() on a thread."""
    import threading

    class Slow(Target):
        def __init__(self) -> None:
            self.threads: list[str] = []

        def run(self, argv, timeout=30.0):
            self.threads.append(threading.current_thread().name)
            if argv[0] == "missing":
                raise CommandNotFound("missing: command not found")
            return CommandResult(tuple(argv), 0, "ok\n", "")

    t = Slow()
    assert t.start(["postconf", "-P"]).result().stdout == "ok\n"
    assert t.threads[0] != threading.current_thread().name
    with pytest.raises(CommandNotFound):
        t.start(["missing"]).result()
