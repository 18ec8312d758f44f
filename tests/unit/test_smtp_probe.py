"""The SMTP probe against real (mis)behaving peers on loopback, with short timeouts."""

from __future__ import annotations

import socket
import ssl
import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from checks.errors import InputError, UsageError
from checks.model import Severity
from checks.smtp import (
    LadderVerdict,
    PhaseTimeouts,
    ProbeResult,
    Verdict,
    build_test_message,
    conclude_ladder,
    is_masked_banner,
    parse_reply,
    probe_address,
    send_test_messages,
    to_findings,
)
from checks.targets import LocalTarget
from tests.peers import (
    Banner421Peer,
    BadUtf8Peer,
    CloseMidReplyPeer,
    EndlessReplyPeer,
    LongLinePeer,
    NoEsmtpPeer,
    PixPeer,
    RejectingPeer,
    SilentPeer,
    SizeStallPeer,
    SlowAfterDotPeer,
    SmtpPeer,
    SmtpsPeer,
    StartTlsGarbagePeer,
    TarpitPeer,
    TricklePeer,
    make_self_signed,
    server_tls_context,
)

HELO = "client.test"
RCPT = "probe@peer.test"
FAST = PhaseTimeouts.uniform(2.0)
KIB = 1024


@pytest.fixture(autouse=True)
def no_leftover_peer_threads():
    yield
    end = time.monotonic() + 2.0
    while (left := [t.name for t in threading.enumerate() if "Peer:" in t.name]) and time.monotonic() < end:
        time.sleep(0.02)
    assert not left, f"peer threads still running: {left}"


@pytest.fixture(scope="module")
def target() -> LocalTarget:
    return LocalTarget()


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def server_ctx(cert: tuple[Path, Path]) -> ssl.SSLContext:
    return server_tls_context(*cert)


def probe(target: LocalTarget, peer, **kw) -> ProbeResult:
    kw.setdefault("timeouts", FAST)
    kw.setdefault("helo_name", HELO)
    return probe_address(target, peer.host, peer.port, **kw)


def names(r: ProbeResult) -> list[str]:
    return [p.name for p in r.phases]


def verdicts(r: ProbeResult) -> dict[str, str]:
    return {p.name: p.verdict.value for p in r.phases}


def main_finding(r) -> tuple[Severity, str | None]:
    f = to_findings(r)[0]
    return f.severity, f.cause_id


def bounded(run):
    """Run, returning (result, seconds, peak traced bytes of the whole process)."""
    tracemalloc.start()
    t0 = time.monotonic()
    try:
        result = run()
        return result, time.monotonic() - t0, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# --- pure parts ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "lines, code, enhanced, malformed",
    [
        (["250 2.1.0 Ok"], 250, "2.1.0", False),
        (["250-peer.test", "250-PIPELINING", "250 8BITMIME"], 250, None, False),
        (["550-5.7.1 first", "550 5.7.1 blocked"], 550, "5.7.1", False),
        (["451 Try later"], 451, None, False),
        (["451 5.0.0 class mismatch"], 451, None, False),  # Postfix ignores a mismatching class
        (["250"], 250, None, False),
        (["hello", "250 ok"], 250, None, True),
        (["garbage"], 0, None, True),
    ],
)
def test_parse_reply(lines, code, enhanced, malformed):
    r = parse_reply(lines)
    assert (r.code, r.enhanced, r.malformed) == (code, enhanced, malformed)
    assert r.text == " ".join(lines)


@pytest.mark.parametrize(
    "greeting, masked",
    [
        ("220 ****************************0*****0****20 ****200**0****0*00", True),
        ("220 **************************************0******0*********20 ****200**0*********0*00", True),
        ("220 ****\n220 **0*", True),
        ("220-****\n220 ****", False),  # Postfix keeps codes: the "-" is not in its set
        ("220 mx.example.net ESMTP Postfix", False),
        ("220 *** 1 ***", False),
    ],
)
def test_masked_banner_rule(greeting, masked):
    assert is_masked_banner(greeting) is masked


