"""Record a snapshot bundle of a live Postfix (this machine or a mail host over SSH), for
diagnosing elsewhere: `pfdiag snapshot`, then `pfdiag report --snapshot FILE`.

What is recorded is what the diagnosis itself asks: the collectors run once through a
RecordingTarget that keeps every command's answer (argv stored without ``-c DIR``, so the
offline replay asks the same questions as an ordinary run), plus the log window (Postfix
lines only, since --since; over SSH grepped on the host), postconf -n/-d/-P/-M, postqueue -p,
master.cf, /etc/resolv.conf and the chroot's copy, and the Postfix version. The manifest
holds a sha256 of every entry. With redaction every byte of every entry goes through one
Redactor (diagnose/redact.py) whose key is never written.
"""

from __future__ import annotations

import os
import posixpath
import time
from typing import Any, BinaryIO, Callable, Sequence, TextIO

from checks.errors import InputError, PfdiagError
from checks.model import CommandResult
from checks.targets import Target
from checks.targets.base import Connection, FileInfo
from checks.targets.bundle import SnapshotWriter

EXTRA_COMMANDS = (
    ("postconf", "-n"), ("postconf", "-d"), ("postconf", "-P"), ("postconf", "-M"), ("postqueue", "-p"),
    ("postconf", "-h", "mail_version"), ("postfix", "status"),
)  # fmt: skip
RESOLV = "/etc/resolv.conf"


def _strip_c(argv: Sequence[str]) -> tuple[str, ...]:
    out, skip = [], False
    for i, a in enumerate(argv):
        if skip:
            skip = False
            continue
        if a == "-c" and i > 0 and i + 1 < len(argv):
            skip = True
            continue
        out.append(a)
    return tuple(out)


class RecordingTarget(Target):
    """Passes everything to the real target and keeps each command's answer. Every ability is
    forwarded by name (a default of the base would answer for the inner target otherwise);
    stream() is the base's, built from run(), so streamed commands are recorded too."""

    def __init__(self, inner: Target) -> None:
        self.inner = inner
        self.where = inner.where
        self.kind = inner.kind  # type: ignore[misc]
        self.live = inner.live  # type: ignore[misc]
        self.local_network = inner.local_network  # type: ignore[misc]
        self.can_bind = inner.can_bind  # type: ignore[misc]
        self.can_change = inner.can_change  # type: ignore[misc]
        self.warnings = inner.warnings
        self.results: dict[tuple[str, ...], CommandResult] = {}

    def run(self, argv: Sequence[str], timeout: float = 30.0) -> CommandResult:
        res = self.inner.run(argv, timeout)
        key = _strip_c(argv)
        self.results[key] = CommandResult(key, res.returncode, res.stdout, res.stderr, res.duration)
        return res

    def open_text(self, path: str) -> TextIO:
        return self.inner.open_text(path)

    def file_info(self, path: str) -> FileInfo:
        return self.inner.file_info(path)

    def list_dir(self, path: str) -> list[FileInfo]:
        return self.inner.list_dir(path)

    def is_dir(self, path: str) -> bool:
        return self.inner.is_dir(path)

    @property
    def recorded_at(self) -> float | None:
        return self.inner.recorded_at

    def describe(self) -> str:
        return self.inner.describe()

    def connect(self, host: str, port: int, timeout: float, *, source: str | None = None) -> Connection:
        return self.inner.connect(host, port, timeout, source=source)

    def run_into(self, argv: Sequence[str], sink: BinaryIO, timeout: float = 30.0) -> CommandResult:
        return self.inner.run_into(argv, sink, timeout)

    def open_filtered(self, path: str, since_epoch: float | None = None, pattern: str = "postfix") -> TextIO:
        return self.inner.open_filtered(path, since_epoch, pattern)

    def resolver(self, source: str = "system", queue_directory: str = "/var/spool/postfix",
                 timeout: float = 3.0) -> tuple[Any, str]:  # fmt: skip
        return self.inner.resolver(source, queue_directory, timeout)

    def local_path(self, path: str) -> str | None:
        return self.inner.local_path(path)

    def close(self) -> None:
        self.inner.close()


def _read_all(stream: TextIO) -> str:
    with stream:
        return stream.read()


def _log_window(target: Target, path: str, since: float | None) -> str:
    """Postfix lines of one log file, from --since on (lines whose time cannot be read are kept)."""
    from checks.postfix.logline import LineParser

    stream = target.open_filtered(path, since_epoch=since, pattern="postfix")
    try:
        reference = target.file_info(path).mtime
    except InputError:
        reference = None
    parser = LineParser(reference_time=reference)
    kept = []
    with stream:
        for line in stream:
            if "postfix" not in line:
                continue
            if since is not None:
                parsed = parser.parse(line.rstrip("\n"))
                ts = getattr(parsed, "ts", None) if parsed is not None and not isinstance(parsed, str) else None
                if ts is not None and ts < since:
                    continue
            kept.append(line if line.endswith("\n") else line + "\n")
    return "".join(kept)


