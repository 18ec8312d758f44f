"""pfdiag logs: deferral analysis of Postfix logs (placeholder until the analyser lands)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("logs", help="analyse deferrals in Postfix logs")
    p.add_argument("paths", nargs="*", metavar="FILE|DIR|-")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return 0