def test_phase_timeouts_from_postconf():
    t = PhaseTimeouts.from_postconf(
        {"smtp_helo_timeout": "5m", "smtp_data_done_timeout": "$smtp_helo_timeout", "smtp_connect_timeout": "0",
         "smtp_rset_timeout": 7, "myhostname": "ignored"}
    )
    assert (t.smtp_helo_timeout, t.smtp_data_done_timeout, t.smtp_rset_timeout, t.smtp_mail_timeout) == (300, 300, 7, 300)
    assert t.for_phase("end-of-data") == ("smtp_data_done_timeout", 300.0)
    assert t.for_phase("connect")[1] > 60  # 0 = the kernel's own connect timeout
    assert PhaseTimeouts().for_phase("rset") == ("smtp_rset_timeout", 20.0)
    with pytest.raises(InputError):
        PhaseTimeouts.from_postconf({"smtp_helo_timeout": "soon"})


def test_test_message_shape():
    mid, subject, msg = build_test_message(4096, helo_name=HELO, mail_from="a@client.test", rcpt_to=RCPT)
    headers, body = msg.split(b"\r\n\r\n", 1)
    assert len(body) == 4096 and subject == "pfdiag end-of-data test 4096 bytes"
    assert mid.startswith("<pfdiag-") and mid.endswith(f"@{HELO}>")
    assert f"Message-ID: {mid}".encode() in headers and b"\r\nDate: " in b"\r\n" + headers
    lines = body.split(b"\r\n")[:-1]
    assert all(len(line) == 76 for line in lines[:-1]) and not any(line.startswith(b".") for line in lines)
    for size in (1, 2, 77, 78, 79, 300):
        assert len(build_test_message(size, helo_name=HELO, mail_from="", rcpt_to=RCPT)[2].split(b"\r\n\r\n", 1)[1]) == size


# --- probe_address against peers -----------------------------------------------------


def test_healthy_peer_every_phase_ok_and_no_data(target):
    with SmtpPeer() as peer:
        r = probe(target, peer, mail_from="a@client.test", rcpt_to=RCPT)
    assert names(r) == ["connect", "banner", "ehlo", "mail", "rcpt", "rset", "quit"]
    assert set(verdicts(r).values()) == {"ok"} and r.completed and r.error is None
    assert r.phase("mail").enhanced_code == "2.1.0" and r.phase("rcpt").reply_code == 250
    assert r.phase("rcpt").timeout_param == "smtp_rcpt_timeout" and r.phase("rset").timeout_value == 2.0
    assert "SIZE 10240000" in r.capabilities and r.esmtp and r.starttls_offered is False
    assert "DATA" not in peer.commands and peer.messages == {}
    findings = to_findings(r)
    assert [(f.severity, f.cause_id) for f in findings] == [(Severity.OK, None), (Severity.INFO, None)]


def test_no_rcpt_unless_asked(target):
    with SmtpPeer() as peer:
        r = probe(target, peer)
    assert "rcpt" not in names(r) and "RCPT" not in peer.commands and r.completed


def test_dead_peer_no_banner_would_time_out(target):
    with SilentPeer() as peer:
        r = probe(target, peer, timeouts=PhaseTimeouts.uniform(1.0))
    banner = r.phase("banner")
    assert banner.verdict is Verdict.WOULD_TIME_OUT and 0.95 <= banner.seconds < 1.5
    assert "timed out while receiving the initial server greeting" in r.error
    assert any("sent nothing at all" in n for n in r.notes)
    assert main_finding(r) == (Severity.PROBLEM, "E04")


def test_tarpit_greeting_is_slow_not_dead(target):
    with TarpitPeer(delay=1.2) as peer:
        r = probe(target, peer, rcpt_to=RCPT)
    assert verdicts(r)["banner"] == "slow" and 1.15 < r.phase("banner").seconds < 2.0
    assert verdicts(r)["rcpt"] == "ok" and r.completed
    assert any("greeting delay" in n for n in r.notes)
    assert main_finding(r) == (Severity.WARNING, "E04")


