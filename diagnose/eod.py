"""Which of E09's (and E10's) underlying causes is it? Scored from the evidence, not guessed.

postfix-deferrals.md E09 lists the candidates; each leaves its own trace:

  local-timeout   smtp_data_done_timeout lowered (main.cf or a master.cf -o override) and
                  the logged d (delays=a/b/c/d) sits at that lowered value
  firewall        a masked (asterisk) greeting in a probe, or Postfix's own
                  "enabling PIX workarounds" lines for the failing hosts
  pmtu            the size ladder stalls from some size on; in the logs, only big messages fail
  slow-receiver   the ladder's "." -> reply is slow at every size; in the logs d sits at a
                  full (600 s) timeout even for small messages, and later attempts succeed
  nat-idle        the "lost connection" form with d clustered at one value below the timeout
  sporadic        few failures spread over many destinations

``hypotheses(...)`` is pure: the inputs are the logs report's cause entry, its end-of-data
summary, the effective timeouts and the check findings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from checks.model import Finding

from checks.postfix.defaults import RFC_MINIMUM  # noqa: E402

RFC_DATA_DONE = RFC_MINIMUM["smtp_data_done_timeout"]


@dataclass
class Hypothesis:
    id: str
    title: str
    score: float  # 0..1
    evidence: list[str] = field(default_factory=list)
    against: list[str] = field(default_factory=list)
    measured: bool = False  # a test measured it just now: log-based doubts do not outweigh it


# the underlying causes; the catalog's E09/E10 fixes name the ones they fix by these ids
TITLES = {
    "local-timeout": "Postfix's own end-of-data timeout is lowered",
    "firewall": "An SMTP-inspecting firewall mangles the end of the message",
    "pmtu": "Path-MTU black hole: big packets are lost on the way",
    "slow-receiver": "The receiving server is slow to answer after the message",
    "nat-idle": "A NAT/firewall drops the idle-looking connection",
    "sporadic": "Occasional loss or a short outage",
}


def _h(hid: str) -> Hypothesis:
    return Hypothesis(hid, TITLES[hid], 0.0)


def _near(a: float | None, b: float | None, tolerance: float = 0.2) -> bool:
    return a is not None and b is not None and b > 0 and abs(a - b) <= max(1.0, b * tolerance)


def _large_only(sizes: Mapping[str, int]) -> bool | None:
    """True when no failing message was under 2 KB, False when small ones failed too
    (the buckets of diagnose/deferrals.py: "<2 KB", "2-16 KB", ...; "unknown" is ignored)."""
    known = {k: n for k, n in sizes.items() if k != "unknown" and n}
    if not known:
        return None
    return not known.get("<2 KB")


def hypotheses(cause: Mapping[str, Any] | None, end_of_data: Mapping[str, Any] | None,
               timeouts: Mapping[str, float] | None, findings: Iterable[Finding],
               route: Mapping[str, Any] | None = None) -> list[Hypothesis]:  # fmt: skip
    """Ranked hypotheses for an E09/E10 cause, best first (score 0 ones dropped).

    ``route``: the destination's transport (diagnose.engine.routes_of) when the reasoning is about
    one destination: its smtp_data_done_timeout, and the master.cf or main.cf line that sets it,
    is what Postfix waited for that mail (``timeouts`` are then that transport's values too);
    without it, the config.timeouts findings say which values are lowered."""
    cause = cause or {}
    eod = end_of_data or {}
    found = list(findings)
    hs = {k: _h(k) for k in TITLES}
    done_timeout = float((timeouts or {}).get("smtp_data_done_timeout") or RFC_DATA_DONE)
    d = ((cause.get("delays") or {}).get("d") or {})
    d_med, d_p95 = d.get("median"), d.get("p95")
    lost_form = cause.get("id") == "E10"

    # local timeout override
    if route is not None:
        _route_timeout(hs["local-timeout"], route, d_med)
    for f in found if route is None else ():
        if f.check_id == "config.timeouts" and f.values.get("hypothesis") == "local-timeout":
            h = hs["local-timeout"]
            secs = f.values.get("seconds")
            h.score = max(h.score, 0.55)
            h.evidence.append(f"{f.values.get('parameter')} = {f.values.get('effective')} "
                              f"(default {f.values.get('default')}; RFC 5321 asks for 10 minutes)")  # fmt: skip
            if _near(d_med, secs):
                h.score = 0.85
                h.evidence.append(f"the logged wait after '.' (d, median {d_med:g} s) equals that lowered timeout: "
                                  "Postfix gave up, the receiver may still have been working")  # fmt: skip

    # firewall: masked greeting, PIX workaround lines
    pix = eod.get("pix_workarounds") or []
    if pix:
        h = hs["firewall"]
        h.score = max(h.score, 0.5)
        hosts = ", ".join(str(p[0]) for p in pix[:3])
        n = sum(int(p[1]) for p in pix)
        h.evidence.append(f"Postfix enabled its PIX workarounds for {hosts} ({n} time{'s' if n != 1 else ''}): "
                          "the greeting it saw was masked")  # fmt: skip
    for f in found:
        if f.check_id.startswith("smtp.") and f.values.get("masked_banner"):
            h = hs["firewall"]
            h.score = max(h.score, 0.8)
            h.evidence.append(f"a probe of {f.values.get('host')}:{f.values.get('port')} got a masked greeting")
        ladder = f.values.get("ladder")
        if ladder == "inspecting-firewall":
            hs["firewall"].score, hs["firewall"].measured = 0.9, True
            hs["firewall"].evidence.append(f"the end-of-data test: {f.summary}")
        elif ladder == "size-correlated-stall":
            hs["pmtu"].score, hs["pmtu"].measured = 0.9, True
            hs["pmtu"].evidence.append(f"the end-of-data test: {f.summary}")
        elif ladder == "slow-after-data":
            key = "nat-idle" if f.cause_id == "E10" and lost_form else "slow-receiver"
            hs[key].score, hs[key].measured = max(hs[key].score, 0.85), True
            hs[key].evidence.append(f"the end-of-data test: {f.summary}")
        elif ladder == "healthy":
            for key in ("pmtu", "slow-receiver", "firewall"):
                hs[key].against.append("the end-of-data test went through at every size just now")
            hs["sporadic"].score = max(hs["sporadic"].score, 0.5)
            hs["sporadic"].evidence.append("the end-of-data test passes now: the failures were intermittent")

    # size pattern in the logs
    large = _large_only(eod.get("message_sizes") or {})
    if large is True:
        hs["pmtu"].score = max(hs["pmtu"].score, 0.45)
        hs["pmtu"].evidence.append(f"only messages of 2 KB or more failed ({_sizes(eod)})")
    elif large is False:
        hs["pmtu"].against.append(f"small messages failed too ({_sizes(eod)})")
        hs["slow-receiver"].score = max(hs["slow-receiver"].score, 0.35)
        hs["slow-receiver"].evidence.append(f"small messages fail as well ({_sizes(eod)}): not a size problem")

    # the wait itself
    # A full timeout of silence fits a slow receiver, but also a black hole that swallowed the
    # last packets: it only speaks for the receiver when small messages failed as well.
    if (d_med is not None and not lost_form and _near(d_med, done_timeout) and done_timeout >= RFC_DATA_DONE
            and large is not True):
        hs["slow-receiver"].score = max(hs["slow-receiver"].score, 0.5)
        hs["slow-receiver"].evidence.append(f"d (the wait after '.') is {d_med:g} s: the full "
                                            f"{done_timeout:g} s timeout ran out in silence")  # fmt: skip
    if lost_form and d_med is not None and d_p95 is not None and d_med < done_timeout * 0.9 and _near(d_p95, d_med, 0.1):
        hs["nat-idle"].score = max(hs["nat-idle"].score, 0.55)
        hs["nat-idle"].evidence.append(f"the connection was lost after a nearly constant wait (d median {d_med:g} s, "
                                       f"p95 {d_p95:g} s), below the {done_timeout:g} s timeout: a device's idle timer")  # fmt: skip
    later = int(eod.get("delivered_later_possible_duplicates") or 0)
    if later:
        hs["slow-receiver"].evidence.append(f"{later} message(s) went through on a later attempt")
        hs["slow-receiver"].score = max(hs["slow-receiver"].score, 0.3)
        if pix:
            hs["firewall"].evidence.append("a later attempt succeeded, as with PIX workarounds after "
                                           "smtp_pix_workaround_threshold_time (500 s)")  # fmt: skip

    # sporadic: many destinations, few failures each
    domains = cause.get("top_domains") or []
    if len(domains) >= 5 and all(int(n) <= 2 for _, n in domains):
        hs["sporadic"].score = max(hs["sporadic"].score, 0.4)
        hs["sporadic"].evidence.append(f"{len(domains)} destinations, at most 2 failures each")

    for h in hs.values():
        h.evidence, h.against = list(dict.fromkeys(h.evidence)), list(dict.fromkeys(h.against))  # each line once
        if h.against and not h.measured:
            h.score *= 0.5
    ranked = sorted((h for h in hs.values() if h.score > 0), key=lambda h: -h.score)
    return ranked


def _route_timeout(h: Hypothesis, route: Mapping[str, Any], d_med: float | None) -> None:
    """The local-timeout hypothesis from the destination's own transport: the value its master.cf
    service really uses and the line that sets it (a -o override, main.cf), not main.cf's alone."""
    name = "smtp_data_done_timeout"
    secs = (route.get("timeouts") or {}).get(name)
    origin = str((route.get("origins") or {}).get(name) or "")
    if secs is None or secs >= RFC_DATA_DONE or origin.startswith("Postfix's default"):
        return
    transport, domain = route.get("transport") or "smtp", route.get("domain")
    h.score = max(h.score, 0.55)
    h.evidence.append(f"{origin}: the {transport} transport" + (f" that delivers to {domain}" if domain else "") +
                      f" waits {secs:g} s for the reply after '.' (RFC 5321 asks for 10 minutes)")  # fmt: skip
    if _near(d_med, secs):
        h.score = 0.85
        h.evidence.append(f"the logged wait after '.' (d, median {d_med:g} s) equals that lowered timeout: "
                          "Postfix gave up, the receiver may still have been working")  # fmt: skip


def _sizes(eod: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in (eod.get("message_sizes") or {}).items())
