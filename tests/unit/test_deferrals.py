"""The one-pass deferral analysis: outcomes, end-of-data duplicate risk,
collateral, delays profile, and memory that follows the queue, not the log."""

from __future__ import annotations

from checks.postfix.logline import LineParser
from diagnose.deferrals import DeferralAnalysis, quantile
from collections import Counter

EOD = "conversation with mx.slow.test[192.0.2.25] timed out while sending end of data -- message may be sent more than once"

LOG = f"""\
Nov 28 10:00:00 mx postfix/qmgr[1]: AAAA01: from=<s@here.test>, size=4200, nrcpt=2 (queue active)
Nov 28 10:10:01 mx postfix/smtp[2]: AAAA01: to=<a@slow.test>, relay=mx.slow.test[192.0.2.25]:25, delay=601, delays=0.1/0/0.3/600, dsn=4.4.2, status=deferred ({EOD})
Nov 28 10:10:01 mx postfix/smtp[2]: AAAA01: to=<b@slow.test>, relay=mx.slow.test[192.0.2.25]:25, delay=601, delays=0.1/0/0.3/600, dsn=4.4.2, status=deferred ({EOD})
Nov 28 10:11:00 mx postfix/qmgr[1]: AAAA02: from=<s@here.test>, size=300, nrcpt=1 (queue active)
Nov 28 10:11:00 mx postfix/qmgr[1]: AAAA02: to=<c@slow.test>, relay=none, delay=0.1, delays=0.1/0/0/0, dsn=4.4.2, status=deferred (delivery temporarily suspended: {EOD})
Nov 28 10:20:00 mx postfix/smtp[3]: AAAA01: enabling PIX workarounds: disable_esmtp,delay_dotcrlf for mx.slow.test[192.0.2.25]:25
Nov 28 10:20:05 mx postfix/smtp[3]: AAAA01: to=<a@slow.test>, relay=mx.slow.test[192.0.2.25]:25, delay=1205, delays=1200/0/0.3/5, dsn=2.0.0, status=sent (250 2.0.0 Ok)
Nov 28 10:20:05 mx postfix/smtp[3]: AAAA01: to=<b@slow.test>, relay=mx.slow.test[192.0.2.25]:25, delay=1205, delays=1200/0/0.3/5, dsn=2.0.0, status=sent (250 2.0.0 Ok)
Nov 28 10:20:05 mx postfix/qmgr[1]: AAAA01: removed
Nov 28 10:30:00 mx postfix/qmgr[1]: AAAA03: from=<s@here.test>, size=900, nrcpt=1 (queue active)
Nov 28 10:30:30 mx postfix/smtp[4]: connect to mx.dead.test[192.0.2.99]:25: Connection timed out
Nov 28 10:30:30 mx postfix/smtp[4]: AAAA03: to=<d@dead.test>, relay=none, delay=30, delays=0/0/30/0, dsn=4.4.1, status=deferred (connect to mx.dead.test[192.0.2.99]:25: Connection timed out)
Nov 28 10:40:00 mx postfix/qmgr[1]: AAAA03: from=<s@here.test>, status=expired, returned to sender
Nov 28 10:40:00 mx postfix/qmgr[1]: AAAA03: removed
Nov 28 10:50:00 mx postfix/postsuper[9]: AAAA02: removed
"""


def analyse(text: str) -> DeferralAnalysis:
    parser = LineParser()
    return DeferralAnalysis().add_all(r for r in map(parser.parse, text.splitlines()) if r).finish()


def test_counts_outcomes_and_duplicate_risk():
    a = analyse(LOG)
    assert a.deferral_lines == 4 and a.collateral_lines == 1
    assert a.messages_deferred == 3
    # a & b deferred by E09 then delivered: both may have arrived twice
    assert (a.outcomes.delivered_later, a.outcomes.expired, a.outcomes.deleted, a.outcomes.still_deferred) == (2, 1, 1, 0)
    assert (a.eod.messages, a.eod.recipients, a.eod.delivered_later) == (1, 2, 2)
    assert a.eod.pix_workarounds["mx.slow.test[192.0.2.25]"] == 1
    assert a.eod.sizes["2-16 KB"] == 1
    assert a.companions["connect to"] == 1
    assert a.messages_in_state == 0


