"""What travels in SSH channels once logged in: requests with a deadline, a command's
output with caps (run() collects, stream() and open_filtered hand out lines), SFTP
reads in bounded windows, and direct-tcpip connections for probes.

Every wait here has a deadline and every buffer a cap: a server that never answers,
falls silent or floods ends in a one-line pfdiag error, never a hang or a memory blow-up.
"""

from __future__ import annotations

import contextlib
import io
import select
import shlex
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import paramiko

from checks.errors import CommandTimeout, InputError, TargetError
from checks.model import CommandResult
from checks.targets.ssh.common import _wait_inactive
from checks.targets.streams import CommandStream

if TYPE_CHECKING:
    from checks.targets.ssh.target import SSHTarget

_READ_WINDOW = 1 << 20  # SFTP bytes requested at once: pipelined, yet bounded memory
_CHUNK = 65536  # bytes taken from a channel at once
MAX_OUTPUT = 64 << 20  # run(): the most stdout kept; more stops the command (SSHTarget.open max_output)
MAX_LINE = 1 << 20  # stream(), open_filtered: a longer line is cut there and counted (max_line)
MAX_STDERR = 1 << 20  # any command: stderr kept; the rest is read (so the window never fills) and counted
# Constant shell text: argv arrives as "$@", never inside the script itself. It first
# tells us its pid on stderr (it becomes the command by exec), so that a command we
# give up on can be killed: closing the channel alone leaves it running, and sshd
# honours SSH "signal" requests only for non-root logins (privilege separation).
_PID_MARK = b"pfdiag-pid "
_FILTER_TOOLS = ("gzip:", "bzip2:", "xz:", "cat:", "grep:", "sh:")


def request(chan: paramiko.Channel, send: Callable[[], None], timeout: float, what: str) -> None:
    """A channel request (exec, subsystem) whose reply is awaited at most timeout s.

    paramiko's exec_command/invoke_subsystem wait for the server's reply without any
    limit; closing the channel wakes them (Channel._set_closed sets the event they wait
    on), so a timer closes it and the wait ends in a CommandTimeout."""
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        chan.close()

    timer = threading.Timer(timeout, expire)
    timer.daemon = True
    timer.start()
    try:
        send()
    except (paramiko.SSHException, EOFError, OSError) as exc:
        if expired.is_set():
            raise CommandTimeout(f"{what}: the SSH server did not answer the request within {timeout:g} s") from exc
        raise
    finally:
        timer.cancel()
    if expired.is_set():  # the reply and the timer crossed: the channel is closed anyway
        raise CommandTimeout(f"{what}: the SSH server did not answer the request within {timeout:g} s")


class _Stderr:
    """A command's stderr: the first `cap` bytes kept, the rest read and counted."""

    def __init__(self, cap: int = MAX_STDERR) -> None:
        self._kept = bytearray()
        self._cap = cap
        self.dropped = 0

    def drain(self, chan: paramiko.Channel) -> bool:
        """Take what is waiting; True if there was anything."""
        got = False
        while chan.recv_stderr_ready():
            data = chan.recv_stderr(_CHUNK)
            if not data:
                break
            got = True
            room = self._cap - len(self._kept)
            if room > 0:
                self._kept += data[:room]
            self.dropped += max(0, len(data) - max(room, 0))
        return got

    def pid(self) -> int | None:
        return _split_pid(bytes(self._kept))[0]

    def text(self) -> str:
        said = _split_pid(bytes(self._kept))[1].decode("utf-8", "replace")
        if self.dropped:
            said += f"\n[pfdiag: {self.dropped} more bytes of stderr not kept]\n"
        return said


