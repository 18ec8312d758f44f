"""Deferral reason text -> cause id (+ SMTP phase, next hop, reply details).

INTERFACE STUB: the full classifier replaces the body of classify(); the
Classification record and the classify() signature are the contract.
"""

from __future__ import annotations

from dataclasses import dataclass

UNCLASSIFIED = "unclassified"


@dataclass(frozen=True, slots=True)
class Classification:
    cause_id: str  # "E01".."E38" or UNCLASSIFIED
    reason: str  # the inner reason ("delivery temporarily suspended: " stripped), verbatim
    phase: str | None = None  # connect, greeting, helo, starttls, tls, xforward, mail, rcpt, data, body, end-of-data, dns, sasl, local, queue
    host: str | None = None
    addr: str | None = None
    port: int | None = None
    reply_code: int | None = None  # for "host X said:" / "refused to talk to me:"
    enhanced_code: str | None = None  # e.g. "4.7.1"
    command: str | None = None  # MAIL FROM, RCPT TO, DATA, end of DATA
    collateral: bool = False  # was wrapped in "delivery temporarily suspended: "


def classify(reason: str, *, status: str | None = None, dsn: str | None = None) -> Classification:
    """Classify one deferral reason. Never raises; unknown text -> UNCLASSIFIED, kept verbatim."""
    prefix = "delivery temporarily suspended: "
    collateral = reason.startswith(prefix)
    inner = reason[len(prefix):] if collateral else reason
    return Classification(UNCLASSIFIED, inner, collateral=collateral)
