"""pfdiag config --propose judged against the diagnosis, and configuration fixes as a guarded
action (diagnose.configfix). Real postconf on a configuration directory of the test's own
(postconf -c DIR): never /etc/postfix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from checks.config import read_config
from checks.errors import InputError
from checks.targets import LocalTarget
from diagnose.configfix import Change, fixes_for, offer_fixes, parse_change, plan_fix, run_fix, short_timeouts
from diagnose.configreport import SEED, Diagnosis, build, render_md, render_text


def _conf(tmp_path: Path, main_cf: str, master_extra: str = "") -> str:
    conf = tmp_path / "postfix"
    conf.mkdir()
    (conf / "main.cf").write_text(f"compatibility_level = 3.6\nqueue_directory = {tmp_path}/queue\n" + main_cf)
    (conf / "master.cf").write_text("smtp unix - - n - - smtp\n" + master_extra)
    return str(conf)


SEED_CF = "smtp_data_done_timeout = 5s\nsmtp_helo_timeout = 5s\n"


def test_the_seed_proposal_is_judged_against_an_eod_diagnosis(tmp_path) -> None:
    conf = _conf(tmp_path, SEED_CF, "slow unix - - n - - smtp\n  -o smtp_data_done_timeout=2s\n")
    rep = read_config(LocalTarget(), conf)
    diag = Diagnosis({"E09": 23, "E21": 2}, 4, "/var/log/mail.log")
    doc = build(rep, dict(SEED), conf, diag)
    j = doc["proposal"]["judgement"]
    text, md = render_text(doc), render_md(doc)
    dup = next(w for w in j["warnings"] if w.startswith("E09"))
    assert "every extra retry may deliver the message again" in dup and "4 message(s) were possibly delivered twice" in dup
    assert any("returned to its senders (a bounce)" in w and "after 1 day" in w and "instead of after 5 days" in w
               for w in j["warnings"])  # fmt: skip
    # the cause found first: the shortened end-of-data wait, main.cf and the -o, back to 600s
    first = {(f["service"], f["parameter"]): f for f in j["fix_first"]}
    assert first[(None, "smtp_data_done_timeout")]["value"] == "600s"
    assert first[(None, "smtp_data_done_timeout")]["before"] == "5s"
    assert first[("slow/unix", "smtp_data_done_timeout")]["before"] == "2s"
    assert j["fix_first_command"][-4:] == ["--propose", "smtp_data_done_timeout=600s",
                                           "slow/unix/smtp_data_done_timeout=600s", "--apply"]  # fmt: skip
    # a short timeout of another phase is named as left as it is
    assert j["left_as_is"][0].startswith("this proposal leaves the short smtp_*_timeout values as they are: ")
    assert "smtp_helo_timeout = 5s (default 300s)" in j["left_as_is"][0]
    assert "smtp_data_done_timeout = 5s (default 600s; the cause found: its fix is above)" in j["left_as_is"][0]
    assert text.index("Fix the cause found first") < text.index("Proposed (--apply runs these)")
    assert "smtp_data_done_timeout: 5s -> 600s" in text and "To undo it:" in text
    assert "Fix the cause found first" in md and "every extra retry may deliver the message again" in md


def test_without_an_eod_cause_faster_retries_are_load_and_without_logs_it_says_so(tmp_path) -> None:
    rep = read_config(LocalTarget(), _conf(tmp_path, ""))
    j = build(rep, {"minimal_backoff_time": "120s"}, None, Diagnosis({"E21": 2}, 0, "x.log"))["proposal"]["judgement"]
    assert j["warnings"][0].startswith("faster retries: ") and not j["fix_first"] and not j["left_as_is"]
    j = build(rep, {"minimal_backoff_time": "120s"}, None, Diagnosis(error="no log found"))["proposal"]["judgement"]
    assert any("the logs were not read (no log found)" in w for w in j["warnings"])


def test_short_timeouts_and_the_fix_of_the_cause(tmp_path) -> None:
    conf = _conf(tmp_path, SEED_CF, "slow unix - - n - - smtp\n  -o smtp_data_done_timeout=2s\n")
    cfg = read_config(LocalTarget(), conf).config
    found = {(s.service, s.name, s.value) for s in short_timeouts(cfg)}
    assert found == {(None, "smtp_data_done_timeout", "5s"), (None, "smtp_helo_timeout", "5s"),
                     ("slow/unix", "smtp_data_done_timeout", "2s")}  # fmt: skip
    assert [c.key for c in fixes_for(["E21"], cfg)] == []
    assert [c.key for c in fixes_for(["E09"], cfg)] == ["smtp_data_done_timeout", "slow/unix/smtp_data_done_timeout"]
    from diagnose.configfix import timed_out

    assert timed_out("E09", []) and not timed_out("E07", ["lost connection with x[1.2.3.4] while sending RCPT TO"])
    assert timed_out("E07", ["conversation with x[1.2.3.4] timed out while sending RCPT TO"])


@pytest.mark.parametrize("bad", ["x", "=1", "a/b=1", "smtp/bogus/x=1", "Bad-Name=1", "a=b\nc"])
def test_parse_change_refuses_what_postconf_would_misread(bad) -> None:
    with pytest.raises(InputError):
        parse_change(bad)


def test_plan_then_apply_then_rollback_on_a_config_of_its_own(tmp_path) -> None:
    conf = _conf(tmp_path, "smtp_data_done_timeout = 5s\n", "slow unix - - n - - smtp\n")
    t = LocalTarget()
    plan = plan_fix(t, [Change("smtp_data_done_timeout", "600s"), Change("smtp_helo_timeout", "300s"),
                        Change("smtp_data_done_timeout", "1800s", "slow/unix")], conf)  # fmt: skip
    assert [(s.before, s.was_set) for s in plan.steps] == [("5s", True), ("300s", False), ("5s", False)]
    assert plan.commands() == [["postconf", "-c", conf, "-e", "smtp_data_done_timeout=600s", "smtp_helo_timeout=300s"],
                               ["postconf", "-c", conf, "-P", "slow/unix/smtp_data_done_timeout=1800s"],
                               ["postfix", "-c", conf, "reload"]]  # fmt: skip
    assert plan.rollback() == [["postconf", "-c", conf, "-e", "smtp_data_done_timeout=5s"],
                               ["postconf", "-c", conf, "-X", "smtp_helo_timeout"],
                               ["postconf", "-c", conf, "-PX", "slow/unix/smtp_data_done_timeout"],
                               ["postfix", "-c", conf, "reload"]]  # fmt: skip
    log = tmp_path / "actions.log"
    said: list[str] = []
    dry = run_fix(t, plan, str(log), dry_run=True, say=said.append)
    assert not dry.applied and "nothing was changed (dry run)" in said and not log.exists()
    assert "smtp_data_done_timeout: 5s -> 600s (main.cf)" in "\n".join(said)
    refused = run_fix(t, plan, str(log), interactive=True, ask=lambda _p: "no", say=said.append)
    assert not refused.applied and not log.exists()
    main_before = Path(conf, "main.cf").read_text()
    said.clear()
    # confirmed: postconf changes this directory's files; postfix reload fails (no Postfix runs on it)
    done = run_fix(t, plan, str(log), interactive=True, ask=lambda _p: "yes", say=said.append)
    assert done.applied and not done.reloaded
    assert "smtp_data_done_timeout = 600s" in Path(conf, "main.cf").read_text()
    assert "-o smtp_data_done_timeout=1800s" in Path(conf, "master.cf").read_text()
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["phase"] for r in records] == ["start", "intent", "done", "intent", "done", "intent", "done", "end"]
    assert records[2]["before"]["smtp_data_done_timeout"] == "5s" and records[-1]["ok"] is False
    assert records[2]["rollback"][0] == f"postconf -c {conf} -e smtp_data_done_timeout=5s"
    assert any(s.startswith("to undo it: postconf -c") for s in said)
    for argv in done.rollback[:-1]:  # the rollback, as printed, restores the files exactly
        assert t.run(argv).returncode == 0
    assert Path(conf, "main.cf").read_text() == main_before
    assert "smtp_data_done_timeout" not in Path(conf, "master.cf").read_text()


def test_the_wizard_offer_is_never_made_on_a_snapshot(tmp_path) -> None:
    conf = _conf(tmp_path, SEED_CF)
    cfg = read_config(LocalTarget(), conf).config
    doc = {"target": {"live": False}, "causes": [{"id": "E09", "root_cause": True}]}
    asked: list[str] = []
    assert offer_fixes(LocalTarget(), doc, cfg, config_dir=conf, log_path=str(tmp_path / "l"), ask=asked.append) is None
    assert not asked
    doc["target"]["live"] = True
    said: list[str] = []
    res = offer_fixes(LocalTarget(), doc, cfg, config_dir=conf, log_path=str(tmp_path / "l"),
                      ask=lambda p: asked.append(p) or "no", say=said.append)  # fmt: skip
    assert res is not None and not res.applied and asked  # offered, refused: nothing changed
    assert "smtp_data_done_timeout: 5s -> 600s (main.cf): E09 is diagnosed" in "\n".join(said)
    assert "smtp_data_done_timeout = 5s" in Path(conf, "main.cf").read_text()


def test_a_master_cf_override_proposal_is_a_postconf_P_with_its_rollback(tmp_path, capsys) -> None:
    from diagnose.cli import main
    from diagnose.configreport import proposal

    conf = _conf(tmp_path, "", "slow unix - - n - - smtp\n  -o smtp_data_done_timeout=2s\n")
    changes = proposal(["slow/unix/smtp_data_done_timeout=600s"])
    assert changes == {"slow/unix/smtp_data_done_timeout": "600s"}
    doc = build(read_config(LocalTarget(), conf), changes, conf, Diagnosis({"E09": 1}, 0, "x.log"))
    assert doc["proposal"]["commands"][0] == ["postconf", "-c", conf, "-P", "slow/unix/smtp_data_done_timeout=600s"]
    assert doc["proposal"]["rollback"][0] == ["postconf", "-c", conf, "-P", "slow/unix/smtp_data_done_timeout=2s"]
    assert any("pfdiag queue hold --cause E09" in w for w in build(read_config(LocalTarget(), conf), dict(SEED), conf,
               Diagnosis({"E09": 1}, 0, "x.log"))["proposal"]["judgement"]["warnings"])  # fmt: skip
    assert main(["config", "-c", conf, "--propose", "slow/bogus/x=1"]) in (1, 2)  # bad input: one line, no traceback
    err = capsys.readouterr().err
    assert "SERVICE/TYPE" in err and "Traceback" not in err and err.count("\n") == 1


def test_an_unwritable_action_log_stops_the_change_before_it_runs(tmp_path) -> None:
    conf = _conf(tmp_path, "smtp_data_done_timeout = 5s\n")
    plan = plan_fix(LocalTarget(), [Change("smtp_data_done_timeout", "600s")], conf)
    with pytest.raises(InputError, match="action log"):
        run_fix(LocalTarget(), plan, str(tmp_path), yes=True, say=lambda _l: None)  # a directory: not a log file
    assert "smtp_data_done_timeout = 5s" in Path(conf, "main.cf").read_text()
