"""SSHTarget: a mail host over SSH (paramiko), behind the same seam as LocalTarget.

    target = SSHTarget.open("admin@mx1.example.net:2222")   # or an ssh_config alias
    target.run(["postqueue", "-j"], privileged=True)

Connecting
    spec is ``[user@]host[:port]`` (IPv6 as ``[addr]:port``) or an alias from
    ~/.ssh/config (HostName, User, Port, IdentityFile, IdentitiesOnly,
    HostKeyAlias, UserKnownHostsFile, ProxyJump are honoured; ProxyCommand is
    not). ``user@`` and ``:port`` in spec win over the config, as with ssh.
    Authentication is by key only: ssh-agent first, then IdentityFile (or
    ~/.ssh/id_ed25519, id_ecdsa, id_rsa). An encrypted key is unlocked with
    ``password_prompt(prompt)`` when one is given (interactive use).

Host keys (the part that keeps pfdiag from talking to an impostor)
    Read from /etc/ssh/ssh_known_hosts, ~/.ssh/known_hosts and pfdiag's own
    file, PFDIAG_KNOWN_HOSTS (~/.config/pfdiag/known_hosts). pfdiag writes only
    to its own file, never to OpenSSH's. An unknown host is refused with its key
    type and SHA256 fingerprint unless ``accept_new_host_key`` (OpenSSH's
    accept-new): then the key is saved and used. A host whose known key differs
    from the one offered is always refused, naming the file and line.
    ``known_hosts=PATH`` replaces all of these with one file (read and written).
    Hashed entries, patterns and @revoked are understood; @cert-authority is
    not (such hosts count as unknown). StrictHostKeyChecking in ssh_config is
    ignored: the rules above always apply.

Commands
    argv is joined with shlex.join and run as ``sh -c WRAPPER sh ARGV...``:
    WRAPPER is a constant that puts /usr/sbin:/sbin first in PATH (postqueue
    and postconf live there; sshd's default PATH lacks them) and sets LC_ALL=C
    (the parsers and the sudo detection expect English), then ``exec "$@"``.
    The argv only ever reaches the remote shell as quoted positional words.
    ``privileged=True`` prefixes ``sudo -n`` when the login user is not root;
    sudo must then be passwordless for those commands. A command that overruns
    its timeout is stopped on the host (TERM, KILL 2 s later) from a second
    channel, using the pid WRAPPER reports first on stderr (stripped again).

Files
    open_text streams over SFTP in bounded, pipelined windows; open_filtered
    greps a big (possibly compressed) log on the host so only matching lines
    cross the link. Files must be readable by the login user (Debian: group adm).

The remote login shell must be POSIX-like (sh, bash, dash, ksh, zsh).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import getpass
import hashlib
import hmac
import io
import ipaddress
import logging
import os
import posixpath
import re
import select
import shlex
import socket
import stat
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import BinaryIO, TextIO

import paramiko

from checks.errors import (
    CommandNotFound,
    CommandTimeout,
    ConnectFailed,
    ConnectRefused,
    InputError,
    PfdiagError,
    TargetError,
    UsageError,
)
from checks.model import CommandResult
from checks.targets.base import FileInfo, Target, decode_stream
from checks.targets.streams import CommandStream

PFDIAG_KNOWN_HOSTS = "~/.config/pfdiag/known_hosts"
_USER_KNOWN_HOSTS = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")
_GLOBAL_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")
_DEFAULT_IDENTITIES = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")
_DEFAULT_SSH_CONFIG = "~/.ssh/config"
_MAX_HOPS = 5  # ProxyJump nesting; more is almost surely a loop in ssh_config
_KEEPALIVE = 15  # seconds; notices a dead peer during long idle stretches
_READ_WINDOW = 1 << 20  # SFTP bytes requested at once: pipelined, yet bounded memory
_PASSPHRASE_TRIES = 3

# Constant shell text: argv arrives as "$@", never inside the script itself. It first
# tells us its pid on stderr (it becomes the command by exec), so that a command we
# give up on can be killed: closing the channel alone leaves it running, and sshd
# honours SSH "signal" requests only for non-root logins (privilege separation).
_PID_MARK = b"pfdiag-pid "
_WRAPPER = 'printf "pfdiag-pid %s\\n" "$$" >&2; PATH="/usr/sbin:/sbin:$PATH"; LC_ALL=C; export PATH LC_ALL; exec "$@"'
# TERM the command (and its process group: a pipeline's members), KILL it 2 s later.
# Run as the login user: enough for its own commands, and sudo relays TERM to its child.
_KILL = 'kill -TERM "$1" 2>/dev/null || exit 0; kill -TERM -- "-$1" 2>/dev/null; sleep 2; kill -KILL -- "-$1" "$1" 2>/dev/null; exit 0'
# Remote decompressor by magic bytes (the same table as base.decode_stream), for open_filtered.
_DECOMPRESS = {"gzip": "gzip -dc", "bz2": "bzip2 -dc", "xz": "xz -dc", None: "cat"}
_MAGIC = ((b"\x1f\x8b", "gzip"), (b"BZh", "bz2"), (b"\xfd7zXZ\x00", "xz"))
_FILTER_TOOLS = ("gzip:", "bzip2:", "xz:", "cat:", "grep:", "sh:")

_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}\$?")
_SPEC_HELP = "expected [user@]host[:port] or an ssh_config alias"

PasswordPrompt = Callable[[str], "str | None"]


# --- validating what the user typed -------------------------------------------------


@dataclass(frozen=True)
class HostSpec:
    user: str | None
    host: str
    port: int | None


def _bad_spec(spec: str, why: str) -> UsageError:
    return UsageError(f"invalid SSH host {spec!r}: {why}; {_SPEC_HELP}")


def valid_host(host: str) -> bool:
    """A DNS name (letters, digits, '-', '_', dots) or an IP address; nothing an
    ssh or shell could read as an option or a word separator."""
    if not host or len(host) > 253:
        return False
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(host)
        return True
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    return all(_LABEL.fullmatch(label) for label in labels)


def _port(text: str, spec: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise _bad_spec(spec, f"port {text!r} is not a number from 1 to 65535")
    return int(text)


def _split_host_port(text: str, spec: str) -> tuple[str, int | None]:
    if text.startswith("["):  # [host]:port, the only way to give a port with IPv6
        host, bracket, tail = text[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            raise _bad_spec(spec, "unbalanced [ ]")
        return host, _port(tail[1:], spec) if tail else None
    if text.count(":") == 1:
        host, port = text.split(":")
        return host, _port(port, spec)
    return text, None  # no colon, or a bare IPv6 address


def parse_spec(spec: str) -> HostSpec:
    """Split and validate ``[user@]host[:port]``; UsageError for anything else."""
    if not isinstance(spec, str) or not spec.strip():
        raise UsageError(f"no SSH host given; {_SPEC_HELP}")
    user, at, rest = spec.rpartition("@")
    if at and not _USER.fullmatch(user):
        raise _bad_spec(spec, f"user name {user!r} is not valid")
    host, port = _split_host_port(rest, spec)
    if not valid_host(host):
        raise _bad_spec(spec, f"{host!r} is not a host name or IP address")
    return HostSpec(user if at else None, host, port)


# --- ssh_config ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Hop:
    """One SSH server on the way, everything needed to reach and log into it."""

    label: str  # what the user called it: alias or host
    hostname: str
    port: int
    user: str
    identities: tuple[str, ...]
    identities_only: bool
    key_alias: str | None
    user_known_hosts: tuple[str, ...]
    global_known_hosts: tuple[str, ...]
    jumps: tuple[str, ...]

    @property
    def key_name(self) -> str:
        """The known_hosts name, as OpenSSH writes it."""
        host = (self.key_alias or self.hostname).lower()
        return host if self.port == 22 else f"[{host}]:{self.port}"


def _load_config(path: str | None) -> tuple[paramiko.SSHConfig, str]:
    chosen = os.path.expanduser(path or _DEFAULT_SSH_CONFIG)
    if path is None and not os.path.exists(chosen):
        return paramiko.SSHConfig(), chosen
    try:
        return paramiko.SSHConfig.from_path(chosen), chosen
    except FileNotFoundError as exc:
        raise UsageError(f"ssh_config {chosen}: no such file") from exc
    except (OSError, paramiko.ConfigParseError, ValueError) as exc:
        raise UsageError(f"ssh_config {chosen}: cannot read it ({exc})") from exc


def _config_port(text: str, host: str, config_path: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise UsageError(f"{host}: Port {text!r} in {config_path} is not a number from 1 to 65535")
    return int(text)


def _local_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "root"


def _paths(value: object) -> tuple[str, ...]:
    items = value if isinstance(value, list) else str(value or "").split()
    return tuple(os.path.expanduser(str(p)) for p in items)


def _resolve(spec: str, config: paramiko.SSHConfig, config_path: str, *, with_jumps: bool = True) -> _Hop:
    parsed = parse_spec(spec.removeprefix("ssh://"))
    try:
        opts = config.lookup(parsed.host)
    except Exception as exc:  # paramiko can raise anything from Match exec / tokens
        raise UsageError(f"ssh_config {config_path}: cannot look up {parsed.host!r} ({exc})") from exc
    if opts.get("proxycommand", "none").lower() != "none":
        raise UsageError(f"{parsed.host}: ProxyCommand in {config_path} is not supported; use ProxyJump")
    hostname = opts.get("hostname", parsed.host)
    if not valid_host(hostname):
        raise UsageError(f"{parsed.host}: HostName {hostname!r} in {config_path} is not a host name or IP address")
    user = parsed.user or opts.get("user") or _local_user()
    if not _USER.fullmatch(user):
        raise UsageError(f"{parsed.host}: User {user!r} in {config_path} is not a valid user name")
    port = parsed.port or _config_port(str(opts.get("port", "22")), parsed.host, config_path)
    jump = opts.get("proxyjump", "none") if with_jumps else "none"
    return _Hop(
        label=parsed.host,
        hostname=hostname,
        port=port,
        user=user,
        identities=_paths(opts.get("identityfile")),
        identities_only=str(opts.get("identitiesonly", "no")).lower() == "yes",
        key_alias=opts.get("hostkeyalias"),
        user_known_hosts=_paths(opts.get("userknownhostsfile")) or _paths(list(_USER_KNOWN_HOSTS)),
        global_known_hosts=_paths(opts.get("globalknownhostsfile")) or _GLOBAL_KNOWN_HOSTS,
        jumps=() if jump.lower() == "none" else tuple(j.strip() for j in jump.split(",") if j.strip()),
    )


# --- known_hosts --------------------------------------------------------------------


@dataclass(frozen=True)
class _KnownKey:
    path: str
    lineno: int
    marker: str | None  # "@revoked", "@cert-authority" or None
    key_type: str
    blob: bytes


def sha256_fingerprint(blob: bytes) -> str:
    """OpenSSH's fingerprint format: SHA256:<unpadded base64>."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _glob(pattern: str, name: str) -> bool:
    # ssh patterns know only * and ?; fnmatch would read "[host]:port" as a character class
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern.lower())
    return re.fullmatch(regex, name) is not None