class _LineCap:
    """Passes bytes through, but cuts any line longer than cap bytes there (with a
    newline) and drops the rest of it up to its own newline; counts the lines cut."""

    def __init__(self, cap: int = MAX_LINE) -> None:
        self.cap = cap
        self.truncated = 0
        self._run = 0  # bytes of the current line already passed
        self._skipping = False

    def feed(self, data: bytes) -> bytes:
        first = data.find(b"\n")
        if not self._skipping and len(data) <= self.cap and self._run + (len(data) if first < 0 else first) <= self.cap:
            # the usual case: no line in data can be too long (inner lines are shorter than data)
            self._run = self._run + len(data) if first < 0 else len(data) - 1 - data.rfind(b"\n")
            return data
        out = bytearray()
        pos = 0
        while pos < len(data):
            nl = data.find(b"\n", pos)
            end = len(data) if nl < 0 else nl
            if not self._skipping:
                room = self.cap - self._run
                if end - pos <= room:
                    out += data[pos : end + (nl >= 0)]
                    self._run = 0 if nl >= 0 else self._run + end - pos
                else:
                    out += data[pos : pos + room] + b"\n"
                    self.truncated += 1
                    self._skipping = nl < 0
                    self._run = 0
            elif nl >= 0:
                self._skipping = False  # the newline was written when the line was cut
            if nl < 0:
                break
            pos = nl + 1
        return bytes(out)


# --- streams --------------------------------------------------------------------------


