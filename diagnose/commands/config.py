"""pfdiag config: the timeout, backoff, lifetime and concurrency settings (effective, default,
where overridden, risk), the retry timeline they give, and proposed changes with the
before/after timeline; --apply runs `postconf -e` + `postfix reload` after confirmation."""

from __future__ import annotations

ORDER = 30  # place in pfdiag --help

import argparse
import sys
from typing import Any

from checks import places
from checks.errors import InputError, UsageError
from diagnose.output import Output, add_output_options
from diagnose.target_options import add_target_options, open_target
from diagnose.textsafe import visible

# The configuration report and the actions load in run(): `pfdiag config --help` stays light.

HELP = """\
Shows every timeout, backoff, lifetime and concurrency parameter that decides when
deferred mail is retried or returned: effective value, default, where it is set
(main.cf or a master.cf -o override) and why a value is risky; then the retry timeline
(attempt times, delay warning, return to sender) these values give.

--propose shows `postconf -e` lines and the timeline before and after; --apply runs
them and `postfix reload` after you confirm (or with --yes), and logs the change.

examples:
  pfdiag config
  pfdiag config --propose seed                   faster retries, 24h lifetime
  pfdiag config --propose minimal_backoff_time=120s queue_run_delay=100s
  pfdiag config --propose seed --apply
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="retry/timeout settings, their timeline, proposed changes",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--propose", nargs="+", metavar="seed|NAME=VALUE", help="changes to show (and --apply)")
    p.add_argument("--apply", action="store_true", help="run the proposed postconf -e lines, then postfix reload")
    p.add_argument("--yes", action="store_true", help="apply without asking")
    add_output_options(p, ("text", "md", "json"))
    p.add_argument("-c", "--config-dir", metavar="DIR", help="Postfix configuration directory (postconf -c DIR)")
    p.add_argument("--action-log", metavar="FILE", default=places.action_log(), help="JSON-lines log of applied changes")
    add_target_options(p)
    p.set_defaults(func=run)


def __getattr__(name: str) -> Any:
    """SEED and proposal, for scripts and tests: from diagnose.configreport, loaded on use."""
    if name in ("SEED", "proposal"):
        from diagnose import configreport

        return getattr(configreport, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run(args: argparse.Namespace) -> int:
    from checks.config import read_config
    from diagnose.configreport import build, changes_of, proposal, read_diagnosis, render_md, render_text

    changes = proposal(args.propose)
    if (args.apply or args.yes) and not changes:
        raise UsageError("--apply needs --propose (seed or NAME=VALUE)")
    out = Output.from_args(args)
    target, notice = open_target(args)
    if not out.machine:
        out.notice(notice)
    if args.apply and not target.can_change:
        raise UsageError(f"--apply changes a live Postfix: it cannot run on {target.where}")
    rep = read_config(target, args.config_dir)
    # a proposal is judged against what the logs say (duplicates with E09, earlier bounces, the cause found)
    diagnosis = read_diagnosis(target, rep, args.config_dir) if changes else None  # shown before --apply asks too
    doc = build(rep, changes, args.config_dir, diagnosis)
    out.write(doc, {"text": render_text, "md": render_md})
    if not args.apply:
        return 0
    from diagnose.configfix import plan_fix, run_fix

    # the guarded action (diagnose.configfix): values before re-read now, dry run unless confirmed, logged, rollback said
    say = lambda line: print(visible(line), file=sys.stderr)  # noqa: E731
    plan = plan_fix(target, changes_of(changes), args.config_dir)
    result = run_fix(target, plan, args.action_log, yes=args.yes, interactive=sys.stdin.isatty(), say=say)
    if result.applied and not result.ok:
        raise InputError(f"postfix reload failed (logged to {args.action_log}); the change is in the files")
    if result.lines and not result.applied:
        return 0 if result.lines[0].startswith("nothing was changed") else 1
    return 0
