"""Issue 12 on the real lab (tests/lab): the probe's one verdict under the lab Postfix's TLS policy
(smtp_tls_policy_maps: no-starttls.test encrypt, self-signed.test verify, tls-ok.test may), the
log classifier's cause for a greylisting peer's 451 in `pfdiag probe -f json`, and a configuration
fix applied to the lab instance (its own config dir) and rolled back with the command it printed."""

from __future__ import annotations

import json
import re

import pytest

from diagnose.cli import main
from tests.lab.postfix import PostfixLab

pytestmark = pytest.mark.lab


def probe(capsys: pytest.CaptureFixture[str], lab: PostfixLab, domain: str, *extra: str) -> tuple[int, dict]:
    rc = main(["probe", domain, "-c", str(lab.config_dir), "--format", "json", "--budget", "20", *extra])
    return rc, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(("domain", "level", "cause"), [("no-starttls.test", "encrypt", "E16"),
                                                         ("self-signed.test", "verify", "E19")])  # fmt: skip
def test_a_peer_postfix_would_refuse_has_one_verdict(postfix_lab: PostfixLab, capsys, domain, level, cause) -> None:  # noqa: ANN001
    rc, doc = probe(capsys, postfix_lab, domain)
    t = doc["tls"]
    assert t["policy"]["level"] == level and "smtp_tls_policy_maps" in t["policy"]["source"]
    assert t["postfix_would_deliver"] is False and t["cause_id"] == cause
    summaries = [f["summary"] for f in doc["findings"]]
    assert not any("talks SMTP normally" in s for s in summaries), summaries
    assert doc["findings"][0]["cause_id"] == cause and doc["findings"][0]["severity"] == "problem"
    assert "Postfix would NOT deliver here" in summaries[0] and f"TLS policy {level}" in summaries[0]
    assert rc == 4 and doc["problem"] is True
    main(["probe", domain, "-c", str(postfix_lab.config_dir), "--budget", "20"])
    text = capsys.readouterr().out
    assert "talks SMTP normally" not in text and f"[{cause} " in text and "Postfix would NOT deliver" in text


def test_an_unverifiable_certificate_under_may_is_not_the_cause(postfix_lab: PostfixLab, capsys) -> None:  # noqa: ANN001
    rc, doc = probe(capsys, postfix_lab, "tls-ok.test")
    assert doc["tls"]["policy"]["level"] == "may" and doc["tls"]["postfix_would_deliver"] is True
    summaries = [f["summary"] for f in doc["findings"]]
    assert "talks SMTP normally" in summaries[0] and rc == 0
    assert any("Postfix delivers over unverified TLS; not the cause" in s for s in summaries), summaries


def test_a_greylisting_451_gets_the_log_classifiers_cause(postfix_lab: PostfixLab, capsys) -> None:  # noqa: ANN001
    rc, doc = probe(capsys, postfix_lab, "greylist.test", "--rcpt", "someone@greylist.test")
    rcpt = next(p for p in doc["probe"]["phases"] if p["phase"] == "rcpt")
    assert rcpt["reply_code"] == 451 and rcpt["enhanced_code"] == "4.7.1" and "Greylisted" in rcpt["text"]
    assert rcpt["cause_id"] == "E21" and rcpt["cause_title"] == "Greylisting at the receiver"
    assert doc["findings"][0]["cause_id"] == "E21" and "rcpt" in doc["findings"][0]["summary"]
    assert rc == 4


