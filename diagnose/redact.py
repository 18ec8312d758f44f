"""Redaction for support tickets: stable keyed tokens in place of who and where.

Replaced: every address's local part (``user-3fa2c1``), the server's own domains
(``domain-8b21e0.invalid``) and hostnames (``host-77aa01``), client IP addresses (``ip-5d0c9a``,
v4 and v6) and the clients' reverse-DNS names (``host-...``), SASL and Dovecot logins (``login-...``;
a login the log names is hidden with the same token wherever it appears again, e.g. a report's outbreak keys),
and passwords written into smtp/lmtp_sasl_password_maps itself (static:, inline:; ``secret-...``).
Kept, because the diagnosis needs them and they identify no one of the customer's:
status and enhanced codes, reason texts, queue ids, timestamps, other organisations' domains
and the hostnames and addresses of the next hops Postfix talked to (``relay=mx.example[...]``,
``connect to ...``, ``host ... said``).

Tokens are HMAC-SHA256 with a random key per Redactor: the same input gives the same token
within one report or bundle (so "the same recipient failed 12 times" survives), and nothing
outside it can map a token back. The key is never written anywhere.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os
import re
from typing import Any, Iterable

# a local part: a dot-atom, or a quoted string ("John Q. Doe"@example.com, RFC 5321 Quoted-string)
# (also as JSON writes it, postqueue -j: "\"John Q. Doe\"@example.com")
_LOCAL = r'\\"[^"\\\r\n]{1,64}\\"|"(?:[^"\\\r\n]|\\.){1,64}"|[\w.!#$%&\'*+/=?^`{|}~-]{1,64}'
_DOMAIN = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*"
_ADDRESS = re.compile(rf"(?<![\w.+=-])((?:sasl_username|sasl_sender|user|login)=)?({_LOCAL})@({_DOMAIN})")
# role mailboxes (RFC 2142) name no one: "ask postmaster@example.com" stays readable
_ROLES = frozenset({"postmaster", "abuse", "hostmaster", "mailer-daemon", "webmaster", "noc", "security"})
# words that are never this server's name, whatever a hostname or a target's label says: Postfix's
# services, transports, queues and daemons (master.cf's `local`, relay=local) and pfdiag's own words
RESERVED = frozenset("""
    local smtp lmtp virtual relay pipe error retry discard bounce defer trace verify flush proxymap proxywrite
    showq cleanup qmgr oqmgr pickup tlsmgr rewrite anvil scache postlog postscreen dnsblog tlsproxy smtpd
    submission submissions smtps maildrop uucp ifmail bsmtp scalemail-backend mailman postdrop sendmail
    postfix master unix inet fifo pass deferred active hold incoming corrupt saved public private
    localhost localdomain unknown none mail mailq postqueue postsuper postcat postconf dovecot amavis
    spamassassin opendkim snapshot report queue server client host domain sender recipient status
