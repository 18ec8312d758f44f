"""Outbreak triage: when receivers rate-limit or block this server (E22/E23) for most of the
deferred mail, is one SASL login, client address or sender behind most of that mail?

The check ``logs.outbreak`` (registered in checks/registry.py BUILTIN_MODULES) runs in the
diagnosis' second round, only when E22/E23 dominate the deferrals of the log the first round read;
it then reads those log files once more (checks/outbreak.py: the join of smtpd's client= and qmgr's
from= lines to those deferrals, bounded in memory, within the checks' deadline). Its finding carries
an :class:`Outbreak` (typed: the evidence, the submitter that leads and the guarded plan), which the
report (diagnose/report.py) shows as a warning, a "Do this now" step and its own section (to_doc).
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping

from checks.errors import CheckSkipped
from checks.model import Evidence, Finding, Severity
from checks.outbreak import Share, SubmitterEvidence, scan
from checks.registry import Context, check
from checks.targets.pasted import log_label, paste_file_label

CAUSES = ("E22", "E23")  # rate-limited; blocked for reputation
DOMINANT = 0.5  # share of the root-cause deferrals in the log that E22/E23 must reach
MIN_MESSAGES = 10  # and this many messages deferred for them
LEADS = 0.5  # a submitter with at least this share of those messages leads the outbreak
CHECK_ID = "logs.outbreak"
KIND_WORDS = {"sasl-user": "SASL login", "client": "client", "sender": "sender"}
MAP_FILES = {"sasl-user": "/etc/postfix/sasl_access", "client": "/etc/postfix/client_access",
             "sender": "/etc/postfix/sender_access"}  # fmt: skip
RESTRICTION = {"sasl-user": ("smtpd_sender_restrictions", "check_sasl_access"),
               "client": ("smtpd_client_restrictions", "check_client_access"),
               "sender": ("smtpd_sender_restrictions", "check_sender_access")}  # fmt: skip


@dataclass(frozen=True)
class Outbreak:
    """The evidence and what it says: the submitter that leads (None: no one has LEADS of it)."""

    evidence: SubmitterEvidence
    kind: str | None  # "sasl-user", "client" or "sender" (the pfdiag queue selector)
    lead: Share | None
    via: Share | None  # a login's main client address, or a client's main login

    @property
    def share(self) -> float:
        n = self.evidence.deferred_messages
        return self.lead.deferred / n if self.lead and n else 0.0

    @property
    def deferred_ratio(self) -> float:
        return self.lead.deferred / self.lead.total if self.lead and self.lead.total else 0.0


def dominant(logs: Mapping[str, Any] | None) -> tuple[tuple[str, ...], int, float]:
    """(the E22/E23 causes in the log, their messages, their share of the root-cause deferrals)."""
    rows = [c for c in (logs or {}).get("causes") or [] if c.get("id") in CAUSES and c.get("deferrals")]
    return (tuple(c["id"] for c in rows), sum(int(c.get("messages") or 0) for c in rows),
            sum(float(c.get("share") or 0.0) for c in rows))  # fmt: skip


def dominates(logs: Mapping[str, Any] | None) -> bool:
    causes, messages, share = dominant(logs)
    return bool(causes) and share >= DOMINANT and messages >= MIN_MESSAGES


def judge(ev: SubmitterEvidence) -> Outbreak:
    """The submitter that leads: a SASL login first (the account is what to stop), then a client
    address, then an envelope sender; each only with at least LEADS of the deferred messages."""
    n = ev.deferred_messages
    for kind, rows in (("sasl-user", ev.logins), ("client", ev.clients), ("sender", ev.senders)):
        if rows and n and rows[0].deferred / n >= LEADS:
            lead = rows[0]
            if kind == "sasl-user":
                via = next((Share(p.key.rpartition(" ")[2], p.deferred, p.total) for p in ev.pairs
                            if p.key.rpartition(" ")[0] == lead.key), None)  # fmt: skip
            elif kind == "client":
                via = next((Share(p.key.rpartition(" ")[0], p.deferred, p.total) for p in ev.pairs
                            if p.key.rpartition(" ")[2] == lead.key), None)  # fmt: skip
            else:
                via = None
            if via is not None and via.deferred * 2 < lead.deferred:
                via = None  # no one address (or login) stands for most of it
            return Outbreak(ev, kind, lead, via)
    return Outbreak(ev, None, None, None)


def _pct(x: float) -> str:
    return f"{100 * x:.0f} %"


def name_of(kind: str, key: str) -> str:
    """How a submitter is named in sentences; a login as the log writes it, so that redaction
    (diagnose/redact.py) knows it for one."""
    if kind == "sasl-user":
        return f"SASL login {key}" if "@" in key else f"SASL login sasl_username={key}"
    return f"{KIND_WORDS[kind]} {key}"


def summary(ob: Outbreak) -> str:
    ev = ob.evidence
    causes = "/".join(c for c in ev.causes if ev.by_cause.get(c)) or "/".join(ev.causes)
    if ob.lead is None or ob.kind is None:
        top = max((rows[0] for rows in (ev.logins, ev.clients, ev.senders) if rows), key=lambda s: s.deferred, default=None)
        spread = f"; the most from one submitter: {top.deferred:,} ({top.key})" if top else ""
        return (f"{ev.deferred_messages:,} message(s) deferred by {causes} in the log read come from no single "
                f"SASL login, client or sender{spread}")  # fmt: skip
    via = ""
    if ob.via is not None:
        via = f", client {ob.via.key}" if ob.kind == "sasl-user" else f" (SASL login {ob.via.key})" if ob.kind == "client" else ""
    whose = {"sasl-user": "that login's", "client": "that client's", "sender": "that sender's"}[ob.kind]
    return (f"{_pct(ob.share)} of the {ev.deferred_messages:,} messages deferred by {causes} in the log read came from "
            f"{name_of(ob.kind, ob.lead.key)}{via}; {_pct(ob.deferred_ratio)} of {whose} mail "
            f"({ob.lead.deferred:,} of {ob.lead.total:,} message(s)) was deferred")  # fmt: skip


def selector(kind: str, key: str) -> str:
    """The pfdiag queue selector, as one shell word (--sasl-user=LOGIN: redaction knows user=)."""
    return shlex.quote(f"--{kind}={key}")


def plan(ob: Outbreak) -> dict[str, Any]:
    """The guarded plan: hold (dry run first), release; stop the submitter; what to check next."""
    assert ob.kind is not None and ob.lead is not None
    kind, key = ob.kind, ob.lead.key
    sel = selector(kind, key)
    who = name_of(kind, key)
    hold = [
        {"step": f"See what holding the mail of {who} would do: a dry run lists the messages with counts per cause "
                 "and destination, and changes nothing", "command": f"pfdiag queue hold {sel} --dry-run"},
        {"step": "Hold it: kept in the hold queue, no more retries that hurt the server's reputation",
         "command": f"pfdiag queue hold {sel} --yes"},
        {"step": f"Once {'the account' if kind == 'sasl-user' else 'the source'} is safe again, release what is "
                 "legitimate (or delete the spam: pfdiag queue delete keeps a backup)",
         "command": f"pfdiag queue release {sel} --yes"},
    ]  # fmt: skip
    param, restriction = RESTRICTION[kind]
    table = MAP_FILES[kind]
    map_line = f"{key} REJECT account disabled: mail flood (pfdiag outbreak triage)" if kind == "sasl-user" else (
        f"{key} REJECT mail flood from this {'client' if kind == 'client' else 'sender'} (pfdiag outbreak triage)")
    stop = {
        "map_file": table, "map_line": map_line, "parameter": param, "restriction": f"{restriction} hash:{table}",
        "commands": [f"postmap hash:{table}", f"postconf {param}   # put {restriction} hash:{table} first in it",
                     "postconf -P | grep -E '_restrictions'   # submission/smtps may override it in master.cf",
                     "postfix reload"],
    }  # fmt: skip
    notes = [f"Add the line to {table}, run postmap, and put '{restriction} hash:{table}' first in {param} "
             f"(before permit_sasl_authenticated and permit_mynetworks), also where master.cf's "
             f"submission/smtps set -o {param}; then postfix reload."]  # fmt: skip
    stop["notes"] = notes
    q = shlex.quote(key)
    # the log on the mail host (lines pasted into the wizard are in a temporary file here: its default log)
    log = next((f for f in reversed(ob.evidence.files) if not paste_file_label(f)), "/var/log/mail.log")
    if kind == "sasl-user":
        notes += [
            f"Dovecot SASL: doveadm auth test {q} shows whether the login still authenticates; change its password "
            "in the passdb (passwd-file: replace the hash from doveadm pw -s SHA512-CRYPT, or comment the line out; "
            "SQL: UPDATE the password, or the column your password_query checks to disable it), then "
            f"doveadm auth cache flush and doveadm kick {q}.",
            f"Cyrus sasldb: saslpasswd2 -d {q}. Sessions already authenticated keep sending until they end: "
            "postfix reload does not close them (postsuper/hold does stop their queued mail).",
        ]  # fmt: skip
        nxt = [f"Change the password of {key}: a login whose mail is mostly refused is usually stolen",
               f"Where it logged in from: grep -F {shlex.quote('sasl_username=' + key)} {shlex.quote(log)} | "
               "grep -o 'client=[^,]*' | sort | uniq -c | sort -rn",
               f"Password guessing before it: grep -c 'authentication failed' {shlex.quote(log)}"]  # fmt: skip
    elif kind == "client":
        notes.append("A client in mynetworks is trusted before any restriction: take it out of mynetworks "
                             "(or fix the web form or device that sends through it).")  # fmt: skip
        nxt = [f"The client's history: grep -F {shlex.quote('[' + key + ']')} {shlex.quote(log)} | "
               "grep -E 'connect from|sasl_username=' | head", f"Who it is: dig +short -x {q}; is it on a blocklist?"]
    else:
        notes.append("An envelope sender is easily forged: find the login or client that used it "
                             "(smtpd_sender_login_maps with reject_sender_login_mismatch ties senders to logins).")
        nxt = [f"Who sent as it: grep -F {shlex.quote('from=<' + key + '>')} {shlex.quote(log)} | head",
               "Its login or client: pfdiag trace " + q]
    nxt.append("Once the flood has stopped: request delisting where a receiver's reply names a list (E23), and run "
               "pfdiag report again to see the deferrals fall")  # fmt: skip
    return {"hold": hold, "stop": stop, "next": nxt}


def to_doc(ob: Outbreak) -> dict[str, Any]:
    """The report's ``outbreak`` section (schema: docs/report-json.md)."""
    ev = ob.evidence

    def rows(shares: tuple[Share, ...]) -> list[dict[str, Any]]:
        return [{"key": s.key, "deferred": s.deferred, "total": s.total,
                 "share": round(s.deferred / ev.deferred_messages, 4) if ev.deferred_messages else 0.0} for s in shares]  # fmt: skip

    return {
        "causes": list(ev.causes), "by_cause": ev.by_cause, "deferred_messages": ev.deferred_messages,
        "joined": ev.joined, "with_sender": ev.with_sender, "summary": summary(ob),
        "lead": None if ob.lead is None else {
            "kind": ob.kind, "key": ob.lead.key, "deferred": ob.lead.deferred, "total": ob.lead.total,
            "share": round(ob.share, 4), "deferred_ratio": round(ob.deferred_ratio, 4),
            "via": ob.via.key if ob.via else None},
        "top": {"logins": rows(ev.logins), "clients": rows(ev.clients), "senders": rows(ev.senders)},
        "plan": plan(ob) if ob.lead is not None else None,
        "read": {"files": [log_label(f) for f in ev.files], "since": _iso(ev.since), "lines": ev.lines, "seconds": ev.seconds,
                 "complete": ev.complete, "forgotten_ids": ev.forgotten, "dropped_keys": ev.dropped_keys},
    }  # fmt: skip


