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


UNREACHED = ("could not reach any next hop from here: the live checks are missing; run on the mail host or with "
             "--host")  # fmt: skip


def live_evidence_missing(findings: list[Finding]) -> dict[str, Any] | None:
    """The report's probes (smtp.nexthops) when none of them reached a next hop (no greeting from
    any) and what they met is not what the logs say happened there (the logs name another cause:
    the report runs somewhere else than the mail host, whose peers are out of reach from here).
    None when a next hop answered, when nothing was probed, or when the probes confirm the logs
    (a connect timeout in the log, a connect timeout now)."""
    # smtp.nexthops tags its probes' findings (checks.smtp's "smtp.probe") with the log's cause: for_cause
    probes = [f for f in findings if f.check_id == "smtp.nexthops" or f.check_id == "smtp.probe" and "for_cause" in f.values]
    if not probes:
        return None
    hops: list[dict[str, Any]] = []
    for f in probes:
        phases = f.values.get("phases")
        if not isinstance(phases, dict) and f.severity != Severity.ERROR:
            continue  # a side finding (bind, masked banner, STARTTLS) of a probe that has its main one
        if isinstance(phases, dict) and (phases.get("banner") or {}).get("reply_code") is not None:
            return None  # a next hop answered: the live checks are there
        hops.append({"hop": f"{f.values.get('host', '')}:{f.values.get('port', '')}".strip(":") or f.summary.split(":")[0],
                     "met": f.summary, "cause_id": f.cause_id, "log_cause": f.values.get("for_cause"),
                     "domain": f.values.get("domain")})  # fmt: skip
    if not hops or all(h["cause_id"] and h["cause_id"] == h["log_cause"] for h in hops):
        return None
    return {"missing": True, "message": UNREACHED, "probed": len(hops), "hops": hops}
