"""The log-line parser: every envelope format of postfix-deferrals.md §1.1, real lines."""

from __future__ import annotations

import calendar
import time

import pytest
from hypothesis import given, settings, strategies as st

from checks.postfix.logline import LineParser, YearTracker
from tests.corpus import corpus_files, need_corpus

REF_2026 = calendar.timegm((2026, 11, 28, 12, 0, 0, 0, 0, 0))


def utc(y, mo, d, h, mi, s):
    return calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0))


ENVELOPES = [
    # (line, host, syslog_name, service, pid, queue_id, text starts with)
    ("Nov 28 11:58:01 mx postfix/smtp[123]: 4AB12C3D4E: to=<a@b.test>, relay=none", "mx", "postfix", "smtp", 123, "4AB12C3D4E", "to=<a@b.test>"),
    ("Jun  1 06:52:57 velocity postfix/qmgr[6674]: warning: connect to transport private/amavis: Connection refused", "velocity", "postfix", "qmgr", 6674, None, "warning: connect"),
    ("2023-03-14T00:10:22.870939+01:00 helga postfix/smtpd[297535]: 4PbC7269xVz3tBr: client=mx.example[81.30.156.23]", "helga", "postfix", "smtpd", 297535, "4PbC7269xVz3tBr", "client="),
    ("2024-10-31T12:38:21.817327+00:00 machine postfix/submission/smtpd[2634372]: warning: non-SMTP command", "machine", "postfix", "submission/smtpd", 2634372, None, "warning:"),
    ("2026-11-28T11:58:01+0100 mx postfix-out/smtp[9]: ABCDEF123: removed", "mx", "postfix-out", "smtp", 9, "ABCDEF123", "removed"),
    ("2026 Nov 28 11:58:01.123 mx postfix-203.0.113.5/smtp[1]: ABCDEF: removed", "mx", "postfix-203.0.113.5", "smtp", 1, "ABCDEF", "removed"),
    ("postfix/smtp[27560]: using backwards-compatible default setting", None, "postfix", "smtp", 27560, None, "using backwards"),
    ("Jun  1 06:52:57 host postfix/smtp[1]: [ID 197553 mail.info] ABCDE12: to=<x@y.test>", "host", "postfix", "smtp", 1, "ABCDE12", "to=<x@y.test>"),
    ("Jun  1 06:52:57 host postfix/smtp[1] ABCDE12: to=<x@y.test>", "host", "postfix", "smtp", 1, "ABCDE12", "to=<x@y.test>"),
    ("Mar  7 02:09:33 server postfix/amavis/smtp[303511]: 4PbCNM3z5lz3tBr: to=<u@x.test>", "server", "postfix", "amavis/smtp", 303511, "4PbCNM3z5lz3tBr", "to="),
    ("Mar  7 02:09:33 server postfix/smtpd[1]: NOQUEUE: reject: RCPT from x[1.2.3.4]: 554", "server", "postfix", "smtpd", 1, "NOQUEUE", "reject:"),
]


@pytest.mark.parametrize("line,host,name,service,pid,qid,text", ENVELOPES)
def test_envelopes(line, host, name, service, pid, qid, text):
    rec = LineParser(reference_time=REF_2026).parse(line)
    assert rec is not None
    assert (rec.host, rec.syslog_name, rec.service, rec.pid, rec.queue_id) == (host, name, service, pid, qid)
    assert rec.text.startswith(text)
    assert rec.raw == line


@pytest.mark.parametrize(
    "line,expected",
    [
        ("2023-03-14T00:10:22.5+01:00 h postfix/smtp[1]: x", utc(2023, 3, 13, 23, 10, 22) + 0.5),
        ("2023-03-14T00:10:22Z h postfix/smtp[1]: x", utc(2023, 3, 14, 0, 10, 22)),
        ("2026-11-28T11:58:01+0100 h postfix/smtp[1]: x", utc(2026, 11, 28, 10, 58, 1)),
        ("2026-11-28T11:58:01-05:30 h postfix/smtp[1]: x", utc(2026, 11, 28, 17, 28, 1)),
    ],
)
def test_rfc3339_and_short_iso_offsets(line, expected):
    assert LineParser().parse(line).ts == pytest.approx(expected)


def test_traditional_stamp_is_local_time_of_the_inferred_year():
    rec = LineParser(reference_time=REF_2026).parse("Nov 28 11:58:01 mx postfix/smtp[1]: x")
    assert rec.ts == time.mktime((2026, 11, 28, 11, 58, 1, 0, 0, -1))