def _iso(ts: float | None) -> str | None:
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _since(logs: Mapping[str, Any]) -> float | None:
    text = ((logs.get("window") or {}).get("since")) or None
    if not text:
        return None
    return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()


@check(CHECK_ID, title="one sender behind rate-limited or blocked mail", tags=("logs",))
def outbreak_check(ctx: Context) -> list[Finding]:
    """When receivers rate-limit or block this server (E22/E23) for most of the deferred mail,
    reads the same log files again and joins those deferrals to smtpd's client= lines (client
    address, SASL login) and qmgr's from= lines: is one login, client or sender behind most of
    it? Then a guarded plan: hold its mail (dry run first), stop the login, what to check next."""
    from diagnose.classify import classify

    logs = (ctx.options.get("collected") or {}).get("logs")
    if not logs:
        raise CheckSkipped("the logs were not read")
    causes, messages, share = dominant(logs)
    if not dominates(logs):
        return [Finding(CHECK_ID, Severity.INFO, f"no outbreak triage: rate-limit and reputation deferrals (E22/E23) are "
                        f"{_pct(share)} of the deferrals ({messages} message(s)); it needs {_pct(DOMINANT)} and "
                        f"{MIN_MESSAGES} messages", evidence=(Evidence("pfdiag logs: causes", "", ctx.target.where),))]  # fmt: skip
    files = [f for f in ((logs.get("input") or {}).get("files") or []) if f != "-"]
    if not files:
        raise CheckSkipped("the log came from standard input: it cannot be read a second time")
    budget = float(ctx.options.get("budget") or 60.0)
    deadline = time.monotonic() + max(1.0, 0.8 * budget)

    def cause_of(reason: str, dsn: str | None) -> str:
        return classify(reason, status="deferred", dsn=dsn).cause_id

    ev = scan(ctx.target, files, _since(logs), cause_of=cause_of, causes=causes, deadline=deadline)
    ob = judge(ev)
    where = ctx.target.where
    read = f"{ev.lines:,} lines of {', '.join(ev.files)}" + ("" if ev.complete else " (stopped at the deadline: partial)")
    evidence = [Evidence(f"mail log: smtpd client= and qmgr from= joined to the {'/'.join(causes)} deferrals", read, where)]
    evidence += [Evidence("mail log", ex, where) for ex in ev.examples[:1]]
    severity = Severity.PROBLEM if ob.lead is not None else Severity.INFO
    return [Finding(CHECK_ID, severity, summary(ob), None, tuple(evidence), {"outbreak": ob})]


