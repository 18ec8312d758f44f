"""pfdiag check and report --baseline against the live lab Postfix (tests/lab), and the
Prometheus output scraped from a real node_exporter's textfile collector on loopback.

Greylisted mail (451 4.7.1 on every attempt, cause E21) stays deferred; the end-of-data
stall peer gives E09. pfdiag runs in-process (main([...])) with `-c <lab config dir>`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from diagnose.cli import main
from tests.lab.postfix import PostfixLab, free_port
from tests.lab.scenarios import PeerSet, scenario_mail

pytestmark = pytest.mark.lab
# the tests up to the node_exporter one share the greylisted mail; later ones replace the queue
NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
N = 3
QUIET = ["--warn-age", "off", "--crit-age", "off", "--no-default-causes"]


WINDOW: dict[str, float] = {}


@pytest.fixture(scope="module")
def greylisted(postfix_lab: PostfixLab) -> list[str]:
    """N greylisted messages; the log window of the checks starts with them (the lab's log is
    shared with other tests: their earlier greylisting stays out)."""
    postfix_lab.clear_queue()
    time.sleep(2.1)  # log stamps have whole seconds: the window starts up to 2 s early (below), still after this
    WINDOW["start"] = time.time()
    return postfix_lab.deferred_mail(N, "check")


def since() -> str:
    # a line stamped 10:00:05 may have been written at 10:00:05.9: one whole second more than elapsed
    return f"{int(time.time() - WINDOW['start']) + 2}s" if WINDOW else "10m"


def check(capsys: pytest.CaptureFixture[str], lab: PostfixLab, *args: str) -> tuple[int, str]:
    rc = main(["check", "-c", str(lab.config_dir), "--since", since(), *args])
    out, err = capsys.readouterr()
    assert not err, err
    return rc, out


PERF = re.compile(r"^(?:'(?:[^']|'')+'|[^\s'=]+)=-?[\d.]+[a-zA-Z%]*(?:;[\d.]*){0,4}$")


@pytest.mark.parametrize("args, rc, state", [
    (["--warn", "4", "--crit", "6"], 0, "OK"),
    (["--warn", str(N), "--crit", "6"], 1, "WARNING"),
    (["--warn", "2", "--crit", str(N)], 2, "CRITICAL"),
    (["--cause-warn", "E21=1", "--cause-crit", f"E21={N}"], 2, "CRITICAL"),
])  # fmt: skip
def test_plugin_states_on_the_real_queue(args: list[str], rc: int, state: str, postfix_lab: PostfixLab,
                                         greylisted: list[str], capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    got, out = check(capsys, postfix_lab, *QUIET, *args)
    first = out.splitlines()[0]
    assert got == rc, out
    status, _, perfdata = first.partition(" | ")
    assert status.startswith(f"{state} - E21 Greylisting at the receiver: {N} messages deferred to greylist.test, oldest ")
    assert f"{N} deferral(s) in the logs of the last " in status  # the first attempts, read from the lab's log
    fields = perfdata.split(" ")
    assert all(PERF.match(f) for f in fields), fields
    assert any(f.startswith(f"deferred={N};") for f in fields) and any(f.startswith(f"cause_E21={N};") for f in fields)
    assert re.search(r"(^| )oldest_age=\d+s;;;0( |$)", perfdata)


def test_plugin_default_age_thresholds_and_clean_queue(postfix_lab: PostfixLab, greylisted: list[str],
                                                       capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    rc, out = check(capsys, postfix_lab)
    assert rc == 0 and out.startswith("OK - E21 "), "3 fresh greylisted messages: below every default threshold"
    time.sleep(max(0.0, WINDOW["start"] + 3 - time.time()))  # the mail is at least 1 s old
    rc, out = check(capsys, postfix_lab, "--warn-age", "1s")
    assert rc == 1 and "(oldest message " in out.splitlines()[0]


def test_plugin_over_ssh(postfix_lab: PostfixLab, greylisted: list[str], ssh: dict[str, str],
                         capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """The monitoring server checks the mail host: the lab's real sshd, the same queue and log."""
    rc, out = check(capsys, postfix_lab, *QUIET, "--warn", str(N), "--host", "mx1", "--ssh-config", ssh["config"],
                    "--known-hosts", ssh["known_hosts"])  # fmt: skip
    first = out.splitlines()[0]
    assert rc == 1, out
    assert first.startswith(f"WARNING - E21 Greylisting at the receiver: {N} messages deferred to greylist.test")
    assert f"; {N} deferral(s) in the logs of the last " in first and f"deferred={N};{N};500;0" in first