def collect(target: Target, *, out_path: str, config_dir: str | None = None, since: float | None = None,
            redact: bool = False, log_paths: list[str] | None = None,
            progress: Callable[[str], None] = lambda s: None) -> dict[str, Any]:  # fmt: skip
    from checks.logs import default_sources, resolve_sources
    from diagnose import engine

    rec = RecordingTarget(target)
    progress("reading logs, queue and configuration")
    facts = engine.collect(rec, budget=300, config_dir=config_dir, since=since, log_paths=log_paths)
    problems = [f"{s.title}: {s.detail}" for s in facts.steps if s.state != "ok"]
    for argv in EXTRA_COMMANDS:
        full = [argv[0], *(["-c", config_dir] if config_dir else []), *argv[1:]]
        try:
            rec.run(full, timeout=60)
        except PfdiagError as exc:
            problems.append(f"{' '.join(argv)}: {exc}")
    files: list[tuple[str, str, float]] = []
    progress("copying the log window")
    try:
        sources = resolve_sources(rec, log_paths) if log_paths else default_sources(rec, config_dir)
    except InputError as exc:
        sources = []
        if not any(str(exc) in p for p in problems):
            problems.append(str(exc))
    for path in sources:
        try:
            info = target.file_info(path)
            if since is not None and info.mtime < since:
                continue  # last written before the window: nothing in it is new enough
            files.append((path, _log_window(target, path, since), info.mtime))
        except PfdiagError as exc:
            problems.append(f"{path}: {exc}")
    cfg_dir = config_dir or "/etc/postfix"
    queue_dir = getattr(facts.config_report, "queue_directory", None) or "/var/spool/postfix"
    for path, stored in ((posixpath.join(cfg_dir, "master.cf"), "/etc/postfix/master.cf"),
                         (posixpath.join(cfg_dir, "main.cf"), "/etc/postfix/main.cf"),
                         (RESOLV, RESOLV), (posixpath.join(queue_dir, "etc/resolv.conf"), None)):  # fmt: skip
        try:
            files.append((stored or path, _read_all(target.open_text(path)), target.file_info(path).mtime))
        except PfdiagError as exc:
            problems.append(f"{path}: {exc}")
    version = (rec.results.get(("postconf", "-h", "mail_version")) or CommandResult((), 1, "", "")).stdout.strip()
    from diagnose.redact import Redactor, scrub_secrets

    redactor = None
    if redact:

        ident = facts.identity or {}
        hosts = [ident.get("myhostname") or "", target.where.split(":", 1)[-1]]
        domains = [ident.get("mydomain") or ""] + [d for d in (ident.get("mydestination") or "").replace(",", " ").split()
                                                   if "$" not in d and d != "localhost"]  # fmt: skip
        redactor = Redactor(own_hostnames=[h for h in hosts if h], own_domains=[d for d in domains if d])
        for res in rec.results.values():  # learn every client address first: one token everywhere
            redactor.learn(res.stdout)
        for _, text, _ in files:
            redactor.learn(text)
    # unredacted or not, a bundle never carries a password written into the configuration itself
    scrub = redactor.text if redactor else scrub_secrets
    if log_paths:  # named logs: make them the ones an offline run finds by itself
        first = files[0][0] if files else None
        if first:
            rec.results[("postconf", "-h", "maillog_file")] = CommandResult(("postconf", "-h", "maillog_file"), 0, first + "\n", "")
    w = SnapshotWriter(host=scrub(target.where), postfix_version=version,
                       extra={"origin": "pfdiag snapshot", "since": since, "redacted": bool(redact),
                              "problems": [scrub(p) for p in problems]})  # fmt: skip
    for res in rec.results.values():
        w.add_command(CommandResult(res.argv, res.returncode, scrub(res.stdout), scrub(res.stderr), res.duration))
    for path, text, mtime in files:
        w.add_file(path, scrub(text).encode("utf-8"), mtime)
    manifest = w.manifest()
    progress(f"writing {out_path}")
    w.write(out_path)
    return {"path": out_path, "commands": len(manifest["commands"]), "files": len(manifest["files"]),
            "bytes": os.path.getsize(out_path), "redacted": bool(redact), "problems": manifest["problems"],
            "postfix_version": version, "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip
