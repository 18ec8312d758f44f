"""The text report on a terminal at 80 and 160 columns: nothing cut (the headline panel's title
above all), wrapped paragraphs with a hanging indent, and a snapshot's next retry that is not
"in 0 s" (a recording has no queue file times)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from diagnose import engine, report, session

BOX = "─│╮╯╭╰┐┘┌└┃━┓┛┏┗"


@pytest.fixture(scope="module")
def demo_doc() -> dict[str, Any]:
    target, _ = session.open_from_answers({"target": "demo"}, session.Options())
    facts = engine.collect(target, budget=30)
    engine.run_checks(facts, target, {}, 20.0, None, include_plugins=False)
    return report.build(facts, {})


def cut_lines(text: str) -> list[str]:
    """Lines where a word runs into a box-drawing character: a title or cell cut at the border."""
    return [line for line in text.splitlines() if re.search(rf"[A-Za-z0-9]─+[{BOX}]\s*$", line)]


@pytest.mark.parametrize("width", [80, 160])
def test_nothing_is_cut_and_nothing_is_wider_than_the_terminal(demo_doc: dict[str, Any], width: int) -> None:
    text = report.render_text(demo_doc, width=width)
    assert not cut_lines(text), cut_lines(text)
    assert max(len(line) for line in text.splitlines()) <= width
    headline = demo_doc["verdict"]["headline"]
    panel = text[: text.index("╰")]
    assert " ".join(headline.split()) in " ".join(panel.replace("│", " ").split())  # the whole headline, uncut
    if width == 80:  # too long for a panel title: a short title, the whole headline in the panel
        assert text.splitlines()[0].startswith("╭─ Deferred mail: root cause found ─")
    else:
        assert text.splitlines()[0].startswith(f"╭─ {headline} ─")


def test_wrapped_paragraphs_hang(demo_doc: dict[str, Any]) -> None:
    lines = report.render_text(demo_doc, width=80).splitlines()
    i = next(n for n, line in enumerate(lines) if line.startswith("  evidence ("))
    assert lines[i + 1].startswith("      ") and lines[i + 1].strip()  # the wrapped part stays under the label
    j = next(n for n, line in enumerate(lines) if line.startswith("  fix (master.cf):"))
    assert lines[j + 1].startswith("      ")
    # no line of a cause's detail starts again at the margin (only headings, warnings and the table do)
    start = next(n for n, line in enumerate(lines) if line.startswith("1. E09"))
    for line in lines[start + 2 : start + 40]:
        assert not line or line.startswith(" ") or re.match(r"^\d\. E\d\d", line), line


def test_a_snapshot_has_no_next_retry_in_0_s(demo_doc: dict[str, Any]) -> None:
    text = report.render_text(demo_doc, width=160)
    assert "next retry in 0 s" not in text
    assert "next retry unknown (no queue file times, last attempt logged 2026-12-06 16:10)" in text
    assert "next retry unknown" in report.render_markdown(demo_doc)
