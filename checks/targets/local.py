"""LocalTarget: this machine, through subprocess and sockets."""

from __future__ import annotations

import contextlib
import io
import ipaddress
import os
import socket
import stat
import time
from typing import TYPE_CHECKING, Any, BinaryIO, Iterator, Sequence, TextIO

from checks import places
from checks.errors import CommandNotFound, CommandTimeout, ConnectFailed, InputError, TargetError
from checks.model import CommandResult
from checks.targets.base import DEFAULT_TIMEOUT, Connection, FileInfo, Started, Target, decode_stream

if TYPE_CHECKING:
    from checks.targets.streams import ProcessStream

# subprocess (with signal, threading, contextlib's helpers: ~4 ms of start-up) is imported by the
# commands that need it (a sink, standard input, a stream); run() and start() spawn the command
# themselves (os.posix_spawn and two pipes), which is all a probe's postconf needs.
MAX_OUTPUT = 64 << 20  # bytes of stdout or stderr kept from one command run(): memory stays bounded

class LocalTarget(Target):
    where = "local"
    kind = "local"
    local_network = True  # its sockets are this machine's
    can_bind = True
    can_change = True  # the guarded changes (config --apply, queue actions) run only here

    def __init__(self, env: dict[str, str] | None = None) -> None:
        base = dict(os.environ if env is None else env)
        parts = base.get("PATH", "/usr/bin:/bin").split(os.pathsep)
        # Postfix's tools live in sbin; a non-root PATH often lacks it (checks/places.py: PFDIAG_SBIN_PATH)
        base["PATH"] = os.pathsep.join(parts + [p for p in places.sbin_path() if p not in parts])
        base.setdefault("LC_ALL", "C")  # Postfix and coreutils messages in English, as the parsers expect
        self._env = base

    def default_logs(self) -> tuple[str, ...]:
        return places.mail_logs()  # PFDIAG_MAIL_LOGS moves them (packagers, the test suite)

    def run(self, argv: Sequence[str], timeout: float = DEFAULT_TIMEOUT) -> CommandResult:
        return self.start(argv, timeout).result()

    def start(self, argv: Sequence[str], timeout: float = DEFAULT_TIMEOUT) -> Spawned:
        """The command started now (no thread): ``.result()`` reads its output and waits for it,
        within ``timeout`` seconds from now."""
        return Spawned(_checked_argv(argv), timeout, self._env)

    def run_into(self, argv: Sequence[str], sink: BinaryIO, timeout: float = DEFAULT_TIMEOUT) -> CommandResult:
        """run(), with stdout written byte for byte into `sink` (an open binary file) instead of
        decoded: a queue file copied by postcat must stay exact when its mail is not UTF-8."""
        return self._run(argv, timeout, sink)

    def run_with_input(self, argv: Sequence[str], data: bytes, timeout: float = DEFAULT_TIMEOUT) -> CommandResult:
        """run(), with `data` as the command's standard input (a message handed to sendmail)."""
        return self._run(argv, timeout, None, data)

    def _run(self, argv: Sequence[str], timeout: float, sink: BinaryIO | None, data: bytes | None = None) -> CommandResult:
        import subprocess

        argv = _checked_argv(argv)
        start = time.monotonic()
        with _starting(argv):
            try:
                proc = subprocess.run(
                    list(argv), stdout=subprocess.PIPE if sink is None else sink, stderr=subprocess.PIPE,
                    timeout=timeout, env=self._env, input=data,
                    stdin=subprocess.DEVNULL if data is None else None,
                )
            except subprocess.TimeoutExpired as exc:
                raise CommandTimeout(f"{' '.join(argv)}: no answer within {timeout:g} s") from exc
        return CommandResult(
            argv=argv,
            returncode=proc.returncode,
            stdout=proc.stdout.decode("utf-8", "replace") if sink is None else "",
            stderr=proc.stderr.decode("utf-8", "replace"),
            duration=time.monotonic() - start,
        )

    def stream(self, argv: Sequence[str], timeout: float = DEFAULT_TIMEOUT) -> ProcessStream:
        """Like run(), but stdout is read line by line while the command still writes it
        (see checks/targets/streams.py): parsing overlaps a slow producer such as postqueue."""
        import subprocess

        from checks.targets.streams import ProcessStream

        argv = _checked_argv(argv)
        with _starting(argv):
            proc = subprocess.Popen(
                list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self._env, stdin=subprocess.DEVNULL
            )
        return ProcessStream(argv, proc, timeout)

    def open_text(self, path: str) -> TextIO:
        return decode_stream(open_file(path), path)

    def local_path(self, path: str) -> str | None:
        """Where this process can open the file itself (for parallel chunk reading)."""
        return path

    def file_info(self, path: str) -> FileInfo:
        try:
            st = os.stat(path)
        except OSError as exc:
            raise InputError(f"{path}: {exc.strerror or exc}") from exc
        return FileInfo(path, st.st_size, st.st_mtime)

    def is_dir(self, path: str) -> bool:
        return os.path.isdir(path)

    def list_dir(self, path: str) -> list[FileInfo]:
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            raise InputError(f"{path}: cannot list directory ({exc.strerror or exc})") from exc
        out = []
        for entry in entries:  # one stat per file (a queue directory holds thousands)
            try:
                if not entry.is_file():  # follows a symlink, like os.path.isfile
                    continue
                st = entry.stat()
            except OSError:
                continue
            out.append(FileInfo(os.path.join(path, entry.name), st.st_size, st.st_mtime))
        return out

    def connect(self, host: str, port: int, timeout: float, *, source: str | None = None) -> Connection:
        if source is not None:
            return _connect_from(host, port, timeout, source)
        try:
            # the host as bytes: getaddrinfo would pass a str through the idna codec (encodings.idna
            # and stringprep loaded for an IP address); a name that is not ASCII keeps that path
            name: Any = host.encode("ascii") if host.isascii() else host  # typeshed says str; getaddrinfo takes bytes
            return socket.create_connection((name, port), timeout=timeout)
        except OSError as exc:
            raise _connect_failed(exc, f"connect to {host}:{port}", timeout) from exc