def _hashed_match(entry: str, name: str) -> bool:
    try:
        _, _, salt, digest = entry.split("|", 3)
        mac = hmac.new(base64.b64decode(salt), name.encode(), hashlib.sha1).digest()
        return hmac.compare_digest(mac, base64.b64decode(digest))
    except (ValueError, binascii.Error):
        return False


def _hosts_match(patterns: str, name: str) -> bool:
    matched = False
    for pattern in patterns.split(","):
        negated = pattern.startswith("!")
        pattern = pattern[1:] if negated else pattern
        hit = _hashed_match(pattern, name) if pattern.startswith("|1|") else _glob(pattern, name)
        if hit and negated:
            return False  # "!host" excludes even when another pattern matches
        matched = matched or hit
    return matched


def _parse_line(path: str, lineno: int, line: str, name: str) -> _KnownKey | None:
    fields = line.split()
    if not fields or fields[0].startswith("#"):
        return None
    marker = fields.pop(0) if fields[0].startswith("@") else None
    if len(fields) < 3 or not _hosts_match(fields[0], name):
        return None
    try:
        blob = base64.b64decode(fields[2], validate=True)
    except (binascii.Error, ValueError):
        return None
    return _KnownKey(path, lineno, marker, fields[1], blob)


def _read_known(path: str, name: str) -> list[_KnownKey]:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return [k for n, line in enumerate(fh, 1) if (k := _parse_line(path, n, line, name))]
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise TargetError(f"cannot read known hosts file {path}: {exc.strerror or exc}") from exc


