"""Reading Postfix logs through a Target: find the files, order rotated logs
oldest first, stream their lines as LogLine records, and count what could not
be read — without ever holding a whole log in memory.
"""

from __future__ import annotations

import io
import os
import re
import sys
from datetime import tzinfo
from dataclasses import dataclass, field
from typing import Iterable, Iterator, TextIO

from checks.errors import InputError
from checks.postfix.logline import SKIPPED, LineParser, LogLine, looks_like_postfix
from checks.targets.base import FileInfo, Target, decode_stream

STDIN = "-"
MAX_EXAMPLES = 5

# Log families in the order we prefer them inside one directory. Debian's
# mail.info/mail.warn/mail.err repeat lines of mail.log, so they are never mixed in.
_FAMILIES = ("mail.log", "maillog", "postfix.log", "mail", "syslog", "messages")
_ROTATION = re.compile(r"^(?P<base>.+?)(?:\.(?P<num>\d+)|-(?P<date>\d{8}(?:\d{2})?))?(?:\.(?:gz|bz2|xz))?$")
# Where Postfix logs when nothing is named (maillog_file comes first, from postconf).
DEFAULT_LOGS = ("/var/log/mail.log", "/var/log/maillog", "/var/log/postfix.log")


@dataclass
class ReadStats:
    """What the reader met: shown to the user, never fatal."""

    files: list[str] = field(default_factory=list)
    lines: int = 0
    postfix_lines: int = 0
    other_lines: int = 0  # lines of other programs (dovecot, opendkim...), skipped
    outside_window: int = 0
    no_timestamp: int = 0
    malformed: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def merge(self, other: "ReadStats") -> None:
        """Add the counts of another chunk of the same sources."""
        for name in ("lines", "postfix_lines", "other_lines", "outside_window", "no_timestamp"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.files.extend(f for f in other.files if f not in self.files)
        for kind, n in other.malformed.items():
            self.malformed[kind] = self.malformed.get(kind, 0) + n
            ex = self.examples.setdefault(kind, [])
            ex.extend(other.examples.get(kind, [])[: MAX_EXAMPLES - len(ex)])

    def malformed_line(self, kind: str, line: str) -> None:
        self.malformed[kind] = self.malformed.get(kind, 0) + 1
        ex = self.examples.setdefault(kind, [])
        if len(ex) < MAX_EXAMPLES:
            ex.append(line[:300])

    @property
    def malformed_total(self) -> int:
        return sum(self.malformed.values())


def rotation_key(path: str) -> tuple[int, int, int, str]:
    """Sort key putting rotated logs oldest first: mail.log.3.gz, mail.log.2.gz,
    mail.log.1, mail.log (numbers count back in time; dates count forward)."""
    name = os.path.basename(path)
    m = _ROTATION.match(name)
    base = m["base"] if m else name
    family = next((i for i, f in enumerate(_FAMILIES) if base == f or base.startswith(f)), len(_FAMILIES))
    if m and m["num"]:
        return (family, 0, -int(m["num"]), base)
    if m and m["date"]:
        return (family, 0, int(m["date"]) - 10**12, base)
    return (family, 1, 0, base)


def _family_of(path: str) -> str:
    m = _ROTATION.match(os.path.basename(path))
    return m["base"] if m else os.path.basename(path)


def _logs_in_dir(target: Target, directory: str) -> list[FileInfo]:
    files = target.list_dir(directory)
    for family in _FAMILIES:
        chosen = [f for f in files if _family_of(f.path) == family]
        if chosen:
            return chosen
    # maillog_file names can be anything: take files whose name says postfix
    chosen = [f for f in files if "postfix" in os.path.basename(f.path)]
    if chosen:
        return chosen
    raise InputError(f"{directory}: no mail logs found (looked for {', '.join(_FAMILIES)} and *postfix*)")


def resolve_sources(target: Target, paths: Iterable[str]) -> list[str]:
    """Paths as given (files, directories, '-') -> files to read, oldest first per family."""
    files: list[FileInfo] = []
    stdin = False
    for path in paths:
        if path == STDIN:
            stdin = True
        elif target.is_dir(path):
            files.extend(_logs_in_dir(target, path))
        else:
            files.append(target.file_info(path))  # raises a clear InputError when missing
    ordered = [f.path for f in sorted(files, key=lambda f: (rotation_key(f.path), f.mtime))]
    return ordered + ([STDIN] if stdin else [])


def default_sources(target: Target, config_dir: str | None = None) -> list[str]:
    """The Postfix's own log: maillog_file if set (of the instance in config_dir), else the usual syslog files."""
    candidates: list[str] = []
    try:
        argv = ["postconf", *(["-c", config_dir] if config_dir else []), "-h", "maillog_file"]
        result = target.run(argv, timeout=10)
        value = result.stdout.strip()
        if result.ok and value and value.startswith("/") and not value.startswith("/dev/"):
            candidates.append(value)
    except Exception:  # no postconf here: fall through to the usual places
        pass
    candidates.extend(DEFAULT_LOGS)
    for path in candidates:
        try:
            info = target.file_info(path)
        except InputError:
            continue
        directory, base = os.path.split(info.path)
        siblings = [f for f in target.list_dir(directory) if _family_of(f.path) == base]
        return [f.path for f in sorted(siblings, key=lambda f: (rotation_key(f.path), f.mtime))] or [info.path]
    raise InputError(
        "no Postfix log found here (looked at maillog_file and " + ", ".join(DEFAULT_LOGS) + "); name a log file"
    )


@dataclass(frozen=True)
class Chunk:
    """A piece of one source: a whole file, or a byte range of a plain local file
    (start and end fall on line starts)."""

    path: str
    start: int = 0
    end: int | None = None


class _Limited(io.RawIOBase):
    """At most `left` bytes of a binary file: one chunk's byte range."""

    def __init__(self, raw: io.BufferedReader, left: int) -> None:
        self._raw, self._left = raw, left

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        if self._left <= 0:
            return 0
        data = self._raw.read(min(len(buffer), self._left))
        n = len(data)
        buffer[:n] = data
        self._left -= n
        return n

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()


def _local_path(target: Target, path: str) -> str | None:
    """A path this process can open directly, when the target has one."""
    local = getattr(target, "local_path", None)
    return local(path) if callable(local) else None


def plan_chunks(target: Target, sources: Iterable[str], pieces: int, min_bytes: int) -> list[Chunk]:
    """Sources split for parallel reading, in time order. Only plain local files
    of at least 2 x min_bytes are split (a compressed stream cannot be entered in
    the middle); each piece starts at a line start."""
    chunks: list[Chunk] = []
    for path in sources:
        local = _local_path(target, path) if path != STDIN else None
        if local is None or pieces < 2:
            chunks.append(Chunk(path))
            continue
        size = os.path.getsize(local)
        with open(local, "rb") as fh:
            if size < 2 * min_bytes or fh.read(6).startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ")):
                chunks.append(Chunk(path))
                continue
            n = max(2, min(pieces, size // min_bytes))
            bounds = [0]
            for k in range(1, n):
                fh.seek(size * k // n)
                fh.readline()
                pos = fh.tell()
                if bounds[-1] < pos < size:
                    bounds.append(pos)
            bounds.append(size)
        chunks.extend(Chunk(path, a, b) for a, b in zip(bounds, bounds[1:]))
    return chunks


def _open_chunk(target: Target, chunk: Chunk, since: float | None = None) -> TextIO:
    if chunk.path == STDIN:
        return decode_stream(sys.stdin.buffer, "stdin") if hasattr(sys.stdin, "buffer") else io.StringIO(sys.stdin.read())
    filtered = getattr(target, "open_filtered", None)
    if chunk.end is None and callable(filtered):
        # a remote host greps its own log: only Postfix lines cross the network, and a
        # rotated file last written before --since is not read at all
        return filtered(chunk.path, since_epoch=since, pattern="postfix")
    if chunk.end is None:
        return target.open_text(chunk.path)
    local = _local_path(target, chunk.path)
    assert local is not None, "byte ranges are planned for local files only"
    try:
        raw = open(local, "rb")  # noqa: SIM115 - closed through the returned stream
    except OSError as exc:
        raise InputError(f"{chunk.path}: cannot read ({exc.strerror or exc})") from exc
    raw.seek(chunk.start)
    return decode_stream(io.BufferedReader(_Limited(raw, chunk.end - chunk.start), 1 << 16), chunk.path)  # type: ignore[arg-type]


def read_lines(
    target: Target,
    sources: Iterable[str | Chunk],
    stats: ReadStats,
    since: float | None = None,
    until: float | None = None,
    skip_daemons: frozenset[str] = frozenset(),
    births: set[str] | None = None,
    tz: tzinfo | None = None,
) -> Iterator[LogLine]:
    """Stream Postfix lines from the sources (paths or chunks) in order, within [since, until).

    Lines from other programs are counted and skipped; lines that mention
    Postfix but cannot be read are counted as malformed, with examples.
    Lines of the daemons in `skip_daemons` are counted but not parsed further:
    most of a busy log is smtpd/cleanup/postscreen noise that an analysis of
    deliveries never reads. `births` collects the queue ids whose creation
    (cleanup's first line) was seen, for parallel chunk analysis. `tz` is the
    zone of timestamps without an offset (default: this machine's)."""
    for source in sources:
        chunk = source if isinstance(source, Chunk) else Chunk(source)
        path = chunk.path
        if chunk.start == 0:
            stats.files.append(path)
        reference = None
        if path != STDIN:
            try:
                reference = target.file_info(path).mtime
            except InputError:
                reference = None
        parser = LineParser(reference_time=reference, tz=tz, births=births)
        try:
            with _open_chunk(target, chunk, since) as stream:
                yield from _stream(path, stream, parser, stats, since, until, skip_daemons)
        except InputError as exc:  # a damaged rotated file: keep what was read, say so
            stats.malformed_line("damaged file", str(exc))


def _stream(
    path: str,
    stream: TextIO,
    parser: LineParser,
    stats: ReadStats,
    since: float | None,
    until: float | None,
    skip: frozenset[str],
) -> Iterator[LogLine]:
    first = True
    skipped = 0
    for line in stream:
        if first:
            first = False
            if "\x00" in line:
                raise InputError(f"{path}: binary data, not a text log")
        rec = parser.parse(line, skip)
        if rec is SKIPPED:
            skipped += 1
            continue
        stats.lines += 1
        if rec is None:
            if looks_like_postfix(line):
                stats.malformed_line("unrecognised line", line.rstrip("\n"))
            else:
                stats.other_lines += 1
            continue
        stats.postfix_lines += 1
        if rec.bad_stamp:
            stats.malformed_line("unreadable timestamp", rec.raw)
        ts = rec.ts
        if ts is None:
            stats.no_timestamp += 1
        elif (since is not None and ts < since) or (until is not None and ts >= until):
            stats.outside_window += 1
            continue
        yield rec
    stats.lines += skipped
    stats.postfix_lines += skipped
