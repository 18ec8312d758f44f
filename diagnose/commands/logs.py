"""pfdiag logs: what Postfix's logs say about deferred mail."""

from __future__ import annotations

ORDER = 10  # place in pfdiag --help

import argparse
import json
import re
import sys
import time
from datetime import datetime, timedelta, timezone, tzinfo

from checks.errors import InputError, PfdiagError, UsageError
from checks.postfix.postconf import PostfixConfig
from checks.targets import Target
from diagnose.delays import DEFAULT_TIMEOUTS, smtp_timeouts
from checks.logs import LONG_LINE, NUL_BYTES, ReadStats, default_sources, resolve_sources
from diagnose.logreport import render_markdown, render_text, to_dict
from diagnose.logscan import analyse_logs
from diagnose.target_options import add_target_options, open_target

HELP = """\
Reads Postfix logs (plain, .gz, .bz2, .xz; a directory of rotated logs is read
oldest first; - reads stdin, including `journalctl -o json`) and reports, per
deferral cause: how often, since when, where to, the delays profile and what it
means, and what became of the deferred mail.

examples:
  pfdiag logs                               this machine's Postfix log
  pfdiag logs /var/log/mail.log.1 /var/log/mail.log
  pfdiag logs /var/log --since 24h --format md
  journalctl -u postfix -o json | pfdiag logs -
"""

_RELATIVE = re.compile(r"^(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_when(text: str, now: float | None = None) -> float:
    """'24h', '2d12h', '90m' (ago), or an ISO date/time ('2026-11-28', '2026-11-28T10:00')."""
    now = time.time() if now is None else now
    value = text.strip()
    m = _RELATIVE.match(value)
    if value and m and any(m.groups()):
        w, d, h, mi, s = (int(g) if g else 0 for g in m.groups())
        return now - (((w * 7 + d) * 24 + h) * 60 + mi) * 60 - s
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise UsageError(f"cannot read the time {text!r}: use 24h, 7d, 90m, or 2026-11-28T10:00") from None


def parse_zone(name: str | None) -> tzinfo | None:
    if not name:
        return None
    if name.upper() in ("UTC", "Z"):
        return timezone.utc
    m = re.fullmatch(r"([+-])(\d\d):?(\d\d)", name)
    if m:
        delta = timedelta(hours=int(m[2]), minutes=int(m[3]))
        return timezone(-delta if m[1] == "-" else delta)
    try:
        from zoneinfo import ZoneInfo

        return ZoneInfo(name)
    except Exception:
        raise UsageError(f"unknown time zone {name!r}: use an IANA name like Europe/Berlin, UTC, or +01:00") from None


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "logs",
        help="deferral causes in Postfix logs",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="*", metavar="FILE|DIR|-", help="logs to read (default: this Postfix's own log)")
    p.add_argument("--since", metavar="T", help="only lines at or after T (24h, 7d, or an ISO time)")
    p.add_argument("--until", metavar="T", help="only lines before T")
    p.add_argument("-f", "--format", choices=("text", "md", "json"), default="text")
    p.add_argument("-o", "--output", metavar="FILE", help="write the report to FILE instead of stdout")
    p.add_argument("--tz", metavar="ZONE", help="time zone of timestamps without an offset (e.g. Europe/Berlin, UTC; default: this machine's)")
    p.add_argument("-j", "--jobs", type=int, metavar="N", help="worker processes (default: one per CPU for big logs)")
    add_target_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    since = parse_when(args.since) if args.since else None
    until = parse_when(args.until) if args.until else None
    if args.jobs is not None and args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    if since is not None and until is not None and since >= until:
        raise UsageError("--since must be earlier than --until")
    target, notice = open_target(args)
    if args.paths:
        sources = resolve_sources(target, args.paths)
    else:
        try:
            sources = default_sources(target)
        except InputError as exc:
            if args.snapshot or args.demo or getattr(args, "host", None):
                raise
            # a first look on a machine without a Postfix log: show what pfdiag does, and say why
            target, _ = open_target(argparse.Namespace(demo=True, snapshot=None))
            notice = f"pfdiag: {exc}.\npfdiag: showing the demo snapshot shipped with pfdiag instead (a recorded test-lab Postfix)."
            sources = default_sources(target)
    analysis, stats = analyse_logs(target, sources, since, until, workers=args.jobs, tz=parse_zone(args.tz))
    if stats.postfix_lines == 0:
        if stats.warnings:
            raise InputError(stats.warnings[0])
        raise InputError(f"no Postfix log lines in {', '.join(sources)} ({stats.lines:,} lines read{_unreadable(stats)})")
    timeouts, source = effective_timeouts(target)
    report = to_dict(analysis, stats, since, until, timeouts)
    report["timeouts"] = {"source": source, "values": timeouts or DEFAULT_TIMEOUTS}
    if args.format == "json":
        text = json.dumps(report, indent=2, ensure_ascii=False) + "\n"
    elif args.format == "md":
        text = render_markdown(report)
    else:
        to_tty = args.output is None and sys.stdout.isatty()
        text = render_text(report, width=_width(), color=to_tty)
    if notice:  # stderr: never mixed into the report
        print(notice, file=sys.stderr)
    for warning in stats.warnings:  # also at the top of the report; here for scripts and pipes
        print(f"pfdiag: warning: {warning}", file=sys.stderr)
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as exc:
            raise InputError(f"{args.output}: cannot write ({exc.strerror})") from exc
    else:
        sys.stdout.write(text)
    return 0


def _unreadable(stats: ReadStats) -> str:
    """'; skipped: 1 line(s) with NUL bytes: binary data, not a text log?' when lines were skipped."""
    if not stats.malformed:
        return ""
    words = {NUL_BYTES: "line(s) with NUL bytes", LONG_LINE: f"line(s) {LONG_LINE.removeprefix('line ')}"}
    kinds = ", ".join(f"{n:,} {words.get(kind, kind)}" for kind, n in sorted(stats.malformed.items()))
    guess = ": binary data, not a text log?" if NUL_BYTES in stats.malformed or LONG_LINE in stats.malformed else ""
    return f"; skipped: {kinds}{guess}"


def effective_timeouts(target: Target) -> tuple[dict[str, float] | None, str]:
    """This server's smtp client timeouts (master.cf -o overrides of the smtp
    service included), so that a delays profile is read against what Postfix
    really waited; Postfix's defaults when the target has no postconf."""
    try:
        defaults = target.run(["postconf", "-d"], timeout=20)
        explicit = target.run(["postconf", "-n"], timeout=20)
    except PfdiagError:
        return None, "Postfix defaults (no postconf here)"
    if not (defaults.ok and explicit.ok):
        return None, "Postfix defaults (postconf failed)"
    try:
        overrides = target.run(["postconf", "-P"], timeout=20)
        p_text = overrides.stdout if overrides.ok else None
    except PfdiagError:
        p_text = None
    config = PostfixConfig.from_outputs(postconf_d=defaults.stdout, postconf_n=explicit.stdout, postconf_p=p_text)
    return smtp_timeouts(config), f"postconf on {target.where}"


def _width() -> int:
    import shutil

    return max(80, min(160, shutil.get_terminal_size((120, 40)).columns))
