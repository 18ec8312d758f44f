"""Where Postfix's smtp client sends from: smtp_bind_address / smtp_bind_address6 (a master.cf
smtp -o override wins), else inet_interfaces' one address of a family (postconf(5)). Probes bind
there too, so a firewall rule or route tied to that address is tested as Postfix meets it."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from checks.errors import UsageError


def ip_literal(text: str) -> str | None:
    """The address in an IP literal ('192.0.2.1', '2001:db8::1', 'ipv6:2001:db8::1'), else None."""
    t = text[5:] if text.lower().startswith("ipv6:") else text
    try:
        return str(ipaddress.ip_address(t))
    except ValueError:
        return None


BIND_NAMES = ("smtp_bind_address", "smtp_bind_address6", "smtp_bind_address_enforce", "inet_interfaces")


@dataclass(frozen=True)
class BindPlan:
    """The source address Postfix's smtp client binds to, per address family, and why."""

    v4: str | None = None
    v4_from: str = ""
    v6: str | None = None
    v6_from: str = ""
    enforce: bool = False  # smtp_bind_address_enforce: a failed bind defers instead of falling back
    can_bind: bool = True  # False over SSH: direct-tcpip cannot choose the source

    def for_address(self, address: str) -> tuple[str | None, str]:
        """(bind address, where it came from) for a connection to `address`."""
        ip = ip_literal(address)
        six = ip is not None and ":" in ip
        return (self.v6, self.v6_from) if six else (self.v4, self.v4_from)

    def kwargs(self, address: str) -> dict[str, Any]:
        """probe_address keywords: bind like Postfix; a configured address that cannot be
        bound falls back like smtp_bind_address_enforce = no, an explicit --bind never does."""
        addr, origin = self.for_address(address)
        if addr is None or not self.can_bind:
            return {}
        return {"source": addr, "bind_fallback": origin != "--bind" and not self.enforce}


def bind_literal(text: str) -> str | None:
    t = text.strip()
    if t.startswith("[") and t.endswith("]"):  # Postfix accepts [addr] here
        t = t[1:-1]
    return ip_literal(t)


def bind_plan(values: dict[str, str], overrides: dict[tuple[str, str, str], str], override: str | None,
              can_bind: bool, service: str = "smtp") -> tuple[BindPlan, list[str]]:  # fmt: skip
    """smtp_bind_address[6] (a master.cf -o of `service`, the transport that delivers, wins), else
    the one non-loopback address of its family when inet_interfaces lists only one (postconf(5));
    --bind wins over all."""
    notes: list[str] = []
    found: dict[int, tuple[str | None, str]] = {4: (None, ""), 6: (None, "")}
    for version, name in ((4, "smtp_bind_address"), (6, "smtp_bind_address6")):
        raw, origin = values.get(name, ""), name
        if overrides.get((service, "unix", name)):
            raw, origin = overrides[(service, "unix", name)], f"master.cf {service} -o {name}"
        for (svc, _kind, pname), val in sorted(overrides.items()):
            if pname == name and svc != service and val:
                notes.append(f"master.cf service {svc} sets -o {name}={val}: mail routed through {svc} leaves from there")
        if raw.strip():
            ip = bind_literal(raw)
            if ip is None or (ip.count(":") > 0) != (version == 6):
                notes.append(f"{name} = {raw.strip()} is not an IPv{version} address: Postfix cannot bind to it")
                continue
            found[version] = (ip, origin if origin != name else f"{name} = {raw.strip()}")
    inet = [w for w in re.split(r"[\s,]+", values.get("inet_interfaces", "")) if w]
    literals = [bind_literal(w) for w in inet]
    if inet and all(literals):  # names and "all"/"loopback-only" give no single address we can know
        for version in (4, 6):
            mine = [ip for ip in literals if ip and (":" in ip) == (version == 6)]
            if found[version][0] is None and len(mine) == 1 and not ipaddress.ip_address(mine[0]).is_loopback:
                found[version] = (mine[0], f"inet_interfaces = {values['inet_interfaces']} (one IPv{version} address)")
    if override is not None:
        ip = bind_literal(override)
        if ip is None:
            raise UsageError(f"--bind {override!r}: give an IP address of this host")
        found[6 if ":" in ip else 4] = (ip, "--bind")
    enforce = values.get("smtp_bind_address_enforce", "no").strip().lower() == "yes"
    plan = BindPlan(found[4][0], found[4][1], found[6][0], found[6][1], enforce, can_bind)
    for ip, origin in (found[4], found[6]):
        if not ip:
            continue
        if origin == "--bind":
            said = f"--bind {ip}: this probe sends from that address (no fallback when it cannot be bound)"
        else:
            said = f"{origin}: Postfix sends from that address" + (f" ({ip})" if not origin.endswith(ip) else "")
        if not can_bind:
            said += ("; over SSH the mail host's sshd opens the connection from its default source (direct-tcpip "
                     f"cannot choose one), so a firewall or route tied to {ip} is not tested")  # fmt: skip
        elif origin != "--bind":
            said += "; this probe binds to it as well"
        notes.append(said)
    return plan, notes
