"""PastedTarget: what a support ticket holds instead of a mail host - a pasted `mailq` /
`postqueue -p` listing and log excerpts, as files on this machine (or '-': standard input).

It answers `postqueue -p` with the pasted listing and nothing else (no postconf: Postfix's
defaults apply, and the reports say so); log files are read from this machine's disk. "Now" -
the moment the listing describes, from which ages, the yearless arrival dates and forecasts are
reckoned - is the --now given, else the newest log line's time, else this machine's clock, and
the target says which (``now_source``): a listing pasted days later must not age by those days.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Sequence, TextIO

from checks.errors import CheckSkipped, CommandNotFound, InputError
from checks.model import CommandResult
from checks.targets.base import DEFAULT_TIMEOUT, FileInfo, Target
from checks.targets.local import LocalTarget

MAX_LISTING = 256 << 20  # bytes of a pasted listing: 100,000 queued messages are ~30 MB
_TAIL = 256 << 10  # bytes read from the end of each log to find its newest line


NO_CONFIG = "no configuration given (pasted input): timings compared with Postfix's defaults"
PASTED_LOG = "pasted log lines"  # how the report names log lines pasted into the wizard
PASTED_LISTING = "mailq listing"


class NoConfiguration(CheckSkipped, CommandNotFound):
    """postconf on pasted input: there is no configuration by design. A skipped step with its reason
    (checks/config.py passes it on as it is), not an error; code that expects a missing postconf
    (CommandNotFound) still sees one."""

    timings = "Postfix defaults (no configuration given: pasted input)"  # the report's "read: ... timings:"

    def __init__(self) -> None:
        super().__init__(NO_CONFIG)


def paste_file_label(path: str) -> str | None:
    """The name the report gives a file the wizard wrote pasted text to (diagnose/session.py
    take_paste: a private temporary file ``pfdiag-<answer>-XXXX.txt``), or None for any other file:
    a report names what the user gave, never a temporary path."""
    import re
    import tempfile

    m = re.fullmatch(r"pfdiag-(pasted-log|mailq)-[\w-]+\.txt", os.path.basename(path))
    if m is None or os.path.dirname(os.path.abspath(path)) != os.path.abspath(tempfile.gettempdir()):
        return None
    return PASTED_LOG if m.group(1) == "pasted-log" else PASTED_LISTING


def log_label(path: str) -> str:
    """A log file as the report's "read:" line names it: pasted lines as such, else the path as given."""
    return paste_file_label(path) or path


class PastedTarget(Target):
    kind = "pasted"
    live = False  # nothing to probe, resolve or change: a copy of what someone saw

    def __init__(self, mailq: str | None, *, now: float | None = None, logs: Sequence[str] = ()) -> None:
        self._files = LocalTarget()
        label = paste_file_label(mailq) if mailq and mailq != "-" else None
        self.where = "pasted:" + ("stdin" if mailq == "-" else label or os.path.basename(mailq or "") or "logs")
        self._listing = None if mailq is None else _read_listing(mailq)
        self.warnings: list[str] = []
        if now is not None:
            self._now: float | None = now
            self.now_source = "--now"
        else:
            self._now = _newest_line(self._files, logs)
            self.now_source = "the newest log line" if self._now is not None else "this machine's clock"
            if self._now is None and self._listing is not None:
                self.warnings.append("no --now and no log line with a time: ages are counted from this machine's "
                                     "clock; give --now (the time the listing was taken) if it was pasted later")  # fmt: skip

    @property
    def recorded_at(self) -> float | None:
        return self._now

    def describe(self) -> str:
        return f"{self.where} (now = {self.now_source})"

    def run(self, argv: Sequence[str], timeout: float = DEFAULT_TIMEOUT) -> CommandResult:
        words = [a for i, a in enumerate(argv) if not (a == "-c" or (i and argv[i - 1] == "-c"))]
        if self._listing is not None and os.path.basename(words[0]) in ("postqueue", "mailq") and (
            words[0].endswith("mailq") or words[1:] == ["-p"]
        ):
            return CommandResult(tuple(argv), 0, self._listing, "", 0.0)
        if words and os.path.basename(words[0]) == "postconf":
            raise NoConfiguration()  # by design: said as a note, not as a failure
        raise CommandNotFound(f"{' '.join(argv)}: not in the pasted input ({self.where})")

    def default_logs(self) -> tuple[str, ...]:
        return ()  # only the logs named on the command line

    def open_text(self, path: str) -> TextIO:
        return self._files.open_text(path)

    def file_info(self, path: str) -> FileInfo:
        return self._files.file_info(path)

    def list_dir(self, path: str) -> list[FileInfo]:
        return self._files.list_dir(path)

    def is_dir(self, path: str) -> bool:
        return self._files.is_dir(path)

    def local_path(self, path: str) -> str | None:
        return self._files.local_path(path)


def _read_listing(path: str) -> str:
    try:
        if path == "-":
            if sys.stdin is None or sys.stdin.closed or sys.stdin.isatty():
                raise InputError("--mailq -: paste the listing into standard input (it is a terminal or closed)")
            data = sys.stdin.buffer.read(MAX_LISTING + 1)
        else:
            with open(path, "rb") as fh:
                data = fh.read(MAX_LISTING + 1)
    except OSError as exc:
        raise InputError(f"{path}: cannot read the listing ({exc.strerror})") from None
    if len(data) > MAX_LISTING:
        raise InputError(f"{path}: more than {MAX_LISTING >> 20} MiB: not a pasted listing")
    text = data.decode("utf-8", "replace")
    if "Queue ID" not in text and "Mail queue is empty" not in text and "Requests." not in text:
        raise InputError(f"{path}: not a mailq / postqueue -p listing (no '-Queue ID-' header)")
    return text


def _newest_line(files: LocalTarget, logs: Sequence[str]) -> float | None:
    """The newest time in the last lines of the given plain log files (stdin, compressed and
    unreadable ones are skipped: a ticket's newest excerpt is plain text)."""
    from checks.postfix.logline import LineParser

    newest = None
    for path in logs:
        if path == "-" or path.endswith((".gz", ".bz2", ".xz")) or not os.path.isfile(path):
            continue
        try:
            with open(path, "rb") as fh:
                start = max(0, os.path.getsize(path) - _TAIL)
                fh.seek(start)
                tail = fh.read(_TAIL).decode("utf-8", "replace").splitlines()[1 if start else 0:]
            parser = LineParser(reference_time=os.path.getmtime(path))
        except OSError:
            continue
        for line in tail:
            rec = parser.parse(line)
            if rec is not None and rec.ts is not None and (newest is None or rec.ts > newest):
                newest = rec.ts
    return newest if newest is None or newest <= time.time() + 86400 else None
