"""Queue listings: postqueue -j and postqueue -p / mailq, real samples from the corpus,
listings rendered with Postfix's own printf formats, and property tests."""

from __future__ import annotations

import calendar
import io
import re
import time
from datetime import timezone
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from checks.postfix.postqueue import (
    QUEUE_ID_RE,
    UNKNOWN_QUEUE,
    ParseStats,
    QueuedMessage,
    QueuedRecipient,
    is_null_sender,
    is_valid_queue_id,
    parse_mailq,
    parse_postqueue_json,
)
from tests.corpus import CORPUS, corpus_files, need_corpus

UTC = timezone.utc


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> float:
    return float(calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0)))


def corpus_text(name: str) -> str:
    need_corpus()
    path = CORPUS / name
    if not path.is_file():
        pytest.skip(f"{name} is not in the corpus at {CORPUS}")
    return path.read_text(encoding="utf-8", errors="replace")


# ---------------------------------------------------------------- every listing in the corpus

_MAILQ_MARKERS = re.compile(r"^-+Queue ID-+ |^-- \d+ Kbytes in \d+ Requests?\.|^Mail queue is empty", re.M)
_ENTRY_LINE = re.compile(r"^[0-9A-F]{6,21}[*!#]{0,2} +\d+ [A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d", re.M)
_JSON_LINE = re.compile(r'^\{"queue_name"', re.M)


def _listings(pattern: re.Pattern[str]) -> list[Path]:
    return [p for p in corpus_files() if pattern.search(p.read_text(encoding="utf-8", errors="replace"))]


def test_the_corpus_has_the_known_listings():
    need_corpus()
    names = {p.name for p in _listings(_MAILQ_MARKERS)}
    assert names >= {
        "kumina__postfix_exporter__testdata_showq.txt.txt",
        "outini__pymailq__tests_samples_mailq.sample.txt",
        "rjbs__Postfix-Parse-Mailq__t_00-load.t.txt",
        "sugy__check-postqueue__testdata_postqueue_output.txt.txt",
    }
    assert any(p.name.startswith("NethServer") for p in _listings(_JSON_LINE))


def test_every_mailq_listing_in_the_corpus_parses_completely():
    need_corpus()
    files = _listings(_MAILQ_MARKERS)
    assert files
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        listing = parse_mailq(text, now=utc(2030, 1, 1), tz=UTC)
        records = list(listing)
        assert listing.malformed == 0, (path.name, listing.examples)
        assert len(records) == len(_ENTRY_LINE.findall(text)) > 0, path.name
        assert listing.stats.consistent in (True, None), path.name
        assert all(is_valid_queue_id(r.queue_id) and r.recipients for r in records), path.name


def test_every_postqueue_json_listing_in_the_corpus_parses_completely():
    need_corpus()
    files = _listings(_JSON_LINE)
    assert files
    for path in files:
        with path.open(encoding="utf-8") as fh:  # a file object: the streaming path
            listing = parse_postqueue_json(fh)
            records = list(listing)
        assert listing.malformed == 0, (path.name, listing.examples)
        assert len(records) == len(_JSON_LINE.findall(path.read_text(encoding="utf-8")))


# ---------------------------------------------------------------- exact expectations per sample

KUMINA = "kumina__postfix_exporter__testdata_showq.txt.txt"
OUTINI = "outini__pymailq__tests_samples_mailq.sample.txt"
RJBS = "rjbs__Postfix-Parse-Mailq__t_00-load.t.txt"
SUGY = "sugy__check-postqueue__testdata_postqueue_output.txt.txt"
NETH = "NethServer__ns8-mail__imageroot_actions_report-queue-status_validate-output.json.txt"

GMAIL_QUOTA = (
    "host alt1.gmail-smtp-in.l.google.com[108.177.97.26] said: 452-4.2.2 The email account that you tried to reach "
    "is over quota. Please direct 452-4.2.2 the recipient to 452 4.2.2  https://support.google.com/mail/?p=OverQuotaTemp "
)

# (file, now, count, trailer (kbytes, requests) or None, {queue_name: count})
SAMPLES = [
    (KUMINA, utc(2020, 2, 24, 14), 24, None, {"active": 16, "deferred": 8}),
    (OUTINI, utc(2017, 8, 1), 30, (14, 30), {"deferred": 29, "hold": 1}),
    (RJBS, utc(2014, 10, 17, 13), 5, (8534903, 5), {"active": 2, "hold": 1, UNKNOWN_QUEUE: 1, "deferred": 1}),
    (SUGY, utc(2017, 6, 26, 15), 12, (1248, 12), {"active": 1, "deferred": 11}),
]


