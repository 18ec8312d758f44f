"""pfdiag trace's document (JSON) and its text and Markdown renderings. Never prints."""

from __future__ import annotations

import re
import time
from typing import Any

from diagnose.fate import fate as queued_fate
from diagnose.trace import EOD_CAUSES, MessageTrace, Trace

SCHEMA = "pfdiag.trace/1"
_RUNS = re.compile(r"`+")

def _iso(ts: float | None) -> str | None:
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(ts))


def _stamp(ts: float | None) -> str:
    return "????-??-?? ??:??:??" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def fate(t: MessageTrace, now: float) -> str:
    """Where this message is headed, in one phrase."""
    if t.queued is None:
        if t.end == "removed":
            last = t.attempts[-1].status if t.attempts else None
            return {"sent": "delivered", "bounced": "bounced (returned to the sender)"}.get(
                last or "", "left the queue") + (f" at {_stamp(t.end_ts)}" if t.end_ts else "")
        if t.end in ("expired", "force-expired"):
            return f"returned to the sender ({t.end}) at {_stamp(t.end_ts)}"
        return "not in the queue now, and the log does not say how it left" if t.attempts else "no delivery attempt in the log"
    q, fc = t.queued, t.forecast
    failed = next((a for a in reversed(t.attempts) if a.cause_id), None)
    return queued_fate(q.queue_name, t.queue_id, failed.cause_id if failed else None, now=now,
                       next_attempt=fc.next_attempt_earliest if fc else None, expires_at=fc.expires_at if fc else None,
                       expiring=fc.expiring if fc else False)  # fmt: skip


def to_dict(tr: Trace, now: float) -> dict[str, Any]:
    msgs = []
    for t in tr.messages:
        dups = t.duplicates()
        msgs.append({
            "queue_id": t.queue_id, "message_id": t.message_id, "sender": t.sender, "size": t.size,
            "nrcpt": t.nrcpt, "client": t.client, "sasl_login": t.sasl_login, "first_seen": _iso(t.first_ts),
            "requeued_from": t.requeued_from, "requeued_as": t.requeued_as, "notifications": t.notifications,
            "attempts": [{"time": _iso(a.ts), "recipient": a.recipient, "status": a.status, "cause_id": a.cause_id,
                          "phase": a.phase, "relay": a.relay, "dsn": a.dsn,
                          "delays": list(a.delays) if a.delays else None, "reason": a.reason, "service": a.service}
                         for a in t.attempts],
            "warnings": t.warnings,
            "possible_duplicates": [{"recipient": d.recipient, "eod_timeouts": d.timeouts, "later": d.later,
                                     "copies_at_most": d.copies_at_most} for d in dups],
            "end": t.end, "end_time": _iso(t.end_ts), "held": t.held,
            "now": None if t.queued is None else {
                "queue": t.queued.queue_name, "arrival": _iso(t.queued.arrival_time),
                "recipients": [{"address": r.address, "delay_reason": r.delay_reason} for r in t.queued.recipients]},
            "forecast": None if t.forecast is None else {
                "next_attempt_earliest": _iso(t.forecast.next_attempt_earliest),
                "next_attempt_latest": _iso(t.forecast.next_attempt_latest),
                "warning_at": _iso(t.forecast.warning_at), "expires_at": _iso(t.forecast.expires_at),
                "expires_latest": _iso(t.forecast.expires_at_latest), "expiring": t.forecast.expiring},
            "fate": fate(t, now),
            "lines": [ln.raw for ln in t.lines], "lines_not_kept": t.dropped_lines,
        })  # fmt: skip
    return {"schema": SCHEMA, "key": tr.key.text, "key_kind": tr.key.kind, "generated": _iso(now),
            "files": tr.files, "one_pass": tr.one_pass, "more_messages": tr.more_messages, "messages": msgs}


def _attempt_line(a: dict[str, Any]) -> tuple[str, str]:
    what = a["status"] if a["cause_id"] is None else f"{a['status']} {a['cause_id']}" + (f" at {a['phase']}" if a["phase"] else "")
    relay = f" via {a['relay']}" if a["relay"] and a["relay"] != "none" else ""
    delays = " delays=" + "/".join(f"{x:g}" for x in a["delays"]) if a["delays"] else ""
    return f"{what} to <{a['recipient']}>{relay}{delays}", a["reason"]


