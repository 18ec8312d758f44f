"""The queue report built one message at a time (as `pfdiag queue` does while postqueue
still lists) equals what the per-queue functions of checks/queue.py compute for the whole
listing, whenever the retry settings arrive; and the big-queue JSON written from entries
encoded on the way is exactly json.dumps of the report.

The listing: the demo snapshot's real lab messages, repeated with other ids, ages, queues
and senders (1,560 messages, over the 1,000 where the JSON turns compact)."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest

from checks.config import read_config
from checks.queue import QueueRead, age_matrix, forecast_message, group_deferred, queue_file_mtime, read_queue
from checks.targets import SnapshotTarget
from diagnose.fate import fate
from diagnose.queuereport import COMPACT_ABOVE, ReportBuilder, build_report, cause_of
from diagnose.target_options import demo_path


@pytest.fixture(scope="module")
def listing():
    target = SnapshotTarget(demo_path())
    cfg = read_config(target, None)
    base = read_queue(target)
    assert base.messages, "the demo snapshot holds a queue"
    rnd = random.Random(5)
    msgs = []
    for k in range(60):
        for m in base.messages:
            msgs.append(replace(
                m, queue_id=f"{m.queue_id[:6]}{k:04X}", queue_name=rnd.choice(["deferred", "deferred", "hold", "active"]),
                arrival_time=m.arrival_time - rnd.randrange(0, 6 * 86400), forced_expire=rnd.random() < 0.1,
                sender=rnd.choice([m.sender, "", "MAILER-DAEMON"])))  # fmt: skip
    assert len(msgs) > COMPACT_ABOVE
    read = QueueRead(msgs, base.source, base.argv, base.stats, base.taken_at, ["a note"])
    return target, cfg, read


@pytest.mark.parametrize("configured_after", [0, 700, None])  # settings before, during, after the listing
def test_streamed_report_equals_the_whole_listing_functions(listing, configured_after):
    target, cfg, read = listing
    now, msgs = read.taken_at, read.messages
    b = ReportBuilder(now, encode=True)
    for i, m in enumerate(msgs):
        if i == configured_after:
            b.configure(cfg.settings, target, cfg.queue_directory)
        b.add(m)
    rep = b.finish(read, cfg.settings, target, cfg.queue_directory)

    text = b.json_text(rep)
    as_list = {**rep, "messages": list(rep["messages"])}  # a big report's messages: sorted runs (SortedEntries)
    assert text == json.dumps(as_list, ensure_ascii=False)  # compact, from the entries encoded on the way
    assert rep == build_report(read, cfg.settings, target, cfg.queue_directory)

    mx = age_matrix(msgs, now)
    assert [(r["domain"], r["total"], r["buckets"]) for r in rep["matrix"]["rows"]] == mx.rows
    groups = group_deferred(msgs, cause_of)
    assert [(g["cause_id"], g["domain"], g["recipients"], g["messages"]) for g in rep["groups"]] == [
        (g.cause_id, g.domain, g.recipients, sorted(g.messages)) for g in groups]  # fmt: skip
    assert [e["arrival_time"] for e in rep["messages"]] == sorted(m.arrival_time for m in msgs)
    assert rep["counts"]["deferred"] == sum(m.queue_name == "deferred" for m in msgs)

    by_id = {m.queue_id: m for m in msgs}
    forecasts = 0
    for e in rep["messages"]:
        m = by_id[e["queue_id"]]
        assert [r["cause_id"] for r in e["recipients"]] == [
            cause_of(r.delay_reason) if r.delay_reason else None for r in m.recipients]  # fmt: skip
        if m.queue_name != "deferred":
            assert e["forecast"] is None
            continue
        fc = forecast_message(m, now, cfg.settings, queue_file_mtime(target, cfg.queue_directory, m))
        assert e["forecast"] == {
            "mtime_source": fc.mtime_source,
            "next_attempt_earliest": round(fc.next_earliest), "next_attempt_latest": round(fc.next_latest),
            "expires_at": round(fc.expires_at), "expires_at_latest": round(fc.expires_latest),
            "lifetime_ends": round(fc.forecast.lifetime_ends), "remaining_attempts": list(fc.forecast.remaining_attempts),
            "overdue": fc.forecast.overdue, "expiring": fc.forecast.expiring,
        }  # fmt: skip
        forecasts += 1
    assert forecasts == rep["counts"]["deferred"]


def test_a_small_report_stays_indented(listing):
    target, cfg, read = listing
    small = replace(read, messages=read.messages[:COMPACT_ABOVE])
    b = ReportBuilder(small.taken_at, encode=True)
    for m in small.messages:
        b.add(m)
    rep = b.finish(small, cfg.settings, target, cfg.queue_directory)
    assert b.json_text(rep) == json.dumps(rep, indent=2, ensure_ascii=False)


def test_settings_arriving_with_the_message_past_the_mark_encode_each_entry_once(listing):
    """The configuration job finishing just as entry 1,001 is listed: the waiting entries are
    forecast and encoded then, each once (not the whole backlog again per waiting entry)."""
    from checks.runner import start

    target, cfg, read = listing
    b = ReportBuilder(read.taken_at, encode=True)
    put, calls = b._put_text, list[int]()  # every entry's text goes into a run here (encoded from a dict or written directly)

    def counted(a: float, seq: int, text: str) -> None:
        calls.append(seq)
        put(a, seq, text)

    b._put_text = counted
    job = start("config", lambda _deadline: (cfg.settings, cfg, False))
    job.wait()  # finished before entry 1,001 is listed
    msgs = list(read.messages)
    k = next(i for i in range(COMPACT_ABOVE, len(msgs)) if msgs[i].queue_name == "deferred")
    msgs[COMPACT_ABOVE], msgs[k] = msgs[k], msgs[COMPACT_ABOVE]  # entry 1,001 is deferred: it configures
    read = replace(read, messages=msgs)
    for i, m in enumerate(msgs):
        if i == COMPACT_ABOVE:
            b.configure_when_done(job, target)
        b.add(m)
    rep = b.finish(read, cfg.settings, target, cfg.queue_directory)
    assert b.json_text(rep) == json.dumps(build_report(read, cfg.settings, target, cfg.queue_directory), ensure_ascii=False)
    assert sorted(calls) == list(range(len(msgs)))


@pytest.mark.parametrize("spill", [True, False])
def test_sorted_runs_keep_listing_order_among_equal_arrivals(listing, monkeypatch, spill):
    """Runs of 100 entries, three distinct arrival times, the deferred ones waiting for the
    settings until the end (so they land in later runs than messages listed after them): the
    merged messages are still sorted by arrival, listing order among equals, as sorted() of
    the whole listing. Without a temporary file the runs stay in memory, same result."""
    from diagnose import queuereport
    from diagnose.queuereport import SortedEntries

    if not spill:
        monkeypatch.setattr(queuereport, "_spill_file", lambda: None)
    target, cfg, read = listing
    msgs = [replace(m, arrival_time=read.taken_at - 600 * (i % 3)) for i, m in enumerate(read.messages)]
    read = replace(read, messages=msgs)
    b = ReportBuilder(read.taken_at, encode=True, run=100)
    for m in msgs:
        b.add(m)
    rep = b.finish(read, cfg.settings, target, cfg.queue_directory)
    assert isinstance(rep["messages"], SortedEntries) and (len(rep["messages"]._files) > 5) == spill
    want = [m.queue_id for m in sorted(msgs, key=lambda m: m.arrival_time)]
    assert [e["queue_id"] for e in rep["messages"]] == want
    assert json.loads(b.json_text(rep))["messages"] == build_report(read, cfg.settings, target, cfg.queue_directory)["messages"]


def test_run_keys_sort_as_arrival_then_listing_position():
    """A sorted run's lines compare as strings in the order of (arrival, listing position), for
    any float arrival (negative, fractions, ties), so the merge never parses a line."""
    from diagnose.queuereport import _KEY_LEN, _line

    rnd = random.Random(3)
    pairs = [(rnd.choice([-1e9, -2.5, -0.0, 0.0, 1e-7, 1.5, 1795887927.0, 1795887927.25, 4e12]), rnd.randrange(10**6))
             for _ in range(2000)]  # fmt: skip
    lines = [_line(a, i, f'{{"n": {i}}}') for a, i in pairs]
    want = sorted(range(len(pairs)), key=lambda k: (pairs[k][0], pairs[k][1]))
    got = sorted(range(len(pairs)), key=lambda k: lines[k])
    assert [pairs[k] for k in got] == [pairs[k] for k in want]
    assert all(ln[_KEY_LEN:-1] == f'{{"n": {i}}}' for ln, (_, i) in zip(lines, pairs))


def test_a_slow_postconf_makes_the_listing_wait_instead_of_piling_up_entries(listing, monkeypatch):
    """Deferred entries wait whole for the retry settings; past WAIT_LIMIT of them add() waits
    for the configuration job (postconf) instead of holding more: memory stays bounded
    however slow postconf is, and the report is the same."""
    import threading

    from checks.runner import start
    from diagnose import queuereport

    monkeypatch.setattr(queuereport, "WAIT_LIMIT", 50)
    target, cfg, read = listing
    release = threading.Event()
    job = start("config", lambda _deadline: (release.wait(30), (cfg.settings, cfg, False))[1])
    threading.Timer(0.3, release.set).start()
    b = ReportBuilder(read.taken_at, encode=True, run=200)
    b.configure_when_done(job, target)
    most = 0
    for m in read.messages:
        b.add(m)
        most = max(most, len(b.waiting))
    assert release.is_set() and most == 50  # waited when the 51st came (never more held), then forecast as they came
    rep = b.finish(read, cfg.settings, target, cfg.queue_directory)
    as_list = {**rep, "messages": list(rep["messages"])}
    assert b.json_text(rep) == json.dumps(as_list, ensure_ascii=False)
    assert rep == build_report(read, cfg.settings, target, cfg.queue_directory)


def test_entries_written_directly_are_the_encoders_text(listing):
    """A complete entry past the mark is written as text directly (ReportBuilder._entry_text),
    not as a dict for the encoder: byte for byte the encoder's text of the dict entry, for
    outside text of every kind (quotes, backslashes, control characters, non-ASCII, a lone
    surrogate), no reason, an int or NaN arrival, odd forced_expire values, and an E32 reason
    that the local services' configuration re-judges."""
    from checks.postfix.postqueue import QueuedMessage, QueuedRecipient

    target, cfg, read = listing
    b = ReportBuilder(read.taken_at, encode=True)
    b.configure(cfg.settings, target, cfg.queue_directory, cfg.config)
    b._services = {}  # as services_of() says when main.cf names no local service: loopback E32 is re-judged
    odd = ['a "quoted" \\ reason', "tab\there\x1b[31m", "ünïcødé ✉ 📬", "lone \udc80 surrogate", "", "MAILER-DAEMON"]
    local = "connect to 127.0.0.1[127.0.0.1]:10024: Connection refused"
    base = read.messages
    msgs = []
    for i, m in enumerate(base[:300]):
        rcpts = tuple(QueuedRecipient(f"{odd[(i + k) % len(odd)]}@d{k}.test", r.delay_reason if i % 4 else
                                      (None, local, odd[i % len(odd)] or None)[i % 3])
                      for k, r in enumerate(m.recipients))  # fmt: skip
        arrival: float = m.arrival_time if i % 5 else int(m.arrival_time)
        if i % 97 == 1 and m.queue_name != "deferred":
            arrival = float("nan")
        msgs.append(replace(m, sender=odd[i % len(odd)], recipients=rcpts, arrival_time=arrival,
                            forced_expire=(True, False, 1, 0)[i % 4] if i % 7 == 0 else m.forced_expire))  # fmt: skip
    msgs.append(QueuedMessage("ABCDEF12345", "deferred", read.taken_at - 4000, 10, "", (QueuedRecipient("x@y", local),)))
    relocalized = 0
    for m in msgs:
        entry = b._entry(m)
        if m.queue_name == "deferred":
            b._forecast(m, entry)
            relocalized += any(r["cause_id"] != cause_of(r["delay_reason"]) for r in entry["recipients"] if r["delay_reason"])
        else:
            entry["fate"] = fate(m.queue_name, m.queue_id, None, now=b.now)
        assert b._entry_text(m) == b._encode_entry(entry) == json.dumps(entry, ensure_ascii=False)
    assert relocalized  # the locality rule changed a cause: E32 -> another


