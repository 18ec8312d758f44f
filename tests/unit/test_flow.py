"""The decision model: what is asked, when, and what report mode does without asking."""

from __future__ import annotations

import pytest

from checks.errors import UsageError
from diagnose import flow
from diagnose.flow import Ask, Done, Run, State, check_answers, default_answer, next_step

LIVE_EOD = State(collected=True, live=True, deferred=True, eod=True)


def key(step: object) -> str:
    if isinstance(step, Ask):
        return f"ask:{step.question.key}"
    if isinstance(step, Run):
        return f"run:{step.phase}"
    assert isinstance(step, Done)
    return "done"


@pytest.mark.parametrize(
    "answers, state, expected",
    [
        ({}, State(), "ask:target"),
        ({"target": "ssh"}, State(), "ask:host"),
        ({"target": "snapshot"}, State(), "ask:snapshot"),
        ({"target": "local"}, State(), "run:collect"),
        ({"target": "ssh", "host": "mx1"}, State(), "run:collect"),
        # deferrals found: the symptom is settled by the evidence, never asked
        ({"target": "local"}, State(collected=True, deferred=True), "run:checks"),
        # nothing deferred: ask what was noticed
        ({"target": "local"}, State(collected=True), "ask:symptom"),
        ({"target": "local", "symptom": "none"}, State(collected=True), "run:checks"),
        # end-of-data problem on a live target: may we send, and to whom
        ({"target": "local"}, LIVE_EOD, "ask:send_test"),
        ({"target": "local", "send_test": "no"}, LIVE_EOD, "run:checks"),
        ({"target": "local", "send_test": "yes"}, LIVE_EOD, "ask:test_to"),
        ({"target": "local", "send_test": "yes", "test_to": "me@example.net"}, LIVE_EOD, "run:checks"),
        # the operator's answer is looked for in the evidence first, then the send question follows
        ({"target": "local", "symptom": "eod"}, State(collected=True), "run:search"),
        ({"target": "local", "symptom": "eod"}, State(collected=True, searched=True), "ask:send_test"),
        ({"target": "local", "symptom": "stuck"}, State(collected=True, searched=True), "run:checks"),
        # "this machine" had nothing to diagnose: asked what the user has instead
        ({}, State(nothing_here=True), "ask:target"),
        # pasted input: the listing, then the log lines (either may be empty)
        ({"target": "pasted"}, State(), "ask:mailq"),
        ({"target": "pasted", "mailq": ""}, State(), "ask:pasted_log"),
        ({"target": "pasted", "mailq": "", "pasted_log": "/tmp/x"}, State(), "run:collect"),
        # a snapshot cannot send anything: not asked
        ({"target": "demo"}, State(collected=True, live=False, deferred=True, eod=True), "run:checks"),
        # after the checks: act on the queue only interactively and only with something to act on
        ({"target": "local"}, State(True, True, True, True, False, 2, True), "ask:act_on_queue"),
        ({"target": "local"}, State(True, True, True, True, False, 2, False), "done"),
        ({"target": "local"}, State(True, True, True, True, False, 0, True), "done"),
        ({"target": "local", "act_on_queue": "no"}, State(True, True, True, True, False, 2, True), "done"),
    ],
)
def test_next_step(answers: dict[str, str], state: State, expected: str) -> None:
    assert key(next_step(answers, state)) == expected


def test_the_questions_follow_the_evidence() -> None:
    """Nothing here: the other question; the send question says what was (not) found; the
    recipient question names the destination and its next hop and accepts any mailbox behind it."""
    assert next_step({}, State(nothing_here=True)).question is flow.Q_ELSEWHERE  # type: ignore[union-attr]
    assert "pasted" in {v for v, _ in flow.Q_ELSEWHERE.choices}
    none_found = next_step({"target": "local", "symptom": "eod"}, State(collected=True, searched=True))
    assert isinstance(none_found, Ask) and "found no end-of-data timeout" in none_found.question.message
    st = State(collected=True, live=True, deferred=True, eod=True, eod_dest="partner.test", eod_hop="mx.partner.test[192.0.2.7]:25")
    send = next_step({"target": "local"}, st)
    assert isinstance(send, Ask) and send.question.message.startswith("End-of-data timeouts to partner.test:")
    to = next_step({"target": "local", "send_test": "yes"}, st)
    assert isinstance(to, Ask) and to.question.key == "test_to"
    msg = to.question.message
    assert "partner.test" in msg and "mx.partner.test[192.0.2.7]:25" in msg and "Any mailbox behind that next hop" in msg
    assert not hasattr(to.question, "help")  # no stray help line above a question