""".split())
# the host field of a syslog line: this machine, whatever myhostname says
_SYSLOG_HOST = re.compile(r"(?:^|(?<=[\"\n]))((?:[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d|\d{4}-\d\d-\d\dT[\d:.]+(?:Z|[+-]\d\d:?\d\d)?) )"
                          r"([A-Za-z0-9][\w.-]*)(?= [\w./-]+(?:\[\d+\])?: )", re.M)
# the name a client gave in HELO/EHLO (its own choice of who it is)
_HELO = re.compile(r"\b(helo=<)([^<>\s\[][^<>\s]*)(>)")
# a Message-ID (its left part is unique per message, its right part most often the writer's host name)
_MESSAGE_ID = re.compile(r"(?i)\b(message-id(?:=|:[ \t]*)<)([^<>@\s]{1,998})(@[^<>\s]*)?(>)")
# header_checks/body_checks log the matched text: "warning: header Subject: ... from client[ip]; from=<...>"
_CHECKS_TEXT = re.compile(r"\b((?:warning|reject|hold|discard|info|redirect|filter|prepend|replace|strip|ignore|bcc|dunno|ok): "
                          r"(?:header|body|mime-header|nested-header) )([^\n]*)( from [^\s\[]*\[[^\]\n]*\];)")
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)")
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{0,4}|(?:\d{1,3}\.){3}\d{1,3})(?![\w:])")
# a next hop Postfix talked to: its address stays (a provider's MX is no secret)
_NEXT_HOP = re.compile(r"(?:relay=|connect to |conversation with |connection with |host |to )([^\s\[\]]+)\[$")
_KEEP_IPS = ("127.0.0.1", "::1", "0.0.0.0", "::")
# where a log names the client that connected to this server
_CLIENT = re.compile(r"(?:connect from|client=|from|rhost=|ip=)\s?[^\[\s]*\[([0-9A-Fa-f:.]+)\]")
# the reverse-DNS name of a client names the customer's customer: hidden beside its address
_CLIENT_NAME = re.compile(r"(\b(?:connect )?from |client=)([A-Za-z0-9][\w-]*(?:\.[\w-]+)+)\[([0-9A-Fa-f:.]+)\]")
_LOGIN = re.compile(r"\b(sasl_username|sasl_sender|user|login)=(<?)([^\s,;<>]+)")
# Dovecot's auth lines in the same mail log: "passwd-file(alice,203.0.113.9,<sess>)"
_DOVECOT_USER = re.compile(r"\b((?:passwd-file|passwd|shadow|pam|sql|ldap|checkpassword|static|lua|oauth2|bsdauth)\()([^,()\s]+)(?=,)")
# the one Postfix setting whose value can hold passwords itself: static:user:pass, inline:{key=user:pass}
# (main.cf, master.cf -o, postconf output; continuation lines start with white space)
_PASSWORD_MAPS = re.compile(r"(\b(?:smtp|lmtp)_sasl_password_maps\s*=[ \t]*)([^\n]*(?:\n[ \t]+[^\n]*)*)")
_INLINE_SECRET = re.compile(r"(\b(?:static|inline):)(\{[^}]*\}?|[^\s,{}]+)")
# a login the log named (sasl_username=bobby) is hidden wherever it appears again on its own: a report's
# submitter keys, access map lines, doveadm commands. Logins that are words of the report itself (severity
# "info", "login", Postfix's "mail") or of one or two characters ("a dry run") are hidden only where they
# stand for the login: a whole field, a submitter's "key"/"via", and the commands pfdiag writes for a login.
_PLAIN_WORDS = RESERVED | _ROLES | frozenset("""
    info ok warning warn problem error critical notice debug fatal panic test admin root nobody guest login plain
    user users sasl auth true false null yes no all any other example