def test_budget_shorter_than_timeout_is_undecided(target):
    with SilentPeer() as peer:
        r = probe(target, peer, timeouts=PhaseTimeouts(), total_budget=1.0)
    assert r.phase("banner").verdict is Verdict.UNDECIDED and r.seconds < 1.5
    assert "Postfix would wait 300 s (smtp_helo_timeout)" in r.error


def test_trickled_banner_ends_at_the_phase_deadline(target):
    with TricklePeer(interval=1.0) as peer:
        r, seconds, peak = bounded(lambda: probe(target, peer, timeouts=PhaseTimeouts.uniform(1.5)))
    banner = r.phase("banner")
    assert banner.verdict is Verdict.WOULD_TIME_OUT and 1.45 < banner.seconds and seconds < 2.0
    assert "bytes of a reply arrived" in banner.detail and any("trickled" in n for n in r.notes)


def test_one_megabyte_reply_line_is_cut_with_bounded_memory(target):
    with LongLinePeer(line_bytes=1 << 20) as peer:
        r, seconds, peak = bounded(lambda: probe(target, peer))
    assert r.phase("banner").verdict is Verdict.OK and r.completed  # Postfix too skips the overlong rest
    assert len(r.banner) <= 4 * KIB + 8 and any("cut" in n for n in r.notes)
    assert peak < 768 * KIB and seconds < 3


def test_never_ending_line_hits_the_reply_byte_cap(target):
    with LongLinePeer(line_bytes=64 << 20, end_line=False) as peer:
        r, seconds, peak = bounded(lambda: probe(target, peer))
    banner = r.phase("banner")
    assert banner.verdict is Verdict.FAILED and "beyond" in banner.detail
    assert peak < 768 * KIB and seconds < 3


def test_endless_multiline_reply_is_cut_at_max_lines(target):
    with EndlessReplyPeer() as peer:
        r, seconds, peak = bounded(lambda: probe(target, peer))
    ehlo = r.phase("ehlo")
    assert ehlo.verdict is Verdict.FAILED and "200 lines" in ehlo.detail and ehlo.cause_id == "E06"
    assert peak < 768 * KIB and seconds < 3


def test_invalid_utf8_is_replaced_not_fatal(target):
    with BadUtf8Peer() as peer:
        r = probe(target, peer, rcpt_to=RCPT)
    assert r.completed and set(verdicts(r).values()) == {"ok"}
    assert "\ufffd" in r.banner and any("\ufffd" in c for c in r.capabilities)


@pytest.mark.parametrize(
    "phase, doing, cause",
    [("banner", "receiving the initial server greeting", "E04"), ("ehlo", "performing the EHLO handshake", "E06")],
)
def test_peer_closing_mid_reply(target, phase, doing, cause):
    with CloseMidReplyPeer(phase=phase) as peer:
        r = probe(target, peer)
    bad = r.phase(phase)
    assert bad.verdict is Verdict.FAILED and f"lost connection with 127.0.0.1:{peer.port} while {doing}" in bad.detail
    assert "bytes of a reply" in bad.detail and main_finding(r) == (Severity.PROBLEM, cause)


def test_ehlo_refused_falls_back_to_helo_like_postfix(target):
    with NoEsmtpPeer() as peer:
        r = probe(target, peer, rcpt_to=RCPT)
    assert names(r)[:4] == ["connect", "banner", "ehlo", "helo"] and set(verdicts(r).values()) == {"ok"}
    assert r.phase("ehlo").reply_code == 502 and not r.esmtp and r.starttls_offered is False and r.completed
    assert any("refuses EHLO" in n for n in r.notes)


