"""Writing snapshot bundles (the format SnapshotTarget reads; see snapshot.py)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import tarfile
import time
from dataclasses import dataclass, field
from typing import Any

from checks.model import CommandResult
from checks.targets.snapshot import FORMAT, VERSION


@dataclass
class SnapshotWriter:
    """Collects command results and files in memory order, then writes one .tar.gz."""

    host: str = ""
    postfix_version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    _commands: list[tuple[CommandResult, str, str]] = field(default_factory=list)
    _files: list[tuple[str, bytes, float]] = field(default_factory=list)

    def add_command(self, result: CommandResult) -> None:
        n = len(self._commands) + 1
        self._commands.append((result, f"commands/{n:03d}.out", f"commands/{n:03d}.err"))

    def add_file(self, path: str, data: bytes, mtime: float | None = None) -> None:
        self._files.append((posixpath.normpath(path), data, time.time() if mtime is None else mtime))

    def manifest(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "host": self.host,
            "postfix_version": self.postfix_version,
            **self.extra,
            "commands": [
                {
                    "argv": list(r.argv),
                    "returncode": r.returncode,
                    "stdout": out,
                    "stderr": err,
                    "duration": round(r.duration, 3),
                    "sha256": hashlib.sha256(r.stdout.encode()).hexdigest(),
                    "stderr_sha256": hashlib.sha256(r.stderr.encode()).hexdigest(),
                }
                for r, out, err in self._commands
            ],
            "files": [
                {
                    "path": path,
                    "stored": "files" + path if path.startswith("/") else "files/" + path,
                    "size": len(data),
                    "mtime": mtime,
                    "sha256": hashlib.sha256(data).hexdigest(),
                }
                for path, data, mtime in self._files
            ],
        }

    def write(self, out_path: str) -> None:
        manifest = self.manifest()
        tmp = out_path + ".part"
        with tarfile.open(tmp, "w:gz") as tar:
            def put(name: str, data: bytes, mtime: float) -> None:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mtime = int(mtime)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(data))

            now = time.time()
            put("manifest.json", json.dumps(manifest, indent=2).encode(), now)
            for (result, out, err), rec in zip(self._commands, manifest["commands"]):
                put(out, result.stdout.encode(), now)
                put(err, result.stderr.encode(), now)
            for (path, data, mtime), rec in zip(self._files, manifest["files"]):
                put(rec["stored"], data, mtime)
        os.replace(tmp, out_path)
