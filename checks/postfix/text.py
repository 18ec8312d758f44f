"""Input shapes shared by the parsers: a string, bytes, or an iterable of lines."""

from __future__ import annotations

from typing import Iterable, Iterator


def text_lines(text_or_lines: str | bytes | Iterable[str | bytes]) -> Iterator[str]:
    """Lines without their line ends; bytes are decoded as UTF-8 with replacement."""
    if isinstance(text_or_lines, bytes):
        text_or_lines = text_or_lines.decode("utf-8", "replace")
    if isinstance(text_or_lines, str):
        yield from text_or_lines.splitlines()
        return
    for line in text_or_lines:
        if isinstance(line, bytes):
            line = line.decode("utf-8", "replace")
        yield line.rstrip("\r\n")
