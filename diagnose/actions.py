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

import json
import os
import re
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Sequence

from checks.config import postfix_argv
from checks.errors import CommandNotFound, InputError, PfdiagError, UsageError
from checks.postfix.postqueue import QueuedMessage, is_valid_queue_id
from checks.queue import domain_of, read_queue
from checks.targets import Target

DEFAULT_BACKUP_ROOT = "/var/lib/pfdiag/backup"
DEFAULT_ACTION_LOG = "/var/log/pfdiag/actions.log"
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


@dataclass
class Selection:
    ids: list[str] = field(default_factory=list)
    cause: str | None = None
    domain: str | None = None
    queue: str | None = None
    all_deferred: bool = False

    @property
    def empty(self) -> bool:
        return not (self.ids or self.cause or self.domain or self.queue or self.all_deferred)


def select(
    messages: Sequence[QueuedMessage], sel: Selection, cause_of: Callable[[str], str]
) -> tuple[list[QueuedMessage], list[str]]:
    """(messages matching every given selector, ids given with --id that are not queued)."""
    for qid in sel.ids:
        if not is_valid_queue_id(qid):
            raise UsageError(f"{qid!r} is not a Postfix queue id (hex like 2984816E715, or a long id like 4PbC4x469Jz3tBr)")
    wanted = set(sel.ids)
    out = []
    for m in messages:
        if wanted and m.queue_id not in wanted:
            continue
        if sel.all_deferred and m.queue_name != "deferred":
            continue
        if sel.queue and m.queue_name != sel.queue:
            continue
        rcpts = m.recipients
        if sel.domain:
            d = sel.domain.lower().strip(".")
            if not any(domain_of(r.address) == d or domain_of(r.address).endswith("." + d) for r in rcpts):
                continue
        if sel.cause:
            causes = {cause_of(r.delay_reason) for r in rcpts if r.delay_reason}
            if sel.cause.upper() not in {c.upper() for c in causes}:
                continue
        out.append(m)
    found = {m.queue_id for m in messages}
    return out, [q for q in sel.ids if q not in found]


@dataclass
class Plan:
    action: str
    messages: list[QueuedMessage]
    commands: list[list[str]]
    backup_dir: str | None = None
    warnings: list[str] = field(default_factory=list)


def _batches(ids: Sequence[str], size: int = BATCH) -> Iterable[Sequence[str]]:
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


class ActionLog:
    """JSON lines: one record per command run. Opened before anything runs, so an unwritable
    log stops the action instead of leaving changes unrecorded."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            os.makedirs(os.path.dirname(path) or ".", mode=0o750, exist_ok=True)
            self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()
        except OSError as exc:
            raise InputError(f"{path}: cannot write the action log ({exc.strerror or exc}); use --action-log FILE") from exc

    def write(self, **record: object) -> None:
        """One record, flushed; a log that stops taking records (a full disk) stops the action
        with one line instead of letting it go on unrecorded."""
        line = json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **record}, ensure_ascii=False) + "\n"
        try:
            self._fh.write(line)
            self._fh.flush()
        except OSError as exc:
            raise InputError(f"{self.path}: cannot write the action log ({exc.strerror or exc}); stopped after: {record.get('argv')}") from exc

    def close(self) -> None:
        self._fh.close()


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


def _backup(target: Target, plan: Plan, config_dir: str | None, log: ActionLog, result: Result) -> list[QueuedMessage]:
    assert plan.backup_dir
    try:
        os.makedirs(plan.backup_dir, mode=0o700, exist_ok=True)
        if not os.path.isdir(plan.backup_dir) or not os.access(plan.backup_dir, os.W_OK | os.X_OK):
            raise PermissionError(13, "not a writable directory")
    except OSError as exc:
        raise InputError(f"{plan.backup_dir}: cannot create the backup directory ({exc.strerror or exc}); nothing was deleted") from exc
    keep = []
    for m in plan.messages:
        argv = postfix_argv("postcat", config_dir, "-q", m.queue_id)
        rc, path, why = _save_one(target, argv, plan.backup_dir, m.queue_id)
        if path:
            result.saved[m.queue_id] = path
            keep.append(m)
            detail = f"saved to {path}"
        else:
            result.skipped.append(m.queue_id)
            detail = f"not saved ({why}): will not delete it"
        result.outcomes.append(Outcome(argv, path is not None, detail))
        log.write(action="backup", ids=[m.queue_id], argv=argv, returncode=rc, result=detail)
    if keep:  # the new directory entries on disk too
        try:
            dfd = os.open(plan.backup_dir, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass
    return keep


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


def execute(target: Target, plan: Plan, config_dir: str | None, log: ActionLog) -> Result:
    result = Result()
    spec = SPECS[plan.action]
    if plan.action == "flush":
        argv = plan.commands[0]
        rc, _, err = _run(target, argv)
        detail = "flushed" if rc == 0 else (_last_line(err) or f"exit {rc}")
        result.outcomes.append(Outcome(argv, rc == 0, detail))
        log.write(action="flush", ids=[], argv=argv, returncode=rc, result=detail)
        return result
    messages = _recheck(target, plan, config_dir, log, result)
    if plan.action == "delete" and messages:
        messages = _backup(target, replace(plan, messages=messages), config_dir, log, result)
    done = {m.queue_id for m in messages}
    if spec.option:
        batches = postsuper_batches(plan.action, messages)
        for i, (batch, queue) in enumerate(batches):
            argv = _postsuper_argv(spec, config_dir, batch, queue)
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
            log.write(action=plan.action, ids=list(batch), argv=argv, returncode=rc, result=detail)
            if rc is None:  # could not run postsuper at all: stop, and say what was not done
                rest = [q for b, _ in batches[i + 1 :] for q in b]
                result.not_run.extend(rest)
                if rest:
                    log.write(action=plan.action, ids=rest, argv=None, returncode=None,
                              result="not run: an earlier postsuper could not be run")  # fmt: skip
                done -= set(batch) | set(rest)
                break
    if spec.retry_after:
        for m in messages:
            qid = m.queue_id
            argv = postfix_argv("postqueue", config_dir, "-i", qid)
            if qid not in done:  # expire: postsuper -e never ran for it
                result.not_run.append(qid)
                log.write(action=f"{plan.action}:postqueue-i", ids=[qid], argv=argv, returncode=None, result="not run")
                continue
            rc, _, err = _run(target, argv)
            ok = rc == 0
            detail = "scheduled for delivery now" if ok else (_last_line(err) or f"exit {rc}")
            result.outcomes.append(Outcome(argv, ok, detail))
            log.write(action=f"{plan.action}:postqueue-i", ids=[qid], argv=argv, returncode=rc, result=detail)
    return result


def default_backup_dir(root: str = DEFAULT_BACKUP_ROOT, now: float | None = None) -> str:
    """A directory per run: the time, and the process id, so that two runs in the same second
    never share one (a copy is never written over in any case: see _backup_file)."""
    return os.path.join(root, time.strftime("%Y%m%dT%H%M%S", time.localtime(now)) + f"-{os.getpid()}")