class Spawned(Started):
    """A command LocalTarget.start() began with os.posix_spawn: stdin /dev/null, stdout and stderr
    on pipes read by result() within the deadline (a command still running then is killed:
    CommandTimeout), as subprocess.run(timeout=...) would, without subprocess or a thread."""

    def __init__(self, argv: tuple[str, ...], timeout: float, env: dict[str, str]) -> None:
        self.argv, self.timeout = argv, timeout
        self._start = time.monotonic()
        self._deadline = self._start + timeout
        self.pid: int | None = None
        program = _which(argv[0], env)
        if program is None:
            raise CommandNotFound(f"{argv[0]}: command not found on this machine")
        fds: list[int] = []
        try:
            out_r, out_w = os.pipe()  # non-inheritable: only the dup2'd copies reach the command
            fds += [out_r, out_w]
            err_r, err_w = os.pipe()
            fds += [err_r, err_w]
            null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            fds.append(null)
            with _starting(argv):
                import signal

                self.pid = os.posix_spawn(program, list(argv), env, setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
                                          file_actions=[(os.POSIX_SPAWN_DUP2, null, 0), (os.POSIX_SPAWN_DUP2, out_w, 1),
                                                        (os.POSIX_SPAWN_DUP2, err_w, 2)])  # fmt: skip
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        for fd in (out_w, err_w, null):
            os.close(fd)
        self._fds = {out_r: bytearray(), err_r: bytearray()}
        self._out, self._err = out_r, err_r
        self._open = True
        self._result: CommandResult | None = None

    def result(self) -> CommandResult:
        if self._result is not None:
            return self._result
        import select

        poller = select.poll()
        for fd in self._fds:
            poller.register(fd, select.POLLIN)
        open_fds = set(self._fds)
        try:
            while open_fds:
                left = self._deadline - time.monotonic()
                if left <= 0:
                    raise self._overrun()
                for fd, _ in poller.poll(left * 1000):
                    chunk = os.read(fd, 1 << 16)
                    if not chunk:
                        poller.unregister(fd)
                        open_fds.discard(fd)
                    elif len(self._fds[fd]) + len(chunk) > MAX_OUTPUT:
                        self._kill()
                        raise TargetError(f"{' '.join(self.argv)}: more than {MAX_OUTPUT >> 20} MiB of output")
                    else:
                        self._fds[fd] += chunk
            status = self._reap()
        finally:
            self._close_pipes()
        self._result = CommandResult(argv=self.argv, returncode=os.waitstatus_to_exitcode(status),
                                     stdout=self._fds[self._out].decode("utf-8", "replace"),
                                     stderr=self._fds[self._err].decode("utf-8", "replace"),
                                     duration=time.monotonic() - self._start)  # fmt: skip
        return self._result

    def _reap(self) -> int:
        """The command's wait status once it has closed its output: by the deadline, or killed.
        Its exit is awaited on a pidfd (Linux >= 5.3) when there is one, else polled."""
        import select

        assert self.pid is not None
        pidfd = None
        pause = 0.0002
        try:
            while True:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid:
                    self.pid = None
                    return status
                left = self._deadline - time.monotonic()
                if left <= 0:
                    raise self._overrun()
                if pidfd is None and hasattr(os, "pidfd_open"):
                    with contextlib.suppress(OSError):
                        pidfd = os.pidfd_open(self.pid)
                if pidfd is not None:
                    poller = select.poll()
                    poller.register(pidfd, select.POLLIN)
                    poller.poll(left * 1000)  # readable when it has exited
                else:
                    time.sleep(min(pause, left))
                    pause = min(pause * 2, 0.01)
        finally:
            if pidfd is not None:
                os.close(pidfd)

    def _overrun(self) -> CommandTimeout:
        self._kill()
        return CommandTimeout(f"{' '.join(self.argv)}: no answer within {self.timeout:g} s")

    def _kill(self) -> None:
        if self.pid is not None:
            with contextlib.suppress(OSError):
                os.kill(self.pid, 9)  # SIGKILL, as subprocess.run does at its timeout
                os.waitpid(self.pid, 0)
            self.pid = None

    def _close_pipes(self) -> None:
        if self._open:
            self._open = False
            for fd in self._fds:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def close(self) -> None:
        if self._result is None:
            self._kill()
            self._close_pipes()


