"""Guarded queue actions: hold, release, requeue, retry, expire, delete (with backup), flush.

Safety rules, in order:
  * ids come from the current queue listing through selectors, or from --id, and every id
    is checked with is_valid_queue_id before it reaches an argv (argv lists only, no shell);
  * a plan (messages + exact argv) is shown first; nothing runs without an interactive
    "yes" or --yes, and a dry run is the default when stdin is not a terminal;
  * Postfix must be running (`master -t` exits 0 when it is NOT): otherwise nothing runs;
  * after the confirmation the queue is listed again: a message that is gone, moved to another
    queue or whose id now names another message is "not found" and not touched; postsuper is
    told each message's queue too, for a move in the seconds between;
  * delete saves every message with `postcat -q ID` first (byte for byte, fsynced, never over an
    existing file, whole: postcat's end-of-file marker) and deletes only the ids it saved;
  * every command's result is checked (postsuper's "Deleted: N messages" must match: 0 for an
    id means "not found", not success) and appended to a JSON-lines action log.
"""

from __future__ import annotations

import errno
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Sequence, TextIO

from checks import places
from checks.config import postfix_argv
from checks.errors import CommandNotFound, InputError, PfdiagError, UsageError
from checks.postfix.postqueue import QueuedMessage, is_valid_queue_id
from checks.queue import domain_of, read_queue
from checks.targets import Target

DEFAULT_BACKUP_ROOT = places.BACKUP_DIR  # PFDIAG_BACKUP_DIR moves it (checks/places.py)
DEFAULT_ACTION_LOG = places.ACTION_LOG  # PFDIAG_ACTION_LOG moves it
BATCH = 100  # ids per postsuper call: argv stays far below ARG_MAX
COMMAND_TIMEOUT = 120.0  # seconds per postcat/postsuper/postqueue run


@dataclass(frozen=True)
class Spec:
    option: str | None  # postsuper option taking one id each; None: not a postsuper action
    counted: str | None  # postsuper's "<counted>: N messages" summary
    retry_after: bool = False  # then `postqueue -i ID` per message
    help: str = ""


SPECS: dict[str, Spec] = {
    "hold": Spec("-h", "Placed on hold", help="put on hold: kept, never tried, until released (the safe first step)"),
    "release": Spec("-H", "Released from hold", help="back to the deferred queue with the old reason"),
    "requeue": Spec("-r", "Requeued", help="re-resolve routing/transport (after a transport or relayhost change); new queue id"),
    "retry": Spec(None, None, retry_after=True, help="postqueue -i ID: one message now (gentler than flush)"),
    "expire": Spec("-e", "Force-expired", retry_after=True, help="return to sender at the next attempt (postsuper -e, then postqueue -i)"),
    "delete": Spec("-d", "Deleted", help="delete for good, after a postcat backup (consider hold first)"),
    "flush": Spec(None, None, help="postqueue -f: everything now; forgets dead destinations (prefer retry)"),
}
FLUSH_WARNING = (
    "postqueue -f retries ALL queued mail at once and makes qmgr forget which destinations "
    "and transports it found dead, so mail for a still-broken site piles into the active "
    "queue again; TUNING_README warns that frequent flushing makes delivery worse. Prefer "
    "`pfdiag queue retry --id ID` (postqueue -i) or `postqueue -s SITE`."
)
_COUNT = re.compile(r"^postsuper: ([A-Za-z -]+): (\d+) messages?$", re.M)


@dataclass(frozen=True)
class Origin:
    """Who submitted a message, from smtpd's `client=host[addr], sasl_username=LOGIN` line."""

    client: str  # the address in brackets ("unknown" when smtpd did not know it)
    host: str = ""
    sasl_user: str | None = None


@dataclass
class Selection:
    """Which messages: every selector given must match (AND). Ages in seconds, sizes in
    bytes, reason a compiled case-insensitive regex (diagnose/queueselect.py parses them)."""

    ids: list[str] = field(default_factory=list)
    cause: str | None = None
    domain: str | None = None
    queue: str | None = None
    all_deferred: bool = False
    sender: str | None = None  # ADDR, @domain, or <> (the null sender)
    recipient: str | None = None  # ADDR or @domain
    older_than: float | None = None
    younger_than: float | None = None
    min_size: int | None = None
    max_size: int | None = None
    reason: re.Pattern[str] | None = None
    sasl_user: str | None = None
    client: str | None = None  # an IP address or network (CIDR)

    @property
    def empty(self) -> bool:
        return not (self.ids or self.cause or self.domain or self.queue or self.all_deferred or self.sender
                    or self.recipient or self.older_than is not None or self.younger_than is not None
                    or self.min_size is not None or self.max_size is not None or self.reason is not None
                    or self.needs_log)  # fmt: skip

    @property
    def needs_log(self) -> bool:
        """--sasl-user or --client: only the mail log says who submitted a message."""
        return bool(self.sasl_user or self.client)

    @property
    def by_recipient(self) -> bool:
        """Selected by some of its recipients: the action still acts on the whole message."""
        return bool(self.recipient or self.domain)

    def recipient_matches(self, address: str) -> bool:
        """This recipient address is one --recipient and --domain select (True when neither is given)."""
        if self.domain:
            d, have = self.domain.lower().strip("."), domain_of(address)
            if not (have == d or have.endswith("." + d)):
                return False
        return self.recipient is None or _address_matches(self.recipient, address)


