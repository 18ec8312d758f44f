"""The queue actions of `pfdiag queue ACTION`, before and after diagnose/actions.py runs them:
checking the selectors, choosing the messages from a fresh listing, and the plan and its
result as text and as JSON (schema pfdiag.queue-action/1). diagnose/actions.py plans and
executes; the command (diagnose/commands/queue.py) asks and prints."""

from __future__ import annotations

import sys
from typing import Any

from checks.config import read_config
from checks.errors import InputError, UsageError
from checks.postfix.postqueue import QueuedMessage
from checks.queue import read_queue
from checks.targets import Target
from diagnose import actions as act
from diagnose.queuereport import cause_of
from diagnose.textsafe import visible

PLAN_SHOWN = 200  # messages listed in a plan's text


def check(action: str, sel: act.Selection, *, yes: bool, dry_run: bool) -> None:
    """The selectors and flags make sense for the action (UsageError otherwise), before
    anything touches the target: every --id is a valid queue id."""
    for qid in sel.ids:
        act.select([], act.Selection(ids=[qid]), cause_of)
    if action == "flush":
        if not sel.empty:
            raise UsageError("flush takes no selectors: it retries every queued message (use retry --id/--domain instead)")
    elif sel.empty:
        raise UsageError(f"{action}: say which messages (--id, --cause, --domain, --queue or --all-deferred)")
    if yes and dry_run:
        raise UsageError("--yes and --dry-run contradict each other")


def choose(target: Target, action: str, sel: act.Selection, config_dir: str | None) -> tuple[list[QueuedMessage], list[str]]:
    """The messages the action applies to, from a listing taken now, and the --id values not
    found (said on stderr when others were). Only on a live local Postfix that is running;
    nothing chosen is an InputError: nothing was changed."""
    if not target.can_change:
        raise UsageError(f"queue actions change a live Postfix: they cannot run on {target.where}")
    cfg = read_config(target, config_dir)
    act.ensure_running(target, config_dir, cfg.daemon_directory)
    read = read_queue(target, config_dir)
    missing: list[str] = []
    if action == "flush":
        return list(read.messages), missing
    chosen, missing = act.select(read.messages, sel, cause_of)
    if missing and chosen:
        print(visible(f"pfdiag: not found in the queue (delivered, expired or removed?): {', '.join(missing)}"), file=sys.stderr)
    if not chosen:
        if missing and len(missing) == len(sel.ids):
            raise InputError(f"queue id(s) not found: {', '.join(missing)}; nothing was changed")
        raise InputError(f"{action}: no queued message matches the selectors; nothing was changed")
    return chosen, missing


def failure(action: str, result: act.Result, log_path: str) -> str | None:
    """What went wrong in an executed plan, as the one-line error the command exits with."""
    if result.skipped:
        return f"not deleted because the backup failed: {', '.join(result.skipped)}"
    if result.not_found:
        return f"{action}: some messages were not found when the command ran ({', '.join(result.not_found)})"
    if result.not_run:
        return f"{action}: stopped before reaching {', '.join(result.not_run)} (see {log_path})"
    if not result.ok:
        return f"{action}: a command failed (see above and {log_path})"
    return None


def render_plan(plan: act.Plan) -> str:
    spec = act.SPECS[plan.action]
    lines = [f"pfdiag queue {plan.action}: {spec.help}"]
    if plan.action != "flush":
        lines.append(f"{len(plan.messages)} message(s):")
        for m in plan.messages[:PLAN_SHOWN]:
            rc = ", ".join(r.address for r in m.recipients[:3]) + (" ..." if len(m.recipients) > 3 else "")
            lines.append(f"  {m.queue_id:<17} {m.queue_name:<9} {m.sender or '<>'} -> {rc}")
        if len(plan.messages) > PLAN_SHOWN:
            lines.append(f"  ... {len(plan.messages) - PLAN_SHOWN} more")
    else:
        lines.append(f"{len(plan.messages)} queued message(s) will be tried at once")
    if plan.backup_dir:
        lines.append(f"backup first (postcat -q), into {plan.backup_dir}; an id that cannot be saved is not deleted")
    lines.append("commands:")
    lines += [f"  {' '.join(c)}" for c in plan.commands]
    lines += [f"warning: {w}" for w in plan.warnings]
    return "\n".join(map(visible, lines)) + "\n"  # senders and recipients are outside text (textsafe)


def render_result(result: act.Result, plan: act.Plan, log_path: str) -> str:
    lines = [f"  {'ok ' if o.ok else 'FAIL'} {' '.join(o.argv)}: {o.detail}" for o in result.outcomes]
    if result.saved:
        lines.append(f"backups: {len(result.saved)} message(s) in {plan.backup_dir}")
    lines.append(f"logged to {log_path}")
    return "\n".join(map(visible, lines)) + "\n"


def plan_dict(plan: act.Plan, result: act.Result | None, *, dry: bool) -> dict[str, Any]:
    return {
        "schema": "pfdiag.queue-action/1", "action": plan.action, "dry_run": dry,
        "ids": [m.queue_id for m in plan.messages], "commands": plan.commands, "backup_dir": plan.backup_dir,
        "warnings": plan.warnings,
        "result": None if result is None else {
            "ok": result.ok, "saved": result.saved, "not_found": result.not_found, "skipped": result.skipped,
            "not_run": result.not_run,
            "outcomes": [{"argv": o.argv, "ok": o.ok, "detail": o.detail} for o in result.outcomes],
        },
    }  # fmt: skip