@pytest.mark.parametrize(
    "verb, answer, code, enhanced",
    [("RCPT", "550 5.1.1 <probe@peer.test>: Recipient address rejected: User unknown", 550, "5.1.1"),
     ("RCPT", "450 4.2.0 <probe@peer.test>: Recipient address rejected: Greylisted", 450, "4.2.0"),
     ("MAIL", "451 4.3.0 Temporary lookup failure", 451, "4.3.0")],
)
def test_mail_and_rcpt_rejects_keep_the_reply_for_the_classifier(target, verb, answer, code, enhanced):
    with RejectingPeer(verb=verb, answer=answer) as peer:
        r = probe(target, peer, rcpt_to=RCPT)
    bad = r.phase(verb.lower())
    assert (bad.verdict, bad.reply_code, bad.enhanced_code, bad.text) == (Verdict.FAILED, code, enhanced, answer)
    assert names(r)[-1] == "quit" and "rset" not in names(r) and not r.completed
    assert main_finding(r) == (Severity.PROBLEM, None)  # which E2x: the classifier reads the text


def test_421_banner_is_refused_and_quit(target):
    with Banner421Peer() as peer:
        r = probe(target, peer)
    banner = r.phase("banner")
    assert (banner.verdict, banner.reply_code, banner.enhanced_code) == (Verdict.FAILED, 421, "4.3.2")
    assert names(r) == ["connect", "banner", "quit"] and r.phase("quit").reply_code == 221
    assert main_finding(r) == (Severity.PROBLEM, "E05")


def test_masked_pix_banner_makes_postfix_use_helo(target):
    with PixPeer() as peer:
        r = probe(target, peer, rcpt_to=RCPT)
    assert r.masked_banner and not r.esmtp and "ehlo" not in names(r) and r.starttls_offered is None
    assert verdicts(r)["helo"] == "ok" and r.completed and "EHLO" not in peer.commands
    assert (Severity.WARNING, "E09") in [(f.severity, f.cause_id) for f in to_findings(r)]


def test_connect_refused(target):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = probe_address(target, "127.0.0.1", port, helo_name=HELO, timeouts=FAST)
    assert names(r) == ["connect"] and r.phase("connect").verdict is Verdict.FAILED
    assert main_finding(r) == (Severity.PROBLEM, "E02")


def test_bad_arguments_are_usage_errors(target):
    with pytest.raises(UsageError):
        probe_address(target, "127.0.0.1", 25, helo_name="bad name\r\nRSET", timeouts=FAST)
    with pytest.raises(UsageError):
        probe_address(target, "127.0.0.1", 25, helo_name=HELO, rcpt_to="a>\r\nDATA", timeouts=FAST)


# --- TLS -------------------------------------------------------------------------------


def test_real_starttls_with_self_signed_certificate(target, server_ctx, cert):
    with SmtpPeer(tls_context=server_ctx) as peer:
        r = probe(target, peer, rcpt_to=RCPT)
    assert names(r) == ["connect", "banner", "ehlo", "starttls", "tls-handshake", "ehlo-after-tls",
                        "mail", "rcpt", "rset", "quit"]
    assert set(verdicts(r).values()) == {"ok"} and r.starttls_offered
    assert r.tls.protocol.startswith("TLSv1") and r.tls.cipher and r.tls.bits
    assert r.tls.peer_certificate == ssl.PEM_cert_to_DER_cert(cert[0].read_text())
    assert r.offers("PIPELINING") and not r.offers("STARTTLS")  # post-TLS capabilities