def _address_matches(want: str, address: str) -> bool:
    """ADDR (whole address, any case) or @domain (that domain or a subdomain)."""
    if want.startswith("@"):
        d, have = want[1:].lower().strip("."), domain_of(address)
        return have == d or have.endswith("." + d)
    return address.lower() == want.lower()


def _client_matches(want: str, addr: str) -> bool:
    import ipaddress

    try:
        have = ipaddress.ip_address(addr.removeprefix("IPv6:"))
    except ValueError:
        return addr.lower() == want.lower()
    try:
        return have in ipaddress.ip_network(want, strict=False) if "/" in want else have == ipaddress.ip_address(want)
    except ValueError:
        return False


def select(
    messages: Sequence[QueuedMessage], sel: Selection, cause_of: Callable[[str], str], *, now: float | None = None,
    origins: dict[str, Origin] | None = None,
) -> tuple[list[QueuedMessage], list[str]]:  # fmt: skip
    """(messages matching every given selector, ids given with --id that are not queued).
    now: the time ages count from (the listing's); origins: who submitted each queue id
    (from the log), needed by --sasl-user and --client (a message not in it does not match)."""
    for qid in sel.ids:
        if not is_valid_queue_id(qid):
            raise UsageError(f"{qid!r} is not a Postfix queue id (hex like 2984816E715, or a long id like 4PbC4x469Jz3tBr)")
    if sel.needs_log and origins is None:
        raise ValueError("--sasl-user/--client need the origins read from the log")
    when = time.time() if now is None else now
    wanted = set(sel.ids)
    out = [m for m in messages if (not wanted or m.queue_id in wanted) and matches(m, sel, cause_of, when, origins)]
    found = {m.queue_id for m in messages}
    return out, [q for q in sel.ids if q not in found]


def matches(m: QueuedMessage, sel: Selection, cause_of: Callable[[str], str], now: float,
            origins: dict[str, Origin] | None = None) -> bool:  # fmt: skip
    """Every selector but --id matches this message."""
    if sel.all_deferred and m.queue_name != "deferred":
        return False
    if sel.queue and m.queue_name != sel.queue:
        return False
    if sel.sender is not None:
        if sel.sender == "<>":
            if not m.null_sender:
                return False
        elif not _address_matches(sel.sender, m.sender):
            return False
    age = now - m.arrival_time
    if (sel.older_than is not None and age < sel.older_than) or (sel.younger_than is not None and age >= sel.younger_than):
        return False
    if (sel.min_size is not None and m.size < sel.min_size) or (sel.max_size is not None and m.size > sel.max_size):
        return False
    rcpts = m.recipients
    if sel.by_recipient and not any(sel.recipient_matches(r.address) for r in rcpts):
        return False
    if sel.reason is not None and not any(sel.reason.search(r.delay_reason) for r in rcpts if r.delay_reason):
        return False
    if sel.cause:
        causes = {cause_of(r.delay_reason) for r in rcpts if r.delay_reason}
        if sel.cause.upper() not in {c.upper() for c in causes}:
            return False
    if sel.needs_log:
        o = (origins or {}).get(m.queue_id)
        if o is None:
            return False
        if sel.client and not _client_matches(sel.client, o.client):
            return False
        if sel.sasl_user and (o.sasl_user or "").lower() != sel.sasl_user.lower():
            return False
    return True


@dataclass
class Plan:
    action: str
    messages: list[QueuedMessage]
    commands: list[list[str]]
    backup_dir: str | None = None
    warnings: list[str] = field(default_factory=list)


def batch_size() -> int:
    """Ids per postsuper run: BATCH, or fewer with PFDIAG_QUEUE_BATCH=N (1..BATCH): smaller
    batches put less in doubt if a run is killed, and let tests interrupt a run mid-way."""
    try:
        n = int(os.environ.get("PFDIAG_QUEUE_BATCH", BATCH))
    except ValueError:
        return BATCH
    return max(1, min(BATCH, n))


def _batches(ids: Sequence[str], size: int | None = None) -> Iterable[Sequence[str]]:
    size = size or batch_size()
    for i in range(0, len(ids), size):
        yield ids[i : i + size]


# the queues postsuper takes as its trailing "named mail queue(s)" arguments
_POSTSUPER_QUEUES = ("hold", "incoming", "active", "deferred")


def _queue_of(action: str, m: QueuedMessage) -> str | None:
    """The queue postsuper is told to look in: the one the plan showed for the message, so a
    message that moved meanwhile (deferred -> active: being delivered right now) is counted as
    not found instead of being acted on behind the user's back. release: always hold."""
    if action == "release":
        return "hold"
    return m.queue_name if m.queue_name in _POSTSUPER_QUEUES else None


def postsuper_batches(action: str, messages: Sequence[QueuedMessage]) -> list[tuple[list[str], str | None]]:
    """(ids, queue) per postsuper run: ids grouped by their queue, BATCH at a time, in order."""
    groups: dict[str | None, list[str]] = {}
    for m in messages:
        groups.setdefault(_queue_of(action, m), []).append(m.queue_id)
    return [(list(batch), queue) for queue, ids in groups.items() for batch in _batches(ids)]


