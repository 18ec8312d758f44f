"""Guarded queue actions: hold, release, requeue, retry, expire, delete (with backup), flush.

Safety rules, in order:
  * ids come from the current queue listing through selectors, or from --id, and every id
    is checked with is_valid_queue_id before it reaches an argv (argv lists only, no shell);
  * a plan (messages + exact argv) is shown first; nothing runs without an interactive
    "yes" or --yes, and a dry run is the default when stdin is not a terminal;
  * Postfix must be running (`master -t` exits 0 when it is NOT): otherwise nothing runs;
  * delete saves every message with `postcat -q ID` first and deletes only the ids it saved;
  * every command's result is checked (postsuper's "Deleted: N messages" must match: 0 for an
    id means "not found", not success) and appended to a JSON-lines action log.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from checks.config import postfix_argv
from checks.errors import CommandNotFound, InputError, UsageError
from checks.postfix.postqueue import QueuedMessage, is_valid_queue_id
from checks.queue import domain_of
from checks.targets import Target

DEFAULT_BACKUP_ROOT = "/var/lib/pfdiag/backup"
DEFAULT_ACTION_LOG = "/var/log/pfdiag/actions.log"
BATCH = 100  # ids per postsuper call: argv stays far below ARG_MAX


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
        for batch in _batches(ids):
            args = [a for qid in batch for a in (spec.option, qid)]
            plan.commands.append(postfix_argv("postsuper", config_dir, *args))
    if spec.retry_after:
        for qid in ids:
            plan.commands.append(postfix_argv("postqueue", config_dir, "-i", qid))
    return plan


# ------------------------------------------------------------------ confirmation


def confirm(prompt: str, *, yes: bool, dry_run: bool, interactive: bool,
            ask: Callable[[str], str] = input) -> bool:  # fmt: skip
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
        self._fh.write(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **record}, ensure_ascii=False) + "\n")
        self._fh.flush()

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

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes) and not self.skipped and not self.not_found


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _backup(target: Target, plan: Plan, config_dir: str | None, log: ActionLog, result: Result) -> list[QueuedMessage]:
    assert plan.backup_dir
    try:
        os.makedirs(plan.backup_dir, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{plan.backup_dir}: cannot create the backup directory ({exc.strerror}); nothing was deleted") from exc
    keep = []
    for m in plan.messages:
        argv = postfix_argv("postcat", config_dir, "-q", m.queue_id)
        res = target.run(argv, timeout=120)
        ok = res.returncode == 0 and "*** MESSAGE CONTENTS" in res.stdout
        if ok:
            path = os.path.join(plan.backup_dir, f"{m.queue_id}.postcat")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(res.stdout)
            result.saved[m.queue_id] = path
            keep.append(m)
            detail = f"saved to {path}"
        else:
            result.skipped.append(m.queue_id)
            detail = f"not saved ({_last_line(res.stderr) or 'no message contents'}): will not delete it"
        result.outcomes.append(Outcome(argv, ok, detail))
        log.write(action="backup", ids=[m.queue_id], argv=argv, returncode=res.returncode, result=detail)
    return keep


def execute(target: Target, plan: Plan, config_dir: str | None, log: ActionLog) -> Result:
    result = Result()
    spec = SPECS[plan.action]
    if plan.action == "flush":
        argv = plan.commands[0]
        res = target.run(argv)
        detail = "flushed" if res.returncode == 0 else (_last_line(res.stderr) or f"exit {res.returncode}")
        result.outcomes.append(Outcome(argv, res.returncode == 0, detail))
        log.write(action="flush", ids=[], argv=argv, returncode=res.returncode, result=detail)
        return result
    messages = plan.messages
    if plan.action == "delete":
        messages = _backup(target, plan, config_dir, log, result)
    ids = [m.queue_id for m in messages]
    if spec.option:
        for batch in _batches(ids):
            argv = postfix_argv("postsuper", config_dir, *[a for q in batch for a in (spec.option, q)])
            res = target.run(argv, timeout=120)
            counted = {k: int(v) for k, v in _COUNT.findall(res.stderr)}
            n = counted.get(spec.counted or "", None)
            ok = res.returncode == 0 and n == len(batch)
            if n is None:
                detail = _last_line(res.stderr) or f"exit {res.returncode}"
            else:
                detail = f"{spec.counted}: {n} of {len(batch)}"
                if n < len(batch):
                    detail += f" ({len(batch) - n} not found: delivered, expired or removed meanwhile)"
                    result.not_found.extend(batch)  # postsuper does not say which: listed as a batch
                if res.returncode != 0:
                    detail += f"; {_last_line(res.stderr)}"
            result.outcomes.append(Outcome(argv, ok, detail))
            log.write(action=plan.action, ids=list(batch), argv=argv, returncode=res.returncode, result=detail)
    if spec.retry_after:
        for qid in ids:
            argv = postfix_argv("postqueue", config_dir, "-i", qid)
            res = target.run(argv)
            ok = res.returncode == 0
            detail = "scheduled for delivery now" if ok else (_last_line(res.stderr) or f"exit {res.returncode}")
            result.outcomes.append(Outcome(argv, ok, detail))
            log.write(action=f"{plan.action}:postqueue-i", ids=[qid], argv=argv, returncode=res.returncode, result=detail)
    return result


def default_backup_dir(root: str = DEFAULT_BACKUP_ROOT, now: float | None = None) -> str:
    return os.path.join(root, time.strftime("%Y%m%dT%H%M%S", time.localtime(now)))
