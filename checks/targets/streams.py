"""A command's stdout line by line while it still runs (Target.stream), then its exit.

    with target.stream(argv) as out:
        for line in out:          # str, line end removed, undecodable bytes replaced
            ...
        res = out.result()        # CommandResult: returncode, stderr, duration; stdout ""

Errors are run()'s: a missing program raises CommandNotFound when the stream is opened,
an overrun CommandTimeout (at the end of the lines or from result()), and a non-zero exit
is no error: the caller reads result().returncode. Leaving the block early stops the command.
A line longer than MAX_LINE bytes is not held whole: its start is handed out, marked as cut
(a parser counts it as malformed), and the rest is read past.
"""

from __future__ import annotations

import subprocess
import threading
import time
from typing import Iterator

from checks.errors import CommandTimeout
from checks.model import CommandResult

# Generous: `postqueue -j` writes a message with thousands of recipients on one line.
MAX_LINE = 16 << 20
CUT = " [line cut: longer than {} bytes]"


class CommandStream:
    """A finished command's output handed out line by line: what snapshots (and a target
    that cannot stream) give, with the same interface as a live stream."""

    def __init__(self, result: CommandResult) -> None:
        self.argv = result.argv
        self._result = result

    def __iter__(self) -> Iterator[str]:
        # split on "\n" like a live pipe (str.splitlines would also split on U+2028 inside JSON strings)
        text = self._result.stdout
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        for line in lines:
            yield line.rstrip("\r")

    def result(self) -> CommandResult:
        r = self._result
        return CommandResult(r.argv, r.returncode, "", r.stderr, r.duration)

    def close(self) -> None:
        pass

    def __enter__(self) -> CommandStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ProcessStream(CommandStream):
    """A local child's stdout as it is written. stderr is collected by a thread (a chatty
    command must not block on a full pipe) and the deadline is a timer that kills it."""

    def __init__(self, argv: tuple[str, ...], proc: subprocess.Popen[bytes], timeout: float) -> None:
        self.argv = argv
        self._proc = proc
        self._timeout = timeout
        self._start = time.monotonic()
        self._expired = threading.Event()
        self._err: list[bytes] = []
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        self._timer = threading.Timer(timeout, self._expire)
        self._timer.daemon = True
        self._timer.start()
        self._done: CommandResult | None = None

    def _read_stderr(self) -> None:
        assert self._proc.stderr is not None
        self._err.append(self._proc.stderr.read())

    def _expire(self) -> None:
        self._expired.set()
        self._proc.kill()

    def _check_deadline(self) -> None:
        if self._expired.is_set():
            self.close()
            raise CommandTimeout(f"{' '.join(self.argv)}: no answer within {self._timeout:g} s")

    def __iter__(self) -> Iterator[str]:
        assert self._proc.stdout is not None
        readline = self._proc.stdout.readline
        limit = MAX_LINE
        while raw := readline(limit):
            if len(raw) == limit and not raw.endswith(b"\n"):  # too long: never buffered whole
                while (more := readline(limit)) and not more.endswith(b"\n"):
                    pass
                yield raw[:1000].decode("utf-8", "replace") + CUT.format(limit)
                continue
            yield raw.decode("utf-8", "replace").rstrip("\r\n")
        self._check_deadline()

    def result(self) -> CommandResult:
        if self._done is None:
            out = self._proc.stdout
            while out is not None and not out.closed and out.read(65536):  # lines nobody asked for
                pass
            self._proc.wait()
            self._reader.join()
            self._timer.cancel()
            self._check_deadline()
            self._done = CommandResult(self.argv, self._proc.returncode, "",
                                       b"".join(self._err).decode("utf-8", "replace"),
                                       time.monotonic() - self._start)  # fmt: skip
        return self._done

    def close(self) -> None:
        """Stop the command if it still runs; idempotent."""
        self._timer.cancel()
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        self._reader.join()
        for pipe in (self._proc.stdout, self._proc.stderr):
            if pipe is not None:
                pipe.close()
