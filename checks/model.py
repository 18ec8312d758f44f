"""Records that flow from checks to diagnose: frozen dataclasses, no I/O."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Severity(enum.IntEnum):
    """How much a finding matters; ordered so that max() picks the worst."""

    INFO = 0
    OK = 1
    WARNING = 2
    PROBLEM = 3
    ERROR = 4  # the check itself failed: we could not look

    def __str__(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class CommandResult:
    """What running one argv on a target gave."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return self.returncode == 0


@dataclass(frozen=True)
class Evidence:
    """Where a finding comes from: a command or file, and the excerpt that shows it."""

    source: str  # e.g. "postconf -h smtp_data_done_timeout", "/var/log/mail.log:1234"
    excerpt: str = ""
    where: str = "local"  # vantage point: "local", "ssh:mx1", "snapshot:FILE"


@dataclass(frozen=True)
class Finding:
    """One conclusion of one check. Tests assert on (severity, cause_id), not wording."""

    check_id: str
    severity: Severity
    summary: str
    cause_id: str | None = None
    evidence: tuple[Evidence, ...] = ()
    values: dict[str, Any] = field(default_factory=dict)
