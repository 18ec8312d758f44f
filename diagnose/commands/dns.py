"""pfdiag dns DOMAIN|IP: the DNS that decides where mail goes and whether it is accepted."""

from __future__ import annotations

ORDER = 45  # place in pfdiag --help

import argparse
from typing import Any

from diagnose.output import Output, add_output_options
from diagnose.target_options import add_target_options
from diagnose.textsafe import console, rich_text

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


def run(args: argparse.Namespace) -> int:
    from diagnose.dnsreport import Request, build, render
    from diagnose.target_options import open_target

    req = Request(args.subject.strip(), args.resolver, list(args.sending_ip), args.helo,
                  args.dnsbl_zones.split(",") if args.dnsbl_zones else None, not args.no_dnsbl, not args.no_compare,
                  args.budget, args.config_dir)  # fmt: skip
    req.checked()  # bad input: a usage error before anything is opened
    out = Output.from_args(args)
    target, notice = open_target(args)
    if not out.machine:
        out.notice(notice)
    doc = build(target, req)
    if out.format == "text" and out.to_tty:
        _render_rich(doc)
    else:
        out.write(doc, {"md": lambda x: render(x, md=True), "text": render})
    return EXIT_PROBLEM if doc["problem"] else 0


def _render_rich(doc: dict[str, Any]) -> None:
    """The same lines as render(), coloured by severity on a terminal (render() has made them
    visible; as Text they are not parsed for markup either)."""
    from diagnose.dnsreport import line_owners, render

    styles = {"ok": "green", "info": "dim", "warning": "yellow", "problem": "bold red", "error": "magenta"}
    con = console()
    for line, f in zip(render(doc).splitlines(), line_owners(doc)):
        con.print(rich_text(line, styles.get(f, "")))
