"""Public-key login on one hop: ssh-agent keys, then identity files, like ssh does."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field

import paramiko
from paramiko.pkey import UnknownKeyType

from checks.errors import TargetError
from checks.targets.ssh.common import PasswordPrompt, _reason
from checks.targets.ssh.spec import _Hop

_DEFAULT_IDENTITIES = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")
_PASSPHRASE_TRIES = 3


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
        except (OSError, ValueError, paramiko.SSHException, UnknownKeyType) as exc:
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


