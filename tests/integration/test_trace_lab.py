"""pfdiag trace on real mail of the lab Postfix: a message timed out at end of data and was then
delivered (the PIX peer stalls each new message once), and a greylisted one deferred again and
again. pfdiag runs in-process with the lab's log file and `-c <lab config dir>`."""

from __future__ import annotations

import json

import pytest

from diagnose.cli import main
from tests.lab.postfix import PostfixLab
from tests.lab.scenarios import SENDER

pytestmark = pytest.mark.lab


def _trace(capsys: pytest.CaptureFixture[str], lab: PostfixLab, key: str, *more: str) -> tuple[int, dict]:
    rc = main(["trace", key, str(lab.log_path), "-c", str(lab.config_dir), "-f", "json", *more])
    out, _ = capsys.readouterr()
    return rc, json.loads(out)


def test_timeout_at_end_of_data_then_delivered_is_a_possible_duplicate(postfix_lab: PostfixLab, capsys) -> None:
    inj = postfix_lab.inject(SENDER, ["twice@pix.test"], subject="trace twice")
    first = postfix_lab.wait_first_attempt(inj, timeout=60)
    assert first[0].status == "deferred"
    qid = first[0].queue_id
    mark = postfix_lab.mark()
    postfix_lab.postqueue("-i", qid, check=True)
    postfix_lab.wait_for_log(rf": {qid}: to=<twice@pix\.test>.*status=sent", timeout=60, since=mark)
    postfix_lab.wait_for_log(rf": {qid}: removed", timeout=30, since=mark)

    rc, doc = _trace(capsys, postfix_lab, qid)
    assert rc == 0
    (m,) = doc["messages"]
    assert m["message_id"] == inj.message_id.strip("<>") and m["sender"] == SENDER
    assert [(a["status"], a["cause_id"]) for a in m["attempts"]] == [("deferred", "E09"), ("sent", None)]
    assert m["possible_duplicates"] == [{"recipient": "twice@pix.test", "eod_timeouts": 1, "later": "sent",
                                         "copies_at_most": 2}]  # fmt: skip
    assert m["end"] == "removed" and m["now"] is None and m["fate"].startswith("delivered")
    # the same story by Message-ID and by address
    rc, by_mid = _trace(capsys, postfix_lab, inj.message_id)
    assert rc == 0 and [x["queue_id"] for x in by_mid["messages"]] == [qid]
    rc, by_addr = _trace(capsys, postfix_lab, "twice@pix.test")
    assert qid in [x["queue_id"] for x in by_addr["messages"]]
    # text: the duplicate is said with the Message-ID to search for
    assert main(["trace", qid, str(postfix_lab.log_path), "-c", str(postfix_lab.config_dir)]) == 0
    text = capsys.readouterr().out
    assert "possible duplicate: <twice@pix.test> may have up to 2 copies" in text and inj.message_id in text


def test_greylisted_message_lists_each_attempt_and_its_forecast(postfix_lab: PostfixLab, capsys) -> None:
    inj = postfix_lab.inject(SENDER, ["often@greylist.test"], subject="trace often")
    qid = postfix_lab.wait_first_attempt(inj, timeout=60)[0].queue_id
    for n in (2, 3):
        mark = postfix_lab.mark()
        postfix_lab.postqueue("-i", qid, check=True)
        postfix_lab.wait_for_log(rf": {qid}: to=<often@greylist\.test>.*status=deferred", timeout=60, since=mark)
    rc, doc = _trace(capsys, postfix_lab, qid)
    assert rc == 0
    (m,) = doc["messages"]
    assert [(a["status"], a["cause_id"], a["phase"]) for a in m["attempts"]] == [("deferred", "E21", "rcpt")] * 3
    assert m["possible_duplicates"] == []
    assert m["now"]["queue"] == "deferred" and m["forecast"]["next_attempt_earliest"]
    assert m["fate"].startswith("clears at the next retry")


def test_unknown_key_finds_nothing_and_says_so(postfix_lab: PostfixLab, capsys) -> None:
    rc = main(["trace", "nobody-at-all@nowhere.test", str(postfix_lab.log_path), "-c", str(postfix_lab.config_dir)])
    assert rc == 1
    assert "nothing in the log or the queue matches it" in capsys.readouterr().out