class _BareConnection:
    """Only the four Connection methods (what a paramiko channel offers): no fileno, no wrap_socket."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def sendall(self, data: bytes) -> None:
        self._sock.sendall(data)

    def recv(self, size: int) -> bytes:
        return self._sock.recv(size)

    def settimeout(self, timeout: float | None) -> None:
        self._sock.settimeout(timeout)

    def close(self) -> None:
        self._sock.close()


class _BareTarget(LocalTarget):
    where = "bare"

    def connect(self, host: str, port: int, timeout: float) -> _BareConnection:  # type: ignore[override]
        return _BareConnection(super().connect(host, port, timeout))  # type: ignore[arg-type]


def test_starttls_over_a_connection_that_is_not_a_socket(server_ctx):
    with SmtpPeer(tls_context=server_ctx) as peer:
        r = probe(_BareTarget(), peer, rcpt_to=RCPT, starttls=True)
    assert r.completed and r.tls is not None and r.where == "bare" and set(verdicts(r).values()) == {"ok"}


def test_starttls_required_but_not_offered(target):
    with SmtpPeer() as peer:
        r = probe(target, peer, starttls=True)
    assert r.phase("starttls").verdict is Verdict.FAILED and "TLS is required, but was not offered" in r.error
    assert main_finding(r) == (Severity.PROBLEM, "E16") and "mail" not in names(r)


def test_starttls_then_garbage_fails_the_handshake_cleanly(target):
    with StartTlsGarbagePeer() as peer:
        r, seconds, peak = bounded(lambda: probe(target, peer))
    hs = r.phase("tls-handshake")
    assert hs.verdict is Verdict.FAILED and "plaintext instead of TLS" in hs.detail
    assert main_finding(r) == (Severity.PROBLEM, "E18") and seconds < 2 and peak < 768 * KIB


def test_certificate_verification_failure(target, server_ctx):
    strict = ssl.create_default_context()  # verifies: a self-signed certificate must fail
    with SmtpPeer(tls_context=server_ctx) as peer:
        r = probe(target, peer, tls_context=strict)
    assert r.phase("tls-handshake").verdict is Verdict.FAILED and "verification failed" in r.error
    assert main_finding(r) == (Severity.PROBLEM, "E19")


def test_wrappermode_against_smtps_and_against_plain_smtp(target, server_ctx):
    with SmtpsPeer(tls_context=server_ctx) as peer:
        r = probe(target, peer, wrappermode=True, rcpt_to=RCPT)
    assert names(r)[:3] == ["connect", "tls-handshake", "banner"] and r.completed and r.tls is not None
    with SmtpPeer() as peer:
        r = probe(target, peer, wrappermode=True)
    assert r.phase("tls-handshake").verdict is Verdict.FAILED and "plaintext SMTP reply" in r.error


def test_port_465_without_wrappermode_says_so(target, server_ctx):
    try:
        peer = SmtpsPeer(tls_context=server_ctx, port=465).start()
    except OSError as exc:
        pytest.skip(f"cannot listen on 127.0.0.1:465 here: {exc}")
    try:
        r = probe(target, peer, timeouts=PhaseTimeouts.uniform(1.0))
    finally:
        peer.stop()
    assert r.phase("banner").verdict is Verdict.WOULD_TIME_OUT
    assert any("smtp_tls_wrappermode = yes" in n for n in r.notes)


# --- the end-of-data ladder ----------------------------------------------------------

LADDER = PhaseTimeouts.uniform(1.0)


def ladder(target, peer, **kw):
    kw.setdefault("timeouts", LADDER)
    kw.setdefault("budget_per_message", 5.0)
    return send_test_messages(target, peer.host, peer.port, helo_name=HELO, mail_from="pfdiag@client.test",
                              rcpt_to=RCPT, **kw)


def test_ladder_needs_an_explicit_recipient(target):
    for rcpt in (None, "", "  "):
        with pytest.raises(UsageError, match="explicit recipient"):
            send_test_messages(target, "127.0.0.1", 25, helo_name=HELO, mail_from="", rcpt_to=rcpt,  # type: ignore[arg-type]
                               budget_per_message=1.0)


def test_ladder_healthy_delivers_every_size(target):
    with SmtpPeer() as peer:
        results = ladder(target, peer)
    v = conclude_ladder(results)
    assert v.kind == "healthy" and [st.outcome for st in v.steps] == ["passed"] * 6
    assert set(peer.messages) == {m.message_id for m in results}
    for m in results:  # the peer counted headers + body
        assert 0 < peer.messages[m.message_id].size - m.size < KIB
    assert all(m.accepted for m in results) and peer.messages[results[0].message_id].subject == results[0].subject
    assert main_finding(v) == (Severity.OK, None)


def test_ladder_size_correlated_stall(target):
    with SizeStallPeer(limit=8 * KIB) as peer:
        v = conclude_ladder(ladder(target, peer, timeouts=PhaseTimeouts.uniform(0.6)))
    assert v.kind == "size-correlated-stall" and v.first_failing_size == 16384
    assert [st.outcome for st in v.steps][:3] == ["passed"] * 3
    assert all(st.outcome in ("stalled-eod", "stalled-body") for st in v.steps[3:])
    assert any("tracepath -n 127.0.0.1" in s for s in v.suggestions) and any("-M do -s 1472" in s for s in v.suggestions)
    assert main_finding(v) == (Severity.PROBLEM, "E09")


@pytest.mark.parametrize("timeout, delay, outcome", [(0.6, 1.5, "stalled-eod"), (1.0, 0.7, "slow")])
def test_ladder_slow_after_data(target, timeout, delay, outcome):
    with SlowAfterDotPeer(delay=delay) as peer:
        results = ladder(target, peer, sizes=(300, 4096, 65536), timeouts=PhaseTimeouts.uniform(timeout))
    v = conclude_ladder(results)
    assert v.kind == "slow-after-data" and {st.outcome for st in v.steps} == {outcome}
    assert all(m.probe.phase("body").verdict is Verdict.OK for m in results)
    assert main_finding(v) == (Severity.PROBLEM, "E09")


def test_ladder_connection_lost_after_dot_at_every_size(target):
    with CloseMidReplyPeer(phase="end-of-data") as peer:
        results = ladder(target, peer, sizes=(300, 65536))
    v = conclude_ladder(results)
    assert v.kind == "slow-after-data" and {st.outcome for st in v.steps} == {"lost-eod"}
    assert "lost connection" in results[0].probe.phase("end-of-data").detail
    assert main_finding(v) == (Severity.PROBLEM, "E10")


def test_ladder_behind_an_inspecting_firewall(target):
    with PixPeer() as peer:
        v = conclude_ladder(ladder(target, peer, sizes=(300, 4096), timeouts=PhaseTimeouts.uniform(0.5)))
    assert v.kind == "inspecting-firewall" and any("fixup" in s for s in v.suggestions)
    assert main_finding(v) == (Severity.PROBLEM, "E09")


def test_ladder_that_never_reaches_data_is_inconclusive(target):
    with Banner421Peer() as peer:
        v = conclude_ladder(ladder(target, peer, sizes=(300, 1536)))
    assert v.kind == "inconclusive" and "421" in v.explanation
    assert main_finding(v) == (Severity.INFO, None)


# --- many addresses at once ----------------------------------------------------------


def test_ten_addresses_concurrently_take_the_time_of_the_slowest(target):
    peers = [SmtpPeer(), SmtpPeer(), SmtpPeer(), TarpitPeer(delay=0.8), TarpitPeer(delay=0.6), SilentPeer(),
             SilentPeer(), Banner421Peer(), PixPeer(), BadUtf8Peer()]
    for p in peers:
        p.start()
    try:
        timeouts = PhaseTimeouts.uniform(1.5)
        t0 = time.monotonic()
        with ThreadPoolExecutor(max_workers=len(peers)) as pool:
            results = list(pool.map(lambda p: probe(target, p, timeouts=timeouts, rcpt_to=RCPT), peers))
        wall = time.monotonic() - t0
    finally:
        for p in peers:
            p.stop()
    slowest = max(r.seconds for r in results)
    assert 1.4 < slowest < 2.0 and wall < 1.5 * slowest
    assert [r.worst.value for r in results] == ["ok"] * 3 + ["slow", "ok", "would-time-out", "would-time-out",
                                                             "failed", "ok", "ok"]


def test_probe_set_runs_within_one_budget() -> None:
    """checks.probeset.run_probes: four peers, three greeting after 1 s, take about 1 s, not 3;
    results in job order; progress counts every finished probe."""
    from checks.probeset import ProbeJob, run_probes
    from tests.peers import SmtpPeer, TarpitPeer

    peers = [SmtpPeer(lifetime=60).start()] + [TarpitPeer(delay=1.0, lifetime=60).start() for _ in range(3)]
    seen: list[int] = []
    try:
        t0 = time.monotonic()
        out = run_probes(LocalTarget(), [ProbeJob("127.0.0.1", p.port, "probe.pfdiag.test", PhaseTimeouts(),
                                                  rcpt_to="x@peer.test") for p in peers],
                         budget=10, progress=lambda done, total: seen.append(done))  # fmt: skip
        took = time.monotonic() - t0
    finally:
        for p in peers:
            p.stop()
    assert took < 2.5, f"a set takes about as long as its slowest member, not the sum: {took:.2f} s"
    assert all(o.done for o in out) and [o.value.port for o in out] == [p.port for p in peers]
    banner = [o.value.phase("banner").seconds for o in out]
    assert banner[0] < 0.5 and all(0.9 < b < 2.0 for b in banner[1:]), banner
    assert sorted(seen) == [1, 2, 3, 4]


def test_probe_set_ends_at_its_budget_and_says_what_did_not_finish() -> None:
    """Silent peers and one worker: the first probe waits the budget out ('undecided': Postfix would
    wait 300 s), the others never start; the set returns at the budget, not at 3 x the budget, and
    says which did not finish. A probe's own cap is honoured under the budget."""
    from checks.probeset import ProbeJob, Unfinished, run_probes

    peers = [SilentPeer(lifetime=60).start() for _ in range(3)]
    try:
        t0 = time.monotonic()
        out = run_probes(LocalTarget(), [ProbeJob("127.0.0.1", p.port, HELO) for p in peers], budget=1.0, workers=1)
        took = time.monotonic() - t0
        capped = run_probes(LocalTarget(), [ProbeJob("127.0.0.1", peers[0].port, HELO, cap=0.3)], budget=5)
    finally:
        for p in peers:
            p.stop()
    assert took < 1.0 + 0.6, f"the set must return at its budget: {took:.2f} s"
    assert out[0].done and out[0].value.phase("banner").verdict is Verdict.UNDECIDED
    assert all(isinstance(o.missing, Unfinished) for o in out[1:])
    assert "not finished within the budget (1 s)" in out[1].missing.reason
    assert capped[0].value.seconds < 1.0 and capped[0].value.phase("banner").verdict is Verdict.UNDECIDED