@pytest.mark.parametrize("name,now,count,trailer,queues", SAMPLES, ids=[s[0].split("__")[0] for s in SAMPLES])
def test_sample_counts(name, now, count, trailer, queues):
    listing = parse_mailq(corpus_text(name), now=now, tz=UTC)
    records = list(listing)
    assert len(records) == count
    assert listing.malformed == 0 and listing.stats.warnings == []
    got_trailer = (listing.stats.trailer_kbytes, listing.stats.trailer_requests)
    assert got_trailer == (trailer if trailer else (None, None))
    by_queue: dict[str, int] = {}
    for r in records:
        by_queue[r.queue_name] = by_queue.get(r.queue_name, 0) + 1
    assert by_queue == queues


# (file, now, queue_id, queue_name, arrival, size, sender, [(recipient, reason)])
ENTRIES = [
    (KUMINA, utc(2020, 2, 24, 14), "C420820802", "active", utc(2020, 2, 24, 13, 35, 18), 4387, "sender@example.com",
     [("recipient@lerum.se", None)]),
    (KUMINA, utc(2020, 2, 24, 14), "0572820D64", "deferred", utc(2020, 2, 22, 0, 44, 54), 4098, "sender@example.com",
     [("recipient@stahlstierna.se", "host mail.wekudata.com[37.208.0.7] said: 452 4.2.2 Quota exceeded "
       "(rehanna@stahlstierna.se) (in reply to RCPT TO command)")]),
    (KUMINA, utc(2020, 2, 24, 14), "0CC2B22124", "deferred", utc(2020, 2, 21, 13, 31, 58), 10926, "sender@example.com",
     [("recipient@gmail.com", GMAIL_QUOTA + "f10si11999094pgj.597 - gsmtp (in reply to RCPT TO command)")]),
    # reason indented 19 and 11 columns (right-aligned to column 78)
    (KUMINA, utc(2020, 2, 24, 14), "00C33202B6", "deferred", utc(2020, 2, 24, 11, 32, 37), 4823, "sender@example.com",
     [("recipient@gafe.se", "connect to gafe.se[151.252.30.111]:25: Connection refused")]),
    (KUMINA, utc(2020, 2, 24, 14), "06373212DC", "deferred", utc(2020, 2, 22, 0, 34, 11), 4088, "sender@example.com",
     [("recipient@utb.falun.se", "connect to smtp.falun.se[192.121.234.25]:25: Connection timed out")]),
    # 12-hex-digit ids overflow the 11-column field; the hand-edited "Dec 31" entry lands in the previous year
    (OUTINI, utc(2017, 8, 1), "10DFD11830F2", "deferred", utc(2016, 12, 31, 16, 16, 12), 263,
     "sender-1@testsend_domain.tld", [("user-1@test-domain.tld", "mail transport unavailable")]),
    (OUTINI, utc(2017, 8, 1), "3358B1183308", "hold", utc(2017, 7, 31, 16, 16, 20), 263,
     "sender-4@testsend_domain.tld", [("user-4@test-domain.tld", "mail transport unavailable")]),
    (RJBS, utc(2014, 10, 17, 13), "061A5B062E", "active", utc(2014, 10, 17, 12, 39, 22), 1300, "xavier@example.es",
     [("example@example.com", None), ("example@example.org", None), ("example@example.net", None)]),
    (RJBS, utc(2014, 10, 17, 13), "0A238B065E", "active", utc(2014, 10, 17, 12, 29, 22), 8087383, "example@example.com",
     [("xavier@example.es", None)]),
    (RJBS, utc(2014, 10, 17, 13), "10B11AF9A1", "hold", utc(2014, 10, 17, 12, 38, 55), 221654, "devnull@example.me",
     [("senor+bonbon@example.su", None)]),
    (RJBS, utc(2014, 10, 17, 13), "20B11AF9A1", UNKNOWN_QUEUE, utc(2014, 10, 17, 12, 38, 55), 221654,
     "devnull@example.me", [("senor+bonbon@example.su", None)]),
    (RJBS, utc(2014, 10, 17, 13), "2CD706394A", "deferred", utc(2014, 7, 15, 20, 29, 29), 2912,
     "shredder@example.party", [("jago@example.ninja", "connect to mx.example.ninja[1.2.3.4]:25: Connection timed out")]),
    (SUGY, utc(2017, 6, 26, 15), "E40C184C509", "active", utc(2017, 6, 26, 7, 28, 3), 7718, "xxxxxxxx@xxxxxxx.jp",
     [("xxxxxxxx@xxxxxxx.com", None)]),
    # long reasons start at column 0
    (SUGY, utc(2017, 6, 26, 15), "1457084D84C", "deferred", utc(2017, 6, 23, 13, 39, 42), 3414,
     "xxxxxxxx@xxxxxxx.ne.jp", [("xxxxxxxx@xxxxxxx.com",
                                  "delivery temporarily suspended: connect to xxxxxxx.com[203.0.113.0]:25: Connection timed out")]),
    (SUGY, utc(2017, 6, 26, 15), "5868984DD1B", "deferred", utc(2017, 6, 20, 22, 47, 52), 10413, "xxxxxxxx@xxxxxxx.jp",
     [("xxxxxxxx@xxxxxxx.co", "Host or domain name not found. Name service error for name=xxxxxxx.co type=MX: "
                              "Host not found, try again")]),
    (SUGY, utc(2017, 6, 26, 15), "5C99D84D85A", "deferred", utc(2017, 6, 19, 10, 12, 36), 4089, "xxxxxxxx@xxxxxxx.com",
     [("xxxxxxxx@xxxxxxx.com", "connect to xxxxxxx.com[203.0.113.0]:25: Connection timed out")]),
]


