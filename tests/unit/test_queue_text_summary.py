"""`pfdiag queue` in text (its default) builds only what the text shows (ReportBuilder's
shown: counts, the age table, the groups, the oldest deferred and the first held/active
entries), not an entry, forecast and JSON text per message; its text is exactly the one
rendered from the full report (every entry, sorted runs), whenever the retry settings arrive,
with ties in age, with a selector, and on a 20,000-message snapshot bundle. The same for
`--format md` (ReportBuilder's md): the deferred messages' table rows in the sorted runs
instead of every message's entry."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import pytest

from checks.config import read_config
from checks.postfix.postqueue import QueuedMessage
from checks.queue import Forecaster, ForecastRow, QueueRead, read_queue
from checks.targets import SnapshotTarget
from diagnose import queueselect
from diagnose.queuereport import TEXT_SHOWN, ReportBuilder, SortedEntries, queue_report, render_md, render_text
from diagnose.target_options import demo_path
from tests.big_queue import make_bundle

SHOWN = max(TEXT_SHOWN, queueselect.OTHER_SHOWN)  # as diagnose/commands/queue.py asks for text


def text_of(rep: dict) -> str:
    return queueselect.with_other_fates(render_text(rep), rep)


@pytest.fixture(scope="module")
def listing():
    """The demo's real messages, 60 times with other ids, ages (a third of them the oldest, with
    three ages only: the 50 shown end inside a tie, kept in listing order), queues and senders: 1,560 messages, some 780 not
    deferred (over the 50 shown: "... N more")."""
    target = SnapshotTarget(demo_path())
    cfg = read_config(target, None)
    base = read_queue(target)
    rnd = random.Random(11)
    msgs = []
    for k in range(60):
        for m in base.messages:
            age = 6 * 86400 + 600 * rnd.randrange(3) if k % 3 == 0 else rnd.randrange(0, 6 * 86400)
            msgs.append(replace(
                m, queue_id=f"{m.queue_id[:6]}{k:04X}", queue_name=rnd.choice(["deferred", "deferred", "hold", "active"]),
                arrival_time=m.arrival_time - age, forced_expire=rnd.random() < 0.1,
                sender=rnd.choice([m.sender, "", "MAILER-DAEMON"])))  # fmt: skip
    return target, cfg, QueueRead(msgs, base.source, base.argv, base.stats, base.taken_at, ["a note"])


def build(listing, configured_after: int | None, **kw) -> dict:
    target, cfg, read = listing
    b = ReportBuilder(read.taken_at, **kw)
    for i, m in enumerate(read.messages):
        if i == configured_after:
            b.configure(cfg.settings, target, cfg.queue_directory, cfg.config)
        b.add(m)
    return b.finish(read, cfg.settings, target, cfg.queue_directory, cfg.config)


@pytest.mark.parametrize("configured_after", [0, 700, None])  # settings before, during, after the listing
def test_the_summary_renders_the_same_text_as_the_full_report(listing, configured_after, monkeypatch) -> None:
    full = build(listing, configured_after, encode=True)
    rows: list[str] = []
    row = Forecaster.row

    def counted(self: Forecaster, m: QueuedMessage, mtime: float | None = None) -> ForecastRow:
        rows.append(m.queue_id)
        return row(self, m, mtime)

    monkeypatch.setattr(Forecaster, "row", counted)
    summary = build(listing, configured_after, encode=True, shown=SHOWN)
    text = text_of(summary)
    assert text == text_of(full)
    assert "... " in text and "more (--format json lists all)" in text.split("Held and active")[1]  # others past 50
    deferred = full["counts"]["deferred"]
    assert deferred > 3 * SHOWN and summary["others_total"] == full["total_messages"] - deferred
    # what it holds: 2 x 50 entries, not one per message; forecasts for (at most) the deferred ones that were kept
    assert len(summary["messages"]) == 2 * SHOWN and len(rows) < deferred / 2
    assert {k: v for k, v in summary.items() if k not in ("messages", "others_total")} == {
        k: v for k, v in full.items() if k != "messages"}  # fmt: skip


@pytest.mark.parametrize("configured_after", [0, 700, None])
def test_the_markdown_rows_render_the_same_markdown_as_the_full_report(listing, configured_after) -> None:
    full = build(listing, configured_after, encode=True)
    rows = build(listing, configured_after, encode=True, md=True, run=100)  # some runs spilled
    assert isinstance(rows["messages"], SortedEntries) and len(rows["messages"]._files) > 2
    assert len(rows["messages"]) == full["counts"]["deferred"]  # a row per deferred message, nothing for the others
    assert render_md(rows) == render_md(full)


def test_the_summary_of_a_small_queue_lists_what_it_has(listing) -> None:
    target, cfg, read = listing
    small = (target, cfg, replace(read, messages=read.messages[:30]))
    assert text_of(build(small, 0, shown=SHOWN)) == text_of(build(small, 0))
    empty = (target, cfg, replace(read, messages=[]))
    assert text_of(build(empty, None, shown=SHOWN)) == text_of(build(empty, None))
    assert render_md(build(small, 0, md=True)) == render_md(build(small, 0))
    assert render_md(build(empty, None, md=True)) == render_md(build(empty, None))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("big") / "b20k", 20_000)


@pytest.mark.parametrize("select", [False, True])
def test_queue_text_on_a_20k_snapshot_is_the_full_reports_text(bundle: Path, select: bool) -> None:
    """queue_report as `pfdiag queue` runs it (settings from the snapshot's postconf in a thread):
    text from the summary == text from every entry in sorted runs; also narrowed by a selector."""
    target = SnapshotTarget(str(bundle))
    keep = (lambda m, now: m.queue_name != "active" and m.arrival_time < now - 86400) if select else None
    said = "--older-than 1d" if select else ""
    full, _ = queue_report(target, None, encode=True, keep=keep, said=said)
    summary, builder = queue_report(SnapshotTarget(str(bundle)), None, encode=True, keep=keep, said=said, shown=SHOWN)
    assert full["total_messages"] > 10_000 and len(summary["messages"]) <= 2 * SHOWN
    assert text_of(summary) == text_of(full)
    assert not builder.waiting and not builder._files
    rows, _ = queue_report(SnapshotTarget(str(bundle)), None, encode=True, keep=keep, said=said, md=True)
    assert render_md(rows) == render_md(full)


@pytest.mark.parametrize("mode", [{"shown": SHOWN}, {"md": True}])
def test_a_slow_postconf_makes_the_summary_and_rows_wait_too(listing, monkeypatch, mode) -> None:
    """As the full report (test_queue_report_stream.py): past WAIT_LIMIT deferred messages
    waiting for the retry settings, add() waits for postconf; the output is the same."""
    import threading

    from checks.runner import start
    from diagnose import queuereport

    monkeypatch.setattr(queuereport, "WAIT_LIMIT", 50)
    target, cfg, read = listing
    release = threading.Event()
    job = start("config", lambda _deadline: (release.wait(30), (cfg.settings, cfg, False))[1])
    threading.Timer(0.3, release.set).start()
    b = ReportBuilder(read.taken_at, encode=True, run=200, **mode)
    b.configure_when_done(job, target)
    most = 0
    for m in read.messages:
        b.add(m)
        most = max(most, len(b.waiting))
    assert release.is_set() and most == 50
    rep = b.finish(read, cfg.settings, target, cfg.queue_directory)
    full = build(listing, None, encode=True)
    if "md" in mode:
        assert render_md(rep) == render_md(full)
    else:
        assert text_of(rep) == text_of(full)
