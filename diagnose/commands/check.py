"""pfdiag check: a monitoring plugin (Nagios/Icinga) and a Prometheus textfile exporter
that name the cause of deferred mail. The logic is in diagnose/monitor.py."""

from __future__ import annotations

ORDER = 25  # place in pfdiag --help

import argparse
import sys
import time
from typing import TYPE_CHECKING, NoReturn

from checks.errors import PfdiagError, UsageError
from diagnose.commands import LazyModule
from diagnose.target_options import add_target_options, open_target

if TYPE_CHECKING:
    from diagnose import monitor as mon
else:  # loaded when a check runs: `pfdiag check --help` stays light
    mon = LazyModule("diagnose.monitor")
from diagnose.textsafe import visible

HELP = """\
Reads the queue (postqueue -j, each deferred recipient's reason classified) and the
last hour of the Postfix log, and says which cause holds the mail. No probes: fast
enough to run every minute.

Nagios/Icinga (default, -f nagios): one status line naming the top cause, perfdata
after `|`, the next causes on the following lines; exit 0 OK, 1 WARNING, 2 CRITICAL,
3 UNKNOWN (the queue could not be read, bad options, or a pfdiag bug).
  CRITICAL - E09 No reply after the end of the message (possible duplicates): 12 messages
  deferred to example.com, oldest 52 min; 35 deferred in all (E09 12 message(s) >= 1)
  | deferred=35;100;500;0 oldest_age=3120s;3600;7200;0 ... cause_E09=12;;1;0 ...

Thresholds: an alert when a value REACHES the number (>=); "off" turns one off.
  --warn/--crit           deferred messages (default 100 / 500)
  --warn-age/--crit-age   the oldest message not on hold (default 1h / 2h)
  --cause-warn/-crit C=N  messages of one cause, in the queue now or deferred in the
                          log window, whichever is more (repeatable; C=off removes one)
  default per-cause thresholds (--no-default-causes drops them):
    CRITICAL at 1: E09 E10 (end-of-data timeouts: mail may be delivered twice),
                   E20 (relay login fails), E30 (mail loop), E31 E32 E35 (a transport,
                   local service or lookup table of this server is down)
    WARNING at 1:  E14 (DNS reply filter), E33 (soft_bounce is on),
                   E34 (local mailbox not writable)

Prometheus (-f prometheus): text for node_exporter's textfile collector. Write it with
-o: a temporary file in the same directory is fsynced and renamed over FILE, so a
scrape never reads half a file. Metrics: pfdiag_up, pfdiag_queue_messages{queue},
pfdiag_queue_oldest_age_seconds, pfdiag_deferred_messages{cause}, pfdiag_cause_info
{cause,title}, pfdiag_log_deferrals{cause}, pfdiag_deferred_destination_messages
{domain} (top N and "other"), pfdiag_last_run_timestamp_seconds, pfdiag_check_status.
When the queue cannot be read the file still says pfdiag_up 0.

  cron (/etc/cron.d/pfdiag):
    * * * * * root pfdiag check -f prometheus -o /var/lib/prometheus/node-exporter/pfdiag.prom
  systemd: pfdiag-check.service (Type=oneshot, ExecStart=/usr/bin/pfdiag check -f prometheus
    -o /var/lib/prometheus/node-exporter/pfdiag.prom) and pfdiag-check.timer (OnCalendar=minutely)
  node_exporter --collector.textfile.directory=/var/lib/prometheus/node-exporter

examples:
  pfdiag check                                   this machine, Nagios output
  pfdiag check --warn 50 --crit 200 --cause-crit E21=100 --since 30m
  pfdiag check --host mx1                        over SSH (e.g. from the monitoring server)
  pfdiag check --demo -f prometheus              the shipped demo snapshot
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="monitoring plugin (Nagios/Icinga) and Prometheus metrics naming the cause",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("-f", "--format", choices=("nagios", "prometheus"), default="nagios")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE atomically (temp file + fsync + rename)")
    p.add_argument("-c", "--config-dir", metavar="DIR", help="Postfix configuration directory (postqueue -c DIR)")
    p.add_argument("--since", default="1h", metavar="DURATION",
                   help="log window before the queue's clock (default 1h; 'off': queue only)")
    p.add_argument("--warn", default="100", metavar="N", help="WARNING at N deferred messages (default 100)")
    p.add_argument("--crit", default="500", metavar="N", help="CRITICAL at N deferred messages (default 500)")
    p.add_argument("--warn-age", default="1h", metavar="AGE", help="WARNING when the oldest message is this old (default 1h)")
    p.add_argument("--crit-age", default="2h", metavar="AGE", help="CRITICAL when the oldest message is this old (default 2h)")
    p.add_argument("--cause-warn", action="append", default=[], metavar="CAUSE=N", help="WARNING at N messages of a cause")
    p.add_argument("--cause-crit", action="append", default=[], metavar="CAUSE=N", help="CRITICAL at N messages of a cause")
    p.add_argument("--no-default-causes", action="store_true", help="no built-in per-cause thresholds")
    p.add_argument("--top", type=int, default=10, metavar="N", help="destinations in the Prometheus output (default 10, rest as other)")
    add_target_options(p)
    p.error = _plugin_usage_error
    p.set_defaults(func=run)


class PluginUsageError(UsageError):
    """A bad `pfdiag check` command line: UNKNOWN to the monitoring system, not CRITICAL."""

    exit_code = 3


def _plugin_usage_error(message: str) -> NoReturn:
    sys.stdout.write(mon.unknown_line(f"{message} (see pfdiag check --help)"))
    raise PluginUsageError(f"{message} (see pfdiag check --help)")


def thresholds(args: argparse.Namespace) -> mon.Thresholds:
    th = mon.Thresholds()
    th.warn, th.crit = mon.parse_count(args.warn, "--warn"), mon.parse_count(args.crit, "--crit")
    th.warn_age = None if args.warn_age.lower() == "off" else mon.parse_duration(args.warn_age, "--warn-age")
    th.crit_age = None if args.crit_age.lower() == "off" else mon.parse_duration(args.crit_age, "--crit-age")
    if args.no_default_causes:
        th.cause_warn, th.cause_crit = {}, {}
    mon.parse_cause_thresholds(args.cause_warn, "--cause-warn", th.cause_warn)
    mon.parse_cause_thresholds(args.cause_crit, "--cause-crit", th.cause_crit)
    if args.top < 1:
        raise UsageError("--top must be at least 1")
    return th


def _emit(text: str, output: str | None) -> None:
    if output:
        try:
            mon.write_atomic(output, text)
        except OSError as exc:
            raise PfdiagError(f"{output}: cannot write ({exc.strerror or exc})") from None
    else:
        sys.stdout.write(text)


def run(args: argparse.Namespace) -> int:
    if args.format == "prometheus":
        return _run_prometheus(args)
    # The plugin contract: every failure is UNKNOWN (exit 3) with one line on stdout.
    try:
        th = thresholds(args)
        window = None if args.since.lower() == "off" else args.since
        since = None if window is None else mon.parse_duration(args.since, "--since")
        target, _ = open_target(args)
        state = mon.collect(target, args.config_dir, since)
        verdict = mon.evaluate(state, th, window)
        _emit(mon.render_nagios(verdict), args.output)
        return verdict.state
    except KeyboardInterrupt:
        raise
    except PfdiagError as exc:
        _emit_unknown(exc, args)
    except Exception as exc:  # a bug: still one line, as the plugin contract wants
        if getattr(args, "debug", False):
            raise
        _emit_unknown(f"internal error: {type(exc).__name__}: {exc}", args)
    return mon.UNKNOWN


def _emit_unknown(message: object, args: argparse.Namespace) -> None:
    text = mon.unknown_line(message)
    try:
        _emit(text, args.output)
    except PfdiagError:
        sys.stdout.write(text)


def _run_prometheus(args: argparse.Namespace) -> int:
    """Bad options: exit 2 before anything is written. A failed collection still writes a
    file with pfdiag_up 0 (so an alert can fire on it), says why on stderr and exits 1."""
    th = thresholds(args)
    since = None if args.since.lower() == "off" else mon.parse_duration(args.since, "--since")
    try:
        target, notice = open_target(args)
        state = mon.collect(target, args.config_dir, since)
    except PfdiagError as exc:
        _emit(mon.render_prometheus(None, args.top, now=time.time()), args.output)
        print(f"pfdiag: {visible(exc)}", file=sys.stderr)
        return 1
    verdict = mon.evaluate(state, th, args.since)
    _emit(mon.render_prometheus(state, args.top, verdict=verdict), args.output)
    return 0