class HostKeyPolicy:
    """Our own check instead of paramiko's Auto/WarningPolicy: unknown keys are
    accepted only when asked (accept-new), changed keys never."""

    def __init__(self, known_hosts: str | None, accept_new: bool) -> None:
        self.save_file = os.path.expanduser(known_hosts or PFDIAG_KNOWN_HOSTS)
        self._only = known_hosts is not None
        self.accept_new = accept_new

    def files(self, hop: _Hop) -> tuple[str, ...]:
        if self._only:
            return (self.save_file,)
        return (*hop.global_known_hosts, *hop.user_known_hosts, self.save_file)

    def known(self, hop: _Hop) -> list[_KnownKey]:
        return [k for path in self.files(hop) for k in _read_known(path, hop.key_name)]

    def preferred_types(self, hop: _Hop) -> list[str]:
        """Key algorithms to ask for first, so a host with several keys offers the one we know."""
        types: list[str] = []
        for key in self.known(hop):
            algs = ["rsa-sha2-512", "rsa-sha2-256"] if key.key_type == "ssh-rsa" else [key.key_type]
            types += [a for a in algs if key.marker is None and a not in types]
        return types

    def verify(self, hop: _Hop, key: paramiko.PKey) -> None:
        offered = key.asbytes()
        known = self.known(hop)
        for entry in known:
            if entry.marker == "@revoked" and entry.blob == offered:
                raise TargetError(
                    f"{hop.label}: host key {key.get_name()} {sha256_fingerprint(offered)} is marked @revoked "
                    f"in {entry.path} line {entry.lineno}; not connecting"
                )
        plain = [k for k in known if k.marker is None]
        if any(k.blob == offered for k in plain):
            return
        if plain:
            raise self._changed(hop, key, plain)
        if not self.accept_new:
            raise TargetError(
                f"{hop.label}: unknown host key for {hop.key_name}: {key.get_name()} {sha256_fingerprint(offered)}; "
                f"if that fingerprint is right (on the host: ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub), "
                f"rerun with --accept-new-host-key to trust it and save it in {self.save_file}"
            )
        self._save(hop, key)

    def _changed(self, hop: _Hop, key: paramiko.PKey, known: list[_KnownKey]) -> TargetError:
        same_type = [k for k in known if k.key_type == key.get_name()]
        old = (same_type or known)[0]
        return TargetError(
            f"{hop.label}: HOST KEY CHANGED for {hop.key_name}: it offers {key.get_name()} "
            f"{sha256_fingerprint(key.asbytes())}, but {old.path} line {old.lineno} holds {old.key_type} "
            f"{sha256_fingerprint(old.blob)}. Someone may be intercepting the connection, or the host was "
            f"reinstalled; only if you know it was, remove that line "
            f"(ssh-keygen -R {shlex.quote(hop.key_name)} -f {shlex.quote(old.path)}). Not connecting."
        )

    def _save(self, hop: _Hop, key: paramiko.PKey) -> None:
        line = f"{hop.key_name} {key.get_name()} {key.get_base64()}\n"
        try:
            os.makedirs(os.path.dirname(self.save_file) or ".", mode=0o700, exist_ok=True)
            fd = os.open(self.save_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a+b") as fh:
                fh.seek(0, io.SEEK_END)
                if fh.tell() and not _ends_with_newline(fh):
                    line = "\n" + line
                fh.write(line.encode())
        except OSError as exc:
            raise TargetError(
                f"{hop.label}: cannot save its host key to {self.save_file}: {exc.strerror or exc}"
            ) from exc


def _ends_with_newline(fh: BinaryIO) -> bool:
    fh.seek(-1, io.SEEK_END)
    last = fh.read(1)
    fh.seek(0, io.SEEK_END)
    return last == b"\n"


# --- connecting and logging in ------------------------------------------------------


def _open_direct(transport: paramiko.Transport, host: str, port: int, timeout: float, where: str) -> paramiko.Channel:
    """A direct-tcpip channel: the SSH server opens the TCP connection for us."""
    start = time.monotonic()
    try:
        return transport.open_channel("direct-tcpip", (host, port), ("127.0.0.1", 0), timeout=timeout)
    except paramiko.ChannelException as exc:
        log = _open_failures.get(transport)
        text = (log.since(start) if log else None) or exc.text or "connect failed"
        if exc.code in (paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED, paramiko.OPEN_FAILED_UNKNOWN_CHANNEL_TYPE):
            raise ConnectRefused(
                f"{where} refuses to open TCP connections (sshd: AllowTcpForwarding / PermitOpen): "
                f"{text}; allow it for pfdiag's user or run pfdiag on the mail host"
            ) from exc
        raise ConnectFailed(f"connect to {host}:{port} from {where}: {text}", _failure_kind(text)) from exc
    except paramiko.SSHException as exc:
        if transport.is_active():  # paramiko's only message for an unanswered channel open
            raise ConnectFailed(
                f"connect to {host}:{port} from {where}: timed out after {timeout:g} s", "timeout"
            ) from exc
        raise


class _OpenFailureLog(logging.Handler):
    """paramiko drops the reason sshd gives for a failed channel open ("Connection
    refused", "No route to host", "Name or service not known") and raises only
    the generic "Connect failed"; it does log the reason, so we read its log."""

    _LINE = re.compile(r"Secsh channel \d+ open FAILED: (.*): [^:]*$")

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self._last: tuple[float, str] = (0.0, "")

    def emit(self, record: logging.LogRecord) -> None:
        match = self._LINE.match(record.getMessage())
        if match:
            self._last = (time.monotonic(), match.group(1))

    def since(self, start: float) -> str | None:
        """The latest reason logged after start. Two opens failing at the same
        instant on one connection could swap reasons; the kinds stay plausible."""
        when, reason = self._last
        return reason if when >= start else None


_open_failures: weakref.WeakKeyDictionary[paramiko.Transport, _OpenFailureLog] = weakref.WeakKeyDictionary()


def _listen_for_open_failures(transport: paramiko.Transport) -> None:
    # a log channel of its own (under paramiko.transport, so user logging still sees it)
    name = f"paramiko.transport.pfdiag-{id(transport):x}"
    transport.set_log_channel(name)
    handler = _OpenFailureLog()
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]  # the name may be reused after an old transport died
    _open_failures[transport] = handler


