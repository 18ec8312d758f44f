"""pfdiag checks: the checks a diagnosis runs, built in and from plugins."""

from __future__ import annotations

ORDER = 80  # place in pfdiag --help

import argparse
import json
import sys

from diagnose.textsafe import visible

HELP = """\
Lists every check a diagnosis runs: the built-in ones and those that third-party packages
add through the `pfdiag.checks` entry point group. A plugin that cannot be loaded is
listed with its error (and a diagnosis runs without it). -v shows each check's description.

examples:
  pfdiag checks
  pfdiag checks -v
  pfdiag checks --format json
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("checks", help="list the built-in and plugin checks", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("-v", "--verbose", action="store_true", help="show each check's description")
    p.add_argument("-f", "--format", choices=("text", "json"), default="text")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from checks.registry import load_checks

    specs, problems = load_checks()
    if args.format == "json":
        doc = {"schema": "pfdiag.checks/1",
               "checks": [{"id": s.id, "title": s.title, "origin": s.origin, "tags": list(s.tags), "doc": s.doc} for s in specs],
               "problems": [{"origin": p.origin, "error": p.error} for p in problems]}  # fmt: skip
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return 0
    width = max((len(s.id) for s in specs), default=10)
    for s in specs:
        origin = "" if s.origin == "builtin" else f"  [plugin {s.origin}]"
        print(f"{s.id:<{width}}  {s.title}{origin}")
        if args.verbose and s.doc:
            print("\n".join("    " + line for line in s.doc.splitlines()) + "\n")
    for p in problems:
        print(visible(f"broken plugin {p.origin}: {p.error}"))  # an exception's text: one line, shown literally
    return 0