@pytest.mark.parametrize("name,now,qid,queue,arrival,size,sender,rcpts", ENTRIES, ids=[e[2] for e in ENTRIES])
def test_sample_entries(name, now, qid, queue, arrival, size, sender, rcpts):
    records = {r.queue_id: r for r in parse_mailq(corpus_text(name), now=now, tz=UTC)}
    rec = records[qid]
    assert (rec.queue_name, rec.arrival_time, rec.size, rec.sender, rec.forced_expire) == (queue, arrival, size, sender, False)
    assert [(r.address, r.delay_reason) for r in rec.recipients] == rcpts


def test_weekday_of_the_inferred_year_is_checked():
    # kumina's "Mon Feb 24" is 2020: listed in 2020 every weekday agrees, listed in 2026 none does
    text = corpus_text(KUMINA)
    same = parse_mailq(text, now=utc(2020, 2, 24, 14), tz=UTC)
    list(same)
    assert same.stats.weekday_mismatches == 0
    later = parse_mailq(text, now=utc(2026, 3, 1), tz=UTC)
    records = list(later)
    assert later.stats.weekday_mismatches == 24
    assert records[0].arrival_time == utc(2026, 2, 24, 13, 35, 18)


def test_nethserver_postqueue_json():
    records = list(parse_postqueue_json(corpus_text(NETH)))
    assert [(r.queue_id, r.queue_name, r.arrival_time, r.size, r.sender, len(r.recipients)) for r in records] == [
        ("8A14E1012A58", "deferred", 1681392553.0, 800, "first.user@dp.nethserver.net", 3),
        ("86307101275B", "deferred", 1681392644.0, 748, "first.user@dp.nethserver.net", 2),
    ]
    assert records[1].recipients[1] == QueuedRecipient(
        "john.doe@gmail.com", "connect to alt2.gmail-smtp-in.l.google.com[142.250.150.26]:25: Operation timed out"
    )
    assert records[0].reasons == ("connect to ns8.example.com[1.2.3.4]:25: Operation timed out",)
    assert not records[0].forced_expire


# ---------------------------------------------------------------- postqueue -j, every member

