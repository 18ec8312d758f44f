"""pfdiag queue: what is in the mail queue, why, and when it will be tried again; and the
guarded queue actions (hold, release, requeue, retry, expire, delete, flush).

Glue: the report is diagnose/queuereport.py's, the actions diagnose/queueselect.py's and
diagnose/actions.py's."""

from __future__ import annotations

ORDER = 20  # place in pfdiag --help

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any, Callable

from checks import places
from checks.errors import InputError, UsageError
from diagnose.commands import LazyModule
from diagnose.target_options import add_target_options, open_target
from diagnose.textsafe import visible_lines

if TYPE_CHECKING:
    from checks.postfix.postqueue import QueuedMessage
    from checks.targets import Target
    from diagnose import actions as act
    from diagnose import queueselect, restore
else:  # the queue actions and the report load when they run: `pfdiag queue --help` stays light
    act, queueselect, restore = (LazyModule(f"diagnose.{m}") for m in ("actions", "queueselect", "restore"))

# For the parser, without importing the modules they come from (tests/unit/test_imports_lazy.py keeps them
# equal): the queues, the actions (*actions.SPECS, *restore.MORE) and queueselect.JOIN_CAP in days.
QUEUE_NAMES = ("maildrop", "incoming", "active", "deferred", "hold")  # checks.postfix.postqueue.QUEUE_NAMES
ACTIONS = ("hold", "release", "requeue", "retry", "expire", "delete", "flush", "restore", "log")
JOIN_CAP_DAYS = 7

__all__ = ["add_parser", "run"]
SELECTORS = ("id", "cause", "domain", "queue", "all_deferred", "sender", "recipient", "older_than", "younger_than",
             "min_size", "max_size", "reason", "sasl_user", "client")  # fmt: skip

