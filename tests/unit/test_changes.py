"""diagnose/changes.py and `pfdiag report --baseline`: two report documents from the demo
snapshot (a recorded real lab), one of them edited the way a later diagnosis would differ."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from checks.errors import InputError
from diagnose import changes
from diagnose.cli import main


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("changes") / "demo.json"
    assert main(["report", "--demo", "-f", "json", "-o", str(out)]) == 4
    doc: dict[str, Any] = json.loads(out.read_text())
    return doc


def _cause(doc: dict[str, Any], cid: str) -> dict[str, Any]:
    return next(c for c in doc["causes"] if c["id"] == cid)


def _status(ch: changes.Changes) -> dict[str, str]:
    return {c.id: c.status for c in ch.causes}


def test_same_report_changes_nothing(demo: dict[str, Any]) -> None:
    ch = changes.compare(demo, demo)
    assert set(_status(ch).values()) == {"unchanged"} and ch.same_target
    assert ch.deferred_before == ch.deferred_after == 25 and not ch.new_warnings


def test_fixed_cause_gone_from_the_report_is_resolved(demo: dict[str, Any]) -> None:
    new = copy.deepcopy(demo)
    new["causes"] = [c for c in new["causes"] if c["id"] != "E21"]
    st = _status(changes.compare(demo, new))
    assert st["E21"] == "resolved" and st["E09"] == "unchanged"
    new["more_causes"] = 3  # left out, not necessarily fixed
    assert _status(changes.compare(demo, new))["E21"] == "not-listed"


def test_cause_with_old_log_lines_only_is_resolved_and_new_deferral_is_not(demo: dict[str, Any]) -> None:
    new = copy.deepcopy(demo)
    e21 = _cause(new, "E21")
    e21["impact"]["queued_recipients"] = e21["impact"]["queued_messages"] = 0  # mail gone; its old log lines remain
    ch = changes.compare(demo, new)
    assert _status(ch)["E21"] == "resolved"
    assert "no deferral logged since the baseline" in next(c.why for c in ch.causes if c.id == "E21")
    e21["last_seen"] = "2099-01-01T00:00:00Z"  # deferred again after the baseline: not resolved
    assert _status(changes.compare(demo, new))["E21"] == "better"  # fewer queued, but still deferring


def test_new_worse_better(demo: dict[str, Any]) -> None:
    old = copy.deepcopy(demo)
    old["causes"] = [c for c in old["causes"] if c["id"] != "E16"]
    _cause(old, "E09")["impact"]["queued_recipients"] = 2
    _cause(old, "E27")["impact"]["queued_recipients"] = 7
    new = copy.deepcopy(demo)
    _cause(new, "E09")["domains"].append({"domain": "new\x1b[2J.test", "count": 1})
    ch = changes.compare(old, new)
    st = _status(ch)
    assert (st["E16"], st["E09"], st["E27"]) == ("new", "worse", "better")
    assert [c.id for c in ch.causes][:2] == ["E16", "E09"], "new first, then worse"
    e09 = next(c for c in ch.causes if c.id == "E09")
    assert e09.new_domains == ["new\x1b[2J.test"] and e09.why == "queued recipients 2 -> 19"
    d = changes.to_dict(ch)
    assert d["counts"]["new"] == 1 and d["counts"]["worse"] == 1 and json.dumps(d)
    # outside text is shown literally in every format
    text, md, page = changes.render_text(d), changes.render_md(d), changes.render_html(d)
    for out in (text, md, page):
        assert "\x1b" not in out and "\\x1b[2J" in out
    assert "worse:" in text and "E09 No reply after the end of the message" in text
    assert md.startswith("## Changes since the baseline") and "<section" in page


def test_baseline_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError):
        changes.load(str(bad))
    bad.write_text(json.dumps({"schema": "pfdiag.queue/1"}))
    assert main(["report", "--demo", "--baseline", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "not a pfdiag report" in err and "Traceback" not in err
    assert main(["report", "--demo", "--baseline", str(tmp_path / "missing.json")]) == 1


def test_report_cli_with_baseline_all_formats(demo: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = copy.deepcopy(demo)
    old["causes"].append({**copy.deepcopy(_cause(demo, "E21")), "id": "E23", "title": "Blocked for IP or domain reputation"})
    base = tmp_path / "old.json"
    base.write_text(json.dumps(old))
    assert main(["report", "--demo", "--baseline", str(base), "-f", "json"]) == 4
    doc = json.loads(capsys.readouterr().out)
    assert {c["id"]: c["status"] for c in doc["changes"]["causes"]}["E23"] == "resolved"
    for fmt, marker in (("text", "Changes since the baseline"), ("md", "## Changes since the baseline"),
                        ("html", '<section class="changes">')):  # fmt: skip
        out = tmp_path / f"r.{fmt}"
        assert main(["report", "--demo", "--baseline", str(base), "-f", fmt, "-o", str(out)]) == 4
        body = out.read_text()
        assert marker in body and "resolved" in body and "E23 Blocked for IP or domain reputation" in body
        if fmt == "md":
            assert body.index(marker) < body.index("## Causes, most important first")
        if fmt == "html":
            assert body.index(marker) < body.index("<h2>Causes")
        if fmt == "text":
            assert body.startswith("Changes since the baseline")