def test_state_left_at_end_is_still_deferred():
    a = analyse("\n".join(LOG.splitlines()[:3]))
    assert a.outcomes.still_deferred == 2 and a.eod.still_deferred == 2


def test_quantiles_are_exact_nearest_rank():
    values = Counter({1.0: 50, 2.0: 45, 600.0: 5})
    assert quantile(values, 0.5) == 1.0
    assert quantile(values, 0.95) == 2.0
    assert quantile(values, 0.96) == 600.0
    assert quantile(Counter(), 0.5) is None


def test_memory_follows_the_queue_not_the_log():
    parser = LineParser()
    a = DeferralAnalysis()
    for i in range(20000):
        qid = f"{i:010X}"
        minute, second = divmod(i // 10, 60)
        stamp = f"Nov 28 {10 + minute // 60:02d}:{minute % 60:02d}:{second:02d}"
        for line in (
            f"{stamp} mx postfix/qmgr[1]: {qid}: from=<s@here.test>, size=900, nrcpt=1 (queue active)",
            f"{stamp} mx postfix/smtp[2]: {qid}: to=<r{i}@x{i % 7}.test>, relay=none, delay=30, delays=0/0/30/0, dsn=4.4.1, status=deferred (connect to mx.x.test[192.0.2.9]:25: Connection refused)",
            f"{stamp} mx postfix/smtp[2]: {qid}: to=<r{i}@x{i % 7}.test>, relay=mx.x.test[192.0.2.9]:25, delay=31, delays=0/0/1/0.5, dsn=2.0.0, status=sent (250 ok)",
            f"{stamp} mx postfix/qmgr[1]: {qid}: removed",
        ):
            a.add(parser.parse(line))
        assert a.messages_in_state <= 1
    a.finish()
    assert a.outcomes.delivered_later == 20000
    assert sum(len(c) for c in a.causes["E02"].delays.values()) <= 8  # distinct values, not one per line


def test_long_queue_times_do_not_grow_the_delay_profile():
    # a retried message's queue time (a) is logged in whole seconds: one new value per retry
    parser = LineParser()
    a = DeferralAnalysis()
    for i in range(5000):
        wait = 100 + i * 83  # 100 s .. 4.8 days, all distinct
        a.add(parser.parse(f"Nov 28 10:00:00 mx postfix/smtp[2]: {i:010X}: to=<r@x.test>, relay=none, delay={wait}, "
                           f"delays={wait}/0/30/0, dsn=4.4.1, status=deferred (connect to mx.x.test[192.0.2.9]:25: "
                           "Connection refused)"))  # fmt: skip
    a_values = a.causes["E02"].delays["a"]
    assert len(a_values) <= 4 * 90  # two significant digits: at most 90 values a decade, 100 s .. 10 days
    median = quantile(a_values, 0.5)
    assert median is not None and abs(median - (100 + 2500 * 83)) / (100 + 2500 * 83) < 0.05


def test_silent_messages_are_dropped_after_days():
    parser = LineParser()
    a = DeferralAnalysis()
    a.add(parser.parse("Nov 1 10:00:00 mx postfix/smtp[2]: AAAA01: to=<a@x.test>, relay=none, delay=1, dsn=4.4.1, status=deferred (connect to x[192.0.2.1]:25: Connection refused)"))
    a.add(parser.parse("Nov 20 10:00:00 mx postfix/smtp[2]: BBBB01: to=<b@x.test>, relay=none, delay=1, dsn=4.4.1, status=deferred (connect to x[192.0.2.1]:25: Connection refused)"))
    assert a.messages_in_state == 1
    assert a.outcomes.unresolved == 1
