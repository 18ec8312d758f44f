"""SnapshotTarget: a recorded bundle, replayed offline.

Layout (a directory, or the same packed as .tar.gz with one top directory or none):

    manifest.json       {"format": "pfdiag-snapshot", "version": 1, "created": ISO-8601,
                         "host": "...", "postfix_version": "...",
                         "commands": [{"argv": [...], "returncode": 0, "stdout": "commands/N.out",
                                       "stderr": "commands/N.err", "duration": 0.1}],
                         "files": [{"path": "/var/log/mail.log", "stored": "files/var/log/mail.log",
                                    "size": N, "mtime": epoch, "sha256": "..."}]}
    commands/           recorded stdout/stderr of each argv
    files/              copies of files under their absolute path

A command that was not recorded raises CommandNotFound naming it, so checks
degrade the same way they would on a host lacking the program.
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import tarfile
import tempfile
import weakref
from datetime import datetime
from typing import Any, Iterator, Sequence, TextIO

from checks.errors import CommandNotFound, ConnectRefused, InputError
from checks.model import CommandResult
from checks.targets.base import DEFAULT_TIMEOUT, Connection, FileInfo, decode_stream
from checks.targets.streams import CommandStream

FORMAT = "pfdiag-snapshot"
VERSION = 1


class SnapshotTarget:
    def __init__(self, location: str) -> None:
        self.where = f"snapshot:{os.path.basename(location.rstrip('/')) or location}"
        self._root = self._unpack(location)
        manifest_path = os.path.join(self._root, "manifest.json")
        try:
            with open(manifest_path, encoding="utf-8") as fh:
                manifest: dict[str, Any] = json.load(fh)
        except FileNotFoundError as exc:
            raise InputError(f"{location}: not a pfdiag snapshot (no manifest.json)") from exc
        except (OSError, ValueError) as exc:
            raise InputError(f"{location}: unreadable manifest.json ({exc})") from exc
        if manifest.get("format") != FORMAT:
            raise InputError(f"{location}: not a pfdiag snapshot (format {manifest.get('format')!r})")
        if int(manifest.get("version", 0)) > VERSION:
            raise InputError(f"{location}: snapshot version {manifest.get('version')} is newer than this pfdiag reads")
        self.manifest = manifest
        self._commands = {tuple(c["argv"]): c for c in manifest.get("commands", [])}
        self._files = {f["path"]: f for f in manifest.get("files", [])}

    @property
    def recorded_at(self) -> float | None:
        """When the bundle was recorded: "now" for anything computed from it (queue ages)."""
        created = self.manifest.get("created")
        if not isinstance(created, str):
            return None
        try:
            return datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None

    def _unpack(self, location: str) -> str:
        if os.path.isdir(location):
            return location
        if not os.path.exists(location):
            raise InputError(f"{location}: no such snapshot")
        try:
            tmp = tempfile.mkdtemp(prefix="pfdiag-snapshot-")
            weakref.finalize(self, shutil.rmtree, tmp, True)
            with tarfile.open(location, "r:*") as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise InputError(f"{location}: cannot unpack snapshot ({exc})") from exc
        entries = os.listdir(tmp)
        if "manifest.json" not in entries and len(entries) == 1 and os.path.isdir(os.path.join(tmp, entries[0])):
            return os.path.join(tmp, entries[0])
        return tmp

    def _stored(self, rel: str) -> str:
        # realpath: a symlink inside an unpacked directory bundle must not lead out of it either
        root = os.path.realpath(self._root)
        path = os.path.realpath(os.path.join(root, str(rel)))
        if not path.startswith(root + os.sep):
            raise InputError(f"snapshot entry {rel!r} points outside the bundle")
        return path

    def _read(self, rel: str | None) -> str:
        if not rel:
            return ""
        with open(self._stored(rel), encoding="utf-8", errors="replace") as fh:
            return fh.read()

    def run(self, argv: Sequence[str], timeout: float = DEFAULT_TIMEOUT) -> CommandResult:
        rec = self._commands.get(tuple(argv))
        if rec is None:
            raise CommandNotFound(f"{' '.join(argv)}: not recorded in {self.where}")
        return CommandResult(
            argv=tuple(argv),
            returncode=int(rec.get("returncode", 0)),
            stdout=self._read(rec.get("stdout")),
            stderr=self._read(rec.get("stderr")),
            duration=float(rec.get("duration", 0.0)),
        )

    def stream(self, argv: Sequence[str], timeout: float = DEFAULT_TIMEOUT) -> CommandStream:
        """The recorded output line by line (the interface of LocalTarget.stream), read from
        the stored file as it is consumed: a 100,000-message postqueue -j is 40 MB of text."""
        rec = self._commands.get(tuple(argv))
        if rec is None:
            raise CommandNotFound(f"{' '.join(argv)}: not recorded in {self.where}")
        result = CommandResult(argv=tuple(argv), returncode=int(rec.get("returncode", 0)), stdout="",
                               stderr=self._read(rec.get("stderr")), duration=float(rec.get("duration", 0.0)))  # fmt: skip
        return _StoredStream(result, self._stored(rec["stdout"]) if rec.get("stdout") else None)

    def _file(self, path: str) -> dict[str, Any]:
        rec = self._files.get(posixpath.normpath(path))
        if rec is None:
            raise InputError(f"{path}: not recorded in {self.where}")
        return rec

    def open_text(self, path: str) -> TextIO:
        rec = self._file(path)
        try:
            raw = open(self._stored(rec["stored"]), "rb")  # noqa: SIM115
        except OSError as exc:
            raise InputError(f"{path}: missing from {self.where} ({exc.strerror})") from exc
        return decode_stream(raw, f"{self.where}:{path}")

    def local_path(self, path: str) -> str:
        """Where this process can open the recorded copy itself."""
        return self._stored(self._file(path)["stored"])

    def file_info(self, path: str) -> FileInfo:
        rec = self._file(path)
        return FileInfo(rec["path"], int(rec.get("size", 0)), float(rec.get("mtime", 0.0)))

    def is_dir(self, path: str) -> bool:
        prefix = posixpath.normpath(path).rstrip("/") + "/"
        return any(p.startswith(prefix) for p in self._files)

    def list_dir(self, path: str) -> list[FileInfo]:
        prefix = posixpath.normpath(path).rstrip("/") + "/"
        out = [
            FileInfo(p, int(r.get("size", 0)), float(r.get("mtime", 0.0)))
            for p, r in sorted(self._files.items())
            if p.startswith(prefix) and "/" not in p[len(prefix):]
        ]
        if not out and not self.is_dir(path):
            raise InputError(f"{path}: no such directory in {self.where}")
        return out

    def connect(self, host: str, port: int, timeout: float) -> Connection:
        raise ConnectRefused(
            f"cannot connect to {host}:{port} from {self.where}: a snapshot is a recording; "
            "run the probe live (locally or with --host) instead"
        )


class _StoredStream(CommandStream):
    """A recorded stdout from its file, line by line, split on "\n" only like a live pipe
    (bytes: UTF-8 never has a 0x0A inside a character, so decoding each line is decoding all)."""

    def __init__(self, result: CommandResult, path: str | None) -> None:
        super().__init__(result)
        self._path = path

    def __iter__(self) -> Iterator[str]:
        if self._path is None:
            return
        with open(self._path, "rb") as fh:
            for raw in fh:
                yield raw.decode("utf-8", "replace").rstrip("\n").rstrip("\r")
