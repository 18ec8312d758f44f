"""pfdiag queue: what is in the mail queue, why, and when it will be tried again; and the
guarded queue actions (hold, release, requeue, retry, expire, delete, flush).

Glue: the report is diagnose/queuereport.py's, the actions diagnose/queueselect.py's and
diagnose/actions.py's."""

from __future__ import annotations

ORDER = 20  # place in pfdiag --help

import argparse
import json
import sys

from checks import places
from checks.errors import InputError, UsageError
from checks.postfix.postqueue import QUEUE_NAMES
from checks.targets import Target
from diagnose import actions as act
from diagnose import queueselect
from diagnose.queuereport import human, queue_report, render_md, render_text
from diagnose.target_options import add_target_options, open_target
from diagnose.textsafe import visible_lines

__all__ = ["add_parser", "human", "run"]  # human: the config command's durations

HELP = """\
Lists the Postfix queue: messages per queue, a qshape-style age x domain table,
deferred recipients grouped by cause and destination, the oldest message, and per
deferred message when it is tried next and when it is returned to its sender.

Actions change the queue. They show the exact messages and commands first and run
nothing without a "yes" on a terminal or --yes (without a terminal: a dry run).
Prefer the gentle ones:
  hold     before delete   (held mail is kept and can be released)
  retry    before flush    (postqueue -i ID tries one message; -f forgets dead sites)

examples:
  pfdiag queue                                     the report
  pfdiag queue --format json                       (schema: docs/queue-json.md)
  pfdiag queue hold --cause E09                    hold everything deferred for one cause
  pfdiag queue retry --domain example.com --yes    try one destination's mail now
  pfdiag queue delete --id 2984816E715             delete, after a postcat backup
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("queue", help="the mail queue: shape, causes, forecasts; safe queue actions",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("action", nargs="?", choices=(*act.SPECS, *act.MORE), metavar="ACTION",
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
    g = p.add_argument_group("running an action")
    g.add_argument("--dry-run", action="store_true", help="show what would run, change nothing")
    g.add_argument("--yes", action="store_true", help="run without asking")
    g.add_argument("--backup-dir", metavar="DIR", help=f"delete: where postcat copies go (default {places.backup_dir()}/<time>/)")
    g.add_argument("--action-log", metavar="FILE", default=places.action_log(), help="JSON-lines log of what ran (default %(default)s)")
    add_target_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.top < 1:
        raise UsageError("--top must be at least 1")
    target, notice = open_target(args)
    if notice and args.format != "json":
        print(visible_lines(notice), file=sys.stderr)
    if args.path and args.action != "restore":
        raise UsageError(f"unexpected argument {args.path!r} (only restore takes a directory)")
    if args.action in act.MORE:
        return act.run_more(args, target)
    if args.action:
        return run_action(args, target)
    act.warn_interrupted(args.action_log)
    sel = act.Selection(args.id, args.cause, args.domain, args.queue, args.all_deferred)
    if not sel.empty or args.yes or args.dry_run:
        raise UsageError("selectors, --yes and --dry-run go with an action: pfdiag queue hold --id ID (see --help)")
    # Some 10 containers per message, none in a cycle: the collector would only walk them
    # again and again while the report grows (a few % of the run on a big queue).
    import gc

    # Until the report is written: re-enabled earlier, it would walk all of it once more.
    gc.disable()
    try:
        shape = None if args.shape_queues == "all" else [q.strip() for q in args.shape_queues.split(",") if q.strip()]
        report, builder = queue_report(target, args.config_dir, by=args.by, top=args.top, shape_queues=shape,
                                       encode=args.format == "json")  # fmt: skip
        if args.format == "json":
            builder.write_json(report, sys.stdout)
            sys.stdout.write("\n")
        elif args.format == "md":
            sys.stdout.write(render_md(report))
        else:
            sys.stdout.write(render_text(report))
    finally:
        gc.enable()
    return 0


def run_action(args: argparse.Namespace, target: Target) -> int:
    action = args.action
    sel = act.Selection(args.id, args.cause, args.domain, args.queue, args.all_deferred)
    queueselect.check(action, sel, yes=args.yes, dry_run=args.dry_run)
    chosen, _missing = queueselect.choose(target, action, sel, args.config_dir)
    acks = act.warn_interrupted(args.action_log)
    act.check_writable(args.action_log)  # an action log that cannot be written stops the action before it runs
    backup = (args.backup_dir or act.default_backup_dir()) if action == "delete" else None
    plan = act.build_plan(action, chosen, args.config_dir, backup)
    interactive = sys.stdin.isatty()
    dry = args.dry_run or (not interactive and not args.yes)
    said = sys.stderr if args.format == "json" else sys.stdout
    print(queueselect.render_plan(plan), end="", file=said)
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
