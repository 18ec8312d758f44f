"""pfdiag report: the whole diagnosis without a single question, for tickets and scripts."""

from __future__ import annotations

ORDER = 1  # place in pfdiag --help: the main command

import argparse
import sys
from typing import Any

from checks.errors import InputError, UsageError
from diagnose.target_options import add_target_options
from diagnose.textsafe import visible, visible_lines

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
    p.add_argument("-f", "--format", choices=("text", "md", "json", "html"), default="text")
    p.add_argument("-o", "--output", metavar="FILE", help="write the report here instead of stdout")
    p.add_argument("--redact", action="store_true", help="replace addresses, client IPs and own hostnames with tokens")
    p.add_argument("--budget", type=float, default=180.0, metavar="SECONDS", help="total time for all checks (default 180)")
    p.add_argument("--domain", metavar="DOMAIN", help="only the mail to this domain (and its subdomains)")
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
    from diagnose.flow import check_answers

    raw: dict[str, Any] = {}
    if args.answers:
        raw.update(_answers_file(args.answers))
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
    answers = check_answers(raw)
    if getattr(args, "demo", False):
        answers["target"] = "demo"
    elif getattr(args, "snapshot", None):
        answers["target"], answers["snapshot"] = "snapshot", args.snapshot
    elif getattr(args, "host", None):
        answers["target"], answers["host"] = "ssh", args.host
    else:
        answers["target"] = "local"
    return answers


def _answers_file(path: str) -> dict[str, Any]:
    import json

    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise InputError(f"{path}: cannot read answers ({exc.strerror})") from None
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(data, dict):
            raise InputError(f"{path}: expected a JSON object of answers")
        return {str(k): str(v) for k, v in data.items()}
    out = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise InputError(f"{path}:{n}: expected KEY=VALUE, got {line!r}")
        out[key.strip()] = value.strip()
    return out


def session_options(args: argparse.Namespace, interactive: bool = False) -> Any:
    from diagnose.commands.logs import parse_when
    from diagnose.session import Options

    if args.budget <= 0:
        raise UsageError("--budget must be positive")
    ssh = {k: getattr(args, k) for k in ("accept_new_host_key", "known_hosts", "ssh_config", "ssh_timeout", "identity", "strict")
           if hasattr(args, k)}  # fmt: skip
    return Options(budget=args.budget, config_dir=args.config_dir, since=parse_when(args.since) if args.since else None,
                   log_paths=args.log_paths, interactive=interactive, include_plugins=not args.no_plugins, ssh=ssh,
                   dns_resolver=getattr(args, "resolver", None))  # fmt: skip


def open_with_fallback(answers: Any, opts: Any) -> Any:
    """Like session.open_from_answers, but a machine with nothing to diagnose - no Postfix, or an
    installed Postfix that has no log and is not running (so no queue either) - gets the demo
    snapshot instead, with a notice that says so. A Postfix with a queue or a log is diagnosed."""
    from checks.config import postfix_argv
    from checks.errors import PfdiagError
    from checks.logs import default_sources
    from diagnose.session import open_from_answers

    target, notice = open_from_answers(answers, opts)
    if answers.get("target") != "local" or opts.log_paths:
        return target, notice
    try:
        default_sources(target, opts.config_dir)
        return target, notice
    except InputError as exc:
        why = str(exc)
    if _has_postconf(target):
        try:
            queue = target.run(postfix_argv("postqueue", opts.config_dir, "-j"), timeout=20)
        except PfdiagError:
            queue = None
        if queue is not None and queue.ok:
            return target, notice  # a live queue to look at, even without a log file (journald)
        why += "; and Postfix is not running here (postqueue -j fails), so there is no queue to read either"
    answers["target"] = "demo"
    target, _ = open_from_answers(answers, opts)
    notice = (f"pfdiag: nothing to diagnose on this machine: {why}.\n"
              "pfdiag: diagnosing the demo snapshot shipped with pfdiag instead (a recorded test-lab Postfix); "
              "name a log with --log, or use --host / --snapshot.")  # fmt: skip
    return target, notice


def _has_postconf(target: Any) -> bool:
    import shutil

    return shutil.which("postconf") is not None


