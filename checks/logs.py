"""Reading Postfix logs through a Target: find the files, order rotated logs
oldest first, stream their lines as LogLine records, and count what could not
be read — without ever holding a whole log in memory.
"""

from __future__ import annotations

import codecs
import errno
import io
import os
import re
import stat
import sys
import time
from datetime import tzinfo
from dataclasses import dataclass, field
from typing import Iterable, Iterator, TextIO

from checks import places
from checks.errors import InputError
from checks.postfix.logline import SKIPPED, LineParser, LogLine, looks_like_postfix
from checks.targets.base import FileInfo, Target, decode_stream
from checks.targets.local import open_file

STDIN = "-"
MAX_EXAMPLES = 5

# The longest line kept. Postfix's own records are far shorter (syslog lines rarely
# pass 8 KiB); anything longer is counted and skipped without being buffered whole, so
# memory never depends on a file's content (a run of NUL bytes with no line end, say).
MAX_LINE = 64 * 1024
READ_SIZE = 64 * 1024  # bytes (or characters) per read: <= MAX_LINE, so a line inside one read is never too long
LONG_LINE = f"line longer than {MAX_LINE // 1024} KiB"
NUL_BYTES = "NUL bytes"
IMPLAUSIBLE = "implausible timestamp"
# A Postfix log line dated before this, or more than a day in the future, is not believed.
EARLIEST = 631152000.0  # 1990-01-01T00:00:00Z

