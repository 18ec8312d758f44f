"""pfdiag queue's selectors on real queued mail (tests/lab): every selector alone and combined
selects exactly the ids a filter over `postqueue -j` gives; a dry run changes nothing; a
confirmed hold by sender holds exactly those; --client is joined from smtpd's client= lines of
the lab's own log (one message is submitted over SMTP from 127.0.0.5, the others through
sendmail/pickup, which logs no client).

Mail goes to the greylisting peer (451 on every attempt), so it all stays deferred.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable

import pytest

from diagnose.cli import main
from tests.lab.postfix import PostfixLab

pytestmark = pytest.mark.lab
GL = "greylist.test"
CLIENT_IP = "127.0.0.5"


def pfdiag(capsys: pytest.CaptureFixture[str], lab: PostfixLab, *args: str) -> tuple[int, str, str]:
    rc = main([args[0], "-c", str(lab.config_dir), *args[1:]])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def mail(postfix_lab: PostfixLab) -> dict[str, Any]:
    """Five deferred messages, in two batches 4 s apart (for the age selectors):
    a: alice@corp.test -> a1 (small)          b: alice@corp.test -> b1, b2 (two recipients)
    c: bob@other.test -> c1 (200 kB)          -- 4 s --
    d: carol@corp.test -> d1, over SMTP from 127.0.0.5     e: bob@other.test -> e1 (60 kB)"""
    lab = postfix_lab
    lab.clear_queue()
    first = {"a": lab.inject("alice@corp.test", [f"a1@{GL}"], subject="sel a"),
             "b": lab.inject("alice@corp.test", [f"b1@{GL}", f"b2@{GL}"], subject="sel b"),
             "c": lab.inject("bob@other.test", [f"c1@{GL}"], subject="sel c", size=200_000)}  # fmt: skip
    ids = {k: lab.wait_first_attempt(inj)[0].queue_id for k, inj in first.items()}
    time.sleep(4)
    mid = lab.submit("carol@corp.test", [(f"d1@{GL}", "sel d")], source=CLIENT_IP)[0]
    ids["d"] = lab.wait_first_attempt(lab.queue_id(mid, timeout=30), recipients=[f"d1@{GL}"])[0].queue_id
    e = lab.inject("bob@other.test", [f"e1@{GL}"], subject="sel e", size=60_000)
    ids["e"] = lab.wait_first_attempt(e)[0].queue_id
    return {"ids": ids, "name": {v: k for k, v in ids.items()}}


def expected(lab: PostfixLab, mail: dict[str, Any], keep: Callable[[dict[str, Any]], bool]) -> set[str]:
    """The names of our messages that `postqueue -j` says match (the independent check)."""
    return {mail["name"][m["queue_id"]] for m in lab.postqueue_json() if m["queue_id"] in mail["name"] and keep(m)}


def listed(capsys: pytest.CaptureFixture[str], lab: PostfixLab, mail: dict[str, Any], *sel: str) -> set[str]:
    """The names of the messages `pfdiag queue SELECTORS -f json` reports."""
    rc, out, err = pfdiag(capsys, lab, "queue", "--format", "json", *sel)
    assert rc == 0, err
    rep = json.loads(out)
    assert rep["notes"][0].startswith("selected messages only ("), rep["notes"]
    assert rep["total_messages"] == len(rep["messages"])
    return {mail["name"].get(m["queue_id"], m["queue_id"]) for m in rep["messages"]}


def planned(capsys: pytest.CaptureFixture[str], lab: PostfixLab, mail: dict[str, Any], *sel: str) -> set[str]:
    """The names of the messages a dry-run hold plans for (JSON plan)."""
    rc, out, err = pfdiag(capsys, lab, "queue", "hold", "--dry-run", "--format", "json", *sel)
    assert rc == 0, err
    return {mail["name"].get(q, q) for q in json.loads(out)["ids"]}


def _age(m: dict[str, Any]) -> float:
    return time.time() - m["arrival_time"]


def test_each_selector_alone_and_combined(postfix_lab, mail, capsys):
    lab = postfix_lab
    arrivals = {mail["name"][m["queue_id"]]: m["arrival_time"] for m in lab.postqueue_json() if m["queue_id"] in mail["name"]}
    split = (max(arrivals[k] for k in "abc") + min(arrivals[k] for k in "de")) / 2
    cases: list[tuple[list[str], Callable[[dict[str, Any]], bool]]] = [
        (["--sender", "alice@corp.test"], lambda m: m["sender"] == "alice@corp.test"),
        (["--sender", "@corp.test"], lambda m: m["sender"].endswith("@corp.test")),
        (["--recipient", f"b2@{GL}"], lambda m: any(r["address"] == f"b2@{GL}" for r in m["recipients"])),
        (["--min-size", "100k"], lambda m: m["message_size"] >= 100 * 1024),
        (["--max-size", "50k"], lambda m: m["message_size"] <= 50 * 1024),
        (["--min-size", "50k", "--max-size", "100k"], lambda m: 50 * 1024 <= m["message_size"] <= 100 * 1024),
        (["--reason", "GREYLIST|try again"], lambda m: True),  # every one of ours is greylisted
        (["--sender", "@other.test", "--min-size", "100k"],
         lambda m: m["sender"].endswith("@other.test") and m["message_size"] >= 100 * 1024),
        (["--sender", "@corp.test", "--recipient", f"@{GL}", "--max-size", "1M", "--reason", "greylist"],
         lambda m: m["sender"].endswith("@corp.test")),
    ]  # fmt: skip
    for sel, keep in cases:
        want = expected(lab, mail, keep)
        assert want, sel  # each case selects something of ours
        assert listed(capsys, lab, mail, *sel) == want, sel
        assert planned(capsys, lab, mail, *sel) == want, sel
    # ages: --older-than puts the split between the batches (4 s apart), computed just before the run
    older = f"{round(time.time() - split)}s"
    want_old = expected(lab, mail, lambda m: m["arrival_time"] <= split)
    assert want_old == {"a", "b", "c"}
    assert planned(capsys, lab, mail, "--older-than", older) & set("abcde") == want_old
    younger = f"{round(time.time() - split)}s"
    assert listed(capsys, lab, mail, "--younger-than", younger) & set("abcde") == {"d", "e"}
    assert listed(capsys, lab, mail, "--younger-than", younger, "--sender", "@other.test") == {"e"}


def test_nothing_matches_is_a_one_line_error(postfix_lab, mail, capsys):
    rc, out, err = pfdiag(capsys, postfix_lab, "queue", "hold", "--reason", "no such reason anywhere", "--yes")
    assert rc == 1 and "no queued message matches the selectors; nothing was changed" in err
    assert len(err.strip().splitlines()) == 1


def test_client_is_joined_from_the_lab_log(postfix_lab, mail, capsys):
    lab = postfix_lab
    assert any(f"client=unknown[{CLIENT_IP}]" in ln for ln in lab.log_lines())  # the line the join reads
    assert listed(capsys, lab, mail, "--client", CLIENT_IP) == {"d"}
    assert planned(capsys, lab, mail, "--client", "127.0.0.0/8") == {"d"}  # pickup mail has no client
    assert planned(capsys, lab, mail, "--client", CLIENT_IP, "--sender", "carol@corp.test") == {"d"}
    rc, out, err = pfdiag(capsys, lab, "queue", "hold", "--client", "127.0.0.9", "--dry-run")
    assert rc == 1 and "no queued message matches" in err and "submitters read from" in err
    rc, _, err = pfdiag(capsys, lab, "queue", "hold", "--sasl-user", "nobody", "--dry-run")
    assert rc == 1 and "1 of 5 message(s) came in over SMTP" in err


def test_plan_counts_and_multi_recipient_warning(postfix_lab, mail, capsys):
    rc, out, err = pfdiag(capsys, postfix_lab, "queue", "hold", "--recipient", f"b1@{GL}", "--dry-run")
    assert rc == 0, err
    assert "1 message(s); by cause: E21 1" in out and f"by recipient domain: {GL} 1" in out
    assert "warning: 1 of the 1 selected message(s) also have 1 other recipient(s)" in out
    assert "acts on whole messages" in out and "nothing was changed (dry run)" in out
    rc, out, _ = pfdiag(capsys, postfix_lab, "queue", "hold", "--sender", "@corp.test", "--dry-run")
    assert "3 message(s); by cause: E21 3" in out and "other recipient" not in out


def test_dry_run_changes_nothing_then_hold_by_sender_holds_exactly_those(postfix_lab, mail, capsys, tmp_path):
    lab = postfix_lab
    before = {m["queue_id"]: m["queue_name"] for m in lab.postqueue_json()}
    rc, out, _ = pfdiag(capsys, lab, "queue", "hold", "--sender", "alice@corp.test")  # no terminal, no --yes
    assert rc == 0 and "nothing was changed" in out
    assert {m["queue_id"]: m["queue_name"] for m in lab.postqueue_json()} == before
    rc, out, err = pfdiag(capsys, lab, "queue", "hold", "--sender", "alice@corp.test", "--yes",
                          "--action-log", str(tmp_path / "a.log"))  # fmt: skip
    assert rc == 0, err
    after = {m["queue_id"]: m["queue_name"] for m in lab.postqueue_json()}
    held = {mail["name"][q] for q, name in after.items() if name == "hold" and q in mail["name"]}
    assert held == {"a", "b"}
    assert all(after[mail["ids"][k]] == "deferred" for k in "cde")
    # the listing by queue and its fate phrase
    rc, out, _ = pfdiag(capsys, lab, "queue", "--queue", "hold", "--format", "json")
    rep = json.loads(out)
    assert {m["queue_id"] for m in rep["messages"]} == {mail["ids"]["a"], mail["ids"]["b"]}
    assert all(m["fate"].startswith("on hold: nothing happens until it is released") for m in rep["messages"])
    rc, out, _ = pfdiag(capsys, lab, "queue", "--sender", "bob@other.test")
    assert "clears at the next retry in " in out and "(greylisting)" in out
    assert "selected messages only (--sender bob@other.test): 2 of the 5 queued" in out