def _postsuper_argv(spec: Spec, config_dir: str | None, ids: Sequence[str], queue: str | None) -> list[str]:
    assert spec.option
    return postfix_argv("postsuper", config_dir, *[a for q in ids for a in (spec.option, q)], *((queue,) if queue else ()))


def build_plan(action: str, messages: Sequence[QueuedMessage], config_dir: str | None,
               backup_dir: str | None = None) -> Plan:  # fmt: skip
    spec = SPECS[action]
    ids = [m.queue_id for m in messages]
    for qid in ids:  # the listing's ids were validated by the parser; check again at the seam
        if not is_valid_queue_id(qid):
            raise InputError(f"refusing queue id {qid!r}: not a valid Postfix queue id")
    plan = Plan(action, list(messages), [], backup_dir)
    if action == "flush":
        plan.commands.append(postfix_argv("postqueue", config_dir, "-f"))
        plan.warnings.append(FLUSH_WARNING)
        return plan
    if action == "delete":
        for qid in ids:
            plan.commands.append(postfix_argv("postcat", config_dir, "-q", qid))
    if spec.option:
        for batch, queue in postsuper_batches(action, messages):
            plan.commands.append(_postsuper_argv(spec, config_dir, batch, queue))
    if spec.retry_after:
        for qid in ids:
            plan.commands.append(postfix_argv("postqueue", config_dir, "-i", qid))
    return plan


# ------------------------------------------------------------------ confirmation


def ask_on_stderr(prompt: str) -> str:
    """input() with its prompt on stderr: stdout may carry a JSON document (--format json)."""
    sys.stderr.write(prompt)
    sys.stderr.flush()
    return input()


def confirm(prompt: str, *, yes: bool, dry_run: bool, interactive: bool,
            ask: Callable[[str], str] = ask_on_stderr) -> bool:  # fmt: skip
    """True when the plan may run: --yes, or 'yes' typed on a terminal. Never without either."""
    if dry_run:
        return False
    if yes:
        return True
    if not interactive:
        return False
    try:
        answer = ask(f"{prompt} [yes/NO] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


# ------------------------------------------------------------------ running


def ensure_running(target: Target, config_dir: str | None, daemon_directory: str | None) -> None:
    """InputError unless the Postfix master runs. `master -t` exits 0 when it is NOT running;
    checked only where the program exists on the target."""
    master = f"{(daemon_directory or '/usr/lib/postfix/sbin').rstrip('/')}/master"
    try:
        target.file_info(master)
    except Exception:  # noqa: BLE001 - no master binary there: cannot tell, postqueue will say
        return
    try:
        res = target.run(postfix_argv(master, config_dir, "-t"))
    except CommandNotFound:
        return
    if res.returncode == 0:
        raise InputError("Postfix is not running (master -t): start it with `postfix start`; nothing was changed")


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


def interrupted_runs(path: str, *, include_acknowledged: bool = False) -> list[Interrupted]:
    """The runs in the action log with a start and no end, whose process is gone (a run still
    going is not interrupted). Read as a stream: only unfinished runs are kept in memory. A log
    that is not a regular file (/dev/full, a pipe) is not read."""
    if not os.path.isfile(path):
        return []
    runs: dict[str, dict[str, Any]] = {}
    acked: set[str] = set()
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                try:
                    rec = json.loads(line)
                except ValueError:  # a torn last line (killed mid-write)
                    continue
                run, phase = rec.get("run"), rec.get("phase") if isinstance(rec, dict) else None
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


@dataclass
class Outcome:
    argv: list[str]
    ok: bool
    detail: str


@dataclass
class Result:
    outcomes: list[Outcome] = field(default_factory=list)
    saved: dict[str, str] = field(default_factory=dict)  # id -> backup file
    not_found: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # ids not touched (backup failed)
    not_run: list[str] = field(default_factory=list)  # ids not touched (an earlier command could not run)
    deleted: list[str] = field(default_factory=list)  # delete: ids postsuper confirmed deleted

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes) and not self.skipped and not self.not_found and not self.not_run


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


# postcat prints these around a queue file's content; the last one only when it read the file
# to its end record, so a copy without it is not a whole message
_CONTENTS = b"*** MESSAGE CONTENTS"
_FILE_END = b"*** MESSAGE FILE END"


def _run(target: Target, argv: list[str], timeout: float | None = None) -> tuple[int | None, str, str]:
    """(returncode, stdout, error text); returncode None when the command could not be run at
    all (not found, permission, timeout): a failure to record, not a traceback."""
    try:
        res = target.run(argv, timeout=timeout or COMMAND_TIMEOUT)
    except PfdiagError as exc:
        return None, "", str(exc)
    return res.returncode, res.stdout, res.stderr


def _postcat_to(target: Target, argv: list[str], fh: object) -> tuple[int | None, str]:
    """Run postcat with its output going into fh (a binary file): byte for byte on this machine
    (a message with 8-bit text that is not UTF-8 is copied exactly, which a decoded str is not)."""
    run_into = getattr(target, "run_into", None)
    if callable(run_into):
        try:
            res = run_into(argv, fh, timeout=COMMAND_TIMEOUT)
        except PfdiagError as exc:
            return None, str(exc)
        return res.returncode, res.stderr
    rc, out, err = _run(target, argv)
    if "\ufffd" in out:  # decoded with replacement characters: the copy would not be exact
        return None, "the message is not UTF-8 text and this target returns text: no exact copy"
    fh.write(out.encode("utf-8"))  # type: ignore[attr-defined]
    return rc, err


