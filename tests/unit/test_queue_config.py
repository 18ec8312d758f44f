"""pfdiag queue / config on real captured lab outputs (tests/data/lab/), replayed through a
SnapshotTarget bundle built from them: the same Target seam the live commands use."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from checks.config import PARAMETERS, assess, read_config, resolv_risks
from checks.errors import InputError, UsageError
from checks.model import CommandResult
from checks.postfix.postconf import PostfixConfig, parse_postconf
from checks.postfix.postqueue import parse_postqueue_json
from checks.postfix.retry import DEFAULTS, RetrySettings
from checks.queue import age_matrix, bucket_headings, bucket_index, counts, domain_of, forecast_message, group_deferred, read_queue
from checks.targets import SnapshotTarget
from checks.targets.bundle import SnapshotWriter
from diagnose import actions as act
from diagnose.cli import main
from diagnose.commands.config import SEED, proposal
from diagnose.queueselect import render_plan
from diagnose.queuereport import cause_of

LAB = Path(__file__).resolve().parents[1] / "data" / "lab"
QUEUE_JSON = (LAB / "postqueue-j.jsonl").read_text()
MESSAGES = list(parse_postqueue_json(QUEUE_JSON))
NOW = max(m.arrival_time for m in MESSAGES) + 7 * 60  # a fixed "now": 7 minutes after the last arrival


def _h_output(values: dict[str, str], names: list[str]) -> tuple[str, str]:
    """What `postconf -h NAMES` prints for these values (unknown names: nothing, a warning on stderr)."""
    out = "".join(f"{values[n]}\n" for n in names if n in values)
    err = "".join(f"postconf: warning: {n}: unknown parameter\n" for n in names if n not in values)
    return out, err


def lab_snapshot(tmp_path: Path, *, postqueue: CommandResult | None = None, extra: Sequence[CommandResult] = (),
                 files: dict[str, str] | None = None, config: bool = True) -> str:  # fmt: skip
    """A snapshot bundle answering the commands pfdiag runs, from the captured lab outputs."""
    w = SnapshotWriter(host="lab")
    w.add_command(postqueue or CommandResult(("postqueue", "-j"), 0, QUEUE_JSON, ""))
    for r in extra:
        w.add_command(r)
    if config:
        defaults = parse_postconf((LAB / "postconf-d.txt").read_text())
        effective = {**defaults, **parse_postconf((LAB / "postconf-n.txt").read_text())}
        names = [*PARAMETERS, "queue_directory", "daemon_directory"]
        for argv, values in ((("postconf", "-h", *names), effective), (("postconf", "-d", "-h", *names), defaults)):
            out, err = _h_output(values, names)
            w.add_command(CommandResult(argv, 0, out, err))
        w.add_command(CommandResult(("postconf", "-P"), 0, (LAB / "postconf-P.txt").read_text(), ""))
    for path, text in (files or {}).items():
        w.add_file(path, text.encode())
    bundle = tmp_path / "snap.tar.gz"
    w.write(str(bundle))
    return str(bundle)


# ------------------------------------------------------------------ qshape matrix


def test_bucket_headings_are_qshapes():
    assert ["T", *bucket_headings()] == "T 5 10 20 40 80 160 320 640 1280 1280+".split()


@pytest.mark.parametrize(("minutes", "column"), [
    (0, 0), (4.99, 0), (5, 1), (9.99, 1), (10, 2), (19.9, 2), (20, 3), (639.9, 7), (640, 8),
    (1279.9, 8), (1280, 9), (100000, 9),
])  # fmt: skip
def test_bucket_index_matches_qshape_formula(minutes, column):
    # qshape.pl: bucket 1 if age < t, else 2 + int(log2(age / t)), capped at 10 (1-based)
    assert bucket_index(minutes * 60) == column


def test_matrix_counts_recipients_per_domain_like_qshape():
    mx = age_matrix(MESSAGES, NOW)
    total = mx.rows[0]
    assert total[0] == "TOTAL"
    assert total[1] == sum(len(m.recipients) for m in MESSAGES)  # recipients, not messages
    assert total[2][1] == total[1]  # 7 minutes old: all in the 5..10 column
    by_domain = {d: t for d, t, _ in mx.rows[1:]}
    assert by_domain["greylist.test"] == sum(
        1 for m in MESSAGES for r in m.recipients if r.address.endswith("@greylist.test"))
    totals = [t for _, t, _ in mx.rows[1:]]
    assert totals == sorted(totals, reverse=True)


def test_matrix_by_sender_counts_messages_and_top_hides():
    mx = age_matrix(MESSAGES, NOW, by="sender", top=1)
    assert mx.rows[0][1] == len(MESSAGES)
    assert mx.rows[1][0] == "sender.test"
    mx = age_matrix(MESSAGES, NOW, top=2)
    assert len(mx.rows) == 3 and mx.hidden > 0


def test_matrix_one_queue():
    held = age_matrix(MESSAGES, NOW, queues=["hold"])
    assert held.rows[0][1] == sum(len(m.recipients) for m in MESSAGES if m.queue_name == "hold")


@pytest.mark.parametrize(("address", "domain"), [
    ("User@Example.COM", "example.com"), ("", "MAILER-DAEMON"), ("a@b@c.test", "c.test"), ("x@sub..dom.", "sub.dom"),
])  # fmt: skip
def test_domain_of(address, domain):
    assert domain_of(address) == domain


# ------------------------------------------------------------------ grouping, counts, forecast


def test_counts_every_queue():
    c = counts(MESSAGES)
    assert set(c) >= {"maildrop", "incoming", "active", "deferred", "hold"}
    assert sum(c.values()) == len(MESSAGES)
    assert c["hold"] == sum(1 for m in MESSAGES if m.queue_name == "hold")


def test_deferred_grouped_by_cause_and_domain():
    groups = group_deferred(MESSAGES, cause_of)
    by = {(g.domain, g.cause_id) for g in groups}
    assert ("greylist.test", "E21") in by
    assert ("eod-stall.test", "E09") in by
    assert ("starttls-garbage.test", "E18") in by
    assert sum(g.recipients for g in groups) == sum(len(m.recipients) for m in MESSAGES if m.queue_name == "deferred")
    assert all(g.messages for g in groups)


def test_forecast_assumes_deferred_just_now_without_mtime():
    m = next(m for m in MESSAGES if m.queue_name == "deferred")
    fc = forecast_message(m, NOW, DEFAULTS)
    assert fc.mtime_source == "assumed"
    assert fc.next_earliest == NOW
    # last attempt = now, age 7 min -> backoff 420 s, plus up to one 300 s scan
    assert fc.next_latest == pytest.approx(NOW + 420 + 300)
    assert m.arrival_time + 5 * 86400 <= fc.expires_at <= m.arrival_time + 5 * 86400 + 4000 + 300


def test_forecast_from_file_mtime():
    m = next(m for m in MESSAGES if m.queue_name == "deferred")
    fc = forecast_message(m, NOW, RetrySettings(minimal_backoff_time=120, maximal_backoff_time=600, queue_run_delay=100,
                                                 maximal_queue_lifetime=86400, bounce_queue_lifetime=86400),
                          mtime=NOW + 60)  # fmt: skip
    assert fc.mtime_source == "file"
    assert (fc.next_earliest, fc.next_latest) == (NOW + 60, NOW + 160)
    assert fc.expires_at == pytest.approx(m.arrival_time + 86400, abs=700)


# ------------------------------------------------------------------ reading through a target


def test_queue_json_report_from_snapshot(tmp_path, capsys):
    snap = lab_snapshot(tmp_path)
    assert main(["queue", "--snapshot", snap, "--format", "json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["schema"] == "pfdiag.queue/1"
    assert rep["source"] == "postqueue -j"
    assert rep["counts"]["deferred"] == sum(1 for m in MESSAGES if m.queue_name == "deferred")
    assert rep["matrix"]["headings"][0] == "T" and rep["matrix"]["rows"][0]["domain"] == "TOTAL"
    grey = [m for m in rep["messages"] if m["queue_name"] == "deferred"
            and m["recipients"][0]["address"].endswith("@greylist.test")]  # fmt: skip
    assert grey and grey[0]["recipients"][0]["cause_id"] == "E21"
    assert grey[0]["forecast"]["mtime_source"] == "assumed"  # a snapshot has no queue files
    assert all(m["forecast"] is None for m in rep["messages"] if m["queue_name"] == "hold")
    assert rep["oldest"]["arrival_time"] == min(m.arrival_time for m in MESSAGES)
    assert any("assumed" in n for n in rep["notes"])


@pytest.mark.parametrize("fmt", ["text", "md"])
def test_queue_text_and_md_render(tmp_path, capsys, fmt):
    assert main(["queue", "--snapshot", lab_snapshot(tmp_path), "--format", fmt]) == 0
    out = capsys.readouterr().out
    assert "greylist.test" in out and "E21" in out and "1280+" in out


def test_postqueue_p_fallback_before_3_1(tmp_path):
    snap = lab_snapshot(tmp_path, postqueue=CommandResult(
        ("postqueue", "-j"), 64, "", "postqueue: invalid option -- 'j'\npostqueue: fatal: usage: postqueue -f | ..."),
        extra=[CommandResult(("postqueue", "-p"), 0, (LAB / "postqueue-p.txt").read_text(), "")])  # fmt: skip
    read = read_queue(SnapshotTarget(snap))
    assert read.source == "postqueue -p"
    assert len(read.messages) == len(MESSAGES)
    assert read.notes and "3.1" in read.notes[0]


@pytest.mark.parametrize(("stderr", "says"), [
    ("postqueue: fatal: User nobody(65534) is not allowed to view the mail queue", "authorized_mailq_users"),
    ("postqueue: fatal: Queue report unavailable - mail system is down", "not running"),
])  # fmt: skip
def test_postqueue_refusals_are_one_clear_line(tmp_path, capsys, stderr, says):
    snap = lab_snapshot(tmp_path, postqueue=CommandResult(("postqueue", "-j"), 69, "", stderr))
    assert main(["queue", "--snapshot", snap]) == 1
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1


def test_postfix_not_installed(tmp_path, capsys):
    w = SnapshotWriter()
    w.write(str(tmp_path / "empty.tar.gz"))
    assert main(["queue", "--snapshot", str(tmp_path / "empty.tar.gz")]) == 1
    assert "is Postfix installed here?" in capsys.readouterr().err


# ------------------------------------------------------------------ configuration


def test_config_table_and_risks_from_lab(tmp_path):
    rep = read_config(SnapshotTarget(lab_snapshot(tmp_path)))
    rows = {r.name: r for r in rep.rows}
    assert rows["smtp_data_done_timeout"].effective == "5s"
    assert rows["smtp_data_done_timeout"].default == "600s"
    assert rows["smtp_data_done_timeout"].where == ("main.cf",)
    assert rows["smtp_data_done_timeout"].risks  # the lab's 5 s invites duplicates
    assert rows["minimal_backoff_time"].where == () and not rows["minimal_backoff_time"].risks
    assert rep.settings == DEFAULTS


def _cfg(**values: str) -> PostfixConfig:
    defaults = parse_postconf((LAB / "postconf-d.txt").read_text())
    return PostfixConfig(values={**defaults, **values}, defaults=defaults)


@pytest.mark.parametrize(("values", "flagged"), [
    ({"queue_run_delay": "400s"}, "queue_run_delay"),
    ({"maximal_backoff_time": "100s"}, "maximal_backoff_time"),
    ({"soft_bounce": "yes"}, "soft_bounce"),
    ({"smtp_data_done_timeout": "300s"}, "smtp_data_done_timeout"),
    # below RFC 5321's minimum waits: a slow server looks dead
    ({"smtp_helo_timeout": "30s"}, "smtp_helo_timeout"),
    ({"smtp_rcpt_timeout": "60s"}, "smtp_rcpt_timeout"),
    ({"smtp_data_init_timeout": "1m"}, "smtp_data_init_timeout"),
    ({"smtp_data_xfer_timeout": "90s"}, "smtp_data_xfer_timeout"),
])  # fmt: skip
def test_risky_settings(values, flagged):
    cfg = _cfg(**values)
    assert flagged in {n for n, _ in assess(cfg, RetrySettings.from_config(cfg))}


def test_raised_timeouts_are_not_risky():
    cfg = _cfg(smtp_helo_timeout="600s", smtp_data_xfer_timeout="10m", smtp_rcpt_timeout="300s")
    assert assess(cfg, RetrySettings.from_config(cfg)) == []


def test_defaults_are_not_risky():
    cfg = _cfg()
    assert assess(cfg, RetrySettings.from_config(cfg)) == []


def test_master_cf_timeout_override_is_flagged():
    defaults = parse_postconf((LAB / "postconf-d.txt").read_text())
    cfg = PostfixConfig(values=defaults, defaults=defaults,
                        overrides={("slow", "unix", "smtp_data_done_timeout"): "60s"})  # fmt: skip
    why = [w for n, w in assess(cfg, RetrySettings.from_config(cfg)) if n == "smtp_data_done_timeout"]
    assert any("master.cf" in w and "slow/unix" in w for w in why)


def test_chroot_resolv_conf_differs(tmp_path):
    snap = lab_snapshot(tmp_path, files={"/var/spool/postfix/etc/resolv.conf": "nameserver 10.0.0.1\n",
                                         "/etc/resolv.conf": "# host\nnameserver 127.0.0.53\n"})  # fmt: skip
    assert [n for n, _ in resolv_risks(SnapshotTarget(snap), "/var/spool/postfix")] == ["resolv.conf"]
    same = lab_snapshot(tmp_path, files={"/var/spool/postfix/etc/resolv.conf": "nameserver 1.1.1.1\n",
                                         "/etc/resolv.conf": "nameserver 1.1.1.1  # same\n"})  # fmt: skip
    assert resolv_risks(SnapshotTarget(same), "/var/spool/postfix") == []


def test_config_propose_seed_json(tmp_path, capsys):
    assert main(["config", "--snapshot", lab_snapshot(tmp_path), "--propose", "seed", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["timeline"]["attempt_offsets"][:6] == [0, 300, 600, 1200, 2400, 4800]
    assert doc["timeline"]["attempt_count"] == 113
    p = doc["proposal"]
    assert p["changes"] == SEED
    assert p["commands"][0][:2] == ["postconf", "-e"] and p["commands"][1] == ["postfix", "reload"]
    assert p["timeline_after"]["attempt_offsets"][:4] == [0, 120, 240, 480]
    assert p["timeline_after"]["expires_offset"] >= 86400


def test_propose_refuses_bad_values():
    with pytest.raises(InputError):
        proposal(["minimal_backoff_time=soon"])
    with pytest.raises(InputError):
        proposal(["no-equals-sign"])
    assert proposal(["seed", "queue_run_delay=60s"])["queue_run_delay"] == "60s"


def test_apply_refused_on_a_snapshot(tmp_path, capsys):
    assert main(["config", "--snapshot", lab_snapshot(tmp_path), "--propose", "seed", "--apply", "--yes"]) == 2
    assert "snapshot" in capsys.readouterr().err


# ------------------------------------------------------------------ actions: plans, ids, confirmation


def test_invalid_ids_refused_before_anything_runs(capsys):
    assert main(["queue", "hold", "--id", "ABC; rm -rf /"]) == 2
    err = capsys.readouterr().err
    assert "not a Postfix queue id" in err and err.count("\n") == 1


def test_selection_by_cause_domain_queue():
    sel, missing = act.select(MESSAGES, act.Selection(cause="E21"), cause_of)
    assert sel and all(any(r.address.endswith("@greylist.test") for r in m.recipients) for m in sel)
    held, _ = act.select(MESSAGES, act.Selection(cause="E21", queue="hold"), cause_of)
    assert [m.queue_name for m in held] == ["hold"] * len(held) and held
    dom, _ = act.select(MESSAGES, act.Selection(domain="refused.test", all_deferred=True), cause_of)
    assert len(dom) == sum(1 for m in MESSAGES if m.queue_name == "deferred"
                           and m.recipients[0].address.endswith("@refused.test"))  # fmt: skip
    _, missing = act.select(MESSAGES, act.Selection(ids=["ABCDEF12345"]), cause_of)
    assert missing == ["ABCDEF12345"]


def test_dry_run_plan_shows_messages_and_argv():
    chosen, _ = act.select(MESSAGES, act.Selection(domain="greylist.test"), cause_of)
    plan = act.build_plan("delete", chosen, "/etc/postfix-x", backup_dir="/tmp/b")
    text = render_plan(plan)
    for m in chosen:
        assert m.queue_id in text
        assert ["postcat", "-c", "/etc/postfix-x", "-q", m.queue_id] in plan.commands
    postsuper = [c for c in plan.commands if c[0] == "postsuper"]
    # one run per queue, each naming the queue the listing showed (a message that moved meanwhile
    # is then "not found" rather than acted on in its new queue)
    queues = list(dict.fromkeys(m.queue_name for m in chosen))
    assert postsuper == [["postsuper", "-c", "/etc/postfix-x", *[a for m in chosen if m.queue_name == q
                                                               for a in ("-d", m.queue_id)], q] for q in queues]
    assert "backup first" in text


def test_expire_and_retry_plans():
    m = MESSAGES[0]
    plan = act.build_plan("expire", [m], None)
    assert plan.commands == [["postsuper", "-e", m.queue_id, m.queue_name], ["postqueue", "-i", m.queue_id]]
    assert act.build_plan("retry", [m], None).commands == [["postqueue", "-i", m.queue_id]]
    flush = act.build_plan("flush", MESSAGES, None)
    assert flush.commands == [["postqueue", "-f"]] and "found dead" in flush.warnings[0]


def test_batches_of_ids():
    many = MESSAGES * 10
    plan = act.build_plan("hold", many, None)
    per_queue = {q: sum(1 for m in many if m.queue_name == q) for q in {m.queue_name for m in many}}
    assert len(plan.commands) == sum(-(-n // act.BATCH) for n in per_queue.values())


def test_confirmation_refused_without_yes():
    def asked(_: str) -> str:
        raise AssertionError("must not ask")

    assert act.confirm("Run?", yes=False, dry_run=False, interactive=False, ask=asked) is False
    assert act.confirm("Run?", yes=True, dry_run=True, interactive=True, ask=asked) is False
    assert act.confirm("Run?", yes=True, dry_run=False, interactive=False, ask=asked) is True
    assert act.confirm("Run?", yes=False, dry_run=False, interactive=True, ask=lambda _: "") is False
    assert act.confirm("Run?", yes=False, dry_run=False, interactive=True, ask=lambda _: "yes") is True

    def eof(_: str) -> str:
        raise EOFError

    assert act.confirm("Run?", yes=False, dry_run=False, interactive=True, ask=eof) is False


def test_actions_refused_on_a_snapshot(tmp_path, capsys):
    assert main(["queue", "hold", "--all-deferred", "--snapshot", lab_snapshot(tmp_path)]) == 2
    assert "snapshot" in capsys.readouterr().err


def test_action_needs_a_selector(capsys):
    assert main(["queue", "delete"]) == 2
    assert "--id" in capsys.readouterr().err
    assert main(["queue", "--yes"]) == 2


def test_unwritable_action_log_stops_before_running(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="action log"):
        act.ActionLog(str(tmp_path / "file" / "actions.log"))


def test_usage_error_type():
    with pytest.raises(UsageError):
        act.select(MESSAGES, act.Selection(ids=["../etc"]), cause_of)


def test_the_confirmation_prompt_is_on_stderr(capsys, monkeypatch) -> None:
    """With --format json on a terminal, stdout must hold the JSON document alone (queue
    actions, pfdiag config --apply and probe --send-test all confirm through act.confirm)."""
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("yes\n"))
    assert act.confirm("Run these 2 command(s)?", yes=False, dry_run=False, interactive=True)
    out, err = capsys.readouterr()
    assert out == "" and "Run these 2 command(s)? [yes/NO]" in err
