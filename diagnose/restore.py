"""Putting deleted mail back: a delete keeps a `postcat -q` copy of each message and a manifest
of what was really deleted; `pfdiag queue restore DIR` re-submits only those (dry run first), and
`pfdiag queue log` lists the action log's runs."""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Sequence

from checks.errors import InputError, PfdiagError, UsageError
from checks.postfix.postqueue import QueuedMessage, is_valid_queue_id
from checks.queue import read_queue
from checks.targets import Target
from diagnose.actionlog import ActionLog, check_writable, interrupted_runs, json_records, warn_interrupted
from diagnose.actions import COMMAND_TIMEOUT, MANIFEST, Manifest, Outcome, Result, Selection, _last_line, confirm


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
    for rec in json_records(path):
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
    if not target.can_change:
        raise UsageError(f"restore re-submits mail to a live Postfix: it cannot run on {target.where}")
    feed = target.run_with_input
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
    for rec in json_records(path):
        if rec.get("phase") == "start":
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
    if not target.can_change:
        raise UsageError(f"restore re-submits mail to a live Postfix: it cannot run on {target.where}")
    return run_restore(args, target)
