"""pfdiag probe: one verdict per probe, the one Postfix's TLS policy for the destination gives
(issue 12), and probe replies classified by the log classifier. Loopback peers (tests/peers.py)
and a Postfix configuration of the test's own (postconf -c DIR), never /etc/postfix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from checks.smtp import PhaseResult, ProbeResult, Verdict
from diagnose.classify import classify
from diagnose.cli import main
from diagnose.probedoc import classify_replies, reply_reason, report_probe_findings
from tests.peers import RejectingPeer, SmtpPeer

GREYLIST = "451 4.7.1 <bob@grey.test>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/help/grey.test.html"


def _conf(tmp_path: Path, main_cf: str, master_extra: str = "") -> str:
    conf = tmp_path / "postfix"
    conf.mkdir()
    (conf / "main.cf").write_text("compatibility_level = 3.6\nsmtp_helo_name = out.pfdiag.test\n" + main_cf)
    (conf / "master.cf").write_text("smtp unix - - n - - smtp\n" + master_extra)
    return str(conf)


def _probe(capsys, peer: SmtpPeer, conf: str, fmt: str = "json", *extra: str) -> tuple[int, str]:
    code = main(["probe", f"[127.0.0.1]:{peer.port}", "-c", conf, "--timeouts", "short", "--budget", "10",
                 "--format", fmt, *extra])  # fmt: skip
    return code, capsys.readouterr().out


@pytest.mark.parametrize("where", ["main.cf", "master.cf -o"])
def test_no_starttls_under_encrypt_is_one_verdict(tmp_path, capsys, where) -> None:
    if where == "main.cf":
        conf = _conf(tmp_path, "smtp_tls_security_level = encrypt\n")
    else:  # main.cf says may, the smtp service's -o says encrypt: the override wins
        conf = _conf(tmp_path, "smtp_tls_security_level = may\n")
        Path(conf, "master.cf").write_text("smtp unix - - n - - smtp\n  -o smtp_tls_security_level=encrypt\n")
    with SmtpPeer(lifetime=60) as peer:
        code, out = _probe(capsys, peer, conf)
    doc = json.loads(out)
    assert doc["tls"]["policy"]["level"] == "encrypt" and doc["tls"]["postfix_would_deliver"] is False
    summaries = [f["summary"] for f in doc["findings"]]
    assert not any("talks SMTP normally" in s for s in summaries), summaries
    assert doc["findings"][0]["cause_id"] == "E16" and doc["findings"][0]["severity"] == "problem"
    assert "Postfix would NOT deliver here" in summaries[0] and "encrypt" in summaries[0]
    assert not any("a problem only where Postfix requires TLS" in s for s in summaries)
    assert doc["problem"] is True and code != 0


def test_no_starttls_under_may_says_clear_and_not_the_cause(tmp_path, capsys) -> None:
    conf = _conf(tmp_path, "smtp_tls_security_level = may\n")
    with SmtpPeer(lifetime=60) as peer:
        code, out = _probe(capsys, peer, conf, "text")
    assert code == 0, out
    assert "talks SMTP normally" in out
    assert "does not offer STARTTLS: under TLS policy may" in out and "delivers in clear; not the cause" in out
    assert "a problem only where Postfix requires TLS" not in out  # said once, by the policy


def test_a_transport_routed_destination_gets_its_transports_policy(tmp_path, capsys) -> None:
    """transport_maps routes the domain through 'secure' whose -o says encrypt; main.cf says may."""
    conf = _conf(tmp_path, "smtp_tls_security_level = may\n")
    with SmtpPeer(lifetime=60) as peer:
        Path(conf, "transport").write_text(f"routed.test secure:[127.0.0.1]:{peer.port}\n")
        Path(conf, "main.cf").write_text(Path(conf, "main.cf").read_text() + f"transport_maps = texthash:{conf}/transport\n")
        Path(conf, "master.cf").write_text("smtp unix - - n - - smtp\nsecure unix - - n - - smtp\n"
                                           "  -o smtp_tls_security_level=encrypt\n")  # fmt: skip
        code = main(["probe", "routed.test", "-c", conf, "--timeouts", "short", "--budget", "10", "-f", "json"])
    doc = json.loads(capsys.readouterr().out)
    assert doc["tls"]["policy"]["service"] == "secure" and doc["tls"]["policy"]["level"] == "encrypt", doc["notes"]
    assert doc["findings"][0]["cause_id"] == "E16" and "transport secure" in doc["findings"][0]["summary"]
    assert code != 0


def test_greylisting_451_at_rcpt_gets_the_log_classifiers_cause(tmp_path, capsys) -> None:
    conf = _conf(tmp_path, "")
    with RejectingPeer(verb="RCPT", answer=GREYLIST, lifetime=60) as peer:
        code, out = _probe(capsys, peer, conf, "json", "--rcpt", "bob@grey.test")
        _, text = _probe(capsys, peer, conf, "text", "--rcpt", "bob@grey.test")
        _, md = _probe(capsys, peer, conf, "md", "--rcpt", "bob@grey.test")
    doc = json.loads(out)
    rcpt = next(p for p in doc["probe"]["phases"] if p["phase"] == "rcpt")
    assert rcpt["reply_code"] == 451 and rcpt["cause_id"] == "E21" and rcpt["cause_title"] == "Greylisting at the receiver"
    assert doc["findings"][0]["cause_id"] == "E21" and "rcpt" in doc["findings"][0]["summary"]
    assert "[E21 Greylisting at the receiver]" in text and "E21" in md
    assert code != 0


def _phase(name: str, code: int | None, text: str, cause: str | None = None) -> PhaseResult:
    return PhaseResult(name, 0.01, Verdict.FAILED if code and code >= 400 else Verdict.OK, code, None, text,
                       "smtp_helo_timeout", 300.0, "", cause)  # fmt: skip


def test_classify_replies_is_the_log_classifier_with_the_postfix_log_text() -> None:
    r = ProbeResult("127.0.0.9", 25, "local", (_phase("connect", None, ""), _phase("banner", 421, "421 4.7.0 busy, try later", "E05"),))
    reason = reply_reason(r.phases[1], "mx.test", "127.0.0.9")
    assert reason == "host mx.test[127.0.0.9] refused to talk to me: 421 4.7.0 busy, try later"
    assert classify_replies(r, "mx.test").phases[1].cause_id == classify(reason, status="deferred").cause_id
    mail = _phase("mail", 451, "451 4.7.1 Greylisting in action, please come back later")
    r2 = ProbeResult("127.0.0.9", 25, "local", (mail,))
    assert reply_reason(mail, "h", "127.0.0.9", ).endswith("(in reply to MAIL FROM command)")
    assert classify_replies(r2).phases[0].cause_id == "E21"
    ok = ProbeResult("127.0.0.9", 25, "local", (_phase("ehlo", 250, "250 ok"),))
    assert classify_replies(ok) is ok  # nothing failing: unchanged


def test_the_reports_probe_follows_the_policy_too(tmp_path) -> None:
    """smtp.nexthops with the engine's judge: a no-STARTTLS next hop routed through a transport whose
    -o says encrypt is E16, not "talks SMTP normally"; the same hop through smtp (may) is fine."""
    from checks.builtin import smtp_nexthops
    from checks.registry import Context
    from checks.targets import LocalTarget

    conf = _conf(tmp_path, "smtp_tls_security_level = may\n")
    Path(conf, "master.cf").write_text("smtp unix - - n - - smtp\nsecure unix - - n - - smtp\n"
                                       "  -o smtp_tls_security_level=encrypt\n")  # fmt: skip
    with SmtpPeer(lifetime=60) as peer:
        def run(transport: str) -> list:
            hop = {"host": "127.0.0.1", "name": "127.0.0.1", "port": peer.port, "domain": "tls.test", "cause_id": "E16",
                   "transport": transport}  # fmt: skip
            return smtp_nexthops(Context(LocalTarget(), {}, {"probe_targets": [hop], "budget": 10, "config_dir": conf,
                                                             "collected": {"identity": {"smtp_helo_name": "out.test"}},
                                                             "probe_findings": report_probe_findings}))  # fmt: skip
        secure, plain = run("secure"), run("smtp")
    assert secure[0].cause_id == "E16" and str(secure[0].severity) == "problem" and secure[0].values["for_cause"] == "E16"
    assert not any("talks SMTP normally" in f.summary for f in secure)
    assert "talks SMTP normally" in plain[0].summary and "delivers in clear; not the cause" in plain[1].summary


def test_the_reports_probe_of_a_greylisting_peer_gets_e21(tmp_path) -> None:
    """smtp.nexthops (the report's probes) with the classifier the engine passes: a 451 greylisting
    reply to MAIL FROM is E21 with its phase, so the report's E21 cause gets it as probe evidence."""
    from checks.builtin import smtp_nexthops
    from checks.registry import Context
    from checks.targets import LocalTarget

    answer = "451 4.7.1 Greylisting in action, please come back later"
    with RejectingPeer(verb="MAIL", answer=answer, lifetime=60) as peer:
        hop = {"host": "127.0.0.1", "name": "mx.grey.test", "port": peer.port, "domain": "grey.test", "cause_id": "E21"}
        ctx = Context(LocalTarget(), {}, {"probe_targets": [hop], "budget": 10, "config_dir": _conf(tmp_path, ""),
                                          "collected": {"identity": {"smtp_helo_name": "out.pfdiag.test"}},
                                          "probe_findings": report_probe_findings})  # fmt: skip
        with_classifier = smtp_nexthops(ctx)
        without = smtp_nexthops(Context(LocalTarget(), {}, {**ctx.options, "probe_findings": None}))
    main_f = with_classifier[0]
    assert main_f.cause_id == "E21" and "mail: failed" in main_f.summary and main_f.values["for_cause"] == "E21"
    assert without[0].cause_id != "E21"  # the phase table's own cause (none for MAIL FROM) without the classifier
    # in the report: the probe is evidence of the E21 cause the logs found, with its phase and the reply
    from diagnose import report
    from diagnose.engine import Facts

    logs = {"causes": [{"id": "E21", "deferrals": 2, "messages": 2, "top_domains": [["grey.test", 2]],
                        "example": f"host mx.grey.test[127.0.0.1]:{peer.port} said: {answer} (in reply to MAIL FROM command)"}],
            "domains": [], "end_of_data": {}}  # fmt: skip
    doc = report.build(Facts(where="local", logs=logs, findings=with_classifier), {})
    e21 = next(c for c in doc["causes"] if c["id"] == "E21")
    probe_ev = [e for e in e21["evidence"] if e["kind"] == "check"]
    assert probe_ev and "mail: failed" in probe_ev[0]["excerpt"] and "451 4.7.1 Greylisting in action" in probe_ev[0]["excerpt"]
    assert "Greylisting in action" in report.render_markdown(doc)


def test_a_refused_connection_under_encrypt_is_not_called_a_missing_starttls(tmp_path, capsys) -> None:
    import socket

    conf = _conf(tmp_path, "smtp_tls_security_level = encrypt\n")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens: refused
    code = main(["probe", f"[127.0.0.1]:{port}", "-c", conf, "--timeouts", "short", "--budget", "5", "-f", "json"])
    doc = json.loads(capsys.readouterr().out)
    assert doc["tls"]["postfix_would_deliver"] is None and doc["tls"]["why"].startswith("not judged")
    assert [f["cause_id"] for f in doc["findings"]] == ["E02"] and code == 4
    main(["probe", f"[127.0.0.1]:{port}", "-c", conf, "--timeouts", "short", "--budget", "5"])
    out = capsys.readouterr().out
    assert "does not offer STARTTLS" not in out and "TLS policy: not judged" in out
