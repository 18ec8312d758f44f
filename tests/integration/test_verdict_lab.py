"""End-to-end, on the real lab Postfix: the evidence under a verdict belongs to that verdict.

The lab gets, for this module only, three more destinations that go through their own master.cf
services (removed again at the end):

  eod-own.test    the end-of-data stall peer, delivered by a service 'eodown' with
                  '-o smtp_data_done_timeout=2s' (main.cf says 5s, as for eod-stall.test)
  softb.test      a peer that answers 550 at RCPT TO, delivered by a service 'softb' with
                  '-o soft_bounce=yes' (main.cf says no): the 550 is kept in the queue
  notransport.test  routed by transport_maps to 'nosuch:', a service master.cf does not have:
                  qmgr logs 'warning: connect to transport private/nosuch' and defers

and, in the DNS lab (a Postfix in its own network namespace that resolves through dnsmasq),
mail to mxloop.test, whose MX mx.mxloop.test resolves to 127.0.0.26, where nothing listens.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from diagnose.cli import main
from tests.lab.dns import DnsLab
from tests.lab.peers import EndOfDataStallPeer, Peer, Session
from tests.lab.postfix import PostfixLab
from tests.lab.scenarios import SENDER, PeerSet

pytestmark = pytest.mark.lab


class RejectAtRcptPeer(Peer):
    """Every recipient gets a permanent 550 (a bounce, unless soft_bounce keeps it)."""

    kind = "reject-rcpt"

    def on_rcpt(self, s: Session, rcpt: str) -> str:
        return f"550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown in virtual mailbox table"


SERVICES = {"eodown": {"smtp_data_done_timeout": "2s"}, "softb": {"soft_bounce": "yes"}}


@pytest.fixture(scope="module")
def window(postfix_lab: PostfixLab, smtp_peers: PeerSet) -> Iterator[dict[str, Any]]:
    stall = EndOfDataStallPeer("eod-own").start()
    reject = RejectAtRcptPeer("softb").start()
    try:
        for name, overrides in SERVICES.items():
            postfix_lab.postconf_edit("-M", f"{name}/unix={name} unix - - n - - smtp")
            for param, value in overrides.items():
                postfix_lab.postconf_edit("-P", f"{name}/unix/{param}={value}")
        postfix_lab.route("eod-own.test", nexthop=f"eodown:[127.0.0.1]:{stall.port}")
        postfix_lab.route("softb.test", nexthop=f"softb:[127.0.0.1]:{reject.port}")
        postfix_lab.route("notransport.test", nexthop=f"nosuch:[127.0.0.1]:{smtp_peers.port('healthy')}")
        postfix_lab.apply()
        mail = [(SENDER, [f"user@{d}"], {"subject": d}) for d in ("eod-own.test", "eod-stall.test", "softb.test",
                                                                   "notransport.test", "pix.test")]  # fmt: skip
        mail.append((SENDER, ["second@eod-own.test"], {"subject": "eod-own second"}))
        since = postfix_lab.fresh_window(mail, timeout=90)
        yield {"since": since}
    finally:
        for name in SERVICES:
            postfix_lab.postconf_edit("-MX", f"{name}/unix")
        for d in ("eod-own.test", "softb.test", "notransport.test"):
            postfix_lab.routes.pop(d, None)
        postfix_lab.apply()
        postfix_lab.clear_queue()
        stall.stop()
        reject.stop()


def run_json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, dict[str, Any]]:
    rc = main(argv)
    out, err = capsys.readouterr()
    assert out, err
    return rc, json.loads(out)


def report(capsys: pytest.CaptureFixture[str], lab: PostfixLab, since: str, *extra: str) -> dict[str, Any]:
    rc, doc = run_json(capsys, ["report", "-f", "json", "-c", str(lab.config_dir), "--log", str(lab.log_path),
                                "--since", since, "--budget", "40", *extra])  # fmt: skip
    assert rc in (4, 5, 0), doc["verdict"]
    return doc


def _d_values(lab: PostfixLab, domain: str) -> set[str]:
    """The d of delays=a/b/c/d on this domain's deferral lines, as logged."""
    out = set()
    for line in lab.log_lines():
        if f"@{domain}>" in line and "status=deferred" in line:
            m = re.search(r"delays=[\d.]+/[\d.]+/[\d.]+/([\d.]+)", line)
            if m:
                out.add(m.group(1))
    return out


