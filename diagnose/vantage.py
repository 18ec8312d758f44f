"""Vantage-point verdicts of a probe: the same destination seen from the mail host and from
this machine (where does it break?), and the addresses of one IP version failing while the
other's work (a broken IPv6 route or firewall that Postfix meets on every delivery)."""

from __future__ import annotations

from typing import Any

from checks.model import Finding, Severity


def compare_vantage(there: dict[str, Any], here: dict[str, Any], where: str, port: int) -> dict[str, Any]:
    """The same probe from the mail host and from this machine: where does it break?"""

    def first_bad(p: dict[str, Any]) -> dict[str, Any] | None:
        return next((ph for ph in p["phases"] if ph["verdict"] not in ("ok", "slow")), None)

    bad_there, bad_here = first_bad(there), first_bad(here)
    if bad_there and not bad_here:
        if bad_there["phase"] == "connect":
            why = (f"from {where} the connection to port {port} fails ({bad_there['detail']}) while it works from here: "
                   f"outbound port {port} is blocked on the mail host or its network (provider, firewall, security group)")  # fmt: skip
        else:
            why = f"from {where} it fails at {bad_there['phase']} ({bad_there['detail']}), from here it works: the mail host's path or address is treated differently"
    elif bad_here and not bad_there:
        why = f"from here it fails at {bad_here['phase']}, from {where} it works: this machine's network is the odd one out"
    elif bad_there and bad_here:
        why = f"it fails from both vantage points ({bad_there['phase']} / {bad_here['phase']}): the destination itself"
    else:
        why = "both vantage points reach the destination alike"
    return {"where": [where, "local"], "differs": bool(bad_there) != bool(bad_here), "conclusion": why,
            "there": there, "here": here}  # fmt: skip


def family_difference(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A finding when every address of one IP version fails and one of the other works: an
    IPv6 route or firewall that is broken (or an IPv4 address that is blocked) is met by Postfix
    on whichever addresses smtp_address_preference puts first, and costs a connect timeout each."""
    by = {4: [r for r in rows if ":" not in r["address"]], 6: [r for r in rows if ":" in r["address"]]}
    if not by[4] or not by[6]:
        return None
    works = {v: any(r["ok"] for r in by[v]) for v in (4, 6)}
    if works[4] == works[6]:
        return None
    bad, good = (6, 4) if works[4] else (4, 6)
    cause = next((r.get("cause_id") for r in by[bad] if r.get("cause_id")), None)  # as the probe classified it
    failing = ", ".join(f"{r['address']} ({r['error'] or 'see phases'})" for r in by[bad][:3])
    from diagnose.probedoc import finding_dict

    return finding_dict(Finding(
        "smtp.address-family", Severity.PROBLEM,
        f"every IPv{bad} address fails ({failing}) while IPv{good} works: Postfix meets this on the IPv{bad} "
        f"addresses smtp_address_preference lets it try (default any: in random order), each costing up to "
        f"smtp_connect_timeout; fix the IPv{bad} route or firewall, or set smtp_address_preference = ipv{good} "
        "(or inet_protocols) until it is fixed", cause))  # fmt: skip