def test_next_step_is_pure() -> None:
    answers = {"target": "local"}
    before = dict(answers)
    assert key(next_step(answers, LIVE_EOD)) == key(next_step(answers, LIVE_EOD))
    assert answers == before


def test_report_mode_defaults_are_safe_and_required_answers_fail() -> None:
    assert default_answer(flow.Q_SEND) == "no"  # never sends by default
    assert default_answer(flow.Q_ACT) == "no"
    assert default_answer(flow.Q_SYMPTOM) == "none"
    for q in (flow.Q_TO, flow.Q_HOST, flow.Q_SNAPSHOT):
        with pytest.raises(UsageError, match=q.key):
            default_answer(q)


@pytest.mark.parametrize(
    "raw, expected",
    [
        ({"send_test": "Y"}, {"send_test": "yes"}),
        ({"send_test": "false"}, {"send_test": "no"}),
        ({"symptom": "eod"}, {"symptom": "eod"}),
        ({"test_to": " me@example.net "}, {"test_to": "me@example.net"}),
        ({"domain": "Example.COM"}, {"domain": "Example.COM"}),
    ],
)
def test_check_answers_normalises(raw: dict[str, str], expected: dict[str, str]) -> None:
    assert check_answers(raw) == expected


@pytest.mark.parametrize(
    "raw, match",
    [
        ({"colour": "blue"}, "unknown answer"),
        ({"send_test": "maybe"}, "yes or no"),
        ({"symptom": "bad"}, "one of"),
        ({"test_to": "not-an-address"}, "e-mail address"),
        ({"test_to": "a@b..c"}, "e-mail address"),
        ({"host": "mx1; rm -rf /"}, "host"),
        ({"domain": "-bad.example"}, "domain"),
    ],
)
def test_check_answers_rejects(raw: dict[str, str], match: str) -> None:
    with pytest.raises(UsageError, match=match):
        check_answers(raw)


@pytest.mark.parametrize("text", ["mx1", "root@mx1.example.net:2222", "admin@[192.0.2.1]:22", "mail-gw"])
def test_valid_hosts(text: str) -> None:
    assert flow.valid_host(text) is None


@pytest.mark.parametrize("text", ["", "a b", "mx1;ls", "[300.1.1.1]", "$(id)"])
def test_invalid_hosts(text: str) -> None:
    assert flow.valid_host(text) is not None


def test_a_wrong_host_is_asked_again_in_the_wizard_and_fatal_in_report_mode(tmp_path) -> None:
    """A host the user typed that cannot be reached: the wizard says why and asks where again;
    report mode (flags, no questions) ends with that one line."""
    import os

    from checks.errors import PfdiagError
    from diagnose import session

    asked: list[str] = []
    replies = iter(["ssh", "root@127.0.0.1:1", "demo", "no", "no", "no", "no"])

    def answerer(question, answers):  # type: ignore[no-untyped-def]
        asked.append(question.key)
        return next(replies) if question.key in ("target", "host") else session.report_mode_answerer(question, answers)

    notices: list[str] = []
    ssh = {"ssh_config": os.devnull, "known_hosts": str(tmp_path / "kh"), "ssh_timeout": 5.0}
    outcome = session.run(answerer, {}, session.Options(budget=20, interactive=True, include_plugins=False, ssh=ssh),
                          on_notice=notices.append)  # fmt: skip
    assert asked[:3] == ["target", "host", "target"] and outcome.answers["target"] == "demo"
    assert any("127.0.0.1" in n for n in notices)
    with pytest.raises(PfdiagError):
        session.run(session.report_mode_answerer, {"target": "ssh", "host": "root@127.0.0.1:1"},
                    session.Options(budget=20, include_plugins=False, ssh=ssh))  # fmt: skip