def _which(program: str, env: dict[str, str]) -> str | None:
    """Where `program` is on env's PATH (as subprocess searches it), or itself when it has a slash."""
    if os.sep in program:
        return program  # posix_spawn says what is wrong with it
    for directory in os.get_exec_path(env):
        path = os.path.join(directory, program)
        if os.access(path, os.X_OK) and not os.path.isdir(path):
            return path
    return None


def open_file(path: str, label: str | None = None) -> io.FileIO:
    """A local file opened for reading (unbuffered), or InputError in one line naming
    `label` (default: the path). Opened without blocking, so that a FIFO nobody writes
    to reads as empty instead of hanging; a directory, device (/dev/zero never ends)
    or socket is refused."""
    label = label or path
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise InputError(f"{label}: cannot read ({exc.strerror or exc})") from exc
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise InputError(f"{label}: is a directory")
        if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
            raise InputError(f"{label}: {'a socket' if stat.S_ISSOCK(mode) else 'a device'}, not a file to read")
        os.set_blocking(fd, True)
        return io.FileIO(fd, "rb", closefd=True)
    except BaseException:
        os.close(fd)
        raise


def _checked_argv(argv: Sequence[str]) -> tuple[str, ...]:
    argv = tuple(argv)
    if not argv or not all(isinstance(a, str) for a in argv):
        raise TargetError(f"invalid command {argv!r}")
    return argv


@contextlib.contextmanager
def _starting(argv: tuple[str, ...]) -> Iterator[None]:
    """Starting a command: what can go wrong, as one clear line."""
    try:
        yield
    except FileNotFoundError as exc:
        raise CommandNotFound(f"{argv[0]}: command not found on this machine") from exc
    except PermissionError as exc:
        raise TargetError(f"{argv[0]}: permission denied") from exc
    except OSError as exc:  # no processes or descriptors left, a sink that cannot be written...
        raise TargetError(f"{argv[0]}: cannot run ({exc.strerror or exc})") from exc


def _connect_failed(exc: OSError, what: str, timeout: float) -> ConnectFailed:
    """A socket error of a connection attempt, as the probes classify it."""
    if isinstance(exc, socket.timeout):
        return ConnectFailed(f"{what}: timed out after {timeout:g} s", "timeout")
    if isinstance(exc, ConnectionRefusedError):
        return ConnectFailed(f"{what}: connection refused", "refused")
    if isinstance(exc, socket.gaierror):
        return ConnectFailed(f"{what}: {exc.strerror or exc}", "dns")
    kind = "unreachable" if exc.errno in (101, 113) else "error"  # ENETUNREACH, EHOSTUNREACH
    return ConnectFailed(f"{what}: {exc.strerror or exc}", kind)


def _connect_from(host: str, port: int, timeout: float, source: str) -> socket.socket:
    """connect() from a chosen local address. bind() is a step of its own, so that its failure
    (EADDRNOTAVAIL: the address is not on this host) is told apart from the connect's."""
    family = _ip_family(source)
    if family is None:
        raise ConnectFailed(f"cannot bind to {source!r}: not an IP address", "bind")
    if _ip_family(host) not in (None, family):
        raise ConnectFailed(f"cannot bind to {source}: {host} is of the other address family", "bind")
    try:
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
    except OSError as exc:
        raise _connect_failed(exc, f"connect to {host}:{port}", timeout) from exc
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        try:
            sock.bind((source, 0))
        except OSError as exc:
            raise ConnectFailed(f"cannot bind to {source}: {exc.strerror or exc}", "bind") from exc
        sock.settimeout(timeout)
        try:
            sock.connect(infos[0][4])
        except OSError as exc:
            raise _connect_failed(exc, f"connect to {host}:{port} from {source}", timeout) from exc
    except BaseException:
        sock.close()
        raise
    return sock


def _ip_family(host: str) -> int | None:
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return None
