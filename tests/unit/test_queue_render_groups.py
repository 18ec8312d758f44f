"""`pfdiag queue` text and Markdown: "Deferred recipients by cause and destination" names each cause
once (id and title), with its destinations under it, most recipients first."""

from __future__ import annotations

import re

import pytest

from checks.config import read_config
from checks.queue import read_queue
from checks.targets import SnapshotTarget
from diagnose.queuereport import build_report, cause_title, render_md, render_text
from diagnose.target_options import demo_path


def _group(cause: str, domain: str, n: int, reason: str) -> dict:
    return {"cause_id": cause, "cause_title": cause_title(cause), "domain": domain, "recipients": n,
            "messages": [f"A{i}B{n}" for i in range(n)], "example_reason": reason, "oldest_arrival": 0.0}  # fmt: skip


@pytest.fixture(scope="module")
def rep():
    target = SnapshotTarget(demo_path())
    cfg = read_config(target, None)
    rep = build_report(read_queue(target), cfg.settings, target, cfg.queue_directory)
    # as checks/queue.py GroupTally.groups() orders them: most recipients first, causes interleaved
    rep["groups"] = [_group("E09", "a.example", 5, "timed out a"), _group("E21", "x.example", 4, "greylisted x"),
                     _group("E09", "b.example", 3, "timed out b"), _group("E09", "c.example", 7 - 6, "timed out c")]  # fmt: skip
    return rep


def test_text_names_each_cause_once_with_its_destinations_under_it(rep):
    text = render_text(rep)
    section = text.split("Deferred recipients by cause and destination\n", 1)[1].split("\n\n", 1)[0]
    lines = section.splitlines()
    heads = [ln for ln in lines if re.match(r"  E\d\d ", ln)]
    assert heads == [f"  {'E09':<12} {cause_title('E09')}", f"  {'E21':<12} {cause_title('E21')}"], section
    assert section.count("E09") == 1 and section.count(cause_title("E09")) == 1
    e09 = section.split(heads[0], 1)[1].split(heads[1], 1)[0]
    assert [m for m in re.findall(r"([a-c])\.example:", e09)] == ["a", "b", "c"]  # under it, most recipients first
    assert "(timed out b)" in e09 and "x.example" not in e09
    assert "x.example: 4 recipient(s)" in section.split(heads[1], 1)[1]


def test_markdown_names_each_cause_once(rep):
    md = render_md(rep)
    section = md.split("## Deferred recipients by cause and destination\n", 1)[1].split("\n## ", 1)[0]
    assert section.count(cause_title("E09")) == 1 and section.count("E09") == 1, section
    rows = [ln for ln in section.splitlines() if ln.startswith("| `")]
    assert [re.search(r"`([a-z]+)\.example`", r).group(1) for r in rows] == ["a", "b", "c", "x"], section
    assert section.index("E09") < section.index("a.example") < section.index("E21") < section.index("x.example")
