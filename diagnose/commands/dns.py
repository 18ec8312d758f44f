"""pfdiag dns DOMAIN|IP: the DNS that decides where mail goes and whether it is accepted."""

from __future__ import annotations

ORDER = 45  # place in pfdiag --help

import argparse
import ipaddress
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

from checks.errors import UsageError
from diagnose.output import Output, add_output_options
from diagnose.target_options import add_target_options

SCHEMA = "pfdiag.dns/1"
EXIT_PROBLEM = 4

HELP = """\
For a DOMAIN: its MX records (null MX, an MX that is a CNAME, an MX host without an address,
the A/AAAA fallback), SPF (syntax, the 10-lookup and 2-void-lookup limits through
include/redirect), DMARC, MTA-STS, and the TLSA records of its MX hosts. For an IP address (the one you send from):
forward-confirmed reverse DNS and DNSBL listings, telling "listed" from a list's own error
answers (e.g. a refused public resolver). Every lookup is shown with its status (ok,
NXDOMAIN, NODATA, SERVFAIL, timeout) and latency, and the answers of the system resolver
are compared with those of Postfix's chroot copy of resolv.conf.

With --host, DNS is asked from the mail host itself (DNS over TCP through the SSH
connection, to the nameservers of its resolv.conf): what its Postfix sees.

--resolver: system (resolv.conf, default), chroot (Postfix's copy in the queue directory),
or IP[:PORT] (that server).

--sending-ip / an IP subject: FCrDNS, DNSBLs; --helo: the HELO name must resolve (to that IP).

exit status: 0 nothing wrong, 4 a problem found, 1 error, 2 usage error

examples:
  pfdiag dns example.com
  pfdiag dns 192.0.2.25 --dnsbl-zones zen.spamhaus.org,bl.spamcop.net
  pfdiag dns example.com --sending-ip 192.0.2.25 --helo mail.example.com
  pfdiag dns example.com --host mx1 --resolver chroot
  pfdiag dns ok.test --resolver 127.0.0.1:5353 --format json
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dns", help="MX, SPF, DMARC, MTA-STS, TLSA, reverse DNS and DNSBLs, as Postfix's resolver sees them",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("subject", metavar="DOMAIN|IP")
    p.add_argument("--resolver", default="system", metavar="system|chroot|IP[:PORT]")
    p.add_argument("--helo", metavar="NAME", help="also check that this HELO name resolves (to the sending IP, if known)")
    p.add_argument("--sending-ip", action="append", metavar="IP", default=[],
                   help="the address(es) mail leaves from: reverse DNS (FCrDNS) and DNSBLs (repeatable)")
    p.add_argument("--dnsbl-zones", metavar="Z1,Z2", help="DNSBL zones to ask (default: a common set)")
    p.add_argument("--no-dnsbl", action="store_true", help="do not ask DNSBLs")
    p.add_argument("--no-compare", action="store_true", help="do not compare with the chroot's resolv.conf")
    p.add_argument("--budget", type=float, default=20.0, metavar="SECONDS", help="total time (default 20)")
    p.add_argument("-c", "--config-dir", metavar="DIR", help="Postfix configuration directory (for the queue directory)")
    add_output_options(p, ("text", "md", "json"))
    add_target_options(p)
    p.set_defaults(func=run)


def _finding(f: Any, where: str) -> dict[str, Any]:
    return {"check": f.check_id, "severity": str(f.severity), "summary": f.summary, "cause_id": f.cause_id,
            "values": f.values, "evidence": [{"source": e.source, "excerpt": e.excerpt, "where": where} for e in f.evidence]}  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from checks import dns as d
    from checks.config import queue_directory
    from checks.model import Severity
    from diagnose.target_options import open_target

    if not 0 < args.budget <= 600:
        raise UsageError("--budget must be a number of seconds, 0 < SECONDS <= 600")
    subject = args.subject.strip()
    try:
        ip: str | None = str(ipaddress.ip_address(subject))
    except ValueError:
        ip = None
        d._name(subject)  # a clear usage error for a bad name
    out = Output.from_args(args)
    target, notice = open_target(args)
    if not out.machine:
        out.notice(notice)
    queue_dir = queue_directory(target, args.config_dir)
    timeout = max(1.0, min(5.0, args.budget / 3))
    resolver, described = d.resolver_for(target, args.resolver, queue_dir, timeout)
    where = d.asks_from(target, resolver)
    sending = []
    for text in ([ip] if ip else []) + list(args.sending_ip):
        try:
            sending.append(str(ipaddress.ip_address(text.strip())))
        except ValueError:
            raise UsageError(f"--sending-ip: {text!r} is not an IP address") from None
    sending = list(dict.fromkeys(sending))
    zones = [d._name(z.strip()) for z in args.dnsbl_zones.split(",") if z.strip()] if args.dnsbl_zones else list(d.DEFAULT_DNSBL_ZONES)
    if args.helo:
        d._name(args.helo)
    jobs: dict[str, Any] = {}
    for addr in sending:
        jobs[f"fcrdns {addr}"] = lambda addr=addr: d.fcrdns(resolver, addr)
        if not args.no_dnsbl:
            jobs[f"dnsbl {addr}"] = lambda addr=addr: d.dnsbl_check(resolver, addr, zones)
    if not ip:
        jobs["mx"] = lambda: d.mx_check(resolver, subject)
        jobs["spf"] = lambda: d.spf_check(resolver, subject)
        jobs["dmarc"] = lambda: d.dmarc_check(resolver, subject)
        jobs["mta-sts"] = lambda: d.mta_sts_txt(resolver, subject)
    if args.helo:
        jobs["helo"] = lambda: d.helo_check(resolver, args.helo, sending[0] if sending else None)
    compare = None
    drift = None
    if not args.no_compare and args.resolver == "system" and not ip:
        try:
            chroot, chroot_desc = d.resolver_for(target, "chroot", queue_dir, timeout)
            compare = (chroot, chroot_desc)
            drift = d.server_drift(resolver, chroot, d.RESOLV_HOST, d.chroot_resolv(queue_dir))
            jobs["compare"] = lambda: d.compare_resolvers(resolver, chroot, [(subject, "MX"), (subject, "A")])
        except Exception as exc:  # no chroot copy: nothing to compare, say so
            compare = (None, f"not compared: {exc}")
    pool = ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="pfdiag-dns")
    futures = {name: pool.submit(fn) for name, fn in jobs.items()}
    _, pending = wait(futures.values(), timeout=args.budget)
    pool.shutdown(wait=False, cancel_futures=True)
    findings, results, notes = ([drift] if drift else []), {}, []
    for name, fut in futures.items():
        if fut in pending:
            notes.append(f"{name}: not finished within the {args.budget:g} s budget")
            continue
        if fut.exception() is not None:
            notes.append(f"{name}: {fut.exception()}")
            continue
        res = fut.result()
        results[name] = res
        findings.extend(d.to_findings(res))
    if "mx" in results and not ip:  # TLSA of the MX hosts: what DANE would use
        for host in [h.exchange for h in getattr(results["mx"], "hosts", ())][:3]:
            findings.extend(d.to_findings(d.tlsa_check(resolver, host)))
    sts = results.get("mta-sts")
    if sts is not None and sts.record:  # the policy itself, fetched as an MTA-STS sender would
        policy = d.mta_sts_policy(target, resolver, subject, timeout=max(2.0, args.budget / 3))
        findings.extend(policy.findings([h.exchange for h in getattr(results.get("mx"), "hosts", ())]))
    doc = {
        "schema": SCHEMA, "subject": subject, "kind": "ip" if ip else "domain", "where": where,
        "sending_ips": sending, "helo": args.helo, "budget": args.budget,
        "resolver": described, "compared_with": compare[1] if compare else None,
        "findings": [_finding(f, where) for f in findings], "notes": notes,
    }  # fmt: skip
    problem = any(f.severity >= Severity.PROBLEM for f in findings)
    doc["problem"] = problem
    if out.format == "text" and out.to_tty:
        _render_rich(doc)
    else:
        out.write(doc, {"md": lambda x: render(x, md=True), "text": render})
    return EXIT_PROBLEM if problem else 0


def render(doc: dict[str, Any], md: bool = False) -> str:
    marks = {"ok": "ok  ", "info": "info", "warning": "WARN", "problem": "FAIL", "error": "ERR "}
    head = f"DNS of {doc['subject']} via {doc['resolver']}" + (f" (compared with {doc['compared_with']})" if doc["compared_with"] else "")
    out = [f"# {head}", ""] if md else [head, ""]
    for f in doc["findings"]:
        cause = f" [{f['cause_id']}]" if f["cause_id"] else ""
        line = f"{marks.get(f['severity'], f['severity'])} {f['summary']}{cause}"
        out.append(f"- {line}" if md else line)
        for e in f["evidence"][:2]:
            ex = e["excerpt"].splitlines()[0] if e["excerpt"] else ""
            out.append(f"    {e['source']}: {ex}")
    for n in doc["notes"]:
        out.append(f"note: {n}")
    return "\n".join(out) + "\n"


def _render_rich(doc: dict[str, Any]) -> None:
    """The same lines as render(), coloured by severity on a terminal."""
    from rich.console import Console
    from rich.markup import escape

    styles = {"ok": "green", "info": "dim", "warning": "yellow", "problem": "bold red", "error": "magenta"}
    con = Console(highlight=False)
    for line, f in zip(render(doc).splitlines(), _line_owners(doc)):
        con.print(f"[{styles.get(f, '')}]{escape(line)}[/]" if f in styles else escape(line))


def _line_owners(doc: dict[str, Any]) -> list[str]:
    """The severity each line of render() belongs to ("" for headers, evidence and notes)."""
    out = ["", ""]
    for f in doc["findings"]:
        out.append(f["severity"])
        out += [""] * len(f["evidence"][:2])
    return out + [""] * len(doc["notes"])
