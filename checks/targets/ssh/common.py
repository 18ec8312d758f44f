"""Small helpers shared by the SSH modules."""

from __future__ import annotations

import time
from collections.abc import Callable

import paramiko

PasswordPrompt = Callable[[str], "str | None"]


def _reason(exc: BaseException | None) -> str:
    if exc is None:
        return "the server closed the connection"
    if isinstance(exc, EOFError):
        return "the server closed the connection"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _wait_inactive(transport: paramiko.Transport, seconds: float) -> bool:
    """True once the transport is dead. Its thread closes the channels a moment
    before it marks itself inactive, so a lost connection needs a short wait."""
    deadline = time.monotonic() + seconds
    while transport.is_active():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True
