"""The diagnosis's queue step on a big queue (issues 13 and 11): the digest it builds while
postqueue lists says what the full `pfdiag queue` report would (the same causes, counts,
first next attempt and expiry, arrivals), holds no entry per message, and ranking the
causes is linear in the queue ids. A 20,000-message snapshot bundle drives `pfdiag report`
with no Postfix (benchmarks/big_queue/bundle.py makes it from the demo snapshot)."""

from __future__ import annotations

import ast
import os
import random
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from checks.config import read_config
from checks.queue import QueueRead, read_queue
from checks.targets import LocalTarget, SnapshotTarget
from diagnose import engine, report
from diagnose.correlate import rank
from diagnose.queuereport import ARRIVALS, DIGEST_SCHEMA, QueueDigest, build_report
from diagnose.target_options import demo_path
from tests.big_queue import make_bundle

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def listing(tmp_path_factory):
    """The demo's real messages, 3,000 of them with other ids and ages; a queue directory
    whose files give a third of the deferred ones a real mtime (the rest are 'assumed');
    null senders and forced expiries among them."""
    target = SnapshotTarget(demo_path())
    cfg = read_config(target, None)
    base = read_queue(target)
    rnd = random.Random(11)
    qdir = tmp_path_factory.mktemp("queue")
    msgs = []
    for k in range(3000):
        m = base.messages[k % len(base.messages)]
        m = replace(m, queue_id=f"{k + 0x1000:07X}AB", queue_name=rnd.choice(["deferred"] * 4 + ["hold", "active"]),
                    arrival_time=m.arrival_time - rnd.randrange(0, 6 * 86400), forced_expire=rnd.random() < 0.02,
                    sender=rnd.choice([m.sender, m.sender, ""]))  # fmt: skip
        if m.queue_name == "deferred" and k % 3 == 0:
            f = qdir / "deferred" / m.queue_id[0] / m.queue_id
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text("x")
            t = m.arrival_time + rnd.randrange(300, 8 * 3600)
            os.utime(f, (t, t))
        msgs.append(m)
    read = QueueRead(msgs, base.source, base.argv, base.stats, base.taken_at, ["a note"])
    return LocalTarget(), cfg, read, str(qdir)


@pytest.mark.parametrize("configured_after", [0, 1500, None])  # settings before, during, after the listing
def test_the_digest_says_what_the_full_report_says(listing, configured_after) -> None:
    target, cfg, read, qdir = listing
    full = build_report(read, cfg.settings, target, qdir)
    d = QueueDigest(read.taken_at)
    for i, m in enumerate(read.messages):
        if i == configured_after:
            d.configure(cfg.settings, target, qdir)
        d.add(m)
    digest = d.finish(read, cfg.settings, target, qdir)

    assert digest["schema"] == DIGEST_SCHEMA and "messages" not in digest and "matrix" not in digest
    for key in ("now", "where", "source", "counts", "total_messages", "total_recipients", "groups", "oldest",
                "settings", "notes"):  # fmt: skip
        assert digest[key] == full[key], key
    assert {"file", "assumed"} <= {m["forecast"]["mtime_source"] for m in full["messages"] if m["forecast"]}
    # what the report document shows of the queue: the same from either
    facts = engine.Facts(where=target.where)
    facts.queue = full
    from_full = report._queue_summary(facts)
    facts.queue = digest
    assert report._queue_summary(facts) == from_full
    assert from_full is not None and len(from_full["arrivals"]) == ARRIVALS
    assert from_full["next_attempt"] is not None and from_full["first_expiry"] is not None


def test_the_first_expiry_can_be_a_young_bounce_or_a_forced_expiry(listing) -> None:
    """The expiry bound that spares most schedules must not hide a message that goes back
    before older ones: null-sender mail (bounce_queue_lifetime) and a forced expiry."""
    target, cfg, read, qdir = listing
    settings = replace(cfg.settings, bounce_queue_lifetime=86400.0)  # Postfix's default: 5d and 1d
    now = read.taken_at
    old = [replace(m, sender="s@example.net", forced_expire=False, queue_name="deferred", arrival_time=now - 3 * 86400 - i)
           for i, m in enumerate(read.messages[:200])]  # 3 days old: 2 days left  # fmt: skip
    young_bounce = replace(old[0], queue_id="BBBBBBB01", sender="", arrival_time=now - 60)
    forced = replace(old[0], queue_id="FFFFFFF01", forced_expire=True, arrival_time=now - 30)
    for extra in (young_bounce, forced):
        msgs = [*old, extra]
        r = QueueRead(msgs, read.source, read.argv, read.stats, read.taken_at, [])
        full = build_report(r, settings, target, qdir)
        d = QueueDigest(now)
        d.configure(settings, target, qdir)
        for m in msgs:
            d.add(m)
        first = min(m["forecast"]["expires_at"] for m in full["messages"] if m["forecast"])
        assert d.finish(r, settings, target, qdir)["first_expiry"] == first
        assert next(m for m in full["messages"] if m["queue_id"] == extra.queue_id)["forecast"]["expires_at"] == first


