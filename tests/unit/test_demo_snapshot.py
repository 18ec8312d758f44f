"""The shipped demo snapshot (diagnose/data/demo-snapshot.tar.gz, built by tests/lab/make_demo.py)
tells the seed problem's story (issue 14): mail to one destination deferred for hours by 600 s
end-of-data timeouts along Postfix's real backoff schedule, some later successes (possible
duplicates), a handful of other causes, a queue of realistic ages. These tests read the bundle
as a user gets it: its manifest, its log, and the CLI's answers on it."""

from __future__ import annotations

import calendar
import json
import os
import re
import tarfile
import time
from collections import defaultdict

import pytest

from checks.postfix.retry import DEFAULTS, next_delay
from checks.targets.snapshot import SnapshotTarget
from diagnose.cli import main
from diagnose.target_options import demo_path

STATUS = re.compile(
    r"^(?P<ts>\w{3} [ \d]\d \d\d:\d\d:\d\d) \S+ postfix/smtp\[\d+\]: (?P<qid>\w+): to=<(?P<to>[^>]+)>, .*"
    r"delay=(?P<delay>[\d.]+), delays=(?P<a>[\d.]+)/(?P<b>[\d.]+)/(?P<c>[\d.]+)/(?P<d>[\d.]+), "
    r"dsn=[\d.]+, status=(?P<status>\w+) \((?P<reason>.*)\)$"
)


@pytest.fixture(scope="module")
def bundle() -> dict:
    with tarfile.open(demo_path()) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        log = next(f for f in manifest["files"] if f["path"].endswith(".log"))
        text = tar.extractfile(log["stored"]).read().decode()  # type: ignore[union-attr]
        cmds = {tuple(c["argv"]): tar.extractfile(c["stdout"]).read().decode()  # type: ignore[union-attr]
                for c in manifest["commands"]}  # fmt: skip
    return {"manifest": manifest, "log": text, "commands": cmds}


def _cli_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    main([*argv, "--demo", "-f", "json"])
    return json.loads(capsys.readouterr().out)


def _iso(s: str) -> float:
    return float(calendar.timegm(time.strptime(s, "%Y-%m-%dT%H:%M:%SZ")))


def test_the_bundle_verifies_is_small_and_says_it_was_time_shifted(bundle: dict) -> None:
    assert os.path.getsize(demo_path()) < 200 * 1024
    assert SnapshotTarget(demo_path(), strict=True).warnings == []
    origin = bundle["manifest"]["origin"]
    assert "test lab" in origin and "shifted onto Postfix's retry schedule" in origin and "600 s" in origin


def test_the_configuration_is_the_default_one_the_story_has(bundle: dict) -> None:
    """No lab-only lowered timeout or concurrency setting shows: d = 600 is the default timeout."""
    n = bundle["commands"][("postconf", "-n")]
    assert "timeout" not in n and "concurrency" not in n
    for argv, out in bundle["commands"].items():
        if argv[:2] == ("postconf", "-h") and "smtp_data_done_timeout" in argv:
            assert out.splitlines()[argv.index("smtp_data_done_timeout") - 2] == "600s"
            break
    else:
        pytest.fail("postconf -h smtp_data_done_timeout was not recorded")


def test_every_message_is_retried_on_qmgrs_backoff_schedule(bundle: dict) -> None:
    created = _iso(bundle["manifest"]["created"])
    year = time.gmtime(created).tm_year
    attempts: dict[str, list[tuple[float, float, float, str]]] = defaultdict(list)  # qid -> (start, end, delay, status)
    eod = 0
    for line in bundle["log"].splitlines():
        m = STATUS.match(line)
        if not m:
            continue
        end = calendar.timegm(time.strptime(f"{year} {m['ts']}", "%Y %b %d %H:%M:%S"))
        session = float(m["b"]) + float(m["c"]) + float(m["d"])
        if "timed out while sending end of data" in m["reason"]:
            eod += 1
            assert 600 <= float(m["d"]) < 602, line  # the full default smtp_data_done_timeout
        attempts[m["qid"]].append((end - session, end, float(m["delay"]), m["status"]))
    assert eod > 200 and len(attempts) >= 25
    many = 0
    for qid, atts in attempts.items():
        arrival = atts[0][1] - atts[0][2]  # delay= counts from arrival
        for (s0, e0, _, st0), (s1, e1, d1, _) in zip(atts, atts[1:]):
            assert st0 == "deferred"
            assert abs((e1 - arrival) - d1) <= 2, (qid, d1)  # delay= is the age at the attempt's end
            due = e0 + next_delay(e0 - arrival, DEFAULTS)  # the queue file's new mtime
            assert due - 2 <= s1 <= due + DEFAULTS.queue_run_delay + 2, (qid, s1 - due)  # picked up by a scan
        assert atts[-1][1] <= created
        many += len(atts) >= 10
    assert many >= 8, "a day of retries for the oldest mail"


def test_report_headlines_the_end_of_data_timeout_and_its_duplicates(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = _cli_json(capsys, "report")
    top = doc["causes"][0]
    assert top["id"] == "E09" and top["possible_duplicates"] > 0
    assert doc["verdict"]["headline"].startswith("E09")
    assert doc["end_of_data"]["delivered_later_possible_duplicates"] == top["possible_duplicates"]
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["report", "--demo"]) == 4
    text = capsys.readouterr().out
    head = "\n".join(text.splitlines()[:6])  # the panel: headline, then the counts with the duplicates
    assert "E09" in head and "twice" in head, head


def test_queue_ages_span_hours_and_forecasts_are_ahead(capsys: pytest.CaptureFixture[str]) -> None:
    q = _cli_json(capsys, "queue")
    now = q["now"]
    ages = sorted(m["age_seconds"] for m in q["messages"])
    assert ages[-1] > 20 * 3600 and ages[0] < 3600 and sum(a > 4 * 3600 for a in ages) >= 15
    for m in q["messages"]:
        f = m["forecast"]
        assert now <= f["next_attempt_earliest"] <= f["next_attempt_latest"] <= now + 4000 + 2 * DEFAULTS.queue_run_delay
        assert m["arrival_time"] + DEFAULTS.maximal_queue_lifetime <= f["expires_at_latest"]
        assert f["expires_at"] - now > 3.5 * 86400 and not f["expiring"] and not f["overdue"]


def test_logs_timeline_spans_a_day(capsys: pytest.CaptureFixture[str]) -> None:
    doc = _cli_json(capsys, "logs")
    w = doc["window"]
    assert _iso(w["last_line"]) - _iso(w["first_line"]) > 20 * 3600
    causes = {c["id"]: c for c in doc["causes"]}
    assert max(causes, key=lambda k: causes[k]["deferrals"]) == "E09" and causes["E09"]["share"] > 0.5
    assert doc["outcomes"]["delivered_later"] >= 3