def test_year_inference_across_new_year():
    # the file was last written on Jan 2nd 2027: December lines belong to 2026
    ref = time.mktime((2027, 1, 2, 12, 0, 0, 0, 0, -1))
    p = LineParser(reference_time=ref)
    dec = p.parse("Dec 31 23:59:59 mx postfix/qmgr[1]: ABCDE: removed")
    jan = p.parse("Jan  1 00:00:01 mx postfix/qmgr[1]: ABCDE: removed")
    assert time.localtime(dec.ts).tm_year == 2026
    assert time.localtime(jan.ts).tm_year == 2027
    assert jan.ts - dec.ts == pytest.approx(2, abs=3601)  # allow a DST-free local offset difference


def test_stamp_caches_forget_the_old_year():
    # a log of almost a year, written until Nov 28 2027, that begins in December: the
    # same "Nov  2 11:58:01" a year later must not come from the caches of the year before
    ref = time.mktime((2027, 11, 28, 12, 0, 0, 0, 0, -1))
    p = LineParser(reference_time=ref)
    stamps = ["Dec 30 10:00:00", "Nov  2 11:58:01", "Jan  5 10:00:00", "May  1 10:00:00", "Sep  1 10:00:00",
              "Nov  2 11:58:01", "Nov  2 11:58:03"]
    years = [time.localtime(p.parse(f"{s} mx postfix/qmgr[1]: ABCDE: removed").ts).tm_year for s in stamps]
    assert years == [2026, 2026, 2027, 2027, 2027, 2027, 2027]


def test_seconds_of_a_cached_minute_are_exact():
    p = LineParser(reference_time=REF_2026)
    for sec in (59, 0, 30, 7):
        rec = p.parse(f"Nov 28 11:58:{sec:02d} mx postfix/smtp[1]: x")
        assert rec.ts == time.mktime((2026, 11, 28, 11, 58, sec, 0, 0, -1))


def test_year_tracker_does_not_date_lines_in_the_future():
    ref = time.mktime((2026, 3, 1, 0, 0, 0, 0, 0, -1))
    assert YearTracker(ref).year_for(11, 28) == 2025
    assert YearTracker(ref).year_for(2, 28) == 2026


def test_feb_29_without_leap_year_goes_to_previous_leap_year():
    ref = time.mktime((2025, 3, 1, 0, 0, 0, 0, 0, -1))
    rec = LineParser(reference_time=ref).parse("Feb 29 10:00:00 mx postfix/smtp[1]: x")
    assert time.localtime(rec.ts).tm_year == 2024


def test_journald_json():
    line = '{"MESSAGE":"4AB12C3D4E: removed","SYSLOG_IDENTIFIER":"postfix/qmgr","__REALTIME_TIMESTAMP":"1764327481000000","_PID":"12","_HOSTNAME":"mx"}'
    rec = LineParser().parse(line)
    assert (rec.ts, rec.service, rec.pid, rec.queue_id, rec.text, rec.host) == (1764327481.0, "qmgr", 12, "4AB12C3D4E", "removed", "mx")


def test_journald_json_byte_array_message_and_other_programs():
    msg = list(b"ABCDE1: to=<a@b.test>, relay=none, status=deferred (x\xff)")
    import json

    rec = LineParser().parse(json.dumps({"MESSAGE": msg, "SYSLOG_IDENTIFIER": "postfix/smtp"}))
    assert rec.queue_id == "ABCDE1" and "\ufffd" in rec.text
    assert LineParser().parse('{"MESSAGE":"x","SYSLOG_IDENTIFIER":"dovecot"}') is None
    assert LineParser().parse("{not json") is None


@pytest.mark.parametrize(
    "line",
    [
        "Nov 28 11:58:01 mx dovecot: imap-login: Login: user=<a>",
        "warning: process /usr/local/libexec/postfix/smtpd pid 46234 killed by signal 11",
        "",
        "Nov 28 11:58:01 mx opendkim[1]: ABCDEF: DKIM-Signature field added",
    ],
)
def test_not_postfix(line):
    assert LineParser().parse(line) is None


def test_damaged_stamp_is_flagged_but_line_kept():
    rec = LineParser().parse("%(day)s 11:17:45 server postfix/qmgr[26163]: 34B20E00C3: removed")
    assert rec.bad_stamp and rec.ts is None and rec.queue_id == "34B20E00C3"


