"""Deferral reason text -> cause id (+ SMTP phase, next hop, reply details).

Order (postfix-deferrals.md §3): SOFTBOUNCE status (E33) -> strip "delivery temporarily
suspended: " (collateral) -> connect / conversation / lost connection -> DNS -> TLS -> SASL ->
"host X said:" / "refused to talk to me:" sub-classified into E21-E29 (provider texts from
data/replies.toml first, generic patterns here) -> loop / transport / local delivery.

classify() runs once per deferral line of multi-million-line logs, so the branch is picked by
the first character and str.startswith; regexes run only inside the chosen branch, a reply meets
the provider rules only when one trie-shaped regex finds one of their literal texts in it, and
results are memoised on (reason, status, dsn class) in a small LRU cache (CACHE_SIZE).
"""

from __future__ import annotations

import re
import sys
import warnings
from dataclasses import dataclass, replace
from functools import lru_cache
from importlib import resources
from typing import Callable, Iterable

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

from diagnose.causes import CAUSES

UNCLASSIFIED = "unclassified"
SUSPENDED = "delivery temporarily suspended: "
PHASES = frozenset(
    {"connect", "greeting", "helo", "starttls", "tls", "xforward", "mail", "rcpt", "data", "body",
     "end-of-data", "dns", "sasl", "local", "queue", "transport"}
)


@dataclass(frozen=True, slots=True)
class Classification:
    cause_id: str  # "E01".."E38" or UNCLASSIFIED
    reason: str  # the inner reason ("delivery temporarily suspended: " stripped), verbatim
    phase: str | None = None  # connect, greeting, helo, starttls, tls, xforward, mail, rcpt, data, body, end-of-data, dns, sasl, local, queue, transport
    host: str | None = None
    addr: str | None = None
    port: int | None = None
    reply_code: int | None = None  # for "host X said:" / "refused to talk to me:"
    enhanced_code: str | None = None  # e.g. "4.7.1"
    command: str | None = None  # MAIL FROM, RCPT TO, DATA, end of DATA
    collateral: bool = False  # was wrapped in "delivery temporarily suspended: "
    # the cause the text has without the overriding context: the inner cause under SOFTBOUNCE
    # (E33) or expiry (E38), the network/reply cause when a local next hop made it E32
    subcause: str | None = None
    provider: str | None = None  # who sent a recognised third-party reply (Gmail, Microsoft, ...)
    hint: str | None = None  # provider advice, or what sets this text apart within its cause
    local_nexthop: bool = False  # next hop is loopback or a unix socket: a service on this machine
    reply_text: str | None = None  # the server's words, codes and multi-line prefixes removed


# ---------------------------------------------------------------------------- provider replies

@dataclass(frozen=True, slots=True)
class ReplyRule:
    provider: str
    cause_id: str
    pattern: re.Pattern[str]
    host: re.Pattern[str] | None = None
    advice: str | None = None
    # lowercase texts of which at least one must occur for the pattern to match (None: always try)
    needles: tuple[str, ...] | None = None


