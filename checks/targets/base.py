"""The Target seam: WHERE pfdiag looks. Checks get a Target and never import
subprocess, socket or paramiko themselves.

A target can run a command (an argv list, never a shell string), stream a text
file (gzip/bz2/xz decompressed transparently, by magic bytes), list a directory,
and open a TCP connection from its own vantage point. Target is a base class: an
ability a target lacks has a default there, so callers never ask which target they hold.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar, Protocol, Sequence, TextIO, TypeVar, cast

from checks.errors import ConnectRefused, InputError
from checks.model import CommandResult

if TYPE_CHECKING:
    from checks.targets.streams import CommandStream

DEFAULT_TIMEOUT = 30.0
_T = TypeVar("_T", bound="Target")


@dataclass(frozen=True)
class FileInfo:
    """One file on a target: its path, size in bytes and mtime (epoch seconds)."""
    path: str
    size: int
    mtime: float


class Target:
    """Where checks run: this machine, a mail host over SSH, or a recorded snapshot.

    The base of every target (httpx's BaseTransport is the model): the four ways to read
    (run, open_text, file_info, list_dir/is_dir) are each target's own; every other ability
    has a default here, so no caller asks which target it holds - it reads ``kind``,
    ``live``, ``can_bind``... or calls the ability and gets its default."""

    #: Short label for evidence: "local", "ssh:mx1.example.net", "snapshot:bundle.tar.gz".
    where: str = "?"
    #: "local", "ssh" or "snapshot": for the reader's benefit (JSON, messages), never to branch on.
    kind: ClassVar[str] = "target"
    #: False for a recording: nothing on it can be probed, resolved or changed.
    live: ClassVar[bool] = True
    #: connect() opens this machine's own sockets, so DNS asked from here is the target's DNS.
    local_network: ClassVar[bool] = False
    #: connect(source=...) can choose the address to send from (Postfix's smtp_bind_address).
    can_bind: ClassVar[bool] = False
    #: commands that change Postfix (config --apply, queue actions) may run here.
    can_change: ClassVar[bool] = False
    #: problems met while opening it that the user must hear of (a bundle entry its manifest does not vouch for)
    warnings: Sequence[str] = ()

    # -- what every target implements

    def run(self, argv: Sequence[str], timeout: float = DEFAULT_TIMEOUT) -> CommandResult:
        """Run argv; a missing program -> CommandNotFound, overrun -> CommandTimeout.
        A non-zero exit is NOT an error here: the caller reads returncode."""
        raise NotImplementedError

    def open_text(self, path: str) -> TextIO:
        """Stream a text file, decompressing gzip/bz2/xz. Undecodable bytes are replaced."""
        raise NotImplementedError

    def file_info(self, path: str) -> FileInfo:
        """Size and mtime of one file; InputError if it is not there."""
        raise NotImplementedError

    def list_dir(self, path: str) -> list[FileInfo]:
        """The regular files directly in a directory; InputError if it cannot be read."""
        raise NotImplementedError

    def is_dir(self, path: str) -> bool:
        raise NotImplementedError

    # -- abilities with a default

    @property
    def recorded_at(self) -> float | None:
        """When a recording was made ("now" for what is computed from it); None: live."""
        return None

    def describe(self) -> str:
        """One line for the user: where pfdiag looks."""
        return self.where

    def connect(self, host: str, port: int, timeout: float, *, source: str | None = None) -> Connection:
        """A TCP stream opened from this target's vantage point. source: the local IP
        address to send from (Postfix's smtp_bind_address); one that cannot be bound ->
        ConnectFailed kind "bind", a target that cannot choose it -> kind "bind-unsupported".
        Default: this target cannot open connections."""
        raise ConnectRefused(f"cannot connect to {host}:{port} from {self.where}: this target opens no connections")

    def start(self, argv: Sequence[str], timeout: float = DEFAULT_TIMEOUT) -> Started:
        """run() begun now and collected later (``.result()``), so that the caller works meanwhile.
        Default: run() on a background thread (checks.runner.start), bounded by ``timeout``; a
        target that can start a command itself overrides it (LocalTarget: no thread)."""
        from checks.runner import start

        return _OnThread(start(argv[0] if argv else "command", lambda _deadline: self.run(argv, timeout),
                               budget=timeout + 5))  # fmt: skip

    def stream(self, argv: Sequence[str], timeout: float = DEFAULT_TIMEOUT) -> CommandStream:
        """run(), with stdout handed out line by line (checks/targets/streams.py). Default: the
        finished run()'s output; a target whose commands can be read while they run overrides it."""
        from checks.targets.streams import CommandStream

        return CommandStream(self.run(argv, timeout))

    def run_into(self, argv: Sequence[str], sink: BinaryIO, timeout: float = DEFAULT_TIMEOUT) -> CommandResult:
        """run(), with stdout written into ``sink`` (a binary file) and not returned. Default:
        run()'s decoded text, re-encoded; when decoding had to replace bytes the copy would
        not be exact, so InputError (a target that can copy bytes overrides this)."""
        res = self.run(argv, timeout)
        if "\ufffd" in res.stdout:
            raise InputError(f"{' '.join(argv)}: the output is not UTF-8 text and {self.where} returns text: no exact copy")
        sink.write(res.stdout.encode("utf-8"))
        return CommandResult(res.argv, res.returncode, "", res.stderr, res.duration)

    def run_with_input(self, argv: Sequence[str], data: bytes, timeout: float = DEFAULT_TIMEOUT) -> CommandResult:
        """run(), with ``data`` as the command's standard input (a message handed to sendmail).
        Default: this target cannot feed a command (a recording, a pasted listing)."""
        raise InputError(f"{' '.join(argv)}: {self.where} cannot run a command with standard input")

    def open_filtered(self, path: str, since_epoch: float | None = None, pattern: str = "postfix") -> TextIO:
        """A log file's lines, where the target can pre-filter them (lines containing
        ``pattern``, files last written before ``since_epoch`` skipped). Default: the whole file."""
        return self.open_text(path)

    def resolver(self, source: str = "system", queue_directory: str = "/var/spool/postfix",
                 timeout: float = 3.0) -> tuple[Any, str]:  # fmt: skip
        """(DNS resolver, description) as this target sees DNS: checks.dns.resolver_for, which
        decides it from live and local_network (source: system, chroot or IP[:PORT])."""
        from checks.dns import resolver_for

        return resolver_for(self, source, queue_directory, timeout)

    def default_logs(self) -> tuple[str, ...]:
        """Where Postfix logs on this target when its configuration names no maillog_file."""
        from checks.places import MAIL_LOGS

        return MAIL_LOGS

    def local_path(self, path: str) -> str | None:
        """A path this process can open itself (for reading a big file in parallel), or None."""
        return None

    def close(self) -> None:
        """Let go of what the target holds (connections, unpacked files). Default: nothing."""

    def __enter__(self: _T) -> _T:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Started:
    """A command Target.start() began: ``result()`` waits for it (within its timeout) and gives what
    run() would have (CommandNotFound, CommandTimeout... raised the same way); ``close()`` lets go
    of one whose result is no longer wanted (a command still running is ended)."""

    def result(self) -> CommandResult:
        raise NotImplementedError

    def close(self) -> None:
        """Default: nothing to let go of."""


class _OnThread(Started):
    def __init__(self, batch: Any) -> None:
        self._batch = batch

    def result(self) -> CommandResult:
        return cast(CommandResult, self._batch.wait()[0].unwrap())


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

    def readinto(self, buffer: Any) -> int:
        import lzma  # the decompressors load with the first compressed file, not at every start-up
        import zlib

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
    buffered: io.BufferedReader[Any] = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(cast(Any, raw))
    head = buffered.peek(6)[:6]
    kind = next((name for magic, name in _MAGIC if head.startswith(magic)), None)
    binary: io.BufferedReader[Any]
    if kind == "gzip":
        import gzip

        binary = io.BufferedReader(_CheckedStream(cast(BinaryIO, gzip.GzipFile(fileobj=buffered)), label), 1 << 16)
    elif kind == "bz2":
        import bz2

        binary = io.BufferedReader(_CheckedStream(cast(BinaryIO, bz2.BZ2File(buffered)), label), 1 << 16)
    elif kind == "xz":
        import lzma

        binary = io.BufferedReader(_CheckedStream(cast(BinaryIO, lzma.LZMAFile(buffered)), label), 1 << 16)
    else:
        binary = buffered
    return io.TextIOWrapper(binary, encoding="utf-8", errors="replace", newline=None)
