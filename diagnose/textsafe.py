"""The one rule for text from outside: shown literally, in every format.

Log lines, remote servers' replies and banners, DNS answers, queue reasons, file and host
names are attacker-controlled. A renderer never lets such text be *interpreted*:

- terminal (rich): no markup, no emoji codes, no highlighting of outside text: it goes into
  a markup template of ours only through :func:`rich_markup`'s slots, or is handed over as a
  ``rich.text.Text`` (:func:`rich_text`); never as a str rich would parse. Consoles come from
  :func:`console`;
- plain text (probe, dns, queue, config renderers, stderr notices): :func:`visible`;
- Markdown: inline code spans with a fence longer than any run of backticks inside
  (:func:`md_code`), a fenced block likewise (:func:`md_block`), or every Markdown
  metacharacter backslash-escaped for prose that mixes our words with outside text
  (:func:`md_text`); a ``|`` is escaped in tables either way;
- HTML: :func:`html` (``html.escape`` of the visible form);
- JSON keeps the exact original string: nothing here is applied to JSON values.

The visible form (:func:`visible`): every character that a terminal or viewer would act on
or hide instead of showing - C0 and C1 control characters (ESC, CR, NUL, BEL, also TAB and
newline), DEL, Unicode format characters (bidi overrides and isolates such as U+202E,
zero-width characters, the BOM, soft hyphen), line/paragraph separators and lone surrogates
(bytes that were not UTF-8, decoded with surrogateescape) - is written as Python writes it
in a string literal: ``\\x1b``, ``\\r``, ``\\n``, ``\\t``, ``\\x00``, ``\\u202e``,
``\\udcff``. Everything else, wide characters and emoji included, is shown as it is. A
backslash that was in the text is left alone (so ``\\x1b`` in the output may also have been
those four characters in the input; the JSON report holds the exact string).
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import IO, TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

_HIDDEN = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_NOT_PLAIN = re.compile(r"[^\x20-\x7e]")  # printable ASCII is always shown as it is: the fast path
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


@lru_cache(maxsize=4096)
def _show(ch: str) -> str:
    if unicodedata.category(ch) not in _HIDDEN:
        return ch
    if ch in _NAMED:
        return _NAMED[ch]
    n = ord(ch)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def visible(text: Any) -> str:
    """The text with every control, format and surrogate character written out (see the module doc)."""
    s = "" if text is None else str(text)
    if not _NOT_PLAIN.search(s):
        return s
    return _NOT_PLAIN.sub(lambda m: _show(m.group()), s)


def visible_lines(text: Any) -> str:
    """:func:`visible`, keeping line breaks (for multi-line text that is meant to be several lines)."""
    return "\n".join(visible(line) for line in ("" if text is None else str(text)).split("\n"))


# -- terminal (rich) -------------------------------------------------------------------------


_SLOT = 0xF0000  # supplementary private use area: a placeholder per value, never in a template of ours


def rich_markup(template: str, *values: Any) -> Text:
    """Our own markup template with outside values in its ``{}`` slots, as a rich Text: the
    template's tags style the values around them, and nothing in a value is parsed (no tag,
    no escape, no emoji code) - each value appears as :func:`visible` writes it.

    ``rich_markup("[dim]evidence ({}):[/] {}", where, excerpt)``; a literal brace in the
    template is doubled, as for str.format."""
    from rich.text import Text

    marked = Text.from_markup(template.format(*(chr(_SLOT + i) for i in range(len(values)))), emoji=False)
    out = Text(style=marked.style, end=marked.end)
    last = 0
    for pos, ch in enumerate(marked.plain):
        i = ord(ch) - _SLOT
        if 0 <= i < len(values):
            out.append_text(marked[last:pos])
            piece = Text(visible(values[i]))
            for span in marked[pos].spans:  # the template's styles at this slot, outermost first
                piece.stylize(span.style)
            out.append_text(piece)
            last = pos + 1
    out.append_text(marked[last:])
    return out


def rich_text(text: Any, style: str = "") -> Text:
    """The outside text as a rich Text: never parsed for markup or emoji, never highlighted."""
    from rich.text import Text

    return Text(visible(text), style=style)


def console(file: IO[str] | None = None, **kw: Any) -> Console:
    """A rich Console that interprets nothing in what it prints but our own markup: no emoji
    codes (':bomb:' stays text), no highlighting (numbers, URLs, IPs in a reply keep one colour)."""
    from rich.console import Console

    kw.setdefault("highlight", False)
    kw.setdefault("emoji", False)
    return Console(file=file, **kw)


# -- Markdown --------------------------------------------------------------------------------

# '_' only where it could start or end emphasis (not inside a word: smtp_helo_timeout stays as it is),
# ':' only where it could open an emoji code
_MD_SPECIAL = re.compile(r"([\\`*\[\]<>|~&]|(?<![^\W_])_|_(?![^\W_])|:(?=[A-Za-z+-][\w+-]*:))")
_MD_LEADING = re.compile(r"^(\s*)([-=+#])|^(\s*\d{1,9})([.)])(?=\s|$)")  # a list, heading or numbered list at the start
_TICKS = re.compile(r"`+")


def md_text(text: Any) -> str:
    """Outside text inside Markdown prose or a table cell: every character Markdown (CommonMark
    and GitHub's tables) could act on is backslash-escaped, so it renders exactly as written:
    no emphasis, link, image, raw HTML, entity, heading, list, quote or table-cell break."""
    s = _MD_SPECIAL.sub(lambda m: "\\" + m.group(), visible(text))
    return _MD_LEADING.sub(lambda m: f"{m.group(1)}\\{m.group(2)}" if m.group(2) else f"{m.group(3)}\\{m.group(4)}", s, count=1)


def md_code(text: Any, table: bool = False) -> str:
    """Outside text as an inline code span, shown verbatim (no escapes, entities or HTML act
    inside one). The fence is one backtick longer than the longest run inside; a space pads a
    text that starts or ends with a backtick or space. In a table cell (table=True) a ``|`` is
    escaped, which GitHub's tables need even inside code."""
    s = visible(text)
    if not s:
        return ""
    fence = "`" * (max((len(m) for m in _TICKS.findall(s)), default=0) + 1)
    pad = " " if s[0] in "` " or s[-1] in "` " else ""
    if table:
        s = s.replace("|", "\\|")
    return f"{fence}{pad}{s}{pad}{fence}"


def md_block(lines: Iterable[Any], info: str = "") -> list[str]:
    """Outside lines as a fenced code block (one line each, visible), its fence longer than
    any run of backticks in them, so a line cannot close it."""
    shown = [visible(x) for x in lines]
    longest = max((len(m) for line in shown for m in _TICKS.findall(line)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence + info, *shown, fence]


# -- HTML ------------------------------------------------------------------------------------


def html(text: Any) -> str:
    """Outside text for HTML text or an attribute value: visible, then escaped (quotes too)."""
    import html as _html  # with the first HTML text: every command's start-up imports this module

    return _html.escape(visible(text), quote=True)
