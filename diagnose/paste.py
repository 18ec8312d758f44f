"""A log line or reason text pasted from a ticket, a forum or a blog -> the cause it shows.

What people paste is seldom the line Postfix wrote: the syslog prefix may be there or not, blogs
print "--" as a typographic dash and quotes as curly ones, chat clients add non-breaking spaces,
tickets wrap long lines and replace names with ``xxx``. ``read_pasted`` undoes what it can, says
what it changed, finds the reason text (``status=deferred (REASON)``, ``QUEUEID: REASON`` or the
text itself) and classifies it with the same classifier as the log analysis.
"""

from __future__ import annotations

import re
from collections.abc import Callable
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


def to_dict(r: PastedReason) -> dict[str, object]:
    c, cl = r.cause, r.classification
    return {"reason": r.reason, "cause_id": cl.cause_id, "slug": c.slug, "title": c.title, "phase": cl.phase,
            "status": r.status, "dsn": r.dsn, "recipient": r.recipient, "relay": r.relay,
            "next_hop": {"host": cl.host, "addr": cl.addr, "port": cl.port},
            "reply_code": cl.reply_code, "enhanced_code": cl.enhanced_code, "provider": cl.provider,
            "hint": cl.hint, "subcause": cl.subcause, "collateral": cl.collateral,
            "delays": list(r.delays) if r.delays else None, "notes": list(r.notes)}  # fmt: skip


def render_text(r: PastedReason, wrap: Callable[[str, str], str]) -> str:
    """What the paste shows, before the cause's own explanation; outside text shown literally."""
    from diagnose.delays import explain as read_delays
    from diagnose.textsafe import visible

    c, cl = r.cause, r.classification
    where = f" at {cl.phase}" if cl.phase else ""
    hop = f"{cl.host or ''}[{cl.addr}]" if cl.addr else cl.host
    out = [f"This text shows {c.id} {c.slug}{where}: {c.title}.", f"  reason: {visible(r.reason)}"]
    facts = [f"status={r.status}" if r.status else "", f"dsn={r.dsn}" if r.dsn else "",
             f"next hop {visible(hop)}" if hop else "", f"reply {cl.reply_code}" if cl.reply_code else "",
             f"from {cl.provider}" if cl.provider else "", f"recipient {visible(r.recipient)}" if r.recipient else ""]
    if any(facts):
        out.append("  " + ", ".join(f for f in facts if f))
    if r.delays is not None:
        profile: dict[str, dict[str, float | None]] = {p: {"median": v, "p95": v} for p, v in zip("abcd", r.delays)}
        out.append("  delays=" + "/".join(f"{v:g}" for v in r.delays) + " (compared with Postfix's default timeouts: "
                   "the server's own are not in a pasted line)")
        out += [wrap(f"- {x}", "    ") for x in read_delays(profile, None, cl.phase, c.family == "reply")]
    if cl.collateral:
        out.append("  'delivery temporarily suspended': an echo of an earlier failure to the same destination, "
                   "not a new attempt")
    if cl.subcause and cl.subcause != c.id:
        try:
            sub = get_cause(cl.subcause).title
        except KeyError:
            sub = cl.subcause
        out.append(f"  the text itself is {cl.subcause} ({sub}); the context makes it {c.id}")
    if cl.hint:
        out.append(wrap(f"note: {cl.hint}", "  "))
    out += [f"  (read as Postfix wrote it: {note})" for note in r.notes]
    return "\n".join(out) + "\n\n"