JSON_CASES = [
    # 3.1: no forced_expire, a recipient without a reason
    ('{"queue_name": "active", "queue_id": "2984816E715", "arrival_time": 1700000000, "message_size": 12, '
     '"sender": "a@example.com", "recipients": [{"address": "b@example.net"}]}',
     QueuedMessage("2984816E715", "active", 1700000000.0, 12, "a@example.com", (QueuedRecipient("b@example.net"),), False)),
    # 3.5+ forced_expire; long queue id; hold
    ('{"queue_name": "hold", "queue_id": "4PbC4x469Jz3tBr", "arrival_time": 1, "message_size": 2, "forced_expire": true, '
     '"sender": "MAILER-DAEMON", "recipients": []}',
     QueuedMessage("4PbC4x469Jz3tBr", "hold", 1.0, 2, "MAILER-DAEMON", (), True)),
    # the spelling one source snapshot emits
    ('{"queue_name": "deferred", "queue_id": "ABCDEF1", "arrival_time": 1, "message_size": 2, "force_expired": true, '
     '"sender": "s@x", "recipients": []}',
     QueuedMessage("ABCDEF1", "deferred", 1.0, 2, "s@x", (), True)),
    # 3.11 orig_address and bounce_reason, the undocumented other_reason, unknown members ignored
    ('{"queue_name": "deferred", "queue_id": "ABCDEF2", "arrival_time": 5, "message_size": 6, "forced_expire": false, '
     '"sender": "s@x", "future_member": {"x": [1]}, "recipients": [{"address": "r@y", "orig_address": "alias@y", '
     '"delay_reason": "connect to y[192.0.2.1]:25: Connection refused", "bounce_reason": "b", "other_reason": "o", '
     '"later": 1}]}',
     QueuedMessage("ABCDEF2", "deferred", 5.0, 6, "s@x", (
         QueuedRecipient("r@y", "connect to y[192.0.2.1]:25: Connection refused", "alias@y", "b", "o"),), False)),
]


@pytest.mark.parametrize("line,expected", JSON_CASES)
def test_postqueue_json_members(line, expected):
    listing = parse_postqueue_json(line)
    assert list(listing) == [expected]
    assert listing.malformed == 0


MALFORMED_JSON = [
    ('{"queue_name": "deferred", "queue_id": "ABCDEF', "not JSON"),  # truncated
    ("[1, 2]", "not a JSON object"),
    ('{"queue_id": "../../etc/passwd", "recipients": []}', "missing or invalid queue_id"),
    ('{"queue_id": "ABCDEF1 ; rm -rf /", "recipients": []}', "missing or invalid queue_id"),
    ('{"recipients": []}', "missing or invalid queue_id"),
    ('{"queue_id": "ABCDEF1", "recipients": {"address": "x"}}', "recipients is not a list"),
    ('{"queue_id": "ABCDEF1", "recipients": [{"delay_reason": "x"}]}', "recipient without an address"),
    ('{"queue_id": "ABCDEF1", "arrival_time": "yesterday", "recipients": []}', "arrival_time is not a number"),
    ('{"queue_id": "ABCDEF1", "message_size": 1.5, "recipients": []}', "message_size is not an integer"),
    ('{"queue_id": "ABCDEF1", "sender": null, "recipients": []}', "sender is not a string"),
    # JSON's true/false are not numbers here (the parser compares exact types: a bool is no int)
    ('{"queue_id": "ABCDEF1", "arrival_time": true, "recipients": []}', "arrival_time is not a number"),
    ('{"queue_id": "ABCDEF1", "message_size": false, "recipients": []}', "message_size is not an integer"),
    ('{"queue_id": "ABCDEF1", "arrival_time": [1], "recipients": []}', "arrival_time is not a number"),
    ('{"queue_id": 123456, "recipients": []}', "missing or invalid queue_id"),
    ('{"queue_id": "ABCDEF1", "recipients": ["x@y"]}', "recipient without an address"),
    ('{"queue_id": "ABCDEF1", "recipients": [{"address": null, "delay_reason": "x"}]}', "recipient without an address"),
    ('{"queue_id": "ABCDEF1", "sender": 5, "recipients": []}', "sender is not a string"),
    ("[" * 100_000, "not JSON"),  # deep nesting: RecursionError, not a traceback
    # an integer past float's range: a bad record, not an OverflowError traceback from float()
    ('{"queue_id": "ABCDEF1", "arrival_time": 1%s, "recipients": []}' % ("0" * 400), "arrival_time is out of range"),
    ('{"queue_id": "ABCDEF1", "arrival_time": -1%s, "recipients": []}' % ("0" * 309), "arrival_time is out of range"),
    ('{"queue_id": "ABCDEF1", "arrival_time": %d, "recipients": []}' % (2**1024 - 2**970), "arrival_time is out of range"),
    # json reads NaN, Infinity and 1e400 (inf) as floats: no arrival (a deferred one's forecast raised in round())
    ('{"queue_id": "ABCDEF1", "arrival_time": NaN, "recipients": []}', "arrival_time is out of range"),
    ('{"queue_id": "ABCDEF1", "arrival_time": -Infinity, "recipients": []}', "arrival_time is out of range"),
    ('{"queue_id": "ABCDEF1", "arrival_time": 1e400, "recipients": []}', "arrival_time is out of range"),
]


