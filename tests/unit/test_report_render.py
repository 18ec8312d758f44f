"""diagnose/html.py on the demo report and on hand-made edge cases: the page parses, has one <svg>
for the retry chart, a heat strip row per cause, names every cause, keeps hostile text from logs and SMTP replies inert, and stays small
for a huge queue. Assertions are on structure, not wording."""

from __future__ import annotations

import copy
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from checks.targets import SnapshotTarget
from diagnose import engine, report
from diagnose.cli import main
from diagnose.html import heat_strip, render_html, retry_schedule
from diagnose.target_options import demo_path

EVIL = '<script>alert(1)</script><img src=x onerror=alert(2)><svg onload=alert(3)>"\'&'


class Page(HTMLParser):
    """Counts tags, and records anything that would run or load: scripts, event handlers, external URLs."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: dict[str, int] = {}
        self.active: list[str] = []
        self.open: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] = self.tags.get(tag, 0) + 1
        if tag in ("script", "img", "iframe", "object", "embed", "link"):
            self.active.append(tag)
        for k, v in attrs:
            if k.startswith("on") or (k in ("src", "href", "xlink:href") and v and not v.startswith("#")):
                self.active.append(f"{tag} {k}={v}")
        if tag not in ("meta", "br", "line", "circle", "rect", "hr", "!doctype"):
            self.open.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] = self.tags.get(tag, 0) + 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("line", "circle", "rect") and (not self.open or self.open[-1] != tag):
            return
        assert self.open and self.open[-1] == tag, f"</{tag}> closes <{self.open[-1] if self.open else None}>"
        self.open.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> Page:
    p = Page()
    p.feed(page)
    p.close()
    return p


def svg_count(page: str) -> int:
    return parse(page).tags.get("svg", 0)


@pytest.fixture(scope="module")
def demo() -> dict[str, Any]:
    return report.build(engine.gather(SnapshotTarget(demo_path()), {}), {})


def minimal(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"schema": "pfdiag.report/1", "verdict": {"status": "root-cause", "exit_code": 4,
                           "headline": "h", "summary": "s"}, "target": {"where": "local", "live": True},
                           "causes": [], "warnings": [], "errors": [], "steps": [], "queue": None, "retry": None}  # fmt: skip
    doc.update(over)
    return doc


def cause(cid: str, first: str | None = "2026-11-28T10:00:00Z", last: str | None = "2026-11-28T12:00:00Z") -> dict[str, Any]:
    return {"rank": 1, "id": cid, "title": f"title {cid}", "root_cause": True, "confidence": 0.9,
            "confidence_label": "high", "why": ["w"], "impact": {"queued_recipients": 1, "log_messages": 1},
            "domains": [{"domain": "example.org", "count": 1}], "first_seen": first, "last_seen": last,
            "meaning": "m", "evidence": [], "underlying": [], "fixes": [], "queue_actions": []}  # fmt: skip


def test_demo_page_structure(demo: dict[str, Any]) -> None:
    page = render_html(demo)
    p = parse(page)
    assert page.startswith("<!DOCTYPE html>") and p.open == [], f"unclosed: {p.open}"
    assert p.tags["svg"] == 1 and p.active == [], p.active
    assert demo["causes"], "the demo has causes"
    for c in demo["causes"]:
        assert f'id="{c["id"]}"' in page
        assert f'<span class=hs-label>{c["id"]}</span>' in page, "each cause has a row in the heat strip"
    for s in demo["steps"]:
        assert s["title"] in page
    assert len(page.encode()) < 200_000


def test_queue_actions_are_copyable_commands(demo: dict[str, Any]) -> None:
    doc = copy.deepcopy(demo)
    doc["causes"][0]["queue_actions"] = [{"action": "hold", "argv": ["pfdiag", "queue", "hold", "--domain", "a b;rm -rf /"],
                                          "why": "x"}]  # fmt: skip
    page = render_html(doc)
    assert "pfdiag queue hold --domain &#x27;a b;rm -rf /&#x27;" in page, "shell-quoted, then HTML-escaped"


def test_hostile_log_line_and_smtp_reply_are_inert(demo: dict[str, Any]) -> None:
    doc = copy.deepcopy(demo)
    c = doc["causes"][0]
    c["evidence"].append({"kind": "log", "source": "mail log", "where": EVIL,
                          "excerpt": f"postfix/smtp[1]: host mx[192.0.2.1] said: 451 {EVIL} (in reply to end of DATA)"})
    c["why"].append(EVIL)
    c["fixes"].append({"kind": EVIL, "text": EVIL})
    c["queue_actions"].append({"action": "hold", "argv": ["pfdiag", EVIL], "why": EVIL})
    if c["underlying"]:
        c["underlying"][0]["evidence"].append(EVIL)
    doc["verdict"]["headline"] = EVIL
    doc["warnings"].append({"summary": EVIL})
    doc["errors"].append({"check": EVIL, "summary": EVIL})
    doc["steps"].append({"id": EVIL, "title": EVIL, "state": EVIL, "seconds": 1, "where": EVIL, "detail": EVIL})
    doc["target"]["where"] = EVIL
    doc["queue"]["arrivals"].append({"arrival": doc["queue"]["now"], "queue": EVIL, "causes": [EVIL]})
    page = render_html(doc)
    p = parse(page)
    assert p.active == [] and p.open == [] and p.tags["svg"] == 1, p.active
    assert "<script" not in page.lower() and "onerror=" not in page.replace("onerror=alert(2)&gt;", "")
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 8
    assert any("<script>alert(1)</script>" in t for t in p.text), "the text reads as it was, only inert"


def test_huge_queue_is_aggregated(demo: dict[str, Any]) -> None:
    doc = copy.deepcopy(demo)
    now = doc["queue"]["now"]
    ids = [c["id"] for c in doc["causes"]]
    doc["queue"]["arrivals"] = [{"arrival": now - i * 37, "queue": "deferred", "causes": ids}  # every cause, worst case
                                for i in range(10_000)]  # fmt: skip
    doc["queue"]["total_messages"] = 10_000
    page = render_html(doc)
    size = len(page.encode())
    assert size < 1_000_000, size
    assert svg_count(page) == 1
    assert "10000" in page, "the page says how many queued messages the chart counts"


H = 1796482800  # 2026-12-05 15:00 UTC, the start of an hour


def test_heat_strip_shows_change_per_cause_and_hour() -> None:
    doc = minimal(causes=[cause("E09"), cause("E21")],
                  log_hours={"E09": [[H, 2], [H + 3600, 40], [H + 7200, 3]], "E21": [[H + 3600, 1]]})  # fmt: skip
    strip = heat_strip(doc)
    p = parse(strip)
    assert p.open == [] and p.tags["i"] == 6  # two rows of three hours
    e09 = strip.split("<span class=hs-label>E09</span>")[1].split("</div>")[0]
    assert re.findall(r"class=l(\d)", e09) == ["1", "4", "2"] and 'title="E09 12-05 16:00 UTC: 40"' in e09
    e21 = strip.split("<span class=hs-label>E21</span>")[1].split("</div>")[0]
    assert re.findall(r"class=l(\d)", e21) == ["0", "1", "0"]


def test_heat_strip_collapses_when_nothing_changes() -> None:
    """A server that defers all day the same way: one sentence, not a dozen identical bars."""
    same = {f"E{i:02d}": [[H + k * 3600, 10] for k in range(12)] for i in range(1, 13)}
    doc = minimal(causes=[cause(c) for c in same], log_hours=same)
    strip = heat_strip(doc)
    assert "<i " not in strip and strip.count("<p") == 1
    assert strip.startswith('<p class="hs hs-steady">No change from 2026-12-05 15:00 .. 2026-12-06 03:00 UTC: E01 about 10')
    # one row steady, another changing: the steady row is one line of text, the other a strip
    mixed = minimal(causes=[cause("E01"), cause("E02")], log_hours={"E01": same["E01"], "E02": [[H, 1], [H + 7200, 50]]})
    strip = heat_strip(mixed)
    assert "no change: about 10 deferral(s) every hour" in strip and strip.count("<i ") == 12


def test_heat_strip_edge_cases() -> None:
    assert "nothing to draw" in heat_strip(minimal())  # no log hours at all
    bad = minimal(causes=[cause("E04")], log_hours={"E04": [["soon", 1], None, [H, "x"], [H, 3, 4]]})
    assert "nothing to draw" in heat_strip(bad)  # garbage is skipped, not a traceback
    long = minimal(causes=[cause("E09")], log_hours={"E09": [[H + k * 3600, k % 5] for k in range(24 * 30)]})
    assert heat_strip(long).count("<i ") <= 48  # a month: counted into wider columns


def test_retry_schedule_marks() -> None:
    t = {"attempt_count": 5, "attempt_offsets": [0, 300, 600, 1200], "warning_offset": 14400,
         "expires_offset": 432000, "lifetime": 432000}
    svg = retry_schedule(minimal(retry={"timeline": t}))
    assert svg_count(svg) == 1
    assert svg.count("<circle") == 4, "one mark per listed attempt"
    assert "stroke-dasharray" in svg, "attempts beyond the listed ones are drawn as a dashed run"
    assert "#e0a800" in svg and "#a40000" in svg, "delay warning and expiry are marked"
    assert "+4.0h" in svg and "+5.0d" in svg and "+5m" in svg
    xs = [float(v) for v in re.findall(r'<circle cx="([\d.]+)"', svg)]
    assert xs == sorted(xs) and len(set(xs)) == 4


@pytest.mark.parametrize("timeline", [None, {}, {"attempt_offsets": []}, {"attempt_offsets": [0]},
                                      {"attempt_offsets": ["x", None, -5]}, {"expires_offset": 3600}])  # fmt: skip
def test_retry_schedule_missing_data(timeline: Any) -> None:
    page = render_html(minimal(causes=[cause("E09")], retry={"timeline": timeline} if timeline is not None else None))
    p = parse(page)
    assert p.open == [] and p.tags.get("svg", 0) == (1 if timeline else 0)


def test_sparse_doc_renders() -> None:
    """A hand-written or older report with fields missing: rendered, not a KeyError."""
    doc = {"verdict": {"status": "undiagnosed"}, "causes": [{"id": "E09", "evidence": ["a bare string", None],
           "underlying": [7], "fixes": ["x"], "queue_actions": [{"argv": []}]}, {"id": "E11", "root_cause": False}],
           "errors": [{"summary": "read the mail queue: Postfix is not running"}, "junk"],
           "queue": {"arrivals": [{"arrival": 1.8e9, "causes": [["E09"], None, "E09"]}]},
           "steps": [{"id": "queue", "seconds": None}]}  # fmt: skip
    page = render_html(doc)
    p = parse(page)
    assert p.open == [] and 'id="E09"' in page and 'id="E11"' in page and "collateral" in page
    assert p.tags.get("svg") is None and "nothing to draw by hour" in page, "no log hours, no retry chart"
    assert "Postfix is not running" in page


def test_redacted_badge(demo: dict[str, Any]) -> None:
    def h1(page: str) -> str:
        return page.split("<h1>", 1)[1].split("</h1>", 1)[0]

    assert "redacted" not in h1(render_html(demo))
    assert ">redacted<" in h1(render_html({**demo, "redacted": True}))


def test_cli_writes_html_and_exits_4(tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    assert main(["report", "--demo", "-f", "html", "-o", str(out)]) == 4
    page = out.read_text(encoding="utf-8")
    p = parse(page)
    assert p.tags["svg"] == 1 and p.active == [] and p.open == []


def test_every_section_once(demo: dict[str, Any]) -> None:
    """A configuration risk is listed under the retry schedule and is not repeated as a warning;
    every heading appears once."""
    doc = copy.deepcopy(demo)
    doc["retry"]["risks"] = [{"parameter": "smtp_data_done_timeout", "why": "lowered to 60 s"}]
    doc["warnings"] = [{"summary": "smtp_data_done_timeout: lowered to 60 s"}, {"summary": "another warning"}]
    page = render_html(doc)
    assert page.count("lowered to 60 s") == 1 and "another warning" in page
    heads = re.findall(r"<h2>([^<]*)</h2>", page)
    assert len(heads) == len(set(heads)) and heads[:3] == ["Do this now", "Causes, most important first", "Deferrals by hour"]
