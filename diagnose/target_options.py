"""The options that choose WHERE a command looks, shared by every subcommand."""

from __future__ import annotations

import argparse
import os
from importlib import resources

from checks.errors import UsageError
from checks.targets import LocalTarget, SnapshotTarget, Target

DEMO_SNAPSHOT = "demo-snapshot.tar.gz"


def add_target_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("where to look")
    g.add_argument("--snapshot", metavar="BUNDLE", help="read a snapshot bundle (.tar.gz or directory) instead of this machine")
    g.add_argument("--demo", action="store_true", help="use the demo snapshot shipped with pfdiag")


def demo_path() -> str:
    path = str(resources.files("diagnose") / "data" / DEMO_SNAPSHOT)
    if not os.path.exists(path):
        raise UsageError("this pfdiag was installed without its demo snapshot")
    return path


def open_target(args: argparse.Namespace) -> tuple[Target, str | None]:
    """(target, notice for the user or None)."""
    if getattr(args, "demo", False) and getattr(args, "snapshot", None):
        raise UsageError("--demo and --snapshot cannot be used together")
    if getattr(args, "demo", False):
        snap = SnapshotTarget(demo_path())
        return snap, "pfdiag: using the demo snapshot shipped with pfdiag (a recorded test-lab Postfix), not this machine"
    if getattr(args, "snapshot", None):
        return SnapshotTarget(args.snapshot), None
    return LocalTarget(), None
