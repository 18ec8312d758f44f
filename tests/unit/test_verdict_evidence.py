"""Evidence belongs to its verdict (issue 12): per-destination end-of-data reasoning, timeouts of
the log's own host, queued 5xx = soft_bounce, fix/confirm commands filled from the evidence, and
locality (a DNS record pointing at loopback is its own finding; logs/queue judge E32 as the report).
The end-to-end versions run on the real lab: tests/integration/test_verdict_lab.py."""

from __future__ import annotations

from typing import Any

from checks.config import read_config
from checks.logs import ReadStats
from checks.model import Finding, Severity
from checks.postfix.logline import LineParser
from checks.postfix.postconf import PostfixConfig
from diagnose.causes import get_cause
from diagnose.classify import queued_cause
from diagnose.correlate import RankedCause, dns_points_inward, rank, relocalize, services_of
from diagnose.deferrals import DeferralAnalysis
from diagnose.delays import UNKNOWN_HOST_CONFIG, config_for_log, log_hosts, same_host, timeout_origin
from diagnose.engine import Facts
from diagnose.eod import hypotheses
from diagnose.logreport import to_dict
from diagnose.report import applies, build, fill_values, missing_transport
from tests.unit.test_target_base import Recorded, _postfix

EOD = "conversation with {h}[{a}] timed out while sending end of data -- message may be sent more than once"


def _line(n: int, qid: str, rcpt: str, host: str, addr: str, d: float) -> str:
    reason = EOD.format(h=host, a=addr)
    return (f"Nov 28 10:{n:02d}:00 mx postfix/smtp[{n}]: {qid}: to=<{rcpt}>, relay={host}[{addr}]:25, delay={d + 1}, "
            f"delays=0.1/0/0.3/{d:g}, dsn=4.4.2, status=deferred ({reason})")  # fmt: skip


LOG = "\n".join([
    "Nov 28 09:59:00 mx postfix/qmgr[1]: AAAA01: from=<s@here.test>, size=300, nrcpt=1 (queue active)",
    _line(1, "AAAA01", "a@own.test", "mx.own.test", "192.0.2.10", 2),
    _line(2, "AAAA02", "b@own.test", "mx.own.test", "192.0.2.10", 2),
    _line(3, "AAAA03", "c@other.test", "mx.other.test", "192.0.2.20", 5),
    _line(4, "AAAA04", "d@other.test", "mx.other.test", "192.0.2.20", 5),
    _line(5, "AAAA05", "e@other.test", "mx.other.test", "192.0.2.20", 5),
    "Nov 28 10:06:00 mx postfix/smtp[9]: AAAA03: enabling PIX workarounds: disable_esmtp,delay_dotcrlf for "
    "mx.other.test[192.0.2.20]:25",
]) + "\n"  # fmt: skip


def _logs_report(text: str = LOG) -> dict[str, Any]:
    parser = LineParser()
    a = DeferralAnalysis().add_all(r for r in map(parser.parse, text.splitlines()) if r)
    return to_dict(a, ReadStats(files=["/srv/logs/mail.log"]))


def _config(overrides: dict[tuple[str, str, str], str] | None = None, **values: str) -> PostfixConfig:
    return PostfixConfig(values={"smtp_data_done_timeout": "5s", "soft_bounce": "no", "content_filter": "", **values},
                         defaults={"smtp_data_done_timeout": "600s", "soft_bounce": "no"}, overrides=overrides or {})  # fmt: skip


def _route(cfg: PostfixConfig, domain: str, transport: str) -> dict[str, Any]:
    from diagnose.delays import DEFAULT_TIMEOUTS, smtp_timeouts

    service = f"{transport}/unix"
    return {"domain": domain, "transport": transport, "nexthop": "", "source": "transport_maps",
            "timeouts": smtp_timeouts(cfg, service),
            "origins": {n: timeout_origin(cfg, n, service) for n in DEFAULT_TIMEOUTS},
            "soft_bounce": "no", "soft_bounce_origin": timeout_origin(cfg, "soft_bounce", service)}  # fmt: skip


# -- 1. per destination


