"""Target.stream: a command's stdout line by line while it runs, with run()'s errors.

LocalTarget runs real child processes (the test's own Python); SnapshotTarget replays a
recorded bundle written by SnapshotWriter. Lab-side checks (postqueue) are in
tests/integration/test_queue_stream_lab.py.
"""

from __future__ import annotations

import sys
import time

import pytest

from checks.errors import CommandNotFound, CommandTimeout, TargetError
from checks.model import CommandResult
from checks.targets import LocalTarget, SnapshotTarget
from checks.targets.bundle import SnapshotWriter

PY = sys.executable


def py(code: str) -> list[str]:
    return [PY, "-c", code]


def test_lines_arrive_while_the_command_still_runs():
    code = "import sys, time; print('first', flush=True); time.sleep(1.5); print('second')"
    t0 = time.monotonic()
    with LocalTarget().stream(py(code)) as out:
        it = iter(out)
        assert next(it) == "first"
        first_at = time.monotonic() - t0
        assert list(it) == ["second"]
        res = out.result()
    assert first_at < 1.0, f"the first line waited for the whole command ({first_at:.2f} s)"
    assert time.monotonic() - t0 >= 1.4
    assert res.returncode == 0 and res.stdout == "" and res.argv == tuple(py(code))


def test_exit_status_and_stderr_come_after_the_lines():
    code = "import sys; print('a'); print('b\\r'); sys.stderr.write('it went wrong\\n'); sys.exit(3)"
    with LocalTarget().stream(py(code)) as out:
        lines = list(out)
        res = out.result()
    assert lines == ["a", "b"]  # line ends, CRLF included, are removed
    assert res.returncode == 3  # not an error: the caller reads it, as with run()
    assert "it went wrong" in res.stderr


def test_undecodable_bytes_are_replaced_like_run():
    code = "import sys; sys.stdout.buffer.write(b'caf\\xe9 ok\\n')"
    with LocalTarget().stream(py(code)) as out:
        lines = list(out)
    assert lines == [LocalTarget().run(py(code)).stdout.rstrip("\n")] == ["caf\ufffd ok"]


def test_missing_program_is_command_not_found_like_run():
    argv = ["/nonexistent/pfdiag-no-such-tool", "-j"]
    with pytest.raises(CommandNotFound, match="pfdiag-no-such-tool"):
        LocalTarget().run(argv)
    with pytest.raises(CommandNotFound, match="pfdiag-no-such-tool"):
        LocalTarget().stream(argv)


def test_invalid_argv_is_refused():
    with pytest.raises(TargetError):
        LocalTarget().stream([])
    with pytest.raises(TargetError):
        LocalTarget().stream(["echo", 1])  # type: ignore[list-item]


def test_overrun_is_command_timeout_and_the_command_is_killed():
    code = "import time; print('started', flush=True); time.sleep(30)"
    t0 = time.monotonic()
    with pytest.raises(CommandTimeout, match="within 0.5 s"):
        with LocalTarget().stream(py(code), timeout=0.5) as out:
            assert list(out) == ["started"]
    assert time.monotonic() - t0 < 5


def test_leaving_early_stops_the_command():
    code = "import time\nfor i in range(1000):\n    print(i, flush=True)\n    time.sleep(0.05)"
    t0 = time.monotonic()
    with LocalTarget().stream(py(code)) as out:
        for line in out:
            if line == "2":
                break
    assert time.monotonic() - t0 < 5  # not the 50 s the command would take
    assert out._proc.poll() is not None  # type: ignore[attr-defined]  # killed and reaped


def test_a_chatty_stderr_does_not_block_the_stream():
    # 1 MB on stderr before any stdout: a reader of stdout alone would deadlock on the full pipe
    code = "import sys; sys.stderr.write('e' * 1_000_000); sys.stderr.flush(); print('\\n'.join(map(str, range(20000))))"
    with LocalTarget().stream(py(code), timeout=20) as out:
        lines = list(out)
        res = out.result()
    assert len(lines) == 20000 and lines[-1] == "19999"
    assert len(res.stderr) == 1_000_000


def test_result_without_reading_the_lines_drains_them():
    code = "print('x' * 100_000); print('y' * 100_000)"
    with LocalTarget().stream(py(code)) as out:
        res = out.result()
    assert res.returncode == 0


def _snapshot(tmp_path, *results: CommandResult) -> SnapshotTarget:
    w = SnapshotWriter(host="snap.test")
    for r in results:
        w.add_command(r)
    path = tmp_path / "snap.tar.gz"
    w.write(str(path))
    return SnapshotTarget(str(path))


def test_snapshot_stream_replays_the_recorded_output(tmp_path):
    text = '{"queue_id": "ABC"}\r\n{"x": "a\u2028b"}\nlast without newline'
    snap = _snapshot(tmp_path, CommandResult(("postqueue", "-j"), 0, text, "postqueue: warning: x\n"))
    with snap.stream(["postqueue", "-j"]) as out:
        lines = list(out)
        res = out.result()
    # split on "\n" only, like a pipe: U+2028 inside a JSON string does not break the line
    assert lines == ['{"queue_id": "ABC"}', '{"x": "a\u2028b"}', "last without newline"]
    assert res.returncode == 0 and res.stderr == "postqueue: warning: x\n" and res.stdout == ""


def test_snapshot_stream_of_an_unrecorded_command_is_command_not_found(tmp_path):
    snap = _snapshot(tmp_path, CommandResult(("postqueue", "-j"), 0, "", ""))
    with pytest.raises(CommandNotFound, match="not recorded"):
        snap.stream(["postqueue", "-p"])


def test_an_overlong_line_is_cut_not_held_whole(monkeypatch):
    """A line past MAX_LINE is handed out as its start, marked, and the rest read past;
    the lines after it arrive as usual (a parser counts the cut one as malformed)."""
    from checks.targets import streams

    monkeypatch.setattr(streams, "MAX_LINE", 4096)
    code = "import sys; print('before'); sys.stdout.write('x' * 50000 + '\\n'); print('after')"
    with LocalTarget().stream(py(code)) as out:
        lines = list(out)
        res = out.result()
    assert lines == ["before", "x" * 1000 + " [line cut: longer than 4096 bytes]", "after"]
    assert res.returncode == 0
