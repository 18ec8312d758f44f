"""The action log of the guarded queue and configuration changes: a JSON-lines file, written
ahead (an intent record, fsynced, before each batch; its outcome after), so that a run cut short
by a crash or a kill is visible as such the next time pfdiag starts an action or reads the log
(`pfdiag queue log`). An action log that cannot be written stops the action before it runs."""

from __future__ import annotations

import errno
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Iterator, Sequence, TextIO

from checks.errors import InputError


def run_id(now: float | None = None) -> str:
    """A run's name in the action log and the backup manifest: its start time and process id."""
    return time.strftime("%Y%m%dT%H%M%S", time.localtime(now)) + f"-{os.getpid()}"


def _proc_start(pid: int) -> str | None:
    """A process's start time (field 22 of /proc/PID/stat), None when it is not running: with
    the pid it names one process, so a recycled pid is not taken for a run still going."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            stat = fh.read()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def check_writable(path: str) -> None:
    """InputError when the action log plainly cannot be written (before anything is asked or
    run); a device or disk that takes no data is caught by the first record (ActionLog.begin)."""
    target = path if os.path.exists(path) else (os.path.dirname(path) or ".")
    while not os.path.exists(target):  # the directories ActionLog would create
        parent = os.path.dirname(target)
        if parent == target:
            break
        target = parent
    if os.path.isdir(path):
        why = "a directory"
    elif os.path.exists(path):
        why = "" if os.access(path, os.W_OK) else "not writable"
    else:
        why = "" if os.path.isdir(target) and os.access(target, os.W_OK | os.X_OK) else f"cannot create it in {target}"
    if why:
        raise InputError(f"{path}: cannot write the action log ({why}); nothing was changed; use --action-log FILE")


def _ends_torn(path: str) -> bool:
    """The regular file ends in the middle of a line (its writer was killed mid-record)."""
    try:
        if not os.path.isfile(path) or os.path.getsize(path) == 0:
            return False
        with open(path, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) != b"\n"
    except OSError:
        return False


class ActionLog:
    """JSON lines, written ahead of what they record. A run (begin .. end) writes a start record,
    then for each command that changes the queue an intent record (the ids and the argv, on disk
    before the command runs), then its outcome; an end record closes the run. A run without its
    end record was interrupted (SIGKILL, power loss), and an intent without its outcome names the
    ids in doubt: see interrupted_runs(). Opened before anything runs, so an unwritable log
    stops the action instead of leaving changes unrecorded."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.run: str | None = None
        self._seq = 0
        try:
            os.makedirs(os.path.dirname(path) or ".", mode=0o750, exist_ok=True)
            self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()
        except OSError as exc:
            raise InputError(f"{path}: cannot write the action log ({exc.strerror or exc}); use --action-log FILE") from exc
        self._torn = _ends_torn(path)  # a run killed mid-record: the next record starts on a line of its own

    def _put(self, record: dict[str, object], *, sync: bool, failed: str) -> None:
        line = json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **record}, ensure_ascii=False) + "\n"
        if self._torn:
            line, self._torn = "\n" + line, False
        try:
            self._fh.write(line)
            self._fh.flush()
            if sync:
                try:
                    os.fsync(self._fh.fileno())
                except OSError as exc:
                    if exc.errno not in (errno.EINVAL, errno.ENOTSUP):  # a pipe or device that cannot sync
                        raise
        except OSError as exc:
            raise InputError(f"{self.path}: cannot write the action log ({exc.strerror or exc}); {failed}") from exc

    def write(self, **record: object) -> None:
        """One record (within a run: its outcome part), flushed; a log that stops taking records
        (a full disk) stops the action with one line instead of letting it go on unrecorded."""
        if self.run:
            record = {"run": self.run, "phase": "done", **record}
        self._put(record, sync=self.run is not None, failed=f"stopped after: {record.get('argv')}")

    def begin(self, action: str, ids: Sequence[str], backup_dir: str | None = None,
              acknowledges: Sequence[str] = ()) -> str:  # fmt: skip
        """The run's start record, on disk before the first command: the test write that stops
        an action whose log takes nothing (/dev/full, a full disk) before it changes anything."""
        self.run = run_id()
        self._put({"run": self.run, "phase": "start", "action": action, "pid": os.getpid(),
                   "proc_start": _proc_start(os.getpid()), "command": sys.argv[1:], "ids": list(ids),
                   "backup_dir": backup_dir, "acknowledges": list(acknowledges)},  # fmt: skip
                  sync=True, failed="nothing was changed")
        return self.run

    def intent(self, action: str, ids: Sequence[str], argv: Sequence[str]) -> int:
        """Before a command that changes the queue: what is about to run, on disk. Returns its seq."""
        self._seq += 1
        self._put({"run": self.run, "phase": "intent", "seq": self._seq, "action": action, "ids": list(ids),
                   "argv": list(argv)}, sync=True, failed=f"stopped before running {' '.join(argv)}")  # fmt: skip
        return self._seq

    def outcome(self, seq: int, **record: object) -> None:
        argv = record.get("argv")
        ran = " ".join(str(a) for a in argv) if isinstance(argv, list) else str(record.get("action"))
        self._put({"run": self.run, "phase": "done", "seq": seq, **record}, sync=True,
                  failed=f"{ran} ran but its result is not recorded: stopped")  # fmt: skip

    def end(self, ok: bool) -> None:
        self._put({"run": self.run, "phase": "end", "ok": ok}, sync=True, failed="the run's end is not recorded")

    def close(self) -> None:
        try:
            self._fh.close()
        except OSError:  # what could not be written was said when it failed
            pass


