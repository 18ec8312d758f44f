"""pfdiag's command line: argparse, main(argv) -> int, one error handler.

Exit codes: 0 ok, 1 a PfdiagError (one clear line), 2 usage error,
3 a bug (traceback only with --debug), 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn, Sequence

from checks.errors import PfdiagError, UsageError
from diagnose import __version__
from diagnose.textsafe import visible

EPILOG = """\
examples:
  pfdiag                                     on a terminal: the guided wizard
  pfdiag report                              the whole diagnosis, no questions (--demo: the shipped demo)
  pfdiag report -f md --redact -o ticket.md  for a support ticket (also -f json, -f html)
  pfdiag report --host mx1                   a mail host over SSH; --inventory FILE: many hosts
  pfdiag logs /var/log --since 24h           deferral causes in rotated logs
  pfdiag queue hold --cause E09              hold the mail of one cause (dry run first)
  pfdiag config --propose seed               faster retries: the change and its timeline
  pfdiag probe example.com                   SMTP to the next hop, each phase timed
  pfdiag dns example.com                     the DNS that decides where mail goes
  pfdiag snapshot -o mx1.tar.gz --redact     a bundle to diagnose elsewhere (--snapshot FILE)
  pfdiag explain E09                         what a cause means and how to fix it
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2, no usage dump
        raise UsageError(f"{message}{_did_you_mean(self, message)} (see {self.prog} --help)")

    def _get_formatter(self) -> argparse.HelpFormatter:
        # argparse makes a formatter for every add_argument, and HelpFormatter finds its width with
        # shutil.get_terminal_size: importing shutil (and with it bz2, lzma) is ~3 ms of every start-up
        return self.formatter_class(prog=self.prog, width=_width())  # type: ignore[call-arg]


def _width() -> int:
    """shutil.get_terminal_size().columns - 2, as HelpFormatter would use, without importing shutil."""
    import os

    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns if sys.__stdout__ else 0
        except (AttributeError, ValueError, OSError):
            columns = 0
    return (columns or 80) - 2


def _options_of(parser: argparse.ArgumentParser) -> set[str]:
    found: set[str] = set()
    for action in parser._actions:
        found.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= _options_of(sub)
    return found


def _did_you_mean(parser: argparse.ArgumentParser, message: str) -> str:
    """'; did you mean report?' for a misspelt command or option (difflib's close matches)."""
    import difflib
    import re

    m = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if m:
        choices = re.findall(r"'([^']*)'", m[2]) or [c.strip() for c in m[2].split(",")]
        close = difflib.get_close_matches(m[1], choices, n=1, cutoff=0.6)
        return f"; did you mean {close[0]}?" if close else ""
    m = re.search(r"unrecognized arguments: (.*)", message)
    if m:
        known = sorted(_options_of(parser))
        words = [w for w in m[1].split() if w.startswith("-")]
        close = [c for w in words for c in difflib.get_close_matches(w.split("=")[0], known, n=1, cutoff=0.7)]
        return f"; did you mean {', '.join(dict.fromkeys(close))}?" if close else ""
    return ""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole CLI; with ``command`` (what the user asked for) only that subcommand is loaded."""
    parser = _Parser(
        prog="pfdiag",
        description="Find out why Postfix mail is stuck as status=deferred, and what to do about it.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pfdiag {__version__}")
    parser.add_argument("--debug", action="store_true", help="show a traceback on errors")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")
    from diagnose.commands import command_modules

    for module in command_modules(command):
        module.add_parser(sub)
    return parser


def _wizard(argv: list[str]) -> int:
    """`pfdiag` alone on a terminal: the guided wizard, with report's options."""
    return main(["wizard", *argv])


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        # the first word that is not an option names the subcommand: load only that one
        from diagnose.commands import command_names

        first = next((a for a in argv if not a.startswith("-")), None)
        if argv and argv[0].startswith("-") and argv[0] not in ("--debug", "--version", "-h", "--help") \
                and not set(argv) & command_names():
            # `pfdiag --demo`, `pfdiag --host mx1`: the wizard on a terminal, the report elsewhere
            tty = sys.stdin is not None and sys.stdin.isatty() and sys.stdout is not None and sys.stdout.isatty()
            return _wizard(argv) if tty else main(["report", *argv])
        parser = build_parser(first)
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            if sys.stdin is not None and sys.stdin.isatty() and sys.stdout is not None and sys.stdout.isatty():
                return _wizard(argv)
            parser.print_help()
            print("\n(run pfdiag in a terminal for the guided wizard, or pfdiag report for the same diagnosis without questions)")
            return 0
        return int(args.func(args) or 0)
    except PfdiagError as exc:
        if debug:
            raise
        print(f"pfdiag: {visible(exc)}", file=sys.stderr)  # a file name or a reply in it: one line, shown literally
        return exc.exit_code
    except KeyboardInterrupt:
        print("pfdiag: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # a bug: say so in one line unless --debug
        if debug:
            raise
        print(f"pfdiag: internal error: {type(exc).__name__}: {visible(exc)} (run again with --debug for details)", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
