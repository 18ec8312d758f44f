"""A log line or reason text pasted from a ticket, a forum or a blog -> the cause it shows.

What people paste is seldom the line Postfix wrote: the syslog prefix may be there or not, blogs
print "--" as a typographic dash and quotes as curly ones, chat clients add non-breaking spaces,
tickets wrap long lines and replace names with ``xxx``. ``read_pasted`` undoes what it can, says
what it changed, finds the reason text (``status=deferred (REASON)``, ``QUEUEID: REASON`` or the
text itself) and classifies it with the same classifier as the log analysis.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from checks.postfix.logline import LineParser, LogLine
from checks.postfix.status import Delivery, Expiry, parse_delivery
from diagnose.causes import Cause, get_cause
from diagnose.classify import UNCLASSIFIED, Classification, classify

# what copies through blogs, word processors and chat clients do to a log line
_TYPOGRAPHY = (
    (re.compile(r"\s*[\u2014\u2013\u2012\u2015\u2212]\s*(?=message may be sent more than once)"), " -- ",
     "a typographic dash read as Postfix's '--'"),
    (re.compile(r"[\u2014\u2013\u2012\u2015\u2212]"), "-", "typographic dashes read as '-'"),
    (re.compile(r"[\u2018\u2019\u201a\u201b\u2032]"), "'", "curly quotes read as straight ones"),
    (re.compile(r"[\u201c\u201d\u201e\u201f\u2033]"), '"', "curly quotes read as straight ones"),
    (re.compile(r"\u2026"), "...", "an ellipsis character read as '...'"),
    (re.compile(r"[\u00a0\u2007\u202f\u2009\u200a]"), " ", "non-breaking spaces read as spaces"),
    (re.compile(r"[\u200b\u200c\u200d\u2060\ufeff]"), "", "invisible characters removed"),
)
_FENCE = re.compile(r"^(?:`{1,3}|'|\")(.*?)(?:`{1,3}|'|\")$", re.S)
_PLACEHOLDER = re.compile(r"\b(?:x{3,}|X{3,})\b|<(?:hostname|host|ip|domain|user|email|redacted)>", re.I)
_STATUS_IN_TEXT = re.compile(r"(?:^|[\s,])status=(\S+) \((.*)\)")


class PasteError(ValueError):
    """Nothing usable in the pasted text (one line for the user)."""


@dataclass(frozen=True, slots=True)
class PastedReason:
    text: str  # what was pasted, as given
    reason: str  # the reason text that was classified
    classification: Classification
    cause: Cause
    status: str | None = None  # deferred, bounced, SOFTBOUNCE, expired... when the paste had status=
    dsn: str | None = None
    recipient: str | None = None
    relay: str | None = None
    delays: tuple[float, float, float, float] | None = None
    line: LogLine | None = None  # the parsed syslog envelope, when the paste had one
    notes: tuple[str, ...] = field(default_factory=tuple)  # what was changed or guessed, in the user's words

    @property
    def recognised(self) -> bool:
        return self.classification.cause_id != UNCLASSIFIED


def normalise(text: str) -> tuple[str, list[str]]:
    """Undo what copying did to a log line; returns the text and what was changed."""
    notes: list[str] = []
    t = text.strip()
    m = _FENCE.match(t)
    if m and m[1].strip():
        t = m[1].strip()
    if "\n" in t or "\r" in t:
        t = re.sub(r"\s*[\r\n]+\s*", " ", t)
        notes.append("line breaks joined (a wrapped line)")
    for rx, repl, note in _TYPOGRAPHY:
        t, n = rx.subn(repl, t)
        if n and note not in notes:
            notes.append(note)
    t = re.sub(r"[ \t]{2,}", " ", t) if "  " in t and "said:" not in t else t
    if _PLACEHOLDER.search(t):
        notes.append("names replaced by placeholders (xxx) are kept as they are: the cause does not depend on them")
    return t, notes


def read_pasted(text: str) -> PastedReason:
    """Classify a pasted log line or reason text; PasteError when there is nothing to classify."""
    if not isinstance(text, str) or not text.strip():
        raise PasteError("nothing to explain: paste a Postfix log line or the reason text in quotes")
    t, notes = normalise(text)
    line = LineParser().parse(t)
    body = line.text if line is not None and line.text else t
    status = dsn = recipient = relay = None
    delays = None
    delivery = parse_delivery(body)
    if isinstance(delivery, Delivery):
        reason, status, dsn, recipient, relay, delays = (delivery.reason, delivery.status, delivery.dsn,
                                                         delivery.to or None, delivery.relay, delivery.delays)
        if delivery.truncated:
            notes.append("the reason had no closing ')': the paste was probably cut short")
    elif isinstance(delivery, Expiry):
        reason, status = delivery.reason, delivery.status
    else:
        m = _STATUS_IN_TEXT.search(body)
        if m:
            status, reason = m[1], m[2]
        else:
            reason = body
    reason = reason.strip()
    if not reason and status is None:
        raise PasteError("no reason text in what was pasted: paste the whole line, from 'to=<' to its closing ')'")
    c = classify(reason, status=status, dsn=dsn)
    return PastedReason(text, reason, c, get_cause(c.cause_id), status, dsn, recipient, relay, delays,
                        line if line is not None and line.service else None, tuple(notes))