def _summary(m: dict[str, Any]) -> list[str]:
    facts = []
    if m["sender"] is not None:
        facts.append(f"from <{m['sender']}>")
    if m["size"] is not None:
        facts.append(f"{m['size']:,} bytes")
    if m["message_id"]:
        facts.append(f"Message-ID <{m['message_id']}>")
    came = []
    if m["client"]:
        came.append(f"submitted by {m['client']}")
    if m["sasl_login"]:
        came.append(f"SASL login {m['sasl_login']}")
    if m["requeued_from"]:
        came.append(f"requeued from {m['requeued_from']}")
    return [", ".join(facts), ", ".join(came)]


def render_text(doc: dict[str, Any], visible: Any = str) -> str:
    """`visible` renders outside text (log lines, replies) literally: pass the house's escaping."""
    out = [f"pfdiag trace {doc['key_kind']} {visible(doc['key'])}: {len(doc['messages'])} message(s)"]
    if doc["files"]:
        out.append("read: " + ", ".join(visible(f) for f in doc["files"]))
    if doc["one_pass"]:
        out.append("note: read once (standard input): lines logged before the first one naming it may be missing")
    if doc["more_messages"]:
        out.append(f"note: {doc['more_messages']} more matching message(s) not shown (narrow it with --since or a queue id)")
    if not doc["messages"]:
        out.append("nothing in the log or the queue matches it")
    for m in doc["messages"]:
        out += ["", f"Message {m['queue_id']}"]
        out += [f"  {visible(x)}" for x in _summary(m) if x]
        if m["first_seen"]:
            out.append(f"  first seen {m['first_seen']}")
        for a in m["attempts"]:
            head, reason = _attempt_line(a)
            out.append(f"  {a['time'] or '?'}  {visible(head)}")
            if a["status"] != "sent" or reason:
                out.append(f"      {visible(reason)}")
        for w in m["warnings"][:10]:
            out.append(f"  warning: {visible(w)}")
        for d in m["possible_duplicates"]:
            mid = f" Message-ID <{m['message_id']}>" if m["message_id"] else f" queue id {m['queue_id']}"
            later = {"sent": "then delivered", "bounced": "then bounced"}.get(d["later"], "still retrying")
            out.append(f"  ! possible duplicate: <{visible(d['recipient'])}> may have up to {d['copies_at_most']} copies "
                       f"({d['eod_timeouts']} end-of-data timeout(s), {later}); search the receiver's log for{visible(mid)}")
        if m["requeued_as"]:
            out.append(f"  requeued as {', '.join(m['requeued_as'])} (postsuper -r)")
        if m["notifications"]:
            out.append(f"  notices sent to the sender: {', '.join(m['notifications'])}")
        if m["now"]:
            out.append(f"  now: in the {m['now']['queue']} queue since {m['now']['arrival']}")
        out.append(f"  fate: {m['fate']}")
        if m["lines_not_kept"]:
            out.append(f"  ({m['lines_not_kept']} more log lines of this message not kept)")
    return "\n".join(out) + "\n"


def render_markdown(doc: dict[str, Any], code: Any) -> str:
    """`code` fences outside text for Markdown (the house's rule)."""
    out = [f"## pfdiag trace: {doc['key_kind']} {code(doc['key'])}", ""]
    if doc["files"]:
        out.append("Read: " + ", ".join(code(f) for f in doc["files"]))
    if doc["one_pass"]:
        out.append("Read once (standard input): lines logged before the first one naming it may be missing.")
    if not doc["messages"]:
        out.append("Nothing in the log or the queue matches it.")
    for m in doc["messages"]:
        out += ["", f"### Message {code(m['queue_id'])}", ""]
        out += [f"- {code(x)}" for x in _summary(m) if x]
        out.append(f"- **fate:** {m['fate']}")
        for d in m["possible_duplicates"]:
            out.append(f"- **possible duplicate:** {code(d['recipient'])} may have up to {d['copies_at_most']} copies "
                       f"({d['eod_timeouts']} end-of-data timeout(s))")
        if m["attempts"]:
            out += ["", "| time | attempt | reason |", "|---|---|---|"]
            for a in m["attempts"]:
                head, reason = _attempt_line(a)
                out.append(f"| {a['time'] or '?'} | {code(head)} | {code(reason)} |")
        if m["lines"]:
            fence = "`" * max(3, 1 + max((len(r) for ln in m["lines"] for r in _RUNS.findall(ln)), default=0))
            out += ["", "<details><summary>log lines</summary>", "", fence + "text"]
            out += m["lines"]
            out += [fence, "", "</details>"]
    return "\n".join(out) + "\n"


__all__ = ["EOD_CAUSES", "fate", "render_markdown", "render_text", "to_dict"]
