"""The options that choose WHERE a command looks, shared by every subcommand."""

from __future__ import annotations

import argparse
import os
import sys

from typing import TYPE_CHECKING, Callable

from checks.errors import UsageError
from diagnose.textsafe import visible

if TYPE_CHECKING:  # `pfdiag CMD --help` builds the options without loading the targets
    from checks.targets.base import Target

DEMO_SNAPSHOT = "demo-snapshot.tar.gz"


def add_target_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("where to look")
    g.add_argument("--host", metavar="[USER@]HOST[:PORT]",
                   help="a mail host over SSH (an ssh_config alias works: HostName, User, Port, IdentityFile, ProxyJump)")
    g.add_argument("--snapshot", metavar="BUNDLE", help="read a snapshot bundle (.tar.gz or directory) instead of this machine")
    g.add_argument("--demo", action="store_true", help="use the demo snapshot shipped with pfdiag")
    g.add_argument("--strict", action="store_true",
                   help="refuse a snapshot whose entries do not all match the sha256 values of its manifest "
                        "(default: read it and warn)")  # fmt: skip
    t = p.add_argument_group("pasted input (a support ticket: no mail host to ask)")
    t.add_argument("--mailq", metavar="FILE|-", help="a pasted mailq / postqueue -p listing (- reads stdin); logs are "
                   "the files the command names")  # fmt: skip
    t.add_argument("--now", metavar="TIME", help="when the listing was taken (ISO time, e.g. 2026-12-06T03:12; "
                   "default: the newest log line's time, else this machine's clock)")  # fmt: skip
    s = p.add_argument_group("SSH (with --host)")
    s.add_argument("--ssh-config", metavar="FILE", help="ssh_config to read (default ~/.ssh/config)")
    s.add_argument("--identity", metavar="FILE", help="private key file to log in with (like ssh -i), tried first")
    s.add_argument("--known-hosts", metavar="FILE", help="known_hosts to verify against (default ~/.ssh/known_hosts)")
    s.add_argument("--accept-new-host-key", action="store_true",
                   help="trust an unknown host key and save it (like OpenSSH's accept-new); a CHANGED key is always refused")
    s.add_argument("--ssh-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="the longest wait for the SSH server: connecting, and any answer or output after (default 30)")  # fmt: skip


def demo_path() -> str:
    from importlib import resources  # ~15 ms: only when the demo is asked for

    path = str(resources.files("diagnose") / "data" / DEMO_SNAPSHOT)
    if not os.path.exists(path):
        raise UsageError("this pfdiag was installed without its demo snapshot")
    return path


def _passphrase_prompt() -> Callable[[str], str | None] | None:
    """Ask for a key's passphrase only when someone is there to answer."""
    if not sys.stdin.isatty():
        return None
    import getpass

    def ask(text: str) -> str | None:
        try:
            return getpass.getpass(f"{text}: ")
        except (EOFError, KeyboardInterrupt):
            return None

    return ask


def open_target(args: argparse.Namespace) -> tuple[Target, str | None]:
    """(target, notice for the user or None)."""
    chosen = [o for o in ("demo", "snapshot", "host", "mailq") if getattr(args, o, None)]
    if len(chosen) > 1:
        raise UsageError(f"--{chosen[0]} and --{chosen[1]} cannot be used together")
    if getattr(args, "identity", None) and not getattr(args, "host", None):
        raise UsageError("--identity needs --host (it is the key to log into the mail host with)")
    if getattr(args, "demo", False) or getattr(args, "snapshot", None):
        from checks.targets.snapshot import SnapshotTarget  # tarfile and friends: only for a bundle

        demo = bool(getattr(args, "demo", False))
        snap = SnapshotTarget(demo_path() if demo else args.snapshot, strict=bool(getattr(args, "strict", False)))
        for warning in snap.warnings:  # stderr, whatever the format; a report lists them as well
            print(visible(f"pfdiag: warning: {snap.where}: {warning}"), file=sys.stderr)
        if demo:
            return snap, "pfdiag: using the demo snapshot shipped with pfdiag (a recorded test-lab Postfix), not this machine"
        return snap, None
    if getattr(args, "now", None) and not getattr(args, "mailq", None):
        raise UsageError("--now goes with --mailq (a snapshot keeps its own time)")
    if getattr(args, "mailq", None):
        from checks.targets.pasted import PastedTarget
        from diagnose.timespec import parse_when

        now = parse_when(args.now) if getattr(args, "now", None) else None
        logs = list(getattr(args, "log_paths", None) or getattr(args, "paths", None) or [])
        pasted = PastedTarget(args.mailq, now=now, logs=logs)
        for warning in pasted.warnings:
            print(visible(f"pfdiag: warning: {warning}"), file=sys.stderr)
        return pasted, visible(f"pfdiag: reading pasted input: {pasted.describe()}")
    if getattr(args, "host", None):
        given = getattr(args, "ssh_timeout", None)
        timeout = 30.0 if given is None else float(given)  # 0 is an error, not "the default"
        if timeout <= 0:
            raise UsageError("--ssh-timeout must be positive")
        from checks.targets.ssh import SSHTarget

        budget = getattr(args, "budget", None)  # a command with --budget: the connection comes out of it too
        connect = min(timeout, 30.0, budget) if isinstance(budget, (int, float)) and budget > 0 else min(timeout, 30.0)
        target = SSHTarget.open(args.host, accept_new_host_key=bool(getattr(args, "accept_new_host_key", False)),
                                known_hosts=getattr(args, "known_hosts", None),
                                ssh_config=getattr(args, "ssh_config", None), connect_timeout=connect,
                                command_timeout=max(timeout, 30.0), io_timeout=timeout,
                                password_prompt=_passphrase_prompt(),
                                identity=getattr(args, "identity", None))  # fmt: skip
        return target, None
    from checks.targets.local import LocalTarget

    return LocalTarget(), None