class _SFTPReader(io.RawIOBase):
    """A remote file read in pipelined windows: fast over a slow link, yet never
    more than one window in memory, whatever the file size."""

    def __init__(self, target: SSHTarget, handle: paramiko.SFTPFile, size: int, path: str) -> None:
        self._target, self._fh, self._size, self._path = target, handle, size, path
        self._pos = 0  # file offset of the end of the current window
        self._buf = memoryview(b"")  # a view: handing out slices copies nothing

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if not self._buf:
            self._buf = memoryview(self._fetch())
            self._pos += len(self._buf)
        n = min(len(buffer), len(self._buf))
        buffer[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def _fetch(self) -> bytes:
        with self._target._guard(f"reading {self._path}"):
            try:
                self._fh.seek(self._pos)
                if self._pos < self._size:
                    return b"".join(self._fh.readv([(self._pos, min(_READ_WINDOW, self._size - self._pos))]))
                return self._fh.read(32768)  # the log grew since we opened it
            except EOFError:
                if self._target._transport.is_active():
                    return b""  # truncated (rotated) under us
                raise
        raise AssertionError("unreachable")  # _guard re-raises

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(paramiko.SSHException, EOFError, OSError):
                self._fh.close()
        super().close()


class _CommandReader(io.RawIOBase):
    """stdout of a remote command as a stream, lines cut at max_line; stderr drained
    alongside with a cap; failures surface at the end."""

    def __init__(self, target: SSHTarget, chan: paramiko.Channel, label: str, idle_timeout: float,
                 max_line: int = MAX_LINE) -> None:  # fmt: skip
        self._target, self._chan, self._label, self._idle = target, chan, label, idle_timeout
        self._err = _Stderr()
        self._cap = _LineCap(max_line)
        self._pending = b""
        chan.settimeout(idle_timeout)

    @property
    def truncated_lines(self) -> int:
        return self._cap.truncated

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            self._err.drain(self._chan)
            try:
                data = self._chan.recv(min(len(buffer), _CHUNK))
            except TimeoutError as exc:
                self.close()
                raise CommandTimeout(f"{self._label}: nothing received for {self._idle:g} s") from exc
            except (paramiko.SSHException, EOFError, OSError) as exc:
                raise self._target._lost(exc) from exc
            if not data:
                self._finish()
                return 0
            self._pending = self._cap.feed(data)
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def _finish(self) -> None:
        chan = self._chan
        if not chan.status_event.wait(self._idle):
            self.close()
            raise CommandTimeout(f"{self._label}: no exit status within {self._idle:g} s")
        status = chan.exit_status
        if status == -1 and not chan.eof_received:
            raise self._target._lost(None)
        self._err.drain(chan)
        # The pipeline's status is grep's (1: no line matched, fine); a damaged
        # archive shows only as the decompressor's complaint. Other stderr lines
        # may be login-shell chatter and are ignored.
        said = [line for line in self._err.text().splitlines() if line.startswith(_FILTER_TOOLS)]
        if status > 1 or said:
            raise InputError(f"{self._label}: remote filter failed (exit {status}): {' '.join(said[:2])}")

    def close(self) -> None:
        if not self.closed:
            if not self._chan.exit_status_ready():
                self._err.drain(self._chan)
                self._target._kill(self._err.pid())
            self._chan.close()
        super().close()


def _split_pid(err: bytes) -> tuple[int | None, bytes]:
    """The wrapper's pid line out of stderr (it may follow login-shell noise)."""
    if err.startswith(_PID_MARK):
        start = 0
    else:
        at = err.find(b"\n" + _PID_MARK)
        if at < 0:
            return None, err
        start = at + 1
    end = err.find(b"\n", start)
    if end < 0:
        return None, err  # not complete yet
    digits = err[start + len(_PID_MARK) : end]
    return (int(digits) if digits.isdigit() else None), err[:start] + err[end + 1 :]


class _Output:
    """Reads one command's channel until exit, with its two deadlines: the whole command
    (limit) and silence (idle: nothing on stdout or stderr for that long). A deadline
    passed stops the remote command and raises CommandTimeout."""

    def __init__(self, target: SSHTarget, chan: paramiko.Channel, argv: tuple[str, ...], limit: float, idle: float) -> None:
        self.target, self.chan, self.argv, self.limit, self.idle = target, chan, argv, limit, idle
        self.start = time.monotonic()
        self.deadline = self.start + limit
        self.quiet_until = self.start + idle
        self.err = _Stderr()

    def heard(self) -> None:
        self.quiet_until = time.monotonic() + self.idle

    def check(self) -> float:
        """Raise when a deadline has passed, else the seconds until the nearer one."""
        now = time.monotonic()
        if now >= self.deadline:
            self.expire(f"no answer within {self.limit:g} s")
        if now >= self.quiet_until:
            self.expire(f"nothing from it for {self.idle:g} s")
        return min(self.deadline, self.quiet_until) - now

    def wait(self, for_status: bool = False) -> None:
        """Sleep until the channel may have news, or raise when a deadline has passed."""
        left = self.check()
        if for_status:  # the pipe stays readable after EOF: wait on the status itself
            self.chan.status_event.wait(min(left, 0.5))
        else:
            select.select([self.chan.fileno()], [], [], min(left, 0.5))

    def expire(self, why: str) -> None:
        self.err.drain(self.chan)
        self.target._kill(self.err.pid())
        self.chan.close()
        raise CommandTimeout(f"{shlex.join(self.argv)}: {why} on {self.target.where}; stopped it")

    def too_much(self, what: str) -> None:
        self.err.drain(self.chan)
        self.target._kill(self.err.pid())
        self.chan.close()
        raise TargetError(f"{shlex.join(self.argv)}: {what} on {self.target.where}; stopped it")

    def status(self) -> int:
        """The exit status once output is over (sshd may send it before or after the last output)."""
        chan = self.chan
        while not chan.status_event.is_set():
            if self.err.drain(chan):
                self.heard()
            self.wait(for_status=True)
        self.err.drain(chan)
        status = chan.exit_status
        if status == -1 and not chan.eof_received and _wait_inactive(self.target._transport, 2.0):
            raise self.target._lost(None)
        return status


def collect(target: SSHTarget, chan: paramiko.Channel, argv: tuple[str, ...], limit: float, idle: float,
            max_output: int) -> tuple[bytes, str, int]:  # fmt: skip
    """run(): stdout (at most max_output bytes, else TargetError), stderr text and status."""
    run = _Output(target, chan, argv, limit, idle)
    out = bytearray()
    while True:
        got = run.err.drain(chan)
        while chan.recv_ready():  # a flood keeps this true: the deadline is checked per chunk
            data = chan.recv(_CHUNK)
            got = True
            if len(out) + len(data) > max_output:
                run.too_much(f"more than {max_output} bytes of output (the limit)")
            out += data
            run.heard()
            run.check()
        if got:
            run.heard()
        if chan.eof_received or chan.closed:
            if chan.recv_ready() or chan.recv_stderr_ready():
                continue
            break
        run.wait()
    status = run.status()
    return bytes(out), run.err.text(), status


class _SSHStream(CommandStream):
    """A remote command's stdout line by line (lines cut at max_line and counted in
    truncated_lines); stderr is drained alongside with a cap (either can fill the
    window); at the end the status goes through run()'s checks (_checked)."""

    def __init__(self, target: SSHTarget, chan: paramiko.Channel, argv: tuple[str, ...], limit: float, idle: float,
                 max_line: int = MAX_LINE) -> None:  # fmt: skip
        self.argv = argv
        self._target, self._chan, self._limit = target, chan, limit
        self._run = _Output(target, chan, argv, limit, idle)
        self._cap = _LineCap(max_line)
        self._done: CommandResult | None = None

    @property
    def truncated_lines(self) -> int:
        return self._cap.truncated

    def _recv(self) -> bytes:
        """The next stdout bytes (b"" at EOF), draining stderr meanwhile; the deadlines hold."""
        chan = self._chan
        while True:
            if self._run.err.drain(chan):
                self._run.heard()
            try:
                self._run.check()  # also while a flood keeps recv_ready() true
                if chan.recv_ready() or chan.eof_received or chan.closed:
                    try:
                        data = chan.recv(_CHUNK)
                    except (paramiko.SSHException, EOFError, OSError) as exc:
                        raise self._target._lost(exc) from exc
                    if data:
                        self._run.heard()
                    return data
                self._run.wait()
            except CommandTimeout:
                self.close()
                raise

    def __iter__(self) -> Iterator[str]:
        if self._done is not None:
            return
        tail = b""
        while True:
            data = self._recv()
            if not data:
                break
            lines = (tail + self._cap.feed(data)).split(b"\n")
            tail = lines.pop()  # at most max_line bytes: _LineCap cut it
            for raw in lines:
                yield raw.decode("utf-8", "replace").rstrip("\r")
        if tail:
            yield tail.decode("utf-8", "replace").rstrip("\r")
        self.result()

    def result(self) -> CommandResult:
        if self._done is None:
            while self._recv():  # lines nobody asked for
                pass
            try:
                status = self._run.status()
            except CommandTimeout:
                self.close()
                raise
            self._chan.close()
            result = CommandResult(self.argv, status, "", self._run.err.text(), time.monotonic() - self._run.start)
            self._done = self._target._checked(result, False)
        return self._done

    def close(self) -> None:
        if not self._chan.closed:
            if not self._chan.exit_status_ready():
                self._run.err.drain(self._chan)
                self._target._kill(self._run.err.pid())
            self._chan.close()


class _ChannelConnection:
    """A direct-tcpip channel that fails like a socket (OSError), never with paramiko's errors."""

    def __init__(self, chan: paramiko.Channel) -> None:
        self._chan = chan

    def sendall(self, data: bytes) -> None:
        try:
            self._chan.sendall(data)
        except paramiko.SSHException as exc:
            raise ConnectionError(str(exc)) from exc

    def recv(self, size: int) -> bytes:
        try:
            return self._chan.recv(size)
        except paramiko.SSHException as exc:
            raise ConnectionError(str(exc)) from exc

    def settimeout(self, timeout: float | None) -> None:
        self._chan.settimeout(timeout)

    def close(self) -> None:
        self._chan.close()

    def __enter__(self) -> _ChannelConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
