"""Postfix's smtp(8) client, one table: the phases of a delivery, the timeout parameter that
bounds each, Postfix's default for it, RFC 5321's least wait, and the words Postfix logs when
the phase times out ("... timed out while <doing>").

Every module that needs a phase name, a timeout parameter or its default reads it from here
(checks.smtp's probe, diagnose.delays' readings of delays=, the configuration's risk list,
pfdiag probe's --timeouts short), so that they cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

# Probe phase names (checks.smtp PhaseResult.name, JSON "phase").
CONNECT, BANNER, EHLO, HELO = "connect", "banner", "ehlo", "helo"
STARTTLS, TLS_HANDSHAKE, EHLO_TLS = "starttls", "tls-handshake", "ehlo-after-tls"
MAIL, RCPT, DATA, BODY, END_OF_DATA, RSET, QUIT = "mail", "rcpt", "data", "body", "end-of-data", "rset", "quit"

# smtp_connect_timeout = 0 means "the kernel's": about 127 s on Linux (tcp_syn_retries = 6).
OS_CONNECT_TIMEOUT = 127.0

# postconf -d (Postfix 3.x), seconds. RFC 5321 4.5.3.2 gives the least a client should wait
# for the replies that have one (None: the RFC names no minimum for that wait).
#               parameter                  default  RFC minimum
_TIMEOUTS: tuple[tuple[str, float, float | None], ...] = (
    ("smtp_connect_timeout", 30.0, None),
    ("smtp_helo_timeout", 300.0, 300.0),  # RFC: initial 220 greeting 5 min (EHLO: the MAIL-class wait)
    ("smtp_starttls_timeout", 300.0, None),
    ("smtp_mail_timeout", 300.0, 300.0),
    ("smtp_rcpt_timeout", 300.0, 300.0),
    ("smtp_data_init_timeout", 120.0, 120.0),
    ("smtp_data_xfer_timeout", 180.0, 180.0),
    ("smtp_data_done_timeout", 600.0, 600.0),
    ("smtp_rset_timeout", 20.0, None),
    ("smtp_quit_timeout", 300.0, None),
)  # fmt: skip

TIMEOUT_DEFAULTS: dict[str, float] = {name: default for name, default, _ in _TIMEOUTS}
RFC_MINIMUM: dict[str, float] = {name: least for name, _, least in _TIMEOUTS if least is not None}
TIMEOUT_NAMES: tuple[str, ...] = tuple(TIMEOUT_DEFAULTS)

# pfdiag probe --timeouts short: a quick look, not Postfix's values (a phase that needs longer
# is "would-time-out" only for that probe).
SHORT_TIMEOUTS: dict[str, float] = {
    "smtp_connect_timeout": 10.0, "smtp_helo_timeout": 30.0, "smtp_starttls_timeout": 30.0,
    "smtp_mail_timeout": 30.0, "smtp_rcpt_timeout": 30.0, "smtp_data_init_timeout": 30.0,
    "smtp_data_xfer_timeout": 30.0, "smtp_data_done_timeout": 60.0, "smtp_rset_timeout": 10.0,
    "smtp_quit_timeout": 10.0,
}  # fmt: skip


@dataclass(frozen=True)
class Phase:
    """One phase of Postfix's SMTP client: its timeout parameter, its words, its causes."""
    name: str  # the probe's phase name
    param: str  # Postfix's timeout parameter for it
    doing: str  # Postfix's own words: "... timed out while <doing>"
    expect: int  # reply class that lets the conversation go on (0: no reply expected)
    timeout_cause: str | None  # catalog cause when it times out or the connection is lost
    reply_cause: str | None  # catalog cause when the reply refuses (None: the reply text decides)

    @property
    def default(self) -> float:
        return TIMEOUT_DEFAULTS[self.param]


PHASES: tuple[Phase, ...] = (
    Phase(CONNECT, "smtp_connect_timeout", "connecting", 0, "E01", None),
    Phase(BANNER, "smtp_helo_timeout", "receiving the initial server greeting", 2, "E04", "E05"),
    Phase(EHLO, "smtp_helo_timeout", "performing the EHLO handshake", 2, "E06", "E05"),
    Phase(HELO, "smtp_helo_timeout", "performing the HELO handshake", 2, "E06", "E05"),
    Phase(STARTTLS, "smtp_starttls_timeout", "receiving the STARTTLS response", 2, "E06", "E17"),
    Phase(TLS_HANDSHAKE, "smtp_starttls_timeout", "performing the TLS handshake", 0, "E18", "E18"),
    Phase(EHLO_TLS, "smtp_helo_timeout", "performing the EHLO handshake", 2, "E06", "E05"),
    Phase(MAIL, "smtp_mail_timeout", "sending MAIL FROM", 2, "E07", None),
    Phase(RCPT, "smtp_rcpt_timeout", "sending RCPT TO", 2, "E07", None),
    Phase(DATA, "smtp_data_init_timeout", "sending DATA command", 3, "E07", None),
    Phase(BODY, "smtp_data_xfer_timeout", "sending message body", 0, "E08", "E08"),
    Phase(END_OF_DATA, "smtp_data_done_timeout", "sending end of data -- message may be sent more than once", 2,
          "E09", None),  # a lost connection here is E10 (checks.smtp)
    Phase(RSET, "smtp_rset_timeout", "sending RSET", 2, None, None),
    Phase(QUIT, "smtp_quit_timeout", "sending QUIT", 2, None, None),
)  # fmt: skip

PHASE: dict[str, Phase] = {p.name: p for p in PHASES}
