"""pfdiag explain CAUSE|LINE: what a cause means, how to confirm it, how to fix it."""

from __future__ import annotations

ORDER = 70  # place in pfdiag --help

import argparse
import json
import re
import sys
import textwrap

from diagnose.textsafe import visible as _visible

from checks.errors import UsageError

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
    p = sub.add_parser("explain", help="what a cause (E01..E38) means, how to confirm and fix it",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("cause", nargs="?", metavar="CAUSE", help="E09, eod-timeout, a check id, or a pasted log line ('-': stdin)")
    p.add_argument("--list", action="store_true", help="the whole catalog, one line per cause")
    p.add_argument("-f", "--format", choices=("text", "json"), default="text")
    p.set_defaults(func=run)


def _find(key: str):  # -> Cause | CheckSpec | PastedReason
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


def _pasted(r, fmt: str) -> int:  # r: PastedReason
    c, cl = r.cause, r.classification
    if fmt == "json":
        doc = {"reason": r.reason, "cause_id": cl.cause_id, "slug": c.slug, "title": c.title, "phase": cl.phase,
               "status": r.status, "dsn": r.dsn, "recipient": r.recipient, "relay": r.relay,
               "next_hop": {"host": cl.host, "addr": cl.addr, "port": cl.port},
               "reply_code": cl.reply_code, "enhanced_code": cl.enhanced_code, "provider": cl.provider,
               "hint": cl.hint, "subcause": cl.subcause, "collateral": cl.collateral, "notes": list(r.notes)}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return 0 if r.recognised else 1
    if not r.recognised:
        print(f"pfdiag does not recognise this reason text: {_visible(r.reason)}", file=sys.stderr)
        print("  it is not in the catalog (pfdiag explain --list); if it is a remote server's reply, look it up "
              "on the provider's postmaster pages", file=sys.stderr)
        return 1
    where = f" at {cl.phase}" if cl.phase else ""
    hop = f"{cl.host or ''}[{cl.addr}]" if cl.addr else cl.host
    out = [f"This text shows {c.id} {c.slug}{where}: {c.title}.",
           f"  reason: {_visible(r.reason)}"]
    facts = [f"status={r.status}" if r.status else "", f"dsn={r.dsn}" if r.dsn else "",
             f"next hop {_visible(hop)}" if hop else "", f"reply {cl.reply_code}" if cl.reply_code else "",
             f"from {cl.provider}" if cl.provider else "", f"recipient {_visible(r.recipient)}" if r.recipient else ""]
    if any(facts):
        out.append("  " + ", ".join(f for f in facts if f))
    if r.delays is not None:
        from diagnose.delays import explain as read_delays

        profile = {p: {"median": v, "p95": v} for p, v in zip("abcd", r.delays)}
        out.append("  delays=" + "/".join(f"{v:g}" for v in r.delays) + " (compared with Postfix's default timeouts: "
                   "the server's own are not in a pasted line)")
        out += [_wrap(f"- {x}", "    ") for x in read_delays(profile)]
    if cl.collateral:
        out.append("  'delivery temporarily suspended': an echo of an earlier failure to the same destination, "
                   "not a new attempt")
    if cl.subcause and cl.subcause != c.id:
        out.append(f"  the text itself is {cl.subcause} ({_title(cl.subcause)}); the context makes it {c.id}")
    if cl.hint:
        out.append(_wrap(f"note: {cl.hint}"))
    for note in r.notes:
        out.append(f"  (read as Postfix wrote it: {note})")
    print("\n".join(out) + "\n")
    return _cause(c, "text")


def _title(cause_id: str) -> str:
    from diagnose.causes import get_cause

    try:
        return get_cause(cause_id).title
    except KeyError:
        return cause_id


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
    key = sys.stdin.read() if args.cause == "-" else args.cause
    item = _find(key)
    from diagnose.paste import PastedReason

    if isinstance(item, PastedReason):
        return _pasted(item, args.format)
    if not isinstance(item, Cause):
        print(f"{item.id}: {item.title} ({item.origin})\n\n{item.doc}")
        return 0
    return _cause(item, args.format)


def _cause(c, fmt: str) -> int:  # c: Cause
    if fmt == "json":
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