def _backup_file(directory: str, qid: str) -> tuple[int, str]:
    """A new file for qid's copy, never an existing one (a second run into the same directory
    gets ID.1.postcat), never through a symlink."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    for n in range(1000):
        path = os.path.join(directory, f"{qid}.postcat" if n == 0 else f"{qid}.{n}.postcat")
        try:
            return os.open(path, flags, 0o600), path
        except FileExistsError:
            continue
    raise OSError(f"{directory}: 1000 copies of {qid} already")


def _save_one(target: Target, argv: list[str], directory: str, qid: str) -> tuple[int | None, str | None, str]:
    """(postcat's returncode, the saved file or None, why not). A copy that is not whole (postcat
    failed, printed no message, stopped before the file's end; the disk filled up) is removed."""
    try:
        fd, path = _backup_file(directory, qid)
    except OSError as exc:
        return None, None, f"cannot create the copy in {directory} ({exc.strerror or exc})"
    rc: int | None = None
    why = ""
    try:
        with os.fdopen(fd, "wb") as fh:
            rc, err = _postcat_to(target, argv, fh)
            fh.flush()
            os.fsync(fh.fileno())  # on disk before the original is deleted
        with open(path, "rb") as fh:
            data = fh.read()
        if rc != 0:
            why = _last_line(err) or f"postcat exit {rc}"
        elif _CONTENTS not in data:
            why = "postcat printed no message contents"
        elif _FILE_END not in data[-4096:]:
            why = "the copy stops before the end of the queue file"
    except OSError as exc:
        why = f"cannot write {path} ({exc.strerror or exc})"
    if why:
        try:
            os.unlink(path)
        except OSError:
            pass
        return rc, None, why
    return rc, path, ""


MANIFEST = "pfdiag-manifest.jsonl"


class Manifest:
    """The backup directory's record of what happened to each copy, JSON lines, fsynced:
    "copied" (a whole copy is on disk), "deleting" (postsuper -d is about to run for these ids),
    then "deleted" (postsuper counted them all), "not-deleted" (still queued afterwards) or
    "gone" (postsuper's count fell short and they are not queued: deleted, or delivered just
    before); "restoring"/"restored" by `pfdiag queue restore`. Restoring the directory whole
    would duplicate mail that was never deleted: restore_plan() reads this to pick the right ones."""

    def __init__(self, directory: str, run: str | None) -> None:
        self.path, self.run = os.path.join(directory, MANIFEST), run
        self._fd: int | None = None  # opened at the first record: a run that copied nothing leaves no file
        self._torn = False

    def _open(self) -> int:
        if self._fd is None:
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
            try:
                self._fd = os.open(self.path, flags, 0o600)
            except OSError as exc:
                raise InputError(f"{self.path}: cannot write the backup manifest ({exc.strerror or exc}); stopped before deleting") from exc
            self._torn = _ends_torn(self.path)
        return self._fd

    def put(self, state: str, ids: Sequence[str], **extra: object) -> None:
        fd = self._open()
        line = json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "run": self.run, "state": state,
                           "ids": list(ids), **extra}, ensure_ascii=False) + "\n"  # fmt: skip
        if self._torn:
            line, self._torn = "\n" + line, False
        try:
            os.write(fd, line.encode("utf-8"))
            os.fsync(fd)
        except OSError as exc:
            raise InputError(f"{self.path}: cannot write the backup manifest ({exc.strerror or exc}); stopped") from exc

    def close(self) -> None:
        if self._fd is None:
            return
        try:
            os.close(self._fd)
        except OSError:
            pass
        self._fd = None


def _prepare_backup_dir(directory: str) -> None:
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        if not os.path.isdir(directory) or not os.access(directory, os.W_OK | os.X_OK):
            raise PermissionError(13, "not a writable directory")
    except OSError as exc:
        raise InputError(f"{directory}: cannot create the backup directory ({exc.strerror or exc}); nothing was deleted") from exc


def _fsync_dir(directory: str) -> None:
    try:
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _backup(target: Target, messages: Sequence[QueuedMessage], directory: str, config_dir: str | None,
            log: ActionLog, result: Result, manifest: Manifest) -> list[QueuedMessage]:  # fmt: skip
    """postcat copies of messages; the ones saved whole (on disk, in the manifest as "copied")."""
    keep = []
    for m in messages:
        argv = postfix_argv("postcat", config_dir, "-q", m.queue_id)
        rc, path, why = _save_one(target, argv, directory, m.queue_id)
        if path:
            result.saved[m.queue_id] = path
            keep.append(m)
            detail = f"saved to {path}"
        else:
            result.skipped.append(m.queue_id)
            detail = f"not saved ({why}): will not delete it"
        result.outcomes.append(Outcome(argv, path is not None, detail))
        log.write(action="backup", ids=[m.queue_id], argv=argv, returncode=rc, result=detail)
    if keep:  # the new directory entries on disk too, then the manifest says they are there
        _fsync_dir(directory)
        for m in keep:
            manifest.put("copied", [m.queue_id], file=os.path.basename(result.saved[m.queue_id]),
                         arrival_time=m.arrival_time, queue=m.queue_name)  # fmt: skip
    return keep


