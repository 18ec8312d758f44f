"""`pfdiag logs` reads lines in batches and handles the commonest ones without a LogLine
(DeferralAnalysis.read): its result must be the exact per-line path's (read_lines + add),
on every real corpus file; the whole-traffic totals must be pflogsumm's Grand Totals
(values taken from pflogsumm 1.1.5-8 run on the same files)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

import checks.logs as logs
from checks.logs import BoundedLines, LineBatches, ReadStats, read_batches, read_lines
from checks.targets import LocalTarget
from diagnose import logscan
from diagnose.deferrals import NOISE_DAEMONS, DeferralAnalysis
from diagnose.logreport import to_dict

CORPUS = Path(__file__).resolve().parents[2] / ".." / "shared" / "corpus"
FILES = sorted(CORPUS.glob("*.txt")) + sorted((CORPUS / "synthetic").glob("*"))

# real-format lines for the counts pflogsumm keeps beside deliveries: held, discarded, reject
# warnings, forwarded, pickup, and a content filter's re-injection (pflogsumm does not count it)
TRAFFIC_LOG = """\
Nov 28 10:00:01 mx postfix/smtpd[100]: connect from a.example[192.0.2.10]
Nov 28 10:00:02 mx postfix/smtpd[100]: 1A2B3C4D5E: client=a.example[192.0.2.10]
Nov 28 10:00:02 mx postfix/cleanup[101]: 1A2B3C4D5E: message-id=<1@a.example>
Nov 28 10:00:02 mx postfix/cleanup[101]: 1A2B3C4D5E: hold: header Subject: invoice from a.example[192.0.2.10]; from=<x@a.example> to=<y@b.example> proto=ESMTP helo=<a.example>: spam?
Nov 28 10:00:03 mx postfix/smtpd[100]: 2A2B3C4D5E: client=a.example[192.0.2.10]
Nov 28 10:00:03 mx postfix/cleanup[101]: 2A2B3C4D5E: message-id=<2@a.example>
Nov 28 10:00:03 mx postfix/cleanup[101]: 2A2B3C4D5E: discard: body buy now from a.example[192.0.2.10]; from=<x@a.example> to=<y@b.example> proto=ESMTP helo=<a.example>: junk
Nov 28 10:00:04 mx postfix/smtpd[100]: NOQUEUE: discard: RCPT from a.example[192.0.2.10]: <z@b.example>: Recipient address triggers DISCARD action; from=<x@a.example> to=<z@b.example> proto=ESMTP helo=<a.example>
Nov 28 10:00:05 mx postfix/smtpd[100]: NOQUEUE: hold: RCPT from a.example[192.0.2.10]: <w@b.example>: Recipient address triggers HOLD action; from=<x@a.example> to=<w@b.example> proto=ESMTP helo=<a.example>
Nov 28 10:00:06 mx postfix/smtpd[100]: NOQUEUE: reject: RCPT from a.example[192.0.2.10]: 554 5.7.1 <v@b.example>: Relay access denied; from=<x@a.example> to=<v@b.example> proto=ESMTP helo=<a.example>
Nov 28 10:00:07 mx postfix/cleanup[101]: 3A2B3C4D5E: warning: header Subject: odd from a.example[192.0.2.10]; from=<x@a.example> to=<y@b.example> proto=ESMTP helo=<a.example>
Nov 28 10:00:08 mx postfix/pickup[102]: 4A2B3C4D5E: uid=0 from=<root>
Nov 28 10:00:09 mx postfix/local[103]: 4A2B3C4D5E: to=<root@mx.example>, orig_to=<root>, relay=local, delay=0.1, delays=0/0/0/0.1, dsn=2.0.0, status=sent (forwarded as 5A2B3C4D5E)
Nov 28 10:00:09 mx postfix/smtp[104]: 5A2B3C4D5E: to=<admin@c.example>, orig_to=<root>, relay=mx.c.example[198.51.100.5]:25, delay=0.4, delays=0/0/0.2/0.2, dsn=2.0.0, status=sent (250 ok)
Nov 28 10:00:10 mx postfix/amavis/smtpd[105]: 6A2B3C4D5E: client=localhost[127.0.0.1]
Nov 28 10:00:11 mx postfix/smtp[104]: 6A2B3C4D5E: to=<u@d.example>, relay=mx.d.example[198.51.100.6]:25, delay=300, delays=0/0/300/0, dsn=4.4.1, status=deferred (connect to mx.d.example[198.51.100.6]:25: Connection timed out)
"""


def _line_by_line(path: str) -> dict:
    stats = ReadStats()
    analysis = DeferralAnalysis().add_all(read_lines(LocalTarget(), [path], stats, None, None, NOISE_DAEMONS))
    return _dict(analysis, stats)


def _batched(path: str, since: float | None = None, until: float | None = None) -> dict:
    stats = ReadStats()
    analysis = DeferralAnalysis().read(read_batches(LocalTarget(), [path], stats, since), stats, since, until)
    return _dict(analysis, stats)


def _dict(analysis: DeferralAnalysis, stats: ReadStats) -> dict:
    report = to_dict(analysis.finish(), stats)
    report.pop("generated")
    return report


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name[:60])
def test_batched_read_equals_the_per_line_path(path):
    exact, fast = _line_by_line(str(path)), _batched(str(path))
    fast.pop("traffic")  # counted only by the batched reader
    exact.pop("traffic")
    assert fast == exact


def test_batched_read_equals_the_per_line_path_on_every_corpus_line_at_once(tmp_path, monkeypatch):
    """All corpus files in one log, read in tiny batches (cuts inside every kind of line)."""
    log = tmp_path / "all.log"
    log.write_bytes(b"".join(p.read_bytes() for p in FILES))
    exact = _line_by_line(str(log))
    monkeypatch.setattr(logs, "BATCH", 97)
    fast = _batched(str(log))
    exact.pop("traffic")  # counted only by the batched reader
    fast.pop("traffic")
    assert fast == exact
    assert exact["input"]["lines"] > 3000 and exact["input"]["malformed"], "the corpus does hold odd lines"


def test_time_window_is_applied_the_same_way(tmp_path):
    from datetime import datetime

    log = tmp_path / "mail.log"
    log.write_text(TRAFFIC_LOG * 3)
    whole = _line_by_line(str(log))
    first, last = (datetime.fromisoformat(whole["window"][k].replace("Z", "+00:00")).timestamp() for k in ("first_line", "last_line"))
    since, until = first + 4, last - 1  # 10:00:05 .. 10:00:10: lines on both sides are outside
    stats = ReadStats()
    exact = _dict(DeferralAnalysis().add_all(read_lines(LocalTarget(), [str(log)], stats, since, until, NOISE_DAEMONS)), stats)
    fast = _batched(str(log), since, until)
    assert exact["input"]["outside_window"] > 0
    fast.pop("traffic")
    exact.pop("traffic")
    assert fast == exact


def test_traffic_totals_are_pflogsumms(tmp_path):
    log = tmp_path / "mail.log"
    log.write_text(TRAFFIC_LOG)
    traffic = _batched(str(log))["traffic"]
    # pflogsumm 1.1.5: 3 received, 1 delivered, 1 forwarded, 1 deferred (1 deferrals), 0 bounced,
    # 1 rejected, 1 reject warnings, 2 held, 2 discarded
    assert traffic == {"received": 3, "delivered": 1, "forwarded": 1, "deferred": 1, "deferrals": 1, "bounced": 0,
                       "rejected": 1, "reject_warnings": 1, "held": 2, "discarded": 2, "expired": 0}  # fmt: skip


@pytest.mark.parametrize(
    "name, expected",
    [
        ("pixelpark__postfix-logsums__test_mail.log.txt", dict(received=8, delivered=11, forwarded=2, deferred=0, bounced=1, rejected=8)),
        ("alborodin85__postfix-logs-parser__test.txt", dict(received=4, delivered=1, bounced=2, rejected=1, reject_warnings=4)),
        ("lightmeterio__ControlCenter__test_files_postfix_logs_individual_files_15_milter-reject.log.txt", dict(received=1, rejected=2)),
        ("lightmeterio__ControlCenter__test_files_postfix_logs_individual_files_5_zimbra_amavisd.log.txt", dict(received=1, delivered=3)),
        ("Hsn723__postfix_exporter__exporter_postfix_exporter_test.go.txt", dict(received=2, delivered=4, deferred=1, deferrals=1, bounced=1, rejected=4)),
    ],
)
def test_traffic_of_real_logs_is_pflogsumms(name, expected):
    """The Grand Totals pflogsumm 1.1.5-8 printed for these files (all other totals 0)."""
    traffic = _batched(str(CORPUS / name))["traffic"]
    zeros = {k: 0 for k in ("received", "delivered", "forwarded", "deferred", "deferrals", "bounced", "rejected", "reject_warnings", "held", "discarded")}
    got = {k: traffic[k] for k in zeros}
    assert got == zeros | expected


@pytest.mark.parametrize("workers", [2, 3])
def test_traffic_is_the_same_in_parallel_chunks(tmp_path, monkeypatch, workers):
    log = tmp_path / "mail.log"
    with log.open("w") as fh:
        for k in range(400):  # new queue ids and times per copy
            stamp = f"Nov 28 {10 + k // 60:02d}:{k % 60:02d}:"
            fh.write(TRAFFIC_LOG.replace("A2B3C4D5E", f"{k:05X}A2B3C").replace("Nov 28 10:00:", stamp))
    size = log.stat().st_size

    def report(n: int, min_bytes: int) -> dict:
        monkeypatch.setattr(logscan, "CHUNK_MIN_BYTES", min_bytes)
        analysis, stats = logscan.analyse_logs(LocalTarget(), [str(log)], workers=n)
        return _dict(analysis, stats)

    serial = report(1, size)
    assert serial["traffic"]["held"] == 800 and serial["traffic"]["received"] == 1200
    assert report(workers, size // (workers * 2)) == serial


CASES = {
    "plain": "a\nbb\nccc\n",
    "no last line end": "a\nbb\nccc",
    "crlf and cr": "a\r\nbb\rccc\r\n\r\nd",
    "empty lines": "\n\n\nx\n\n",
    "nul": "a\nb\x00b\n" + "c\n" * 50,
    "long line": "a\n" + "x" * (logs.MAX_LINE + 5) + "\nb\n",
    "long last line": "a\n" + "y" * (logs.MAX_LINE + 1),
    "invalid utf-8": b"a\xff\xfeb\nc\n".decode("latin-1"),
    "long line among short ones": "s\n" * 30000 + "x" * (logs.MAX_LINE + 1) + "\n" + "t\n" * 30000,
    "lines of just MAX_LINE": ("s\n" * 20000 + "y" * logs.MAX_LINE + "\n") * 3 + "z" * logs.MAX_LINE,
    "nul far into a line": "a\n" + "b" * 50000 + "\x00" + "c" * 100 + "\nd\n",
}


@pytest.mark.parametrize("batch", [1, 3, 64, 40000, 70000, 1 << 20])
@pytest.mark.parametrize("name", sorted(CASES))
def test_line_batches_hand_out_what_bounded_lines_does(tmp_path, monkeypatch, name, batch):
    monkeypatch.setattr(logs, "BATCH", batch)
    data = CASES[name].encode("latin-1") if name == "invalid utf-8" else CASES[name].encode()
    expect_stats, got_stats = ReadStats(), ReadStats()

    def stream() -> io.TextIOWrapper:
        return io.TextIOWrapper(io.BufferedReader(io.BytesIO(data)), encoding="utf-8", errors="replace")

    bounded = BoundedLines(stream(), expect_stats)
    expect = list(bounded)
    batches = LineBatches(stream(), got_stats)
    got = [line for b in batches for line in b]
    assert got == expect
    assert batches.count == bounded.count
    assert json.dumps(vars(got_stats), sort_keys=True) == json.dumps(vars(expect_stats), sort_keys=True)


ODD_STATUS_LINES = [
    "Nov 28 10:00:09 mx postfix/smtp[104]: 5A2B3C4D5E: to=<a@b@C.Example>, relay=mx.c.example[198.51.100.5]:25, delay=0.4, delays=0/0/0.2/0.2, dsn=2.0.0, status=sent (250 ok (queued))",
    "Nov 28 10:00:09 mx postfix/smtp[104]: 5A2B3C4D5E: to=<nobody>, relay=[198.51.100.5]:25, conn_use=2, delay=0.4, delays=0/0/0.2/0.2, tls=x, dsn=2.0.0, status=sent (forwarded as 1234)",
    "Nov 28 10:00:09 mx postfix/smtp[104]: 5A2B3C4D5E: to=<>, relay=, delay=0.4, delays=0/0/0.2/0.2, dsn=2.0.0, status=sent ()",
    "Nov 28 10:00:09 mx postfix/smtp[104]: 5A2B3C4D5E: to=<x@y>, relay=none, delay=1, delays=1/0/0/0, dsn=4.4.1, status=deferred (host said status=sent (250 ok))",
    "Nov 28 10:00:09 mx postfix/smtp[104]: 5A2B3C4D5E: to=<x@y>, relay=a[b]c[d, delay=1, delays=1/0/0/0, dsn=2.0.0, status=sentx (ok)",
    "Nov 28 10:00:09 mx postfix/smtp[104]: 5A2B3C4D5E: to=<x@y>, relay=a[b]c[d, delay=1, delays=1/0/0/0, dsn=2.0.0, status=sent (no close",
]


def test_read_regexes_are_the_per_line_ones_narrowed():
    """deferrals._READ_ENVELOPE is FAST_ENVELOPE with fewer groups, _SENT is FAST_STATUS for
    status=sent with fewer groups: on every corpus line, the same matches and the same fields."""
    from checks.postfix.logline import FAST_ENVELOPE
    from checks.postfix.status import FAST_STATUS
    from diagnose.deferrals import _READ_ENVELOPE, _SENT

    sent = 0
    for path in [p for p in FILES if p.is_file()]:
        for line in path.read_text(errors="replace").splitlines() + ODD_STATUS_LINES:
            full, narrow = FAST_ENVELOPE.match(line), _READ_ENVELOPE.match(line)
            assert (full is None) == (narrow is None), line
            if full is None:
                continue
            assert narrow.end() == full.end() and narrow.groups() == (full[1], full[4], full[6]), line
            end = full.end()
            m, s = FAST_STATUS.match(line[end:]), _SENT.match(line, end)
            assert (s is not None) == (m is not None and m[12] == "sent"), line
            if s is not None:
                sent += 1
                assert s.groups() == (m[1], m[3], "forwarded as " if m[13].startswith("forwarded as ") else None), line
    assert sent > 100


def test_delay_values_are_shared_and_two_digits():
    from diagnose.deferrals import _delay_value, _two_digits

    for x in (0.0, 0.01, 0.35, 1.2, 45.0, 99.9, 100.0, 130780.0, 99999.0, 5e6, 0.35):
        assert _delay_value(x) == _two_digits(x)
        assert _two_digits(_delay_value(x)) == _delay_value(x)
    assert _delay_value(130780.0) is _delay_value(129990.0) is _delay_value(130000.0)


@pytest.mark.parametrize("delays", ["1..2/0/0/0", "0/0/0/" + "9" * 400, "1e/0/0/0"])
def test_a_deferral_with_unreadable_delays_is_counted_without_them(tmp_path, delays):
    """delays= of the fast regex's [\\d.]+ that is no finite number ("1..2", 400 digits: float()
    raises or gives inf, _two_digits then fails): the deferral is read and counted, with no delays
    kept for it, on the batched and the per-line path (was an internal error, exit 3)."""
    log = tmp_path / "mail.log"
    log.write_text(
        f"Nov 28 10:00:11 mx postfix/smtp[104]: 6A2B3C4D5E: to=<u@d.example>, relay=none, delay=1.5, delays={delays}, "
        "dsn=4.4.1, status=deferred (connect to mx.d.example[198.51.100.6]:25: Connection timed out)\n"
        "Nov 28 10:00:12 mx postfix/smtp[104]: 7A2B3C4D5E: to=<v@d.example>, relay=none, delay=300, delays=0/0/300/0, "
        "dsn=4.4.1, status=deferred (connect to mx.d.example[198.51.100.6]:25: Connection timed out)\n"
    )
    for report in (_batched(str(log)), _line_by_line(str(log))):
        text = json.dumps(report)
        assert "Infinity" not in text and "NaN" not in text
        (cause,) = report["causes"]
        assert cause["deferrals"] == 2, cause