def test_the_logs_keep_each_destinations_own_delays_and_line() -> None:
    cause = next(c for c in _logs_report()["causes"] if c["id"] == "E09")
    own, other = cause["by_domain"]["own.test"], cause["by_domain"]["other.test"]
    assert own["delays"]["d"]["median"] == 2 and other["delays"]["d"]["median"] == 5
    assert "a@own.test" in own["example"] and "c@other.test" in other["example"]
    assert cause["delays"]["d"]["median"] == 5  # the cause over both: what a focused report must not quote


def test_focused_reasoning_uses_the_destinations_d_hop_and_transport() -> None:
    cfg = _config({("slowdone", "unix", "smtp_data_done_timeout"): "2s"})
    route = _route(cfg, "own.test", "slowdone")
    (rc,) = rank(_logs_report(), None, [], route["timeouts"], domain="own.test", route=route)
    assert rc.id == "E09" and rc.delays is not None and rc.delays["d"]["median"] == 2
    assert rc.hop is not None and rc.hop["addr"] == "192.0.2.10" and all("own.test" in ex for ex in rc.examples)
    assert rc.hypotheses[0].id == "local-timeout" and rc.hypotheses[0].score == 0.85
    said = " ".join(rc.hypotheses[0].evidence)
    assert "master.cf slowdone/unix -o smtp_data_done_timeout=2s" in said and "median 2 s" in said
    assert "5 s" not in said and "5s" not in said
    assert "firewall" not in {h.id for h in rc.hypotheses}, "the PIX line is other.test's next hop"
    assert any("smtp_data_done_timeout (2 s)" in m for m in rc.delays_meaning), rc.delays_meaning
    # the other destination: main.cf's 5 s, its own d, its own PIX workarounds
    route = _route(cfg, "other.test", "smtp")
    (rc,) = rank(_logs_report(), None, [], route["timeouts"], domain="other.test", route=route)
    under = {h.id: h for h in rc.hypotheses}
    assert "main.cf smtp_data_done_timeout = 5s" in " ".join(under["local-timeout"].evidence)
    assert "median 5 s" in " ".join(under["local-timeout"].evidence) and "firewall" in under


def test_a_config_finding_goes_with_the_destination_whose_transport_uses_it() -> None:
    cfg = _config({("slowdone", "unix", "smtp_data_done_timeout"): "2s"})
    main = Finding("config.timeouts", Severity.WARNING, "smtp_data_done_timeout: 5s is below 600s", "E09",
                   values={"parameter": "smtp_data_done_timeout", "hypothesis": "local-timeout", "seconds": 5.0})
    over = Finding("config.timeouts", Severity.WARNING, "smtp_data_done_timeout: master.cf overrides it for "
                   "slowdone/unix (-o smtp_data_done_timeout=2s)", "E09",
                   values={"parameter": "smtp_data_done_timeout", "hypothesis": "local-timeout", "seconds": 5.0})  # fmt: skip
    route = _route(cfg, "own.test", "slowdone")
    (rc,) = rank(_logs_report(), None, [main, over], route["timeouts"], domain="own.test", route=route)
    assert [f.summary for f in rc.confirmations] == [over.summary]
    route = _route(cfg, "other.test", "smtp")
    (rc,) = rank(_logs_report(), None, [main, over], route["timeouts"], domain="other.test", route=route)
    assert [f.summary for f in rc.confirmations] == [main.summary]


def test_a_default_timeout_is_no_local_override() -> None:
    cfg = _config(smtp_data_done_timeout="600s")
    route = _route(cfg, "own.test", "smtp")
    hs = hypotheses({"id": "E09", "delays": {"d": {"median": 600, "p95": 600}}}, {}, route["timeouts"], [], route)
    assert "local-timeout" not in {h.id for h in hs} and hs[0].id == "slow-receiver"


# -- 2. the log's own host


def test_log_hosts_and_same_host() -> None:
    lines = ["Nov 28 10:00:00 mail2 postfix/smtp[1]: X: to=<a@b.test>", "2026-01-01T10:00:00+01:00 mx.b.test postfix/qmgr[2]: x"]
    assert log_hosts(lines) == {"mail2", "mx.b.test"}
    assert same_host({"lab"}, ["lab.pfdiag.test"]) is True
    assert same_host({"mail2"}, ["vm", "mail.example.com"]) is False
    assert same_host(set(), ["vm"]) is None