# Log families in the order we prefer them inside one directory. Debian's
# mail.info/mail.warn/mail.err repeat lines of mail.log, so they are never mixed in.
_FAMILIES = ("mail.log", "maillog", "postfix.log", "mail", "syslog", "messages")
_ROTATION = re.compile(r"^(?P<base>.+?)(?:\.(?P<num>\d+)|-(?P<date>\d{8}(?:\d{2})?))?(?:\.(?:gz|bz2|xz))?$")
# Where Postfix logs when nothing is named (maillog_file comes first, from postconf).
DEFAULT_LOGS = places.MAIL_LOGS  # a target's own list: Target.default_logs()


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
    warnings: list[str] = field(default_factory=list)  # a damaged file: shown above the report

    def merge(self, other: "ReadStats") -> None:
        """Add the counts of another chunk of the same sources."""
        for name in ("lines", "postfix_lines", "other_lines", "outside_window", "no_timestamp"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.files.extend(f for f in other.files if f not in self.files)
        self.warnings.extend(other.warnings)
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
            check_stdin()
            stdin = True
        elif target.is_dir(path):
            files.extend(_logs_in_dir(target, path))
        else:
            files.append(target.file_info(path))  # raises a clear InputError when missing
    for info in files:  # before any work: not after minutes spent on the other files
        _check_readable(target, info.path)
    ordered = [f.path for f in sorted(files, key=lambda f: (rotation_key(f.path), f.mtime))]
    return ordered + ([STDIN] if stdin else [])


def check_stdin() -> None:
    """`-` reads stdin: refuse a closed one, a terminal (nobody types a log) and a
    device such as /dev/zero (an endless stream of nothing), with one clear line."""
    hint = "pipe a log into it, e.g. journalctl -u postfix -o json | pfdiag logs -"
    stdin = sys.stdin
    if stdin is None:  # started with stdin closed (<&-)
        raise InputError(f"stdin is closed: {hint}")
    try:
        fd = stdin.fileno()
    except (io.UnsupportedOperation, AttributeError):
        return  # an in-memory stream put there by a test or an embedding program
    except ValueError:
        raise InputError(f"stdin is closed: {hint}") from None
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        raise InputError(f"stdin is closed: {hint}") from None
    if os.isatty(fd):
        raise InputError(f"stdin is a terminal: {hint}")
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        raise InputError(f"stdin is a device, not a log: {hint}")


def _check_readable(target: Target, path: str) -> None:
    """A local file that cannot be opened, or is a device or a socket (/dev/zero never
    ends), is one clear error before any work (a FIFO is opened without blocking)."""
    local = target.local_path(path)
    if local is not None:
        open_file(local, path).close()


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
    usual = target.default_logs()
    candidates.extend(usual)
    for path in candidates:
        try:
            info = target.file_info(path)
        except InputError:
            continue
        directory, base = os.path.split(info.path)
        siblings = [f for f in target.list_dir(directory) if _family_of(f.path) == base]
        return [f.path for f in sorted(siblings, key=lambda f: (rotation_key(f.path), f.mtime))] or [info.path]
    raise InputError(
        "no Postfix log found here (looked at maillog_file and " + ", ".join(usual) + "); name a log file"
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

    def __init__(self, raw: io.RawIOBase | io.BufferedIOBase, left: int) -> None:
        self._raw, self._left = raw, left

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self._left <= 0:
            return 0
        data = self._raw.read(min(len(buffer), self._left)) or b""
        n = len(data)
        buffer[:n] = data
        self._left -= n
        return n

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()


def plan_chunks(target: Target, sources: Iterable[str], pieces: int, min_bytes: int) -> list[Chunk]:
    """Sources split for parallel reading, in time order. Only plain local files
    of at least 2 x min_bytes are split (a compressed stream cannot be entered in
    the middle); each piece starts at a line start."""
    chunks: list[Chunk] = []
    for path in sources:
        local = target.local_path(path) if path != STDIN else None
        if local is None or pieces < 2:
            chunks.append(Chunk(path))
            continue
        try:
            st = os.stat(local)
        except OSError as exc:
            raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc
        size = st.st_size
        if not stat.S_ISREG(st.st_mode) or size < 2 * min_bytes:
            chunks.append(Chunk(path))  # a FIFO is never opened here: it may have no writer
            continue
        try:
            fh = open(local, "rb", buffering=0)  # noqa: SIM115 - closed below; unbuffered: seeks are lseeks
        except OSError as exc:
            raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc
        with fh:
            if fh.read(6).startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ")):
                chunks.append(Chunk(path))
                continue
            n = max(2, min(pieces, size // min_bytes))
            bounds = [0]
            for k in range(1, n):
                pos = _next_line_start(fh, size * k // n, size * (k + 1) // n)
                if pos is not None and bounds[-1] < pos < size:
                    bounds.append(pos)
            bounds.append(size)
        chunks.extend(Chunk(path, a, b) for a, b in zip(bounds, bounds[1:]))
    return chunks


def _next_line_start(fh: io.FileIO, start: int, limit: int) -> int | None:
    """The offset after the first line end at or after `start`, looked for in bounded
    reads up to `limit` (the next cut): None when a line (or a NUL hole) runs past it."""
    pos = _data_from(fh.fileno(), start)  # a sparse hole holds no line end: step over it
    fh.seek(pos)
    while pos < limit:
        block = fh.read(min(1 << 16, limit - pos))
        if not block:
            return None
        i = block.find(b"\n")
        if i >= 0:
            return pos + i + 1
        pos += len(block)
    return None


def _open_source(target: Target, source: str | Chunk, stats: ReadStats, since: float | None, tz: tzinfo | None,
                 births: set[str] | None) -> tuple[Chunk, LineParser, TextIO, int]:  # fmt: skip
    """One source opened for reading: its chunk (counted in stats.files at its start), a parser
    dated by the file's mtime (a yearless stamp is never after it), the stream and its hole flag."""
    chunk = source if isinstance(source, Chunk) else Chunk(source)
    if chunk.start == 0:
        stats.files.append(chunk.path)
    reference = None
    if chunk.path != STDIN:
        try:
            reference = target.file_info(chunk.path).mtime
        except InputError:
            reference = None
    parser = LineParser(reference_time=reference, tz=tz, births=births)
    stream, hole = _open_chunk(target, chunk, since)
    return chunk, parser, stream, hole


def _open_chunk(target: Target, chunk: Chunk, since: float | None = None) -> tuple[TextIO, int]:
    """The chunk's text, and the NUL bytes of a hole skipped at its start."""
    if chunk.path == STDIN:
        check_stdin()
        if hasattr(sys.stdin, "buffer"):
            return decode_stream(sys.stdin.buffer, "stdin"), 0
        return io.StringIO(sys.stdin.read()), 0
    local = target.local_path(chunk.path)
    if local is not None:  # a file of this machine: read in bounded steps, a leading NUL hole skipped
        return _open_local(chunk.path, local, chunk.start, chunk.end)
    if chunk.end is None:
        # a remote host greps its own log: only Postfix lines cross the network, and a rotated
        # file last written before --since is not read at all (the base default reads it whole)
        return target.open_filtered(chunk.path, since_epoch=since, pattern="postfix"), 0
    return target.open_text(chunk.path), 0


def _open_local(label: str, local: str, start: int, end: int | None) -> tuple[TextIO, int]:
    """A local file from byte `start` (to `end`), decompressed by magic bytes.

    Opened without blocking, so that a FIFO nobody writes to reads as empty instead
    of hanging; devices and sockets are refused. A sparse hole at the start (what
    logrotate's copytruncate leaves in front of the lines written after it) is
    stepped over with SEEK_DATA instead of being read as gigabytes of NUL bytes:
    its size is returned, for the reader to count."""
    raw = open_file(local, label)
    hole = 0
    try:
        if stat.S_ISREG(os.fstat(raw.fileno()).st_mode):
            hole = _data_from(raw.fileno(), start) - start
            if end is not None:
                hole = min(hole, end - start)
            raw.seek(start + hole)
    except BaseException:
        raw.close()
        raise
    binary: io.RawIOBase = raw if end is None else _Limited(raw, end - start - hole)
    return decode_stream(io.BufferedReader(binary, 1 << 16), label), hole


def _data_from(fd: int, pos: int) -> int:
    """Where data starts at or after `pos`: past a sparse hole, or `pos` itself when the
    file system cannot tell (the end of the file when only a hole follows)."""
    seek_data = getattr(os, "SEEK_DATA", None)
    if seek_data is None:
        return pos
    try:
        return os.lseek(fd, pos, seek_data)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # nothing but a hole up to the end
            return max(pos, os.fstat(fd).st_size)
        return pos


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
    zone of timestamps without an offset (default: this machine's).

    A source that cannot be opened raises InputError; one that breaks while it is
    read (a damaged .gz) keeps the lines read so far and adds a warning to stats."""
    latest = latest_time()
    for source in sources:
        chunk, parser, stream, hole = _open_source(target, source, stats, since, tz, births)
        with stream:
            yield from _stream(chunk, stream, hole, parser, stats, since, until, skip_daemons, latest)


def _stream(
    chunk: Chunk,
    stream: TextIO,
    hole: int,
    parser: LineParser,
    stats: ReadStats,
    since: float | None,
    until: float | None,
    skip: frozenset[str],
    latest: float,
) -> Iterator[LogLine]:
    lines = BoundedLines(stream, stats, hole)
    skipped = 0
    try:
        for line in lines:
            rec = parser.parse(line, skip)
            if rec is SKIPPED:
                skipped += 1
                continue
            stats.lines += 1
            if rec is None:
                _not_postfix(line, stats)
                continue
            stats.postfix_lines += 1
            if admit(rec, stats, since, until, latest):
                yield rec
    except (InputError, OSError) as exc:  # a damaged rotated file: keep what was read, say so
        _damaged(chunk, lines.count, exc, stats)
    finally:
        stats.lines += skipped
        stats.postfix_lines += skipped


def _not_postfix(line: str, stats: ReadStats) -> None:
    if looks_like_postfix(line):
        stats.malformed_line("unrecognised line", line)
    else:
        stats.other_lines += 1


def admit(rec: LogLine, stats: ReadStats, since: float | None, until: float | None, latest: float) -> bool:
    """Whether a parsed Postfix line is to be analysed: its timestamp checked (a bad or
    implausible one is counted as malformed and dropped from the record), the window applied."""
    ts = rec.ts
    if rec.bad_stamp:
        stats.malformed_line("unreadable timestamp", rec.raw)
    elif ts is not None and not EARLIEST <= ts <= latest:
        stats.malformed_line(IMPLAUSIBLE, rec.raw)
        rec.ts = ts = None  # analysed without a time: a clock gone wrong must not stretch the window
    if ts is None:
        stats.no_timestamp += 1
    elif (since is not None and ts < since) or (until is not None and ts >= until):
        stats.outside_window += 1
        return False
    return True


def take(
    parser: LineParser,
    line: str,
    skip: frozenset[str],
    stats: ReadStats,
    since: float | None,
    until: float | None,
    latest: float,
) -> LogLine | None:
    """One line read as read_lines reads it (counted in stats): its record when it is to be analysed."""
    rec = parser.parse(line, skip)
    stats.lines += 1
    if rec is SKIPPED:
        stats.postfix_lines += 1
        return None
    if rec is None:
        _not_postfix(line, stats)
        return None
    stats.postfix_lines += 1
    return rec if admit(rec, stats, since, until, latest) else None


def _damaged(chunk: Chunk, count: int, exc: Exception, stats: ReadStats) -> None:
    where = f" (the part from byte {chunk.start:,})" if chunk.start else ""
    detail = str(exc).removeprefix(f"{chunk.path}: ")
    stats.warnings.append(f"{chunk.path}{where} is damaged after line {count:,}: the rest was not read ({detail})")


def latest_time() -> float:
    """No log line is dated more than a day from now."""
    return time.time() + 86400


def read_batches(
    target: Target,
    sources: Iterable[str | Chunk],
    stats: ReadStats,
    since: float | None = None,
    births: set[str] | None = None,
    tz: tzinfo | None = None,
) -> Iterator[tuple[LineParser, list[str]]]:
    """The raw lines of the sources in order, in lists of whole lines (about BATCH
    characters each), with the parser of their source: for a reader that decides
    itself which lines need a full parse (see DeferralAnalysis.read). Each line is as
    read_lines would see it (no NUL, none longer than MAX_LINE, no line end); nothing
    is counted in stats but the files, damage and what LineBatches drops.
    Use take() to read a line exactly as read_lines does."""
    for source in sources:
        chunk, parser, stream, hole = _open_source(target, source, stats, since, tz, births)
        with stream:
            batches = LineBatches(stream, stats, hole)
            try:
                for batch in batches:
                    yield parser, batch
            except (InputError, OSError) as exc:  # a damaged rotated file: keep what was read, say so
                _damaged(chunk, batches.count, exc, stats)


BATCH = 1 << 20  # characters per batch of LineBatches


def _longest_over(lines: list[str], chunk: str) -> bool:
    """Whether a line of `lines` (the split of `chunk`, its first line joined to the text
    carried before it) is longer than MAX_LINE. A line that long holds a whole aligned
    window of MAX_LINE // 2 characters of the chunk without a line end: a few finds over
    the chunk rule that out, and only a batch with such a window has its lines measured."""
    if len(lines[0]) > MAX_LINE:
        return True
    half = MAX_LINE // 2
    find = chunk.find
    for start in range(0, len(chunk) - half + 1, half):
        if find("\n", start, start + half) < 0:
            return max(map(len, lines)) > MAX_LINE
    return False


class LineBatches:
    """The lines of a text stream, as BoundedLines hands them out, in lists of whole
    lines of about BATCH characters: one decode and one split per batch instead of
    work per line. A batch that holds a NUL or a line longer than MAX_LINE, and a
    stream that starts with a hole or has no binary buffer, is read on through
    BoundedLines (which counts and drops what it must), in lists too. `count` is the
    number of lines handed out so far."""

    def __init__(self, stream: TextIO, stats: ReadStats, leading_nuls: int = 0) -> None:
        self._stream = stream
        self._stats = stats
        self._nuls = leading_nuls
        self.count = 0

    def __iter__(self) -> Iterator[list[str]]:
        binary = getattr(self._stream, "buffer", None)
        read1 = getattr(binary, "read1", None)
        if read1 is None or self._nuls:
            yield from self._bounded(BoundedLines(self._stream, self._stats, self._nuls))
            return
        encoding = getattr(self._stream, "encoding", None) or "utf-8"
        errors = getattr(self._stream, "errors", None) or "replace"
        decoder = io.IncrementalNewlineDecoder(codecs.getincrementaldecoder(encoding)(errors), translate=True)
        decode = decoder.decode
        carry = ""  # the start of a line whose end has not been read yet
        while True:
            data = read1(BATCH)
            chunk = decode(data, final=not data)
            before = carry
            # split the new text alone and join the carry to its first line: no copy of the batch
            lines = chunk.split("\n")
            lines[0] = carry + lines[0]
            if data:
                carry = lines.pop()  # the text after the last line end (all of it when there is none)
                if not lines:  # no line end yet: the current line goes on
                    if len(carry) > MAX_LINE:
                        yield from self._rest(carry, read1, decode)
                        return
                    continue
            else:  # the end: what is left is the last lines (a last one without its line end too)
                if lines[-1] == "":
                    lines.pop()
                carry = ""
            if "\x00" in chunk or "\x00" in before or len(carry) > MAX_LINE or (lines and _longest_over(lines, chunk)):
                yield from self._rest(before + chunk, read1, decode)
                return
            if lines:
                self.count += len(lines)
                yield lines
            if not data:
                return

    def _rest(self, text: str, read1, decode) -> Iterator[list[str]]:
        """From `text` (not handed out yet) on, through BoundedLines."""

        def pieces() -> Iterator[str]:
            for k in range(0, len(text), READ_SIZE):  # BoundedLines needs pieces of at most READ_SIZE
                yield text[k : k + READ_SIZE]
            while data := read1(READ_SIZE):
                if more := decode(data):
                    yield more
            if more := decode(b"", final=True):
                yield more

        yield from self._bounded(BoundedLines(self._stream, self._stats, pieces=pieces()))

    def _bounded(self, lines: "BoundedLines") -> Iterator[list[str]]:
        batch: list[str] = []
        lines.count = self.count
        try:
            for line in lines:
                batch.append(line)
                if len(batch) >= 4096:
                    self.count = lines.count
                    yield batch
                    batch = []
        except (InputError, OSError):
            self.count = lines.count
            if batch:  # what was read before the damage is handed out first
                yield batch
            raise
        self.count = lines.count
        if batch:
            yield batch


class BoundedLines:
    """The lines of a text stream (line ends removed), read in bounded pieces.

    Memory stays below READ_SIZE + MAX_LINE characters whatever the stream holds:
    a line longer than MAX_LINE is dropped while it is read and counted; NUL bytes
    are removed and the line that held them counted (logrotate's copytruncate
    leaves a hole of NULs, as long as the old log, in front of the next line
    written): what remains of such a line is read as usual. The bytes under a
    TextIOWrapper are read and decoded here, one read at a time, so that a stream
    that breaks (a damaged .gz) has handed out every line before the damage.
    `count` is the number of lines read so far, handed out or dropped."""

    def __init__(
        self, stream: TextIO, stats: ReadStats, leading_nuls: int = 0, pieces: Iterator[str] | None = None
    ) -> None:
        self._stream = stream
        self._stats = stats
        self._given = pieces  # the stream's text already read and decoded (LineBatches)
        self.count = 0
        self._nuls = leading_nuls  # NUL bytes removed from the current line (a hole skipped before it)
        self._long = 0  # length of the current line once it is too long (0: it is not)

    def _pieces(self) -> Iterator[str]:
        """The stream's text in pieces of at most READ_SIZE characters (bytes, when decoded here)."""
        if self._given is not None:
            yield from self._given
            return
        binary = getattr(self._stream, "buffer", None)
        read1 = getattr(binary, "read1", None)
        if read1 is None:  # a plain text stream (StringIO): it has its text already
            read = self._stream.read
            while piece := read(READ_SIZE):
                yield piece
            return
        encoding = getattr(self._stream, "encoding", None) or "utf-8"
        errors = getattr(self._stream, "errors", None) or "replace"
        # the decoding of TextIOWrapper(newline=None): \r\n and \r end lines as \n does
        decoder = io.IncrementalNewlineDecoder(codecs.getincrementaldecoder(encoding)(errors), translate=True)
        decode = decoder.decode
        while data := read1(READ_SIZE):
            if text := decode(data):
                yield text
        if text := decode(b"", final=True):
            yield text

    def __iter__(self) -> Iterator[str]:
        finish = self._finish
        grow = self._grow
        carry = ""  # the start of a line whose end has not been read yet
        for data in self._pieces():
            parts = data.split("\n")
            if "\x00" in data:  # rare: each part on its own
                for i, part in enumerate(parts):
                    if "\x00" in part:
                        clean = part.replace("\x00", "")
                        self._nuls += len(part) - len(clean)
                        part = clean
                    carry = grow(carry, part)
                    if i < len(parts) - 1:  # a line end follows
                        line = finish(carry)
                        carry = ""
                        if line is not None:
                            yield line
                continue
            if len(parts) == 1:  # no line end in this piece: the current line goes on
                carry = grow(carry, data)
                continue
            last = parts.pop()
            line = finish(grow(carry, parts[0]) if carry or self._long else parts[0])
            if line is not None:
                yield line
            if len(parts) > 1:  # whole lines, each shorter than READ_SIZE <= MAX_LINE
                self.count += len(parts) - 1
                yield from parts[1:]
            carry = grow("", last)
        if carry or self._long or self._nuls:
            line = finish(carry)
            if line is not None:
                yield line

    def _grow(self, carry: str, more: str) -> str:
        if self._long:
            self._long += len(more)
            return carry
        if len(carry) + len(more) <= MAX_LINE:
            return carry + more
        self._long = len(carry) + len(more)
        return (carry + more[:300])[:300]  # only the start is kept, for the example

    def _finish(self, line: str) -> str | None:
        """A line ends: the line to read, or None when it is counted as malformed."""
        self.count += 1
        nuls, self._nuls = self._nuls, 0
        if self._long:
            size, self._long = self._long, 0
            extra = f" and {nuls:,} NUL bytes" if nuls else ""
            self._stats.malformed_line(LONG_LINE, f"a line of {size:,} characters{extra}: {line[:200]}")
            return None
        if nuls:
            what = f"{nuls:,} NUL bytes removed from a line"
            self._stats.malformed_line(NUL_BYTES, f"{what}: {line[:200]}" if line else f"{what} that held nothing else")
            return line or None
        return line
