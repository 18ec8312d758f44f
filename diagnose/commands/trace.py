"""pfdiag trace ID|<MESSAGE-ID>|ADDRESS: one message's whole story."""

from __future__ import annotations

ORDER = 35  # place in pfdiag --help

import argparse
import time

from collections.abc import Iterator
from typing import TYPE_CHECKING

from checks.errors import PfdiagError, UsageError
from diagnose.output import Output, add_output_options
from diagnose.target_options import add_target_options, open_target

if TYPE_CHECKING:
    from checks.postfix.logline import LogLine
    from checks.postfix.postqueue import QueuedMessage
    from checks.postfix.retry import Forecast
    from checks.targets import Target
    from diagnose.trace import Trace

HELP = """\
Follows messages through Postfix's logs (rotated files oldest first, .gz/.bz2/.xz, a directory,
or - for standard input): where each came from (client, SASL login, Message-ID), every delivery
attempt with its relay, delays and cause (E01..E38), requeues, notices and how it left the
queue; then where it is now (postqueue) with its next retry and when it bounces. An end-of-data
timeout followed by another attempt is flagged: the recipient may have the message twice.

KEY is a queue id (4F2A31C2B), a Message-ID in angle brackets (<id@host>, quote it for the
shell), or an address (every message from or to it).

examples:
  pfdiag trace 4F2A31C2B
  pfdiag trace '<20261206031244.4F2A31C2B@mx1.example.com>'
  pfdiag trace ann@example.com --since 2d -f md
  pfdiag trace 4F2A31C2B /var/log/mail.log.1 /var/log/mail.log
  pfdiag trace ann@example.com --host mx1
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("trace", help="one message's whole story: attempts, causes, where it is now, its fate",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("key", metavar="ID|<MESSAGE-ID>|ADDRESS")
    p.add_argument("paths", nargs="*", metavar="FILE|DIR|-", help="logs to read (default: this Postfix's own log)")
    p.add_argument("--since", metavar="T", help="only lines at or after T (24h, 7d, or an ISO time)")
    p.add_argument("--until", metavar="T", help="only lines before T")
    p.add_argument("--no-queue", action="store_true", help="do not look at the queue (logs only)")
    p.add_argument("-c", "--config-dir", metavar="DIR", help="Postfix configuration directory (postqueue -c DIR)")
    add_output_options(p, ("text", "md", "json"))
    add_target_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from checks.logs import STDIN, ReadStats, default_sources, read_lines, resolve_sources
    from diagnose.timespec import parse_when
    from diagnose.trace import Key, trace
    from diagnose.textsafe import md_code, visible
    from diagnose.tracereport import render_markdown, render_text, to_dict

    try:
        key = Key.parse(args.key)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    since = parse_when(args.since) if args.since else None
    until = parse_when(args.until) if args.until else None
    target, notice = open_target(args)
    sources = resolve_sources(target, args.paths) if args.paths else default_sources(target)
    stats = ReadStats()

    def read() -> Iterator[LogLine]:
        return read_lines(target, sources, stats, since, until)

    tr = trace(key, read, rereadable=STDIN not in sources)
    tr.files = list(dict.fromkeys(stats.files))
    out = Output.from_args(args)
    out.notice(notice)  # before the trace, on stderr: never mixed into it
    now, notes = time.time(), list[str]()
    if not args.no_queue:
        now, notes = _attach_queue(target, tr, args.config_dir)
    doc = to_dict(tr, now)
    doc["notes"] = notes
    text = out.render(doc, {"md": lambda d: render_markdown(d, lambda t: md_code(t, table=True)),
                            "text": lambda d: render_text(d, visible)})  # json: the document itself
    for n in notes:
        out.notice(n)
    if stats.malformed:
        out.notice("pfdiag: " + ", ".join(f"{n} {kind}" for kind, n in stats.malformed.items()) + " (skipped)")
    out.emit(text)
    return 0 if doc["messages"] else 1


def _attach_queue(target: Target, tr: Trace, config_dir: str | None) -> tuple[float, list[str]]:
    """Where each message is now; "now" is when the queue was listed (a snapshot's recording time)."""
    from checks.config import read_config
    from checks.postfix.retry import RetrySettings
    from checks.queue import forecast_message, queue_file_mtime, read_queue
    from diagnose.trace import attach_queue

    try:
        listing = read_queue(target, config_dir)
    except PfdiagError as exc:
        return time.time(), [f"pfdiag: the queue was not read ({exc}): where the messages are now is unknown"]
    now = listing.taken_at
    try:
        cfg = read_config(target, config_dir)
        settings, qdir = cfg.settings, cfg.queue_directory
    except PfdiagError:
        settings, qdir = RetrySettings(), None

    def forecast_of(m: QueuedMessage) -> Forecast:
        return forecast_message(m, now, settings, queue_file_mtime(target, qdir, m)).forecast

    attach_queue(tr, listing.messages, forecast_of)
    return now, []