""".split())
# fields that hold a login on its own (the outbreak's submitter rows, a trace's sasl_login, a selection)
_LOGIN_FIELDS = frozenset({"login", "sasl_login", "sasl_user", "sasl_username", "sasl-user"})
_LOGIN_ROWS = frozenset({"logins"})  # lists of {"key": LOGIN, ...}
# fields that hold a client as smtpd names it, "name[address]" (a trace's client)
_CLIENT_FIELDS = frozenset({"client"})
# the commands pfdiag writes for a login (diagnose/outbreak.py), and an access map line
_LOGIN_CONTEXT = r"(?:doveadm auth test|doveadm kick|doveadm user|saslpasswd2 -d|password of|SASL login)[ \t]+'?"
_LOGIN_IN_COMMAND = re.compile(rf"(?im)(?:({_LOGIN_CONTEXT})([^\s'.,;:)]+(?:\.[^\s'.,;:)]+)*)(?=['\s.,;:)]|$)"
                               r"|^()([^\s']+)(?=[ \t]+REJECT\b))")  # fmt: skip
# a word a login may be (not inside a token, an address or a longer name); with up to _FEW_LOGINS logins,
# an alternation of them finds them faster (4 MiB of log: 0.1 s for one login, 1.8 s for 200; per word: 0.4 s)
_FEW_LOGINS = 20
_NOTHING = re.compile(r"(?!)")  # no login to find anywhere (all of them are words of the report, or short)
_WORD = re.compile(r"(?<![\w.@+-])\w[\w.+-]*(?![\w@+-])")


class Redactor:
    def __init__(self, key: bytes | None = None, own_hostnames: Iterable[str] = (), own_domains: Iterable[str] = ()) -> None:
        self._key = key if key is not None else os.urandom(32)
        names = {h.lower().rstrip(".") for h in own_hostnames if h and h.strip()} - RESERVED
        # syslog writes the short name ("mx1" for mx1.example.net): that is this server too
        self._alias = {n.split(".", 1)[0]: n for n in sorted(names)
                       if "." in n and len(n.split(".", 1)[0]) >= 3 and n.split(".", 1)[0] not in RESERVED}  # fmt: skip
        names |= set(self._alias)
        self.own_hostnames = sorted(names, key=len, reverse=True)
        self.own_domains = sorted({d.lower().rstrip(".") for d in own_domains if d and d.strip()}, key=len, reverse=True)
        self._cache: dict[str, str] = {}
        self.clients: set[str] = set()  # addresses seen as clients: hidden everywhere, next-hop context or not
        self.logins: set[str] = set()  # bare logins seen (sasl_username=bobby): hidden wherever they appear
        self._few_logins: re.Pattern[str] | None = None  # what finds them in text (None: not built yet)

    def learn(self, text: Any) -> None:
        """Note the client addresses and logins in text, so that the same address or login is hidden
        wherever it appears later (a client elsewhere may be a next hop here). Call on everything first;
        a structure (a report) is walked, and its login fields (outbreak.top.logins[].key, a trace's
        sasl_login) are learned as logins too."""
        if not isinstance(text, str):
            self._learn_fields(text)
            text = json.dumps(text, default=str)
        for m in _CLIENT.finditer(text or ""):
            try:
                self.clients.add(str(ipaddress.ip_address(m.group(1))))
            except ValueError:
                continue
        # a login without '@' (an address has its own token): hidden wherever it appears on its own
        for m in _LOGIN.finditer(text or ""):
            self._learn_login(m.group(3))
        for m in _DOVECOT_USER.finditer(text or ""):
            self._learn_login(m.group(2))
        # the machine's own name as syslog writes it in every line: hidden everywhere else too
        hosts = {m.group(2).lower() for m in _SYSLOG_HOST.finditer(text or "")} - RESERVED - set(self.own_hostnames)
        hosts = {h for h in hosts if not h.startswith("host-") and not _is_ip(h)}
        if hosts:
            self.own_hostnames = sorted(set(self.own_hostnames) | hosts, key=len, reverse=True)

    def _learn_fields(self, obj: Any, rows: bool = False) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                if isinstance(v, str) and (k in _LOGIN_FIELDS or (rows and k == "key")):
                    self._learn_login(v)
                elif isinstance(v, str) and k in _CLIENT_FIELDS:
                    self.learn(f"client={v}")
                else:
                    self._learn_fields(v, k in _LOGIN_ROWS)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                self._learn_fields(v, rows)

    def _learn_login(self, value: str) -> None:
        x = _bare_login(value).lower()
        if x and "@" not in x and not _TOKEN.fullmatch(x) and not _is_ip(x) and x not in self.logins:
            self.logins.add(x)
            self._few_logins = None

    def token(self, kind: str, value: str) -> str:
        k = f"{kind}\0{value.lower()}"
        if k not in self._cache:
            self._cache[k] = hmac.new(self._key, k.encode(), hashlib.sha256).hexdigest()[:6]
        return f"{kind}-{self._cache[k]}"

    def _is_own_domain(self, domain: str) -> bool:
        d = domain.lower().rstrip(".")
        return any(d == o or d.endswith("." + o) for o in self.own_domains) or d in self.own_hostnames

    def _domain(self, domain: str) -> str:
        """An address's domain: one of this server's domains gets its domain token, this server's
        own hostname (or a host inside its domains) the host token it gets everywhere else."""
        d = domain.lower().rstrip(".")
        if d in self.own_domains:
            return self.token("domain", d) + ".invalid"
        if d in self.own_hostnames:
            return self.token("host", self._alias.get(d, d))
        if self._is_own_domain(d):
            return self.token("host", d)
        return domain

    def text(self, s: str) -> str:
        if not s:
            return s
        s = scrub_secrets(s, self)
        # the text a header/body check matched (a Subject, a line of the body): all of it, first
        s = _CHECKS_TEXT.sub(self._checks_text, s)
        s = _MESSAGE_ID.sub(self._message_id, s)
        # "sasl_username=bob@x": the field name is not part of the local part (which may hold "=")
        s = _ADDRESS.sub(self._address, s)
        s = _HELO.sub(lambda m: m.group(0) if _is_ip(m.group(2)) else f"{m.group(1)}{self._host(m.group(2))}{m.group(3)}", s)
        s = _SYSLOG_HOST.sub(lambda m: f"{m.group(1)}{self._host(m.group(2))}", s)
        s = _CLIENT_NAME.sub(self._client_name, s)
        for name in self.own_hostnames:
            tok = self.token("host", self._alias.get(name, name))  # "mx1" and "mx1.example.net": one token
            s = re.sub(rf"(?<![\w.-]){re.escape(name)}(?![\w.-])", tok, s, flags=re.IGNORECASE)
        for dom in self.own_domains:  # hosts inside an own domain first, then the domain itself
            s = re.sub(rf"(?<![\w.-])((?:[\w-]+\.)+){re.escape(dom)}(?![\w-])",
                       lambda m: self.token("host", m.group(0)), s, flags=re.IGNORECASE)  # fmt: skip
            s = re.sub(rf"(?<![\w.-]){re.escape(dom)}(?![\w-])", self.token("domain", dom) + ".invalid", s, flags=re.IGNORECASE)
        s = _LOGIN.sub(self._login, s)
        s = _DOVECOT_USER.sub(lambda m: f"{m.group(1)}{self._login_value(m.group(2))}", s)
        s = self._learned_logins(s)
        s = _IPV4.sub(lambda m: self._ip(m, s), s)
        s = _IPV6.sub(lambda m: self._ip(m, s), s)
        return s

    def _address(self, m: re.Match[str]) -> str:
        local = m.group(2)
        if _TOKEN.fullmatch(local):  # a message-id's token
            return m.group(0)
        # "ask postmaster@example.org" (pfdiag's advice, a remote's reply text): a role, no one's name;
        # as a login or a logged envelope address (to=<postmaster@...>) it is the mailbox like any other
        enveloped = m.start() > 0 and m.string[m.start() - 1] == "<"
        if local.lower() in _ROLES and not m.group(1) and not enveloped:
            return f"{local}@{self._domain(m.group(3))}"
        value = local.strip('\\"') if local.startswith(('"', '\\"')) else local  # "john"@x and john@x: one mailbox
        return f"{m.group(1) or ''}{self.token('user', value)}@{self._domain(m.group(3))}"

    def _message_id(self, m: re.Match[str]) -> str:
        """Both parts: the left one is unique to the message, the right one most often the name of
        the machine that wrote it (a client's laptop, the customer's server)."""
        right = m.group(3)
        return f"{m.group(1)}{self.token('msgid', m.group(2))}{'@' + self._host(right[1:]) if right else ''}{m.group(4)}"

    def _host(self, name: str) -> str:
        """A name this machine or a client goes by: its host token (an own name's alias: the same one)."""
        n = name.lower().rstrip(".")
        if n in RESERVED or _TOKEN.fullmatch(n):
            return name
        return self.token("host", self._alias.get(n, n))

    def _checks_text(self, m: re.Match[str]) -> str:
        text = m.group(2)
        name, colon, value = text.partition(":")
        if m.group(1).endswith("header ") and colon and re.fullmatch(r"[\w-]{1,76}", name):
            return f"{m.group(1)}{name}: {self.token('text', value.strip())}{m.group(3)}"  # the header's name stays
        return f"{m.group(1)}{self.token('text', text)}{m.group(3)}"

    def _login_value(self, value: str) -> str:
        # an address was redacted already (its local part has its one token): not a second token
        return value if "@" in value or _TOKEN.fullmatch(value) else self.token("login", value)

    def _learned_logins(self, s: str) -> str:
        """The logins learn() saw, where they appear on their own: a whole field, the commands pfdiag
        writes for a login, and (unless a word of the report or shorter than 3) anywhere as a word.
        Words are looked up in a set (no alternation of every login: a bundle's log may have thousands)."""
        if not self.logins:
            return s
        low = s.strip().lower()
        if low in self.logins and low not in _PLAIN_WORDS:
            return s.replace(s.strip(), self.token("login", low))

        def context(m: re.Match[str]) -> str:
            word = (m.group(2) or m.group(4) or "").lower()
            return (m.group(1) or "") + self.token("login", word) if word in self.logins else m.group(0)

        def anywhere(m: re.Match[str]) -> str:
            word = m.group(0).rstrip(".")
            w = word.lower()
            if w in self.logins and len(w) >= 3 and w not in _PLAIN_WORDS:
                return self.token("login", w) + m.group(0)[len(word):]
            return m.group(0)

        s = _LOGIN_IN_COMMAND.sub(context, s)
        if self._few_logins is None:  # a few logins: one alternation is faster than a look-up per word
            few = sorted((x for x in self.logins if len(x) >= 3 and x not in _PLAIN_WORDS), key=len, reverse=True)
            self._few_logins = re.compile(rf"(?i)(?<![\w.@+-])(?:{'|'.join(map(re.escape, few))})(?![\w@+-]|\.\w)") \
                if 0 < len(few) <= _FEW_LOGINS else _WORD if few else _NOTHING  # fmt: skip
        return self._few_logins.sub(anywhere, s) if self._few_logins is not _NOTHING else s

    def _login(self, m: re.Match[str]) -> str:
        return f"{m.group(1)}={m.group(2)}{self._login_value(m.group(3))}"

    def _client_name(self, m: re.Match[str]) -> str:
        prefix, name, addr = m.groups()
        try:
            is_client = prefix.startswith(("client=", "connect from")) or str(ipaddress.ip_address(addr)) in self.clients
        except ValueError:
            is_client = False
        return f"{prefix}{self.token('host', name) if is_client else name}[{addr}]"

    def _ip(self, m: re.Match[str], s: str) -> str:
        text = m.group(0)
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            return text
        if str(ip) in _KEEP_IPS:
            return text
        if str(ip) in self.clients:
            return self.token("ip", str(ip))
        before = s[max(0, m.start() - 300) : m.start()]
        hop = _NEXT_HOP.search(before)
        if hop and not hop.group(1).startswith(("host-", "unknown")):
            return text
        return self.token("ip", str(ip))

    def _field(self, key: str, v: Any) -> Any:
        if not isinstance(v, str):
            return self.value(v)
        if key in _LOGIN_FIELDS | {"key", "via"} and v.lower() in self.logins:
            return self.token("login", v.lower())  # a submitter's key that is a login: its token, even a plain word
        if key in _CLIENT_FIELDS and "[" in v:
            return self.text("client=" + v)[len("client="):]  # a trace's "name[address]": both hidden
        return self.text(v)

    def value(self, obj: Any) -> Any:
        """The same structure with every string redacted (dict keys are field names: kept)."""
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, dict):
            # a submitter's key that is a login (outbreak.top.logins[].key): its token, even a plain word
            return {k: self._field(k, v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [self.value(v) for v in obj]
        return obj


_TOKEN = re.compile(r"(?:user|msgid|host|login|ip|text|domain|secret)-[0-9a-f]{6}(?:\.invalid)?")


def _bare_login(value: str) -> str:
    """A login as learn() found it in a JSON dump or a shell word: without the quotes after it."""
    return value.rstrip("\"'\\)]}").lstrip("'\"")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]").removeprefix("IPv6:"))
    except ValueError:
        return False
    return True


def scrub_secrets(text: str, redactor: Redactor | None = None) -> str:
    """Passwords written into the configuration itself (smtp_sasl_password_maps = static:user:pass,
    inline:{[relay]:587 = user:pass}) become a keyed token (a redactor's) or "secret-redacted".
    Map types that name a file (hash:, lmdb:, ...) hold no secret here and stay. Usable without
    a Redactor: a snapshot or report that is not redacted must not carry passwords either."""
    if "_sasl_password_maps" not in text:
        return text

    def hide(m: re.Match[str]) -> str:
        tok = redactor.token("secret", m.group(2)) if redactor else "secret-redacted"
        return f"{m.group(1)}{{{tok}}}" if m.group(2).startswith("{") else f"{m.group(1)}{tok}"

    return _PASSWORD_MAPS.sub(lambda m: m.group(1) + _INLINE_SECRET.sub(hide, m.group(2)), text)
