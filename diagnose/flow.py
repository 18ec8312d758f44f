"""The decision model of a diagnosis: what to ask, what to run, when to stop. Pure.

``next_step(answers, state)`` looks at what the operator has answered and what the
evidence already shows, and returns the one next thing to do:

  Ask(question)   only what the evidence cannot settle: where the Postfix is, what the
                  symptom is (only when nothing is deferred), whether test messages may be
                  sent and to whom (only for an end-of-data problem on a live target),
                  whether to act on the queue (only when there is something to act on);
  Run(phase)      "collect" (logs, queue, config), "search" (the symptom the operator named,
                  in the evidence) or "checks" (probes and the rest);
  Done()          write the report.

The wizard (questions on a terminal) and ``pfdiag report`` (answers from flags, a file or
defaults) are two answerers of this same model, so the same answers give the same report.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Mapping

from checks.errors import UsageError


@dataclass(frozen=True)
class Question:
    key: str
    kind: str  # select | confirm | text
    message: str
    choices: tuple[tuple[str, str], ...] = ()  # (value, label)
    default: str | None = None  # used by report mode when not answered; None = required there
    validate: str | None = None  # name of a validator in VALIDATORS


@dataclass(frozen=True)
class Ask:
    question: Question


@dataclass(frozen=True)
class Run:
    phase: str  # collect | checks


@dataclass(frozen=True)
class Done:
    pass


@dataclass(frozen=True)
class State:
    """What the evidence says so far (diagnose.flow_state builds it from Facts)."""

    collected: bool = False
    checked: bool = False
    live: bool = True
    deferred: bool = False  # any deferral in the logs or the queue
    eod: bool = False  # an end-of-data timeout (E09/E10) among the causes
    queue_actions: int = 0  # guarded queue actions the report offers
    interactive: bool = False  # the wizard may offer to act; report mode never acts
    nothing_here: bool = False  # "this machine" had no Postfix to diagnose: ask what the user has instead
    searched: bool = False  # the symptom the operator named was looked for in the evidence
    symptom_hits: int = 0  # ... and this many log lines or queued messages show it
    eod_dest: str = ""  # the destination of the end-of-data timeouts ("partner.test"), if known
    eod_hop: str = ""  # ... and its next hop as the log names it ("mx.partner.test[192.0.2.7]:25")


Step = Ask | Run | Done


_ADDR = re.compile(r"^[^@\s<>\"(),;:\\\[\]]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
_HOST = re.compile(r"^(?:[A-Za-z0-9_.-]+@)?(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)(?::\d{1,5})?$")


def valid_address(text: str) -> str | None:
    """None when fine, else why not (questionary shows the message)."""
    t = text.strip()
    if not _ADDR.match(t) or ".." in t.split("@", 1)[1]:
        return "an e-mail address like postmaster@example.net (a mailbox you control)"
    return None


def valid_host(text: str) -> str | None:
    t = text.strip()
    if not t or not _HOST.match(t):
        return "[user@]host[:port] or an ssh_config alias"
    host = t.split("@", 1)[-1]
    if host.startswith("["):
        try:
            ipaddress.ip_address(host[1 : host.index("]")])
        except ValueError:
            return "the address in [...] is not an IP address"
    return None


def valid_bundle(text: str) -> str | None:
    """The form of a bundle's path; whether it exists is the session's to check (this module
    touches nothing outside itself)."""
    t = text.strip()
    return None if t and "\0" not in t else "the path of a .tar.gz bundle or a directory"


_DOMAIN = re.compile(r"^(?=.{1,253}$)(?!-)[A-Za-z0-9-]{1,63}(?<!-)(?:\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?$")


def valid_domain(text: str) -> str | None:
    return None if _DOMAIN.match(text.strip()) else "a domain name like example.com"


def valid_paste(text: str) -> str | None:
    """Pasted lines, a file name, or nothing; whether a file exists is the session's to check."""
    return None if "\0" not in text else "text without NUL characters"


VALIDATORS = {"address": valid_address, "host": valid_host, "bundle": valid_bundle, "domain": valid_domain,
              "paste": valid_paste}  # fmt: skip

Q_TARGET = Question("target", "select", "Where is the Postfix whose mail is stuck?",
                    (("local", "this machine"), ("ssh", "a mail host over SSH"),
                     ("snapshot", "a snapshot bundle (pfdiag snapshot)"),
                     ("pasted", "a mailq listing and/or log lines from a ticket"),
                     ("demo", "the demo snapshot shipped with pfdiag")),
                    default="local")  # fmt: skip
# asked instead of Q_TARGET when "this machine" turned out to have no Postfix to diagnose
Q_ELSEWHERE = Question("target", "select", "There is no Postfix to diagnose on this machine. What do you have?",
                       (("pasted", "a mailq listing and/or log lines: pasted, or their files"),
                        ("ssh", "a mail host over SSH"), ("snapshot", "a snapshot bundle (pfdiag snapshot)"),
                        ("demo", "nothing: show the demo snapshot shipped with pfdiag")),
                       default="demo")  # fmt: skip
Q_HOST = Question("host", "text", "SSH host ([user@]host[:port] or an ssh_config alias):", validate="host")
Q_SNAPSHOT = Question("snapshot", "text", "Path of the snapshot bundle (.tar.gz or directory):", validate="bundle")
Q_MAILQ = Question("mailq", "text", "mailq listing: paste it or type a file name, then Esc Enter",
                   default="", validate="paste")  # fmt: skip
Q_PASTED_LOG = Question("pasted_log", "text", "Log lines: paste them or type a file name, then Esc Enter",
                        default="", validate="paste")  # fmt: skip
