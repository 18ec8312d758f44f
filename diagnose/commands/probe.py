"""pfdiag probe DESTINATION: one SMTP conversation timed phase by phase against Postfix's
own smtp_*_timeout values, and (with --send-test) the end-of-data size ladder (E09)."""

from __future__ import annotations

ORDER = 40  # place in pfdiag --help

import argparse
import sys
from typing import Any

from checks.errors import PfdiagError, UsageError
from checks.smtp import DEFAULT_LADDER_SIZES  # a constant: checks.smtp loads its modules on first use
from diagnose.output import add_output_options
from diagnose.target_options import add_target_options

# What a probe runs on (the SMTP conversation, routing, Postfix's settings) is imported in run():
# `pfdiag probe --help` and `pfdiag --help` load none of it.

EXIT_PROBLEM = 4
DEFAULT_BUDGET = 120.0
_MAX_SIZE = 64 << 20

HELP = """\
Talks SMTP to DESTINATION the way Postfix's smtp(8) client does (connect, greeting,
EHLO, STARTTLS, MAIL, [RCPT], RSET, QUIT: nothing is sent by default; MAIL to QUIT in
one write when the server offers PIPELINING, as Postfix sends an address probe) and
times every phase against this Postfix's smtp_*_timeout values. With --send-test it delivers real
test messages of growing size to --to and tells a path-MTU black hole from a receiver
that is slow after "." (E09) or an SMTP-inspecting firewall.

DESTINATION:
  [host]:port, [host]     no MX lookup (like Postfix's brackets)
  domain                  routed like Postfix: transport_maps, relayhost, MX, A/AAAA
  host:port               the host's MX records (else its A/AAAA), on that port
  port defaults to 25; 465 speaks TLS from the first byte (SMTPS)

exit status: 0 every phase ok, 1 error (e.g. a snapshot/--demo target: a probe needs a
live target), 2 usage error, 4 a problem found (a phase slow, timing out, failing, or a
size ladder that is not healthy)

examples:
  pfdiag probe '[192.0.2.25]'
  pfdiag probe mx.example.net:25 --rcpt postmaster@example.net --timeouts short
  pfdiag probe '[192.0.2.25]' --send-test --to me@example.net --sizes 300,4096,65536
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("probe", help="talk SMTP to a server, time each phase against Postfix's timeouts",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("destination", metavar="DESTINATION", nargs="+",
                   help="[host]:port, [host], host:port or domain; several are probed at once within --budget")
    p.add_argument("--helo", metavar="NAME", help="EHLO name (default: the transport's smtp_helo_name of this Postfix)")
    p.add_argument("--from", dest="mail_from", metavar="ADDR", default="", help="MAIL FROM address (default: <>)")
    p.add_argument("--rcpt", metavar="ADDR", help="also try RCPT TO (then RSET and QUIT; nothing is sent)")
    p.add_argument("--bind", metavar="ADDRESS", help="send from this local IP address (default: this Postfix's "
                   "smtp_bind_address / smtp_bind_address6 for the address family probed)")
    p.add_argument("--starttls", choices=("auto", "yes", "no"), default="auto", help="auto: when offered (default)")
    p.add_argument("--budget", type=float, default=DEFAULT_BUDGET, metavar="SECONDS",
                   help=f"total time to spend (default {DEFAULT_BUDGET:g}); a phase cut short by it is 'undecided', "
                   "a destination it ends before is 'not finished within the budget'")
    p.add_argument("--timeouts", choices=("postfix", "short"), default="postfix",
                   help="postfix: this server's smtp_*_timeout values (defaults if postconf fails); short: quick look")
    p.add_argument("-c", "--config-dir", metavar="DIR", help="Postfix configuration directory (postconf -c DIR)")
    p.add_argument("--send-test", action="store_true", help="send REAL test messages of growing size (needs --to)")
    p.add_argument("--to", metavar="ADDRESS", help="recipient of the test messages: a mailbox you control")
    p.add_argument("--sizes", metavar="N,N,...", help=f"test message body sizes in bytes "
                   f"(default {','.join(map(str, DEFAULT_LADDER_SIZES))})")  # fmt: skip
    p.add_argument("--yes", action="store_true", help="send the test messages without asking")
    p.add_argument("--resolver", metavar="IP[:PORT]",
                   help="DNS server for a domain's MX lookup (default: the target's own resolver; reserved names never)")
    p.add_argument("--compare-here", action="store_true",
                   help="with --host: also probe from this machine and compare the two vantage points")
    add_output_options(p, ("text", "md", "json"))
    add_target_options(p)
    p.set_defaults(func=run)


def __getattr__(name: str) -> Any:
    """render_md and render_text, for scripts and tests: from diagnose.probe_render, loaded on use."""
    if name in ("render_md", "render_text"):
        from diagnose import probe_render

        return getattr(probe_render, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def parse_sizes(text: str | None) -> tuple[int, ...]:
    if text is None:
        return DEFAULT_LADDER_SIZES
    out = []
    for part in text.split(","):
        p = part.strip()
        if not p.isdigit() or not 1 <= int(p) <= _MAX_SIZE:
            raise UsageError(f"--sizes: {part!r} is not a size in bytes (1..{_MAX_SIZE})")
        out.append(int(p))
    if not out:
        raise UsageError("--sizes needs at least one size")
    return tuple(out)


def run(args: argparse.Namespace) -> int:
    import time

    from checks.nexthop import parse_destination

    deadline = time.monotonic() + (args.budget or 0)  # --budget: the wall time of the whole command
    for d in args.destination:  # usage errors before any connection
        parse_destination(d)
    if args.budget is None or not args.budget > 0 or args.budget > 86400:
        raise UsageError("--budget must be a number of seconds, 0 < SECONDS <= 86400")
    if len(args.destination) > 1:
        if args.send_test or args.compare_here:
            raise UsageError("--send-test and --compare-here take one destination")
        if len(args.destination) > 50:
            raise UsageError("at most 50 destinations at once")
        target = _live_target(args)
        settings, view = _read_postfix(target, args)
        from diagnose.probedoc import probe_set
        from diagnose.textsafe import visible

        progress = _progress(len(args.destination))
        try:
            doc = probe_set(target, args.destination, settings, view, progress)
        finally:
            if progress is not None:
                progress.stop()
        def each(render: Any) -> Any:
            return lambda x: "\n".join(f"== {visible(d['destination'])}: {visible(d['error'])}\n" if d.get("error")
                                       else render(d) for d in x["probes"])  # fmt: skip

        _write(args, doc, {"md": each(_renderer("render_md")), "text": each(_renderer("render_text"))})
        return EXIT_PROBLEM if doc["problem"] else 0
    sizes = parse_sizes(args.sizes)
    if args.send_test and not (args.to and args.to.strip()):
        raise UsageError("--send-test needs --to ADDRESS (a mailbox you control at the destination)")
    if (args.to or args.sizes) and not args.send_test:
        raise UsageError("--to and --sizes go with --send-test")
    target = _live_target(args)
    if args.send_test and not _confirm(
        f"Send {len(sizes)} REAL test message(s) ({','.join(map(str, sizes))} bytes) to <{args.to}> via {args.destination[0]}?",
        yes=args.yes, dry_run=False, interactive=sys.stdin.isatty(),
    ):
        if not sys.stdin.isatty():
            raise UsageError("--send-test sends real mail: confirm on a terminal or pass --yes")
        raise PfdiagError("not confirmed: no test message was sent")
    settings, view = _read_postfix(target, args)
    from diagnose.probedoc import probe_one

    doc = probe_one(target, args.destination[0], settings, view, deadline=deadline,
                    ladder=(args.to.strip(), sizes) if args.send_test else None, compare_here=args.compare_here)  # fmt: skip
    _write(args, doc, {"md": _renderer("render_md"), "text": _renderer("render_text")})
    return EXIT_PROBLEM if doc["problem"] else 0


def _read_postfix(target: Any, args: argparse.Namespace) -> tuple[Any, Any]:
    """(probedoc.Settings, this Postfix's settings). They are read by two postconf processes,
    started before the SMTP code loads (most of a quick probe's start-up), which they overlap."""
    from checks.config import start_probe_reading

    started = start_probe_reading(target, args.config_dir)
    try:
        from diagnose.probedoc import read_postfix

        settings = _settings(args)
        return settings, read_postfix(target, settings, started)
    finally:
        for command in started:
            command.close()  # collected: nothing to do; not (an error on the way): ended


def _settings(args: argparse.Namespace) -> Any:
    from diagnose.probedoc import Settings

    return Settings(budget=args.budget, timeouts=args.timeouts, helo=args.helo, mail_from=args.mail_from,
                    rcpt=args.rcpt, starttls="auto" if args.starttls == "auto" else args.starttls == "yes",
                    config_dir=args.config_dir, bind=getattr(args, "bind", None), resolver=args.resolver)  # fmt: skip


def _write(args: argparse.Namespace, doc: Any, renderers: Any) -> None:
    from diagnose.output import Output

    Output.from_args(args).write(doc, renderers)


def _renderer(name: str) -> Any:
    """diagnose.probe_render's renderer, imported when the text or Markdown is made (-f json needs none)."""

    def render(doc: Any) -> str:
        from diagnose import probe_render

        return str(getattr(probe_render, name)(doc))

    return render


def _progress(total: int) -> Any:
    """A progress bar on a terminal's stderr while a set runs (stdout, JSON included, has none):
    a callback for the runner, with .stop() for when the set is done."""
    if not sys.stderr.isatty():
        return None
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("probing {task.completed}/{task.total} destinations"), BarColumn(), TimeElapsedColumn())
    bar = Progress(*columns, console=Console(stderr=True), transient=True, redirect_stdout=False, redirect_stderr=False)
    task = bar.add_task("probe", total=total)
    bar.start()

    def advance(done: int, total: int) -> None:
        bar.update(task, completed=done)

    advance.stop = bar.stop  # type: ignore[attr-defined]
    return advance


def _live_target(args: argparse.Namespace) -> Any:
    if getattr(args, "snapshot", None) or getattr(args, "demo", False):  # said before opening (and importing) it
        raise PfdiagError("a probe needs a live target: a snapshot (or --demo) is a recording and cannot open connections")
    from diagnose.target_options import open_target
    from diagnose.textsafe import visible_lines

    target, notice = open_target(args)
    if notice and args.format != "json":
        print(visible_lines(notice), file=sys.stderr)
    return target


def _confirm(prompt: str, **kw: Any) -> bool:
    from diagnose import actions as act  # only when sending: a plain probe stays light

    return act.confirm(prompt, **kw)
