"""The MTA-STS policy (RFC 8461), fetched over HTTPS from the target's vantage point."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any, Sequence


from checks.dns.resolver import OK, _name, lookup
from checks.model import Evidence, Finding, Severity

# -- MTA-STS policy (RFC 8461): fetched over HTTPS from the target's vantage point


@dataclass(frozen=True)
class MtaStsPolicy:
    domain: str
    status: str  # ok | unreachable | http-error | invalid
    mode: str | None = None  # enforce | testing | none
    mx: tuple[str, ...] = ()
    max_age: int | None = None
    detail: str = ""
    where: str = "local"

    def covers(self, mx_host: str) -> bool:
        h = mx_host.lower().rstrip(".")
        return any(h == p or (p.startswith("*.") and h.count(".") >= 1 and h.split(".", 1)[1] == p[2:]) for p in self.mx)

    def findings(self, mx_hosts: Sequence[str] = ()) -> list[Finding]:
        ev = (Evidence(f"GET https://mta-sts.{self.domain}/.well-known/mta-sts.txt", self.detail, self.where),)
        if self.status != OK:
            return [Finding("dns.mta_sts_policy", Severity.WARNING, f"MTA-STS policy of {self.domain}: {self.status} "
                            f"({self.detail}); senders that enforce MTA-STS defer", None, ev)]  # fmt: skip
        uncovered = [h for h in mx_hosts if not self.covers(h)]
        if self.mode == "enforce" and uncovered:
            return [Finding("dns.mta_sts_policy", Severity.PROBLEM, f"MTA-STS of {self.domain} is enforce, but MX "
                            f"{', '.join(uncovered)} is not in its mx: list ({', '.join(self.mx)}): senders that "
                            "enforce MTA-STS refuse to deliver there", "E19", ev,
                            {"mode": self.mode, "mx": list(self.mx)})]  # fmt: skip
        return [Finding("dns.mta_sts_policy", Severity.OK, f"MTA-STS policy of {self.domain}: mode {self.mode}, mx "
                        f"{', '.join(self.mx)}, max_age {self.max_age} (Postfix applies it only through an MTA-STS "
                        "policy server such as postfix-mta-sts-resolver)", None, ev,
                        {"mode": self.mode, "mx": list(self.mx)})]  # fmt: skip


def parse_mta_sts_policy(domain: str, text: str, where: str = "local") -> MtaStsPolicy:
    fields_: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields_.setdefault(key.strip().lower(), []).append(value.strip())
    if fields_.get("version") != ["STSv1"]:
        return MtaStsPolicy(domain, "invalid", detail="no 'version: STSv1' line", where=where)
    mode = (fields_.get("mode") or [""])[0]
    if mode not in ("enforce", "testing", "none"):
        return MtaStsPolicy(domain, "invalid", detail=f"bad mode {mode!r}", where=where)
    age = (fields_.get("max_age") or [""])[0]
    return MtaStsPolicy(domain, OK, mode, tuple(m.lower() for m in fields_.get("mx", [])),
                        int(age) if age.isdigit() else None, text.strip()[:400], where)  # fmt: skip


MAX_POLICY = 64 * 1024  # bytes: a policy is a few lines; RFC 8461 senders cap what they read (64 KiB is usual)


def mta_sts_policy(target: Any, resolver: Any, domain: str, *, port: int = 443, cafile: str | None = None,
                   timeout: float = 10.0, context: ssl.SSLContext | None = None) -> MtaStsPolicy:  # fmt: skip
    """GET the policy like an MTA-STS sender: https://mta-sts.DOMAIN/.well-known/mta-sts.txt, the
    certificate verified for that name (the system's CA store; `cafile` or `context` instead, for
    tests), through target.connect (from the mail host over SSH: checks.targets.http, httpcore).
    Within `timeout` seconds in all; redirects are not followed (RFC 8461 3.3: a 3xx is an
    http-error); a body over MAX_POLICY bytes is invalid."""
    from checks.errors import PfdiagError
    from checks.targets.http import HTTP_ERRORS, get

    domain = _name(domain)
    host = f"mta-sts.{domain}"
    where = target.where
    a = lookup(resolver, host, "A")
    if not a.ok:
        return MtaStsPolicy(domain, "unreachable", detail=f"{host} A: {a.status}", where=where)
    ctx = context or ssl.create_default_context(cafile=cafile)
    failures: tuple[type[Exception], ...] = (ssl.SSLError, OSError, *HTTP_ERRORS)
    url = f"https://{host}{'' if port == 443 else f':{port}'}/.well-known/mta-sts.txt"
    try:
        reply = get(target, url, timeout=timeout, max_body=MAX_POLICY, context=ctx, addresses={host: a.records[0]})
    except ssl.SSLCertVerificationError as exc:
        return MtaStsPolicy(domain, "unreachable", detail=f"certificate of {host} not valid: {exc.verify_message}", where=where)
    except PfdiagError as exc:
        return MtaStsPolicy(domain, "unreachable", detail=str(exc), where=where)
    except failures as exc:
        return MtaStsPolicy(domain, "unreachable", detail=f"{type(exc).__name__}: {exc}", where=where)
    if reply.status != 200:
        why = " (a redirect: MTA-STS senders do not follow it, RFC 8461 3.3)" if 300 <= reply.status < 400 else ""
        return MtaStsPolicy(domain, "http-error", detail=reply.status_line + why, where=where)
    if reply.truncated:
        return MtaStsPolicy(domain, "invalid", detail=f"the policy is larger than {MAX_POLICY // 1024} KiB", where=where)
    return parse_mta_sts_policy(domain, reply.body.decode("utf-8", "replace"), where)