def _failure_kind(text: str) -> str:
    low = text.lower()
    for needle, kind in (
        ("refused", "refused"),
        ("timed out", "timeout"),
        ("unreachable", "unreachable"),
        ("no route", "unreachable"),
        ("name", "dns"),  # "Name or service not known", "Temporary failure in name resolution"
        ("no address", "dns"),
    ):
        if needle in low:
            return kind
    return "error"


@dataclass
class _Dialer:
    """Builds the chain of transports to the target: jump hosts first."""

    config: paramiko.SSHConfig
    config_path: str
    policy: HostKeyPolicy
    timeout: float
    password_prompt: PasswordPrompt | None
    route: list[paramiko.Transport] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)

    def dial(self, hop: _Hop, depth: int = 0) -> None:
        if depth > _MAX_HOPS:
            raise UsageError(f"ProxyJump in {self.config_path} nests deeper than {_MAX_HOPS} hops (a loop?)")
        if hop.jumps:
            # The first jump host is reached by its own rules (it may have a ProxyJump
            # itself); the rest of the list goes through it, as ssh -J does.
            self.dial(_resolve(hop.jumps[0], self.config, self.config_path), depth + 1)
            for spec in hop.jumps[1:]:
                self._add(_resolve(spec, self.config, self.config_path, with_jumps=False))
        self._add(hop)

    def close(self) -> None:
        for transport in reversed(self.route):
            transport.close()

    def _add(self, hop: _Hop) -> None:
        sock = self._tunnel(hop) if self.route else self._tcp(hop)
        transport = self._handshake(hop, sock)
        self.route.append(transport)
        self.labels.append(hop.label)
        _Auth(hop, transport, self.password_prompt).login()
        transport.set_keepalive(_KEEPALIVE)

    def _tcp(self, hop: _Hop) -> socket.socket:
        where = (
            f"{hop.label} ({hop.hostname}:{hop.port})" if hop.label != hop.hostname else f"{hop.hostname}:{hop.port}"
        )
        try:
            return socket.create_connection((hop.hostname, hop.port), timeout=self.timeout)
        except TimeoutError as exc:
            raise TargetError(f"cannot reach {where}: no answer within {self.timeout:g} s") from exc
        except ConnectionRefusedError as exc:
            raise TargetError(
                f"cannot reach {where}: connection refused (is sshd listening on port {hop.port}?)"
            ) from exc
        except socket.gaierror as exc:
            raise TargetError(
                f"cannot reach {hop.label}: cannot resolve {hop.hostname} ({exc.strerror or exc})"
            ) from exc
        except OSError as exc:
            raise TargetError(f"cannot reach {where}: {exc.strerror or exc}") from exc

    def _tunnel(self, hop: _Hop) -> paramiko.Channel:
        try:
            return _open_direct(self.route[-1], hop.hostname, hop.port, self.timeout, f"jump host {self.labels[-1]}")
        except ConnectFailed as exc:
            raise TargetError(f"cannot reach {hop.label} through the jump host: {exc}") from exc
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise TargetError(f"connection to jump host {self.labels[-1]} lost: {_reason(exc)}") from exc

    def _handshake(self, hop: _Hop, sock: socket.socket | paramiko.Channel) -> paramiko.Transport:
        transport = paramiko.Transport(sock)
        # a little beyond start_client's own deadline, so a silent server reads as a timeout
        transport.banner_timeout = transport.handshake_timeout = self.timeout + 1
        transport.auth_timeout = self.timeout
        transport.channel_timeout = self.timeout
        preferred = self.policy.preferred_types(hop)
        if preferred:
            options = transport.get_security_options()
            options.key_types = [
                *[t for t in preferred if t in options.key_types],
                *[t for t in options.key_types if t not in preferred],
            ]
        _listen_for_open_failures(transport)
        try:
            # start_client returns quietly when its timeout passes: the key fetch tells
            transport.start_client(timeout=self.timeout)
            key = transport.get_remote_server_key()
        except (paramiko.SSHException, EOFError, OSError) as exc:
            timed_out = transport.is_active()
            why = _reason(transport.get_exception() or exc)
            transport.close()
            if timed_out:
                raise TargetError(
                    f"{hop.label}: no SSH handshake with {hop.hostname}:{hop.port} within {self.timeout:g} s "
                    "(is it an SSH server?)"
                ) from exc
            raise TargetError(f"{hop.label}: SSH handshake with {hop.hostname}:{hop.port} failed: {why}") from exc
        try:
            self.policy.verify(hop, key)
        except BaseException:
            transport.close()
            raise
        return transport