@pytest.mark.parametrize("line,why", MALFORMED_JSON, ids=[w for _, w in MALFORMED_JSON])
def test_malformed_json_lines_are_counted_not_fatal(line, why):
    good = JSON_CASES[0][0]
    listing = parse_postqueue_json([good, line, good])
    assert len(list(listing)) == 2
    assert listing.malformed == 1
    assert listing.examples[0][:2] == (2, why)


def test_json_odd_member_types_read_as_before():
    """Members of an unexpected type that a record survives: each read as it always was."""
    line = ('{"queue_id": "ABCDEF1", "queue_name": 5, "arrival_time": 1.5e9, "message_size": 7, "forced_expire": 2, '
            '"recipients": [{"address": "a@x", "delay_reason": 5}, {"address": "b@x", "delay_reason": ""}, '
            '{"address": "c@x", "orig_address": 1, "bounce_reason": "gone", "other_reason": ""}]}')  # fmt: skip
    (m,) = parse_postqueue_json(line)
    assert m == QueuedMessage("ABCDEF1", UNKNOWN_QUEUE, 1.5e9, 7, "",
                              (QueuedRecipient("a@x"), QueuedRecipient("b@x"), QueuedRecipient("c@x", None, None, "gone")),
                              True)  # fmt: skip
    for expire, forced in (("1.0", False), ("true", True), ("0", False), ('"yes"', False), ("null", False)):
        (m,) = parse_postqueue_json('{"queue_id": "ABCDEF1", "forced_expire": %s}' % expire)
        assert m.forced_expire is forced, expire
    (m,) = parse_postqueue_json('{"queue_id": "ABCDEF1", "arrival_time": %d}' % (2**1024 - 2**970 - 1))
    assert m.arrival_time == 1.7976931348623157e308  # the biggest int float() converts is still read
    (m,) = parse_postqueue_json('{"queue_id": "ABCDEF1", "arrival_time": 17}')
    assert type(m.arrival_time) is float and m.arrival_time == 17.0 and m.recipients == ()


def test_json_inputs_bytes_file_and_warnings():
    good = JSON_CASES[0][0]
    payload = (f"postqueue: warning: Mail system is down -- accessing queue directly\n{good}\n\n{good}\n").encode()
    for source in (payload, io.BytesIO(payload), payload.decode(), io.StringIO(payload.decode())):
        listing = parse_postqueue_json(source)
        assert len(list(listing)) == 2
        assert listing.malformed == 0
        assert listing.stats.warnings == ["postqueue: warning: Mail system is down -- accessing queue directly"]


def test_json_invalid_utf8_survives():
    line = JSON_CASES[0][0].replace("a@example.com", "\xe9t\xe9@example.com").encode("latin-1")
    (rec,) = parse_postqueue_json(line)
    assert rec.sender == "\ufffdt\ufffd@example.com"


def test_an_empty_queue_lists_nothing():
    assert list(parse_postqueue_json("")) == []  # postqueue -j prints nothing on an empty queue
    listing = parse_mailq("Mail queue is empty\n")
    assert list(listing) == [] and listing.stats.empty_queue and listing.malformed == 0


def test_stats_can_be_passed_in():
    stats = ParseStats()
    list(parse_postqueue_json([JSON_CASES[0][0], "junk"], stats=stats))
    assert (stats.records, stats.malformed) == (1, 1)


def test_100k_json_records_parse_fast():
    line = JSON_CASES[3][0]
    lines = [line.replace("ABCDEF2", "%05X%X" % (i % 0xFFFFF, 0x100000 + i)) for i in range(100_000)]
    text = "\n".join(lines) + "\n"
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        n = sum(1 for _ in parse_postqueue_json(text))
        best = min(best, time.perf_counter() - start)
    assert n == 100_000
    assert best < 2.0, f"100,000 records took {best:.2f} s"


# ---------------------------------------------------------------- postqueue -p in Postfix's own formats


