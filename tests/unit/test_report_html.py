"""The self-contained HTML report: well-formed, a heat strip and an inline SVG retry chart, every cause present,
hostile text from logs and remote replies inert, and small even for a huge queue."""

from __future__ import annotations

import copy
from html.parser import HTMLParser
from pathlib import Path

import pytest

from checks.targets import SnapshotTarget
from diagnose import engine, report
from diagnose.cli import main
from diagnose.html import render_html
from diagnose.target_options import demo_path


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.count: dict[str, int] = {}
        self.external: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.count[tag] = self.count.get(tag, 0) + 1
        if tag == "script":
            self.scripts += 1
        for k, v in attrs:
            if k in ("src", "href") and v and not v.startswith("#"):
                self.external.append(v)


def parse(page: str) -> Tags:
    t = Tags()
    t.feed(page)
    t.close()
    return t


@pytest.fixture(scope="module")
def demo() -> dict:
    return report.build(engine.gather(SnapshotTarget(demo_path()), {}, budget=60), {"target": "demo"})


def test_demo_page(demo: dict) -> None:
    page = render_html(demo)
    tags = parse(page)
    assert page.startswith("<!DOCTYPE html>") and tags.count["svg"] == 1 and "Deferrals by hour" in page
    assert tags.scripts == 0 and tags.external == [], "self-contained: nothing loaded from elsewhere"
    for c in demo["causes"]:
        assert f'id="{c["id"]}"' in page
    assert "may have been delivered twice" in page and "expires, returned to sender" in page


def test_hostile_text_is_inert(demo: dict) -> None:
    doc = copy.deepcopy(demo)
    evil = '<script>alert(1)</script><img src=x onerror=alert(2)>"'
    doc["causes"][0]["evidence"][0]["excerpt"] = f"host mx[192.0.2.1] said: 451 {evil}"
    doc["causes"][0]["title"] = evil
    doc["verdict"]["headline"] = evil
    page = render_html(doc)
    tags = parse(page)
    assert tags.scripts == 0 and "img" not in tags.count
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_huge_queue_stays_small(demo: dict) -> None:
    doc = copy.deepcopy(demo)
    base = doc["queue"]["now"] or 1.8e9
    doc["queue"]["arrivals"] = [{"arrival": base - i * 7, "queue": "deferred", "causes": ["E09", "E32"]}
                                for i in range(10_000)]  # fmt: skip
    page = render_html(doc)
    assert len(page.encode()) < 1_000_000
    assert parse(page).count["svg"] == 1


def test_missing_data_still_renders() -> None:
    doc = {"verdict": {"status": "undiagnosed", "exit_code": 1, "headline": "Could not diagnose", "summary": "x"},
           "target": {"where": "local", "live": True}, "causes": [], "warnings": [], "errors": [
               {"summary": "read the mail queue: postqueue -j: Postfix is not running"}], "steps": [], "queue": None,
           "retry": None}  # fmt: skip
    page = render_html(doc)
    assert "Postfix is not running" in page and parse(page).count.get("svg", 0) == 0


def test_redacted_badge(demo: dict) -> None:
    assert "redacted" not in render_html(demo).split("<h1>")[1].split("</h1>")[0]
    assert ">redacted<" in render_html({**demo, "redacted": True})


def test_cli_writes_the_page(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report.html"
    assert main(["report", "--demo", "-f", "html", "-o", str(out)]) == 4
    assert parse(out.read_text()).count["svg"] == 1