def test_entry_text_numbers_and_recipients_at_the_edges(listing):
    """_entry_text's inline paths (a finite float arrival's repr and its age written with .1f,
    one recipient without a list, the memoised recipient tails) against the encoder: ages and
    arrivals of every size and sign, fractions that round either way, huge values past the
    inline range, no/one/three recipients sharing a reason, and causes '', None, 'no-reason'."""
    from checks.postfix.postqueue import QueuedMessage, QueuedRecipient

    target, cfg, read = listing
    b = ReportBuilder(read.taken_at, encode=True)
    b.configure(cfg.settings, target, cfg.queue_directory, cfg.config)
    now = b.now
    rnd = random.Random(11)
    reason = "host mx.example[192.0.2.1] said: 450 4.2.0 try later (in reply to RCPT TO command)"
    rcpt_sets = [(), (QueuedRecipient("a@x.test", reason),), (QueuedRecipient("b@x.test"),),
                 tuple(QueuedRecipient(f"{k}@y.test", reason if k != 1 else None) for k in range(3))]  # fmt: skip
    arrivals: list[float] = [now, now - 0.05, now - 0.15, now + 0.05, now - 0.25, now - 86400.45, 0.0, -0.0, 1.0, -1.0,
                             now * 1000, 1e15, -1e15, 1e16, -1e16, 1e300, now - 1e15 + 0.5, now + 1e15 - 0.5,
                             float("inf"), float("-inf"), float("nan"), int(now) - 7, 10**20]  # fmt: skip
    arrivals += [now - rnd.uniform(0, 10 * 86400) for _ in range(300)] + [round(now) - rnd.randrange(0, 10**6) + 0.05
                                                                          for _ in range(300)]  # fmt: skip
    checked = 0
    for i, a in enumerate(arrivals):
        for rcpts in rcpt_sets:
            sane = isinstance(a, float) and abs(now - a) < 30 * 86400
            for q in (("deferred", "hold", "active") if sane else ("hold", "active")):
                m = QueuedMessage(f"ABCDEF{i:05X}", q, a, i, "s@x.test", rcpts, i % 3 == 0)
                entry = b._entry(m)
                if q == "deferred":
                    b._forecast(m, entry)
                else:
                    entry["fate"] = fate(q, m.queue_id, None, now=now)
                assert b._entry_text(m) == json.dumps(entry, ensure_ascii=False), (a, q, rcpts)
                checked += 1
    assert checked > 4000
    # the recipient tails are memoised per (reason, cause): a cause of its own gets a tail of its own
    assert b._rtail(reason, "E22") != b._rtail(reason, "E21") and b._rtail(None, None).endswith('"cause_id": null}')