def render_mailq(messages: list[QueuedMessage], long_ids: bool = False) -> str:
    """What src/postqueue/showq_compat.c prints for these messages (asctime in UTC)."""
    if not messages:
        return "Mail queue is empty\n"
    string_fmt, sender_fmt = ("%-17s %8s %-19s %s", "%-17s %8d %19.19s %s") if long_ids else (
        "%-11s %7s %-20s %s", "%-11s %7d %20.20s %s")
    heads = ("----Queue ID-----", "--Size--", "---Arrival Time----", "--Sender/Recipient------") if long_ids else (
        "-Queue ID-", "--Size--", "----Arrival Time----", "-Sender/Recipient-------")
    out = [string_fmt % heads]
    for i, m in enumerate(messages):
        if i:
            out.append("")
        mark = {"active": "*", "hold": "!"}.get(m.queue_name, "") + ("#" if m.forced_expire else "")
        out.append(sender_fmt % (m.queue_id + mark, m.size, time.asctime(time.gmtime(m.arrival_time)), m.sender))
        saved = ""
        for r in m.recipients:
            why = r.delay_reason or ""
            if why != saved:
                saved = why
                show = why or "reason unavailable"
                out.append(" " * max(0, 76 - len(show)) + f"({show})")
            out.append(string_fmt % ("", "", "", r.address))
    total = sum(m.size for m in messages)
    out += ["", f"-- {total // 1024} Kbytes in {len(messages)} Request{'' if len(messages) == 1 else 's'}."]
    return "\n".join(out) + "\n"


NOW = utc(2026, 11, 28, 12)


def test_marks_reasons_and_long_ids():
    msgs = [
        QueuedMessage("4PbC4x469Jz3tBr", "active", NOW - 60, 1234, "a@x.test",
                      (QueuedRecipient("r1@y.test"),), True),
        QueuedMessage("4PbC7269xVz3tBr", "hold", NOW - 7200, 99, "MAILER-DAEMON",
                      (QueuedRecipient("r2@y.test", "connect to y.test[192.0.2.1]:25: Connection refused"),), True),
        QueuedMessage("4PbCNM3z5lz3tBr", "deferred", utc(2026, 2, 3, 4, 5, 6), 100_000_000, "b@x.test", (
            QueuedRecipient("r3@y.test", "short"),
            QueuedRecipient("r4@y.test", "short"),
            QueuedRecipient("r5@y.test"),
            QueuedRecipient("r6@y.test", "x" * 90),
        )),
    ]
    text = render_mailq(msgs, long_ids=True)
    assert "4PbC4x469Jz3tBr*#" in text and "4PbC7269xVz3tBr!#" in text and "(reason unavailable)" in text
    listing = parse_mailq(text, now=NOW, tz=UTC)
    assert list(listing) == msgs
    assert listing.malformed == 0 and listing.stats.long_ids and listing.stats.consistent
    assert msgs[1].null_sender and not msgs[0].null_sender


def test_year_inference():
    listing = "-Queue ID- --Size-- ----Arrival Time---- -Sender/Recipient-------\n" \
              "ABCDEF1        10 {stamp}  s@x\n                                         r@y\n"

    def arrival(stamp: str, now: float, **kw) -> float:
        (rec,) = parse_mailq(listing.format(stamp=stamp), now=now, tz=UTC, **kw)
        return rec.arrival_time

    new_year = utc(2027, 1, 1, 0, 5)
    assert arrival("Fri Dec 31 23:59:00", new_year) == utc(2026, 12, 31, 23, 59)  # rollover
    assert arrival("Fri Jan  1 00:01:00", new_year) == utc(2027, 1, 1, 0, 1)
    # an hour "in the future" is clock skew, not last year; unless no slack is allowed
    assert arrival("Fri Jan  1 01:05:00", new_year) == utc(2027, 1, 1, 1, 5)
    assert arrival("Fri Jan  1 01:05:00", new_year, future_slack=0) == utc(2026, 1, 1, 1, 5)
    assert arrival("Thu Feb 29 12:00:00", utc(2027, 3, 1)) == utc(2024, 2, 29, 12)  # last leap year


