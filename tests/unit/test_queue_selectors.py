"""The queue selectors' parsing (AGE, SIZE, REGEX), the --sasl-user/--client join on real-shaped
smtpd lines, the selection over the captured lab queue, the plan's counts and the
multi-recipient warning, and each message's fate (diagnose/fate.py)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pytest

from checks.errors import InputError, UsageError
from checks.postfix.postqueue import QueuedMessage, QueuedRecipient
from checks.targets import LocalTarget
from diagnose import actions as act
from diagnose import queueselect as qs
from diagnose.cli import main
from diagnose.fate import fate, first_cause
from diagnose.queuereport import cause_of
from tests.unit.test_queue_config import MESSAGES, NOW, lab_snapshot


@pytest.mark.parametrize("text, seconds", [("30m", 1800), ("2h", 7200), ("3d", 259200), ("1w", 604800),
                                           ("1d12h", 129600), ("45s", 45), ("2H", 7200)])  # fmt: skip
def test_age(text, seconds):
    assert qs.parse_age(text) == seconds


@pytest.mark.parametrize("text", ["", "3", "h", "2 hours", "-1h", "1.5h", "3d2w"])
def test_bad_age_is_a_usage_error(text):
    with pytest.raises(UsageError, match=r"--older-than: cannot read the age .*use 30m, 2h, 3d"):
        qs.parse_age(text)


@pytest.mark.parametrize("text, size", [("20000", 20000), ("500k", 512000), ("1M", 1048576), ("1m", 1048576),
                                        ("1.5M", 1572864), ("2G", 2 * 1024**3), ("10kb", 10240)])  # fmt: skip
def test_size(text, size):
    assert qs.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "M", "1T", "-5", "ten", "5 k"])
def test_bad_size_is_a_usage_error(text):
    with pytest.raises(UsageError, match="--min-size: cannot read the size"):
        qs.parse_size(text)


def test_invalid_regex_is_a_one_line_usage_error(capsys):
    assert main(["queue", "hold", "--reason", "(unclosed", "--snapshot", "/nonexistent"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pfdiag: --reason: not a valid regular expression '(unclosed'") and "\n" not in err
    assert qs.parse_reason("GREYlisted").search("451 4.7.1 greylisted, try again")  # case-insensitive


def _args(**kw: object) -> argparse.Namespace:
    base = {k: None for k in ("cause", "domain", "queue", "sender", "recipient", "older_than", "younger_than",
                              "min_size", "max_size", "reason", "sasl_user", "client")}  # fmt: skip
    return argparse.Namespace(**{**base, "id": [], "all_deferred": False, **kw})


@pytest.mark.parametrize("kw, message", [
    ({"sender": "bob"}, "--sender: give an address"), ({"recipient": "<>"}, "--recipient: <> is a sender only"),
    ({"client": "not-an-ip"}, "--client: not an IP address"), ({"older_than": "soon"}, "--older-than"),
    ({"max_size": "big"}, "--max-size: cannot read")])  # fmt: skip
def test_bad_selectors(kw, message):
    with pytest.raises(UsageError, match=message):
        qs.selection(_args(**kw))


def test_contradictions_are_refused_before_anything_runs():
    with pytest.raises(UsageError, match="--younger-than must be more than --older-than"):
        qs.check("hold", qs.selection(_args(older_than="2h", younger_than="1h")), yes=False, dry_run=False)
    with pytest.raises(UsageError, match="--max-size is below --min-size"):
        qs.check("hold", qs.selection(_args(min_size="1M", max_size="1k")), yes=False, dry_run=False)
    with pytest.raises(UsageError, match="flush takes no selectors"):
        qs.check("flush", qs.selection(_args(sender="@a.test")), yes=False, dry_run=False)


def _ids(**kw: object) -> set[str]:
    return {m.queue_id for m in act.select(MESSAGES, qs.selection(_args(**kw)), cause_of, now=NOW)[0]}


def test_selectors_over_the_captured_lab_queue():
    assert _ids(min_size="1M") == {"6F08F1663E4"}  # the 8.5 MB body-stall message
    assert _ids(max_size="352") == {"E0F49166055", "D4914166212"}
    assert _ids(recipient="@refused.test", reason="suspended") == {
        "609971663DA", "615FA1663CD", "45E08166056", "441841663C7", "447A01663C2", "463681663C6"}  # fmt: skip
    assert _ids(recipient="a@greylist.test") == {"60E3B1663D7"}
    assert _ids(sender="@SENDER.test", queue="hold") == {"60E3B1663D7"}
    assert _ids(sender="<>") == set() and _ids(sender="other@sender.test") == set()
    assert len(_ids(sender="lab@sender.test")) == len(MESSAGES)
    newest = max(m.arrival_time for m in MESSAGES)
    assert _ids(older_than="7m") == {m.queue_id for m in MESSAGES if NOW - m.arrival_time >= 420}
    assert _ids(younger_than="7m1s") == {m.queue_id for m in MESSAGES if m.arrival_time > newest - 1}


SMTPD = """\
{d} mail postfix/submission/smtpd[20040]: connect from client.example.com[89.247.252.52]
{d} mail postfix/submission/smtpd[20040]: BA8F630001DA: client=client.example.com[89.247.252.52], sasl_method=PLAIN, sasl_username=sender@mydomain.com
{d} mail postfix/cleanup[20043]: BA8F630001DA: message-id=<1@mydomain.com>
{d} mail postfix/smtpd[21379]: D155CDC24C3: client=unknown[30.207.11.100], sasl_method=LOGIN, sasl_username=h-2d34d8bb8@h-93a1a37cd1.com
{d} mail postfix/smtpd[21380]: 3F2A1C2B4: client=unknown[2001:db8::7]
{d} mail postfix/pickup[21381]: 4F2A31C2B: uid=0 from=<root>
{d} mail postfix/qmgr[21382]: E0F49166055: from=<x@y.test>, size=1, nrcpt=1 (queue active)
"""


def _msg(qid: str) -> QueuedMessage:
    return QueuedMessage(qid, "deferred", time.time() - 60, 100, "a@b.test", (QueuedRecipient("r@c.test", "x"),))


def test_sasl_user_and_client_are_joined_from_smtpd_lines(tmp_path: Path):
    log = tmp_path / "mail.log"
    log.write_text(SMTPD.format(d=time.strftime("%b %e %H:%M:%S")))
    msgs = [_msg(q) for q in ("BA8F630001DA", "D155CDC24C3", "3F2A1C2B4", "4F2A31C2B")]
    found, note = qs.origins(LocalTarget(), None, msgs, time.time(), sources=[str(log)])
    assert found["BA8F630001DA"] == act.Origin("89.247.252.52", "client.example.com", "sender@mydomain.com")
    assert found["D155CDC24C3"].sasl_user == "h-2d34d8bb8@h-93a1a37cd1.com"
    assert found["3F2A1C2B4"] == act.Origin("2001:db8::7", "unknown", None)
    assert "4F2A31C2B" not in found  # pickup: no client
    assert note.endswith("3 of 4 message(s) came in over SMTP")

    def pick(**kw: object) -> list[str]:
        return [m.queue_id for m in act.select(msgs, qs.selection(_args(**kw)), cause_of, origins=found)[0]]

    assert pick(sasl_user="SENDER@mydomain.com") == ["BA8F630001DA"]  # logins compared in any case
    assert pick(client="30.207.11.100") == ["D155CDC24C3"]
    assert pick(client="2001:db8::/32") == ["3F2A1C2B4"]
    assert pick(client="89.247.0.0/16", sasl_user="sender@mydomain.com") == ["BA8F630001DA"]
    assert pick(client="89.247.0.0/16", sasl_user="someone-else") == []


def test_an_unreadable_log_refuses_the_log_selectors(tmp_path: Path):
    with pytest.raises(InputError, match=r"^--sasl-user/--client need the mail log, which cannot be read .*refused$"):
        qs.origins(LocalTarget(), None, [_msg("BA8F630001DA")], time.time(), sources=[str(tmp_path / "none.log")])


def test_plan_counts_and_the_multi_recipient_warning():
    two = QueuedMessage("60E3B1663D7", "deferred", NOW, 1, "s@x.test", (
        QueuedRecipient("a@greylist.test", "451 4.7.1 greylisted"), QueuedRecipient("b@other.test", "451 4.7.1 greylisted")))  # fmt: skip
    one = QueuedMessage("D8D8F1661F3", "deferred", NOW, 1, "s@x.test", (QueuedRecipient("c@greylist.test", "451 greylisted"),))
    sel = qs.selection(_args(domain="greylist.test"))
    warning = qs.multi_recipient_warning(sel, [two, one])
    assert warning == ("1 of the 2 selected message(s) also have 1 other recipient(s) (60E3B1663D7): an action acts "
                       "on whole messages, so those recipients are affected too")  # fmt: skip
    assert qs.multi_recipient_warning(qs.selection(_args(sender="s@x.test")), [two]) is None
    c = qs.counts([two, one])
    assert c == {"by_cause": {"E21": 2}, "by_domain": {"greylist.test": 2, "other.test": 1}}
    plan = act.build_plan("hold", [two, one], None, None)
    text = qs.render_plan(plan)
    assert "2 message(s); by cause: E21 2" in text and "by recipient domain: greylist.test 2, other.test 1" in text


def test_the_listing_over_selected_messages_only(tmp_path, capsys):
    snap = lab_snapshot(tmp_path)
    assert main(["queue", "--snapshot", snap, "--format", "json", "--recipient", "@refused.test", "--reason", "suspended"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["total_messages"] == 6 and {m["recipients"][0]["address"].split("@")[1] for m in rep["messages"]} == {"refused.test"}
    assert rep["notes"][0] == (f"selected messages only (--recipient @refused.test --reason suspended): 6 of the "
                               f"{len(MESSAGES)} queued; counts, table and groups are over these")  # fmt: skip
    assert all(m["fate"] for m in rep["messages"])
    assert main(["queue", "--snapshot", snap, "--sender", "@sender.test", "--yes"]) == 2  # --yes without an action


def test_fate_phrases():
    now = 1_000_000.0
    assert fate("deferred", "X", "E21", now=now, next_attempt=now + 240, expires_at=now + 86400) == \
        "clears at the next retry in 4 min (greylisting)"
    exp = time.mktime((2026, 12, 11, 14, 2, 0, 0, 0, -1))
    assert fate("deferred", "X", "E09", now=now, next_attempt=now + 600, expires_at=exp) == \
        "bounces on 12-11 14:02 unless the E09 problem is fixed"
    assert fate("deferred", "X", "E33", now=now, next_attempt=now + 60, expires_at=exp) == \
        "retrying is futile (5xx kept by soft_bounce): return it now or hold it"
    assert fate("deferred", "X", "E12", now=now, next_attempt=now - 5, expires_at=exp, expiring=True) == \
        "bounces after the next retry (the next queue scan) unless that attempt succeeds"
    assert fate("hold", "ABC", None, now=now).startswith("on hold: nothing happens until it is released (pfdiag queue release --id ABC)")
    assert fate("active", "X", None, now=now) == "in the active queue: being delivered now"
    assert first_cause(["E21", None, "E33"]) == "E33" and first_cause(["no-reason", "E09"]) == "E09" and first_cause([None]) is None
