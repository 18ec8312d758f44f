"""diagnose/trace.py on log lines shaped like the lab's real ones (fast; the lab test runs real mail)."""

from __future__ import annotations

import pytest

from checks.postfix.logline import LineParser
from diagnose import trace as T
from diagnose.tracereport import render_markdown, render_text, to_dict

EOD = ("conversation with mx.example.net[192.0.2.7] timed out while sending end of data -- message may be sent "
       "more than once")
LOG = [
    "Jan 10 10:00:00 mx postfix/smtpd[10]: AAAA11111: client=laptop.example.org[198.51.100.4], sasl_method=PLAIN, sasl_username=bob",
    "Jan 10 10:00:00 mx postfix/cleanup[11]: AAAA11111: message-id=<m1@example.org>",
    "Jan 10 10:00:00 mx postfix/qmgr[12]: AAAA11111: from=<bob@example.org>, size=3000, nrcpt=1 (queue active)",
    "Jan 10 10:10:00 mx postfix/smtp[13]: AAAA11111: to=<ann@example.net>, relay=mx.example.net[192.0.2.7]:25, "
    f"delay=600, delays=0/0/0.1/600, dsn=4.4.2, status=deferred ({EOD})",
    # postsuper -r: the message comes back under a new id
    "Jan 10 10:11:00 mx postfix/pickup[14]: BBBB22222: uid=0 from=<bob@example.org> orig_id=AAAA11111",
    "Jan 10 10:11:00 mx postfix/qmgr[12]: AAAA11111: removed",
    "Jan 10 10:11:00 mx postfix/cleanup[11]: BBBB22222: message-id=<m1@example.org>",
    "Jan 10 10:11:00 mx postfix/qmgr[12]: BBBB22222: from=<bob@example.org>, size=3100, nrcpt=1 (queue active)",
    "Jan 10 10:11:02 mx postfix/smtp[13]: BBBB22222: to=<ann@example.net>, relay=mx.example.net[192.0.2.7]:25, "
    "delay=2, delays=0/0/0.1/2, dsn=2.0.0, status=sent (250 2.0.0 Ok)",
    "Jan 10 10:11:02 mx postfix/qmgr[12]: BBBB22222: removed",
    "Jan 10 10:12:00 mx postfix/qmgr[12]: CCCC33333: from=<carol@example.org>, size=10, nrcpt=1 (queue active)",
]


def _read():
    p = LineParser()
    return iter([p.parse(line) for line in LOG])


@pytest.mark.parametrize("text,kind,value", [
    ("AAAA11111", "queue id", "AAAA11111"), ("<m1@example.org>", "message-id", "m1@example.org"),
    ("Ann@Example.NET", "address", "ann@example.net"),
])  # fmt: skip
def test_key_kinds(text, kind, value):
    assert (T.Key.parse(text).kind, T.Key.parse(text).text) == (kind, value)


@pytest.mark.parametrize("bad", ["", "a b", "../etc/passwd", "x" * 40])
def test_bad_keys_are_refused(bad):
    with pytest.raises(ValueError):
        T.Key.parse(bad)


@pytest.mark.parametrize("key", ["AAAA11111", "BBBB22222", "<m1@example.org>", "ann@example.net"])
def test_a_requeued_message_is_one_story_whichever_key(key):
    tr = T.trace(T.Key.parse(key), _read, rereadable=True)
    assert [m.queue_id for m in tr.messages] == ["AAAA11111", "BBBB22222"]
    old, new = tr.messages
    assert (old.client, old.sasl_login, old.message_id) == ("laptop.example.org[198.51.100.4]", "bob", "m1@example.org")
    assert old.requeued_as == ["BBBB22222"] and new.requeued_from == "AAAA11111"
    assert [a.cause_id for a in old.attempts] == ["E09"] and [a.status for a in new.attempts] == ["sent"]


def test_one_pass_from_stdin_says_it_may_miss_lines():
    tr = T.trace(T.Key.parse("ann@example.net"), _read, rereadable=False)
    assert tr.one_pass
    assert tr.messages[0].client is None  # smtpd's line came before the first line naming the address


def test_possible_duplicate_and_renderings_show_outside_text_literally():
    tr = T.trace(T.Key.parse("AAAA11111"), _read, rereadable=True)
    old = tr.messages[0]
    # timed out under the old id, delivered under the new one: two copies possible
    assert [(d.recipient, d.timeouts, d.later, d.copies_at_most) for d in old.duplicates()] == [
        ("ann@example.net", 1, "sent", 2)]
    assert tr.messages[1].duplicates() == []
    doc = to_dict(tr, now=0.0)
    text = render_text(doc, visible=lambda s: s.replace("\x1b", "\\x1b"))
    assert "AAAA11111" in text and "E09 at end-of-data" in text
    md = render_markdown(doc, code=lambda s: f"`{s}`")
    assert "### Message `BBBB22222`" in md


def test_messages_kept_are_bounded(monkeypatch):
    monkeypatch.setattr(T, "MAX_MESSAGES", 1)
    tr = T.trace(T.Key.parse("bob@example.org"), _read, rereadable=True)
    assert len(tr.messages) == 1 and tr.more_messages >= 1
