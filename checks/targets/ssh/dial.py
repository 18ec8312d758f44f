"""Dialling: TCP (or a direct-tcpip tunnel through the jump host before), the SSH
handshake with its host key check, login; each step with the connect timeout."""

from __future__ import annotations

import logging
import re
import socket
import time
import weakref
from dataclasses import dataclass, field

import paramiko
from paramiko.common import OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED, OPEN_FAILED_UNKNOWN_CHANNEL_TYPE

from checks.errors import ConnectFailed, ConnectRefused, TargetError, UsageError
from checks.targets.ssh.auth import _Auth
from checks.targets.ssh.common import PasswordPrompt, _reason
from checks.targets.ssh.hostkeys import HostKeyPolicy
from checks.targets.ssh.spec import _Hop, _resolve

_MAX_HOPS = 5  # ProxyJump nesting; more is almost surely a loop in ssh_config
_KEEPALIVE = 15  # seconds; notices a dead peer during long idle stretches


# --- connecting and logging in ------------------------------------------------------


def _open_direct(transport: paramiko.Transport, host: str, port: int, timeout: float, where: str) -> paramiko.Channel:
    """A direct-tcpip channel: the SSH server opens the TCP connection for us."""
    start = time.monotonic()
    try:
        return transport.open_channel("direct-tcpip", (host, port), ("127.0.0.1", 0), timeout=timeout)
    except paramiko.ChannelException as exc:
        log = _open_failures.get(transport)
        text = (log.since(start) if log else None) or exc.text or "connect failed"
        if exc.code in (OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED, OPEN_FAILED_UNKNOWN_CHANNEL_TYPE):
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


