"""Probe a set of destinations the way Postfix would reach them, all at once, in one budget.

Every destination's next hop is found as Postfix's smtp client would (checks.nexthop), then
every address of every destination is probed in a thread pool: the set takes about as long as
its slowest member, and no probe outlives the deadline. Used by the diagnosis engine; `pfdiag
probe D1 D2 ...` shows the same on a terminal.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from checks.errors import PfdiagError
from checks.model import Evidence, Finding, Severity
from checks.nexthop import _DOMAIN, NextHop, _addresses, _is_ip, resolve_nexthop, split_nexthop
from checks.smtp import PhaseTimeouts, ProbeResult, probe_address, to_findings
from checks.targets import Target

MAX_WORKERS = 16  # connections at once: a probe waits on the network, not the CPU


@dataclass(frozen=True)
class ProbeRecord:
    destination: str
    name: str  # the host name the address was found under (MX, nexthop), or the IP
    address: str
    port: int
    source: str  # how Postfix finds it: "transport_maps ...", "relayhost = ...", "MX 10 mx of d"
    result: ProbeResult | None  # None: not probed (no address, the budget was spent)
    error: str = ""


def _hops(target: Target, destination: str, config_dir: str | None, resolver: Any) -> list[tuple[str, str, int, str]]:
    text = destination.strip()
    if text.startswith("[") or text.count(":") == 1:  # [host]:port or host:port: no transport lookup
        host, port, _ = split_nexthop(text)
        if _is_ip(host):
            return [(host, host, port, f"given as {text}")]
        if not _DOMAIN.match(host):
            raise PfdiagError(f"{text}: not a valid host name")
        if resolver is None:
            raise PfdiagError(f"{text}: no resolver to look up {host}")
        found = _addresses(resolver, host, "all", "ipv4", NextHop(host))
        return [(host, a, port, f"A/AAAA of {host}") for a in found]
    hop = resolve_nexthop(target, text, config_dir, resolver)
    if not hop.deliverable_by_smtp:
        raise PfdiagError(f"{text}: Postfix does not deliver it over SMTP ({'; '.join(hop.notes)})")
    if not hop.addresses:
        raise PfdiagError(f"{text}: no address ({'; '.join(hop.notes) or hop.source})")
    return [(a.host, a.addr, a.port, a.source) for a in hop.addresses]


def probe_destinations(
    target: Target,
    destinations: Sequence[str],
    *,
    timeouts: PhaseTimeouts,
    helo: str,
    budget: float,
    rcpt: str | None = None,
    config_dir: str | None = None,
    resolver: Any = None,
    progress: Callable[[ProbeRecord], None] | None = None,
) -> tuple[list[ProbeRecord], list[Finding]]:
    """Records in destination order, then address order (the order Postfix tries them), and
    Findings (check id smtp.probe / smtp.nexthop) with Evidence.where = the target's vantage."""
    deadline = time.monotonic() + budget
    records: list[ProbeRecord] = []
    findings: list[Finding] = []
    jobs: list[tuple[str, str, str, int, str]] = []
    for d in destinations:  # next hops first: postmap/DNS, quick next to a probe
        try:
            jobs += [(d, *h) for h in _hops(target, d, config_dir, resolver)]
        except PfdiagError as exc:
            records.append(ProbeRecord(d, "", "", 0, "", None, str(exc)))
            findings.append(Finding("smtp.nexthop", Severity.WARNING, f"{d}: {exc}", None,
                                    (Evidence(f"next hop of {d}", str(exc), target.where),)))  # fmt: skip

    def one(job: tuple[str, str, str, int, str]) -> ProbeRecord:
        d, name, addr, port, source = job
        left = deadline - time.monotonic()
        if left <= 0:
            return ProbeRecord(d, name, addr, port, source, None, "the budget was spent before this probe started")
        try:
            r = probe_address(target, addr, port, helo_name=helo, rcpt_to=rcpt, timeouts=timeouts,
                              total_budget=left, wrappermode=port == 465)  # fmt: skip
            rec = ProbeRecord(d, name, addr, port, source, r)
        except PfdiagError as exc:
            rec = ProbeRecord(d, name, addr, port, source, None, str(exc))
        if progress is not None:
            progress(rec)
        return rec

    if jobs:
        with ThreadPoolExecutor(max_workers=min(MAX_WORKERS, len(jobs)), thread_name_prefix="pfdiag-probe") as pool:
            done = list(pool.map(one, jobs))
        for rec in done:
            records.append(rec)
            if rec.result is not None:
                findings += to_findings(rec.result)
            else:
                findings.append(Finding("smtp.probe", Severity.INFO, f"{rec.name}[{rec.address}]:{rec.port} not probed: "
                                        f"{rec.error}", None, (Evidence(f"probe of {rec.destination}", rec.error,
                                                                       target.where),)))  # fmt: skip
    return records, findings