def test_bare_messages_without_envelope():
    p = LineParser()
    rec = p.parse("2298F5F619: to=<admin@corp.com>, relay=none, delay=1, status=deferred (user lookup error)")
    assert rec.queue_id == "2298F5F619" and rec.text.startswith("to=<")
    rec = p.parse("to=<a@b.test>, relay=x, delay=1, status=sent (250 ok)")
    assert rec.queue_id is None and rec.text.startswith("to=<")
    assert p.parse("just some words") is None


def test_every_corpus_line_survives():
    need_corpus()
    parsed = 0
    for path in corpus_files():
        parser = LineParser(reference_time=REF_2026)
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if parser.parse(line) is not None:
                    parsed += 1
    assert parsed > 2000  # the corpus holds a few thousand Postfix lines


@settings(max_examples=400, deadline=None)
@given(st.text())
def test_no_text_crashes_the_parser(text):
    LineParser().parse(text)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["Nov 28 11:58:01 mx ", "2026-02-30T99:99:99+99:99 h ", "2026 Foo 31 10:00:00 h ", "Feb 31 00:00:00 h ", ""]),
    st.sampled_from(["postfix/smtp[1]: ", "postfix/smtp[1] ", "postfix[x]: ", "postfix-out/qmgr[99999999999999999999]: "]),
    st.text(),
)
def test_no_damaged_envelope_crashes_the_parser(prefix, program, rest):
    LineParser().parse(prefix + program + rest)


def test_lines_out_of_order_are_never_dated_after_the_file():
    # an excerpt pasted out of order (Sep, then Jan and Mar) into a file written in Nov 2026:
    # a "new year" would date January 2027, after the file was written
    ref = time.mktime((2026, 11, 28, 12, 0, 0, 0, 0, -1))
    p = LineParser(reference_time=ref)
    years = [time.localtime(p.parse(f"{s} mx postfix/qmgr[1]: ABCDE: removed").ts).tm_year
             for s in ("Sep  1 10:00:00", "Jan  5 10:00:00", "Mar  1 10:00:00")]
    assert years == [2026, 2026, 2026]


@pytest.mark.parametrize("qid", ["3A1B2C3D4E5XXXX", "XXXXXXXXXX", "4Xyz9abc12"])
def test_unusual_queue_ids_are_taken_from_the_queue_id_position(qid):
    # anonymised production logs (11 hex digits + "XXXX") and ids of other shapes are still ids
    p = LineParser()
    line = f"Jan 10 10:00:00 mx postfix/qmgr[12]: {qid}: removed"
    assert (p.parse(line).queue_id, p.parse(line).text) == (qid, "removed")
    bare = p.parse(f"postfix/qmgr[12]: {qid}: removed")
    assert (bare.queue_id, bare.text) == (qid, "removed")


@pytest.mark.parametrize("text", ["warning: database /etc/postfix/x.db is older than source file",
                                  "statistics: max connection rate 1/60s for (smtp:192.0.2.1) at Jan 10 10:00:00",
                                  "connect from unknown[192.0.2.1]", "NOQUEUE: reject: RCPT from x"])
def test_daemon_words_are_never_taken_for_queue_ids(text):
    rec = LineParser().parse(f"Jan 10 10:00:00 mx postfix/smtpd[12]: {text}")
    assert rec.queue_id in (None, "NOQUEUE")
    assert rec.text.endswith(text.partition("NOQUEUE: ")[2] or text)


def test_messages_with_anonymised_ids_are_tracked_to_their_outcome():
    from diagnose.deferrals import DeferralAnalysis

    lines = [
        "Jan 10 10:00:00 mx postfix/qmgr[12]: 3A1B2C3D4E5XXXX: from=<a@example.org>, size=300, nrcpt=1 (queue active)",
        "Jan 10 10:00:05 mx postfix/smtp[13]: 3A1B2C3D4E5XXXX: to=<b@example.net>, relay=mx.example.net[192.0.2.7]:25, "
        "delay=5, delays=0/0/0/5, dsn=4.4.2, status=deferred (conversation with mx.example.net[192.0.2.7] timed out "
        "while sending end of data -- message may be sent more than once)",
        "Jan 10 10:10:00 mx postfix/smtp[13]: 3A1B2C3D4E5XXXX: to=<b@example.net>, relay=mx.example.net[192.0.2.7]:25, "
        "delay=600, delays=0/0/0/1, dsn=2.0.0, status=sent (250 2.0.0 Ok)",
        "Jan 10 10:10:00 mx postfix/qmgr[12]: 3A1B2C3D4E5XXXX: removed",
    ]
    p = LineParser()
    a = DeferralAnalysis().add_all(p.parse(line) for line in lines)
    a.finish()
    assert a.outcomes.delivered_later == 1 and a.outcomes.still_deferred == 0
