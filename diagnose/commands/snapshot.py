"""pfdiag snapshot: record this Postfix (or a mail host's) for a diagnosis elsewhere."""

from __future__ import annotations

ORDER = 60  # place in pfdiag --help

import argparse
import os
import sys
from typing import Any

from checks.errors import UsageError
from diagnose.output import Output, add_output_options
from diagnose.target_options import add_target_options
from diagnose.textsafe import visible

HELP = """\
Records what a diagnosis reads - the log window (Postfix lines only), postqueue -j/-p,
postconf -n/-d/-P/-M and the exact queries pfdiag makes, master.cf, main.cf, resolv.conf
and the chroot's copy, the Postfix version - into one .tar.gz with a manifest of sha256
hashes. Any pfdiag command reads it back with --snapshot FILE, on any machine.

--redact replaces local parts, the server's own names, client IP addresses and SASL logins
with stable tokens (the same input, the same token, within the bundle) in every file of
the bundle, keeping status codes, reason texts and providers' hostnames. The key is never
written: not even pfdiag can map a token back.

examples:
  pfdiag snapshot -o mx1.tar.gz --since 24h
  pfdiag snapshot --host mx1 -o mx1.tar.gz --redact
  pfdiag report --snapshot mx1.tar.gz -f md
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("snapshot", help="record logs, queue and configuration into a bundle for offline diagnosis",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("-o", "--output", required=True, metavar="FILE.tar.gz", help="the bundle to write")
    p.add_argument("--since", default="24h", metavar="WHEN", help="log window: 24h (default), 7d, or a date")
    p.add_argument("--redact", action="store_true", help="replace addresses, client IPs and own names with tokens")
    p.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    p.add_argument("--log", dest="log_paths", action="append", metavar="PATH",
                   help="log file or directory to record (default: the Postfix's own log)")
    p.add_argument("-c", "--config-dir", metavar="DIR", help="Postfix configuration directory (postconf -c DIR)")
    add_output_options(p, ("text", "json"), output=False)  # -o is the bundle; -f: how to say what was written
    add_target_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from diagnose.snapshot import collect
    from diagnose.target_options import open_target
    from diagnose.timespec import parse_when

    if args.snapshot or args.demo:
        raise UsageError("pfdiag snapshot records a live Postfix: use it without --snapshot/--demo")
    out = args.output
    if not out.endswith((".tar.gz", ".tgz")):
        raise UsageError("-o must name a .tar.gz file")
    if os.path.exists(out) and not args.force:
        raise UsageError(f"{out} exists: pick another name or add --force")
    since = parse_when(args.since) if args.since else None
    target, _ = open_target(args)
    tty = sys.stderr.isatty()
    summary = collect(target, out_path=out, config_dir=args.config_dir, since=since, redact=args.redact,
                      log_paths=args.log_paths,
                      progress=(lambda s: print(visible(f"  ... {s}"), file=sys.stderr)) if tty else (lambda s: None))  # fmt: skip
    Output(args.format).write(summary, {"text": lambda d: _said(d, out)})
    return 0


def _said(summary: dict[str, Any], out: str) -> str:
    lines = [visible(f"wrote {out}: ") + f"{summary['commands']} command outputs, {summary['files']} files, {summary['bytes']:,} bytes"
             + (", redacted" if summary["redacted"] else "")]  # fmt: skip
    lines += [visible(f"  not recorded: {p}") for p in summary["problems"]]  # a path or an error from the host: literal
    lines.append(f"read it with: pfdiag report --snapshot {out}")
    return "\n".join(lines) + "\n"
