"""The probe's round trips, as Postfix's smtp(8) spends them on an address probe (smtp_proto.c):
with a server that offers PIPELINING, MAIL, RCPT, RSET and QUIT go out in one write (the sender runs
ahead of the replies), each reply is still judged on its own, and the QUIT reply is never waited
for after a normal end (smtp_skip_quit_response = yes). Real sockets, loopback peers."""

from __future__ import annotations

import select
import time

from checks.smtp import PhaseTimeouts, Verdict, probe_address
from checks.targets.local import LocalTarget
from tests.peers import SmtpPeer

RCPT = "someone@peer.test"
PHASES = ["connect", "banner", "ehlo", "mail", "rcpt", "rset", "quit"]


class AheadPeer(SmtpPeer):
    """Notes, when MAIL arrives, whether RCPT, RSET and QUIT had already been sent (waits up to
    `wait` s for them before answering MAIL); optionally without PIPELINING; optionally slow on RCPT."""

    def __init__(self, *, offer: bool = True, wait: float = 0.5, rcpt_delay: float = 0.0, **kw: object) -> None:
        super().__init__(**kw)
        self.offer, self.wait, self.rcpt_delay = offer, wait, rcpt_delay
        self.ahead: list[bool] = []

    def ehlo_lines(self, conn):  # type: ignore[no-untyped-def]
        lines = super().ehlo_lines(conn)
        return lines if self.offer else [line for line in lines if line != "PIPELINING"]

    def on_mail(self, conn, arg, txn):  # type: ignore[no-untyped-def]
        end = time.monotonic() + self.wait
        while not all(v in conn.buf for v in (b"RCPT", b"RSET", b"QUIT")) and time.monotonic() < end:
            if select.select([conn.sock], [], [], 0.02)[0]:
                data = conn.recv()
                if not data:
                    break
                conn.buf += data
        self.ahead.append(all(v in conn.buf for v in (b"RCPT", b"RSET", b"QUIT")))
        return super().on_mail(conn, arg, txn)

    def on_rcpt(self, conn, arg, txn):  # type: ignore[no-untyped-def]
        conn.sleep(self.rcpt_delay)
        return super().on_rcpt(conn, arg, txn)


def probe(peer: SmtpPeer):  # type: ignore[no-untyped-def]
    return probe_address(LocalTarget(), peer.host, peer.port, helo_name="client.test", rcpt_to=RCPT,
                         timeouts=PhaseTimeouts(), total_budget=10)  # fmt: skip


def test_a_pipelining_server_gets_mail_to_quit_in_one_write():
    with AheadPeer() as peer:
        r = probe(peer)
    assert peer.ahead == [True], "MAIL was answered before RCPT, RSET and QUIT had been sent"
    assert [p.name for p in r.phases] == PHASES and r.completed
    assert {p.verdict for p in r.phases} == {Verdict.OK}
    assert [p.reply_code for p in r.phases[3:6]] == [250, 250, 250]  # each reply read and judged
    quit_ = r.phase("quit")
    assert quit_.reply_code is None and "smtp_skip_quit_response" in quit_.detail


def test_without_pipelining_one_command_at_a_time_and_still_no_quit_wait():
    with AheadPeer(offer=False, wait=0.3) as peer:
        r = probe(peer)
    assert peer.ahead == [False], "a server without PIPELINING got commands ahead of its replies"
    assert [p.name for p in r.phases] == PHASES and r.completed
    quit_ = r.phase("quit")
    assert quit_.reply_code is None and "not awaited" in quit_.detail


def test_pipelined_replies_are_each_timed_from_the_one_before():
    """A slow RCPT reply shows in the rcpt phase, not in mail: Postfix times each reply on its own."""
    with AheadPeer(rcpt_delay=0.4) as peer:
        r = probe(peer)
    assert peer.ahead == [True]
    assert r.phase("mail").seconds < 0.2 and 0.35 <= r.phase("rcpt").seconds < 2.0
    assert r.phase("rset").seconds < 0.2