def _still_queued(target: Target, config_dir: str | None, messages: Sequence[QueuedMessage]) -> set[str] | None:
    """Which of messages are queued now (same id and arrival time); None when the queue cannot be listed."""
    try:
        now = {m.queue_id: m for m in read_queue(target, config_dir).messages}
    except PfdiagError:
        return None
    return {m.queue_id for m in messages if m.queue_id in now and abs(now[m.queue_id].arrival_time - m.arrival_time) <= 1}


def _recheck(target: Target, plan: Plan, config_dir: str | None, log: ActionLog, result: Result) -> list[QueuedMessage]:
    """The plan's messages that are still what the plan showed, listed again after the
    confirmation (which may have waited minutes): same id, same arrival time (Postfix reuses
    short queue ids: postsuper(1) warns it can then delete the wrong message), same queue.
    The others are "not found", each with why, and nothing runs for them."""
    argv = postfix_argv("postqueue", config_dir, "-j")
    try:
        now = {m.queue_id: m for m in read_queue(target, config_dir).messages}
    except PfdiagError as exc:  # postsuper is still told each message's queue: go on, say so
        log.write(action="recheck", ids=[], argv=argv, returncode=None, result=f"queue not listed again ({exc})")
        return list(plan.messages)
    keep, gone = [], []
    for m in plan.messages:
        cur = now.get(m.queue_id)
        expected = _queue_of(plan.action, m)
        if cur is None:
            why = "no longer queued (delivered, expired or removed since the plan)"
        elif abs(cur.arrival_time - m.arrival_time) > 1:
            why = "the queue id now names another message (Postfix reused it)"
        elif expected and cur.queue_name != expected:  # moved since the plan; or, for release, never held
            why = f"{'now' if cur.queue_name != m.queue_name else 'is'} in the {cur.queue_name} queue, not {expected}"
        else:
            keep.append(m)
            continue
        gone.append((m.queue_id, why))
        result.not_found.append(m.queue_id)
    if gone:
        detail = "not touched: " + "; ".join(f"{qid}: {why}" for qid, why in gone)
        result.outcomes.append(Outcome(argv, False, detail))
        log.write(action="recheck", ids=[qid for qid, _ in gone], argv=argv, returncode=0, result=detail)
    return keep


def execute(target: Target, plan: Plan, config_dir: str | None, log: ActionLog,
            acknowledges: Sequence[str] = ()) -> Result:  # fmt: skip
    """Run the plan as one run of the action log (begin .. end; every queue-changing command's
    intent on disk before it runs). delete goes batch by batch: copy, record the copies in the
    backup manifest, delete, record what was deleted; so a run killed at any moment leaves every
    message either queued or copied, and the manifest says which copies were deleted."""
    result = Result()
    spec = SPECS[plan.action]
    log.begin(plan.action, [m.queue_id for m in plan.messages], plan.backup_dir, acknowledges)
    if plan.action == "flush":
        argv = plan.commands[0]
        seq = log.intent("flush", [], argv)
        rc, _, err = _run(target, argv)
        detail = "flushed" if rc == 0 else (_last_line(err) or f"exit {rc}")
        result.outcomes.append(Outcome(argv, rc == 0, detail))
        log.outcome(seq, action="flush", ids=[], argv=argv, returncode=rc, result=detail)
        log.end(result.ok)
        return result
    messages = _recheck(target, plan, config_dir, log, result)
    manifest = None
    if plan.action == "delete" and messages:
        assert plan.backup_dir
        _prepare_backup_dir(plan.backup_dir)
        manifest = Manifest(plan.backup_dir, log.run)
    try:
        done = _postsuper_runs(target, plan, messages, config_dir, log, result, manifest)
    finally:
        if manifest:
            manifest.close()
    if spec.retry_after:
        for m in messages:
            qid = m.queue_id
            argv = postfix_argv("postqueue", config_dir, "-i", qid)
            if qid not in done:  # expire: postsuper -e never ran for it
                result.not_run.append(qid)
                log.write(action=f"{plan.action}:postqueue-i", ids=[qid], argv=argv, returncode=None, result="not run")
                continue
            seq = log.intent(f"{plan.action}:postqueue-i", [qid], argv)
            rc, _, err = _run(target, argv)
            ok = rc == 0
            detail = "scheduled for delivery now" if ok else (_last_line(err) or f"exit {rc}")
            result.outcomes.append(Outcome(argv, ok, detail))
            log.outcome(seq, action=f"{plan.action}:postqueue-i", ids=[qid], argv=argv, returncode=rc, result=detail)
    log.end(result.ok)
    return result


