"""Outbreak triage (issue 16): when E22/E23 deferrals dominate, the second, focused read of the
log joins them to smtpd's client=/sasl_username= and qmgr's from= lines and names the login,
client or sender behind most of them, with numbers; the report offers the guarded plan.

The log is written here in Postfix's own line formats (smtpd, qmgr, smtp), as the lab's Postfix
writes them: one SASL login floods a rate-limiting receiver from one address, others send a little."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from checks.model import Severity
from checks.outbreak import MAX_KEYS, SubmitterJoin, Tally, parse_client, scan
from checks.postfix.logline import LineParser
from checks.registry import Context
from checks.targets.local import LocalTarget
from diagnose import outbreak
from diagnose.classify import classify
from diagnose.engine import Facts, collect_logs

RATE = "host mx.big.test[127.0.0.1] said: 421 4.7.0 mx.big.test rate limited, slow down (in reply to MAIL FROM command)"
SPAM = "host mx.big.test[127.0.0.1] said: 450 4.7.1 too many messages from you, try later (in reply to RCPT TO command)"


def _qid(i: int) -> str:
    return f"{0x1A2B30 + i:X}C{i % 7}"


def message(i: int, t0: float, *, login: str | None, addr: str, sender: str, reason: str | None, removed: bool = False) -> list[str]:
    """The lines of one message: smtpd's client=, qmgr's from=, one smtp attempt (deferred or sent)."""
    qid = _qid(i)
    stamp = time.strftime("%b %e %H:%M:%S", time.localtime(t0 + i))
    sasl = f", sasl_method=PLAIN, sasl_username={login}" if login else ""
    out = [f"{stamp} mx postfix/smtpd[{100 + i}]: {qid}: client=unknown[{addr}]{sasl}",
           f"{stamp} mx postfix/cleanup[90]: {qid}: message-id=<{i}@example.com>",
           f"{stamp} mx postfix/qmgr[80]: {qid}: from=<{sender}>, size=1200, nrcpt=1 (queue active)"]  # fmt: skip
    if reason:
        out.append(f"{stamp} mx postfix/smtp[70]: {qid}: to=<r{i}@big.test>, relay=mx.big.test[127.0.0.1]:25, delay=0.1, "
                   f"delays=0.01/0/0.05/0, dsn=4.7.0, status=deferred ({reason})")  # fmt: skip
        # the retry: qmgr's from= again, deferred again: the message counts once
        out.append(f"{stamp} mx postfix/qmgr[80]: {qid}: from=<{sender}>, size=1200, nrcpt=1 (queue active)")
        out.append(out[-2])
    else:
        out.append(f"{stamp} mx postfix/smtp[70]: {qid}: to=<r{i}@ok.test>, relay=mx.ok.test[127.0.0.1]:25, delay=0.1, "
                   "delays=0.01/0/0.05/0, dsn=2.0.0, status=sent (250 2.0.0 Ok)")  # fmt: skip
    if removed or not reason:
        out.append(f"{stamp} mx postfix/qmgr[80]: {qid}: removed")
    return out


def flood_log(path: Path, *, flood: int = 40, login: str | None = "bob@example.com", addr: str = "203.0.113.5") -> Path:
    t0 = time.time() - 3600
    lines: list[str] = []
    i = 0
    for _ in range(flood):  # the flood: 40 messages, 38 rate-limited, 2 sent
        lines += message(i, t0, login=login, addr=addr, sender="bob@example.com", reason=RATE if i % 20 else None)
        i += 1
    for k in range(4):  # others: a little mail, some of it deferred too
        lines += message(i, t0, login=f"user{k}", addr=f"198.51.100.{k + 1}", sender=f"u{k}@example.com",
                         reason=SPAM if k < 2 else None)  # fmt: skip
        i += 1
    lines += message(i, t0, login=None, addr="127.0.0.1", sender="www-data@example.com", reason=RATE)  # a web form
    path.write_text("\n".join(lines) + "\n")
    return path


def cause_of(reason: str, dsn: str | None) -> str:
    return classify(reason, status="deferred", dsn=dsn).cause_id


def test_parse_client_reads_smtpd_lines():
    s = parse_client("client=mail.example[192.0.2.7], sasl_method=LOGIN, sasl_username=ann@example.com")
    assert s is not None and (s.host, s.addr, s.login) == ("mail.example", "192.0.2.7", "ann@example.com")
    s = parse_client("client=unknown[2001:db8::1]")
    assert s is not None and s.addr == "2001:db8::1" and s.login is None
    assert parse_client("connect from x[1.2.3.4]") is None


def test_scan_names_the_login_and_counts_each_message_once(tmp_path):
    log = flood_log(tmp_path / "mail.log")
    ev = scan(LocalTarget(), [str(log)], None, cause_of=cause_of, causes=("E22", "E23"), deadline=time.monotonic() + 30)
    assert ev.complete and ev.files == (str(log),)
    assert ev.deferred_messages == 38 + 2 + 1  # each message once, whatever its retries
    assert ev.by_cause == {"E22": 41}
    assert ev.joined == 41 and ev.with_sender == 41
    assert ev.logins[0].key == "bob@example.com" and (ev.logins[0].deferred, ev.logins[0].total) == (38, 40)
    assert ev.clients[0].key == "203.0.113.5" and ev.clients[0].deferred == 38
    assert ev.senders[0].key == "bob@example.com"
    assert ev.pairs[0].key == "bob@example.com 203.0.113.5"
    ob = outbreak.judge(ev)
    assert ob.kind == "sasl-user" and ob.lead is not None and ob.via is not None and ob.via.key == "203.0.113.5"
    assert outbreak.summary(ob) == ("93 % of the 41 messages deferred by E22 in the log read came from SASL login "
                                    "bob@example.com, client 203.0.113.5; 95 % of that login's mail (38 of 40 message(s)) "
                                    "was deferred")  # fmt: skip


def test_without_sasl_the_client_leads(tmp_path):
    log = flood_log(tmp_path / "mail.log", login=None, addr="127.0.0.5")
    ev = scan(LocalTarget(), [str(log)], None, cause_of=cause_of, causes=("E22",), deadline=time.monotonic() + 30)
    ob = outbreak.judge(ev)
    assert ob.kind == "client" and ob.lead is not None and ob.lead.key == "127.0.0.5"
    assert "came from client 127.0.0.5;" in outbreak.summary(ob)
    p = outbreak.plan(ob)
    assert p["hold"][0]["command"] == "pfdiag queue hold --client=127.0.0.5 --dry-run"
    assert p["stop"]["map_line"].startswith("127.0.0.5 REJECT ")
    assert p["stop"]["commands"][0] == "postmap hash:/etc/postfix/client_access"


def test_spread_mail_names_no_one(tmp_path):
    t0 = time.time() - 3600
    lines = [ln for i in range(12) for ln in message(i, t0, login=f"u{i}", addr=f"192.0.2.{i}", sender=f"s{i}@example.com",
                                                     reason=RATE)]  # fmt: skip
    (tmp_path / "mail.log").write_text("\n".join(lines) + "\n")
    ev = scan(LocalTarget(), [str(tmp_path / "mail.log")], None, cause_of=cause_of, causes=("E22",), deadline=time.monotonic() + 30)
    ob = outbreak.judge(ev)
    assert ob.lead is None and ev.deferred_messages == 12
    assert "come from no single SASL login, client or sender" in outbreak.summary(ob)


def test_the_join_and_tallies_are_bounded():
    parser = LineParser()
    join = SubmitterJoin(limit=100)
    for i in range(1000):
        line = parser.parse(f"Dec  6 10:00:01 mx postfix/smtpd[1]: {_qid(i)}: client=unknown[192.0.2.1]")
        assert line is not None
        join.see(line)
    assert len(join.origins) == 100 and join.forgotten == 900
    t = Tally(limit=50)
    for i in range(10 * MAX_KEYS):
        t.total(f"k{i}")
    t.deferred("big")
    assert len(t.counts) <= 50 and t.dropped > 0 and t.top()[0].key == "big"


def test_a_wanted_join_keeps_only_those_ids():
    parser = LineParser()
    join = SubmitterJoin(wanted={_qid(3)})
    for i in range(10):
        line = parser.parse(f"Dec  6 10:00:01 mx postfix/smtpd[1]: {_qid(i)}: client=h[192.0.2.{i}], sasl_username=u{i}")
        assert line is not None
        join.see(line)
    assert list(join.origins) == [_qid(3)] and join.origins[_qid(3)].login == "u3"


def test_the_deadline_stops_the_read(tmp_path):
    log = flood_log(tmp_path / "mail.log", flood=1200)
    ev = scan(LocalTarget(), [str(log)], None, cause_of=cause_of, causes=("E22",), deadline=time.monotonic() - 1)
    assert not ev.complete and ev.lines < 6000


def _facts(log: Path) -> Facts:
    from checks.config import read_config

    facts = Facts(where="local")
    facts.logs = collect_logs(LocalTarget(), None, [str(log)], lambda: read_config(LocalTarget(), None))
    return facts


def test_the_check_runs_only_when_e22_e23_dominate(tmp_path):
    facts = _facts(flood_log(tmp_path / "mail.log"))
    assert outbreak.dominates(facts.logs)
    ctx = Context(target=LocalTarget(), options={"collected": {"logs": facts.logs}, "budget": 30})
    [f] = outbreak.outbreak_check(ctx)
    assert f.severity == Severity.PROBLEM and f.cause_id is None and "bob@example.com" in f.summary
    assert isinstance(f.values["outbreak"], outbreak.Outbreak)
    quiet = tmp_path / "quiet.log"
    quiet.write_text("\n".join(message(0, time.time() - 60, login="a", addr="192.0.2.1", sender="a@example.com", reason=RATE)) + "\n")
    facts = _facts(quiet)
    [f] = outbreak.outbreak_check(Context(target=LocalTarget(), options={"collected": {"logs": facts.logs}}))
    assert f.severity == Severity.INFO and f.summary.startswith("no outbreak triage") and "outbreak" not in f.values


@pytest.fixture
def report_doc(tmp_path):
    from diagnose import report

    facts = _facts(flood_log(tmp_path / "mail.log"))
    ctx = Context(target=LocalTarget(), options={"collected": {"logs": facts.logs}, "budget": 30})
    facts.findings += outbreak.outbreak_check(ctx)
    return report.build(facts, {})


def test_the_report_says_it_with_numbers_and_offers_the_hold(report_doc):
    from diagnose import report
    from diagnose.html import render_html

    doc = report_doc
    ob = doc["outbreak"]
    assert ob["lead"] == {"kind": "sasl-user", "key": "bob@example.com", "deferred": 38, "total": 40, "share": 0.9268,
                          "deferred_ratio": 0.95, "via": "203.0.113.5"}  # fmt: skip
    assert doc["verdict"]["status"] == "root-cause"
    first, second = doc["do_now"][:2]
    assert first["command"] == "pfdiag queue hold --sasl-user=bob@example.com --dry-run"
    assert first["step"].startswith("93 % of the 41 messages deferred by E22")
    assert second["command"] == "postmap hash:/etc/postfix/sasl_access && postfix reload"
    assert "with an access map line (add 'bob@example.com REJECT account disabled: mail flood (pfdiag outbreak triage)' to /etc/postfix/sasl_access, 'check_sasl_access hash:/etc/postfix/sasl_access' first in smtpd_sender_restrictions)" in second["step"]
    plan = ob["plan"]
    assert [h["command"] for h in plan["hold"]] == ["pfdiag queue hold --sasl-user=bob@example.com --dry-run",
                                                     "pfdiag queue hold --sasl-user=bob@example.com --yes",
                                                     "pfdiag queue release --sasl-user=bob@example.com --yes"]  # fmt: skip
    assert any("doveadm auth test bob@example.com" in n for n in plan["stop"]["notes"])
    assert plan["stop"]["restriction"] == "check_sasl_access hash:/etc/postfix/sasl_access"
    text = report.render_text(doc, width=200)
    assert "Outbreak triage: 93 % of the 41 messages deferred by E22" in text
    assert "\n    bob@example.com REJECT account disabled: mail flood (pfdiag outbreak triage)\n" in text  # the map line, alone
    assert "pfdiag queue release --sasl-user=bob@example.com --yes" in text
    md = report.render_markdown(doc)
    assert "## Outbreak triage" in md and "postmap hash:/etc/postfix/sasl_access" in md
    assert "93 % of the 41 messages" in md  # the warning and the first step
    html = render_html(doc)
    assert "93 % of the 41 messages" in html and "pfdiag queue hold --sasl-user=bob@example.com --dry-run" in html
    assert json.loads(report.to_json(doc))["outbreak"]["top"]["clients"][0]["key"] == "203.0.113.5"


def test_redaction_hides_the_login_and_client(report_doc):
    from diagnose.rendering import redact

    doc = redact(report_doc)
    blob = json.dumps(doc)
    assert "bob@example.com" not in blob and "203.0.113.5" not in blob


def test_a_recording_is_read_through_its_target_and_stdin_is_not_read_twice(tmp_path):
    from checks.config import read_config
    from checks.errors import CheckSkipped
    from checks.targets import SnapshotTarget
    from diagnose.target_options import demo_path

    demo = SnapshotTarget(demo_path())
    logs = collect_logs(demo, None, None, lambda: read_config(demo, None))
    [f] = outbreak.outbreak_check(Context(target=demo, options={"collected": {"logs": logs}}))
    assert f.severity == Severity.INFO and "(E22/E23) are 0 % of the deferrals" in f.summary  # the demo: end-of-data
    ev = scan(demo, logs["input"]["files"], None, cause_of=cause_of, causes=("E09",), deadline=time.monotonic() + 30)
    assert ev.complete and ev.deferred_messages > 0 and ev.senders  # the bundle's log, read through the target
    facts = _facts(flood_log(tmp_path / "mail.log"))
    assert facts.logs is not None
    facts.logs["input"]["files"] = ["-"]
    with pytest.raises(CheckSkipped, match="standard input"):
        outbreak.outbreak_check(Context(target=LocalTarget(), options={"collected": {"logs": facts.logs}}))
