"""Reading a hostile snapshot bundle (issue 13, "The bad day"): every bundle here is crafted
byte by byte in the test, with tarfile's own headers, and given to the real CLI in a child
process whose TMPDIR is a directory of the test. Each refusal is one line with exit 1, within
memory (the child's max RSS), time, and without leaving anything in TMPDIR.

    gzip bomb (2 GiB of zeros in a 2 MB bundle), many bombs below the floor each, a 4 GiB
    manifest, a pax header of 100 MiB, too many entries, links/devices/sparse entries,
    truncated archives, manifests of the wrong shape ("version": "one"), a forged log line
    (sha256 mismatch: a warning, in the report too; with --strict a refusal), an entry the
    manifest does not name; and the bundles pfdiag itself writes verify without a warning.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from checks.errors import InputError
from checks.model import CommandResult
from checks.targets.bundle import SnapshotWriter
from checks.targets.snapshot import Limits, SnapshotTarget
from diagnose.target_options import demo_path

ROOT = Path(__file__).resolve().parents[2]
MAX_RSS_MB = 400
MAX_SECONDS = 60
CHUNK = 16 << 20

# -- crafting ------------------------------------------------------------------------------


def _header(name: str, size: int, kind: bytes = tarfile.REGTYPE, **kw: Any) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime, info.type = size, 0o644, 1764324000, kind
    for k, v in kw.items():
        setattr(info, k, v)
    return info.tobuf(format=tarfile.GNU_FORMAT)


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 512)


def _member(name: str, data: bytes) -> bytes:
    """One gzip member holding one tar entry (a .tar.gz may be many gzip members in a row)."""
    return gzip.compress(_header(name, len(data)) + data + _pad(len(data)), 9, mtime=0)


def _repeated(name: str, size: int, byte: bytes = b"\0") -> bytes:
    """A tar entry of `size` copies of one byte, compressed without ever holding it: one gzip
    member of 16 MiB of them, repeated (2 GiB of zeros is 2 MB of bundle)."""
    block = gzip.compress(byte * CHUNK, 9, mtime=0)
    n, rest = divmod(size, CHUNK)
    return b"".join([gzip.compress(_header(name, size), mtime=0), block * n,
                     gzip.compress(byte * rest + _pad(size), mtime=0)])  # fmt: skip


def _end() -> bytes:
    return gzip.compress(b"\0" * 1024, mtime=0)


QUEUE = b'{"queue_name": "deferred", "queue_id": "4BC2D1", "arrival_time": 1764320000, "sender": "a@pfdiag.test", "recipients": [{"address": "b@example.net", "delay_reason": "connect to example.net[192.0.2.1]:25: Connection refused"}]}\n'
LOG = b"Nov 28 10:00:00 mx postfix/qmgr[1]: 4BC2D1: from=<a@pfdiag.test>, size=1, nrcpt=1 (queue active)\n"
FORGED = b"Nov 28 10:00:01 mx postfix/smtp[2]: 4BC2D1: to=<b@example.net>, relay=none, delay=1, delays=1/0/0/0, dsn=4.4.1, status=deferred (connect to example.net[192.0.2.1]:25: Connection refused)\n"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _manifest(log: bytes = LOG, **extra: Any) -> bytes:
    doc = {"format": "pfdiag-snapshot", "version": 1, "created": "2026-11-28T10:00:05Z", "host": "mx",
           "commands": [{"argv": ["postqueue", "-j"], "returncode": 0, "stdout": "commands/001.out", "stderr": "",
                         "sha256": _sha(QUEUE)},
                        {"argv": ["postconf", "-h", "maillog_file"], "returncode": 0, "stdout": "commands/002.out",
                         "stderr": "", "sha256": _sha(b"/var/log/mail.log\n")}],
           "files": [{"path": "/var/log/mail.log", "stored": "files/var/log/mail.log", "size": len(log),
                      "mtime": 1764324005.0, "sha256": _sha(log)}]}  # fmt: skip
    doc.update(extra)
    return json.dumps(doc).encode()


def _bundle(path: Path, *extra: bytes, log: bytes = LOG, manifest: bytes | None = None) -> Path:
    path.write_bytes(b"".join([_member("manifest.json", _manifest() if manifest is None else manifest),
                               _member("commands/001.out", QUEUE), _member("commands/002.out", b"/var/log/mail.log\n"),
                               _member("files/var/log/mail.log", log), *extra, _end()]))  # fmt: skip
    return path


# -- the CLI in a child: exit code, stderr lines, max RSS, seconds, what TMPDIR holds after --


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _cli(tmp_path: Path, *argv: str) -> dict[str, Any]:
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir(exist_ok=True)
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    env = {**os.environ, "TMPDIR": str(tmpdir), "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    start = time.monotonic()
    peak = [0]
    done = threading.Event()

    def watch() -> None:  # what the child puts in TMPDIR while it runs
        while not done.wait(0.05):
            peak[0] = max(peak[0], _du(tmpdir))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen([sys.executable, "-m", "diagnose.cli", *argv], stdout=o, stderr=e, stdin=subprocess.DEVNULL,
                                env=env, cwd=tmp_path)  # fmt: skip
        killer = threading.Timer(MAX_SECONDS * 2, proc.kill)
        killer.start()
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own max RSS, not any other's
        killer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    watcher.join()
    return {"rc": proc.returncode, "stdout": out.read_text(), "stderr": err.read_text().strip().splitlines(),
            "rss_mb": usage.ru_maxrss / 1024, "seconds": time.monotonic() - start,
            "tmp_peak": max(peak[0], _du(tmpdir)), "tmp_left": sorted(os.listdir(tmpdir))}  # fmt: skip


def _refused(tmp_path: Path, bundle: Path, *words: str, command: str = "queue", extra: tuple[str, ...] = ()) -> str:
    res = _cli(tmp_path, command, "--snapshot", str(bundle), *extra)
    assert res["rc"] in (1, 2), res
    assert len(res["stderr"]) == 1 and "Traceback" not in res["stderr"][0], res["stderr"]
    line = res["stderr"][0]
    assert line.startswith(f"pfdiag: {bundle}: ") and all(w in line for w in words), line
    assert res["rss_mb"] < MAX_RSS_MB, res
    assert res["seconds"] < MAX_SECONDS, res
    assert res["tmp_peak"] == 0 and res["tmp_left"] == [], res  # nothing is ever unpacked to disk
    return line


# -- bombs and limits ------------------------------------------------------------------------


def test_gzip_bomb_is_refused_while_decompressing(tmp_path: Path) -> None:
    bomb = _bundle(tmp_path / "bomb.tar.gz", _repeated("files/var/log/huge.log", 2 << 30))
    assert bomb.stat().st_size < 3 << 20, "2 GiB of zeros in a bundle of about 2 MB"
    line = _refused(tmp_path, bomb, "decompression bomb", "'files/var/log/huge.log'")
    assert "refused" in line


def test_a_bomb_spread_over_many_small_entries_is_refused_too(tmp_path: Path) -> None:
    # each 48 MiB entry is below the per-entry floor; the archive as a whole is not
    parts = [_repeated(f"files/part{i}", 48 << 20) for i in range(40)]
    _refused(tmp_path, _bundle(tmp_path / "spread.tar.gz", *parts), "decompression bomb")


def test_member_bigger_than_the_limit_is_refused_from_its_header(tmp_path: Path) -> None:
    # incompressible is no bomb, but 3 GiB is more than an entry may be; refused before reading it
    bundle = _bundle(tmp_path / "big.tar.gz", gzip.compress(_header("files/var/log/big.log", 3 << 30), mtime=0))
    _refused(tmp_path, bundle, "'files/var/log/big.log' is 3 GiB, more than 2 GiB")


def test_a_4_gib_manifest_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    bundle = tmp_path / "manifest.tar.gz"
    bundle.write_bytes(_repeated("manifest.json", 4 << 30, b" ") + _end())
    _refused(tmp_path, bundle, "manifest.json is 4 GiB, more than the 4 MiB a manifest may have")


def test_a_huge_pax_header_is_not_read_into_memory(tmp_path: Path) -> None:
    pax = gzip.compress(_header("././@PaxHeader", 100 << 20, tarfile.XHDTYPE), mtime=0)
    bundle = _bundle(tmp_path / "pax.tar.gz", pax + gzip.compress(b"9 a=b\n" * ((100 << 20) // 6), mtime=0))
    _refused(tmp_path, bundle, "more than 1 MiB of tar headers")


def test_too_many_entries(tmp_path: Path) -> None:
    bundle = tmp_path / "many.tar.gz"
    with tarfile.open(bundle, "w:gz") as tar:
        data = _manifest()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        for i in range(5001):
            tar.addfile(tarfile.TarInfo(f"files/empty{i}"), io.BytesIO(b""))
    _refused(tmp_path, bundle, "more than 5000 entries")


# -- what a bundle never holds, and damaged ones ---------------------------------------------


@pytest.mark.parametrize("kind, extra, words", [
    ("symlink", dict(linkname="/etc/passwd"), "is a link"),
    ("hardlink", dict(linkname="manifest.json"), "is a link"),
    ("chardev", dict(devmajor=1, devminor=3), "is not a regular file"),
    ("fifo", {}, "is not a regular file"),
    ("traversal", {}, "points outside the bundle"),
    ("absolute", {}, "points outside the bundle"),
])  # fmt: skip
def test_links_devices_and_names_out_are_refused(kind: str, extra: dict[str, Any], words: str, tmp_path: Path) -> None:
    types = {"symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE, "chardev": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE}
    name = {"traversal": "../../escaped", "absolute": "/tmp/escaped"}.get(kind, "commands/001.out")
    entry = gzip.compress(_header(name, 0, types.get(kind, tarfile.REGTYPE), **extra), mtime=0)
    bundle = tmp_path / f"{kind}.tar.gz"
    bundle.write_bytes(_member("manifest.json", _manifest()) + entry + _end())
    _refused(tmp_path, bundle, "cannot unpack snapshot", words)
    assert not (tmp_path.parent / "escaped").exists() and not Path("/tmp/escaped").exists()


def test_truncated_archives(tmp_path: Path) -> None:
    w = SnapshotWriter(host="mx", postfix_version="3.7.11")
    w.add_command(CommandResult(("postqueue", "-j"), 0, QUEUE.decode(), ""))
    w.add_file("/var/log/mail.log", os.urandom(200_000).hex().encode(), 1764324005.0)  # incompressible enough
    whole = tmp_path / "whole.tar.gz"
    w.write(str(whole))
    data = whole.read_bytes()
    for cut in (len(data) // 2, len(data) - 30, 100):
        part = tmp_path / f"cut{cut}.tar.gz"
        part.write_bytes(data[:cut])
        _refused(tmp_path, part, "cannot unpack snapshot")
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"\x1f\x8b" + os.urandom(4000))
    _refused(tmp_path, junk, "cannot unpack snapshot")


@pytest.mark.parametrize("manifest, words", [
    ({"format": "pfdiag-snapshot", "version": "one"}, '"version" must be a whole number (1), got "one"'),
    ({"format": "pfdiag-snapshot", "version": True}, '"version" must be a whole number'),
    ({"format": "pfdiag-snapshot"}, 'no "version"'),
    ({"format": "pfdiag-snapshot", "version": 9}, "snapshot version 9 is newer"),
    ([1, 2], "expected a JSON object, got list"),
    ({"format": "pfdiag-snapshot", "version": 1, "commands": {}}, '"commands" must be a list'),
    ({"format": "pfdiag-snapshot", "version": 1, "commands": [{"argv": "postqueue -j"}]}, "commands[0].argv must be"),
    ({"format": "pfdiag-snapshot", "version": 1, "commands": [{"argv": ["x"], "returncode": "0"}]}, "returncode must be"),
    ({"format": "pfdiag-snapshot", "version": 1, "files": [{"path": "/x"}]}, "files[0].stored must be"),
    ({"format": "pfdiag-snapshot", "version": 1, "files": [{"path": "/x", "stored": "f", "sha256": "abc"}]}, "64 hex"),
    ({"format": "other", "version": 1}, "not a pfdiag snapshot"),
])  # fmt: skip
def test_manifest_of_the_wrong_shape(manifest: Any, words: str, tmp_path: Path) -> None:
    bundle = tmp_path / "shape.tar.gz"
    bundle.write_bytes(_member("manifest.json", json.dumps(manifest).encode()) + _end())
    _refused(tmp_path, bundle, words)


def test_manifest_that_is_not_json(tmp_path: Path) -> None:
    for name, text in (("broken", b'{"format": '), ("deep", b"[" * 100_000 + b"]" * 100_000)):
        bundle = tmp_path / f"{name}.tar.gz"
        bundle.write_bytes(_member("manifest.json", text) + _end())
        _refused(tmp_path, bundle, "unreadable manifest.json")


# -- sha256 ----------------------------------------------------------------------------------


def test_forged_log_line_is_a_warning_and_strict_refuses(tmp_path: Path) -> None:
    forged = _bundle(tmp_path / "forged.tar.gz", log=LOG + FORGED)  # the manifest's sha256 is of LOG alone
    res = _cli(tmp_path, "logs", "--snapshot", str(forged), "--format", "json")
    assert res["rc"] == 0, res
    assert res["stderr"] == ["pfdiag: warning: snapshot:forged.tar.gz: files/var/log/mail.log: does not match "
                             "its sha256 in manifest.json (changed after it was recorded)"]  # fmt: skip
    res = _cli(tmp_path, "report", "--snapshot", str(forged), "--format", "json")
    doc = json.loads(res["stdout"])
    assert [w["summary"] for w in doc["warnings"] if "snapshot bundle" in w["summary"]] == [
        "snapshot bundle: files/var/log/mail.log: does not match its sha256 in manifest.json (changed after it was recorded)"]
    for command in ("logs", "queue", "report"):
        line = _refused(tmp_path, forged, "refused (--strict): files/var/log/mail.log: does not match", command=command,
                        extra=("--strict",))  # fmt: skip
        assert line.endswith("(changed after it was recorded)")
    honest = _bundle(tmp_path / "honest.tar.gz")
    res = _cli(tmp_path, "logs", "--snapshot", str(honest), "--strict", "--format", "json")
    assert res["rc"] == 0 and res["stderr"] == [], res


def test_entries_the_manifest_does_not_vouch_for(tmp_path: Path) -> None:
    no_hash = json.loads(_manifest())
    del no_hash["files"][0]["sha256"]
    bundle = _bundle(tmp_path / "extra.tar.gz", _member("files/etc/extra.cf", b"x = 1\n"),
                     manifest=json.dumps(no_hash).encode())  # fmt: skip
    res = _cli(tmp_path, "queue", "--snapshot", str(bundle), "--format", "json")
    assert res["rc"] == 0 and json.loads(res["stdout"])["counts"]["deferred"] == 1, res
    assert res["stderr"] == [
        "pfdiag: warning: snapshot:extra.tar.gz: files/var/log/mail.log: no sha256 in manifest.json to check it against",
        "pfdiag: warning: snapshot:extra.tar.gz: files/etc/extra.cf: in the bundle but not in manifest.json (not read)",
    ]
    _refused(tmp_path, bundle, "refused (--strict): files/var/log/mail.log: no sha256", extra=("--strict",))


def test_bundles_pfdiag_writes_verify(tmp_path: Path) -> None:
    w = SnapshotWriter(host="mx", postfix_version="3.7.11")
    w.add_command(CommandResult(("postqueue", "-j"), 0, QUEUE.decode(), "postqueue: warning: something\n"))
    w.add_file("/var/log/mail.log", LOG, 1764324005.0)
    out = tmp_path / "written.tar.gz"
    w.write(str(out))
    with SnapshotTarget(str(out), strict=True) as snap:
        assert snap.warnings == []
        assert snap.run(["postqueue", "-j"]).stderr == "postqueue: warning: something\n"
    res = _cli(tmp_path, "report", "--demo", "--strict", "--format", "json")
    assert res["rc"] in (0, 4, 5) and not [line for line in res["stderr"] if "warning" in line], res
    assert not [w for w in json.loads(res["stdout"])["warnings"] if "snapshot bundle" in w["summary"]]
    assert SnapshotTarget(demo_path(), strict=True).warnings == []


# -- large entries: streamed from the archive again, checked again --------------------------


def test_large_entries_are_streamed_again_and_checked_again(tmp_path: Path) -> None:
    log = b"".join(LOG.replace(b"10:00:00", f"10:{i // 60 % 60:02d}:{i % 60:02d}".encode()) for i in range(3000))
    w = SnapshotWriter(host="mx")
    w.add_command(CommandResult(("postqueue", "-j"), 0, QUEUE.decode() * 200, ""))
    w.add_file("/var/log/mail.log", log, 1764324005.0)
    out = tmp_path / "big.tar"  # a plain tar: bytes can be changed in place below
    w.write(str(tmp_path / "b.tar.gz"))
    with gzip.open(tmp_path / "b.tar.gz") as fh:
        out.write_bytes(fh.read())
    small = Limits(memory_entry=1024)
    snap = SnapshotTarget(str(out), limits=small)
    assert snap.warnings == []
    assert snap.open_text("/var/log/mail.log").read().encode() == log
    with snap.stream(["postqueue", "-j"]) as lines:
        assert sum(1 for _ in lines) == 200
    raw = bytearray(out.read_bytes())
    at = raw.index(b"10:00:07")
    raw[at:at + 8] = b"10:00:08"
    with open(out, "r+b") as fh:  # in place: the descriptor the target holds sees it
        fh.write(raw)
    with pytest.raises(InputError, match="changed since the bundle was opened"):
        snap.open_text("/var/log/mail.log").read()
    snap.close()
    with pytest.raises(InputError, match="the bundle was closed"):
        snap.open_text("/var/log/mail.log")


def test_a_directory_bundle_with_a_fifo_does_not_hang(tmp_path: Path) -> None:
    (tmp_path / "commands").mkdir()
    os.mkfifo(tmp_path / "commands" / "001.out")
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "pfdiag-snapshot", "version": 1, "commands": [
        {"argv": ["postqueue", "-j"], "returncode": 0, "stdout": "commands/001.out", "stderr": ""}]}))
    start = time.monotonic()
    snap = SnapshotTarget(str(tmp_path))
    with pytest.raises(InputError, match="not a regular file|missing from"):
        snap.run(["postqueue", "-j"])
    assert time.monotonic() - start < 5


def test_interrupted_read_leaves_nothing_behind(tmp_path: Path) -> None:
    """Ctrl-C in the middle of a large bundle: the child ends at once and TMPDIR stays empty
    (nothing is written there in the first place)."""
    big = tmp_path / "slow.tar.gz"
    with open(big, "wb") as fh:
        fh.write(_member("manifest.json", _manifest()))
        text = os.urandom(8 << 20).hex().encode()  # 16 MiB that compress 2:1: slow to unpack, no bomb
        block = gzip.compress(text, 1, mtime=0)
        fh.write(gzip.compress(_header("files/random", 24 * len(text)), mtime=0))
        for _ in range(24):
            fh.write(block)
        fh.write(_end())
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "diagnose.cli", "queue", "--snapshot", str(big)],
                            env={**os.environ, "TMPDIR": str(tmpdir), "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and b"Traceback" not in err, (proc.returncode, err)
    assert os.listdir(tmpdir) == []


@pytest.mark.parametrize("pack", ["gz", "bz2", "xz", "tar", "top-directory"])
def test_every_packing_reads_the_same(pack: str, tmp_path: Path) -> None:
    import bz2
    import lzma

    w = SnapshotWriter(host="mx")
    w.add_command(CommandResult(("postqueue", "-j"), 0, QUEUE.decode(), ""))
    w.add_file("/var/log/mail.log", LOG, 1764324005.0)
    w.write(str(tmp_path / "b.tar.gz"))
    with gzip.open(tmp_path / "b.tar.gz") as fh:
        plain = fh.read()
    out = tmp_path / f"b.{pack}"
    if pack == "top-directory":
        with tarfile.open(tmp_path / "b.tar.gz") as src, tarfile.open(out, "w:gz") as dst:
            for m in src.getmembers():
                data = src.extractfile(m).read()  # type: ignore[union-attr]
                m.name = "mx-2026-11-28/" + m.name
                dst.addfile(m, io.BytesIO(data))
    else:
        out.write_bytes({"gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress, "tar": bytes}[pack](plain))
    with SnapshotTarget(str(out), strict=True) as snap:
        assert snap.run(["postqueue", "-j"]).stdout == QUEUE.decode()
        assert snap.open_text("/var/log/mail.log").read() == LOG.decode()


@pytest.mark.parametrize("memory_entry", [8 << 20, 1])  # kept in memory / streamed from the archive again
def test_streamed_output_splits_lines_like_a_pipe(memory_entry: int, tmp_path: Path) -> None:
    w = SnapshotWriter(host="mx")
    w.add_command(CommandResult(("postqueue", "-j"), 0, "a\rb\u2028c\n\nd\r\n", "err\n"))
    w.write(str(tmp_path / "b.tar.gz"))
    with SnapshotTarget(str(tmp_path / "b.tar.gz"), limits=Limits(memory_entry=memory_entry)) as snap:
        with snap.stream(["postqueue", "-j"]) as out:
            assert list(out) == ["a\rb\u2028c", "", "d"]
            assert out.result().stderr == "err\n" and out.result().stdout == ""
