"""The MTA-STS policy (RFC 8461), fetched over HTTPS from the target's vantage point."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence


from checks.model import Evidence, Finding, Severity
from checks.dns.resolver import OK, _name, lookup

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


def mta_sts_policy(target: Any, resolver: Any, domain: str, *, port: int = 443, cafile: str | None = None,
                   timeout: float = 10.0) -> MtaStsPolicy:  # fmt: skip
    """GET the policy like an MTA-STS sender: https://mta-sts.DOMAIN/.well-known/mta-sts.txt, the
    certificate verified for that name, through target.connect (from the mail host over SSH)."""
    import ssl

    from checks.errors import PfdiagError

    domain = _name(domain)
    host = f"mta-sts.{domain}"
    where = target.where
    a = lookup(resolver, host, "A")
    if not a.ok:
        return MtaStsPolicy(domain, "unreachable", detail=f"{host} A: {a.status}", where=where)
    ctx = ssl.create_default_context(cafile=cafile)
    deadline = time.monotonic() + timeout
    try:
        conn = target.connect(a.records[0], port, timeout)
    except PfdiagError as exc:
        return MtaStsPolicy(domain, "unreachable", detail=str(exc), where=where)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=host)

    def pump(op: Any) -> Any:
        while True:
            try:
                result = op()
                if outgoing.pending:
                    conn.sendall(outgoing.read())
                return result
            except ssl.SSLWantReadError:
                if outgoing.pending:
                    conn.sendall(outgoing.read())
                if time.monotonic() > deadline:
                    raise TimeoutError("no answer in time") from None
                conn.settimeout(max(0.1, deadline - time.monotonic()))
                data = conn.recv(65536)
                if not data:
                    incoming.write_eof()
                else:
                    incoming.write(data)

    try:
        pump(tls.do_handshake)
        pump(lambda: tls.write(f"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()))
        body = b""
        while len(body) < 65536:
            try:
                chunk = pump(lambda: tls.read(16384))
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                break
            if not chunk:
                break
            body += chunk
    except ssl.SSLCertVerificationError as exc:
        return MtaStsPolicy(domain, "unreachable", detail=f"certificate of {host} not valid: {exc.verify_message}", where=where)
    except (ssl.SSLError, OSError, TimeoutError, PfdiagError) as exc:
        return MtaStsPolicy(domain, "unreachable", detail=f"{type(exc).__name__}: {exc}", where=where)
    finally:
        conn.close()
    head, _, payload = body.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1", "replace")
    if " 200 " not in status_line + " ":
        return MtaStsPolicy(domain, "http-error", detail=status_line or "no HTTP answer", where=where)
    if b"transfer-encoding: chunked" in head.lower():
        payload = _dechunk(payload)
    return parse_mta_sts_policy(domain, payload.decode("utf-8", "replace"), where)


def _dechunk(data: bytes) -> bytes:
    out, rest = b"", data
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        try:
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
        except ValueError:
            break
        if size == 0:
            break
        out, rest = out + rest[:size], rest[size + 2 :]
    return out
