"""pfdiag explain CAUSE: what a cause means, how to confirm it, how to fix it."""

from __future__ import annotations

ORDER = 70  # place in pfdiag --help

import argparse
import json
import sys
import textwrap

from checks.errors import UsageError

HELP = """\
Prints what a deferral cause of pfdiag's catalog means, which commands confirm or rule it
out, and which changes fix it. CAUSE is an id (E09), a slug (eod-timeout), or a check id
(smtp.nexthops) for that check's description. Without CAUSE: the whole catalog, one line each.

examples:
  pfdiag explain E09
  pfdiag explain eod-timeout
  pfdiag explain --list
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="what a cause (E01..E38) means, how to confirm and fix it",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("cause", nargs="?", metavar="CAUSE", help="E09, eod-timeout, or a check id")
    p.add_argument("--list", action="store_true", help="the whole catalog, one line per cause")
    p.add_argument("-f", "--format", choices=("text", "json"), default="text")
    p.set_defaults(func=run)


def _find(key: str):  # -> Cause | CheckSpec
    from diagnose.causes import all_causes

    k = key.strip()
    for c in all_causes():
        if c.id.lower() == k.lower() or c.slug == k.lower():
            return c
    from checks.registry import load_checks

    for spec in load_checks()[0]:
        if spec.id == k:
            return spec
    raise UsageError(f"unknown cause or check {key!r} (pfdiag explain --list shows them)")


def _wrap(text: str, indent: str = "  ", hang: str = "  ") -> str:
    return textwrap.fill(text, width=100, initial_indent=indent, subsequent_indent=indent + hang)


def run(args: argparse.Namespace) -> int:
    from diagnose.causes import Cause, all_causes

    if args.list or not args.cause:
        rows = all_causes()
        if args.format == "json":
            sys.stdout.write(json.dumps([{"id": c.id, "slug": c.slug, "title": c.title, "family": c.family} for c in rows], indent=2) + "\n")
        else:
            for c in rows:
                print(f"{c.id:<12} {c.slug:<28} {c.title}")
        return 0
    item = _find(args.cause)
    if not isinstance(item, Cause):
        print(f"{item.id}: {item.title} ({item.origin})\n\n{item.doc}")
        return 0
    c = item
    if args.format == "json":
        doc = {k: getattr(c, k) for k in ("id", "slug", "title", "family", "meaning", "checks", "root", "likely_causes")}
        doc["fixes"] = [{"kind": f.kind, "text": f.text, "for": list(f.hypotheses)} for f in c.fixes]
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return 0
    out = [f"{c.id} {c.slug}: {c.title}" + ("" if c.root else "  (a consequence of another cause)"), "", _wrap(c.meaning, "", "")]
    if c.likely_causes:
        out += ["", "Underlying causes, most likely first:"] + [_wrap(f"{i}. {x}") for i, x in enumerate(c.likely_causes, 1)]
    out += ["", "Confirm with:"] + [f"  $ {x}" for x in c.checks]
    out += ["", "Fix:"] + [_wrap(f"- {x}") for x in c.fixes]
    print("\n".join(out))
    return 0