def parse_reply_rules(text: str) -> tuple[tuple[ReplyRule, ...], tuple[str, ...]]:
    """replies.toml text -> (rules in file order, problems). A bad entry is skipped, not fatal."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return (), (f"replies.toml: {exc}",)
    entries = doc.get("reply", [])
    if not isinstance(entries, list):
        return (), ("replies.toml: 'reply' must be an array of tables ([[reply]])",)
    rules: list[ReplyRule] = []
    problems: list[str] = []
    for n, entry in enumerate(entries, 1):
        try:
            rules.append(_reply_rule(entry))
        except (TypeError, ValueError, KeyError, re.error) as exc:
            problems.append(f"replies.toml entry {n}: {exc}")
    return tuple(rules), tuple(problems)


def _reply_rule(entry: object) -> ReplyRule:
    if not isinstance(entry, dict):
        raise TypeError("not a table")
    provider, cause, pattern = entry["provider"], entry["cause"], entry["pattern"]
    host, advice = entry.get("host"), entry.get("advice")
    if not all(isinstance(v, str) and v for v in (provider, cause, pattern)):
        raise ValueError("provider, cause and pattern must be non-empty strings")
    if cause not in CAUSES:
        raise ValueError(f"unknown cause {cause!r}")
    if host is not None and not isinstance(host, str) or advice is not None and not isinstance(advice, str):
        raise ValueError("host and advice must be strings")
    return ReplyRule(
        # ASCII case folding: SMTP replies are ASCII, and it keeps the substring prefilter exact
        provider, cause, re.compile(pattern, re.I | re.A),
        re.compile(host, re.I | re.A) if host else None, advice or None, literal_needles(pattern),
    )


_ESCAPED_LITERAL = frozenset(".[](){}?*+|^$\\/-:#@<>=,;!'\"~&% ")
_QUANT = frozenset("?*{")


def literal_needles(pattern: str) -> tuple[str, ...] | None:
    """The leading literal text of every top-level alternative, lowercased, or None when one of
    them has no literal start of 3+ characters. Any match of the pattern contains one of them, so
    a reply without any can skip the regex (a substring test is far cheaper than re.I search)."""
    needles: list[str] = []
    for alt in _top_level_alternatives(pattern):
        lead = _literal_lead(alt)
        if lead is None or len(lead) < 3 or not lead.isascii():
            return None
        needles.append(lead.lower())
    return tuple(needles) or None


def _top_level_alternatives(pattern: str) -> list[str]:
    alts, depth, start, i = [], 0, 0, 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "[":  # skip a character class whole: its "|" and ")" are literal
            j = i + 1
            while j < len(pattern) and pattern[j] != "]":
                j += 2 if pattern[j] == "\\" else 1
            i = j + 1
            continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            alts.append(pattern[start:i])
            start = i + 1
        i += 1
    alts.append(pattern[start:])
    return alts


def _literal_lead(alt: str) -> str | None:
    out: list[str] = []
    i = 0
    while alt.startswith(("^", "\\b"), i):  # zero-width anchors before the text
        i += 1 if alt[i] == "^" else 2
    while i < len(alt):
        ch = alt[i]
        if ch == "\\":
            nxt = alt[i + 1: i + 2]
            if nxt not in _ESCAPED_LITERAL:
                break  # \b, \d, \s, \w ...: no longer a fixed text
            out.append(nxt)
            i += 2
        elif ch in ".[(|^$":
            break
        elif ch in _QUANT or ch == "+":
            break
        else:
            out.append(ch)
            i += 1
    if i < len(alt) and alt[i] in _QUANT and out:
        out.pop()  # "?", "*", "{0,": the character before it may be absent
    return "".join(out)


def _load_reply_rules() -> tuple[ReplyRule, ...]:
    try:
        text = resources.files("diagnose").joinpath("data/replies.toml").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        warnings.warn(f"pfdiag: provider reply texts not loaded: {exc}", RuntimeWarning, stacklevel=2)
        return ()
    rules, problems = parse_reply_rules(text)
    for problem in problems:
        warnings.warn(f"pfdiag: {problem} (skipped)", RuntimeWarning, stacklevel=2)
    return rules


def needle_gate(rules: tuple[ReplyRule, ...]) -> re.Pattern[str] | None:
    """One regex over every rule's needles: a reply it does not match can skip the whole rule
    loop. None when some rule has no needles (then every reply must run the loop). Shaped as a
    trie (_trie_pattern): on the benchmark log's replies a flat alternation of the ~100 needles
    took 7-11 us per reply, the trie 2 us."""
    if not rules or any(r.needles is None for r in rules):
        return None
    return re.compile(_trie_pattern(n for r in rules for n in r.needles or ()))


_Trie = dict[str, "_Trie"]  # one character -> the rest; "" marks the end of a word


def _trie_pattern(words: Iterable[str]) -> str:
    """A regex matching exactly the words, shaped as a trie: the branches at each point start with
    distinct characters, so the engine follows one path instead of trying every word in turn."""
    trie: _Trie = {}
    for word in words:
        node = trie
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}  # the end of a word

    def build(node: _Trie) -> str:
        alts = []
        for ch in sorted(k for k in node if k):
            sub, lit = node[ch], re.escape(ch)
            while len(sub) == 1 and "" not in sub:  # a chain without branches: one literal
                ((nxt, sub),) = sub.items()
                lit += re.escape(nxt)
            alts.append(lit + build(sub))
        if not alts:
            return ""
        body = alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
        return f"(?:{body})?" if "" in node else body

    return build(trie)


REPLY_RULES: tuple[ReplyRule, ...] = _load_reply_rules()
_REPLY_GATE = needle_gate(REPLY_RULES)

# ------------------------------------------------------------------ generic reply heuristics
# Tried in this order after the provider rules (postfix-deferrals.md §3 E21-E28). Each rule is
# cheap first: lowercase substrings ("words"), then the parsed enhanced code, then small regexes
# that only run when their guard substring is present. "hint" marks texts whose fix differs.

@dataclass(frozen=True, slots=True)
class _Generic:
    cause_id: str
    words: tuple[str, ...] = ()  # any of these in the lowercased reply
    escs: frozenset[str] = frozenset()  # or the reply's enhanced code is one of these
    guarded: tuple[tuple[str, re.Pattern[str]], ...] = ()  # or (guard in text and regex matches)
    hint: str | None = None

    def matches(self, low: str, esc: str | None) -> bool:
        if esc is not None and esc in self.escs:
            return True
        for word in self.words:
            if word in low:
                return True
        for guard, rx in self.guarded:
            if guard in low and rx.search(low):
                return True
        return False


def _g(guard: str, pattern: str) -> tuple[str, re.Pattern[str]]:
    return guard, re.compile(pattern)


_GENERIC: tuple[_Generic, ...] = (
    _Generic("E21", ("greylist", "graylist", "grey list", "gray list", "not yet authorized to deliver mail from",
                     "not yet authorised to deliver mail from"),
             guarded=(_g("service currently unavailable", r"^45[01] 4\.3\.2 service currently unavailable"),
                      _g("451 4.7.", r"^451 4\.7\.[56][0-9]{2}\b"))),
    _Generic("E22", ("unusual rate", "rate limit", "rate-limit", "ratelimit", "at a rate that", "temporarily deferred due to",
                     "concurrent connections", "sending too fast", "throttl", "exceeded the maximum number of connections",
                     "too many connections", "too many concurrent", "too many sessions", "too many recipients",
                     "too many messages", "too many mail", "too much mail", "too many bounces", "too many complaints"),
             frozenset({"4.7.28", "4.7.650", "4.7.651", "4.7.652"}),
             (_g("rp-00", r"\brp-00[0-9]\b"), _g("4.7.", r"\b4\.7\.(?:28|65[0-2])\b"))),
    _Generic("E23", ("blocked using", "blocklist", "block list", "blacklist", "black list", "denylist", "deny list",
                     "reputation", "spamhaus", "unsolicited", "dnsbl"),
             guarded=(_g("s31", r"\ba?s31[45]0\b"), _g("rbl", r"\brbl\b"),
                      _g("spam", r"(?:as|likely|identified as|considered) spam\b|spam (?:detected|content)"))),
    _Generic("E24", ("cannot find your hostname", "cannot find your reverse hostname", "helo command rejected: host not found",
                     "reverse dns", "reverse lookup", "reverse hostname"),
             frozenset({"4.7.25"}),
             (_g("ptr", r"\bptr\b"), _g("rdns", r"\brdns\b"), _g("4.7.25", r"\b4\.7\.25\b"))),
    _Generic("E25", ("sender address rejected", "sender domain not found", "sender domain does not exist"),
             frozenset({"4.1.7", "4.1.8"}), (_g("4.1.", r"\b4\.1\.[78]\b"),)),
    _Generic("E26", ("temperror", "dns timeout", "dns temporary", "temporary dns", "dns lookup timeout",
                     "dns lookup failure", "dns failure"), frozenset({"4.7.23", "4.7.24", "4.7.26"}),
             (_g("spf", r"\bspf\b"), _g("dkim", r"\bdkim\b"), _g("dmarc", r"\bdmarc\b"),
              _g("4.7.2", r"\b4\.7\.2[346]\b"))),
    _Generic("E27", ("relay access denied", "relaying denied"),
             hint="relay refused: if this is your relayhost, authenticate to it (SASL) or get your IP allowed; "
                  "if it is the domain's MX, that server is not set up for the domain"),
    _Generic("E27", ("recipient address rejected", "recipient unknown", "recipient not found", "user unknown", "unknown user",
                     "no such user", "mailbox full", "mailbox is full", "mailbox unavailable", "mailbox is unavailable",
                     "mailbox disabled", "mailbox is disabled", "mailbox is currently disabled", "mailbox currently disabled",
                     "mailbox temporarily disabled", "mailbox is inactive", "account is disabled", "account disabled",
                     "account is inactive", "invalid recipient", "mailbox not found", "over quota", "overquota",
                     "quota exceeded", "temporary lookup failure", "server configuration problem", "out of storage"),
             frozenset({"4.2.0", "4.2.1", "4.2.2", "4.2.3", "4.2.4", "4.1.0", "4.1.1", "4.1.2", "4.1.3", "4.1.4",
                        "4.1.5", "4.1.6"}),
             (_g("4.2.", r"\b4\.2\.[0-4]\b"), _g("4.1.", r"\b4\.1\.[0-6]\b"))),
    _Generic("E28", ("insufficient system storage", "insufficient system resources", "queue file write error",
                     "service unavailable - try again later", "ports are busy", "timeout exceeded", "disk full",
                     "internal error", "internal server error", "local error", "resources unavailable",
                     "resource unavailable", "resources temporarily unavailable", "resource temporarily unavailable",
                     "server busy", "system busy", "too busy", "qq read error", "qqt failure", "qq temporary problem",
                     "qq write error", "qq trouble", "qq crashed", "service temporarily unavailable"),
             frozenset({"4.3.1", "4.3.2", "4.4.5"}),
             (_g("4.3.", r"\b4\.3\.[12]\b"), _g("4.4.5", r"\b4\.4\.5\b"),
              _g("temporary ", r"temporary (?:local|server|system) (?:problem|error|failure)"))),
)
# A refusal at greeting/HELO keeps E05 unless the text says why (§3 E05: classify with E21-E27).
_REFUSAL_CAUSES = frozenset({"E21", "E22", "E23", "E24", "E25", "E26", "E27"})
# A 5xx reply: only causes that are still worth acting on; the rest is a plain bounce (E37).
_HARD_CAUSES = frozenset({"E23", "E24", "E25", "E26"})

_CMD_PHASE = {
    "MAIL FROM": "mail", "RCPT TO": "rcpt", "DATA": "data", "end of DATA": "end-of-data",
    "XFORWARD": "xforward", "STARTTLS": "starttls", "EHLO": "helo", "HELO": "helo", "LHLO": "helo",
    "HELO/EHLO": "helo", "AUTH": "sasl", "BDAT": "body",
}
_HARD_STATUSES = frozenset({"bounced", "undeliverable", "undeliverable-but-not-cached"})

# ------------------------------------------------------------------------------ regexes
_HOSTADDR = re.compile(r"(?P<host>[^\s\[\]]*)\[(?P<addr>[^\]]*)\](?::(?P<port>[0-9]{1,5})\b)?")
_CONNECT_BR = re.compile(r"connect to (?P<host>[^\[]*)\[(?P<addr>[^\]]*)\](?::(?P<port>[^:\s]*))?: (?P<err>.*)", re.S)
_CONNECT_PLAIN = re.compile(r"connect to (?P<host>\S+?)(?::(?P<port>[0-9]{1,5}))?: (?P<err>.*)", re.S)
_OLD_PORT = re.compile(r"(?P<err>.*) \(port (?P<port>[0-9]{1,5})\)", re.S)  # Postfix 2.2: "... (port 25)"
_CONV = re.compile(
    r"(?:conversation|lost connection) with (?P<host>[^\s\[]*)"
    r"(?:\[(?P<addr>[^\]]*)\](?::(?P<port>[0-9]{1,5}))?)?(?P<timed> timed out)? while (?P<what>.*)", re.S)
_HOST = re.compile(
    r"host (?P<host>\S*?)(?:\[(?P<addr>[^\]]*)\](?::(?P<port>[0-9]{1,5}))?)? "
    r"(?P<verb>said|refused to talk to me):(?P<reply>.*)", re.S)
# matched at the last "(" only: no other can start it (the command has no parentheses), and
# re.search of the old leading \s* tried every position of the reply (5 us of a 30 us miss)
_IN_REPLY = re.compile(r"\(in reply to (?P<cmd>[^()]*?) command\)\s*$")
_CODE = re.compile(r"(?P<code>[2-5][0-9]{2})(?:[ -]|$)(?:(?P<esc>[2-5]\.[0-9]{1,3}\.[0-9]{1,3})(?=\s|$))?")
_DSN_TEXT = re.compile(r"(?P<cls>[245])\.[0-9]{1,3}\.[0-9]{1,3}\s")  # command output led by a DSN code
_NAME_TYPE = re.compile(r"Name service error for (?:name=)?(?P<name>[^\s:]+)(?: type=(?P<type>\S+?))?:")
_QUEUE_ID = re.compile(r"[0-9A-Za-z]{6,20}: ")
_WHILE_FRAGMENT = re.compile(r"(?<![A-Za-z])while (?P<what>.*)", re.S)
_SERVER = re.compile(r"server (\S+?)[:,]?(?:\s|$)")

# (start of the text after "while ", phase, cause)
_WHILE: tuple[tuple[str, str, str], ...] = (
    ("receiving the initial", "greeting", "E04"),
    ("performing the initial protocol handshake", "greeting", "E04"),  # older Postfix and LMTP wording
    ("sending HELO", "helo", "E06"),  # Postfix 2.0-2.2
    ("sending EHLO", "helo", "E06"),
    ("sending LHLO", "helo", "E06"),
    ("performing the EHLO", "helo", "E06"),
    ("performing the HELO", "helo", "E06"),
    ("performing the LHLO", "helo", "E06"),
    ("receiving the STARTTLS", "starttls", "E06"),
    ("sending XFORWARD", "xforward", "E07"),
    ("sending MAIL FROM", "mail", "E07"),
    ("sending RCPT TO", "rcpt", "E07"),
    ("sending DATA", "data", "E07"),
    ("sending message body", "body", "E08"),
    ("sending end of data", "end-of-data", "E09"),
)

Handler = Callable[[str, "bool | None"], Classification]


# ------------------------------------------------------------------------------ helpers

def _port(text: str | None) -> int | None:
    if not text or not (text.isascii() and text.isdigit()) or len(text) > 5:
        return None
    port = int(text)
    return port if 0 < port <= 65535 else None


def _is_local(addr: str | None) -> bool:
    """Loopback address or unix socket: the next hop runs on this machine."""
    if not addr:
        return False
    return addr.startswith(("127.", "::ffff:127.")) or addr in ("::1", "localhost") or "/" in addr


def _none(text: str | None) -> str | None:
    return text or None


# ------------------------------------------------------------------------------ connection

def _connect(t: str, hard: bool | None) -> Classification:
    if t.startswith("connect to transport "):  # qmgr: the delivery agent's socket itself
        where, _, err = t[len("connect to transport "):].partition(": ")
        return Classification("E31", t, "transport", addr=_none(where), local_nexthop=True, hint=_none(err))
    m = _CONNECT_BR.match(t)
    if m:
        host, addr, port, err = _none(m["host"]), _none(m["addr"]), _port(m["port"]), m["err"]
    else:
        m = _CONNECT_PLAIN.match(t)
        if not m:
            return Classification("E03", t, "connect")
        host, addr, port, err = _none(m["host"]), None, _port(m["port"]), m["err"]
    old = _OLD_PORT.fullmatch(err)
    if old:
        err, port = old["err"], port or _port(old["port"])
    if err.startswith(_OLD_GREETING):  # Postfix 1.1-2.2: greeting failures were "connect to" lines
        if err.startswith("server refused to talk to me: "):
            c = _reply(t, hard, refused=True, host=host, addr=addr, port=port, reply=err[30:])
        else:
            c = Classification("E05" if err.startswith("server refused") else "E04", t, "greeting", host, addr, port)
        if _is_local(addr) and c.cause_id in ("E04", "E05"):
            return replace(c, cause_id="E32", subcause=c.cause_id, local_nexthop=True)
        return c
    generic = _connect_cause(err)
    if addr is not None and "/" in addr:  # unix socket: LMTP/filter socket on this machine
        return Classification("E32", t, "connect", host, addr, None, local_nexthop=True, hint=err or None)
    if _is_local(addr) or (addr is None and _is_local(host)):
        return Classification("E32", t, "connect", host, addr, port, subcause=generic, local_nexthop=True)
    return Classification(generic, t, "connect", host, addr, port)


# what Postfix 1.1-2.2 logged after "connect to H[A]: " when the TCP connection opened but the
# session did not start (src/smtp/smtp_connect.c of those versions); 2.3 on logs them as
# "conversation with ... while receiving the initial server greeting" / "host ... refused to talk to me"
_OLD_GREETING = ("read timeout", "server dropped connection", "server refused to talk to me: ",
                 "server refused mail service")


def _connect_cause(err: str) -> str:
    e = err.lower()
    # truncated reasons ("Connection t", "Conn...") still name the family by their start
    if "timed out" in e or e.startswith(("connection t", "operation t")):
        return "E01"
    if "refused" in e or "reset" in e or e.startswith("connection r"):
        return "E02"
    return "E03"


def _conversation(t: str, hard: bool | None) -> Classification:
    m = _CONV.match(t)
    if not m:
        return Classification("E07", t)
    phase, cause = _while(m["what"])
    if cause == "E09" and not m["timed"]:
        cause = "E10"  # "lost connection ... while sending end of data"
    addr = _none(m["addr"])
    return Classification(cause, t, phase, _none(m["host"]), addr, _port(m["port"]), local_nexthop=_is_local(addr))


def _while(what: str) -> tuple[str | None, str]:
    for start, phase, cause in _WHILE:
        if what.startswith(start):
            return phase, cause
    return None, "E07"


# ------------------------------------------------------------------------------ replies

@lru_cache(maxsize=None)  # at most 400 codes
def _continuation(code: str) -> re.Pattern[str]:
    return re.compile(rf"\s{code}[ -](?:[2-5]\.[0-9]{{1,3}}\.[0-9]{{1,3}}(?:\s+|$))?")


def _parse_reply(reply: str) -> tuple[int | None, str | None, str | None, str, str]:
    """-> (code, enhanced, command, words, full) where full is "<code> <enhanced> <words>"."""
    reply = reply.strip()
    command = None
    paren = reply.rfind("(")
    m = _IN_REPLY.match(reply, paren) if paren >= 0 else None
    if m:  # str.rstrip and \s agree on what is whitespace
        command, reply = m["cmd"], reply[:paren].rstrip()
    m = _CODE.match(reply)
    if not m:
        return None, None, command, reply, reply
    code, esc = m["code"], m["esc"]
    words = reply[m.end():].lstrip()
    if reply[3:4] == "-":  # multi-line: drop the "NNN-"/"NNN " prefix of every later line
        words = _continuation(code).sub(" ", " " + words).strip()
    if esc and esc[0] != code[0]:
        esc = None  # Postfix ignores an enhanced code whose class contradicts the reply code
    full = f"{code} {esc} {words}" if esc else f"{code} {words}"
    return int(code), esc, command, words, full


def _match_reply(full: str, esc: str | None, host: str | None,
                 allowed: frozenset[str] | None) -> tuple[str, str | None, str | None] | None:
    low = full.lower()
    rules = REPLY_RULES if _REPLY_GATE is None or _REPLY_GATE.search(low) else ()
    for rule in rules:
        if rule.needles is not None:
            for needle in rule.needles:
                if needle in low:
                    break
            else:
                continue  # none of the literal texts the pattern requires is there
        if rule.host is not None and not (host and rule.host.search(host)):
            continue
        if rule.pattern.search(full):
            return rule.cause_id, rule.provider, rule.advice
    for g in _GENERIC:
        if (allowed is None or g.cause_id in allowed) and g.matches(low, esc):
            return g.cause_id, None, g.hint
    return None


def _masked(words: str) -> bool:
    """A greeting rewritten to asterisks by an SMTP-inspecting firewall (Cisco PIX fixup)."""
    return "*" in words and not words.strip("20 *\t\n")


def _reply(t: str, hard: bool | None, *, refused: bool, host: str | None, addr: str | None,
           port: int | None, reply: str) -> Classification:
    code, esc, command, words, full = _parse_reply(reply)
    phase = "greeting" if refused else _CMD_PHASE.get(command or "")
    is_hard = code // 100 == 5 if code is not None else bool(hard)
    hint = None
    if refused:
        found = _match_reply(full, esc, host, _REFUSAL_CAUSES)
        cause, provider, hint = found or ("E05", None, None)
    else:
        found = _match_reply(full, esc, host, _HARD_CAUSES if is_hard else None)
        if found:
            cause, provider, hint = found
        elif is_hard and hard is False:  # a 5xx logged as deferred: softened, not bounced
            cause, provider = "E29", None
            hint = ("a 5xx reply kept as a deferral: Postfix does this when the relayhost or fallback_relay "
                    "rejects (look for 'relayhost configuration problem'), or soft_bounce is on")
        else:
            cause, provider = ("E37" if is_hard else "E29"), None
    if _masked(words):
        hint = "greeting masked with asterisks: an SMTP-inspecting firewall (PIX/ASA) sits in the path"
        if not refused:  # the banner itself is evidence for the end-of-data timeouts it causes
            cause, phase = "E09", "greeting"
    elif code is not None and code < 400 and not found and not refused:
        cause = UNCLASSIFIED  # a 2xx/3xx reply is no failure
    local = _is_local(addr)
    subcause = None
    if local and cause in ("E28", "E29"):  # a local filter/LMTP server failing is a local problem
        cause, subcause = "E32", cause
    return Classification(cause, t, phase, host, addr, port, code, esc, command, subcause=subcause,
                          provider=provider, hint=hint, local_nexthop=local, reply_text=words or None)


def _host_line(t: str, hard: bool | None) -> Classification:
    m = _HOST.match(t)
    if not m:
        if "with my own hostname" in t:  # "greeted me with ..." / "replied to HELO/EHLO with ..."
            return Classification("E30", t, "greeting", *_hostaddr(t))
        return _fallback(t, hard)
    return _reply(t, hard, refused=m["verb"] != "said", host=_none(m["host"]), addr=_none(m["addr"]),
                  port=_port(m["port"]), reply=m["reply"])


def _bare_reply(t: str, hard: bool | None) -> Classification:
    return _reply(t, hard, refused=False, host=None, addr=None, port=None, reply=t)


def _hostaddr(t: str) -> tuple[str | None, str | None, int | None]:
    m = _HOSTADDR.search(t)
    if not m:
        return None, None, None
    return _none(m["host"]), _none(m["addr"]), _port(m["port"])


# ------------------------------------------------------------------------------ DNS, TLS, SASL

def _dns(t: str, hard: bool | None) -> Classification:
    m = _NAME_TYPE.search(t)
    name = m["name"] if m else None
    if "DNS reply filter" in t:
        return Classification("E14", t, "dns", name)
    if t.rstrip().endswith("try again"):
        return Classification("E12", t, "dns", name, hint=f"type={m['type']}" if m and m["type"] else None)
    return Classification("E13", t, "dns", name)


def _native_lookup(t: str, hard: bool | None) -> Classification:
    host = t[len("unable to look up host "):].partition(":")[0] or None
    cause = "E12" if "Temporary failure" in t or "try again" in t else "E13"
    return Classification(cause, t, "dns", host)


def _tls_not_offered(t: str, hard: bool | None) -> Classification:
    host, addr, port = _hostaddr(t)
    return Classification("E16", t, "tls", host, addr, port, local_nexthop=_is_local(addr))


def _tls_refused(t: str, hard: bool | None) -> Classification:
    head, sep, reply = t.partition(" refused to start TLS: ")
    host, addr, port = _hostaddr(head)
    if not sep:
        return Classification("E19", t, "tls", host, addr, port)
    code, esc, command, words, _ = _parse_reply(reply)
    return Classification("E17", t, "starttls", host, addr, port, code, esc, command,
                          local_nexthop=_is_local(addr), reply_text=words or None)


def _tlsa(t: str, hard: bool | None) -> Classification:
    target = t[len("TLSA lookup error for "):]
    host, _, port = target.rpartition(":")
    return Classification("E19", t, "tls", host or target, port=_port(port) if port.isdigit() else None)


def _sasl(t: str, hard: bool | None) -> Classification:
    host, addr, port = _hostaddr(t)
    if not host and not addr:  # "... with server X" without brackets
        m = _SERVER.search(t)
        host = m[1] if m else None
    code = esc = words = None
    _, said, reply = t.partition(" said: ")
    if said:
        code, esc, _, words, _ = _parse_reply(reply)
    return Classification("E20", t, "sasl", host, addr, port, code, esc, local_nexthop=_is_local(addr),
                          reply_text=words or None)


def _null_mx(t: str, hard: bool | None) -> Classification:
    domain, sep, _ = t[len("Domain "):].partition(" does not accept mail")
    return Classification("E13", t, "dns", domain or None, hint="null MX") if sep else _fallback(t, hard)


def _pix(t: str, hard: bool | None) -> Classification:
    host, addr, port = _hostaddr(t)
    return Classification("E09", t, "end-of-data", host, addr, port,
                          hint="PIX workarounds on: an SMTP-inspecting firewall is likely (see E09 cause 3)")


# ------------------------------------------------------------------------------ dispatch

def _fixed(cause: str, phase: str | None, hint: str | None = None) -> Handler:
    def handler(t: str, hard: bool | None) -> Classification:
        return Classification(cause, t, phase, hint=hint)
    return handler


def _if_contains(needle: str, cause: str, phase: str | None) -> Handler:
    def handler(t: str, hard: bool | None) -> Classification:
        return Classification(cause, t, phase) if needle in t else _fallback(t, hard)
    return handler


def _with_host(cause: str, phase: str | None) -> Handler:
    def handler(t: str, hard: bool | None) -> Classification:
        host, addr, port = _hostaddr(t)
        return Classification(cause, t, phase, host, addr, port, local_nexthop=_is_local(addr))
    return handler


# Exact reason texts (postfix-deferrals.md §1.4, §3).
_EXACT: dict[str, tuple[str, str | None, str | None]] = {
    "mail transport unavailable": ("E31", "transport", None),
    "transport is unavailable": ("E31", "transport", None),  # the older wording
    "unknown mail transport error": ("E31", "transport", None),
    "address resolver failure": ("E31", "transport", None),
    "deferred transport": ("E31", "transport", "the transport is listed in defer_transports"),
    "Too many address verification requests": ("E31", "transport", None),
    "Server configuration error": ("E31", None, "relayhost/fallback_relay problem or local misconfiguration: see the warning lines"),
    "server configuration error": ("E03", "connect", "bind failure: check smtp_bind_address / smtp_bind_address6"),
    "server unavailable or unable to receive mail": ("E03", "connect", "Postfix had addresses but tried none of them"),
    "all network protocols are disabled": ("E03", "connect", "inet_protocols allows none of the destination's address families"),
    "table lookup failure": ("E35", "local", None),
    "alias database unavailable": ("E35", "local", None),
    "user lookup error": ("E35", "local", None),
    "mail system configuration error": ("E35", "local", None),
    "cannot find alias database owner": ("E35", "local", None),
    "Cannot start TLS: handshake failure": ("E18", "tls", None),
    "Server certificate not verified": ("E19", "tls", None),
    "non DNSSEC destination": ("E19", "tls", "DANE: the destination is not DNSSEC-signed"),
    "no TLSA records found": ("E19", "tls", None),
    "TLSA records unusable": ("E19", "tls", None),
    "client TLS configuration problem": ("E19", "tls", "your own TLS settings (keys, certificates, CA files)"),
    "TLS is required, but our TLS engine is unavailable": ("E19", "tls", "your own TLS settings"),
    "TLS is required, but unavailable": ("E19", "tls", "your own TLS settings"),
    "Temporary lookup error": ("E19", "tls", "the TLS policy table lookup failed: is smtp_tls_policy_maps built?"),
    "unexpected server message": ("E19", "tls", None),
    "user unknown": ("E37", "local", None),
    "User unknown": ("E37", "local", None),
    "User unknown in local recipient table": ("E37", "local", None),
    "User unknown in virtual alias table": ("E37", "local", None),
    "User unknown in virtual mailbox table": ("E37", "local", None),
    "User unknown in relay recipient table": ("E37", "local", None),
    "message is administratively expired": ("E38", "queue", None),
    "temporary failure": ("E36", "local", None),
    # Postfix's own bounce/defer service could not record the outcome (2.0-2.2 wording, then 2.3+)
    "bounce failed": ("E31", None, "Postfix's bounce service failed: read the bounce/defer warnings and check the queue's disk space"),
    "bounce or trace service failure": ("E31", None, "Postfix's bounce or trace service failed: read its warnings, check disk space"),
    "defer or trace service failure": ("E31", None, "Postfix's defer or trace service failed: read its warnings, check disk space"),
    "system resource problem": ("E36", "local", None),
}

# (prefix, handler), grouped by first character so one dict lookup narrows the candidates.
_PREFIXES: tuple[tuple[str, Handler], ...] = (
    ("connect to ", _connect),
    ("conversation with ", _conversation),
    ("lost connection with ", _conversation),
    ("host ", _host_line),
    ("Host or domain name not found", _dns),
    ("Name service error", _dns),
    ("Host found but no data record", _fixed("E13", "dns")),
    ("unable to look up host ", _native_lookup),
    ("Name server loop for ", _fixed("E12", "dns")),
    ("Error looking up name=", _dns),
    ("unable to find primary relay for ", _fixed("E15", "dns")),
    ("no MX host for ", _fixed("E13", "dns")),
    ("Domain ", _null_mx),
    ("TLS is required, but was not offered by host ", _tls_not_offered),
    ("TLS is required, but host ", _tls_refused),
    ("TLS is required", _fixed("E19", "tls")),
    ("Cannot start TLS", _fixed("E18", "tls")),
    ("TLSA lookup error for ", _tlsa),
    ("certificate verification failed for ", _with_host("E19", "tls")),
    ("SSL_connect error to ", _with_host("E18", "tls")),
    ("TLS library problem", _fixed("E18", "tls")),
    ("SASL ", _sasl),
    ("SMTPS wrappermode", _fixed("E04", "greeting", "port 465 needs smtp_tls_wrappermode = yes")),
    ("enabling PIX workarounds", _pix),
    ("mail for ", _if_contains("loops back to myself", "E30", None)),
    ("mail forwarding loop for ", _fixed("E37", "local")),
    ("alias database loop for ", _fixed("E37", "local")),
    ("unknown user: ", _fixed("E37", "local")),
    ("cannot update mailbox ", _fixed("E34", "local")),
    ("error reading forwarding file", _fixed("E34", "local", "local(8) could not read the user's .forward: its owner and permissions")),
    ("cannot access mailbox ", _fixed("E34", "local")),
    ("cannot append message to ", _fixed("E34", "local")),
    ("maildir delivery failed", _fixed("E34", "local")),
    ("unable to lock for exclusive access", _fixed("E34", "local")),
    ("unable to create lock file", _fixed("E34", "local")),
    ("temporary failure", _fixed("E36", "local")),
    ("Command died with ", _fixed("E36", "local")),
    ("Command time limit exceeded", _fixed("E36", "local")),
    ("network address conversion failed", _fixed("E03", "connect")),
    ("local data error while talking to ", _fixed("E31", None, "could not read the queue file")),
    ("message is administratively expired", _fixed("E38", "queue")),
)


def _index_by_first_char(prefixes: tuple[tuple[str, Handler], ...]) -> dict[str, tuple[tuple[str, Handler], ...]]:
    """Keeps the table order within each group: longer, more specific prefixes stay first."""
    table: dict[str, tuple[tuple[str, Handler], ...]] = {}
    for prefix, handler in prefixes:
        table[prefix[0]] = table.get(prefix[0], ()) + ((prefix, handler),)
    return table


_BY_FIRST = _index_by_first_char(_PREFIXES)


def _dispatch(t: str, hard: bool | None, *, nested: bool = False) -> Classification:
    exact = _EXACT.get(t)
    if exact is not None:
        return Classification(exact[0], t, exact[1], hint=exact[2])
    for prefix, handler in _BY_FIRST.get(t[:1], ()):
        if t.startswith(prefix):
            return handler(t, hard)
    if t.startswith("warning: ") and not nested:  # companion warnings name the same problems
        inner = _dispatch(t[9:], hard, nested=True)
        return replace(inner, reason=t) if inner.cause_id != UNCLASSIFIED else Classification(UNCLASSIFIED, t)
    return _fallback(t, hard, nested=nested)


def _fallback(t: str, hard: bool | None, *, nested: bool = True) -> Classification:
    """Texts with no known lead: a bare reply, a DSN-led command output, a phase, reply words."""
    if _CODE.match(t):
        return _bare_reply(t, hard)
    m = _DSN_TEXT.match(t)
    if m:  # pipe(8): the command printed "4.x.y text" / "5.x.y text"
        return Classification("E36" if m["cls"] == "4" else "E37", t, "local")
    q = None if nested else _QUEUE_ID.match(t)
    if q and len(t) > q.end():  # a whole "QUEUEID: reason" message
        inner = _dispatch(t[q.end():], hard, nested=True)
        if inner.cause_id != UNCLASSIFIED:
            return replace(inner, reason=t)
    m = _WHILE_FRAGMENT.search(t) if "while " in t else None
    if m:  # a fragment of a conversation failure ("...timed out while sending message body")
        phase, cause = _while(m["what"])
        if phase is not None:
            return Classification("E10" if cause == "E09" and "timed out" not in t else cause, t, phase)
    found = _match_reply(t, None, None, None)
    if found:
        return Classification(found[0], t, provider=found[1], hint=found[2])
    return Classification(UNCLASSIFIED, t)


# ------------------------------------------------------------------------------ public API

def _hardness(status: str | None, dsn_class: str | None) -> bool | None:
    """True: the line is a permanent failure; False: a deferral; None: unknown (go by the reply code)."""
    if status in _HARD_STATUSES or dsn_class == "5":
        return True
    if dsn_class == "4" or status == "deferred":
        return False
    return None


# Exact reasons only. Keyed on a shape (numbers, addresses, host names masked) the cache would stop
# growing sooner, but the rules read those parts: "... from [10.4.7.28]" is Gmail's E22 (the
# 4.7.28 rule), "[10.4.7.29]" Microsoft's E21 (tests/unit/test_classify.py), and a Classification
# carries the host, address, port, codes and reply words of its own text. With misses at ~17 us, a
# small cache is enough: repeats come close together (retries of one message at one host), 256
# entries keep 96% of the hits of 4096 on the benchmark logs, and fill within the first thousand
# deferral lines, so their ~0.3 MB is the same at 1M and 4M lines (4096 entries: 2.4 -> 4.5 MB).
CACHE_SIZE = 256


@lru_cache(maxsize=CACHE_SIZE)
def _cached(reason: str, status: str | None, dsn_class: str | None) -> Classification:
    return _classify(reason, status, dsn_class)


def _classify(reason: str, status: str | None, dsn_class: str | None) -> Classification:
    text, collateral = reason, False
    if text.startswith(SUSPENDED):
        text, collateral = text[len(SUSPENDED):], True
    t = text.strip()
    if status == "SOFTBOUNCE":  # E33 first: soft_bounce turned a bounce into this deferral
        inner = _dispatch(t, None) if t else Classification(UNCLASSIFIED, t)
        return replace(inner, cause_id="E33", reason=text, collateral=collateral, subcause=inner.cause_id)
    if status in ("expired", "force-expired"):
        last = _dispatch(t, None) if t and t != "returned to sender" else None
        sub = last.cause_id if last is not None and last.cause_id != UNCLASSIFIED else None
        return Classification("E38", text, "queue", collateral=collateral, subcause=sub)
    if not t:
        return Classification("E11" if collateral else UNCLASSIFIED, text, collateral=collateral)
    c = _dispatch(t, _hardness(status, dsn_class))
    if collateral or c.reason is not text:
        c = replace(c, reason=text, collateral=collateral)
    return c


def classify(reason: str, *, status: str | None = None, dsn: str | None = None) -> Classification:
    """Classify one deferral reason. Never raises; unknown text -> UNCLASSIFIED, kept verbatim.

    status: the status= word (deferred, SOFTBOUNCE, bounced, expired, ...); dsn: the dsn= code,
    used only for its class digit (a 5xx text logged with dsn=4.x.x was softened, not bounced).
    """
    try:
        return _cached(reason, status, dsn[:1] if dsn else None)
    except Exception as exc:  # noqa: BLE001 - one odd line must not stop a multi-million-line scan
        text = reason if isinstance(reason, str) else repr(reason)
        return Classification(UNCLASSIFIED, text, hint=f"classifier error: {exc!r}")


cache_info = _cached.cache_info
cache_clear = _cached.cache_clear


def queued_cause(reason: str) -> str:
    """The cause of a reason read from the queue (postqueue -j's delay_reason, mailq): as
    classify(), except that a permanent failure (E37) there was kept by soft_bounce (main.cf's or
    a transport's -o soft_bounce=yes), so it is E33. The queue has no status= to say so."""
    c = classify(reason)
    return "E33" if c.cause_id == "E37" else c.cause_id