def test_rank_is_linear_in_the_queue_ids() -> None:
    """50,000 messages of one cause over 500 destinations, a third of them listed in two
    groups (recipients in two domains): the list-membership test this replaces took 18 s
    here; the sets take 11 ms. Run under a generous deadline (a guard, not a timing)."""
    groups: list[dict[str, Any]] = []
    for g in range(500):
        own = [f"{n:011X}" for n in range(g * 100, g * 100 + 100)]
        nxt = (g + 1) % 500 * 100
        shared = [f"{n:011X}" for n in range(nxt, nxt + 50)]  # also in the next group
        groups.append({"cause_id": "E04", "domain": f"d{g}.example", "recipients": 150, "messages": own + shared,
                       "example_reason": "connect to mx.d.example[192.0.2.1]:25: Connection refused"})  # fmt: skip
    out: list[list[Any]] = []
    worker = threading.Thread(target=lambda: out.append(rank(None, {"groups": groups}, [])), daemon=True)
    worker.start()
    worker.join(timeout=5)
    assert out, "rank() did not finish within 5 s on 50,000 queue ids: quadratic again?"
    (rc,) = out[0]
    assert rc.queued_messages == 50_000 == len(rc.queue_ids) == len(set(rc.queue_ids))
    assert rc.queue_ids[:3] == ["00000000000", "00000000001", "00000000002"]  # first seen first
    assert rc.queued_recipients == sum(len(g["messages"]) for g in groups) and len(rc.domains) == 500
    focused = rank(None, {"groups": groups}, [], domain="d7.example")[0]
    assert focused.queued_messages == 150 and focused.domains == [("d7.example", 150)]


@pytest.fixture(scope="module")
def big_bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("big") / "b20k", 20_000)


def test_report_on_a_20k_message_snapshot_keeps_no_entry_per_message(big_bundle: Path) -> None:
    target = SnapshotTarget(str(big_bundle))
    facts = engine.collect(target, budget=120)
    q = facts.queue
    assert q is not None and q["schema"] == DIGEST_SCHEMA and q["total_messages"] == 20_000
    assert "messages" not in q and len(q["arrivals"]) == ARRIVALS
    doc = report.build(facts, {})
    # 70% of the bundle waits for one of the demo's reasons (benchmarks/big_queue/bundle.py)
    per_cause: dict[str, int] = {}
    for g in q["groups"]:
        per_cause[g["cause_id"]] = per_cause.get(g["cause_id"], 0) + g["recipients"]
    refused = max(per_cause, key=lambda k: per_cause[k])
    top = next(c for c in doc["causes"] if c["id"] == refused)
    assert top["impact"]["queued_messages"] > 13_000 and len(top["queue_ids"]) == 50
    assert doc["queue"]["total_messages"] == 20_000 and doc["queue"]["next_attempt"] is not None
    # the same numbers as the full queue report of the same listing
    cfg = read_config(target, None)
    full = build_report(read_queue(target), cfg.settings, target, cfg.queue_directory)
    assert q["groups"] == full["groups"] and q["counts"] == full["counts"]
    assert sum(g["recipients"] for g in q["groups"] if g["cause_id"] == refused) == top["impact"]["queued_recipients"]


def test_no_core_module_imports_the_queue_command() -> None:
    """Issue 11: the engine built the queue report by importing diagnose/commands/queue.py."""
    for path in sorted((REPO / "diagnose").glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            assert not any(n.startswith("diagnose.commands.queue") for n in names), path.name
    assert len((REPO / "diagnose/commands/queue.py").read_text().splitlines()) < 250


@pytest.mark.parametrize("configured_after", [0, 1500, None])
def test_a_spooled_json_report_writes_the_same_text(listing, configured_after) -> None:
    """`pfdiag queue` keeps a big queue's entries as sorted runs of JSON in temporary files,
    never all at once: the JSON written is still exactly json.dumps of the whole report, and
    the text renderer reads the same messages from the runs."""
    import json

    from diagnose.queuereport import ReportBuilder, SortedEntries, render_md, render_text

    target, cfg, read, qdir = listing
    full = build_report(read, cfg.settings, target, qdir)
    b = ReportBuilder(read.taken_at, encode=True, run=256)
    for i, m in enumerate(read.messages):
        if i == configured_after:
            b.configure(cfg.settings, target, qdir)
        b.add(m)
        assert len(b.entries) + len(b._run) <= max(1001, 256) + len(b.waiting)  # never the whole queue
    spooled = b.finish(read, cfg.settings, target, qdir)
    msgs = spooled["messages"]
    assert isinstance(msgs, SortedEntries) and len(msgs._files) >= 7  # 3,000 entries, runs of 256 on disk
    assert b.json_text(spooled) == json.dumps(full, ensure_ascii=False)
    assert spooled == full and len(msgs) == 3000
    assert render_text(spooled) == render_text(full) and render_md(spooled) == render_md(full)
    msgs.close()
