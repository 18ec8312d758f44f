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
