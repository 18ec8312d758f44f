"""pfdiag check (diagnose/monitor.py, diagnose/commands/check.py) without the lab: the demo
snapshot (a recorded real lab queue and log), real `postqueue -j` lines, the real promtool."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from checks.postfix.postqueue import parse_postqueue_json
from diagnose import monitor as mon
from diagnose.cli import main

NOW = 1_800_000_000.0
GREY = "host mx.greylist.test[127.0.0.1] said: 451 4.7.1 Greylisted, try again later (in reply to RCPT TO command)"
EOD = "conversation with mx.eod.test[127.0.0.1] timed out while sending end of data -- message may be sent more than once"


def _msg(qid: str, queue: str, age: float, rcpts: list[tuple[str, str | None]]) -> str:
    return json.dumps({"queue_name": queue, "queue_id": qid, "arrival_time": int(NOW - age), "message_size": 500,
                       "forced_expire": False, "sender": "a@sender.test",
                       "recipients": [{"address": a, **({"delay_reason": r} if r else {})} for a, r in rcpts]})


def _state(lines: list[str]) -> mon.MonitorState:
    queues, oldest, causes, domains = mon.tally_queue(parse_postqueue_json("\n".join(lines)),
                                                      lambda r: __import__("diagnose.classify").classify.classify(r).cause_id)
    return mon.MonitorState("local", NOW, queues, oldest, causes, domains)


def _grey(n: int, age: float = 60, domain: str = "greylist.test") -> list[str]:
    return [_msg(f"1A{i:08X}", "deferred", age, [(f"u{i}@{domain}", GREY)]) for i in range(n)]


def test_tally_counts_messages_causes_domains_and_skips_hold_for_age() -> None:
    st = _state(_grey(3) + [_msg("2B00000001", "deferred", 600, [("a@eod.test", EOD), ("b@eod.test", EOD), ("c@greylist.test", GREY)]),
                            _msg("3C00000001", "hold", 99999, [("x@held.test", None)]),
                            _msg("4D00000001", "active", 5, [("y@act.test", None)])])  # fmt: skip
    assert st.queues["deferred"] == 4 and st.queues["hold"] == 1 and st.queues["active"] == 1
    assert st.oldest_age == 600, "mail on hold is held on purpose: not the oldest stuck message"
    e09, e21 = st.causes["E09"], st.causes["E21"]
    assert (e09.messages, e09.recipients, dict(e09.domains)) == (1, 2, {"eod.test": 1})
    assert (e21.messages, e21.recipients) == (4, 4) and e21.domains["greylist.test"] == 4
    assert st.domains == {"greylist.test": 4, "eod.test": 1}


@pytest.mark.parametrize("n, state", [(2, mon.OK), (5, mon.WARNING), (9, mon.CRITICAL)])
def test_count_thresholds(n: int, state: int) -> None:
    th = mon.Thresholds(warn=5, crit=9)
    v = mon.evaluate(_state(_grey(n)), th)
    assert v.state == state
    assert v.status_line.startswith(mon.STATE_NAMES[state] + " - E21 Greylisting at the receiver: ")
    assert f"{n} message" in v.status_line and "to greylist.test" in v.status_line
    assert f"deferred={n};5;9;0" in v.perfdata


def test_age_thresholds_and_e09_default_is_critical_at_one() -> None:
    assert mon.evaluate(_state(_grey(1, age=3700)), mon.Thresholds()).state == mon.WARNING
    assert mon.evaluate(_state(_grey(1, age=7300)), mon.Thresholds()).state == mon.CRITICAL
    st = _state(_grey(20) + [_msg("2B00000001", "deferred", 3120, [("a@eod.test", EOD)])])
    v = mon.evaluate(st, mon.Thresholds())
    assert v.state == mon.CRITICAL
    # the cause that raised the alarm is named first, though greylisting holds more mail
    assert v.status_line.startswith("CRITICAL - E09 No reply after the end of the message (possible duplicates): 1 message "
                                    "deferred to eod.test, oldest 52 min; 21 deferred in all")  # fmt: skip
    assert v.long_lines[0].startswith("E21 Greylisting at the receiver: 20 messages")
    assert "cause_E09=1;;1;0" in v.perfdata and "oldest_age=3120s;3600;7200;0" in v.perfdata
    th = mon.Thresholds()
    mon.parse_cause_thresholds(["E09=off"], "--cause-crit", th.cause_crit)
    assert mon.evaluate(st, th).state == mon.OK


def test_outside_text_stays_on_one_line_and_out_of_the_perfdata() -> None:
    evil = "x|y\nCRITICAL \x1b[31m.test"
    v = mon.evaluate(_state(_grey(1, domain=evil)), mon.Thresholds())
    text = mon.render_nagios(v)
    first = text.splitlines()[0]
    assert first.count("|") == 1 and "x\\x7cy\\ncritical \\x1b[31m.test" in first  # domains are lower-cased
    assert len(text.splitlines()) == 1


def test_perfdata_label_quoting() -> None:
    assert mon.perf("deferred", 3, "", 100, 500) == "deferred=3;100;500;0"
    assert mon.perf("my label", 1.5, "s", None, None, None) == "'my label'=1.500s"
    assert mon.perf("it's", 2) == "'it''s'=2;;;0"


def test_prometheus_label_escaping_and_bounded_domains() -> None:
    lines = _grey(1, domain='q"uo\\te\nnl.test\udcff')
    lines += [_msg(f"5E{i:08X}", "deferred", 60, [(f"u@d{i:02d}.test", GREY)]) for i in range(15)]
    text = mon.render_prometheus(_state(lines), top=10)
    dest = [ln for ln in text.splitlines() if ln.startswith("pfdiag_deferred_destination_messages{")]
    assert len(dest) == 11 and dest[-1] == 'pfdiag_deferred_destination_messages{domain="other"} 6'
    assert all(ln.count("\n") == 0 for ln in dest)
    assert mon.label_value('q"uo\\te\nnl\udcff') == 'q\\"uo\\\\te\\\\nnl\\\\udcff'
    text.encode("utf-8")  # no lone surrogate left: the exposition format is UTF-8


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool (Debian package prometheus) is not installed")
def test_promtool_accepts_the_demo_metrics(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "pfdiag.prom"
    assert main(["check", "--demo", "-f", "prometheus", "-o", str(out)]) == 0
    text = out.read_text()
    assert 'pfdiag_deferred_messages{cause="E09"} 19' in text and "pfdiag_up 1" in text
    assert 'pfdiag_queue_messages{queue="deferred"} 25' in text
    assert 'pfdiag_cause_info{cause="E21",title="Greylisting at the receiver"} 1' in text
    assert oct(out.stat().st_mode & 0o777) == "0o644"
    proc = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_atomic_write_never_shows_a_partial_file(tmp_path: Path) -> None:
    path = tmp_path / "pfdiag.prom"
    texts = [f"# {i}\n" + ("x" * 50_000 + "\n") * (1 + i % 7) + "# END\n" for i in range(200)]
    mon.write_atomic(str(path), texts[0])
    seen, bad, done = set(), [], threading.Event()

    def reader() -> None:
        while not done.is_set():
            data = path.read_text()
            seen.add(data.split("\n", 1)[0])
            if data not in texts:
                bad.append(len(data))

    t = threading.Thread(target=reader)
    t.start()
    for text in texts:
        mon.write_atomic(str(path), text)
    done.set()
    t.join(timeout=30)
    assert not bad, f"partial files read: {bad[:5]}"
    assert len(seen) > 5, "the reader ran during the writes"
    assert [p.name for p in tmp_path.iterdir()] == ["pfdiag.prom"], "no temp file left behind"


def test_cli_demo_plugin(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["check", "--demo"])
    out = capsys.readouterr().out
    assert rc == 2 and out.startswith("CRITICAL - E09 ")  # the demo's end-of-data timeouts: critical by default
    assert "E09 19 message(s) >= 1" in out.splitlines()[0] and "oldest message 25.1 h >= 2.0 h" in out.splitlines()[0]
    rc = main(["check", "--demo", "--no-default-causes", "--since", "off", "--warn-age", "2d", "--crit-age", "3d"])
    out = capsys.readouterr().out
    assert rc == 0 and out.startswith("OK - E09 ") and "log_deferrals" not in out


@pytest.mark.parametrize("argv", [["--warn", "lots"], ["--cause-crit", "E99=1"], ["--snapshot", "/nonexistent/x.tar.gz"],
                                  ["--warn-age", "1y"], ["--top", "0"]])  # fmt: skip
def test_cli_plugin_errors_are_unknown_in_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["check", *argv])
    out = capsys.readouterr().out
    assert rc == 3 and out.startswith("UNKNOWN - ") and out.count("\n") == 1, out


def test_unknown_option_is_one_line_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    # argparse's top-level parser reports options no subcommand knows: exit 2 (usage), as every pfdiag command
    assert main(["check", "--bogus-option"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_cli_prometheus_failure_writes_up_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x.prom"
    rc = main(["check", "-f", "prometheus", "--snapshot", str(tmp_path / "missing.tar.gz"), "-o", str(out)])
    assert rc == 1 and "pfdiag_up 0" in out.read_text()
    assert capsys.readouterr().err.startswith("pfdiag: ")


def test_parse_duration() -> None:
    assert mon.parse_duration("90m", "--since") == 5400 and mon.parse_duration("1d2h", "x") == 93600
    assert mon.parse_duration("3600", "x") == 3600
    with pytest.raises(Exception):
        mon.parse_duration("", "x")


def test_help_documents_cron_and_timer(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["check", "--help"])
    out = capsys.readouterr().out
    assert "/etc/cron.d/pfdiag" in out and "OnCalendar" in out and "E09 E10" in out
    assert os.environ.get("PFDIAG_NEVER_SET") is None


def _big_log(path: Path, start: float, lines: int) -> None:
    from datetime import datetime, timezone

    with open(path, "w") as fh:
        for i in range(lines):
            ts = datetime.fromtimestamp(start + i, timezone.utc).isoformat()
            fh.write(f"{ts} mx postfix/smtp[{100 + i % 50}]: {0x1A00000000 + i:X}: to=<u{i}@greylist.test>, "
                     f"relay=mx.greylist.test[127.0.0.1]:25, delay=1, delays=0/0/0/1, dsn=4.7.1, status=deferred "
                     f"({GREY})\n")


def test_window_offset_reads_only_the_window_of_a_big_log(tmp_path: Path) -> None:
    from checks.logs import Chunk, ReadStats, read_lines
    from checks.targets.local import LocalTarget

    log = tmp_path / "mail.log"
    start = 1_790_000_000.0
    _big_log(log, start, 20_000)  # ~5 MB, one deferral a second
    since = start + 19_000
    mtime = log.stat().st_mtime
    offset = mon.window_offset(str(log), since, mtime, min_size=1 << 20)
    size = log.stat().st_size
    assert size * 0.9 < offset <= size * 0.95, (offset, size)  # the last 1,000 of 20,000 lines, and a bisection step
    assert mon.window_offset(str(log), since, mtime, min_size=10 << 20) == 0, "a small log is read whole"
    target = LocalTarget()
    whole, part = ReadStats(), ReadStats()
    full = [r.queue_id for r in read_lines(target, [str(log)], whole, since)]
    tail = [r.queue_id for r in read_lines(target, [Chunk(str(log), offset, size)], part, since)]
    assert full == tail and len(full) == 1000
    assert part.lines < 1000 + 400, "only the window (plus one bisection step) was read"


def test_a_bug_is_unknown_in_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def broken(*a: object, **k: object) -> None:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(mon, "collect", broken)
    assert main(["check", "--demo"]) == 3
    out = capsys.readouterr().out
    assert out == "UNKNOWN - internal error: RuntimeError: boom\\nsecond line\n"
