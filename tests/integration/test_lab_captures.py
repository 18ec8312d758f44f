"""The captured lab outputs (tests/data/lab/) hang together: no lab needed, milliseconds.

They are what unit tests (and the capture bundle of tests/lab_bundle.py) rely on, so a partial or hand-edited capture
should fail here rather than mislead a parser test.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.lab.postfix import Delivery
from tests.lab.scenarios import SCENARIOS

DATA = Path(__file__).resolve().parents[1] / "data" / "lab"


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def deliveries() -> list[Delivery]:
    out = [Delivery.parse(line) for line in (DATA / "postfix.log").read_text().splitlines()]
    return [d for d in out if d is not None]


@pytest.fixture(scope="module")
def summary() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / "scenarios.json").read_text())
    return data


def test_all_files_are_there() -> None:
    for name in ("postfix.log", "postqueue-j.jsonl", "postqueue-p.txt", "postqueue-j.first.jsonl",
                 "postqueue-p.first.txt", "postconf-n.txt", "postconf-d.txt", "postconf-P.txt", "postconf-M.txt",
                 "scenarios.json", "dns/postfix.log", "dns/postqueue-j.jsonl", "dns/postqueue-p.txt"):  # fmt: skip
        assert (DATA / name).is_file(), name


def test_every_scenario_was_captured(summary: dict[str, Any]) -> None:
    assert {s.name for s in SCENARIOS} <= set(summary["peers"])
    assert {m["scenario"] for m in summary["messages"]} >= {s.name for s in SCENARIOS}


def test_first_attempt_reasons_match_the_scenario_table(summary: dict[str, Any], deliveries: list[Delivery]) -> None:
    by_qid: dict[str, list[Delivery]] = {}
    for d in deliveries:
        by_qid.setdefault(d.queue_id, []).append(d)
    for s in SCENARIOS:
        msg = next(m for m in summary["messages"] if m["scenario"] == s.name)
        first = by_qid[msg["queue_ids"][0]][0]
        assert (first.status, first.dsn) == (s.status, s.dsn), first.line
        assert s.reason_re(summary["peers"][s.name]["port"]).search(first.reason), first.line


def test_the_log_has_what_the_readme_promises(deliveries: list[Delivery]) -> None:
    eod = [d for d in deliveries if "timed out while sending end of data" in d.reason]
    assert len({d.queue_id for d in eod}) >= 5
    later_sent = {d.queue_id for d in deliveries if d.status == "sent"} & {d.queue_id for d in eod}
    assert len(later_sent) >= 2  # end-of-data timeouts delivered by the retry (the PIX peer)
    assert any(d.program == "postfix/error" and d.reason.startswith("delivery temporarily suspended: ")
               for d in deliveries)  # fmt: skip
    assert len({d.reason.split(" said: ")[-1][:12] for d in deliveries if d.status == "deferred"}) >= 8


def test_pix_duplicates(summary: dict[str, Any]) -> None:
    pix = [m for m in summary["messages"] if m["scenario"] == "pix"]
    assert pix and all(m["copies_at_peer"] == 2 and m["accepted_by_peer"] == 1 for m in pix)


def test_postqueue_json_agrees_with_the_log(deliveries: list[Delivery]) -> None:
    last: dict[tuple[str, str], Delivery] = {}
    for d in deliveries:
        last[(d.queue_id, d.to)] = d
    queued = _jsonl(DATA / "postqueue-j.jsonl")
    assert {m["queue_name"] for m in queued} == {"deferred", "hold"}
    for m in queued:
        for r in m["recipients"]:
            d = last[(m["queue_id"], r["address"])]
            assert d.status == "deferred"
            assert r["delay_reason"] == d.reason


def test_postqueue_p_lists_the_same_messages() -> None:
    ids = {m["queue_id"] for m in _jsonl(DATA / "postqueue-j.jsonl")}
    listed = set(re.findall(r"^([0-9A-F]{6,})[*!]?\s", (DATA / "postqueue-p.txt").read_text(), re.MULTILINE))
    assert listed == ids


def test_dns_capture(summary: dict[str, Any]) -> None:
    results = summary["dns"]["results"]
    assert results["user@servfail.test"].startswith("deferred 4.4.3 ")
    assert "Host not found, try again" in results["user@mxservfail.test"]
    assert results["user@nxdomain.test"].startswith("bounced 5.4.4 ")
    log = (DATA / "dns" / "postfix.log").read_text()
    assert "Name service error for name=mx.servfail.test type=AAAA: Host not found, try again" in log
