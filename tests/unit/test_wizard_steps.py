"""The wizard's steps without a terminal: the grouped action list (only actions that fit the cause
and the moment), the symptom search (what it found and where it looked), the recipient check, and
the "paste what you have" path when this machine has no Postfix. The terminal itself is driven
in tests/integration/test_wizard_tmux.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import pytest

from checks.errors import InputError
from diagnose import flow, session
from diagnose.fate import fitting_actions
from diagnose.wizard import action_menu
from tests.corpus import CORPUS


def _cause(cid: str, title: str, queued: int) -> dict[str, Any]:
    return {"id": cid, "title": title, "impact": {"queued_messages": queued, "queued_recipients": queued}}


CAUSES = [_cause("E09", "No reply after the end of the message (possible duplicates)", 19),
          _cause("E05", "Server refused the session at greeting or HELO", 2),
          _cause("E21", "Greylisting at the receiver", 1),
          _cause("E37", "Permanent refusal kept in the queue", 1),
          _cause("E16", "TLS required, but the server did not offer STARTTLS", 0)]  # fmt: skip


def _menu(fixed: set[str], width: int = 80) -> dict[str, list[str]]:
    return {title: [argv[2] for _, _, _, argv in acts] for title, acts in action_menu(CAUSES, fixed, width)}


def test_actions_fit_the_cause_and_the_moment() -> None:
    before = _menu(set())
    assert before == {"E09 No reply after the end of the message (possible duplicates) · 19 queued": ["hold"],
                      "E21 Greylisting at the receiver · 1 queued": ["retry"],
                      "E37 Permanent refusal kept in the queue · 1 queued": ["hold"]}  # fmt: skip
    after = _menu({"E09", "E05"})  # their fixes were applied: retrying now helps
    assert after["E09 No reply after the end of the message (possible duplicates) · 19 queued"] == ["release", "retry"]
    assert after["E05 Server refused the session at greeting or HELO · 2 queued"] == ["retry"]
    assert all("hold" not in acts for t, acts in after.items() if t.startswith("E21"))  # greylisting is never held
    assert fitting_actions("E37", True) == fitting_actions("E37", False)  # retrying a 5xx is futile, fixed or not
    assert not any(t.startswith("E16") for t in after)  # nothing queued: no group


@pytest.mark.parametrize("width", [80, 160])
def test_the_action_list_fits_the_terminal(width: int) -> None:
    for title, acts in action_menu(CAUSES, {"E09", "E05"}, width):
        assert len("   " + title) <= width - 2  # questionary indents a separator by 3
        assert all(len("   ○ " + label) <= width - 2 for label, _, _, _ in acts)
    narrow = action_menu([_cause("E16", "T" * 120, 3)], {"E16"}, 80)
    assert narrow[0][0].endswith("… · 3 queued") and len(narrow[0][0]) < 78


def _demo_facts() -> tuple[Any, Any]:
    from diagnose import engine

    target, _ = session.open_from_answers({"target": "demo"}, session.Options())
    return target, engine.collect(target, budget=30)


def test_the_symptom_is_searched_for_and_the_search_says_where_it_looked() -> None:
    from diagnose.symptom import search

    target, facts = _demo_facts()
    eod = search(target, facts.logs, facts.queue, "eod")
    assert eod.lines == 243 and eod.messages == 23 and eod.causes == {"E09": 243} and eod.queued == 19
    said = eod.sentence()
    assert "243 log line(s) of 23 message(s)" in said and "cause E09 (243)" in said
    assert "/var/log/pfdiag-lab/postfix.log (2026-12-05 15:00 .. 2026-12-06 16:10)" in said
    assert "the queue (postqueue -j)" in said
    stuck = search(target, facts.logs, facts.queue, "stuck")
    assert stuck.queued == 25 and "25 message(s) in the queue (deferred 25)" in stuck.sentence()
    slow = search(target, facts.logs, facts.queue, "slow")
    # the 4 messages that went through hours late, after their end-of-data timeouts
    assert slow.lines == 4 and slow.messages == 4 and "the longest took 318 min" in slow.sentence()
    # the next question follows from what was found
    st = session.state_of(facts, False, True, symptom=eod)
    assert st.searched and st.symptom_hits == 243 + 19


def test_a_pasted_listing_and_log_lines_are_diagnosed(tmp_path: Path) -> None:
    """Nothing here: the wizard asks what the user has; pasted lines become files the readers read,
    and are removed when the session ends; a single line that is no file is asked again."""
    listing = CORPUS / "outini__pymailq__tests_samples_mailq.sample.txt"
    if not listing.exists():
        pytest.skip(f"shared corpus not found at {CORPUS}")
    log = ("Aug  1 11:58:01 mx postfix/smtp[123]: 3F1A2B4C5D: to=<a@partner.test>, relay=mx.partner.test[192.0.2.7]:25, "
           "delay=900, delays=0.1/0/0.2/600, dsn=4.4.2, status=deferred (conversation with mx.partner.test[192.0.2.7] "
           "timed out while sending end of data -- message may be sent more than once)\n")  # fmt: skip
    asked: list[str] = []
    notices: list[str] = []
    replies = iter(["pasted", "/no/such/listing", str(listing), log + log.replace("3F1A2B4C5D", "3F1A2B4C5E")])

    def answerer(q: flow.Question, answers: Mapping[str, str]) -> Any:
        asked.append(q.key)
        return next(replies) if q.key in ("target", "mailq", "pasted_log") else session.report_mode_answerer(q, answers)

    out = session.run(answerer, {}, session.Options(budget=20, interactive=True, include_plugins=False),
                      on_notice=notices.append)  # fmt: skip
    assert asked[:4] == ["target", "mailq", "mailq", "pasted_log"]
    assert any("no such file: /no/such/listing" in n for n in notices)
    assert out.target.kind == "pasted" and out.facts.queue and out.facts.queue["total_messages"] == 30
    assert out.facts.logs and out.facts.logs["totals"]["deferral_lines"] == 2
    assert not Path(out.answers["pasted_log"]).exists()  # the temporary copy is gone


def test_this_machine_without_postfix_asks_what_the_user_has(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session, "_postfix_on_path", lambda: False)
    asked: list[str] = []
    replies = iter(["local", "demo"])

    def answerer(q: flow.Question, answers: Mapping[str, str]) -> Any:
        asked.append(q.message if q.key == "target" else q.key)
        return next(replies) if q.key == "target" else session.report_mode_answerer(q, answers)

    notices: list[str] = []
    out = session.run(answerer, {}, session.Options(budget=20, interactive=True, include_plugins=False),
                      open_target=session.open_with_fallback, on_notice=notices.append)  # fmt: skip
    assert asked[:2] == [flow.Q_TARGET.message, flow.Q_ELSEWHERE.message]
    assert any("nothing to diagnose on this machine" in n for n in notices) and out.answers["target"] == "demo"


def test_take_paste() -> None:
    temps: list[str] = []
    assert session.take_paste("  ", "mailq", temps) == ""
    with pytest.raises(InputError, match="no such file"):
        session.take_paste("/nowhere/at/all", "mailq", temps)
    path = session.take_paste("line 1\nline 2\n", "pasted_log", temps)
    assert temps == [path] and Path(path).read_text() == "line 1\nline 2\n" and (Path(path).stat().st_mode & 0o777) == 0o600
    one = session.take_paste("Aug  1 11:58:01 mx postfix/smtp[1]: 3F1A2B4C5D: to=<a@b.test>, status=sent (ok)", "pasted_log", temps)
    assert one != path and Path(one).read_text().startswith("Aug  1 11:58:01 mx")  # one pasted line is a line, not a file name
    for p in temps:
        Path(p).unlink()


def test_the_test_recipient_must_be_behind_the_next_hop_that_timed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any mailbox will do as long as its mail takes the next hop that timed out; one routed elsewhere
    would test another path: said, and the question is asked again."""
    import checks.nexthop

    st = flow.State(collected=True, live=True, deferred=True, eod=True, eod_dest="partner.test",
                    eod_hop="mx.partner.test[192.0.2.7]:25")  # fmt: skip
    routes = {"partner.test": "192.0.2.7", "sister.test": "192.0.2.7", "elsewhere.test": "198.51.100.9"}
    monkeypatch.setattr(checks.nexthop, "first_address", lambda target, domain, config_dir=None: {
        "host": routes[domain], "name": f"mx.{domain}", "port": 25, "transport": "smtp", "source": "MX"})
    session._same_hop(None, "me@partner.test", st, None)  # type: ignore[arg-type]  # the destination itself
    session._same_hop(None, "me@sister.test", st, None)  # type: ignore[arg-type]  # another domain, same next hop
    with pytest.raises(InputError, match=r"mail to elsewhere.test goes to mx.elsewhere.test\[198.51.100.9\]:25, not to "
                                         r"mx.partner.test\[192.0.2.7\]:25"):  # fmt: skip
        session._same_hop(None, "me@elsewhere.test", st, None)  # type: ignore[arg-type]