def test_damaged_listings():
    text = (
        "postqueue: warning: Mail system is down -- accessing queue directly\n"
        "-Queue ID- --Size-- ----Arrival Time---- -Sender/Recipient-------\n"
        "stray line before any entry\n"
        "ABCDEF1        10 Sat Nov 28 10:00:00  s@x\n"
        "(this reason was wrapped by a terminal at eighty columns and continues on\n"
        "the next line at column zero)\n"
        "r1@y\n"  # a forum collapsed the indentation
        "\n"
        "nothex!       10 Sat Nov 28 10:00:00  s@x\n"
        "\n"
        "ABCDEF2        10 Sat Nov 28 10:00:00  (maildrop queue, sender UID 1000)\n"
        "\n"
        "ABCDEF3 10 Sat Nov 28 10:00:00 <s@x>\n"
        "   <r@y>\n"
        "(unclosed reason\n"
        "                                         r2@y\n"
        "\n"
        "-- 0 Kbytes in 4 Requests.\n"
    )
    listing = parse_mailq(text, now=NOW, tz=UTC)
    recs = list(listing)
    assert [(r.queue_id, r.queue_name, r.sender) for r in recs] == [
        ("ABCDEF1", "deferred", "s@x"), ("ABCDEF2", "maildrop", ""), ("ABCDEF3", "deferred", "s@x")]
    assert recs[0].recipients == (QueuedRecipient(
        "r1@y", "this reason was wrapped by a terminal at eighty columns and continues on the next line at column zero"),)
    assert recs[2].recipients == (QueuedRecipient("r@y"), QueuedRecipient("r2@y", "unclosed reason"))
    assert listing.stats.wrapped_reasons == 1
    assert [why for _, why, _ in listing.examples] == [
        "line outside a queue entry", "entry with an invalid queue id", "reason without its closing parenthesis"]
    assert listing.stats.warnings == ["postqueue: warning: Mail system is down -- accessing queue directly"]
    assert listing.stats.consistent is False  # 4 requests announced, 3 readable


def test_pre_3_1_showq_format():
    # src/showq/showq.c before 3.1: "%-10s%c%8ld %20.20s %s", recipients "%-10s %8s %-20s %s", "??" without a time
    text = ("%-10s%c%8d %20.20s %s\n" % ("2984816E71", "*", 1234, "Sat Nov 28 10:00:00 2026", "s@x")
            + "%-10s %8s %-20s %s\n" % ("", "", "", "r@y") + "\n"
            + "%-10s%c%8d %20.20s %s\n" % ("2984816E72", " ", 1, "??", "s@x")
            + "%-10s %8s %-20s %s\n" % ("", "", "", "r@y"))
    recs = list(parse_mailq(text, now=NOW, tz=UTC))
    assert [(r.queue_id, r.queue_name, r.size, r.arrival_time) for r in recs] == [
        ("2984816E71", "active", 1234, utc(2026, 11, 28, 10)), ("2984816E72", UNKNOWN_QUEUE, 1, 0.0)]


# ---------------------------------------------------------------- queue ids

VALID_IDS = ["2984816E715", "C420820802", "10DFD11830F2", "ABCDEF", "4PbC4x469Jz3tBr", "3nsRhm5bH5z306M",
             "3mPVKl0Mhjz7sXv", "4PbC7269xVz3tBr", "4PbCNM3z5lz3tBr", "zzzzzzzzzzz1"]
INVALID_IDS = ["", "ALL", "ABCDE", "2984816e715", "2984816E715\n", " 2984816E715", "2984816E715 ", "29848-16E715",
               "4PbC4x469Jz3tBr;id", "4PbC4x469Jz3tB z", "4PbC4x469Az3tBr", "4PbC4x469Jz3tBz", "4PbCz3tBr",
               "4PbC4x469J", "-d", "../2984816E715", "2984816E715$(id)", "G" * 7, "A" * 22, None, 12345]


@pytest.mark.parametrize("qid", VALID_IDS)
def test_valid_queue_ids(qid):
    assert is_valid_queue_id(qid)


@pytest.mark.parametrize("qid", INVALID_IDS)
def test_invalid_queue_ids(qid):
    assert not is_valid_queue_id(qid)


def test_every_queue_id_in_the_corpus_logs_is_valid():
    from checks.postfix.logline import LineParser

    need_corpus()
    seen = 0
    for path in corpus_files():
        parser = LineParser(reference_time=NOW)
        with path.open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                rec = parser.parse(line.rstrip("\n"))
                if rec is not None and rec.queue_id not in (None, "NOQUEUE"):
                    assert is_valid_queue_id(rec.queue_id), (path.name, rec.queue_id)
                    seen += 1
    assert seen > 1000


def test_null_sender():
    assert is_null_sender("") and is_null_sender("<>") and is_null_sender("MAILER-DAEMON")
    assert not is_null_sender("mailer-daemon@example.com")
    assert is_null_sender("bounces", empty_address_recipient="bounces")


# ---------------------------------------------------------------- properties

_METACHARS = set(" \t\n\r\x0b\x0c;&|$`'\"\\<>(){}[]*?!#~=%^,/:@\x00")


@given(st.text())
def test_queue_ids_never_contain_shell_metacharacters_or_space(s):
    if is_valid_queue_id(s):
        assert not (set(s) & _METACHARS) and not any(c.isspace() for c in s) and s.isascii() and s.isalnum()


