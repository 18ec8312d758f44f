"""Redaction for support tickets: stable keyed tokens in place of who and where.

Replaced: every address's local part (``user-3fa2c1``), the server's own domains
(``domain-8b21e0.invalid``) and hostnames (``host-77aa01``), client IP addresses (``ip-5d0c9a``,
v4 and v6) and the clients' reverse-DNS names (``host-...``), SASL and Dovecot logins (``login-...``),
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
import os
import re
from typing import Any, Iterable

_ADDRESS = re.compile(r"(?<![\w.+=-])((?:sasl_username|sasl_sender|user|login)=)?([\w.!#$%&'*+/=?^`{|}~-]{1,64})@([A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*)")
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


class Redactor:
    def __init__(self, key: bytes | None = None, own_hostnames: Iterable[str] = (), own_domains: Iterable[str] = ()) -> None:
        self._key = key if key is not None else os.urandom(32)
        names = {h.lower().rstrip(".") for h in own_hostnames if h and h.strip()}
        # syslog writes the short name ("mx1" for mx1.example.net): that is this server too
        self._alias = {n.split(".", 1)[0]: n for n in sorted(names) if "." in n and len(n.split(".", 1)[0]) >= 3}
        names |= set(self._alias)
        self.own_hostnames = sorted(names, key=len, reverse=True)
        self.own_domains = sorted({d.lower().rstrip(".") for d in own_domains if d and d.strip()}, key=len, reverse=True)
        self._cache: dict[str, str] = {}
        self.clients: set[str] = set()  # addresses seen as clients: hidden everywhere, next-hop context or not

    def learn(self, text: str) -> None:
        """Note the client addresses in text, so that the same address is hidden wherever it
        appears later (a client elsewhere may be a next hop here). Call on everything first."""
        for m in _CLIENT.finditer(text or ""):
            try:
                self.clients.add(str(ipaddress.ip_address(m.group(1))))
            except ValueError:
                continue

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
        # "sasl_username=bob@x": the field name is not part of the local part (which may hold "=")
        s = _ADDRESS.sub(lambda m: f"{m.group(1) or ''}{self.token('user', m.group(2))}@{self._domain(m.group(3))}", s)
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
        s = _IPV4.sub(lambda m: self._ip(m, s), s)
        s = _IPV6.sub(lambda m: self._ip(m, s), s)
        return s

    def _login_value(self, value: str) -> str:
        # an address was redacted already (its local part has its one token): not a second token
        return value if "@" in value else self.token("login", value)

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

    def value(self, obj: Any) -> Any:
        """The same structure with every string redacted (dict keys are field names: kept)."""
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, dict):
            return {k: self.value(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [self.value(v) for v in obj]
        return obj


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
