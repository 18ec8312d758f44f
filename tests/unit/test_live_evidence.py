"""Missing evidence is a finding (issue 12): when the report's probes (smtp.nexthops) reach no
next hop and meet something else than the logs say happened there, the report says the live
checks are missing and where to run it. Real probes on loopback: a closed port and a peer."""

from __future__ import annotations

import socket

from checks.builtin import smtp_nexthops
from checks.registry import Context
from checks.targets import LocalTarget
from diagnose import report
from diagnose.engine import Facts
from diagnose.probedoc import report_probe_findings
from diagnose.vantage import UNREACHED, live_evidence_missing
from tests.peers import SmtpPeer


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: the probe's connect is refused
    return int(port)


def _probe(hops: list[dict]) -> list:
    import tempfile
    from pathlib import Path

    conf = tempfile.mkdtemp(prefix="pfdiag-test-conf-")  # the TLS policy is read from a config of the test's own
    Path(conf, "main.cf").write_text("compatibility_level = 3.6\n")
    Path(conf, "master.cf").write_text("smtp unix - - n - - smtp\n")
    ctx = Context(LocalTarget(), {}, {"probe_targets": hops, "budget": 10, "probe_findings": report_probe_findings,
                                      "config_dir": conf,
                                      "collected": {"identity": {"smtp_helo_name": "out.pfdiag.test"}}})  # fmt: skip
    return smtp_nexthops(ctx)


def _facts(findings: list) -> Facts:
    logs = {"causes": [{"id": "E09", "deferrals": 3, "messages": 3, "top_domains": [["eod.test", 3]],
                        "example": "conversation with mx.eod.test[127.0.0.1]:2525 timed out while sending end of data -- message may be sent more than once"}],
            "domains": [], "end_of_data": {}}  # fmt: skip
    return Facts(where="local", logs=logs, queue={"now": 0, "counts": {"deferred": 3}, "groups": []}, findings=findings)


def test_no_next_hop_reached_and_the_logs_say_otherwise_is_a_finding() -> None:
    port = _closed_port()
    found = _probe([{"host": "127.0.0.1", "port": port, "domain": "eod.test", "cause_id": "E09"}])
    missing = live_evidence_missing(found)
    assert missing is not None and missing["message"] == UNREACHED and missing["hops"][0]["log_cause"] == "E09"
    doc = report.build(_facts(found), {})
    assert doc["live_evidence"]["missing"] is True
    assert "live evidence missing" in doc["verdict"]["summary"]
    text, md = report.render_text(doc, width=200), report.render_markdown(doc)
    for out in (text, md):
        assert "could not reach any next hop from here: the live checks are missing; run on the mail host or with" in out
        assert "--host" in out


def test_a_reached_next_hop_or_a_probe_that_confirms_the_log_is_no_such_finding() -> None:
    with SmtpPeer(lifetime=30) as peer:
        reached = _probe([{"host": "127.0.0.1", "port": peer.port, "domain": "eod.test", "cause_id": "E09"}])
    assert live_evidence_missing(reached) is None
    confirms = _probe([{"host": "127.0.0.1", "port": _closed_port(), "domain": "refused.test", "cause_id": "E02"}])
    assert confirms[0].cause_id == "E02" and live_evidence_missing(confirms) is None
    assert live_evidence_missing([]) is None
    doc = report.build(_facts(reached), {})
    assert doc["live_evidence"] is None and "could not reach" not in report.render_markdown(doc)