def test_another_hosts_log_is_read_with_postfixs_defaults_said_so() -> None:
    target = _postfix()
    target.outputs[("postconf", "-x", "myhostname")] = "myhostname = vm.example.test\n"
    target.outputs[("hostname",)] = "vm\n"
    other = ["Nov 28 10:00:00 mail2 postfix/smtp[1]: X: to=<a@b.test>, status=deferred (x)"]
    cfg, source = config_for_log(target, None, lambda: read_config(target), other, paths_given=True)
    assert cfg is None and source.startswith(UNKNOWN_HOST_CONFIG) and "mail2" in source
    mine = ["Nov 28 10:00:00 vm postfix/smtp[1]: X: to=<a@b.test>, status=deferred (x)"]
    cfg, source = config_for_log(target, None, lambda: read_config(target), mine, paths_given=True)
    assert cfg is not None and source == "postconf on recorded:test"
    # the target's own log (no paths given): its configuration, whoever's name the lines carry
    cfg, _ = config_for_log(target, None, lambda: read_config(target), other, paths_given=False)
    assert cfg is not None
    cfg, source = config_for_log(Recorded({}), None, lambda: read_config(Recorded({})), other, paths_given=True)
    assert cfg is None and source.startswith(UNKNOWN_HOST_CONFIG)


# -- 3. soft_bounce in the queue


def test_a_queued_5xx_is_soft_bounce_not_a_bounce() -> None:
    reason = "host mx.b.test[192.0.2.5] said: 550 5.1.1 <a@b.test>: User unknown (in reply to RCPT TO command)"
    assert queued_cause(reason) == "E33"
    assert queued_cause("host mx.b.test[192.0.2.5] said: 450 4.2.0 try later (in reply to RCPT TO command)") != "E33"
    assert queued_cause("connect to mx.b.test[192.0.2.5]:25: Connection refused") == "E02"


def _facts(logs: dict[str, Any] | None = None, cfg: PostfixConfig | None = None, **kw: Any) -> Facts:
    from checks.config import ConfigReport
    from checks.postfix.retry import RetrySettings

    facts = Facts(where="local", logs=logs, **kw)
    if cfg is not None:
        facts.config_report = ConfigReport(rows=[], config=cfg, settings=RetrySettings.from_config(cfg))
    return facts


def test_the_soft_bounce_fix_names_the_transport_that_sets_it() -> None:
    cfg = _config({("softb", "unix", "soft_bounce"): "yes"})
    rc = RankedCause("E33", get_cause("E33"), queue_ids=["4F2A91C3B7"])
    values = fill_values(rc, _facts(cfg=cfg), None)
    assert values["<soft-bounce-off>"] == "postconf -PX 'softb/unix/soft_bounce'"
    assert "softb service" in str(values["<soft-bounce-where>"]) and "main.cf says no" in str(values["<soft-bounce-where>"])
    values = fill_values(rc, _facts(cfg=_config(soft_bounce="yes")), None)
    assert values["<soft-bounce-off>"] == "postconf -e 'soft_bounce = no'"


# -- 4./5. commands filled from the evidence, only where they apply


def test_commands_are_filled_from_the_evidence_and_offered_where_they_apply() -> None:
    line = _line(1, "C8B6A1AA10C", "user@own.test", "127.0.0.1", "127.0.0.1", 2)
    rc = RankedCause("E32", get_cause("E32"), examples=[line], hop={"host": "127.0.0.1", "addr": "127.0.0.1", "port": 10024},
                     domains=[("own.test", 1)])  # fmt: skip
    facts = _facts(logs={"input": {"files": ["/var/log/old.log.1.gz", "/srv/postfix.log"]}})
    values = fill_values(rc, facts)
    assert values["<log>"] == "/srv/postfix.log" and values["<rcpt>"] == "user@own.test"
    assert values["<queue-id>"] == "C8B6A1AA10C" and values["<port>"] == "10024"
    assert not applies("ls -l <addr>   # for a socket", values)
    assert applies("ls -l <addr>", {**values, "<addr>": "/var/spool/postfix/private/dovecot-lmtp"})
    assert not applies("dig +dnssec TLSA _25._tcp.<mx-host>", values)
    assert applies("dig +dnssec TLSA _25._tcp.<mx-host>", {**values, "<mx-host>": "mx.own.test"})
    assert not applies("grep -F '<rcpt>' <log>", {**values, "<rcpt>": None})


