"""pfdiag logs: what Postfix's logs say about deferred mail."""

from __future__ import annotations

ORDER = 10  # place in pfdiag --help

import argparse
from typing import TYPE_CHECKING

from checks.errors import InputError, UsageError
from diagnose.output import add_output_options
from diagnose.target_options import add_target_options

if TYPE_CHECKING:  # the log analysis loads in run(): `pfdiag logs --help` and `pfdiag --help` stay light
    from checks.logs import ReadStats
    from checks.targets import Target

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
    add_output_options(p, ("text", "md", "json"))
    p.add_argument("--tz", metavar="ZONE", help="time zone of timestamps without an offset (e.g. Europe/Berlin, UTC; default: this machine's)")
    p.add_argument("-j", "--jobs", type=int, metavar="N", help="worker processes (default: one per CPU for big logs)")
    p.add_argument("-c", "--config-dir", metavar="DIR",
                   help="the Postfix instance whose configuration the log is read with (postconf -c DIR)")
    add_target_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from checks.logs import default_sources, resolve_sources
    from diagnose.delays import DEFAULT_TIMEOUTS
    from diagnose.logreport import render_markdown, render_text, to_dict
    from diagnose.logscan import analyse_logs
    from diagnose.output import Output
    from diagnose.target_options import open_target
    from diagnose.timespec import parse_when, parse_zone
    from checks.config import read_config
    from diagnose.correlate import relocalize
    from diagnose.delays import config_for_log, smtp_timeouts

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
    # the configuration of the host the log came from (Postfix's defaults, said so, for another host's)
    cfg, source = config_for_log(target, args.config_dir, lambda: read_config(target, args.config_dir),
                                 [c.example for c in analysis.causes.values()], bool(args.paths))  # fmt: skip
    timeouts = smtp_timeouts(cfg) if cfg is not None else None
    report = to_dict(analysis, stats, since, until, timeouts)
    report["timeouts"] = {"source": source, "values": timeouts or DEFAULT_TIMEOUTS}
    relocalize(report, cfg, "logs")  # E32 only for a configured local service, as the report engine says
    out = Output.from_args(args)
    text = out.render(report, {"md": render_markdown,
                               "text": lambda r: render_text(r, width=_width(), color=out.to_tty)})  # fmt: skip
    out.notice(notice)  # stderr: never mixed into the report
    for warning in stats.warnings:  # also at the top of the report; here for scripts and pipes
        out.notice(f"pfdiag: warning: {warning}")
    out.emit(text)
    return 0


def _unreadable(stats: ReadStats) -> str:
    """'; skipped: 1 line(s) with NUL bytes: binary data, not a text log?' when lines were skipped."""
    from checks.logs import LONG_LINE, NUL_BYTES

    if not stats.malformed:
        return ""
    words = {NUL_BYTES: "line(s) with NUL bytes", LONG_LINE: f"line(s) {LONG_LINE.removeprefix('line ')}"}
    kinds = ", ".join(f"{n:,} {words.get(kind, kind)}" for kind, n in sorted(stats.malformed.items()))
    guess = ": binary data, not a text log?" if NUL_BYTES in stats.malformed or LONG_LINE in stats.malformed else ""
    return f"; skipped: {kinds}{guess}"


def effective_timeouts(target: Target, config_dir: str | None = None, examples: list[str | None] | None = None,
                       paths_given: bool = False) -> tuple[dict[str, float] | None, str]:  # fmt: skip
    """This server's smtp client timeouts (master.cf -o overrides of the smtp service included,
    read by checks.config like every command does), so that a delays profile is read against
    what Postfix really waited; Postfix's defaults when the target has no postconf."""
    from checks.config import read_config
    from diagnose.delays import config_for_log, smtp_timeouts

    cfg, source = config_for_log(target, config_dir, lambda: read_config(target, config_dir), examples or [], paths_given)
    return (smtp_timeouts(cfg) if cfg is not None else None), source


def _width() -> int:
    import shutil

    return max(80, min(160, shutil.get_terminal_size((120, 40)).columns))
