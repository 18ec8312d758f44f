"""One output path for every command: ``-f/--format`` and ``-o/--output``, the same everywhere.

flake8's BaseFormatter is the model: the options choose the format and the file, the command
hands over a document and the renderers it has, and this decides where the text goes - stdout,
or the file -o names (written whole, so a failed run leaves no half report). Notices go to
stderr and never into the document; colour only when the text goes to a terminal.

    add_output_options(p, ("text", "md", "json"))
    ...
    out = Output.from_args(args)
    out.write(doc, {"text": render_text, "md": render_md})   # json: the document itself
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, Mapping, Sequence

from checks.errors import InputError, UsageError

Renderer = Callable[[Any], str]


def add_output_options(p: argparse.ArgumentParser, formats: Sequence[str] = ("text", "md", "json"), *,
                       output: bool = True, default: str = "text") -> None:  # fmt: skip
    """-f/--format (the formats the command renders) and, unless the command's -o names
    something else (snapshot's bundle), -o/--output FILE."""
    p.add_argument("-f", "--format", choices=tuple(formats), default=default,
                   help=f"{', '.join(formats)} (default {default})")  # fmt: skip
    if output:
        p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")


def to_json(doc: Any) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


class Output:
    """Where one command's document goes."""

    def __init__(self, fmt: str = "text", path: str | None = None) -> None:
        self.format = fmt
        self.path = path or None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Output:
        return cls(getattr(args, "format", None) or "text", getattr(args, "output", None))

    @property
    def to_tty(self) -> bool:
        """The text goes to a terminal (colour and terminal width are welcome)."""
        return self.path is None and sys.stdout.isatty()

    @property
    def machine(self) -> bool:
        """JSON: stdout carries nothing but the document."""
        return self.format == "json"

    def render(self, doc: Any, renderers: Mapping[str, Renderer]) -> str:
        if self.format in renderers:
            return renderers[self.format](doc)
        if self.format == "json":
            return to_json(doc)
        raise UsageError(f"--format {self.format}: this command writes {', '.join(sorted({*renderers, 'json'}))}")

    def write(self, doc: Any, renderers: Mapping[str, Renderer]) -> None:
        self.emit(self.render(doc, renderers))

    def emit(self, text: str) -> None:
        """The finished text: to -o FILE, or stdout."""
        if self.path is None:
            sys.stdout.write(text)
            sys.stdout.flush()
            return
        try:
            with open(self.path, "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as exc:
            raise InputError(f"{self.path}: cannot write ({exc.strerror or exc})") from None

    def notice(self, text: str | None) -> None:
        """A line for the user, on stderr: never mixed into the document."""
        if text:
            from diagnose.textsafe import visible_lines

            print(visible_lines(text), file=sys.stderr)  # it may quote a path or a host's words: literal


def write_text(text: str, path: str | None) -> None:
    """emit() for a caller that has no Output (the wizard saving a report)."""
    Output("text", path).emit(text)
