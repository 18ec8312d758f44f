"""pfdiag report: the whole diagnosis without a single question, for tickets and scripts."""

from __future__ import annotations

ORDER = 1  # place in pfdiag --help: the main command

import argparse
import sys
from typing import Any

from checks.errors import UsageError
from diagnose.output import Output, add_output_options
from diagnose.rendering import FORMATS, redact, render  # noqa: F401 - redact, render: for scripts and tests
from diagnose.target_options import add_target_options
from diagnose.textsafe import visible

HELP = """\
Runs the diagnosis (logs, queue and configuration at once, then the checks they call
for: SMTP probes of the next hops of deferred mail, ...) and writes the root-cause
report: causes ranked with their confidence, evidence and fix. It never asks: answers
come from --answer/--answers or safe defaults (no test message is sent unless
send_test=yes and test_to=ADDRESS are given). Without a local Postfix it says so and
diagnoses the demo snapshot shipped with pfdiag.

answers (KEY=VALUE):
  symptom=eod|stuck|slow|none     what was noticed, when nothing is deferred
  send_test=yes|no                may real test messages be sent (end-of-data test)
  test_to=ADDRESS                 their recipient: a mailbox you control
  domain=DOMAIN                   only the mail to this domain (the same as --domain)
  (target, host and snapshot follow from --host/--snapshot/--demo)

exit status (documented in docs/report-json.md):
  0 no problem found   4 deferrals with a root cause   5 warnings only
  1 could not diagnose (evidence unreadable or no deferral explained)   2 usage error

examples:
  pfdiag report                                 this machine, text for the terminal
  pfdiag report --demo                          the shipped demo: a full report anywhere
  pfdiag report -f md --redact -o ticket.md     for a support ticket, addresses redacted
  pfdiag report --host mx1 -f json              a mail host over SSH
  pfdiag report --snapshot mx1.tar.gz -f html -o mx1.html
  pfdiag report --answer send_test=yes --answer test_to=me@example.net
  pfdiag report --inventory hosts.ini -f md     every mail host, compared

When rate-limit or reputation deferrals (E22/E23) dominate, the report reads the log a
second time and says whether one SASL login, client or sender sends most of that mail
("86 % of the 28 messages deferred by E22 ... came from client 127.0.0.5"), with a guarded
plan: pfdiag queue hold --client=127.0.0.5 --dry-run, the access map line that stops it.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="the whole diagnosis, no questions: ranked root causes and fixes",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    add_report_options(p)
    p.add_argument("--baseline", metavar="OLD.json", help="say what is new, resolved or worse since this saved report (-f json)")
    add_fleet_options(p)
    p.set_defaults(func=run)


def add_report_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--answer", action="append", default=[], metavar="KEY=VALUE", help="an answer (repeatable)")
    p.add_argument("--answers", metavar="FILE", help="answers from a file: KEY=VALUE lines, or a JSON object")
    add_output_options(p, FORMATS)
    p.add_argument("--redact", action="store_true", help="replace addresses, client IPs and own hostnames with tokens")
    p.add_argument("--budget", type=float, default=180.0, metavar="SECONDS", help="total time for all checks (default 180)")
    p.add_argument("--domain", metavar="DOMAIN", help="only the mail to this domain (and its subdomains)")
    p.add_argument("--all-causes", action="store_true",
                   help="list every cause in text and Markdown (default: the 12 most harmful; JSON always has all)")
    p.add_argument("--since", metavar="WHEN", help="only log lines since then: 24h, 7d, 2026-11-28T10:00")
    p.add_argument("-c", "--config-dir", metavar="DIR", help="Postfix configuration directory (postconf -c DIR)")
    p.add_argument("--log", dest="log_paths", action="append", metavar="PATH", help="log file or directory (default: found)")
    p.add_argument("--no-plugins", action="store_true", help="run only the built-in checks")
    p.add_argument("--resolver", metavar="system|chroot|IP[:PORT]",
                   help="DNS checks ask this resolver (default: the mail host's resolv.conf)")
    add_target_options(p)


def add_fleet_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("many hosts at once (over SSH)")
    g.add_argument("--hosts", metavar="H1,H2,...", help="diagnose these mail hosts in parallel and compare them")
    g.add_argument("--inventory", metavar="FILE", help="hosts from a file: one per line, or an Ansible INI/YAML inventory")
    g.add_argument("--concurrency", type=int, default=8, metavar="N", help="hosts diagnosed at once (default 8)")


def read_answers(args: argparse.Namespace) -> dict[str, str]:
    from diagnose import flow, session

    raw: dict[str, Any] = {}
    if args.answers:
        raw.update(session.read_answers_file(args.answers))
    for item in args.answer:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--answer {item!r}: expected KEY=VALUE")
        raw[key.strip()] = value.strip()
    for key in ("target", "host", "snapshot"):
        if key in raw:
            raise UsageError(f"answer {key!r} comes from --host/--snapshot/--demo in report mode")
    if getattr(args, "domain", None):
        raw["domain"] = args.domain
    return {**flow.check_answers(raw), "target": "local", **session.where_answers(args)}


def progress_printer(enabled: bool) -> Any:
    """Progress lines on stderr in a terminal; nothing otherwise (never in the report)."""
    if not enabled:
        return lambda *a: None

    def show(step: str, state: str, detail: str) -> None:
        mark = {"start": "..", "ok": "ok", "error": "!!", "timeout": "!!", "skipped": "--"}.get(state, state)
        text = detail if state == "start" else (detail or "")
        print(visible(f"  [{mark}] {step}{': ' + text if text else ''}"), file=sys.stderr, flush=True)

    return show


def run(args: argparse.Namespace) -> int:
    from diagnose import changes, report, session

    if getattr(args, "hosts", None) or getattr(args, "inventory", None):
        return run_fleet(args)
    answers = read_answers(args)
    opts = session.Options.from_args(args)
    baseline = changes.load(args.baseline) if getattr(args, "baseline", None) else None  # fail before diagnosing
    out = Output.from_args(args)
    show = progress_printer(sys.stderr.isatty() and not out.machine)
    outcome = session.run(session.report_mode_answerer, answers, opts, show, open_target=session.open_with_fallback)
    for notice in outcome.notices:
        out.notice(notice)
    doc = report.build(outcome.facts, outcome.answers, all_causes=getattr(args, "all_causes", False))
    if baseline is not None:
        doc["changes"] = changes.to_dict(changes.compare(baseline, doc))
    if args.redact:
        doc = redact(doc)
    text = render(doc, out.format, out.to_tty)
    out.emit(changes.insert(text, doc["changes"], out.format) if "changes" in doc else text)
    if answers.get("target") == "local" and outcome.answers.get("target") == "demo":
        return 0  # a first look on a machine without Postfix: the demo's verdict is not this machine's
    return int(doc["verdict"]["exit_code"])


def run_fleet(args: argparse.Namespace) -> int:
    from diagnose import fleet, report, session

    if args.hosts and args.inventory:
        raise UsageError("--hosts and --inventory cannot be used together")
    if getattr(args, "baseline", None):
        raise UsageError("--baseline compares reports of one host: not with --hosts/--inventory")
    if args.snapshot or args.demo or getattr(args, "host", None):
        raise UsageError("--hosts/--inventory go without --host, --snapshot and --demo")
    if args.format == "html":
        raise UsageError("a fleet report comes as text, md or json (one host: -f html)")
    hosts = fleet.parse_hosts(args.hosts) if args.hosts else fleet.read_inventory(args.inventory)
    answers = read_answers(args)
    answers.pop("target", None)
    opts = session.Options.from_args(args)
    out = Output.from_args(args)
    tty = sys.stderr.isatty() and not out.machine

    def one(h: Any) -> dict[str, Any]:
        given = {**answers, "target": "ssh", "host": h.address}
        outcome = session.run(session.report_mode_answerer, given, opts)
        try:
            return report.build(outcome.facts, outcome.answers)
        finally:
            outcome.target.close()

    def progress(host: str, state: str) -> None:
        if tty:
            print(visible(f"  [{host}] {state}"), file=sys.stderr, flush=True)

    doc = fleet.build(fleet.run_fleet(hosts, one, concurrency=args.concurrency, progress=progress))
    if args.redact:
        doc = redact(doc)
    out.write(doc, {"json": report.to_json, "md": fleet.render_markdown, "text": fleet.render_text})
    return int(doc["verdict"]["exit_code"])
