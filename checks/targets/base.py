"""The Target seam: WHERE pfdiag looks. Checks get a Target and never import
subprocess, socket or paramiko themselves.

A target can run a command (an argv list, never a shell string), stream a text
file (gzip/bz2/xz decompressed transparently, by magic bytes), list a directory,
and open a TCP connection from its own vantage point.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Protocol, Sequence, TextIO, cast, runtime_checkable

from checks.errors import InputError
from checks.model import CommandResult

DEFAULT_TIMEOUT = 30.0


@dataclass(frozen=True)
class FileInfo:
    path: str
    size: int
    mtime: float


@runtime_checkable
class Target(Protocol):
    """Where checks run: this machine, a mail host over SSH, or a recorded snapshot."""

    #: Short label for evidence: "local", "ssh:mx1.example.net", "snapshot:bundle.tar.gz".
    where: str

    def run(self, argv: Sequence[str], timeout: float = DEFAULT_TIMEOUT) -> CommandResult:
        """Run argv; a missing program -> CommandNotFound, overrun -> CommandTimeout.
        A non-zero exit is NOT an error here: the caller reads returncode."""
        ...

    def open_text(self, path: str) -> TextIO:
        """Stream a text file, decompressing gzip/bz2/xz. Undecodable bytes are replaced."""
        ...

    def file_info(self, path: str) -> FileInfo:
        """Size and mtime of one file; InputError if it is not there."""
        ...

    def list_dir(self, path: str) -> list[FileInfo]:
        """The regular files directly in a directory; InputError if it cannot be read."""
        ...

    def is_dir(self, path: str) -> bool: ...

    def connect(self, host: str, port: int, timeout: float, *, source: str | None = None) -> "Connection":
        """A TCP stream opened from this target's vantage point. source: the local IP
        address to send from (Postfix's smtp_bind_address); one that cannot be bound ->
        ConnectFailed kind "bind", a target that cannot choose it -> kind "bind-unsupported"."""
        ...


class Connection(Protocol):
    """The subset of a socket that probes use (a socket or a paramiko Channel fits)."""

    def sendall(self, data: bytes) -> None: ...
    def recv(self, size: int) -> bytes: ...
    def settimeout(self, timeout: float | None) -> None: ...
    def close(self) -> None: ...


_MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bz2"),
    (b"\xfd7zXZ\x00", "xz"),
)


class _CheckedStream(io.RawIOBase):
    """Wraps a decompressing stream so that corruption surfaces as InputError
    naming the file, instead of an EOFError/OSError deep inside a parser."""

    def __init__(self, inner: BinaryIO, label: str) -> None:
        self._inner = inner
        self._label = label

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        try:
            # read1: one step of the decompressor, so that what it gave before the damage
            # is handed on (read(n) loops to fill n and drops what it had on an error)
            data = self._inner.read1(len(buffer)) if hasattr(self._inner, "read1") else self._inner.read(len(buffer))
        except (EOFError, OSError, lzma.LZMAError, zlib.error) as exc:
            raise InputError(f"{self._label}: compressed file is damaged or truncated ({exc})") from exc
        n = len(data)
        buffer[:n] = data
        return n

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            super().close()


def decode_stream(raw: BinaryIO, label: str) -> TextIO:
    """Turn a binary stream into a text stream, decompressing by magic bytes.

    Mail logs are mostly ASCII, but real ones hold invalid UTF-8 (subjects,
    forum copies); errors="replace" keeps every line readable."""
    buffered = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(cast(io.RawIOBase, raw))
    head = buffered.peek(6)[:6]
    kind = next((name for magic, name in _MAGIC if head.startswith(magic)), None)
    binary: BinaryIO
    if kind == "gzip":
        binary = io.BufferedReader(_CheckedStream(gzip.GzipFile(fileobj=buffered), label), 1 << 16)  # type: ignore[arg-type]
    elif kind == "bz2":
        binary = io.BufferedReader(_CheckedStream(bz2.BZ2File(buffered), label), 1 << 16)  # type: ignore[arg-type]
    elif kind == "xz":
        binary = io.BufferedReader(_CheckedStream(lzma.LZMAFile(buffered), label), 1 << 16)  # type: ignore[arg-type]
    else:
        binary = buffered
    return io.TextIOWrapper(binary, encoding="utf-8", errors="replace", newline=None)