def test_probe_set_reports_a_task_that_could_not_run_and_raises_a_bug() -> None:
    from checks.errors import PfdiagError
    from checks.probeset import Failed, run_within

    def no_address(deadline: float) -> int:
        raise PfdiagError("mx.example.net: no address")

    out = run_within(5, [("a", lambda d: 1), ("b", no_address)])
    assert out[0].value == 1 and isinstance(out[1].missing, Failed) and out[1].missing.error.endswith("no address")
    with pytest.raises(ZeroDivisionError):
        run_within(5, [("bug", lambda d: 1 // 0)])


def test_helo_name_is_the_transports_expanded_name() -> None:
    from checks.probeset import helo_name

    values = {"smtp_helo_name": "mx.example.net", "myhostname": "host.example.net", "mydomain": "example.net"}
    assert helo_name(values, {}) == "mx.example.net"
    over = {("slow", "unix", "smtp_helo_name"): "out.$mydomain"}
    assert helo_name(values, over, "slow") == "out.example.net" and helo_name(values, over, "smtp") == "mx.example.net"
    assert helo_name({"myhostname": "host.example.net"}, {}) == "host.example.net"
    assert helo_name({}, {}) is None  # never this machine's own name
    assert helo_name({"smtp_helo_name": "$unknown"}, {}) is None


def test_one_table_of_phases_and_defaults() -> None:
    """checks.postfix.defaults is the one table: the probe's timeouts, its phases and the delays=
    readings all take Postfix's defaults (postconf -d) from it."""
    from dataclasses import fields

    from checks.postfix.defaults import PHASE, SHORT_TIMEOUTS, TIMEOUT_DEFAULTS, TIMEOUT_NAMES
    from diagnose.delays import DEFAULT_TIMEOUTS

    assert tuple(f.name for f in fields(PhaseTimeouts)) == TIMEOUT_NAMES == tuple(SHORT_TIMEOUTS)
    assert PhaseTimeouts().smtp_data_done_timeout == 600.0 and PhaseTimeouts().smtp_rset_timeout == 20.0
    assert all(p.param in TIMEOUT_DEFAULTS for p in PHASE.values())
    assert PhaseTimeouts().for_phase("end-of-data") == ("smtp_data_done_timeout", 600.0)
    assert DEFAULT_TIMEOUTS == {k: v for k, v in TIMEOUT_DEFAULTS.items() if k not in ("smtp_rset_timeout", "smtp_quit_timeout")}


@pytest.mark.skipif(__import__("shutil").which("postconf") is None, reason="Postfix's postconf is not installed")
def test_diagnosis_probes_greet_with_the_transports_name_and_timeouts(tmp_path: Path) -> None:
    """smtp.nexthops through the one runner: a next hop routed through master.cf service 'slow'
    is greeted with that service's -o smtp_helo_name ($mydomain expanded by the real postconf) and
    timed against its -o smtp_helo_timeout; the plain smtp service keeps main.cf's name."""
    from checks.builtin import _timeouts, smtp_nexthops
    from checks.config import postconf_x, read_config
    from checks.registry import Context
    from diagnose.engine import IDENTITY
    from tests.peers import SmtpPeer

    conf = tmp_path / "postfix"
    conf.mkdir()
    (conf / "main.cf").write_text("compatibility_level = 3.6\nmydomain = example.net\nsmtp_helo_name = mx.$mydomain\n")
    (conf / "master.cf").write_text("smtp unix - - n - - smtp\n"
                                    "slow unix - - n - - smtp -o smtp_helo_name=out.$mydomain -o smtp_helo_timeout=7\n")

    class Recording(SmtpPeer):
        def on_ehlo(self, conn, arg, txn):  # noqa: ANN001, ANN202
            self.helos.append(arg)
            return super().on_ehlo(conn, arg, txn)

    peer = Recording(lifetime=60)
    peer.helos = []
    peer.start()
    try:
        target = LocalTarget()
        rep = read_config(target, str(conf))
        ctx = Context(target, options={
            "collected": {"config_report": rep, "identity": postconf_x(target, str(conf), *IDENTITY)},
            "probe_targets": [{"host": "127.0.0.1", "port": peer.port, "transport": "slow", "domain": "a.test"},
                              {"host": "127.0.0.1", "port": peer.port, "transport": "smtp", "domain": "b.test"}],
            "budget": 10})  # fmt: skip
        findings = smtp_nexthops(ctx)
    finally:
        peer.stop()
    assert sorted(peer.helos) == ["mx.example.net", "out.example.net"], peer.helos
    assert _timeouts(ctx, "slow").smtp_helo_timeout == 7 and _timeouts(ctx, "smtp").smtp_helo_timeout == 300
    assert {f.values.get("domain") for f in findings} == {"a.test", "b.test"}


def test_source_address_follows_the_transport() -> None:
    """A master.cf -o smtp_bind_address of the transport that delivers wins for it; the smtp
    service keeps main.cf's, and is told that the other service sends from elsewhere."""
    from checks.bind import bind_plan

    values, over = {"smtp_bind_address": "127.0.0.1"}, {("relay", "unix", "smtp_bind_address"): "127.0.0.9"}
    relay, _ = bind_plan(values, over, None, True, "relay")
    assert (relay.v4, relay.v4_from) == ("127.0.0.9", "master.cf relay -o smtp_bind_address")
    smtp, notes = bind_plan(values, over, None, True)
    assert smtp.v4 == "127.0.0.1" and any("service relay sets -o smtp_bind_address=127.0.0.9" in n for n in notes)