def _reason(exc: BaseException | None) -> str:
    if exc is None:
        return "the server closed the connection"
    if isinstance(exc, EOFError):
        return "the server closed the connection"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


@dataclass
class _Auth:
    """Public-key login: ssh-agent keys, then identity files, like ssh does."""

    hop: _Hop
    transport: paramiko.Transport
    password_prompt: PasswordPrompt | None
    tried: list[str] = field(default_factory=list)
    locked: list[str] = field(default_factory=list)  # encrypted keys we could not unlock

    def login(self) -> None:
        try:
            if not self.hop.identities_only and self._with_agent():
                return
            for path in self._identity_files():
                key = self._load(path)
                if key is not None and self._offer(key, path):
                    return
        except (paramiko.SSHException, EOFError, OSError) as exc:
            if isinstance(exc, paramiko.AuthenticationException) or self.transport.is_active():
                raise TargetError(f"{self.hop.label}: login failed: {_reason(exc)}") from exc
            raise TargetError(f"connection to {self.hop.label} lost during login: {_reason(exc)}") from exc
        raise TargetError(self._failure())

    def _failure(self) -> str:
        hint = (
            f"; {', '.join(self.locked)} is passphrase-protected: load it with ssh-add or run pfdiag interactively"
            if self.locked
            else ""
        )
        tried = ", ".join(self.tried) or "no keys (no ssh-agent, no key files)"
        return (
            f"{self.hop.label}: SSH login as {self.hop.user} refused; tried {tried}{hint}. Put a public key in "
            f"~{self.hop.user}/.ssh/authorized_keys there, or set IdentityFile in ~/.ssh/config"
        )

    def _with_agent(self) -> bool:
        try:
            agent = paramiko.Agent()
        except (paramiko.SSHException, OSError):
            return False
        try:
            for key in agent.get_keys():
                if self._offer(key, f"agent key {key.fingerprint}"):
                    return True
            return False
        finally:
            agent.close()

    def _identity_files(self) -> list[str]:
        if self.hop.identities:
            return list(self.hop.identities)
        return [p for p in (os.path.expanduser(d) for d in _DEFAULT_IDENTITIES) if os.path.exists(p)]

    def _load(self, path: str) -> paramiko.PKey | None:
        try:
            return paramiko.PKey.from_path(path)
        except FileNotFoundError:
            self.tried.append(f"{path} (missing)")
        except TypeError:  # cryptography: "Key is password-protected, but password was not provided"
            return self._unlock(path)
        except (OSError, ValueError, paramiko.SSHException, paramiko.UnknownKeyType) as exc:
            self.tried.append(f"{path} (unusable: {_reason(exc)})")
        return None

    def _unlock(self, path: str) -> paramiko.PKey | None:
        if self.password_prompt is None:
            self.locked.append(path)
            return None
        for _ in range(_PASSPHRASE_TRIES):
            phrase = self.password_prompt(f"Enter passphrase for key '{path}': ")
            if not phrase:
                break
            with contextlib.suppress(ValueError, TypeError):
                return paramiko.PKey.from_path(path, phrase.encode())  # type: ignore[arg-type]
        raise TargetError(f"{self.hop.label}: wrong passphrase for {path}")

    def _offer(self, key: paramiko.PKey, source: str) -> bool:
        try:
            remaining = self.transport.auth_publickey(self.hop.user, key)
        except paramiko.BadAuthenticationType as exc:
            raise TargetError(
                f"{self.hop.label}: sshd does not accept keys for {self.hop.user} (it allows: "
                f"{', '.join(exc.allowed_types) or 'nothing'}); pfdiag logs in with keys only"
            ) from exc
        except paramiko.AuthenticationException:
            self.tried.append(source)
            return False
        if remaining:  # partial success: the server wants a second factor too
            raise TargetError(f"{self.hop.label}: sshd wants more than a key ({', '.join(remaining)}); not supported")
        return True


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

    def readinto(self, buffer) -> int:  # type: ignore[override]
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

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(paramiko.SSHException, EOFError, OSError):
                self._fh.close()
        super().close()


