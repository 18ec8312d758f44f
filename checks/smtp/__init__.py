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

from typing import TYPE_CHECKING, Any

# Every name below loads its module on first use (PEP 562), so that importing checks.smtp (for
# DEFAULT_LADDER_SIZES in `pfdiag probe --help`, say) costs nothing and a plain probe never loads
# the ladder.
DEFAULT_LADDER_SIZES = (300, 1536, 4096, 16384, 65536, 1048576)

_WHERE = {
    "checks.postfix.defaults": ("BANNER", "BODY", "CONNECT", "DATA", "EHLO", "EHLO_TLS", "END_OF_DATA", "HELO",
                                "MAIL", "QUIT", "RCPT", "RSET", "STARTTLS", "TLS_HANDSHAKE"),
    "checks.smtp.ladder": ("LadderStep", "LadderVerdict", "MessageResult", "build_test_message", "conclude_ladder",
                           "send_test_messages"),
    "checks.smtp.session": ("CHECK_ID", "SMTPS_PORTS", "PhaseResult", "PhaseTimeouts", "ProbeResult", "Verdict",
                            "probe_address", "to_findings"),
    "checks.smtp.wire": ("Reply", "TlsInfo", "default_tls_context", "is_masked_banner", "parse_reply", "peer_chain"),
}  # fmt: skip
_MODULE_OF = {name: module for module, names in _WHERE.items() for name in names}

if TYPE_CHECKING:
    from checks.postfix.defaults import (
        BANNER, BODY, CONNECT, DATA, EHLO, EHLO_TLS, END_OF_DATA, HELO, MAIL, QUIT, RCPT, RSET, STARTTLS,
        TLS_HANDSHAKE,
    )  # fmt: skip
    from checks.smtp.ladder import (
        LadderStep, LadderVerdict, MessageResult, build_test_message, conclude_ladder, send_test_messages,
    )  # fmt: skip
    from checks.smtp.session import (
        CHECK_ID, SMTPS_PORTS, PhaseResult, PhaseTimeouts, ProbeResult, Verdict, probe_address, to_findings,
    )  # fmt: skip
    from checks.smtp.wire import Reply, TlsInfo, default_tls_context, is_masked_banner, parse_reply, peer_chain


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'checks.smtp' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once: later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = ["DEFAULT_LADDER_SIZES", *_MODULE_OF]
