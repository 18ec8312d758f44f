"""SSHTarget: the Target seam over one SSH connection (see the package docstring)."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import posixpath
import shlex
import stat
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import TextIO

import paramiko

from checks.errors import (
    CommandNotFound,
    CommandTimeout,
    ConnectFailed,
    InputError,
    PfdiagError,
    TargetError,
    UsageError,
)
from checks.model import CommandResult
from checks.targets.base import FileInfo, Target, decode_stream
from checks.targets.ssh.channels import (
    MAX_LINE,
    MAX_OUTPUT,
    _ChannelConnection,
    _CommandReader,
    _SFTPReader,
    _SSHStream,
    collect,
    request,
)
from checks.targets.ssh.common import PasswordPrompt, _reason, _wait_inactive
from checks.targets.ssh.dial import _Dialer, _open_direct
from checks.targets.ssh.hostkeys import HostKeyPolicy
from checks.targets.ssh.spec import _load_config, _resolve, valid_host

# Constant shell text: argv arrives as "$@", never inside the script itself. It first
# tells us its pid on stderr (it becomes the command by exec): see channels._PID_MARK.
_WRAPPER = 'printf "pfdiag-pid %s\\n" "$$" >&2; PATH="/usr/sbin:/sbin:$PATH"; LC_ALL=C; export PATH LC_ALL; exec "$@"'
# TERM the command (and its process group: a pipeline's members), KILL it 2 s later.
# Run as the login user: enough for its own commands, and sudo relays TERM to its child.
_KILL = 'kill -TERM "$1" 2>/dev/null || exit 0; kill -TERM -- "-$1" 2>/dev/null; sleep 2; kill -KILL -- "-$1" "$1" 2>/dev/null; exit 0'
# Remote decompressor by magic bytes (the same table as base.decode_stream), for open_filtered.
_DECOMPRESS = {"gzip": "gzip -dc", "bz2": "bzip2 -dc", "xz": "xz -dc", None: "cat"}
_MAGIC = ((b"\x1f\x8b", "gzip"), (b"BZh", "bz2"), (b"\xfd7zXZ\x00", "xz"))


# --- the target -------------------------------------------------------------------------


def _check_argv(argv: Sequence[str]) -> tuple[str, ...]:
    argv = tuple(argv)
    if not argv or not all(isinstance(a, str) and "\0" not in a for a in argv) or not argv[0]:
        raise TargetError(f"invalid command {argv!r}")
    return argv


def _check_path(path: str) -> str:
    if not isinstance(path, str) or not path or "\0" in path or "\n" in path:
        raise InputError(f"invalid remote path {path!r}")
    return path


_SUDO_PASSWORD = ("a password is required", "a terminal is required")
_SUDO_DENIED = ("is not allowed to execute", "is not in the sudoers file")


class SSHTarget(Target):
    """A mail host reached over SSH. See the module docstring for the rules."""

    kind = "ssh"  # live; its sockets are the mail host's (direct-tcpip), which picks the source address

    def __init__(self, label: str, user: str, dialer: _Dialer, command_timeout: float, io_timeout: float | None = None,
                 max_output: int = MAX_OUTPUT, max_line: int = MAX_LINE) -> None:  # fmt: skip
        self.host = label
        self.where = f"ssh:{label}"
        self.user = user
        self.route: tuple[str, ...] = tuple(dialer.labels)  # jump hosts first, this host last
        self.command_timeout = command_timeout
        #: the longest the server may stay silent: a channel open, an exec or SFTP request,
        #: a command's output (stdout or stderr), an SFTP reply
        self.io_timeout = command_timeout if io_timeout is None else io_timeout
        self.max_output = max_output
        self.max_line = max_line
        self._stalled: str | None = None  # why the server counts as no longer answering requests
        self._sftp_stalled: str | None = None  # the same for its SFTP subsystem alone
        self._transports = list(dialer.route)
        self._sftp: paramiko.SFTPClient | None = None
        self._uid: int | None = None
        self._privileged: set[str] = set()  # programs asked for with privileged=True, for the sudo hint
        self._closed = False

    @classmethod
    def open(
        cls,
        spec: str,
        *,
        accept_new_host_key: bool = False,
        known_hosts: str | None = None,
        ssh_config: str | None = None,
        connect_timeout: float = 10,
        command_timeout: float = 30,
        password_prompt: PasswordPrompt | None = None,
        identity: str | None = None,
        io_timeout: float | None = None,
        max_output: int = MAX_OUTPUT,
        max_line: int = MAX_LINE,
    ) -> SSHTarget:
        """Connect, verify the host key, log in. Raises UsageError for a bad spec
        or config, TargetError for everything the network or server says.
        ``identity`` (``--identity``) is the key file for the mail host itself, tried
        before ssh_config's IdentityFile entries (like ``ssh -i``).

        Deadlines: connect_timeout for each step of connecting (TCP, banner, key
        exchange, login); io_timeout (default command_timeout) for each answer once
        logged in (channel open, exec and SFTP requests, SFTP replies, a silent
        command); command_timeout for a whole command unless run() gets its own.
        Caps: max_output bytes of a run()'s stdout (more stops the command with a
        TargetError); max_line bytes of a streamed line (longer ones are cut, counted)."""
        if connect_timeout <= 0 or command_timeout <= 0 or (io_timeout is not None and io_timeout <= 0):
            raise UsageError("SSH timeouts must be positive")
        if max_output <= 0 or max_line <= 0:
            raise UsageError("SSH output limits must be positive")
        config, config_path = _load_config(ssh_config)
        hop = _resolve(spec, config, config_path)
        if identity:
            key = os.path.expanduser(identity)
            if not os.path.isfile(key):
                raise UsageError(f"--identity {identity}: no such key file")
            hop = replace(hop, identities=(key, *(i for i in hop.identities if i != key)))
        dialer = _Dialer(
            config,
            config_path,
            HostKeyPolicy(known_hosts, accept_new_host_key),
            float(connect_timeout),
            password_prompt,
        )
        try:
            dialer.dial(hop)
        except BaseException:
            dialer.close()
            raise
        return cls(hop.label, hop.user, dialer, float(command_timeout), None if io_timeout is None else float(io_timeout),
                   int(max_output), int(max_line))  # fmt: skip

    # -- lifecycle

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._sftp is not None:
            with contextlib.suppress(paramiko.SSHException, EOFError, OSError):
                self._sftp.close()
        for transport in reversed(self._transports):
            transport.close()

    def __enter__(self) -> SSHTarget:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def _transport(self) -> paramiko.Transport:
        return self._transports[-1]

    def _lost(self, exc: BaseException | None) -> TargetError:
        saved = None
        for transport in self._transports:  # the hop that died holds the reason
            saved = saved or transport.get_exception()
        return TargetError(f"connection to {self.host} lost: {_reason(exc if saved is None else saved)}")

    def _alive(self) -> None:
        if self._closed:
            raise TargetError(f"{self.where}: the SSH connection was closed")
        if not self._transport.is_active():
            raise self._lost(None)
        if self._stalled is not None:
            raise TargetError(f"{self.where}: the SSH server stopped answering ({self._stalled}); not trying again")

    def _stall(self, exc: CommandTimeout) -> CommandTimeout:
        """A request the server left unanswered: later ones would hang the same way."""
        self._stalled = str(exc)
        return exc

    def _open_session(self, action: str) -> paramiko.Channel:
        """A session channel, waiting at most io_timeout for the server to grant it."""
        try:
            return self._transport.open_session(timeout=self.io_timeout)
        except paramiko.ChannelException:
            raise
        except paramiko.SSHException as exc:
            if self._transport.is_active() and "Timeout" in str(exc):
                raise self._stall(CommandTimeout(
                    f"{action}: the SSH server on {self.where} did not open a channel within {self.io_timeout:g} s"
                )) from exc  # fmt: skip
            raise

    def _start(self, argv: Sequence[str], command: str) -> paramiko.Channel:
        """A channel running command, stdin at EOF (as LocalTarget's DEVNULL)."""
        action = shlex.join(argv)
        chan = self._open_session(action)
        try:
            request(chan, lambda: chan.exec_command(command), self.io_timeout, f"{action} on {self.where}")
            chan.shutdown_write()
        except CommandTimeout as exc:
            chan.close()
            raise self._stall(exc) from None
        except BaseException:
            chan.close()
            raise
        return chan

    @contextlib.contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        """Map whatever paramiko or the socket raise into pfdiag's errors."""
        self._alive()
        try:
            yield
        except PfdiagError:
            raise
        except TimeoutError as exc:  # a channel's own timeout: only SFTP's is set (io_timeout)
            self._sftp_stalled = f"{action}: no answer within {self.io_timeout:g} s"
            self._drop_sftp()
            raise CommandTimeout(f"{self.where}: {self._sftp_stalled} (SFTP)") from exc
        except (paramiko.SSHException, EOFError, OSError) as exc:
            if _wait_inactive(self._transport, 0.5):
                raise self._lost(exc) from exc
            raise TargetError(f"{self.where}: {action} failed: {_reason(exc)}") from exc

    # -- commands

    def run(self, argv: Sequence[str], timeout: float | None = None, *, privileged: bool = False) -> CommandResult:
        """Run argv on the host (timeout defaults to command_timeout).

        privileged=True: the command needs root (postqueue -j, postcat). As root it
        runs as is; otherwise through ``sudo -n`` (never prompting): a user without
        passwordless sudo for it gets a TargetError saying what to allow.
        More than max_output bytes of stdout stop the command: TargetError."""
        argv = _check_argv(argv)
        limit = self.command_timeout if timeout is None else float(timeout)
        sudo = privileged and self._login_uid() != 0
        if sudo:
            self._privileged.add(argv[0])
        start = time.monotonic()
        full = ("sudo", "-n", "--", *argv) if sudo else argv
        with self._guard(f"running {shlex.join(argv)}"):
            chan = self._start(argv, self._command(full))
            try:
                out, err, status = collect(self, chan, argv, limit, self.io_timeout, self.max_output)
            finally:
                chan.close()
        result = CommandResult(argv, status, out.decode("utf-8", "replace"), err, time.monotonic() - start)
        return self._checked(result, sudo)

    def stream(self, argv: Sequence[str], timeout: float | None = None) -> _SSHStream:
        """run()'s command with stdout handed out line by line as it arrives (see
        checks/targets/streams.py). Whether the program existed (exit 127) is known only
        when it ends: CommandNotFound then comes from the end of the lines, like the
        timeout (whole-command deadline, default command_timeout; silence: io_timeout).
        Lines longer than max_line are cut there (the stream's truncated_lines counts them)."""
        argv = _check_argv(argv)
        limit = self.command_timeout if timeout is None else float(timeout)
        with self._guard(f"running {shlex.join(argv)}"):
            chan = self._start(argv, self._command(argv))
        return _SSHStream(self, chan, argv, limit, self.io_timeout, self.max_line)

    def _command(self, argv: Sequence[str]) -> str:
        return shlex.join(["sh", "-c", _WRAPPER, "sh", *argv])

    def _kill(self, pid: int | None) -> None:
        """Best effort: stop a command we gave up on (see _KILL), waiting at most a
        moment for the server to take the request."""
        if pid is None or pid <= 1 or self._stalled is not None or not self._transport.is_active():
            return
        with contextlib.suppress(PfdiagError, paramiko.SSHException, EOFError, OSError):
            chan = self._transport.open_session(timeout=min(self.io_timeout, 2.0))
            request(chan, lambda: chan.exec_command(shlex.join(["sh", "-c", _KILL, "sh", str(pid)])),
                    min(self.io_timeout, 2.0), "kill")  # fmt: skip
            chan.close()  # the kill script runs on by itself

    def _checked(self, result: CommandResult, sudo: bool) -> CommandResult:
        name = result.argv[0]
        sudo_says = [line for line in result.stderr.splitlines() if line.startswith("sudo: ")] if sudo else []
        if result.returncode == 127 and sudo and "sudo" in result.stderr and not sudo_says:
            raise TargetError(f"{self.where}: {name} needs root, but sudo is not installed there; log in as root")
        if result.returncode == 127 and "not found" in result.stderr:  # sh: "exec: X: not found"
            raise CommandNotFound(f"{name}: command not found on {self.where}")
        if result.returncode == 1 and sudo_says:
            said = " ".join(sudo_says)
            if "command not found" in said:
                raise CommandNotFound(f"{name}: command not found on {self.where} (sudo)")
            if any(s in said for s in _SUDO_PASSWORD + _SUDO_DENIED):
                raise TargetError(self._sudo_hint(name))
        return result

    def _sudo_hint(self, name: str) -> str:
        listed = ", ".join(sorted(self._privileged))
        return (
            f"{self.where}: {name} needs root, and sudo will not run it for {self.user} without a password. "
            f"Allow passwordless sudo for the commands pfdiag runs as root ({listed}), e.g. in /etc/sudoers.d/pfdiag: "
            f"'{self.user} ALL=(root) NOPASSWD: <full path of each, see command -v>', or log in as root"
        )

    def _login_uid(self) -> int:
        if self._uid is None:
            result = self.run(["id", "-u"])
            self._uid = int(result.stdout.strip()) if result.ok and result.stdout.strip().isdigit() else -1
        return self._uid

    # -- files

    def _client(self) -> paramiko.SFTPClient:
        """The SFTP session, opened on first use; each request waits at most io_timeout."""
        if self._sftp_stalled is not None:
            raise TargetError(f"{self.where}: its SFTP server stopped answering ({self._sftp_stalled}); not trying again")
        if self._sftp is None:
            chan = self._open_session("SFTP")
            try:
                request(chan, lambda: chan.invoke_subsystem("sftp"), self.io_timeout, f"starting SFTP on {self.where}")
                chan.settimeout(self.io_timeout)  # every SFTP reply: a hung request fails instead of waiting forever
                self._sftp = paramiko.SFTPClient(chan)  # the version exchange already waits on that timeout
            except CommandTimeout as exc:
                chan.close()
                self._sftp_stalled = str(exc)
                raise
            except paramiko.SSHException as exc:
                chan.close()
                if not self._transport.is_active():
                    raise
                raise TargetError(f"{self.where}: no SFTP there ({_reason(exc)}); sshd needs 'Subsystem sftp'") from exc
            except BaseException:
                chan.close()
                raise
        return self._sftp

    def _drop_sftp(self) -> None:
        """An SFTP session whose reply did not come is out of step: never reuse it."""
        sftp, self._sftp = self._sftp, None
        if sftp is not None:
            with contextlib.suppress(paramiko.SSHException, EOFError, OSError):
                sftp.get_channel().close()  # type: ignore[union-attr]

    def _file_error(self, path: str, exc: OSError) -> InputError | None:
        """An SFTP status (no such file, permission) as InputError; None for a broken link."""
        if exc.errno is None or not self._transport.is_active():
            return None
        said = f"{self.where}:{path}: {exc.strerror or os.strerror(exc.errno)}"
        if exc.errno == errno.EACCES and self.user != "root":  # mail logs are often root:adm 0640
            said += f" for {self.user}: log in as root, or add {self.user} to the log's group (often adm)"
        return InputError(said)

    def _stat(self, path: str) -> paramiko.SFTPAttributes:
        try:
            return self._client().stat(path)
        except OSError as exc:
            mapped = self._file_error(path, exc)
            if mapped is None:
                raise
            raise mapped from exc

    def open_text(self, path: str) -> TextIO:
        """Stream a remote file over SFTP, decompressing gzip/bz2/xz by magic bytes."""
        path = _check_path(path)
        with self._guard(f"reading {path}"):
            attrs = self._stat(path)
            if stat.S_ISDIR(attrs.st_mode or 0):
                raise InputError(f"{self.where}:{path}: is a directory")
            try:
                handle = self._client().open(path, "rb")
            except OSError as exc:
                mapped = self._file_error(path, exc)
                if mapped is None:
                    raise
                raise mapped from exc
        return decode_stream(_SFTPReader(self, handle, attrs.st_size or 0, path), f"{self.where}:{path}")  # type: ignore[arg-type]

    def open_filtered(
        self, path: str, since_epoch: float | None = None, pattern: str = "postfix", idle_timeout: float | None = None
    ) -> TextIO:
        """Only the lines of a (possibly compressed) remote log that contain
        pattern (a grep basic regex), filtered on the host so a big log is not copied.

        since_epoch skips a whole file last written before it (nothing in it can be
        newer); lines are not filtered by time here: the log parser knows the formats.
        idle_timeout (default io_timeout): the most silence tolerated between
        chunks of output."""
        path = _check_path(path)
        if not pattern or "\0" in pattern or "\n" in pattern:
            raise UsageError(f"invalid filter pattern {pattern!r}")
        with self._guard(f"reading {path}"):
            attrs = self._stat(path)
            if stat.S_ISDIR(attrs.st_mode or 0):
                raise InputError(f"{self.where}:{path}: is a directory")
            if since_epoch is not None and (attrs.st_mtime or 0) < since_epoch:
                return io.StringIO("")
            kind = self._magic(path)
            # The script is a constant per kind; path and pattern are positional words.
            script = f'{_DECOMPRESS[kind]} -- "$1" | grep -a -e "$2"'
            chan = self._start(["grep", pattern, path], self._command(["sh", "-c", script, "sh", path, pattern]))
        idle = self.io_timeout if idle_timeout is None else idle_timeout
        reader = _CommandReader(self, chan, f"{self.where}:{path}", idle, self.max_line)
        return decode_stream(reader, f"{self.where}:{path}")  # type: ignore[arg-type]

    def _magic(self, path: str) -> str | None:
        try:
            with self._client().open(path, "rb") as fh:
                head = fh.read(6)
        except OSError as exc:
            mapped = self._file_error(path, exc)
            if mapped is None:
                raise
            raise mapped from exc
        return next((name for magic, name in _MAGIC if head.startswith(magic)), None)

    def file_info(self, path: str) -> FileInfo:
        path = _check_path(path)
        with self._guard(f"stat {path}"):
            attrs = self._stat(path)
        return FileInfo(path, attrs.st_size or 0, float(attrs.st_mtime or 0))

    def is_dir(self, path: str) -> bool:
        path = _check_path(path)
        with self._guard(f"stat {path}"):
            try:
                return stat.S_ISDIR(self._stat(path).st_mode or 0)
            except InputError:
                return False

    def list_dir(self, path: str) -> list[FileInfo]:
        """Regular files directly in path (symlinks followed), sorted by name."""
        path = _check_path(path)
        with self._guard(f"listing {path}"):
            try:
                entries = self._client().listdir_attr(path)
            except OSError as exc:
                if self._file_error(path, exc) is None:
                    raise
                raise InputError(f"{self.where}:{path}: cannot list directory ({exc.strerror})") from exc
            return [info for e in sorted(entries, key=lambda e: e.filename) if (info := self._regular(path, e))]

    def _regular(self, path: str, entry: paramiko.SFTPAttributes) -> FileInfo | None:
        full = posixpath.join(path, entry.filename)
        attrs = entry
        if stat.S_ISLNK(entry.st_mode or 0):
            try:
                attrs = self._stat(full)
            except InputError:
                return None  # dangling link
        if not stat.S_ISREG(attrs.st_mode or 0):
            return None
        return FileInfo(full, attrs.st_size or 0, float(attrs.st_mtime or 0))

    # -- network

    def connect(self, host: str, port: int, timeout: float, *, source: str | None = None) -> _ChannelConnection:
        """A TCP stream opened by the mail host (direct-tcpip), so probes see what it sees.
        The mail host's sshd picks the source address: direct-tcpip cannot ask for one."""
        if not valid_host(host) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise UsageError(f"invalid address {host!r} port {port!r}")
        if source is not None:
            raise ConnectFailed(f"cannot bind to {source} from {self.where}: over SSH (direct-tcpip) the mail "
                                "host's sshd chooses the source address", "bind-unsupported")  # fmt: skip
        with self._guard(f"connect to {host}:{port}"):
            chan = _open_direct(self._transport, host, port, timeout, self.where)
            chan.settimeout(timeout)
            return _ChannelConnection(chan)
        raise AssertionError("unreachable")