def _postsuper_runs(target: Target, plan: Plan, messages: list[QueuedMessage], config_dir: str | None,
                    log: ActionLog, result: Result, manifest: Manifest | None) -> set[str]:  # fmt: skip
    """The postsuper batches (delete: each copied first); the ids postsuper ran for."""
    spec = SPECS[plan.action]
    done = {m.queue_id for m in messages}
    if not spec.option:
        return done
    by_id = {m.queue_id: m for m in messages}
    batches = postsuper_batches(plan.action, messages)
    for i, (batch, queue) in enumerate(batches):
        if manifest is not None:
            assert plan.backup_dir
            saved = _backup(target, [by_id[q] for q in batch], plan.backup_dir, config_dir, log, result, manifest)
            done -= set(batch) - {m.queue_id for m in saved}
            batch = [m.queue_id for m in saved]
            if not batch:
                continue
        argv = _postsuper_argv(spec, config_dir, batch, queue)
        seq = log.intent(plan.action, batch, argv)
        if manifest is not None:
            manifest.put("deleting", batch, seq=seq)
        rc, _, err = _run(target, argv)
        counted = {k: int(v) for k, v in _COUNT.findall(err)}
        n = counted.get(spec.counted or "", None)
        ok = rc == 0 and n == len(batch)
        if n is None:
            detail = _last_line(err) or f"exit {rc}"
        else:
            detail = f"{spec.counted}: {n} of {len(batch)}"
            if n < len(batch):
                where = f" from the {queue} queue" if queue else ""
                detail += f" ({len(batch) - n} not found{where}: delivered, moved, expired or removed meanwhile)"
                result.not_found.extend(batch)  # postsuper does not say which: listed as a batch
            if rc != 0:
                detail += f"; {_last_line(err)}"
        result.outcomes.append(Outcome(argv, ok, detail))
        log.outcome(seq, action=plan.action, ids=list(batch), argv=argv, returncode=rc, result=detail)
        if manifest is not None:
            if ok:
                manifest.put("deleted", batch)
                result.deleted.extend(batch)
            else:  # which of them went: the ones no longer queued (a listing that fails leaves them "deleting")
                still = _still_queued(target, config_dir, [by_id[q] for q in batch])
                if still is not None:
                    kept = [q for q in batch if q in still]
                    if kept:
                        manifest.put("not-deleted", kept)
                    if len(kept) < len(batch):
                        manifest.put("gone", [q for q in batch if q not in still],
                                     why="postsuper's count fell short: deleted by it, or delivered just before")  # fmt: skip
        if rc is None:  # could not run postsuper at all: stop, and say what was not done
            rest = [q for b, _ in batches[i + 1 :] for q in b]
            result.not_run.extend(rest)
            if rest:
                log.write(action=plan.action, ids=rest, argv=None, returncode=None,
                          result="not run: an earlier postsuper could not be run")  # fmt: skip
            done -= set(batch) | set(rest)
            break
    return done


def default_backup_dir(root: str | None = None, now: float | None = None) -> str:
    """A directory per run: the time, and the process id, so that two runs in the same second
    never share one (a copy is never written over in any case: see _backup_file)."""
    return os.path.join(root or places.backup_dir(), time.strftime("%Y%m%dT%H%M%S", time.localtime(now)) + f"-{os.getpid()}")


# ------------------------------------------------------------------ restore


@dataclass
class Copy:
    """One postcat copy parsed for re-submission: the envelope sender, the recipients not yet
    delivered ("recipient:" records; "done_recipient:" ones were delivered and are left out) and
    the message content (headers and body) as bytes."""

    sender: str
    recipients: list[str]
    content: bytes


_MARK = re.compile(rb"^\*\*\* (ENVELOPE RECORDS|MESSAGE CONTENTS|HEADER EXTRACTED|MESSAGE FILE END) \S+ \*\*\*$", re.M)


def parse_copy(data: bytes) -> Copy:
    """A `postcat -q ID` copy (Postfix >= 2.9 output: a long line's fragments printed joined).
    The content is what lies between the first MESSAGE CONTENTS marker and the last HEADER
    EXTRACTED marker (a message's own text can contain a line that looks like a marker; the
    records around it cannot). InputError when the copy is not whole."""
    marks = list(_MARK.finditer(data))
    contents = next((m for m in marks if m.group(1) == b"MESSAGE CONTENTS"), None)
    extracted = next((m for m in reversed(marks) if m.group(1) == b"HEADER EXTRACTED"), None)
    end = next((m for m in reversed(marks) if m.group(1) == b"MESSAGE FILE END"), None)
    if contents is None or extracted is None or end is None or not contents.end() < extracted.start() < end.start():
        raise InputError("not a whole postcat copy (markers missing)")
    records = data[: contents.start()] + data[extracted.end() : end.start()]
    sender, recipients = None, []
    for line in records.decode("utf-8", "surrogateescape").splitlines():
        name, sep, value = line.partition(": ")
        if not sep and line.endswith(":"):  # "sender:" with an empty value: the null sender
            name, value = line[:-1], ""
        if name == "sender" and sender is None:
            sender = value
        elif name == "recipient":
            recipients.append(value)
    if sender is None:
        raise InputError("no sender record in the copy")
    content = data[contents.end() + 1 : extracted.start()]
    return Copy(sender, recipients, content)


@dataclass
class RestoreItem:
    qid: str
    file: str
    why: str  # "deleted", or the doubt
    copy: Copy | None = None
    argv: list[str] = field(default_factory=list)


@dataclass
class RestorePlan:
    directory: str
    restore: list[RestoreItem] = field(default_factory=list)
    skip: list[tuple[str, str]] = field(default_factory=list)  # (id, why not)