HELP = """\
Lists the Postfix queue: messages per queue, a qshape-style age x domain table,
deferred recipients grouped by cause and destination, the oldest message, and per
deferred message when it is tried next and when it is returned to its sender.

Actions change the queue. They show the exact messages and commands first and run
nothing without a "yes" on a terminal or --yes (without a terminal: a dry run).
Prefer the gentle ones:
  hold     before delete   (held mail is kept and can be released)
  retry    before flush    (postqueue -i ID tries one message; -f forgets dead sites)

Selectors choose the messages of an action, or narrow the report to them; every one
given must match (AND). An action always acts on whole messages, even when selected
by one of their recipients (the plan warns when they have others).

examples:
  pfdiag queue                                     the report (each deferred message's fate)
  pfdiag queue --format json                       (schema: docs/queue-json.md)
  pfdiag queue hold --cause E09                    hold everything deferred for one cause
  pfdiag queue retry --domain example.com --yes    try one destination's mail now
  pfdiag queue delete --id 2984816E715             delete, after a postcat backup
  pfdiag queue hold --sender bob@example.com       a compromised account's mail (plan first)
  pfdiag queue hold --sender @spam.example         every sender of one domain; --sender '<>': bounces
  pfdiag queue --recipient @gmail.com              the report over mail to one domain only
  pfdiag queue expire --older-than 3d              returned to sender: queued more than 3 days
  pfdiag queue --younger-than 30m                  what arrived in the last half hour
  pfdiag queue hold --min-size 5M                  big messages (bytes, 500k, 5M)
  pfdiag queue --max-size 20k --queue deferred     small deferred messages
  pfdiag queue delete --reason 'spamhaus|blocked'  delay reason matches (regex, any case)
  pfdiag queue hold --sasl-user bob                submitted with that SASL login (from the log)
  pfdiag queue hold --client 192.0.2.7             submitted from that IP or network (from the log)
  pfdiag queue hold --client 10.0.0.0/8 --since 2d   ... reading the log of the last 2 days
  pfdiag queue hold --sasl-user=bob@example.com --dry-run   what pfdiag report's outbreak triage
                                                   suggests: plan and counts, nothing changed
  pfdiag queue release --sasl-user=bob@example.com --yes   ... and back, once the account is safe
(--sasl-user/--client follow a message requeued with postsuper -r to its first queue id)
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("queue", help="the mail queue: shape, causes, forecasts; safe queue actions",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("action", nargs="?", choices=ACTIONS, metavar="ACTION",
                   help="hold | release | requeue | retry | expire | delete | flush (none: report); "
                        "restore BACKUP_DIR: send deleted mail again; log: the action log's runs")  # fmt: skip
    p.add_argument("path", nargs="?", metavar="BACKUP_DIR", help="restore: a backup directory of delete")
    p.add_argument("--by", choices=("recipient", "sender"), default="recipient", help="domains of the age table")
    p.add_argument("--shape-queues", default="all", metavar="Q,Q",
                   help="queues in the age table (default all; qshape's own default is incoming,active)")
    p.add_argument("--top", type=int, default=20, metavar="N", help="domains shown in the age table (default 20)")
    p.add_argument("-f", "--format", choices=("text", "md", "json"), default="text")
    p.add_argument("-c", "--config-dir", metavar="DIR", help="Postfix configuration directory (postqueue -c DIR)")
    g = p.add_argument_group("selecting messages for an action (all given must match)")
    g.add_argument("--id", action="append", default=[], metavar="ID", help="a queue id (repeatable)")
    g.add_argument("--cause", metavar="EXX", help="deferred for this cause (e.g. E09)")
    g.add_argument("--domain", metavar="DOMAIN", help="a recipient in this domain (or a subdomain)")
    g.add_argument("--queue", choices=QUEUE_NAMES, help="messages in this queue")
    g.add_argument("--all-deferred", action="store_true", help="every deferred message")
    g.add_argument("--sender", metavar="ADDR|@DOMAIN", help="from this address, or any in this domain (<>: bounces)")
    g.add_argument("--recipient", metavar="ADDR|@DOMAIN", help="a recipient is this address, or in this domain")
    g.add_argument("--older-than", metavar="AGE", help="queued longer than AGE (30m, 2h, 3d)")
    g.add_argument("--younger-than", metavar="AGE", help="queued less than AGE")
    g.add_argument("--min-size", metavar="SIZE", help="at least SIZE (bytes, 500k, 1M)")
    g.add_argument("--max-size", metavar="SIZE", help="at most SIZE")
    g.add_argument("--reason", metavar="REGEX", help="a delay reason matches REGEX (case-insensitive)")
    g.add_argument("--sasl-user", metavar="LOGIN", help="submitted with this SASL login (smtpd's log line)")
    g.add_argument("--client", metavar="IP", help="submitted from this IP address or network (smtpd's log line)")
    g.add_argument("--since", metavar="T", help="--sasl-user/--client: read the log from T (24h, 7d, ISO time; "
                   f"default: the oldest selected message's arrival, at most {JOIN_CAP_DAYS} days back)")
    g = p.add_argument_group("running an action")
    g.add_argument("--dry-run", action="store_true", help="show what would run, change nothing")
    g.add_argument("--yes", action="store_true", help="run without asking")
    g.add_argument("--backup-dir", metavar="DIR", help=f"delete: where postcat copies go (default {places.backup_dir()}/<time>/)")
    g.add_argument("--action-log", metavar="FILE", default=places.action_log(), help="JSON-lines log of what ran (default %(default)s)")
    add_target_options(p)
    p.set_defaults(func=run)


def __getattr__(name: str) -> Any:
    """render_md and render_text, for scripts and tests: from diagnose.queuereport, loaded on use."""
    if name in ("render_md", "render_text"):
        from diagnose import queuereport

        return getattr(queuereport, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run(args: argparse.Namespace) -> int:
    from diagnose.queuereport import TEXT_SHOWN, queue_report, render_md, render_text

    if args.top < 1:
        raise UsageError("--top must be at least 1")
    sel = queueselect.selection(args)  # a malformed selector is said before anything is opened
    target, notice = open_target(args)
    if notice and args.format != "json":
        print(visible_lines(notice), file=sys.stderr)
    if args.path and args.action != "restore":
        raise UsageError(f"unexpected argument {args.path!r} (only restore takes a directory)")
    if args.action in restore.MORE:
        return restore.run_more(args, target)
    if args.action:
        return run_action(args, target, sel)
    act.warn_interrupted(args.action_log)
    if args.yes or args.dry_run:
        raise UsageError("--yes and --dry-run go with an action: pfdiag queue hold --id ID (see --help)")
    queueselect.check("", sel, yes=False, dry_run=False)
    keep, said = _listing_filter(args, target, sel)
    # Some 10 containers per message, none in a cycle: the collector would only walk them
    # again and again while the report grows (a few % of the run on a big queue).
    import gc

    # Until the report is written: re-enabled earlier, it would walk all of it once more.
    gc.disable()
    try:
        shape = None if args.shape_queues == "all" else [q.strip() for q in args.shape_queues.split(",") if q.strip()]
        # text: what it shows only (counts, table, groups, the oldest entries), as qshape prints a summary;
        # md: its rows of the deferred messages, not their entries; json: every message's entry
        shown = max(TEXT_SHOWN, queueselect.OTHER_SHOWN) if args.format == "text" else None
        report, builder = queue_report(target, args.config_dir, by=args.by, top=args.top, shape_queues=shape,
                                       encode=True, keep=keep, said=said, shown=shown, md=args.format == "md")  # fmt: skip
        # a big queue's entries are sorted runs of JSON in temporary files (bounded memory), streamed out
        if args.format == "json":
            builder.write_json(report, sys.stdout)
            sys.stdout.write("\n")
        elif args.format == "md":
            sys.stdout.write(render_md(report))
        else:
            sys.stdout.write(queueselect.with_other_fates(render_text(report), report))
    finally:
        gc.enable()
    return 0


def _since(args: argparse.Namespace, sel: act.Selection) -> float | None:
    from diagnose.timespec import parse_when

    if args.since and not sel.needs_log:
        raise UsageError("--since goes with --sasl-user or --client (the log they read)")
    return parse_when(args.since) if args.since else None


def _listing_filter(args: argparse.Namespace, target: Target, sel: act.Selection
                    ) -> tuple[Callable[[QueuedMessage, float], bool] | None, str]:  # fmt: skip
    """The report's filter for the selectors given (None: all), and how they read. With
    --sasl-user/--client the queue is listed once first and the log joined to it."""
    from checks.queue import read_queue
    from diagnose.queuereport import cause_of

    since = _since(args, sel)
    if sel.empty:
        return None, ""
    given = [(k, getattr(args, k)) for k in SELECTORS if getattr(args, k) not in (None, False, [])]
    said = " ".join(f"--{k.replace('_', '-')}" + ("" if v is True else f" {','.join(v) if isinstance(v, list) else v}")
                    for k, v in given)  # fmt: skip
    if not sel.needs_log:
        ids = set(sel.ids)
        return (lambda m, now: (not ids or m.queue_id in ids) and act.matches(m, sel, cause_of, now)), said
    read = read_queue(target, args.config_dir)
    chosen, _, notes = queueselect.choose_listed(list(read.messages), sel, read.taken_at, target, args.config_dir, since)
    for n in notes:
        print(visible_lines(f"pfdiag: {n}"), file=sys.stderr)
    wanted = {m.queue_id for m in chosen}
    return (lambda m, now: m.queue_id in wanted), said


def run_action(args: argparse.Namespace, target: Target, sel: act.Selection) -> int:
    action = args.action
    queueselect.check(action, sel, yes=args.yes, dry_run=args.dry_run)
    chosen, _missing, notes = queueselect.choose(target, action, sel, args.config_dir, _since(args, sel))
    acks = act.warn_interrupted(args.action_log)
    act.check_writable(args.action_log)  # an action log that cannot be written stops the action before it runs
    backup = (args.backup_dir or act.default_backup_dir()) if action == "delete" else None
    plan = act.build_plan(action, chosen, args.config_dir, backup)
    mixed = queueselect.multi_recipient_warning(sel, chosen)
    plan.warnings += [mixed] if mixed else []
    interactive = sys.stdin.isatty()
    dry = args.dry_run or (not interactive and not args.yes)
    said = sys.stderr if args.format == "json" else sys.stdout
    print(queueselect.render_plan(plan), end="", file=said)
    for n in notes:
        print(visible_lines(f"note: {n}"), file=said)
    if not act.confirm(f"Run these {len(plan.commands)} command(s)?", yes=args.yes, dry_run=dry, interactive=interactive):
        why = "dry run" if args.dry_run else ("no terminal to confirm on and no --yes" if not interactive else "not confirmed")
        print(f"nothing was changed ({why})", file=said)
        if args.format == "json":
            print(json.dumps(queueselect.plan_dict(plan, None, dry=True), indent=2))
        return 0
    log = act.ActionLog(args.action_log)
    try:
        result = act.execute(target, plan, args.config_dir, log, acks)
    finally:
        log.close()
    if args.format == "json":
        print(json.dumps(queueselect.plan_dict(plan, result, dry=False), indent=2))
    else:
        print(queueselect.render_result(result, plan, args.action_log), end="")
    error = queueselect.failure(action, result, args.action_log)
    if error:
        raise InputError(error)
    return 0
