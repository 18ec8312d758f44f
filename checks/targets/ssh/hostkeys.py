"""known_hosts: an unknown host is refused with its fingerprint unless the user opted in
(accept-new), a changed or @revoked key always. pfdiag writes only its own file."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import io
import os
import re
import shlex
from dataclasses import dataclass
from typing import BinaryIO

import paramiko

from checks import places
from checks.errors import TargetError
from checks.targets.ssh.spec import _Hop

PFDIAG_KNOWN_HOSTS = "~/.config/pfdiag/known_hosts"  # the default of checks/places.py's config_dir()


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
        self.save_file = os.path.expanduser(known_hosts or os.path.join(places.config_dir(), "known_hosts"))
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