def test_a_config_fix_applied_then_rolled_back_on_the_lab(postfix_lab: PostfixLab, capsys, tmp_path) -> None:  # noqa: ANN001
    """The lab's main.cf shortens smtp_data_done_timeout to 5s (the seed's mistake): --propose puts
    its restore first; applied with --yes (postconf -e, postfix reload, logged), then undone with
    the exact rollback command pfdiag printed."""
    log = tmp_path / "actions.log"
    conf = str(postfix_lab.config_dir)
    assert postfix_lab.postconf("-h", "smtp_data_done_timeout").strip() == "5s"
    from tests.lab.scenarios import SENDER

    # the diagnosis the proposal is judged against: an end-of-data timeout (E09) in the lab's log
    postfix_lab.fresh_window([(SENDER, ["seed@eod-stall.test"], {"subject": "seed"})])
    main(["config", "-c", conf, "--propose", "seed", "--format", "json"])
    first = json.loads(capsys.readouterr().out)["proposal"]["judgement"]["fix_first"]
    assert first and first[0]["parameter"] == "smtp_data_done_timeout" and first[0]["value"] == "600s"
    assert first[0]["before"] == "5s"
    try:
        rc = main(["config", "-c", conf, "--propose", "smtp_data_done_timeout=600s", "--apply", "--yes",
                   "--action-log", str(log)])  # fmt: skip
        err = capsys.readouterr().err
        assert rc == 0, err
        assert postfix_lab.postconf("-h", "smtp_data_done_timeout").strip() == "600s"
        assert "smtp_data_done_timeout: 5s -> 600s (main.cf)" in err
        undo = re.search(r"^to undo it: (.*)$", err, re.M)
        assert undo and undo.group(1) == f"postconf -c {conf} -e smtp_data_done_timeout=5s && postfix -c {conf} reload"
        records = [json.loads(line) for line in log.read_text().splitlines()]
        assert [r["phase"] for r in records] == ["start", "intent", "done", "intent", "done", "end"]
        assert records[-1]["ok"] is True and records[2]["before"] == {"smtp_data_done_timeout": "5s"}
        assert records[4]["argv"][-1] == "reload" and records[4]["returncode"] == 0
        for part in undo.group(1).split(" && "):  # the rollback as printed: argv lists, run on the lab
            postfix_lab.run(part.split())
        assert postfix_lab.postconf("-h", "smtp_data_done_timeout").strip() == "5s"
    finally:
        postfix_lab.postconf_edit("-e", "smtp_data_done_timeout=5s")
        postfix_lab.reload()
        postfix_lab.clear_queue()


def test_a_report_from_where_no_next_hop_is_reachable_says_its_live_evidence_is_missing(postfix_lab: PostfixLab) -> None:
    """The same report twice over the lab's end-of-data stall (E09 in the log): from this machine,
    where the lab's peer answers, and from a network namespace of the test's own (`unshare --net`:
    no interface up, nothing reachable; the log, postconf and the queue's sockets are files and
    still there): the second says its live checks are missing, in Markdown and in text."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tests.lab.scenarios import SENDER

    since = postfix_lab.fresh_window([(SENDER, ["vantage@eod-stall.test"], {"subject": "vantage"})])
    pfdiag = str(Path(sys.executable).with_name("pfdiag"))
    argv = [pfdiag, "report", "-c", str(postfix_lab.config_dir), "--log", str(postfix_lab.log_path), "--since", since,
            "--domain", "eod-stall.test", "--budget", "30"]  # fmt: skip
    env = {**os.environ, "MAIL_CONFIG": str(postfix_lab.config_dir), "COLUMNS": "250"}  # the text panel unwrapped
    try:
        here = subprocess.run([*argv, "-f", "md"], capture_output=True, text=True, timeout=120, env=env)
        assert here.returncode == 4, here.stderr
        assert "E09" in here.stdout and "could not reach any next hop" not in here.stdout
        for fmt in ("md", "text"):
            away = subprocess.run(["unshare", "--net", *argv, "-f", fmt], capture_output=True, text=True, timeout=120,
                                  env=env)  # fmt: skip
            assert away.returncode == 4, away.stderr
            out = " ".join(away.stdout.split())
            assert "could not reach any next hop from here: the live checks are missing; run on the mail host or with --host" in out
            assert "live evidence missing" in out
    finally:
        postfix_lab.clear_queue()


def test_the_reports_probe_of_a_no_starttls_peer_confirms_e16(postfix_lab: PostfixLab, capsys) -> None:  # noqa: ANN001
    """The report's own probe (smtp.nexthops) under the lab's encrypt policy for no-starttls.test:
    one verdict, E16, the cause's probe evidence; never "talks SMTP normally"."""
    from tests.lab.scenarios import SENDER

    since = postfix_lab.fresh_window([(SENDER, ["tls@no-starttls.test"], {"subject": "tls"})])
    try:
        rc = main(["report", "-f", "json", "-c", str(postfix_lab.config_dir), "--log", str(postfix_lab.log_path),
                   "--since", since, "--domain", "no-starttls.test", "--budget", "40"])  # fmt: skip
        doc = json.loads(capsys.readouterr().out)
    finally:
        postfix_lab.clear_queue()
    assert rc == 4 and doc["causes"][0]["id"] == "E16"
    probes = [f for f in doc["findings"] if f["check"] == "smtp.probe"]
    assert probes and not any("talks SMTP normally" in f["summary"] for f in probes), probes
    checks = [e for e in doc["causes"][0]["evidence"] if e["kind"] == "check"]
    assert checks and "Postfix would NOT deliver here" in checks[0]["excerpt"] and "TLS policy encrypt" in checks[0]["excerpt"]