class _CommandReader(io.RawIOBase):
    """stdout of a remote command as a stream; failures surface at the end."""

    def __init__(self, target: SSHTarget, chan: paramiko.Channel, label: str, idle_timeout: float) -> None:
        self._target, self._chan, self._label, self._idle = target, chan, label, idle_timeout
        chan.settimeout(idle_timeout)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        try:
            data = self._chan.recv(len(buffer))
        except TimeoutError as exc:
            self.close()
            raise CommandTimeout(f"{self._label}: nothing received for {self._idle:g} s") from exc
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise self._target._lost(exc) from exc
        if not data:
            self._finish()
        n = len(data)
        buffer[:n] = data
        return n

    def _finish(self) -> None:
        status = self._chan.recv_exit_status()
        if status == -1 and not self._chan.eof_received:
            raise self._target._lost(None)
        _, err_bytes = _split_pid(_drain_stderr(self._chan))
        # The pipeline's status is grep's (1: no line matched, fine); a damaged
        # archive shows only as the decompressor's complaint. Other stderr lines
        # may be login-shell chatter and are ignored.
        said = [line for line in err_bytes.decode("utf-8", "replace").splitlines() if line.startswith(_FILTER_TOOLS)]
        if status > 1 or said:
            raise InputError(f"{self._label}: remote filter failed (exit {status}): {' '.join(said[:2])}")

    def close(self) -> None:
        if not self.closed:
            if not self._chan.exit_status_ready():
                pid, _ = _split_pid(_drain_stderr(self._chan))
                self._target._kill(pid)
            self._chan.close()
        super().close()