def test_end_of_data_evidence_is_the_destinations_own(postfix_lab: PostfixLab, window: dict, capsys) -> None:
    own_d = _d_values(postfix_lab, "eod-own.test")
    other_d = _d_values(postfix_lab, "eod-stall.test")
    assert own_d and other_d and not own_d & other_d, (own_d, other_d)  # 2 s against main.cf's 5 s
    doc = report(capsys, postfix_lab, window["since"], "--domain", "eod-own.test")
    top = doc["causes"][0]
    assert top["id"] == "E09" and [d["domain"] for d in top["domains"]] == ["eod-own.test"]
    under = {h["id"]: h for h in top["underlying"]}
    assert top["underlying"][0]["id"] == "local-timeout", top["underlying"]
    said = " ".join(under["local-timeout"]["evidence"])
    # the transport's own timeout, named with the master.cf line that sets it, and this destination's d
    assert "master.cf eodown/unix -o smtp_data_done_timeout=2s" in said and "eodown transport" in said
    assert any(f"median {float(d):g} s" in said for d in own_d), said
    assert not any(f"median {float(d):g} s" in said for d in other_d), said
    assert "5s" not in said and "= 5" not in said
    # nothing of the other destinations: no PIX host of pix.test, every evidence line is eod-own's
    assert "firewall" not in under, under.get("firewall")
    logs = [e["excerpt"] for e in top["evidence"] if e["kind"] == "log"]
    assert logs and all("eod-own.test" in x for x in logs)
    excerpts = [e["excerpt"] for e in top["evidence"]]
    assert len(excerpts) == len(set(excerpts)), "each evidence line once"
    delays = [e["excerpt"] for e in top["evidence"] if e["kind"] == "delays"]
    assert delays and any("smtp_data_done_timeout (2 s)" in x for x in delays), delays
    # the fix undoes that transport's override, before any other
    assert top["fixes"][0]["kind"] in ("postconf", "master.cf") and "eodown/unix/smtp_data_done_timeout" in top["fixes"][0]["text"]
    step = next(st for st in doc["do_now"] if st.get("kind") == "postconf")
    assert step["command"] == "postconf -PX 'eodown/unix/smtp_data_done_timeout' && postfix reload", step
    assert any("smtp_data_done_timeout: master.cf eodown/unix -o smtp_data_done_timeout=2s" in w for w in top["why"])
    # and the other destination still reads main.cf's 5 s
    doc = report(capsys, postfix_lab, window["since"], "--domain", "eod-stall.test")
    stall = doc["causes"][0]
    said = " ".join(e for h in stall["underlying"] if h["id"] == "local-timeout" for e in h["evidence"])
    assert "main.cf smtp_data_done_timeout = 5s" in said and "eodown" not in said, said


def test_transport_soft_bounce_is_e33_in_the_queue(postfix_lab: PostfixLab, window: dict, capsys) -> None:
    assert postfix_lab.postconf("-h", "soft_bounce").strip() == "no"
    rc, doc = run_json(capsys, ["queue", "-f", "json", "-c", str(postfix_lab.config_dir)])
    rows = [(g["cause_id"], g["domain"]) for g in doc["groups"]]
    assert ("E33", "softb.test") in rows and ("E37", "softb.test") not in rows, rows
    # queue hold --cause E33 finds it (a dry run: nothing is changed)
    assert main(["queue", "hold", "--cause", "E33", "-c", str(postfix_lab.config_dir)]) == 0  # no terminal: a dry run
    out = capsys.readouterr().out
    assert "softb.test" in out or re.search(r"\b1 message", out), out
    # the report names the transport that sets it, not main.cf's soft_bounce (already no)
    doc = report(capsys, postfix_lab, window["since"], "--domain", "softb.test")
    top = doc["causes"][0]
    assert top["id"] == "E33", [(c["id"], c["domains"]) for c in doc["causes"]]
    fix = top["fixes"][0]["text"]
    assert "postconf -PX 'softb/unix/soft_bounce'" in fix and "postconf -e 'soft_bounce = no'" not in fix, top["fixes"]
    assert "soft_bounce = yes is set by the softb service's -o soft_bounce=yes in master.cf; main.cf says no" in top["why"]


def test_missing_transport_is_named(postfix_lab: PostfixLab, window: dict, capsys) -> None:
    doc = report(capsys, postfix_lab, window["since"], "--domain", "notransport.test")
    top = doc["causes"][0]
    assert top["id"] == "E31", [(c["id"], c["domains"]) for c in doc["causes"]]
    assert any("nosuch" in w for w in top["why"]), top["why"]
    assert "nosuch" in top["fixes"][0]["text"], top["fixes"]
    assert any("postconf -M nosuch/unix" in c for c in top["confirm_with"]), top["confirm_with"]
    assert not any(str(postfix_lab.log_path) not in c and "/var/log/mail.log" in c for c in top["confirm_with"])


@pytest.fixture(scope="module")
def mxloop(dns_lab: DnsLab) -> Iterator[dict[str, Any]]:
    pf = dns_lab.postfix
    pf.route("mxloop.test", nexthop="smtp:")  # an MX lookup, as for any domain on the Internet
    pf.apply()
    try:
        since = pf.fresh_window([(SENDER, ["user@mxloop.test"], {"subject": "mxloop"})], timeout=60)
        yield {"since": since}
    finally:
        pf.routes.pop("mxloop.test", None)
        pf.apply()
        pf.clear_queue()