def read_manifest(directory: str) -> dict[str, dict[str, Any]]:
    """id -> {"state", "file", "arrival_time", ...}: the last state recorded for each id."""
    path = os.path.join(directory, MANIFEST)
    if not os.path.isfile(path):
        raise InputError(f"{directory}: no {MANIFEST} (not a pfdiag backup, or made before pfdiag recorded what it "
                         "deleted): it cannot tell deleted copies from copies of mail still queued; nothing restored")  # fmt: skip
    out: dict[str, dict[str, Any]] = {}
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if not isinstance(rec, dict):
                continue
            for qid in rec.get("ids") or []:
                if not isinstance(qid, str) or not is_valid_queue_id(qid):
                    continue
                st = out.setdefault(qid, {})
                if rec.get("state") == "copied":
                    st.update(file=rec.get("file"), arrival_time=rec.get("arrival_time"))
                st["state"] = rec.get("state")
    return out


def _sendmail_argv(config_dir: str | None, copy: Copy) -> list[str]:
    # -G: a relayed copy, not a new submission (headers not rewritten); -i: a lone "." is text;
    # -f: the original envelope sender; "--": recipients that start with "-" stay recipients
    return ["sendmail", *(("-C", config_dir) if config_dir else ()), "-G", "-i", "-f", copy.sender, "--", *copy.recipients]


def restore_plan(target: Target, directory: str, config_dir: str | None, ids: Sequence[str] = ()) -> RestorePlan:
    """The copies to send again: those the manifest records as deleted, and those in doubt
    (a run stopped while deleting them, or postsuper's count fell short) that are not queued
    now. Never one still queued, never one restored already."""
    states = read_manifest(directory)
    wanted = set(ids)
    plan = RestorePlan(directory)
    try:
        queued: dict[str, QueuedMessage] | None = {m.queue_id: m for m in read_queue(target, config_dir).messages}
    except PfdiagError:
        queued = None
    for qid, st in states.items():
        if wanted and qid not in wanted:
            continue
        state = st.get("state")
        file = os.path.join(directory, os.path.basename(str(st.get("file") or f"{qid}.postcat")))
        cur = (queued or {}).get(qid)
        same = cur is not None and isinstance(st.get("arrival_time"), (int, float)) and abs(cur.arrival_time - st["arrival_time"]) <= 1
        if state in ("restored", "restoring"):
            plan.skip.append((qid, "restored already" if state == "restored" else
                              "a restore of it was interrupted: check the queue and the mail log before sending it again"))  # fmt: skip
            continue
        if state in ("copied", "not-deleted"):
            plan.skip.append((qid, "never deleted (a copy of mail that stayed queued)"))
            continue
        if state == "deleted":
            why = "deleted"
        elif state in ("deleting", "gone"):
            if queued is None:
                plan.skip.append((qid, "in doubt and the queue cannot be listed now: not restored"))
                continue
            if same:
                plan.skip.append((qid, "in doubt, but still queued: not deleted"))
                continue
            why = ("in doubt: the run stopped while deleting it, and it is not queued now" if state == "deleting"
                   else "in doubt: postsuper's count fell short and it is not queued now")  # fmt: skip
        else:
            plan.skip.append((qid, f"unknown state {state!r}"))
            continue
        try:
            with open(file, "rb") as fh:
                copy = parse_copy(fh.read(64 << 20))
        except OSError as exc:
            plan.skip.append((qid, f"{file}: {exc.strerror or exc}"))
            continue
        except InputError as exc:
            plan.skip.append((qid, f"{file}: {exc}"))
            continue
        if not copy.recipients:
            plan.skip.append((qid, "every recipient was delivered already"))
            continue
        plan.restore.append(RestoreItem(qid, file, why, copy, _sendmail_argv(config_dir, copy)))
    return plan


def execute_restore(target: Target, plan: RestorePlan, log: ActionLog, acknowledges: Sequence[str] = ()) -> Result:
    """Each copy handed to sendmail, with "restoring" then "restored" in the manifest (a second
    restore never sends a message twice) and in the action log."""
    result = Result()
    feed = getattr(target, "run_with_input", None)
    if not callable(feed):
        raise UsageError("restore re-submits mail on this machine: it cannot run on this target")
    log.begin("restore", [i.qid for i in plan.restore], plan.directory, acknowledges)
    manifest = Manifest(plan.directory, log.run)
    try:
        for item in plan.restore:
            assert item.copy is not None
            seq = log.intent("restore", [item.qid], item.argv)
            manifest.put("restoring", [item.qid], seq=seq)
            try:
                res = feed(item.argv, item.copy.content, timeout=COMMAND_TIMEOUT)
                rc, err = res.returncode, res.stderr
            except PfdiagError as exc:
                rc, err = None, str(exc)
            ok = rc == 0
            detail = f"sent again to {len(item.copy.recipients)} recipient(s)" if ok else (_last_line(err) or f"exit {rc}")
            result.outcomes.append(Outcome(item.argv, ok, detail))
            log.outcome(seq, action="restore", ids=[item.qid], argv=item.argv, returncode=rc, result=detail)
            manifest.put("restored" if ok else "deleted", [item.qid])  # a failed one stays to restore
    finally:
        manifest.close()
    log.end(result.ok)
    return result