@given(st.sampled_from(VALID_IDS), st.integers(0, 20), st.sampled_from(sorted(_METACHARS) + ["\u00a0", "\u2028", "é"]))
def test_a_metacharacter_anywhere_makes_an_id_invalid(qid, pos, ch):
    pos = min(pos, len(qid))
    assert not is_valid_queue_id(qid[:pos] + ch + qid[pos:])


@given(st.from_regex(QUEUE_ID_RE, fullmatch=True))
def test_the_id_regex_and_the_predicate_agree(qid):
    assert is_valid_queue_id(qid)


_LINES = st.sampled_from([
    "-Queue ID- --Size-- ----Arrival Time---- -Sender/Recipient-------",
    "ABCDEF1*       10 Sat Nov 28 10:00:00  s@x", "4PbC4x469Jz3tBr!#    12 Sat Nov 28 10:00:00 s@x",
    "                                         r@y", "(reason", "reason)", "(x)", "", "-- 1 Kbytes in 1 Request.",
    "Mail queue is empty", "postqueue: fatal: Cannot connect", '{"queue_id": "ABCDEF1", "recipients": []}',
    "ABCDEF1 99 Feb Feb 30 25:61:61 s", "ZZZZZZ 1 ??",
])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_LINES, st.text(max_size=80)), max_size=30), st.floats(-1e10, 1e10))
def test_no_text_crashes_the_parsers(lines, now):
    text = "\n".join(lines)
    for source in (text, text.encode("utf-8", "surrogatepass"), lines):
        listing = parse_mailq(source, now=now, tz=UTC)
        for rec in listing:
            assert is_valid_queue_id(rec.queue_id)
        assert listing.stats.malformed >= 0
        for rec in parse_postqueue_json(source):
            assert is_valid_queue_id(rec.queue_id)


_ADDR = st.from_regex(r"[a-z0-9][a-z0-9.+_-]{0,15}@[a-z0-9][a-z0-9.-]{0,15}", fullmatch=True)
_REASON = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9 .:\[\]()<>@=,-]{0,120}[A-Za-z0-9.)\]]", fullmatch=True).filter(
    lambda r: r != "reason unavailable")
_SHORT_ID = st.from_regex(r"[0-9A-F]{6,12}", fullmatch=True)
_LONG_ID = st.from_regex(r"[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]{10}z[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-y]{1,6}", fullmatch=True)


@st.composite
def _messages(draw, long_ids: bool):
    n = draw(st.integers(0, 6))
    ids = draw(st.lists(_LONG_ID if long_ids else _SHORT_ID, min_size=n, max_size=n, unique=True))
    out = []
    for qid in ids:
        rcpts = tuple(QueuedRecipient(a, r) for a, r in draw(
            st.lists(st.tuples(_ADDR, st.one_of(st.none(), _REASON)), min_size=1, max_size=4)))
        mark = draw(st.sampled_from(["active", "hold", None]))
        queue = mark or ("deferred" if any(r.delay_reason for r in rcpts) else UNKNOWN_QUEUE)
        arrival = float(draw(st.integers(int(NOW) - 300 * 86400, int(NOW))))
        sender = draw(st.one_of(_ADDR, st.just("MAILER-DAEMON")))
        out.append(QueuedMessage(qid, queue, arrival, draw(st.integers(0, 10**9)), sender, rcpts, draw(st.booleans())))
    return out


@settings(max_examples=200, deadline=None)
@given(st.booleans().flatmap(lambda long: st.tuples(st.just(long), _messages(long))))
def test_rendered_listings_round_trip(case):
    long_ids, msgs = case
    listing = parse_mailq(render_mailq(msgs, long_ids), now=NOW, tz=UTC)
    assert list(listing) == msgs
    assert listing.malformed == 0
    assert listing.stats.empty_queue == (not msgs)


def test_postqueue_with_the_mail_system_down():
    # captured on the lab machine (Postfix 3.7.11, master not running), stderr merged
    text = ("postqueue: warning: Mail system is down -- accessing queue directly (Connect to the Postfix showq "
            "service: No such file or directory)\npostqueue: fatal: malformed showq server response\n")
    for listing in (parse_mailq(text, now=NOW), parse_postqueue_json(text)):
        assert list(listing) == [] and listing.malformed == 0
        assert [w.split(":")[1] for w in listing.stats.warnings] == [" warning", " fatal"]
