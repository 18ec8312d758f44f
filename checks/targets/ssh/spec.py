"""What the user typed (``[user@]host[:port]``) and what ssh_config says about it:
one _Hop per SSH server on the way (jump hosts included)."""

from __future__ import annotations

import contextlib
import getpass
import ipaddress
import os
import re
from dataclasses import dataclass

import paramiko

from checks.errors import UsageError

_USER_KNOWN_HOSTS = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")
_GLOBAL_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")
_DEFAULT_IDENTITIES = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")
_DEFAULT_SSH_CONFIG = "~/.ssh/config"
_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}\$?")
_SPEC_HELP = "expected [user@]host[:port] or an ssh_config alias"


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

