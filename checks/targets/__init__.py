"""Where checks run. See base.Target for the interface."""

from __future__ import annotations

from typing import Any

from checks.targets.base import Connection, FileInfo, Target

__all__ = ["Connection", "FileInfo", "LocalTarget", "SnapshotTarget", "Target"]


def __getattr__(name: str) -> Any:
    """The implementations load on first use: a probe need not import tarfile, nor a report paramiko."""
    if name == "LocalTarget":
        from checks.targets.local import LocalTarget

        return LocalTarget
    if name == "SnapshotTarget":
        from checks.targets.snapshot import SnapshotTarget

        return SnapshotTarget
    raise AttributeError(f"module 'checks.targets' has no attribute {name!r}")