def test_no_relay_access_fix_under_a_full_mailbox() -> None:
    from diagnose.report import _fixes

    full = "host mx.b.test[192.0.2.5] said: 452 4.2.2 <full@b.test>: Mailbox full (in reply to RCPT TO command)"
    rc = RankedCause("E27", get_cause("E27"), examples=[full], domains=[("b.test", 1)])
    texts = [f["text"] for f in _fixes(rc, fill_values(rc, _facts()))]
    assert any("Mailbox full" in t for t in texts) and not any("Relay access denied" in t for t in texts)
    relay = "host mx.b.test[192.0.2.5] said: 454 4.7.1 <a@b.test>: Relay access denied (in reply to RCPT TO command)"
    rc = RankedCause("E27", get_cause("E27"), examples=[relay], domains=[("b.test", 1)])
    assert any("Relay access denied" in f["text"] for f in _fixes(rc, fill_values(rc, _facts())))


def test_e31_names_the_transport_qmgr_could_not_reach() -> None:
    warn = "Dec 06 18:30:26 lab postfix/qmgr[1]: warning: connect to transport private/nosuch: No such file or directory"
    logs = {"companions": {"warning: connect to transport": {"count": 1, "example": warn}}, "input": {"files": ["/x.log"]}}
    rc = RankedCause("E31", get_cause("E31"), domains=[("n.test", 1)])
    assert missing_transport(rc, _facts(logs=logs), None) == ("nosuch", warn)
    values = fill_values(rc, _facts(logs=logs))
    assert values["<transport>"] == "nosuch"
    doc = build(_facts(logs={**logs, "causes": [{"id": "E31", "deferrals": 1, "messages": 1, "top_domains": [["n.test", 1]],
                                                  "example": "Dec 06 18:30:26 lab postfix/qmgr[1]: ABC123: to=<u@n.test>, "
                                                  "relay=none, delay=0, delays=0/0/0/0, dsn=4.3.0, status=deferred "
                                                  "(mail transport unavailable)"}]}), {})  # fmt: skip
    top = doc["causes"][0]
    assert top["id"] == "E31" and any("nosuch" in w for w in top["why"])
    assert "nosuch" in top["fixes"][0]["text"] and "postconf -M nosuch/unix   # empty: master.cf has no such service" in top["confirm_with"]
    assert all("/var/log/mail.log" not in c for c in top["confirm_with"])


# -- 6. locality


def test_a_dns_record_pointing_at_loopback_is_its_own_finding() -> None:
    said = dns_points_inward({"host": "mx.mxloop.test", "addr": "127.0.0.26", "port": 25}, "mxloop.test")
    assert said and "loopback" in said and "mx.mxloop.test" in said and "127.0.0.26" in said
    assert "private" in str(dns_points_inward({"host": "mx.b.test", "addr": "10.1.2.3"}, "b.test"))
    assert dns_points_inward({"host": "127.0.0.1", "addr": "127.0.0.1"}) is None  # a bracketed route, not DNS
    assert dns_points_inward({"host": "mx.b.test", "addr": "192.0.2.5"}) is None


