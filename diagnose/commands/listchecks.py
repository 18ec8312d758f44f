"""pfdiag checks: the checks a diagnosis runs, built in and from plugins."""

from __future__ import annotations

ORDER = 80  # place in pfdiag --help

import argparse
from typing import Any

from diagnose.output import Output, add_output_options

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
    add_output_options(p, ("text", "json"))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from checks.registry import load_checks

    specs, problems = load_checks()
    doc = {"schema": "pfdiag.checks/1",
           "checks": [{"id": s.id, "title": s.title, "origin": s.origin, "tags": list(s.tags), "doc": s.doc} for s in specs],
           "problems": [{"origin": p.origin, "error": p.error} for p in problems]}  # fmt: skip
    Output.from_args(args).write(doc, {"text": lambda d: _text(d, args.verbose)})
    return 0


def _text(doc: dict[str, Any], verbose: bool) -> str:
    width = max((len(s["id"]) for s in doc["checks"]), default=10)
    out = []
    for s in doc["checks"]:
        origin = "" if s["origin"] == "builtin" else f"  [plugin {s['origin']}]"
        out.append(f"{s['id']:<{width}}  {s['title']}{origin}")
        if verbose and s["doc"]:
            out.append("\n".join("    " + line for line in s["doc"].splitlines()) + "\n")
    out += [visible(f"broken plugin {p['origin']}: {p['error']}") for p in doc["problems"]]  # an exception's text: one line, literal
    return "\n".join(out) + "\n" if out else ""
