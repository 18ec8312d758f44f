"""pfdiag probe: the command line against loopback peers (tests/peers.py), fast settings."""

from __future__ import annotations

import json

import pytest

from diagnose.cli import main
from checks.nexthop import parse_destination
from checks.errors import UsageError
from tests.peers import Banner421Peer, PixPeer, SilentPeer, SizeStallPeer, SlowAfterDotPeer, SmtpPeer

FAST = ["--timeouts", "short", "--helo", "client.test"]


def dest(peer) -> str:
    return f"[{peer.host}]:{peer.port}"


def run_json(capsys, *argv: str) -> tuple[int, dict]:
    code = main(["probe", *argv, "-f", "json"])
    out = capsys.readouterr().out
    return code, json.loads(out)


def causes(doc: dict) -> set[str]:
    return {f["cause_id"] for f in doc["findings"] if f["cause_id"]}


def test_healthy_peer(capsys):
    with SmtpPeer() as peer:
        code, doc = run_json(capsys, dest(peer), *FAST, "--budget", "5", "--rcpt", "someone@peer.test")
    assert code == 0 and doc["schema"] == "pfdiag.probe/1"
    phases = [p["phase"] for p in doc["probe"]["phases"]]
    assert phases[:5] == ["connect", "banner", "ehlo", "mail", "rcpt"]
    assert {p["verdict"] for p in doc["probe"]["phases"]} == {"ok"}
    assert doc["probe"]["starttls_offered"] is False and doc["ladder"] is None
    assert doc["probe"]["phases"][1]["timeout_param"] == "smtp_helo_timeout"
    assert not peer.messages  # nothing sent by default


def test_healthy_peer_text_output(capsys):
    with SmtpPeer() as peer:
        code = main(["probe", dest(peer), *FAST, "--budget", "5"])
    out = capsys.readouterr().out
    assert code == 0
    for word in ("banner: 220", "STARTTLS offered: no", "smtp_connect_timeout=10", "Findings:", "timeouts: short"):
        assert word in out


def test_silent_peer_banner_undecided(capsys):
    with SilentPeer() as peer:
        code, doc = run_json(capsys, dest(peer), *FAST, "--budget", "0.6")
    banner = doc["probe"]["phases"][1]
    assert code == 4 and banner["phase"] == "banner"
    assert banner["verdict"] in ("undecided", "would-time-out") and banner["cause_id"] == "E04"
    assert "E04" in causes(doc)
    assert any(f["cause_title"] for f in doc["findings"] if f["cause_id"] == "E04")


def test_421_peer(capsys):
    with Banner421Peer() as peer:
        code, doc = run_json(capsys, dest(peer), *FAST, "--budget", "5")
    assert code == 4 and "E05" in causes(doc)
    assert doc["probe"]["phases"][1]["reply_code"] == 421


def test_pix_masked_banner_note(capsys):
    with PixPeer() as peer:
        code = main(["probe", dest(peer), *FAST, "--budget", "5"])
    out = capsys.readouterr().out
    assert code == 4
    assert "masked banner: SMTP-inspecting firewall" in out and "E09" in out


def test_slow_after_dot_ladder(capsys):
    with SlowAfterDotPeer(delay=3.0) as peer:
        code, doc = run_json(capsys, dest(peer), *FAST, "--budget", "2", "--send-test", "--to", "x@y.test",
                             "--yes", "--sizes", "300,4096")  # fmt: skip
    lad = doc["ladder"]
    assert code == 4 and lad["kind"] == "slow-after-data" and lad["cause_id"] == "E09"
    assert [st["size"] for st in lad["steps"]] == [300, 4096]
    assert all(st["data_reply"] == 354 for st in lad["steps"])
    assert len(lad["message_ids"]) == 2 and lad["suggestions"]
    # the test messages carry the name the probe greeted with, never this machine's
    assert doc["helo"] == "client.test" and all(m.endswith("@client.test>") for m in lad["message_ids"])


