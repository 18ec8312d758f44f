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
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from checks import places
from checks.config import postfix_argv
from checks.errors import CommandNotFound, InputError, PfdiagError, UsageError
from checks.postfix.postqueue import QueuedMessage, is_valid_queue_id
from checks.queue import domain_of, read_queue
from checks.targets import Target
from diagnose.actionlog import (  # noqa: F401 - re-exported: the action log's names
    ActionLog, Interrupted, _ends_torn, check_writable, interrupted_runs, run_id, warn_interrupted,
)

BATCH = 100  # ids per postsuper call: argv stays far below ARG_MAX
PLAN_WIDTH = 80  # columns of a printed plan (the queue command's dry run, the wizard's)
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


def plan_lines(items: Iterable[str], width: int = PLAN_WIDTH, hang: int = 4) -> list[str]:
    """The items of a printed plan (one line each, however long: a message, a command with its ids)
    at ``width`` columns: an item's wrapped lines hang ``hang`` columns further in than its first,
    never again at the margin. Words are not split (a queue id, an address, a path stays whole)."""
    import textwrap

    out: list[str] = []
    for item in items:
        lead = len(item) - len(item.lstrip(" "))
        if len(item) <= width:
            out.append(item)
            continue
        out += textwrap.wrap(item[lead:], width, initial_indent=" " * lead, subsequent_indent=" " * (lead + hang),
                             break_long_words=False, break_on_hyphens=False) or [item]  # fmt: skip
    return out


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
    try:  # the target's own byte-exact copy (the base's default refuses a copy it cannot make exact)
        res = target.run_into(argv, fh, timeout=COMMAND_TIMEOUT)  # type: ignore[arg-type]
    except PfdiagError as exc:
        return None, str(exc)
    return res.returncode, res.stderr


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