def test_logs_and_queue_judge_e32_with_the_report_engines_rule() -> None:
    line = ("Nov 28 10:00:00 mx postfix/smtp[1]: AAAA01: to=<u@mxloop.test>, relay=none, delay=0.1, "
            "delays=0/0/0.1/0, dsn=4.4.1, status=deferred (connect to mx.mxloop.test[127.0.0.26]:25: Connection refused)")
    rep = _logs_report(line + "\n")
    assert {c["id"] for c in rep["causes"]} == {"E32"}  # the text alone
    cfg = _config()
    assert services_of(cfg) == {}  # read, and no local service configured
    relocalize(rep, cfg, "logs")
    assert {c["id"] for c in rep["causes"]} == {"E02"} and any("DNS points at loopback" in n for n in rep["locality"]["E02"])
    assert {k for row in rep["domains"] for k in row["causes"]} == {"E02"}
    # a configured local filter at that address stays E32
    rep = _logs_report(line.replace("mx.mxloop.test[127.0.0.26]:25", "127.0.0.1[127.0.0.1]:10024") + "\n")
    relocalize(rep, _config(content_filter="smtp-amavis:[127.0.0.1]:10024"), "logs")
    assert {c["id"] for c in rep["causes"]} == {"E32"}
    queue: dict[str, Any] = {"groups": [{"cause_id": "E32", "domain": "mxloop.test", "recipients": 1, "messages": ["AAAA01"],
                         "example_reason": "connect to mx.mxloop.test[127.0.0.26]:25: Connection refused"}]}  # fmt: skip
    relocalize(queue, cfg, "queue")
    assert [g["cause_id"] for g in queue["groups"]] == ["E02"]
    queue = {"groups": [{"cause_id": "E32", "domain": "x.test", "example_reason": "connect to 127.0.0.1[127.0.0.1]:25: x"}]}
    relocalize(queue, None, "queue")  # the configuration was not read: E32 stays, said so
    assert queue["groups"][0]["cause_id"] == "E32" and "address alone" in queue["locality"]["E32"][0]


def test_each_loopback_destination_is_judged_from_its_own_line_and_keeps_its_causes_title() -> None:
    """Two destinations behind one loopback address (the lab's shape): a refusal is E02, a server's own
    451 after DATA is E28, each with its own title; the relays table follows; the queue groups too."""
    refused = ("Nov 28 10:00:00 mx postfix/smtp[1]: AAAA01: to=<u@refused.test>, relay=none, delay=0.1, "
               "delays=0/0/0.1/0, dsn=4.4.1, status=deferred (connect to 127.0.0.1[127.0.0.1]:4001: Connection refused)")
    wrote = ("Nov 28 10:00:01 mx postfix/smtp[2]: BBBB02: to=<u@qwe.test>, relay=127.0.0.1[127.0.0.1]:4002, delay=0.1, "
             "delays=0/0/0/0.1, dsn=4.3.0, status=deferred (host 127.0.0.1[127.0.0.1] said: 451 4.3.0 Error: queue file "
             "write error (in reply to end of DATA command))")  # fmt: skip
    rep = _logs_report(refused + "\n" + wrote + "\n")
    relocalize(rep, _config(), "logs")
    got = {c["id"]: c for c in rep["causes"]}
    assert set(got) == {"E02", "E28"}, [(c["id"], c.get("top_domains")) for c in rep["causes"]]
    assert got["E02"]["title"].startswith("Connection refused") and "Local filter" not in got["E28"]["title"]
    assert [d for d, _ in got["E28"]["top_domains"]] == ["qwe.test"] and "queue file write error" in got["E28"]["example"]
    assert all("E32" not in (r.get("causes") or {}) for r in rep.get("relays", []))
    queue: dict[str, Any] = {"groups": [{"cause_id": "E32", "cause_title": "Local filter ... is down", "domain": "refused.test",
                                         "example_reason": "connect to 127.0.0.1[127.0.0.1]:4001: Connection refused"}]}  # fmt: skip
    relocalize(queue, _config(), "queue")
    assert queue["groups"][0]["cause_id"] == "E02" and queue["groups"][0]["cause_title"].startswith("Connection refused")


def test_dns_problems_of_a_domain_routed_without_dns_are_information() -> None:
    from diagnose.dnsreport import _not_for_delivery

    routing = {"transport": "smtp", "nexthop": "[127.0.0.1]:2525"}
    f = Finding("dns.mx", Severity.PROBLEM, "x.test does not exist (NXDOMAIN): Host not found", "E13")
    g = _not_for_delivery(f, "x.test", routing)
    assert g.severity == Severity.INFO and g.cause_id is None and "transport_maps routes x.test to smtp:[127.0.0.1]:2525" in g.summary
    spf = Finding("dns.spf", Severity.PROBLEM, "SPF temperror")
    assert _not_for_delivery(spf, "x.test", routing) is spf
