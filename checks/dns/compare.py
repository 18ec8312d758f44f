"""Two resolvers compared (the system's and Postfix's chroot copy of resolv.conf), and every
DNS result turned into Findings (to_findings)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import dns.resolver

from checks.errors import UsageError
from checks.model import Evidence, Finding, Severity
from checks.dns.resolver import Answer, _finding, _servers, lookup

# -- two resolvers (system vs chroot resolv.conf)


@dataclass(frozen=True)
class ComparisonRow:
    name: str
    rdtype: str
    a: Answer
    b: Answer
    differences: tuple[str, ...] = ()


@dataclass(frozen=True)
class ResolverComparison:
    a_server: str
    b_server: str
    rows: tuple[ComparisonRow, ...]

    @property
    def differs(self) -> bool:
        return any(r.differences for r in self.rows)

    def findings(self) -> list[Finding]:
        out: list[Finding] = []
        for r in self.rows:
            if not r.differences:
                continue
            temp = r.a.temporary != r.b.temporary
            out.append(_finding("dns.resolvers", Severity.PROBLEM if temp else Severity.WARNING,
                                f"{r.name} {r.rdtype}: {self.a_server} and {self.b_server} differ: "
                                + "; ".join(r.differences), "E12" if temp else None, [r.a, r.b],
                                differences=list(r.differences)))  # fmt: skip
        if not out:
            out.append(_finding("dns.resolvers", Severity.OK, f"{self.a_server} and {self.b_server} agree on "
                                f"{len(self.rows)} queries", None))  # fmt: skip
        return out


def compare_resolvers(a: dns.resolver.Resolver, b: dns.resolver.Resolver,
                      names: Iterable[str | tuple[str, str]], slow_factor: float = 5.0,
                      slow_min: float = 0.5) -> ResolverComparison:  # fmt: skip
    """The same queries through ``a`` and ``b``; ``names`` are "name" (type A) or (name, type).
    A latency difference counts when one side is ``slow_factor`` times and ``slow_min`` s slower."""
    rows: list[ComparisonRow] = []
    for item in names:
        name, rdtype = (item, "A") if isinstance(item, str) else item
        x, y = lookup(a, name, rdtype), lookup(b, name, rdtype)
        diffs: list[str] = []
        if x.status != y.status:
            diffs.append(f"status {x.status} vs {y.status}")
        elif sorted(x.records) != sorted(y.records):
            diffs.append(f"answers {sorted(x.records)} vs {sorted(y.records)}")
        lo, hi = sorted((x.latency, y.latency))
        if hi - lo >= slow_min and hi >= slow_factor * max(lo, 1e-3):
            diffs.append(f"latency {x.latency:.3f}s vs {y.latency:.3f}s")
        rows.append(ComparisonRow(x.name, x.rdtype, x, y, tuple(diffs)))
    return ResolverComparison(_servers(a), _servers(b), tuple(rows))


def server_drift(system: Any, chroot: Any, system_path: str, chroot_path: str) -> Finding:
    """Postfix's chroot copy of resolv.conf must list the same nameservers as the system's:
    a stale copy (postfix start/reload refreshes it on Debian) sends chrooted smtp elsewhere (E12)."""
    a, b = [str(x) for x in system.nameservers], [str(x) for x in chroot.nameservers]
    ev = (Evidence(system_path, "nameservers: " + ", ".join(a)), Evidence(chroot_path, "nameservers: " + ", ".join(b)))
    if a == b:
        return Finding("dns.resolv_conf", Severity.OK, f"{chroot_path} lists the same nameservers as {system_path}",
                       None, ev)  # fmt: skip
    return Finding("dns.resolv_conf", Severity.WARNING,
                   f"{chroot_path} ({', '.join(b)}) differs from {system_path} ({', '.join(a)}): chrooted smtp "
                   "processes ask other servers (a stale copy? postfix reload/restart refreshes it)", "E12", ev,
                   {"system": a, "chroot": b})  # fmt: skip


def to_findings(*results: Any) -> list[Finding]:
    """Findings of any results of this module (MxResult, FcrdnsResult, ..., or a bare Answer)."""
    out: list[Finding] = []
    for r in results:
        if isinstance(r, Answer):
            sev = Severity.OK if r.ok else Severity.PROBLEM if r.temporary else Severity.WARNING
            out.append(_finding("dns.lookup", sev, f"{r.name} {r.rdtype}: {r.status}",
                                "E12" if r.temporary else None, [r], status=r.status))  # fmt: skip
        elif hasattr(r, "findings"):
            out.extend(r.findings())
        else:
            raise UsageError(f"to_findings: not a DNS check result: {type(r).__name__}")
    return out