def _drain_stderr(chan: paramiko.Channel) -> bytes:
    parts = []
    while chan.recv_stderr_ready():
        parts.append(chan.recv_stderr(65536))
    return b"".join(parts)


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


class _SSHStream(CommandStream):
    """A remote command's stdout line by line; stderr is drained alongside (either can
    fill its window); at the end the status goes through run()'s checks (_checked)."""

    def __init__(self, target: SSHTarget, chan: paramiko.Channel, argv: tuple[str, ...], limit: float) -> None:
        self.argv = argv
        self._target, self._chan, self._limit = target, chan, limit
        self._start = time.monotonic()
        self._deadline = self._start + limit
        self._err: list[bytes] = []
        self._done: CommandResult | None = None

    def _recv(self) -> bytes:
        """The next stdout bytes (b"" at EOF), draining stderr meanwhile; the deadline holds."""
        chan = self._chan
        while True:
            while chan.recv_stderr_ready():
                self._err.append(chan.recv_stderr(65536))
            if chan.recv_ready() or chan.eof_received or chan.closed:
                try:
                    return chan.recv(65536)
                except (paramiko.SSHException, EOFError, OSError) as exc:
                    raise self._target._lost(exc) from exc
            left = self._deadline - time.monotonic()
            if left <= 0:
                self._target._kill(_split_pid(b"".join(self._err))[0])
                self.close()
                raise CommandTimeout(f"{shlex.join(self.argv)}: no answer within {self._limit:g} s on {self._target.where}")
            select.select([chan.fileno()], [], [], min(left, 0.5))

    def __iter__(self) -> Iterator[str]:
        if self._done is not None:
            return
        tail = b""
        while True:
            data = self._recv()
            if not data:
                break
            lines = (tail + data).split(b"\n")
            tail = lines.pop()
            for raw in lines:
                yield raw.decode("utf-8", "replace").rstrip("\r")
        if tail:
            yield tail.decode("utf-8", "replace").rstrip("\r")
        self.result()

    def result(self) -> CommandResult:
        if self._done is None:
            while self._recv():  # lines nobody asked for
                pass
            chan = self._chan
            # the status may come after the last output, or before it (as in run())
            while not chan.status_event.is_set():
                left = self._deadline - time.monotonic()
                if left <= 0:
                    self.close()
                    raise CommandTimeout(f"{shlex.join(self.argv)}: no answer within {self._limit:g} s on {self._target.where}")
                chan.status_event.wait(min(left, 0.5))
            while chan.recv_stderr_ready():
                self._err.append(chan.recv_stderr(65536))
            status = chan.exit_status
            if status == -1 and not chan.eof_received and _wait_inactive(self._target._transport, 2.0):
                raise self._target._lost(None)
            err = _split_pid(b"".join(self._err))[1]
            chan.close()
            result = CommandResult(self.argv, status, "", err.decode("utf-8", "replace"), time.monotonic() - self._start)
            self._done = self._target._checked(result, False)
        return self._done

    def close(self) -> None:
        if not self._chan.closed:
            if not self._chan.exit_status_ready():
                while self._chan.recv_stderr_ready():
                    self._err.append(self._chan.recv_stderr(65536))
                self._target._kill(_split_pid(b"".join(self._err))[0])
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

    def __init__(self, label: str, user: str, dialer: _Dialer, command_timeout: float) -> None:
        self.host = label
        self.where = f"ssh:{label}"
        self.user = user
        self.route: tuple[str, ...] = tuple(dialer.labels)  # jump hosts first, this host last
        self.command_timeout = command_timeout
        self._open_timeout = dialer.timeout
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
    ) -> SSHTarget:
        """Connect, verify the host key, log in. Raises UsageError for a bad spec
        or config, TargetError for everything the network or server says.
        ``identity`` (``--identity``) is the key file for the mail host itself, tried
        before ssh_config's IdentityFile entries (like ``ssh -i``)."""
        if connect_timeout <= 0 or command_timeout <= 0:
            raise UsageError("SSH timeouts must be positive")
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
        return cls(hop.label, hop.user, dialer, float(command_timeout))

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

    @contextlib.contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        """Map whatever paramiko or the socket raise into pfdiag's errors."""
        self._alive()
        try:
            yield
        except PfdiagError:
            raise
        except (paramiko.SSHException, EOFError, OSError) as exc:
            if _wait_inactive(self._transport, 0.5):
                raise self._lost(exc) from exc
            raise TargetError(f"{self.where}: {action} failed: {_reason(exc)}") from exc

    # -- commands

    def run(self, argv: Sequence[str], timeout: float | None = None, *, privileged: bool = False) -> CommandResult:
        """Run argv on the host (timeout defaults to command_timeout).

        privileged=True: the command needs root (postqueue -j, postcat). As root it
        runs as is; otherwise through ``sudo -n`` (never prompting): a user without
        passwordless sudo for it gets a TargetError saying what to allow."""
        argv = _check_argv(argv)
        limit = self.command_timeout if timeout is None else float(timeout)
        sudo = privileged and self._login_uid() != 0
        if sudo:
            self._privileged.add(argv[0])
        start = time.monotonic()
        out, err, status = self._exec(argv, ("sudo", "-n", "--", *argv) if sudo else argv, limit)
        result = CommandResult(
            argv, status, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), time.monotonic() - start
        )
        return self._checked(result, sudo)

    def stream(self, argv: Sequence[str], timeout: float | None = None) -> _SSHStream:
        """run()'s command with stdout handed out line by line as it arrives (see
        checks/targets/streams.py). Whether the program existed (exit 127) is known only
        when it ends: CommandNotFound then comes from the end of the lines, like the
        timeout (whole-command deadline, default command_timeout)."""
        argv = _check_argv(argv)
        limit = self.command_timeout if timeout is None else float(timeout)
        with self._guard(f"running {shlex.join(argv)}"):
            chan = self._transport.open_session(timeout=self._open_timeout)
            try:
                chan.exec_command(self._command(argv))
                chan.shutdown_write()  # stdin at EOF, as run()
            except BaseException:
                chan.close()
                raise
        return _SSHStream(self, chan, argv, limit)

    def _command(self, argv: Sequence[str]) -> str:
        return shlex.join(["sh", "-c", _WRAPPER, "sh", *argv])

    def _exec(self, argv: tuple[str, ...], full: Sequence[str], limit: float) -> tuple[bytes, bytes, int]:
        with self._guard(f"running {shlex.join(argv)}"):
            chan = self._transport.open_session(timeout=self._open_timeout)
            try:
                chan.exec_command(self._command(full))
                chan.shutdown_write()  # stdin at EOF, as LocalTarget's DEVNULL
                return self._collect(chan, argv, limit)
            finally:
                chan.close()
        raise AssertionError("unreachable")  # _guard re-raises; keeps type checkers calm

    def _collect(self, chan: paramiko.Channel, argv: tuple[str, ...], limit: float) -> tuple[bytes, bytes, int]:
        """Read stdout and stderr together (either can fill its window) until exit or deadline."""
        out: list[bytes] = []
        err: list[bytes] = []
        deadline = time.monotonic() + limit
        fd = chan.fileno()
        while True:
            while chan.recv_ready():
                out.append(chan.recv(65536))
            while chan.recv_stderr_ready():
                err.append(chan.recv_stderr(65536))
            # Done at EOF *and* exit status: sshd may send the status before the
            # last output (it reaps the child before draining its pipe).
            if (chan.eof_received and chan.status_event.is_set()) or chan.closed:
                if not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                self._kill(_split_pid(b"".join(err))[0])
                raise CommandTimeout(f"{shlex.join(argv)}: no answer within {limit:g} s on {self.where}")
            if chan.eof_received:  # the pipe stays readable after EOF: wait on the status itself
                chan.status_event.wait(min(left, 0.5))
            else:
                select.select([fd], [], [], min(left, 0.5))
        status = chan.exit_status
        if status == -1 and not chan.eof_received and _wait_inactive(self._transport, 2.0):
            raise self._lost(None)
        return b"".join(out), _split_pid(b"".join(err))[1], status

    def _kill(self, pid: int | None) -> None:
        """Best effort: stop a command we gave up on (see _KILL), without waiting."""
        if pid is None or pid <= 1 or not self._transport.is_active():
            return
        with contextlib.suppress(paramiko.SSHException, EOFError, OSError):
            chan = self._transport.open_session(timeout=self._open_timeout)
            chan.exec_command(shlex.join(["sh", "-c", _KILL, "sh", str(pid)]))
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
        if self._sftp is None:
            try:
                self._sftp = self._transport.open_sftp_client()
            except paramiko.SSHException as exc:
                if not self._transport.is_active():
                    raise
                raise TargetError(f"{self.where}: no SFTP there ({_reason(exc)}); sshd needs 'Subsystem sftp'") from exc
            self._sftp.get_channel().settimeout(self.command_timeout)  # a hung request fails instead of waiting forever
        return self._sftp

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
        idle_timeout (default command_timeout): the most silence tolerated between
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
            chan = self._transport.open_session(timeout=self._open_timeout)
            chan.exec_command(self._command(["sh", "-c", script, "sh", path, pattern]))
            chan.shutdown_write()
        idle = self.command_timeout if idle_timeout is None else idle_timeout
        return decode_stream(_CommandReader(self, chan, f"{self.where}:{path}", idle), f"{self.where}:{path}")  # type: ignore[arg-type]

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


def _wait_inactive(transport: paramiko.Transport, seconds: float) -> bool:
    """True once the transport is dead. Its thread closes the channels a moment
    before it marks itself inactive, so a lost connection needs a short wait."""
    deadline = time.monotonic() + seconds
    while transport.is_active():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True