def found(findings: list[Finding]) -> Outbreak | None:
    """The outbreak the check found, if it ran and found one."""
    for f in findings:
        ob = f.values.get("outbreak") if f.check_id == CHECK_ID else None
        if isinstance(ob, Outbreak):
            return ob
    return None


def do_now_steps(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The "Do this now" steps of an outbreak with a lead: hold its mail (dry run), stop it."""
    ob = doc.get("outbreak") or {}
    p, lead = ob.get("plan"), ob.get("lead")
    if not p or not lead:
        return []
    stop = p["stop"]
    who = name_of(lead["kind"], lead["key"])
    return [
        {"step": f"{ob['summary']}. Hold that mail: dry run first (it lists the messages and counts, changes nothing), "
                 "then the same with --yes", "command": p["hold"][0]["command"], "cause": "outbreak"},
        {"step": f"Stop {who} with an access map line (add '{stop['map_line']}' to {stop['map_file']}, "
                 f"'{stop['restriction']}' first in {stop['parameter']}), then", "command":
         f"postmap hash:{stop['map_file']} && postfix reload", "cause": "outbreak"},
    ]  # fmt: skip


def add_to(doc: dict[str, Any], findings: list[Finding]) -> None:
    """report.build's hook: the outbreak section, and its steps first in "Do this now"."""
    ob = found(findings)
    doc["outbreak"] = to_doc(ob) if ob is not None else None
    steps = do_now_steps(doc)
    if steps and doc.get("do_now") is not None and doc["verdict"]["status"] == "root-cause":
        doc["do_now"] = (steps + list(doc["do_now"]))[:3]


def text_lines(doc: Mapping[str, Any]) -> list[str]:
    """The outbreak section for the terminal and for Markdown (plain lines; the caller escapes)."""
    ob = doc.get("outbreak")
    if not ob or not ob.get("plan"):
        return []
    p = ob["plan"]
    out = ["Outbreak triage: " + ob["summary"]]
    for kind, label in (("logins", "SASL logins"), ("clients", "clients"), ("senders", "senders")):
        rows = ob["top"][kind][:3]
        if rows:
            out.append(f"  {label}: " + ", ".join(f"{r['key']} {r['deferred']:,}/{r['total']:,}" for r in rows)
                       + "  (deferred/all messages)")  # fmt: skip
    out.append("  hold (guarded):")
    for h in p["hold"]:
        out += [f"  - {h['step']}:", f"      {h['command']}"]
    s = p["stop"]
    out.append(f"  stop it: add to {s['map_file']}:")
    out.append(f"    {s['map_line']}")
    out += [f"    {c}" for c in s["commands"]]
    out += [f"  - {n}" for n in s["notes"]]
    out.append("  then check:")
    out += [f"  - {n}" for n in p["next"]]
    r = ob["read"]
    if not r["complete"]:
        out.append(f"  (partial: the second read of the log stopped at its deadline after {r['lines']:,} lines)")
    return out


__all__ = ["CAUSES", "Outbreak", "add_to", "dominates", "judge", "outbreak_check", "plan", "summary", "text_lines", "to_doc"]