def render_restore_plan(plan: RestorePlan) -> str:
    lines = [f"pfdiag queue restore {plan.directory}: re-submit copies of deleted mail with sendmail -G "
             "(original envelope sender and the recipients not yet delivered; a new queue id)"]  # fmt: skip
    lines.append(f"{len(plan.restore)} message(s) to send again:")
    for i in plan.restore[:200]:
        assert i.copy is not None
        rc = ", ".join(i.copy.recipients[:3]) + (" ..." if len(i.copy.recipients) > 3 else "")
        lines.append(f"  {i.qid:<17} {i.copy.sender or '<>'} -> {rc}  ({i.why})")
    if len(plan.restore) > 200:
        lines.append(f"  ... {len(plan.restore) - 200} more")
    if plan.skip:
        lines.append(f"{len(plan.skip)} copy(ies) not sent:")
        lines += [f"  {q:<17} {why}" for q, why in plan.skip[:200]]
    if any(i.why != "deleted" for i in plan.restore):
        lines.append("note: a message 'in doubt' may have been delivered just before the delete; "
                     "grep its queue id in the mail log (status=sent) to be sure before sending it again")  # fmt: skip
    return "\n".join(lines) + "\n"


def run_restore(args: Any, target: Target) -> int:
    """pfdiag queue restore BACKUP_DIR [--id ID] [--dry-run | --yes]."""
    if not args.path:
        raise UsageError("restore: say which backup directory: pfdiag queue restore BACKUP_DIR")
    if args.cause or args.domain or args.queue or args.all_deferred:
        raise UsageError("restore takes --id only: the copies in the directory are not queued")
    for qid in args.id:
        if not is_valid_queue_id(qid):
            raise UsageError(f"{qid!r} is not a Postfix queue id")
    if args.yes and args.dry_run:
        raise UsageError("--yes and --dry-run contradict each other")
    acks = warn_interrupted(args.action_log)
    plan = restore_plan(target, args.path, args.config_dir, args.id)
    out = sys.stderr if args.format == "json" else sys.stdout
    print(render_restore_plan(plan), end="", file=out)
    interactive = sys.stdin.isatty()
    dry = args.dry_run or (not interactive and not args.yes)
    doc: dict[str, Any] = {"schema": "pfdiag.queue-restore/1", "backup_dir": plan.directory, "dry_run": True,
                           "restore": [{"queue_id": i.qid, "why": i.why, "argv": i.argv} for i in plan.restore],
                           "skipped": [{"queue_id": q, "why": w} for q, w in plan.skip], "result": None}  # fmt: skip
    if not plan.restore:
        print("nothing to restore", file=out)
    elif not confirm(f"Send these {len(plan.restore)} message(s) again?", yes=args.yes, dry_run=dry, interactive=interactive):
        why = "dry run" if args.dry_run else ("no terminal to confirm on and no --yes" if not interactive else "not confirmed")
        print(f"nothing was sent ({why})", file=out)
    else:
        check_writable(args.action_log)
        log = ActionLog(args.action_log)
        try:
            result = execute_restore(target, plan, log, acks)
        finally:
            log.close()
        doc["dry_run"] = False
        doc["result"] = {"ok": result.ok, "outcomes": [{"argv": o.argv, "ok": o.ok, "detail": o.detail} for o in result.outcomes]}
        for o in result.outcomes:
            print(f"  {'ok ' if o.ok else 'FAIL'} {' '.join(o.argv)}: {o.detail}", file=out)
        print(f"logged to {args.action_log}", file=out)
        if not result.ok:
            if args.format == "json":
                print(json.dumps(doc, indent=2))
            raise InputError(f"restore: some messages could not be sent again (see above and {args.action_log})")
    if args.format == "json":
        print(json.dumps(doc, indent=2))
    return 0


def run_log(args: Any) -> int:
    """pfdiag queue log: the runs recorded in the action log, interrupted ones first."""
    path = args.action_log
    if not os.path.isfile(path):
        raise InputError(f"{path}: no action log there (nothing recorded yet, or see --action-log)")
    broken = interrupted_runs(path, include_acknowledged=True)
    runs: list[dict[str, Any]] = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and rec.get("phase") == "start":
                runs.append({"run": rec.get("run"), "time": rec.get("time"), "action": rec.get("action"),
                             "messages": len(rec.get("ids") or []), "backup_dir": rec.get("backup_dir")})  # fmt: skip
                runs = runs[-50:]
    if args.format == "json":
        print(json.dumps({"schema": "pfdiag.queue-log/1", "path": path, "recent_runs": runs,
                          "interrupted": [{"run": r.run, "time": r.time, "action": r.action, "in_doubt": r.in_doubt,
                                           "backup_dir": r.backup_dir, "acknowledged": r.acknowledged}
                                          for r in broken]}, indent=2))  # fmt: skip
        return 0
    print(f"Action log {path}: {len(runs)} recent run(s), {len(broken)} interrupted")
    for r in broken:
        print(f"  {r.line(path)}{' (shown before a later run)' if r.acknowledged else ''}")
    for run in runs:
        print(f"  {run['time']}  {run['run']}  {run['action']:<8} {run['messages']} message(s)"
              + (f"  backup {run['backup_dir']}" if run["backup_dir"] else ""))  # fmt: skip
    return 0


MORE = ("restore", "log")  # `pfdiag queue` commands besides the actions of SPECS


def run_more(args: Any, target: Target) -> int:
    if args.action == "log":
        if not (Selection(args.id, args.cause, args.domain, args.queue, args.all_deferred).empty and not args.yes):
            raise UsageError("log takes no selectors")
        return run_log(args)
    from checks.targets import LocalTarget

    if not isinstance(target, LocalTarget):
        raise UsageError("restore re-submits mail on this machine: it cannot run on a snapshot or over SSH")
    return run_restore(args, target)
