"""The message part of Postfix log lines -> typed events. Pure; never raises.

Delivery status (src/global/log_adhoc.c), every field after to= optional in practice:
    to=<R>[, orig_to=<O>], relay=H[A]:P[, conn_use=N], delay=D, delays=a/b/c/d[, tls=F], dsn=x.y.z, status=S (REASON)
End of life (qmgr):  from=<S>, status=expired, returned to sender   (also force-expired)
The reason may itself hold parentheses: it runs to the LAST ")" of the line, and
anything a log collector appended after that is ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The full modern form in one match; anything else takes the tolerant path below.
# Groups: to, orig_to, relay, conn_use, delay, a, b, c, d, tls, dsn, status, reason.
FAST_STATUS = re.compile(
    r"to=<([^>]*)>, (?:orig_to=<([^>]*)>, )?relay=([^,\s]*), (?:conn_use=(\d+), )?delay=([\d.]+), "
    r"delays=([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+), (?:tls=([^,\s]*), )?dsn=([\d.]+), status=(\S+) \((.*)\)"
)
_FIELD = re.compile(r"(\w+)=(<[^>]*>|[^,]*)")
_QMGR_FROM = re.compile(r"from=<([^>]*)>, size=(\d+), nrcpt=(\d+)")
_PIX = re.compile(r"enabling PIX workarounds: (\S+) for ([^\[\s]*)\[([^\]]+)\](?::(\d+))?")
_HOSTPORT = re.compile(r"([^\[\s]*)\[([^\]]*)\](?::(\d+))?")

STATUSES = ("sent", "deferred", "bounced", "expired", "force-expired", "SOFTBOUNCE", "deliverable", "undeliverable")


@dataclass(slots=True)
class Delivery:
    """One recipient's delivery attempt outcome (a status= line)."""

    to: str
    status: str
    reason: str
    orig_to: str | None = None
    relay: str | None = None
    conn_use: int | None = None
    delay: float | None = None
    delays: tuple[float, float, float, float] | None = None
    tls: str | None = None
    dsn: str | None = None
    truncated: bool = False  # the line ended before the reason's closing ")"

    @property
    def relay_host(self) -> str | None:
        """'mx.example.net' from 'mx.example.net[192.0.2.1]:25'; None for relay=none."""
        if not self.relay or self.relay == "none":
            return None
        return self.relay.partition("[")[0] or None

    @property
    def domain(self) -> str:
        """The recipient's domain, lower-cased ('' when the address has none)."""
        return self.to.rpartition("@")[2].lower() if "@" in self.to else ""


@dataclass(slots=True)
class Expiry:
    sender: str
    status: str  # expired | force-expired
    reason: str


def _strip_angle(value: str) -> str:
    value = value.strip()
    return value[1:-1] if value.startswith("<") and value.endswith(">") else value


def _float(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def parse_delivery(text: str) -> Delivery | Expiry | None:
    """Parse a status line's message (after the queue id). None when it is not one."""
    m = FAST_STATUS.match(text)
    if m is not None:
        try:
            return Delivery(
                to=m[1],
                status=m[12],
                reason=m[13],
                orig_to=m[2],
                relay=m[3] or None,
                conn_use=int(m[4]) if m[4] else None,
                delay=float(m[5]),
                delays=(float(m[6]), float(m[7]), float(m[8]), float(m[9])),
                tls=m[10],
                dsn=m[11],
            )
        except ValueError:  # a [\d.]+ that is no number ("1..2"): read below, as any other odd line
            pass
    idx = text.find("status=")
    if idx < 0 or (idx and text[idx - 1] not in " ,"):
        return None
    head, tail = text[:idx], text[idx + 7:]
    status, _, rest = tail.partition(" ")
    status = status.rstrip(",")
    reason, truncated = "", False
    if rest.startswith("("):
        end = rest.rfind(")")
        if end < 0:
            reason, truncated = rest[1:], True
        else:
            reason = rest[1:end]
    else:
        reason = rest.strip()  # "status=expired, returned to sender"
    fields = dict(_FIELD.findall(head))
    if status in ("expired", "force-expired") and "to" not in fields:
        return Expiry(_strip_angle(fields.get("from", "")), status, reason)
    if "to" not in fields:
        if status == "deferred" and not head.strip():
            # Postfix 2.0-2.2 global/bounce.c: "QID: status=deferred (bounce failed)" names no recipient:
            # the whole message stays deferred because the bounce service failed
            return Delivery(to="", status=status, reason=reason, truncated=truncated)
        return None
    delays = None
    raw_delays = fields.get("delays")
    if raw_delays:
        parts = raw_delays.split("/")
        if len(parts) == 4:
            try:
                delays = (float(parts[0]), float(parts[1]), float(parts[2]), float(parts[3]))
            except ValueError:
                delays = None
    conn_use = fields.get("conn_use")
    return Delivery(
        to=_strip_angle(fields["to"]),
        status=status,
        reason=reason,
        orig_to=_strip_angle(fields["orig_to"]) if "orig_to" in fields else None,
        relay=fields.get("relay", "").strip() or None,
        conn_use=int(conn_use) if conn_use and conn_use.isdigit() else None,
        delay=_float(fields.get("delay")),
        delays=delays,
        tls=fields.get("tls") or None,
        dsn=(fields.get("dsn") or "").strip() or None,
        truncated=truncated,
    )


@dataclass(slots=True)
class QueueEntry:
    """qmgr: 'from=<S>, size=N, nrcpt=M (queue active)'."""

    sender: str
    size: int
    nrcpt: int


def parse_qmgr_from(text: str) -> QueueEntry | None:
    m = _QMGR_FROM.match(text)
    if not m:
        return None
    return QueueEntry(m[1], int(m[2]), int(m[3]))


@dataclass(slots=True)
class PixWorkaround:
    workarounds: tuple[str, ...]
    host: str
    addr: str
    port: int | None


def parse_pix(text: str) -> PixWorkaround | None:
    m = _PIX.match(text)
    if not m:
        return None
    return PixWorkaround(tuple(m[1].split(",")), m[2], m[3], int(m[4]) if m[4] else None)


def parse_hostport(text: str) -> tuple[str, str, int | None] | None:
    """First 'host[addr]:port' in a text -> (host, addr, port)."""
    m = _HOSTPORT.search(text)
    if not m:
        return None
    return m[1], m[2], int(m[3]) if m[3] else None


# Messages from the smtp client that carry an attempt-level failure without a
# status= (a soft failure at a non-last MX, or the per-address connect lines).
ATTEMPT_PREFIXES = (
    "host ",
    "conversation with ",
    "lost connection with ",
    "connect to ",
    "Host or domain name not found",
    "TLS is required",
    "Cannot start TLS",
    "Server certificate not verified",
    "SASL authentication failed",
)

# Companion lines (no queue id) that are evidence for a cause.
COMPANION_PREFIXES = (
    "connect to ",
    "SSL_connect error to ",
    "warning: TLS library problem",
    "certificate verification failed for ",
    "warning: no MX host for ",
    "warning: host ",
    "warning: relayhost configuration problem",
    "warning: mail for ",
    "warning: connect to transport ",
    "warning: transport ",
    "SMTPS wrappermode",
    "Untrusted TLS connection established to ",
    "Trusted TLS connection established to ",
    "Verified TLS connection established to ",
    "Anonymous TLS connection established to ",
    "warning: smtp_connect_addr: bind",
    "fatal: ",  # a delivery agent, qmgr or master gave up: one kind each, counted, the first line kept
    "panic: ",
)