def test_mx_resolving_to_loopback_is_not_a_local_filter(dns_lab: DnsLab, mxloop: dict, capsys) -> None:
    pf = dns_lab.postfix
    lines = [ln for ln in pf.log_lines() if "mxloop.test" in ln and "status=deferred" in ln]
    assert lines and "127.0.0.26" in lines[-1], lines
    doc = report(capsys, pf, mxloop["since"], "--domain", "mxloop.test")
    top = doc["causes"][0]
    assert top["id"] != "E32" and top["id"] == "E02", [(c["id"], c["why"]) for c in doc["causes"]]
    assert any("mx.mxloop.test" in w and "127.0.0.26" in w and "DNS" in w for w in top["why"]), top["why"]
    # pfdiag logs and pfdiag queue say the same (the report engine's rule, from the configuration)
    rc, logs = run_json(capsys, ["logs", "-f", "json", "-c", str(pf.config_dir), "--since", mxloop["since"],
                                 str(pf.log_path)])  # fmt: skip
    ids = {c["id"] for c in logs["causes"] for d, _ in c["top_domains"] if d == "mxloop.test"}
    assert ids == {"E02"}, logs["causes"]
    rc, q = run_json(capsys, ["queue", "-f", "json", "-c", str(pf.config_dir)])
    assert {g["cause_id"] for g in q["groups"] if g["domain"] == "mxloop.test"} == {"E02"}, q["groups"]
    assert all(g["cause_title"].startswith("Connection refused") for g in q["groups"] if g["domain"] == "mxloop.test")
    # each message's own recipients (and so its fate) follow the same rule as the groups
    mine = [r for m in q["messages"] for r in m["recipients"] if r["address"].endswith("@mxloop.test")]
    assert mine and {r["cause_id"] for r in mine} == {"E02"}, mine


def test_dns_of_a_domain_routed_by_transport_maps_is_no_failure(postfix_lab: PostfixLab, dns_server, capsys) -> None:  # noqa: ANN001
    # healthy.test is not in the lab zone (NXDOMAIN), but Postfix routes it by transport_maps to
    # smtp:[127.0.0.1]:PORT: no DNS is used to deliver it
    rc, doc = run_json(capsys, ["dns", "healthy.test", "-f", "json", "-c", str(postfix_lab.config_dir),
                                "--resolver", f"127.0.0.1:{dns_server.port}", "--no-compare"])  # fmt: skip
    assert rc == 0 and not doc["problem"], doc["findings"]
    assert doc["routing"]["transport"] == "smtp" and doc["routing"]["nexthop"].startswith("[127.0.0.1]:")
    said = [f["summary"] for f in doc["findings"] if f["check"] == "dns.route"]
    assert said and "routed by transport_maps to smtp:[127.0.0.1]:" in said[0] and "DNS is not used" in said[0]
    mx = [f for f in doc["findings"] if f["check"] == "dns.mx"]
    assert mx and all(f["severity"] == "info" and "not used for delivery here" in f["summary"] for f in mx), mx
    # without that route (a domain of the zone that Postfix would look up in DNS) a failure stays one
    rc, doc = run_json(capsys, ["dns", "nxdomain.test", "-f", "json", "-c", str(postfix_lab.config_dir),
                                "--resolver", f"127.0.0.1:{dns_server.port}", "--no-compare"])  # fmt: skip
    assert rc == 4 and doc["problem"] and doc["routing"] is None


def test_the_whole_report_reads_each_end_of_data_destination_on_its_own(postfix_lab: PostfixLab, window: dict,
                                                                       capsys) -> None:  # fmt: skip
    doc = report(capsys, postfix_lab, window["since"])
    eod = next(c for c in doc["causes"] if c["id"] == "E09")
    per = {d["domain"]: d for d in eod["destinations"]}
    assert {"eod-own.test", "eod-stall.test"} <= set(per), per
    own, stall = per["eod-own.test"], per["eod-stall.test"]
    assert (own["transport"], own["smtp_data_done_timeout"], own["d_median"]) == ("eodown", 2, 2)
    assert own["timeout_set_by"] == "master.cf eodown/unix -o smtp_data_done_timeout=2s"
    assert (stall["transport"], stall["smtp_data_done_timeout"], stall["d_median"]) == ("smtp", 5, 5)
    assert own["underlying"][0]["id"] == stall["underlying"][0]["id"] == "local-timeout"
    assert "eodown" in " ".join(own["underlying"][0]["evidence"]) and "eodown" not in " ".join(stall["underlying"][0]["evidence"])
    assert own["next_hop"]["port"] != stall["next_hop"]["port"]
    for h in eod["underlying"]:
        assert len(h["evidence"]) == len(set(h["evidence"])), h