@dataclass
class Interrupted:
    """A run of pfdiag whose end the action log does not have."""

    run: str
    time: str
    action: str
    pid: int | None
    in_doubt: list[str]  # ids of commands that were running when it stopped (intent, no outcome)
    in_doubt_argv: list[list[str]]
    backup_dir: str | None
    acknowledged: bool = False

    def line(self, log_path: str) -> str:
        ids = " ".join(self.in_doubt[:20]) + (f" (+{len(self.in_doubt) - 20} more)" if len(self.in_doubt) > 20 else "")
        what = (f"{len(self.in_doubt)} message(s) in doubt, their `{' '.join(self.in_doubt_argv[0][:1])}` was running: {ids}"
                if self.in_doubt else "no command was running when it stopped")  # fmt: skip
        if self.in_doubt and self.action == "delete" and self.backup_dir:
            check = f"check with `pfdiag queue restore {self.backup_dir} --dry-run` (lists what was deleted)"
        elif self.in_doubt:
            check = "check each with `postqueue -j | grep ID` (still queued, and in which queue)"
        else:
            check = f"see {log_path}"
        return (f"warning: pfdiag queue {self.action} run {self.run} (started {self.time}) was interrupted: "
                f"{what}; {check}")  # fmt: skip


def json_records(path: str) -> Iterator[dict[str, Any]]:
    """The JSON objects of a JSON-lines file (the action log, a backup manifest), streamed; a torn
    last line (a run killed mid-write) or a line that is not an object is skipped."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                yield rec


def interrupted_runs(path: str, *, include_acknowledged: bool = False) -> list[Interrupted]:
    """The runs in the action log with a start and no end, whose process is gone (a run still
    going is not interrupted). Read as a stream: only unfinished runs are kept in memory. A log
    that is not a regular file (/dev/full, a pipe) is not read."""
    if not os.path.isfile(path):
        return []
    runs: dict[str, dict[str, Any]] = {}
    acked: set[str] = set()
    try:
        for rec in json_records(path):
            run, phase = rec.get("run"), rec.get("phase")
            if not run or not isinstance(run, str):
                continue
            if phase == "start":
                runs[run] = {"start": rec, "intents": {}}
                acked.update(a for a in rec.get("acknowledges") or [] if isinstance(a, str))
            elif run not in runs:
                continue
            elif phase == "intent":
                runs[run]["intents"][rec.get("seq")] = rec
            elif phase == "done" and "seq" in rec:
                runs[run]["intents"].pop(rec.get("seq"), None)
            elif phase == "end":
                del runs[run]
    except OSError:
        return []
    out = []
    for run, st in runs.items():
        start = st["start"]
        pid = start.get("pid") if isinstance(start.get("pid"), int) else None
        if pid and pid != os.getpid() and start.get("proc_start") and _proc_start(pid) == start.get("proc_start"):
            continue  # still running
        if pid == os.getpid():
            continue  # this process's own run (open right now)
        intents = list(st["intents"].values())
        if run in acked and not include_acknowledged:
            continue
        out.append(Interrupted(run, str(start.get("time", "")), str(start.get("action", "?")), pid,
                               [q for r in intents for q in r.get("ids") or []], [list(r.get("argv") or []) for r in intents],
                               start.get("backup_dir"), run in acked))  # fmt: skip
    return out


def warn_interrupted(path: str, out: TextIO | None = None) -> list[str]:
    """One warning line per interrupted run (on stderr by default); their run names, which the
    next run's start record acknowledges so the warning is shown until one action has run after it."""
    found = interrupted_runs(path)
    for r in found:
        print(f"pfdiag: {r.line(path)}", file=out or sys.stderr)
    return [r.run for r in found]
