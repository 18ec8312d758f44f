"""The lab's SMTP peers on their own, driven by Python's smtplib: they misbehave exactly as
documented, remember bounded amounts, and stop promptly even while stalling a client."""

from __future__ import annotations

import signal
import smtplib
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.lab import peers

REPO = Path(__file__).resolve().parents[2]
MSG = b"From: a@sender.test\r\nTo: b@x.test\r\nMessage-ID: <m1@lab>\r\nSubject: t\r\n\r\n.leading dot\r\nbody\r\n"


def test_healthy_peer_records_the_message() -> None:
    with peers.HealthyPeer("h") as p, smtplib.SMTP("127.0.0.1", p.port, timeout=5) as c:
        c.sendmail("a@sender.test", ["b@x.test", "c@x.test"], MSG)
    (m,) = p.messages
    assert (m.mail_from, m.rcpt_to, m.message_id) == ("a@sender.test", ("b@x.test", "c@x.test"), "<m1@lab>")
    assert b"\r\n.leading dot\r\n" in m.head  # dot-unstuffed
    assert p.accepted["<m1@lab>"] == 1
    assert "EHLO" in " ".join(p.lines("C")).upper()


def test_refused_peer_refuses() -> None:
    with peers.RefusedPeer() as p, pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", p.port), timeout=2)


def test_banner_421() -> None:
    with peers.Banner421Peer() as p, pytest.raises(smtplib.SMTPConnectError) as exc:
        smtplib.SMTP("127.0.0.1", p.port, timeout=5)
    assert exc.value.smtp_code == 421


@pytest.mark.parametrize(
    ("cls", "code", "text"),
    [
        (peers.GreylistPeer, 451, b"4.7.1 <full@x.test>: Recipient address rejected: Greylisted"),
        (peers.MailboxFullPeer, 452, b"4.2.2 <full@x.test>: Mailbox full"),
    ],
)
def test_rcpt_rejects(cls: type[peers.Peer], code: int, text: bytes) -> None:
    with cls() as p, smtplib.SMTP("127.0.0.1", p.port, timeout=5) as c:
        c.ehlo()
        c.mail("a@sender.test")
        got = c.rcpt("full@x.test")
    assert got[0] == code and got[1].startswith(text)


def test_queue_write_error_after_the_dot() -> None:
    with (
        peers.QueueWriteErrorPeer() as p,
        smtplib.SMTP("127.0.0.1", p.port, timeout=5) as c,
        pytest.raises(smtplib.SMTPDataError) as exc,
    ):
        c.sendmail("a@sender.test", ["b@x.test"], MSG)
    assert exc.value.smtp_code == 451
    assert len(p.messages) == 1 and p.accepted["<m1@lab>"] == 0  # read, not accepted


def test_no_banner_and_stop_ends_the_stall() -> None:
    p = peers.NoBannerPeer().start()
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
        s.settimeout(0.5)
        with pytest.raises(TimeoutError):
            s.recv(100)
        t0 = time.monotonic()
        p.stop()
        assert time.monotonic() - t0 < 2
        s.settimeout(2)
        assert s.recv(100) == b""  # the peer closed the stalled session on stop


def test_end_of_data_stall_keeps_the_message_and_never_answers() -> None:
    with peers.EndOfDataStallPeer() as p, smtplib.SMTP("127.0.0.1", p.port, timeout=0.5) as c:
        with pytest.raises((TimeoutError, smtplib.SMTPServerDisconnected)):
            c.sendmail("a@sender.test", ["b@x.test"], MSG)
        assert p.message_ids()["<m1@lab>"] == 1


def test_pix_stalls_once_per_message_id() -> None:
    with peers.PixPeer() as p:
        with smtplib.SMTP("127.0.0.1", p.port, timeout=0.5) as c:
            assert c.helo()[0] == 250
            with pytest.raises((TimeoutError, smtplib.SMTPServerDisconnected)):
                c.sendmail("a@sender.test", ["b@x.test"], MSG)
        with smtplib.SMTP("127.0.0.1", p.port, timeout=5) as c:
            c.sendmail("a@sender.test", ["b@x.test"], MSG)
        assert p.message_ids()["<m1@lab>"] == 2 and p.accepted["<m1@lab>"] == 1


def test_memory_is_bounded() -> None:
    with peers.HealthyPeer(message_limit=3, log_limit=10) as p, smtplib.SMTP("127.0.0.1", p.port, timeout=5) as c:
        for n in range(6):
            c.sendmail("a@sender.test", ["b@x.test"], MSG.replace(b"<m1@lab>", f"<m{n}@lab>".encode()))
        c.sendmail("a@sender.test", ["b@x.test"], b"Subject: big\r\n\r\n" + b"y" * 100_000 + b"\r\n")
    assert len(p.messages) == 3 and len(p.log) == 10
    assert p.messages[-1].size > 100_000 and len(p.messages[-1].head) == peers.KEEP_HEAD


def test_self_signed_peer_speaks_real_tls() -> None:
    import ssl

    with peers.SelfSignedTlsPeer("tls") as p, smtplib.SMTP("127.0.0.1", p.port, timeout=5) as c:
        c.ehlo()
        assert c.has_extn("starttls")
        with pytest.raises(ssl.SSLCertVerificationError, match="self.signed"):
            c.starttls(context=ssl.create_default_context())


def test_script_mode_serves_until_sigterm() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "tests.lab.peers", "greylist"], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline().split()[1])
        with smtplib.SMTP("127.0.0.1", port, timeout=5) as c:
            c.ehlo()
            c.mail("a@sender.test")
            assert c.rcpt("u@greylist.test")[0] == 451
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
