"""pfdiag wizard (also plain `pfdiag` on a terminal): the guided diagnosis."""

from __future__ import annotations

ORDER = 0  # place in pfdiag --help: what `pfdiag` alone runs

import argparse
import sys

from checks.errors import UsageError

HELP = """\
Asks only what the evidence cannot settle (where the Postfix is; what you noticed, when
nothing is deferred; whether test messages may be sent, and to whom; whether to act on
the queue), runs the checks the answers call for while showing their progress, prints the
root-cause report, and offers the fixes one by one: every queue action is shown as a dry
run first and runs only when you confirm it. Choose "<- back" (or type <) to undo an answer.

examples:
  pfdiag                     on a terminal: the same as pfdiag wizard
  pfdiag wizard --demo       try it on the demo snapshot shipped with pfdiag
  pfdiag wizard --host mx1   a mail host over SSH
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    from diagnose.commands.report import add_report_options

    p = sub.add_parser("wizard", help="the guided diagnosis (what `pfdiag` alone runs on a terminal)",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    add_report_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError("the wizard needs a terminal; use pfdiag report for the same diagnosis without questions")
    from diagnose import wizard

    return wizard.run(args)