@pytest.fixture()
def node_exporter(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    if not Path(NODE_EXPORTER).exists():
        pytest.skip("prometheus-node-exporter is not installed (tests/lab/install.sh)")
    textdir = tmp_path / "textfile"
    textdir.mkdir()
    port = free_port()
    proc = subprocess.Popen([NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{port}", "--collector.disable-defaults",
                             "--collector.textfile", f"--collector.textfile.directory={textdir}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError("node_exporter did not start: " + proc.stderr.read().decode() if proc.stderr else "")
                time.sleep(0.2)
        yield textdir, url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_node_exporter_serves_the_per_cause_series(postfix_lab: PostfixLab, greylisted: list[str],
                                                   node_exporter: tuple[Path, str], capsys) -> None:  # fmt: skip
    textdir, url = node_exporter
    prom = textdir / "pfdiag.prom"
    assert main(["check", "-f", "prometheus", "-c", str(postfix_lab.config_dir), "--since", since(), "-o", str(prom)]) == 0
    with urllib.request.urlopen(url, timeout=10) as resp:  # loopback only
        scraped = resp.read().decode()
    assert f'pfdiag_deferred_messages{{cause="E21"}} {N}' in scraped
    assert f'pfdiag_queue_messages{{queue="deferred"}} {N}' in scraped
    assert f'pfdiag_deferred_destination_messages{{domain="greylist.test"}} {N}' in scraped
    assert 'pfdiag_cause_info{cause="E21",title="Greylisting at the receiver"} 1' in scraped
    assert f'pfdiag_log_deferrals{{cause="E21"}} {N}' in scraped
    assert "pfdiag_up 1" in scraped
    assert re.search(r"^node_textfile_scrape_error 0$", scraped, re.M), "node_exporter read the file without error"
    if shutil.which("promtool"):
        proc = subprocess.run(["promtool", "check", "metrics"], input=prom.read_text(), capture_output=True, text=True,
                              timeout=30)  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_end_of_data_timeout_is_critical_by_default(postfix_lab: PostfixLab, smtp_peers: PeerSet,
                                                    capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    postfix_lab.fresh_window(scenario_mail(["eod-stall"]))
    rc, out = check(capsys, postfix_lab)
    assert rc == 2, out
    first = out.splitlines()[0]
    assert first.startswith("CRITICAL - E09 No reply after the end of the message (possible duplicates): 1 message deferred")
    assert "(E09 1 message(s) >= 1)" in first and "cause_E09=1;;1;0" in first


def test_baseline_shows_the_fixed_cause_as_resolved(postfix_lab: PostfixLab, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    postfix_lab.deferred_mail(2, "baseline")
    old = tmp_path / "before.json"
    base = ["report", "-c", str(postfix_lab.config_dir), "--log", str(postfix_lab.log_path), "--since", "10m", "--budget", "40"]
    main([*base, "-f", "json", "-o", str(old)])
    before = json.loads(old.read_text())
    assert any(c["id"] == "E21" and c["impact"]["queued_recipients"] == 2 for c in before["causes"])
    postfix_lab.clear_queue()  # the fix: the greylisted mail is gone (its log lines stay)
    main([*base, "-f", "json", "--baseline", str(old)])
    doc = json.loads(capsys.readouterr().out)
    e21 = next(c for c in doc["changes"]["causes"] if c["id"] == "E21")
    assert e21["status"] == "resolved", e21
    assert doc["changes"]["deferred_before"] >= 2 and doc["changes"]["deferred_after"] == 0
    main([*base, "-f", "md", "--baseline", str(old)])
    md = capsys.readouterr().out
    assert "## Changes since the baseline" in md and "**resolved:** E21 Greylisting at the receiver" in md