def test_size_stall_ladder(capsys):
    with SizeStallPeer(limit=8192) as peer:
        code = main(["probe", dest(peer), *FAST, "--budget", "2", "--send-test", "--to", "x@y.test",
                     "--yes", "--sizes", "300,16384"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 4
    assert "conclusion: size-correlated-stall" in out and "tracepath" in out
    assert "Message-IDs sent" in out and "<pfdiag-" in out


def test_send_test_without_to_is_usage_error(capsys):
    assert main(["probe", "[127.0.0.1]:9", "--send-test", "--yes"]) == 2
    assert "--to" in capsys.readouterr().err


def test_send_test_without_yes_and_no_terminal_is_refused(capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin.isatty", lambda: False, raising=False)
    assert main(["probe", "[127.0.0.1]:9", "--send-test", "--to", "x@y.test"]) == 2
    assert "--yes" in capsys.readouterr().err


@pytest.mark.parametrize("junk", ["", "[127.0.0.1", "[127.0.0.1]:99999", "host:port", "bad host", "a..b",
                                  "-x.example.net", "[1.2.3]:25", "<x>", "[127.0.0.1]x"])
def test_junk_destination(capsys, junk):
    assert main(["probe", junk]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pfdiag: ") and err.count("\n") == 1


def test_reserved_name_is_not_resolved(capsys):
    assert main(["probe", "mx.peer.test", *FAST]) == 1
    assert ".test names never resolve" in capsys.readouterr().err


def test_demo_target_needs_live(capsys):
    assert main(["probe", "[127.0.0.1]:25", "--demo"]) == 1
    err = capsys.readouterr().err
    assert "needs a live target" in err and err.count("\n") == 1


@pytest.mark.parametrize("text, host, port, bracketed", [
    ("[127.0.0.1]:2525", "127.0.0.1", 2525, True),
    ("[mx.example.net]", "mx.example.net", 25, True),
    ("mx.example.net:587", "mx.example.net", 587, False),
    ("example.net", "example.net", 25, False),
    ("[ipv6:::1]:25", "::1", 25, True),
    ("2001:db8::1", "2001:db8::1", 25, False),
])  # fmt: skip
def test_parse_destination(text, host, port, bracketed):
    d = parse_destination(text)
    assert (d.host, d.port, d.bracketed) == (host, port, bracketed)


def test_parse_destination_rejects_bad_port():
    with pytest.raises(UsageError):
        parse_destination("[127.0.0.1]:0")


def test_a_set_of_destinations_takes_as_long_as_its_slowest(capsys):
    import time

    from tests.peers import TarpitPeer

    peers = [TarpitPeer(delay=1.5).start() for _ in range(4)] + [SmtpPeer().start()]
    try:
        t0 = time.monotonic()
        rc = main(["probe", *[f"[127.0.0.1]:{p.port}" for p in peers], *FAST, "--format", "json"])
        wall = time.monotonic() - t0
        doc = json.loads(capsys.readouterr().out)
    finally:
        for p in peers:
            p.stop()
    assert doc["schema"] == "pfdiag.probe-set/1" and len(doc["probes"]) == 5
    assert wall < 1.5 * 2.2, f"5 probes, the slowest greets after 1.5 s, all took {wall:.1f} s"
    greet = [next(ph for ph in d["probe"]["phases"] if ph["phase"] == "banner")["seconds"] for d in doc["probes"]]
    assert sum(1 for g in greet if g >= 1.4) == 4
    assert rc in (0, 4)


def test_a_set_rejects_send_test(capsys):
    assert main(["probe", "[127.0.0.1]:1", "[127.0.0.1]:2", "--send-test", "--to", "a@b.test", "--yes"]) == 2


def test_set_shows_progress_on_a_terminal_stderr_only() -> None:
    """stderr a terminal (a pty): a progress line there; stdout (JSON) stays clean."""
    import os
    import pty
    import subprocess
    import sys

    peers = [SmtpPeer(lifetime=60).start() for _ in range(2)]
    master, slave = pty.openpty()
    try:
        out = subprocess.run([sys.executable, "-m", "diagnose.cli", "probe", "--format", "json", "--budget", "10", *FAST,
                              *(f"[127.0.0.1]:{p.port}" for p in peers)], stdout=subprocess.PIPE, stderr=slave,
                             timeout=60, check=False)  # fmt: skip
        os.close(slave)
        err = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            err += chunk
    finally:
        os.close(master)
        for p in peers:
            p.stop()
    doc = json.loads(out.stdout)
    assert doc["schema"] == "pfdiag.probe-set/1" and len(doc["probes"]) == 2
    assert b"probing" in err and b"destinations" in err


def test_bind_address_is_named_when_postfix_sets_one(tmp_path, capsys) -> None:  # noqa: ANN001
    """smtp_bind_address from a real config (postconf -c): the probe says it did not send from it."""
    conf = tmp_path / "postfix"
    conf.mkdir()
    (conf / "main.cf").write_text("compatibility_level = 3.6\nsmtp_bind_address = 127.0.0.1\nsmtp_helo_name = out.pfdiag.test\n")
    (conf / "master.cf").write_text("smtp unix - - n - - smtp\n")
    peer = SmtpPeer(lifetime=60).start()
    try:
        main(["probe", f"[127.0.0.1]:{peer.port}", "-c", str(conf), "--format", "json", "--budget", "10"])
        doc = json.loads(capsys.readouterr().out)
    finally:
        peer.stop()
    assert doc["helo"] == "out.pfdiag.test", (doc["notes"], doc["timeouts_source"])
    assert any(n.startswith("smtp_bind_address = 127.0.0.1: Postfix sends from that address") for n in doc["notes"])


def test_an_ip_version_that_fails_everywhere_is_a_finding() -> None:
    from diagnose.vantage import family_difference

    ok4 = {"address": "192.0.2.10", "port": 25, "ok": True, "phases": [], "error": None, "cause_id": None}
    dead6 = {"address": "2001:db8::10", "port": 25, "ok": False, "phases": [],
             "error": "connect to 2001:db8::10:25: Network is unreachable", "cause_id": "E03"}
    f = family_difference([dead6, ok4])
    assert f is not None and f["cause_id"] == "E03" and f["severity"] == "problem"
    assert "every IPv6 address fails" in f["summary"] and "smtp_address_preference = ipv4" in f["summary"]
    # both families work, both fail, or only one family: nothing to compare
    assert family_difference([ok4, {**dead6, "ok": True, "error": None}]) is None
    assert family_difference([{**ok4, "ok": False, "error": "timed out"}, dead6]) is None
    assert family_difference([ok4, {**ok4, "address": "192.0.2.11", "ok": False}]) is None
    timed = family_difference([ok4, {**dead6, "error": "connect to 2001:db8::10:25: Connection timed out",
                                     "cause_id": "E01"}])
    assert timed is not None and timed["cause_id"] == "E01"


def test_a_set_ends_at_its_budget_and_names_what_did_not_finish(capsys) -> None:
    """17 silent servers, 16 at once: the first 16 wait out the 1 s budget ('undecided'), the 17th
    never starts; the set returns at the budget and says so for that destination."""
    import time

    from tests.peers import SilentPeer

    peers = [SilentPeer(lifetime=60).start() for _ in range(17)]
    try:
        t0 = time.monotonic()
        rc, doc = run_json(capsys, *[dest(p) for p in peers], *FAST, "--budget", "1")
        wall = time.monotonic() - t0
    finally:
        for p in peers:
            p.stop()
    assert rc == 4 and wall < 2.5, f"the set must end at its budget: {wall:.2f} s"
    banners = [d["probe"]["phases"][1]["verdict"] for d in doc["probes"][:16]]
    assert banners == ["undecided"] * 16
    last = doc["probes"][16]
    assert last["destination"] == dest(peers[16]) and last["problem"] is True
    assert last["error"] == "not finished within the budget (1 s); never started"
