"""pfdiag explain CAUSE|LINE: what a cause means, how to confirm it, how to fix it."""

from __future__ import annotations

ORDER = 70  # place in pfdiag --help

import argparse
import re
import sys
import textwrap
from typing import Any

from checks.errors import UsageError
from diagnose.output import Output, add_output_options
from diagnose.textsafe import visible

HELP = """\
Prints what a deferral cause of pfdiag's catalog means, which commands confirm or rule it
out, and which changes fix it. CAUSE is an id (E09), a slug (eod-timeout), a check id
(smtp.nexthops) for that check's description, or a pasted log line or reason text (with or
without its syslog prefix; '-' reads it from standard input): pfdiag classifies it and explains
the cause it shows. Without CAUSE: the whole catalog, one line each.

examples:
  pfdiag explain E09
  pfdiag explain eod-timeout
  pfdiag explain 'status=deferred (conversation with mx.example.com[192.0.2.1] timed out while sending end of data -- message may be sent more than once)'
  pbpaste | pfdiag explain -
  pfdiag explain --list
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="what a cause (E01..E38) or a pasted log line means, how to confirm and fix it",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("cause", nargs="?", metavar="CAUSE", help="E09, eod-timeout, a check id, or a pasted log line ('-': stdin)")
    p.add_argument("--list", action="store_true", help="the whole catalog, one line per cause")
    add_output_options(p, ("text", "json"))
    p.set_defaults(func=run)


def _find(key: str) -> Any:  # Cause | CheckSpec | PastedReason
    from diagnose.causes import all_causes

    k = key.strip()
    for c in all_causes():
        if c.id.lower() == k.lower() or c.slug == k.lower():
            return c
    if re.fullmatch(r"[a-z][a-z0-9_-]*(?:\.[a-z0-9_-]+)+", k):  # a check id: smtp.nexthops
        from checks.registry import load_checks

        for spec in load_checks()[0]:
            if spec.id == k:
                return spec
    if re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]{0,30}", k):
        raise UsageError(f"unknown cause or check {key!r} (pfdiag explain --list shows them; paste a whole log line to classify it)")
    from diagnose.paste import PasteError, read_pasted

    try:
        return read_pasted(key)
    except PasteError as exc:
        raise UsageError(str(exc)) from None


def _wrap(text: str, indent: str = "  ", hang: str = "  ") -> str:
    return textwrap.fill(text, width=100, initial_indent=indent, subsequent_indent=indent + hang)


def _catalog_text(rows: list[Any]) -> str:
    return "".join(f"{c.id:<12} {c.slug:<28} {c.title}\n" for c in rows)


def _cause_doc(c: Any) -> dict[str, Any]:
    doc = {k: getattr(c, k) for k in ("id", "slug", "title", "family", "meaning", "checks", "root", "likely_causes")}
    doc["fixes"] = [{"kind": f.kind, "text": f.text, "for": list(f.hypotheses)} for f in c.fixes]
    return doc


def _cause_text(c: Any) -> str:
    out = [f"{c.id} {c.slug}: {c.title}" + ("" if c.root else "  (a consequence of another cause)"), "", _wrap(c.meaning, "", "")]
    if c.likely_causes:
        out += ["", "Underlying causes, most likely first:"] + [_wrap(f"{i}. {x}") for i, x in enumerate(c.likely_causes, 1)]
    out += ["", "Confirm with:"] + [f"  $ {x}" for x in c.checks]
    out += ["", "Fix:"] + [_wrap(f"- {x}") for x in c.fixes]
    return "\n".join(out) + "\n"


def run(args: argparse.Namespace) -> int:
    from diagnose.causes import Cause, all_causes
    from diagnose.paste import PastedReason, render_text, to_dict

    out = Output.from_args(args)
    if args.list or not args.cause:
        rows = all_causes()
        doc: Any = [{"id": c.id, "slug": c.slug, "title": c.title, "family": c.family} for c in rows]
        out.write(doc, {"text": lambda _: _catalog_text(rows)})
        return 0
    item = _find(sys.stdin.read() if args.cause == "-" else args.cause)
    if isinstance(item, PastedReason):
        if not item.recognised and not out.machine:
            print(visible(f"pfdiag does not recognise this reason text: {item.reason}"), file=sys.stderr)
            print("  it is not in the catalog (pfdiag explain --list); if it is a remote server's reply, look it up "
                  "on the provider's postmaster pages", file=sys.stderr)
            return 1
        c = item.cause
        out.write(to_dict(item), {"text": lambda _: render_text(item, _wrap) + _cause_text(c)})
        return 0 if item.recognised else 1
    if not isinstance(item, Cause):
        doc = {"id": item.id, "title": item.title, "origin": item.origin, "doc": item.doc}
        out.write(doc, {"text": lambda d: f"{d['id']}: {d['title']} ({d['origin']})\n\n{d['doc']}\n"})
        return 0
    c = item
    out.write(_cause_doc(c), {"text": lambda _: _cause_text(c)})
    return 0
