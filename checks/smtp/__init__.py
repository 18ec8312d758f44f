"""SMTP probe: one conversation with a mail server, timed phase by phase the way
Postfix's smtp(8) client lives it, and the end-of-data size ladder behind E09.

    probe_address()       connect, greeting, EHLO, STARTTLS, MAIL, RCPT, RSET, QUIT (never DATA)
    send_test_messages()  real test messages of growing size to an explicit recipient
    conclude_ladder()     PMTU-like size stall vs slow receiver vs inspecting firewall vs healthy
    to_findings()         ProbeResult / LadderVerdict -> Findings ("smtp.probe")

Each phase waits at most min(Postfix's timeout for that phase, what is left of the
budget) against ONE deadline per phase, so a peer trickling a byte a second cannot
stretch it. Every read is bounded (bytes kept per line, lines and bytes per reply), so a
hostile or broken peer costs at most its budget and a few hundred KiB, and ends as a
verdict, never as an exception. TLS runs over ssl.MemoryBIO, so it works over any
Connection a Target returns (a socket, or a paramiko direct-tcpip channel).

Verdicts per phase: ok; slow (answered after more than half of Postfix's timeout);
would-time-out (no complete answer within Postfix's timeout); undecided (the budget ran
out before Postfix's timeout did); failed (error reply, lost connection, refused, TLS).
A target that cannot open connections at all (a snapshot) raises ConnectRefused: that
is "we could not look", not a fact about the peer.
"""

from __future__ import annotations

from checks.postfix.defaults import (
    BANNER, BODY, CONNECT, DATA, EHLO, EHLO_TLS, END_OF_DATA, HELO, MAIL, QUIT, RCPT, RSET, STARTTLS, TLS_HANDSHAKE,
)  # fmt: skip
from checks.smtp.ladder import (
    DEFAULT_LADDER_SIZES, LadderStep, LadderVerdict, MessageResult, build_test_message, conclude_ladder,
    send_test_messages, to_findings,
)  # fmt: skip
from checks.smtp.session import (
    CHECK_ID, SMTPS_PORTS, PhaseResult, PhaseTimeouts, ProbeResult, Verdict, probe_address,
)  # fmt: skip
from checks.smtp.wire import Reply, TlsInfo, default_tls_context, is_masked_banner, parse_reply, peer_chain

__all__ = [
    "BANNER", "BODY", "CHECK_ID", "CONNECT", "DATA", "DEFAULT_LADDER_SIZES", "EHLO", "EHLO_TLS", "END_OF_DATA",
    "HELO", "MAIL", "QUIT", "RCPT", "RSET", "SMTPS_PORTS", "STARTTLS", "TLS_HANDSHAKE",
    "LadderStep", "LadderVerdict", "MessageResult", "PhaseResult", "PhaseTimeouts", "ProbeResult", "Reply",
    "TlsInfo", "Verdict", "build_test_message", "conclude_ladder", "default_tls_context", "is_masked_banner",
    "parse_reply", "peer_chain", "probe_address", "send_test_messages", "to_findings",
]  # fmt: skip