def progress_printer(enabled: bool) -> Any:
    """Progress lines on stderr in a terminal; nothing otherwise (never in the report)."""
    if not enabled:
        return lambda *a: None

    def show(step: str, state: str, detail: str) -> None:
        mark = {"start": "..", "ok": "ok", "error": "!!", "timeout": "!!", "skipped": "--"}.get(state, state)
        text = detail if state == "start" else (detail or "")
        print(visible(f"  [{mark}] {step}{': ' + text if text else ''}"), file=sys.stderr, flush=True)

    return show


def render(doc: dict[str, Any], fmt: str, to_tty: bool) -> str:
    from diagnose import report

    if fmt == "json":
        return report.to_json(doc)
    if fmt == "md":
        return report.render_markdown(doc)
    if fmt == "html":
        from diagnose.html import render_html

        return render_html(doc)
    import shutil

    return report.render_text(doc, width=min(120, shutil.get_terminal_size((100, 24)).columns), color=to_tty)


def redact(doc: dict[str, Any]) -> dict[str, Any]:
    """Addresses, client IPs and this server's names become stable keyed tokens (diagnose/redact.py);
    a fleet report redacts every host's report with one key, so tokens match across hosts."""
    from diagnose.redact import Redactor

    servers = [doc.get("server") or {}] + [(h.get("report") or {}).get("server") or {} for h in doc.get("hosts", [])]
    hosts: list[str] = [str(s["myhostname"]) for s in servers if s.get("myhostname")]
    hosts += [h["address"].split("@")[-1].split(":")[0] for h in doc.get("hosts", []) if h.get("address")]
    hosts += [h["host"] for h in doc.get("hosts", []) if h.get("host")]  # inventory names (ansible_host may be an IP)
    where = str((doc.get("target") or {}).get("where") or "")
    if where.startswith("ssh:"):
        hosts.append(where[4:])
    domains: list[str] = [str(s["mydomain"]) for s in servers if s.get("mydomain")]
    domains += [d for s in servers for d in s.get("mydestination") or [] if d != "localhost"]
    red = Redactor(own_hostnames=hosts, own_domains=domains)
    import json

    red.learn(json.dumps(doc))
    out = red.value(doc)
    out["redacted"] = True
    return out


def write(text: str, output: str | None) -> None:
    if output:
        try:
            with open(output, "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as exc:
            raise InputError(f"{output}: cannot write ({exc.strerror})") from None
    else:
        sys.stdout.write(text)


def run(args: argparse.Namespace) -> int:
    from diagnose import changes, report, session

    if getattr(args, "hosts", None) or getattr(args, "inventory", None):
        return run_fleet(args)
    answers = read_answers(args)
    opts = session_options(args)
    baseline = changes.load(args.baseline) if getattr(args, "baseline", None) else None  # fail before diagnosing
    show = progress_printer(sys.stderr.isatty() and args.format != "json")
    outcome = session.run(session.report_mode_answerer, answers, opts, show, open_target=open_with_fallback)
    for notice in outcome.notices:
        print(visible_lines(notice), file=sys.stderr)
    doc = report.build(outcome.facts, outcome.answers)
    if baseline is not None:
        doc["changes"] = changes.to_dict(changes.compare(baseline, doc))
    if args.redact:
        doc = redact(doc)
    text = render(doc, args.format, args.output is None and sys.stdout.isatty())
    write(changes.insert(text, doc["changes"], args.format) if "changes" in doc else text, args.output)
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
    opts = session_options(args)
    tty = sys.stderr.isatty() and args.format != "json"

    def one(h: Any) -> dict[str, Any]:
        given = {**answers, "target": "ssh", "host": h.address}
        outcome = session.run(session.report_mode_answerer, given, opts)
        try:
            return report.build(outcome.facts, outcome.answers)
        finally:
            close = getattr(outcome.target, "close", None)
            if callable(close):
                close()

    def progress(host: str, state: str) -> None:
        if tty:
            print(visible(f"  [{host}] {state}"), file=sys.stderr, flush=True)

    doc = fleet.build(fleet.run_fleet(hosts, one, concurrency=args.concurrency, progress=progress))
    if args.redact:
        doc = redact(doc)
    text = report.to_json(doc) if args.format == "json" else fleet.render_markdown(doc) if args.format == "md" \
        else fleet.render_text(doc)  # fmt: skip
    write(text, args.output)
    return int(doc["verdict"]["exit_code"])
