"""SnapshotTarget: a recorded bundle, replayed offline.

Layout (a directory, or the same packed as .tar.gz with one top directory or none):

    manifest.json       {"format": "pfdiag-snapshot", "version": 1, "created": ISO-8601,
                         "host": "...", "postfix_version": "...",
                         "commands": [{"argv": [...], "returncode": 0, "stdout": "commands/N.out",
                                       "stderr": "commands/N.err", "duration": 0.1,
                                       "sha256": "<of stdout>", "stderr_sha256": "<of stderr>"}],
                         "files": [{"path": "/var/log/mail.log", "stored": "files/var/log/mail.log",
                                    "size": N, "mtime": epoch, "sha256": "..."}]}
    commands/           recorded stdout/stderr of each argv
    files/              copies of files under their absolute path

A command that was not recorded raises CommandNotFound naming it, so checks
degrade the same way they would on a host lacking the program.

A bundle comes from someone else, so it is read as hostile input (docs/snapshot-format.md,
"Reading safely"): an archive is never unpacked to disk. It is read as a stream, once when
opened - every byte counted as it is decompressed against the Limits, every entry's sha256
computed and compared with the manifest, small entries kept in memory - and a large entry
is streamed from the archive again when it is read (counted and hashed again). Links,
devices, sparse files and names leading out of the bundle are refused.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import os
import posixpath
import re
import stat
import tarfile
import weakref
import zlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any, BinaryIO, Iterator, Sequence, TextIO, Union

from checks.errors import CommandNotFound, ConnectRefused, InputError
from checks.model import CommandResult
from checks.targets.base import DEFAULT_TIMEOUT, Connection, FileInfo, Target, decode_stream
from checks.targets.streams import CommandStream

FORMAT = "pfdiag-snapshot"
VERSION = 1
MANIFEST = "manifest.json"
_CHUNK = 1 << 16
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Limits:
    """What one bundle may unpack to. Counted on the decompressed bytes as they come out
    of the decompressor, never taken from a tar header alone."""

    total: int = 4 << 30  #: bytes unpacked in all (tar headers included)
    member: int = 2 << 30  #: bytes of one entry
    members: int = 5000  #: entries in the archive (directories included)
    manifest: int = 4 << 20  #: bytes of manifest.json, checked before it is parsed
    ratio: int = 200  #: unpacked / compressed, beyond ratio_floor (text logs stay below ~20)
    ratio_floor: int = 64 << 20  #: bytes that may unpack at any ratio
    header: int = 1 << 20  #: bytes of tar headers (pax records, long names) before one entry
    command_output: int = 64 << 20  #: one recorded stdout/stderr handed over in full by run()
    memory: int = 64 << 20  #: entries kept in memory after the first reading, in all
    memory_entry: int = 8 << 20  #: ... each at most; larger ones are streamed again


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            v = n / (1 << shift)
            return f"{v:.0f} {unit}" if v == int(v) else f"{v:.1f} {unit}"
    return f"{n} bytes"


def _line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


class _Refused(Exception):
    """A limit was reached (message without the bundle's name)."""

    what = "refused"


class _BadEntry(_Refused):
    """An entry a bundle never holds: a link, a device, a name leading out of it..."""

    what = "cannot unpack snapshot"


# ---------------------------------------------------------------------------------------
# the byte pipeline: file -> (counted) -> decompressor -> (counted, limited) -> tarfile


class _PreadRaw(io.RawIOBase):
    """The bundle file read through a descriptor held since it was opened (renaming another
    file over the path changes nothing), at a position of its own; counts what it reads."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._pos = 0
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = os.pread(self._fd, len(buffer), self._pos)
        n = len(data)
        buffer[:n] = data
        self._pos += n
        self.count += n
        return n


class _Unpacked(io.RawIOBase):
    """The decompressed archive, counted as it is produced: the total, the ratio to the
    compressed bytes read (in all, and since the current entry began), and a stop line
    that keeps tar headers (read whole into memory by tarfile) small."""

    def __init__(self, inner: _Source, raw: _PreadRaw, limits: Limits) -> None:
        self._inner = inner
        self._raw = raw
        self._limits = limits
        self.produced = 0
        self.stop_at = limits.header
        self.entry = ""
        self._mark = (0, 0)

    def readable(self) -> bool:
        return True

    def begin(self, entry: str) -> None:
        self.entry = entry
        self._mark = (self.produced, self._raw.count)

    def readinto(self, buffer: Any) -> int:
        lim = self._limits
        want = min(len(buffer), _CHUNK)
        if self.produced >= self.stop_at:
            where = f"before {self.entry!r}" if self.entry else "at its start"
            raise _Refused(f"more than {_size(lim.header)} of tar headers {where} (pax records or long names)")
        want = min(want, self.stop_at - self.produced)
        data = self._inner.read(want)
        n = len(data)
        buffer[:n] = data
        self.produced += n
        if self.produced > lim.total + lim.header:
            raise _Refused(f"unpacks to more than {_size(lim.total)} in all")
        since, compressed = self.produced - self._mark[0], self._raw.count - self._mark[1]
        if (since > lim.ratio_floor and since > lim.ratio * max(compressed, 1)) or (
                self.produced > lim.ratio_floor and self.produced > lim.ratio * max(self._raw.count, 1)):
            what = f"{self.entry!r} unpacks" if self.entry else "unpacks"
            raise _Refused(f"{what} to more than {lim.ratio} times its compressed size (a decompression bomb)")
        return n


_Source = Union[gzip.GzipFile, bz2.BZ2File, lzma.LZMAFile, _PreadRaw]


def _decompressor(raw: _PreadRaw) -> _Source:
    """By magic bytes: each of these hands out at most what read() asks for, however
    much one compressed block would unpack to."""
    head = os.pread(raw._fd, 6, 0)
    if head.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if head.startswith(b"BZh"):
        return bz2.BZ2File(raw)
    if head.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(raw)  # type: ignore[arg-type]
    return raw  # a plain tar


_DECOMPRESS_ERRORS = (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError, ValueError)


def _clean_name(name: str) -> str | None:
    """An archive member's name inside the bundle, or None when it would lead out of it."""
    if not name or "\x00" in name or name.startswith("/"):
        return None
    norm = posixpath.normpath(name)
    if norm == ".":
        return ""
    if norm.startswith("../") or norm == "..":
        return None
    return norm


def _is_manifest(name: str) -> bool:
    return posixpath.basename(name) == MANIFEST and name.count("/") <= 1


@dataclass
class _Walk:
    """One pass over an archive: yields (name, fileobj of its bytes, TarInfo) for each regular
    entry, refusing what a bundle never holds; the caller reads or skips each."""

    fd: int
    limits: Limits
    raw: _PreadRaw = field(init=False)
    unpacked: _Unpacked = field(init=False)
    tar: tarfile.TarFile = field(init=False)

    def __post_init__(self) -> None:
        self.raw = _PreadRaw(self.fd)
        self.unpacked = _Unpacked(_decompressor(self.raw), self.raw, self.limits)
        self.tar = tarfile.open(fileobj=self.unpacked, mode="r|")

    def __iter__(self) -> Iterator[tuple[str, IO[bytes], tarfile.TarInfo]]:
        count = 0
        while True:
            self.unpacked.stop_at = self.tar.offset + self.limits.header + tarfile.RECORDSIZE
            member = self.tar.next()
            if member is None:
                return
            count += 1
            if count > self.limits.members:
                raise _Refused(f"more than {self.limits.members} entries")
            name = _clean_name(member.name)
            if name is None:
                raise _BadEntry(f"entry {member.name!r} points outside the bundle")
            if member.isdir():
                continue
            if member.issym() or member.islnk():
                raise _BadEntry(f"entry {member.name!r} is a link")
            if not member.isreg() or member.issparse() or getattr(member, "sparse", None) is not None:
                raise _BadEntry(f"entry {member.name!r} is not a regular file")
            if _is_manifest(name) and member.size > self.limits.manifest:
                raise _Refused(f"{member.name} is {_size(member.size)}, more than the {_size(self.limits.manifest)} "
                               "a manifest may have")  # fmt: skip
            if member.size > self.limits.member:
                raise _Refused(f"entry {member.name!r} is {_size(member.size)}, more than {_size(self.limits.member)}")
            self.unpacked.stop_at = member.offset_data + member.size + self.limits.header + tarfile.RECORDSIZE
            self.unpacked.begin(member.name)
            fileobj = self.tar.extractfile(member)
            assert fileobj is not None
            yield name, fileobj, member

    def close(self) -> None:
        self.tar.close()


# ---------------------------------------------------------------------------------------


@dataclass
class _Entry:
    size: int
    sha256: str
    data: bytes | None  # None: streamed again when read


class _Verified(io.RawIOBase):
    """An entry's bytes as they are read again: counted, hashed, and compared at the end with
    what the first reading saw (a bundle changed in place since it was opened is refused)."""

    def __init__(self, inner: IO[bytes], expected: _Entry, label: str, closing: Any = None) -> None:
        self._inner = inner
        self._expected = expected
        self._label = label
        self._closing = closing
        self._hash = hashlib.sha256()
        self._n = 0
        self._checked = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            data = self._inner.read(min(len(buffer), _CHUNK))
        except _Refused as exc:
            raise InputError(f"{self._label}: {exc.what}: {exc}") from None
        except _DECOMPRESS_ERRORS as exc:
            raise InputError(f"{self._label}: cannot read ({_line(exc)})") from None
        n = len(data)
        self._n += n
        if self._n > self._expected.size:
            raise InputError(f"{self._label}: longer than when the bundle was opened")
        self._hash.update(data)
        if not n and not self._checked:
            self._checked = True
            if self._n != self._expected.size or self._hash.hexdigest() != self._expected.sha256:
                raise InputError(f"{self._label}: changed since the bundle was opened")
        buffer[:n] = data
        return n

    def close(self) -> None:
        try:
            if self._closing is not None:
                self._closing()
        finally:
            super().close()


class SnapshotTarget(Target):
    """A bundle (.tar.gz/.tar.bz2/.tar.xz/.tar, or a directory). ``warnings`` lists each entry
    that does not match the manifest's sha256, has none, or is not in the manifest; with
    ``strict`` any of these refuses the bundle. ``close()`` (or ``with``) lets go of the file."""

    kind = "snapshot"
    live = False  # a recording: nothing to probe, resolve or change

    def __init__(self, location: str, *, strict: bool = False, limits: Limits | None = None) -> None:
        self.where = f"snapshot:{os.path.basename(location.rstrip('/')) or location}"
        self.location = location
        self.limits = limits or Limits()
        self.warnings: list[str] = []
        self._entries: dict[str, _Entry] = {}
        self._prefix = ""
        self._fd: int | None = None
        self._dir: str | None = None
        if not os.path.exists(location):
            raise InputError(f"{location}: no such snapshot")
        try:
            if os.path.isdir(location):
                self._dir = location
                manifest = self._parse(self._read_dir_manifest())
                self._read_dir_entries(manifest)
            else:
                manifest = self._parse(self._read_archive())
        except BaseException:
            self.close()
            raise
        self.manifest = manifest
        self._commands = {tuple(c["argv"]): c for c in manifest.get("commands", [])}
        self._files = {posixpath.normpath(f["path"]): f for f in manifest.get("files", [])}
        self._check_integrity(manifest, strict)

    # -- opening -------------------------------------------------------------------------

    def _read_archive(self) -> bytes:
        try:
            self._fd = os.open(self.location, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        except OSError as exc:
            raise InputError(f"{self.location}: cannot open snapshot ({exc.strerror or _line(exc)})") from None
        self._finalizer = weakref.finalize(self, os.close, self._fd)
        if not stat.S_ISREG(os.fstat(self._fd).st_mode):
            raise InputError(f"{self.location}: not a snapshot (neither a file nor a directory)")
        lim = self.limits
        manifests: dict[str, bytes] = {}
        kept = 0
        walk: _Walk | None = None
        try:
            walk = _Walk(self._fd, lim)
            for name, fileobj, member in walk:
                if name in self._entries or name in manifests:
                    raise _BadEntry(f"entry {member.name!r} appears twice")
                is_manifest = _is_manifest(name)
                keep = (is_manifest and len(manifests) < 2) or (
                    member.size <= lim.memory_entry and kept + member.size <= lim.memory)
                digest, n, data = hashlib.sha256(), 0, []
                while chunk := fileobj.read(_CHUNK):
                    n += len(chunk)
                    digest.update(chunk)
                    if keep:
                        data.append(chunk)
                if n != member.size:
                    raise _BadEntry(f"entry {member.name!r} is shorter than its header says (truncated)")
                blob = b"".join(data) if keep else None
                if is_manifest:
                    manifests[name] = blob or b""
                elif blob is not None:
                    kept += len(blob)
                self._entries[name] = _Entry(n, digest.hexdigest(), blob)
        except _Refused as exc:
            raise InputError(f"{self.location}: {exc.what}: {exc}") from None
        except RecursionError:
            raise InputError(f"{self.location}: cannot unpack snapshot (nested too deeply)") from None
        except _DECOMPRESS_ERRORS as exc:
            raise InputError(f"{self.location}: cannot unpack snapshot ({_line(exc)})") from None
        finally:
            if walk is not None:
                walk.close()
        if MANIFEST in manifests:
            text = manifests[MANIFEST]
        else:
            tops = {n.split("/", 1)[0] for n in self._entries}
            top = next(iter(tops)) if len(tops) == 1 else None
            if top is None or f"{top}/{MANIFEST}" not in manifests:
                raise InputError(f"{self.location}: not a pfdiag snapshot (no manifest.json)")
            self._prefix = top + "/"
            text = manifests[f"{top}/{MANIFEST}"]
        self._entries.pop(self._prefix + MANIFEST, None)
        self._entries = {n[len(self._prefix):]: e for n, e in self._entries.items() if n.startswith(self._prefix)}
        return text

    def _read_dir_manifest(self) -> bytes:
        path = os.path.join(str(self._dir), MANIFEST)
        try:
            with open(path, "rb") as fh:
                if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                    raise InputError(f"{self.location}: manifest.json is not a regular file")
                text = fh.read(self.limits.manifest + 1)
        except FileNotFoundError:
            raise InputError(f"{self.location}: not a pfdiag snapshot (no manifest.json)") from None
        except OSError as exc:
            raise InputError(f"{self.location}: unreadable manifest.json ({exc.strerror or _line(exc)})") from None
        if len(text) > self.limits.manifest:
            raise InputError(f"{self.location}: refused: manifest.json is more than the "
                             f"{_size(self.limits.manifest)} a manifest may have")  # fmt: skip
        return text

    def _read_dir_entries(self, manifest: dict[str, Any]) -> None:
        """Hash every entry the manifest names (those that stay inside the bundle), as an
        archive is hashed when it is opened."""
        lim, total, kept = self.limits, 0, 0
        for name, _ in self._named(manifest):
            clean = _clean_name(name)
            if not clean or clean in self._entries:
                continue
            try:
                path = self._stored(clean)
                fh = self._open_regular(path, clean)
            except InputError:
                continue  # outside the bundle, missing, not a file: said when it is read
            with fh:
                digest, n = hashlib.sha256(), 0
                data: list[bytes] = []
                keep = True
                while chunk := fh.read(_CHUNK):
                    n += len(chunk)
                    total += len(chunk)
                    if n > lim.member:
                        raise InputError(f"{self.location}: refused: entry {clean!r} is more than {_size(lim.member)}")
                    if total > lim.total:
                        raise InputError(f"{self.location}: refused: unpacks to more than {_size(lim.total)} in all")
                    digest.update(chunk)
                    keep = keep and n <= lim.memory_entry and kept + n <= lim.memory
                    data = data + [chunk] if keep else []  # too big to keep: streamed again when read
                blob = b"".join(data) if keep else None
                kept += n if keep else 0
                self._entries[clean] = _Entry(n, digest.hexdigest(), blob)

    def _open_regular(self, path: str, label: str) -> BinaryIO:
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        except OSError as exc:
            raise InputError(f"{label}: missing from {self.where} ({exc.strerror or _line(exc)})") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise InputError(f"snapshot entry {label!r} is not a regular file")
        return os.fdopen(fd, "rb")

    # -- the manifest --------------------------------------------------------------------

    def _parse(self, text: bytes) -> dict[str, Any]:
        try:
            manifest = json.loads(text)
        except RecursionError:
            raise InputError(f"{self.location}: unreadable manifest.json (nested too deeply)") from None
        except ValueError as exc:
            raise InputError(f"{self.location}: unreadable manifest.json ({_line(exc)})") from None
        problem = manifest_problem(manifest, self.limits.members)
        if problem:
            raise InputError(f"{self.location}: {problem}")
        return manifest

    @staticmethod
    def _named(manifest: dict[str, Any]) -> Iterator[tuple[str, str | None]]:
        """(entry name, its sha256 in the manifest or None) for each entry the manifest names."""
        for c in manifest.get("commands", []):
            for key, digest in (("stdout", "sha256"), ("stderr", "stderr_sha256")):
                if c.get(key):
                    yield c[key], c.get(digest)
        for f in manifest.get("files", []):
            yield f["stored"], f.get("sha256")

    def _check_integrity(self, manifest: dict[str, Any], strict: bool) -> None:
        seen: set[str] = set()
        for name, digest in self._named(manifest):
            clean = _clean_name(name)
            if clean is None or clean in seen:
                continue  # a name leading out is refused when it is read
            seen.add(clean)
            entry = self._entries.get(clean)
            if entry is None:
                if self._dir is None:
                    self.warnings.append(f"{clean}: named in manifest.json but not in the bundle")
            elif digest is None:
                if entry.size:
                    self.warnings.append(f"{clean}: no sha256 in manifest.json to check it against")
            elif digest.lower() != entry.sha256:
                self.warnings.append(f"{clean}: does not match its sha256 in manifest.json (changed after it was recorded)")
        for name in sorted(set(self._entries) - seen):
            self.warnings.append(f"{name}: in the bundle but not in manifest.json (not read)")
        if strict and self.warnings:
            more = f" (and {len(self.warnings) - 1} more)" if len(self.warnings) > 1 else ""
            raise InputError(f"{self.location}: refused (--strict): {self.warnings[0]}{more}")

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

    # -- reading entries -------------------------------------------------------------------

    def _stored(self, rel: str) -> str:
        # realpath: a symlink inside an unpacked directory bundle must not lead out of it either
        root = os.path.realpath(str(self._dir))
        path = os.path.realpath(os.path.join(root, str(rel)))
        if not path.startswith(root + os.sep):
            raise InputError(f"snapshot entry {rel!r} points outside the bundle")
        return path

    def _entry(self, rel: str) -> tuple[str, _Entry]:
        clean = _clean_name(str(rel))
        if not clean:
            raise InputError(f"snapshot entry {rel!r} points outside the bundle")
        if self._dir is not None:
            self._stored(clean)  # a link out of a directory bundle: refused before anything else
        entry = self._entries.get(clean)
        if entry is None:
            raise InputError(f"{clean}: missing from {self.where}")
        return clean, entry

    def _open(self, rel: str) -> BinaryIO:
        """An entry's bytes: from memory, or read again (counted, hashed) from the bundle."""
        name, entry = self._entry(rel)
        if entry.data is not None:
            return io.BytesIO(entry.data)
        label = f"{self.where}:{name}"
        if self._dir is not None:
            fh = self._open_regular(self._stored(name), name)
            return io.BufferedReader(_Verified(fh, entry, label, fh.close), _CHUNK)
        if self._fd is None:
            raise InputError(f"{label}: the bundle was closed")
        walk: _Walk | None = None
        handed_over = False
        try:
            walk = _Walk(self._fd, self.limits)
            for found, fileobj, _ in walk:
                if found == self._prefix + name:
                    handed_over = True
                    return io.BufferedReader(_Verified(fileobj, entry, label, walk.close), _CHUNK)
        except _Refused as exc:
            raise InputError(f"{label}: {exc.what}: {exc}") from None
        except _DECOMPRESS_ERRORS as exc:
            raise InputError(f"{label}: cannot read ({_line(exc)})") from None
        finally:
            if walk is not None and not handed_over:
                walk.close()
        raise InputError(f"{label}: no longer in the bundle")

    def _read(self, rel: str | None) -> str:
        if not rel:
            return ""
        name, entry = self._entry(rel)
        if entry.size > self.limits.command_output:
            raise InputError(f"{self.where}:{name}: a recorded output of {_size(entry.size)}, more than "
                             f"{_size(self.limits.command_output)}")  # fmt: skip
        with self._open(name) as fh:
            return fh.read().decode("utf-8", errors="replace")

    def run(self, argv: Sequence[str], timeout: float = DEFAULT_TIMEOUT) -> CommandResult:
        rec = self._command(argv)
        return CommandResult(
            argv=tuple(argv),
            returncode=int(rec.get("returncode", 0)),
            stdout=self._read(rec.get("stdout")),
            stderr=self._read(rec.get("stderr")),
            duration=float(rec.get("duration", 0.0)),
        )

    def _command(self, argv: Sequence[str]) -> dict[str, Any]:
        rec = self._commands.get(tuple(argv))
        if rec is None:
            raise CommandNotFound(f"{' '.join(argv)}: not recorded in {self.where}")
        return rec

    def stream(self, argv: Sequence[str], timeout: float = DEFAULT_TIMEOUT) -> CommandStream:
        """The recorded output line by line (the interface of LocalTarget.stream); a large
        output is streamed from the bundle, never held whole."""
        rec = self._command(argv)
        result = CommandResult(tuple(argv), int(rec.get("returncode", 0)), "", self._read(rec.get("stderr")),
                               float(rec.get("duration", 0.0)))  # fmt: skip
        if not rec.get("stdout"):
            return CommandStream(result)
        text = io.TextIOWrapper(self._open(rec["stdout"]), encoding="utf-8", errors="replace", newline="\n")
        return _EntryStream(result, text)

    def _file(self, path: str) -> dict[str, Any]:
        rec = self._files.get(posixpath.normpath(path))
        if rec is None:
            raise InputError(f"{path}: not recorded in {self.where}")
        return rec

    def open_text(self, path: str) -> TextIO:
        rec = self._file(path)
        return decode_stream(self._open(rec["stored"]), f"{self.where}:{path}")

    def file_info(self, path: str) -> FileInfo:
        rec = self._file(path)
        return FileInfo(rec["path"], int(rec.get("size", 0)), float(rec.get("mtime", 0.0)))

    def is_dir(self, path: str) -> bool:
        prefix = posixpath.normpath(path).rstrip("/") + "/"
        return any(p.startswith(prefix) for p in self._files)

    def list_dir(self, path: str) -> list[FileInfo]:
        prefix = posixpath.normpath(path).rstrip("/") + "/"
        out = [
            FileInfo(r["path"], int(r.get("size", 0)), float(r.get("mtime", 0.0)))
            for p, r in sorted(self._files.items())
            if p.startswith(prefix) and "/" not in p[len(prefix):]
        ]
        if not out and not self.is_dir(path):
            raise InputError(f"{path}: no such directory in {self.where}")
        return out

    def describe(self) -> str:
        made = self.manifest.get("created")
        return f"{self.where} (recorded {made})" if made else self.where

    def connect(self, host: str, port: int, timeout: float, *, source: str | None = None) -> Connection:
        raise ConnectRefused(
            f"cannot connect to {host}:{port} from {self.where}: a snapshot is a recording; "
            "run the probe live (locally or with --host) instead"
        )

    def close(self) -> None:
        """Let go of the bundle file (once; also when the target is collected or at exit)."""
        self._fd = None
        finalizer = getattr(self, "_finalizer", None)
        if finalizer is not None:
            finalizer()

    def __enter__(self) -> SnapshotTarget:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _EntryStream(CommandStream):
    """A recorded stdout handed out line by line as it is read from the bundle."""

    def __init__(self, result: CommandResult, text: TextIO) -> None:
        super().__init__(result)
        self._text = text

    def __iter__(self) -> Iterator[str]:
        with self._text:
            for line in self._text:
                yield line.rstrip("\n").rstrip("\r")  # split on "\n" only, like a live pipe

    def close(self) -> None:
        self._text.close()


# ---------------------------------------------------------------------------------------
# the manifest's schema: one line per problem


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _entry_name_ok(v: object) -> bool:
    return v is None or isinstance(v, str)


def _sha_ok(v: object) -> bool:
    return v is None or (isinstance(v, str) and bool(_SHA256.fullmatch(v.lower())))


def manifest_problem(m: object, max_entries: int = Limits.members) -> str | None:
    """Why a parsed manifest.json cannot be read (one line), or None."""
    if not isinstance(m, dict):
        return f"manifest.json: expected a JSON object, got {type(m).__name__}"
    if m.get("format") != FORMAT:
        return f"not a pfdiag snapshot (format {m.get('format')!r})"[:200]
    if "version" not in m:
        return "manifest.json: no \"version\""
    version = m["version"]
    if not _is_int(version) or version < 1:
        return f"manifest.json: \"version\" must be a whole number (1), got {json.dumps(version)[:40]}"
    if version > VERSION:
        return f"snapshot version {version} is newer than this pfdiag reads ({VERSION})"
    for key in ("created", "host", "postfix_version"):
        if m.get(key) is not None and not isinstance(m[key], str):
            return f"manifest.json: \"{key}\" must be a string"
    lists = {}
    for key in ("commands", "files"):
        value = m.get(key, [])
        if not isinstance(value, list):
            return f"manifest.json: \"{key}\" must be a list"
        lists[key] = value
    if len(lists["commands"]) + len(lists["files"]) > max_entries:
        return f"manifest.json: more than {max_entries} commands and files"
    for i, c in enumerate(lists["commands"]):
        at = f"manifest.json: commands[{i}]"
        if not isinstance(c, dict):
            return f"{at} must be an object"
        argv = c.get("argv")
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            return f"{at}.argv must be a non-empty list of strings"
        if not _is_int(c.get("returncode", 0)):
            return f"{at}.returncode must be a whole number"
        if not _is_num(c.get("duration", 0.0)):
            return f"{at}.duration must be a number"
        for key in ("stdout", "stderr"):
            if not _entry_name_ok(c.get(key)):
                return f"{at}.{key} must be an entry name (a string)"
        for key in ("sha256", "stderr_sha256"):
            if not _sha_ok(c.get(key)):
                return f"{at}.{key} must be 64 hex digits"
    for i, f in enumerate(lists["files"]):
        at = f"manifest.json: files[{i}]"
        if not isinstance(f, dict):
            return f"{at} must be an object"
        for key in ("path", "stored"):
            if not isinstance(f.get(key), str) or not f[key]:
                return f"{at}.{key} must be a non-empty string"
        if not _is_int(f.get("size", 0)) or f.get("size", 0) < 0:
            return f"{at}.size must be a whole number of bytes"
        if not _is_num(f.get("mtime", 0.0)):
            return f"{at}.mtime must be a number (epoch seconds)"
        if not _sha_ok(f.get("sha256")):
            return f"{at}.sha256 must be 64 hex digits"
    return None
