"""Where checks run. See base.Target for the interface."""

from checks.targets.base import Connection, FileInfo, Target
from checks.targets.local import LocalTarget
from checks.targets.snapshot import SnapshotTarget

__all__ = ["Connection", "FileInfo", "LocalTarget", "SnapshotTarget", "Target"]