Q_SYMPTOM = Question("symptom", "select", "Nothing is deferred right now. What did you notice?",
                     (("eod", "'timed out while sending end of data' in the log"),
                      ("stuck", "mail stays in the queue"), ("slow", "mail arrives late"),
                      ("none", "nothing specific: a health check")),
                     default="none")  # fmt: skip
Q_SEND = Question("send_test", "confirm",
                  "End-of-data timeouts: may pfdiag send 6 small-to-large REAL test messages (300 bytes to 1 MB, each "
                  "with a clear subject and a Message-ID the report quotes) to a mailbox you name, to tell a path-MTU "
                  "problem from a slow receiver?", default="no")  # fmt: skip
Q_TO = Question("test_to", "text", "Recipient of the test messages (any mailbox whose mail goes through the same next hop):",
                validate="address")  # fmt: skip
Q_ACT = Question("act_on_queue", "confirm", "Review the queue actions now (each is shown and confirmed separately)?",
                 default="no")  # fmt: skip

# Never asked: the evidence names the destinations. Given (--domain, --answer domain=...), it
# focuses the diagnosis on the mail to that domain, as in "mail to example.com is stuck".
Q_DOMAIN = Question("domain", "text", "Only the mail to this domain:", default="", validate="domain")

QUESTIONS = {q.key: q for q in (Q_TARGET, Q_HOST, Q_SNAPSHOT, Q_MAILQ, Q_PASTED_LOG, Q_SYMPTOM, Q_SEND, Q_TO, Q_ACT, Q_DOMAIN)}


def send_question(state: State, symptom: str | None) -> Question:
    """Q_SEND, led by what the evidence says: timeouts found (where), or only the operator's word."""
    if state.eod_dest:
        lead = f"End-of-data timeouts to {state.eod_dest}"
    elif symptom == "eod" and not state.symptom_hits:
        lead = "pfdiag found no end-of-data timeout in what it read; a test shows whether it happens now"
    else:
        lead = "End-of-data timeouts"
    return Question(Q_SEND.key, Q_SEND.kind, lead + Q_SEND.message.removeprefix("End-of-data timeouts"),
                    Q_SEND.choices, Q_SEND.default)  # fmt: skip


def recipient_question(state: State) -> Question:
    """Q_TO, saying what the test does and where it goes: the destination and its next hop. Any
    mailbox whose mail takes that next hop will do (a real admin seldom has one at the affected domain)."""
    if state.eod_dest:
        via = f" ({state.eod_hop})" if state.eod_hop else ""
        where = (f"The test messages go to the next hop of {state.eod_dest}{via}, as Postfix sends there. "
                 f"Any mailbox behind that next hop will do: one at {state.eod_dest}, or at another domain it "
                 f"serves; nothing is needed from its owner but to delete 6 test messages.")  # fmt: skip
    else:
        where = ("The test messages go to the next hop of the recipient's domain, as Postfix sends there: "
                 "name a mailbox at (or behind the same next hop as) the destination that timed out.")
    return Question(Q_TO.key, Q_TO.kind, where + "\nRecipient of the test messages:", validate=Q_TO.validate)


def next_step(answers: Mapping[str, str], state: State) -> Step:
    a = answers
    if "target" not in a:
        return Ask(Q_ELSEWHERE if state.nothing_here else Q_TARGET)
    if a["target"] == "ssh" and "host" not in a:
        return Ask(Q_HOST)
    if a["target"] == "snapshot" and "snapshot" not in a:
        return Ask(Q_SNAPSHOT)
    if a["target"] == "pasted":
        if "mailq" not in a:
            return Ask(Q_MAILQ)
        if "pasted_log" not in a:
            return Ask(Q_PASTED_LOG)
    if not state.collected:
        return Run("collect")
    if not state.checked:
        if not state.deferred and "symptom" not in a:
            return Ask(Q_SYMPTOM)
        if a.get("symptom", "none") != "none" and not state.searched:
            return Run("search")  # look for what the operator noticed, and say what was found where
        wants_eod = state.eod or a.get("symptom") == "eod"
        if state.live and wants_eod and "send_test" not in a:
            return Ask(send_question(state, a.get("symptom")))
        if a.get("send_test") == "yes" and "test_to" not in a:
            return Ask(recipient_question(state))
        return Run("checks")
    if state.interactive and state.queue_actions and "act_on_queue" not in a:
        return Ask(Q_ACT)
    return Done()


def check_answers(answers: Mapping[str, str]) -> dict[str, str]:
    """Validate answers given up front (flags, a file): unknown keys, choices, formats."""
    out: dict[str, str] = {}
    for key, value in answers.items():
        q = QUESTIONS.get(key)
        if q is None:
            raise UsageError(f"unknown answer {key!r}: known are {', '.join(sorted(QUESTIONS))}")
        value = str(value).strip()
        if q.kind == "confirm":
            low = value.lower()
            if low not in ("yes", "no", "y", "n", "true", "false"):
                raise UsageError(f"answer {key} must be yes or no, not {value!r}")
            value = "yes" if low in ("yes", "y", "true") else "no"
        elif q.kind == "select" and value not in {v for v, _ in q.choices}:
            raise UsageError(f"answer {key} must be one of {', '.join(v for v, _ in q.choices)}, not {value!r}")
        elif q.validate:
            why = VALIDATORS[q.validate](value)
            if why:
                raise UsageError(f"answer {key}={value!r}: expected {why}")
        out[key] = value
    return out


def default_answer(q: Question) -> str:
    """Report mode never prompts: a question without a safe default is a usage error."""
    if q.default is None:
        raise UsageError(f"missing answer: {q.key} ({q.message.rstrip(':')}); give it with --answer {q.key}=...")
    return q.default
