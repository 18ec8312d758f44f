"""From the evidence of one diagnosis to ranked causes (pure: no I/O).

A cause is ranked by the harm it does, in tiers (``RankedCause.tier``, explained in
``why_ranked``); the sort key is fully specified, so the same evidence gives the same ranking:

* tier 0, ongoing duplicate deliveries: an end-of-data timeout (E09/E10) with mail still
  queued (every later attempt may deliver it again) or already delivered on a later attempt;
* tier 1, mail about to bounce: queued mail of the cause expires (maximal_queue_lifetime)
  within a day, earliest expiry first, or a 5xx kept only by soft_bounce (E33);
* tier 2, the other root causes, by queued volume: recipients waiting now, then messages
  deferred in the logs, then log lines;
* tier 3, unclassified reasons (a failure, but of no known kind);
* tier 4, collateral: a consequence of another failure (``delivery temporarily suspended``
  around an unknown text, E11) is folded under the root cause seen for the same destination
  or next hop (``folded_under``) and never heads the report;
* within a tier: the keys above, then confidence, then the cause id.
* confidence says how sure the attribution is: the exact Postfix text was matched (base),
  seen both in the logs and in the queue, confirmed by a check (a probe, the config), and
  for the end-of-data timeout (E09/E10) the best-supported underlying cause.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from checks.config import LOCAL_SERVICE_PARAMS
from checks.model import Finding, Severity
from diagnose.causes import Cause, get_cause
from diagnose.classify import classify
from diagnose.delays import explain
from diagnose.eod import Hypothesis, hypotheses

PROBE_FAMILIES = ("connection", "tls", "reply")
EOD_CAUSES = ("E09", "E10")
REMOTE_FAMILIES = ("reply",)
_RELAY = re.compile(r"relay=(?P<host>[^\[\s,]+)\[(?P<addr>[^\]]+)\]:(?P<port>\d+)")
_HOP = re.compile(r"(?:connect to|conversation with|connection with|host|to) (?P<host>[^\[\s]+)\[(?P<addr>[^\]]+)\](?::(?P<port>\d+))?")


@dataclass
class RankedCause:
    id: str
    cause: Cause
    queued_recipients: int = 0
    queued_messages: int = 0
    log_deferrals: int = 0
    log_messages: int = 0
    collateral_lines: int = 0
    domains: list[tuple[str, int]] = field(default_factory=list)
    relays: list[tuple[str, int]] = field(default_factory=list)
    first_seen: str | None = None
    last_seen: str | None = None
    examples: list[str] = field(default_factory=list)  # real log lines / queue reasons
    log_example: bool = False  # examples[0] is a log line (else every example is a queue reason)
    delays: dict[str, Any] | None = None
    delays_meaning: list[str] = field(default_factory=list)
    confirmations: list[Finding] = field(default_factory=list)
    why: list[str] = field(default_factory=list)  # how the confidence was reached, in words
    confidence: float = 0.0
    hypotheses: list[Hypothesis] = field(default_factory=list)
    duplicates_possible: int = 0
    hop: dict[str, Any] | None = None  # {"host", "addr", "port"} from a real log line
    queue_ids: list[str] = field(default_factory=list)
    oldest_arrival: float | None = None  # of its queued mail
    expires_at: float | None = None  # the first of its queued messages to bounce (oldest + lifetime)
    tier: int = 2
    why_ranked: str = ""
    folded: list[str] = field(default_factory=list)  # collateral causes counted under this one
    folded_under: str | None = None

    @property
    def root(self) -> bool:
        return self.cause.root

    @property
    def impact(self) -> int:
        return self.queued_recipients * 2 + self.log_messages

    @property
    def top_domain(self) -> str | None:
        return self.domains[0][0] if self.domains else None


def confidence_label(x: float) -> str:
    return "high" if x >= 0.8 else "medium" if x >= 0.5 else "low"


def hop_of(text: str) -> dict[str, Any] | None:
    m = _RELAY.search(text) or _HOP.search(text)
    if not m:
        return None
    port = m.group("port")
    return {"host": m.group("host"), "addr": m.group("addr"), "port": int(port) if port else None}


def _own_slice(c: Mapping[str, Any], domain: str) -> dict[str, Any] | None:
    """The logs' per-destination slice of a cause (diagnose/deferrals.py DomainSlice) for
    ``domain``: the domain itself first, else its busiest subdomain."""
    slices = c.get("by_domain") or {}
    for d, _ in c.get("top_domains", []):
        if _in_domain(str(d), domain) and d in slices:
            return dict(slices[d])
    return None


def _cause_or_unclassified(cid: str) -> Cause:
    try:
        return get_cause(cid)
    except KeyError:
        return get_cause("unclassified")


def _in_domain(name: str, domain: str) -> bool:
    name, domain = name.lower().rstrip("."), domain.lower().rstrip(".")
    return name == domain or name.endswith("." + domain)


def rank(logs: Mapping[str, Any] | None, queue: Mapping[str, Any] | None, findings: Iterable[Finding],
         timeouts: Mapping[str, float] | None = None, domain: str | None = None,
         lifetime: float | None = None, services: Mapping[str, str] | None = None,
         route: Mapping[str, Any] | None = None) -> list[RankedCause]:  # fmt: skip
    """Ranked causes, most harmful first (see the module's docstring); with ``domain``, only those
    seen for mail to that domain (or its subdomains). ``lifetime`` is maximal_queue_lifetime in
    seconds (for the expiry of queued mail, measured from the queue's ``now``); ``services``, the
    local-service parameters of the configuration (``localize``); ``route``, the transport that
    delivers to ``domain`` (diagnose.engine.routes_of: its reasoning uses that transport's values,
    ``timeouts`` then being that transport's)."""
    found = list(findings)
    table: dict[str, RankedCause] = {}
    notes: dict[str, list[str]] = {}
    if services is not None:
        logs, queue, notes = localize_inputs(logs, queue, services)

    def get(cid: str) -> RankedCause:
        if cid not in table:
            table[cid] = RankedCause(cid, _cause_or_unclassified(cid))
        return table[cid]

    log_causes = {c["id"]: c for c in (logs or {}).get("causes", [])}
    # With a domain, the counts come from that domain's own rows (logs: per domain and
    # cause; queue: per cause and domain), not from the causes' totals.
    focus: dict[str, int] = {}
    if domain:
        for row in (logs or {}).get("domains", []):
            if _in_domain(row.get("domain", ""), domain):
                for cid, n in (row.get("causes") or {}).items():
                    focus[cid] = focus.get(cid, 0) + int(n)
    for cid, c in log_causes.items():
        if domain and cid not in focus:
            continue
        rc = get(cid)
        if domain:
            rc.log_deferrals = rc.log_messages = focus[cid]
            rc.domains = [(d, int(n)) for d, n in c.get("top_domains", []) if _in_domain(d, domain)]
        else:
            rc.log_deferrals, rc.log_messages = int(c.get("deferrals", 0)), int(c.get("messages", 0))
            rc.domains = [(d, int(n)) for d, n in c.get("top_domains", [])]
            rc.relays = [(r, int(n)) for r, n in c.get("top_relays", [])]
        rc.collateral_lines = int(c.get("collateral", 0))
        rc.first_seen, rc.last_seen = c.get("first_seen"), c.get("last_seen")
        # with a domain: that destination's own slice of the cause (its first line, its delays=)
        own = _own_slice(c, domain) if domain else None
        example = (own or {}).get("example") or c.get("example")
        if example and (not domain or domain.lower() in example.lower()):
            rc.examples.append(example)
            rc.log_example = True
            rc.hop = hop_of(example)
        rc.delays, rc.delays_meaning = c.get("delays"), list(c.get("delays_meaning") or [])
        shared = domain is not None and any(not _in_domain(d, domain or "") for d, _ in c.get("top_domains", []))
        if own is not None and own.get("delays"):
            rc.delays = own["delays"]
            rc.delays_meaning = explain(own["delays"], dict(timeouts or {}), classify(example or "").phase if example else None,
                                        rc.cause.family in REMOTE_FAMILIES)  # fmt: skip
            if shared:
                rc.why.append(f"other destinations share this cause: only {domain}'s own delays= values are read here")
        elif shared:
            # the logs' delays=a/b/c/d profile is the cause's over every destination: not this one's
            rc.delays, rc.delays_meaning = None, []
            rc.why.append(f"other destinations share this cause: their delays= values are left out of {domain}'s reasoning")
        elif domain and timeouts is not None and rc.delays:  # this destination's transport's timeouts
            rc.delays_meaning = explain(rc.delays, dict(timeouts), classify(example or "").phase if example else None,
                                        rc.cause.family in REMOTE_FAMILIES)  # fmt: skip
        if domain:
            focus_domain = domain
            log_causes[cid] = {**c, "delays": rc.delays, "example": example, "own_destination": True,
                               "top_domains": [[d, n] for d, n in c.get("top_domains", []) if _in_domain(d, focus_domain)]}  # fmt: skip
    # Linear in the queue: a cause's distinct messages are an ordered set (a dict) and its known
    # domains a set, beside its lists (a list-membership test here made a 100,000-message report
    # take minutes).
    seen_ids: dict[str, dict[str, None]] = {}
    seen_domains: dict[str, set[str]] = {}
    for g in (queue or {}).get("groups", []):
        cid = g.get("cause_id")
        if not cid or cid == "no-reason" or (domain and not _in_domain(g.get("domain") or "", domain)):
            continue
        rc = get(cid)
        rc.queued_recipients += int(g.get("recipients", 0))
        if g.get("oldest_arrival") is not None:
            oldest = float(g["oldest_arrival"])
            rc.oldest_arrival = oldest if rc.oldest_arrival is None else min(rc.oldest_arrival, oldest)
        if cid not in seen_ids:
            seen_ids[cid], seen_domains[cid] = dict.fromkeys(rc.queue_ids), {d for d, _ in rc.domains}
        seen_ids[cid].update(dict.fromkeys(g.get("messages", ())))
        if g.get("domain") and g["domain"] not in seen_domains[cid]:
            seen_domains[cid].add(g["domain"])
            rc.domains.append((g["domain"], int(g.get("recipients", 0))))
        if g.get("example_reason") and len(rc.examples) < 3 and g["example_reason"] not in rc.examples:
            rc.examples.append(g["example_reason"])
            rc.hop = rc.hop or hop_of(g["example_reason"])

    for cid, ids in seen_ids.items():  # first seen first: the groups' order, then each group's
        table[cid].queue_ids = list(ids)
        table[cid].queued_messages = len(ids)
    eod = (logs or {}).get("end_of_data") or {}
    for rc in table.values():
        _confidence(rc, found, log_causes, _focused_eod(eod, rc) if domain else eod, timeouts, route)
    now = (queue or {}).get("now")
    causes = localize(list(table.values()), services, notes)
    return order(causes, lifetime, float(now) if now is not None else None)


EXPIRY_SOON = 86400.0  # queued mail that bounces within a day ranks right after duplicates
TIER_NAMES = {0: "ongoing duplicate deliveries", 1: "mail about to bounce", 2: "queued volume",
              3: "unclassified", 4: "collateral"}  # fmt: skip


def _shares(a: RankedCause, b: RankedCause) -> bool:
    """The same destination or the same next hop address."""
    if {d for d, _ in a.domains} & {d for d, _ in b.domains}:
        return True
    return bool(a.hop and b.hop and a.hop.get("addr") and a.hop.get("addr") == b.hop.get("addr"))


def _span(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{max(0.0, seconds) / 60:.0f} min"


def order(causes: list[RankedCause], lifetime: float | None = None, now: float | None = None) -> list[RankedCause]:
    """Tiers, folding and the sort (the module's docstring); sets ``tier`` and ``why_ranked``."""
    for rc in causes:
        if lifetime and rc.oldest_arrival is not None:
            rc.expires_at = rc.oldest_arrival + lifetime
        if rc.id == "unclassified":
            rc.tier = 3
            rc.why_ranked = "unclassified: no known Postfix message matched, so it ranks after every known cause"
        elif not rc.root:
            rc.tier = 4
        elif rc.id in EOD_CAUSES and (rc.queued_recipients or rc.duplicates_possible):
            rc.tier = 0
            parts = []
            if rc.queued_recipients:
                parts.append(f"{rc.queued_recipients} recipient(s) still queued after a timeout at end of data: "
                             "every retry may deliver the message again")  # fmt: skip
            if rc.duplicates_possible:
                parts.append(f"{rc.duplicates_possible} message(s) already went through on a later attempt")
            rc.why_ranked = "ongoing duplicate deliveries: " + "; ".join(parts)
        elif rc.queued_recipients and rc.expires_at is not None and now is not None and rc.expires_at - now <= EXPIRY_SOON:
            rc.tier = 1
            left = rc.expires_at - now
            when = f"expires in {_span(left)}" if left > 0 else "is past its lifetime: it bounces at its next attempt"
            rc.why_ranked = (f"mail about to bounce: its oldest queued message {when} (maximal_queue_lifetime) "
                             "and returns to its sender")  # fmt: skip
        elif rc.id == "E33" and (rc.queued_recipients or rc.log_deferrals):
            rc.tier = 1
            rc.why_ranked = ("mail about to bounce: a permanent (5xx) refusal kept in the queue only by soft_bounce; "
                             "it will bounce once soft_bounce is off or the message expires")  # fmt: skip
        else:
            rc.tier = 2
            rc.why_ranked = (f"queued volume: {rc.queued_recipients} recipient(s) waiting, {rc.log_messages} "
                             f"message(s) deferred in the logs")  # fmt: skip
    roots = sorted((r for r in causes if r.tier < 3), key=_key)
    for rc in causes:
        if rc.tier != 4:
            continue
        parent = next((r for r in roots if _shares(rc, r)), None)
        if parent is not None:
            rc.folded_under = parent.id
            parent.folded.append(rc.id)
            parent.collateral_lines += rc.log_deferrals + rc.collateral_lines
            rc.why_ranked = (f"collateral: 'delivery temporarily suspended' echoes of an earlier failure to the same "
                             f"destination; counted under {parent.id}, which produced them")  # fmt: skip
        else:
            rc.why_ranked = ("collateral: the echo of an earlier failure whose own line is not in this evidence; "
                             "ranked after every root cause")  # fmt: skip
    return sorted(causes, key=_key)


def _key(r: RankedCause) -> tuple[Any, ...]:
    expiry = r.expires_at if r.tier == 1 and r.expires_at is not None else float("inf")
    return (r.tier, expiry, -r.queued_recipients, -r.log_messages, -r.log_deferrals, -r.confidence, r.id)


def per_destination(rc: RankedCause, logs: Mapping[str, Any] | None, findings: Iterable[Finding],
                    routes: Mapping[str, Mapping[str, Any]], timeouts: Mapping[str, float] | None) -> list[dict[str, Any]]:  # fmt: skip
    """For an end-of-data cause shared by several destinations: each one's own reading, as a
    report focused on it (``--domain``) would give: its d values, its next hop, the timeout of
    the transport that delivers to it (and the line that sets it), its best supported
    underlying cause. Empty for one destination (the cause's own reasoning is already its)."""
    if rc.id not in EOD_CAUSES or len(rc.domains) < 2:
        return []
    cause = next((c for c in (logs or {}).get("causes", []) if c.get("id") == rc.id), None)
    if cause is None:
        return []
    eod = (logs or {}).get("end_of_data") or {}
    found = list(findings)
    out = []
    for d, n in rc.domains[:MAX_DESTINATIONS]:
        own = _own_slice(cause, d)
        if own is None:
            continue
        route = routes.get(d)
        t = route["timeouts"] if route is not None else timeouts
        hop = hop_of(own.get("example") or "")
        probe = RankedCause(rc.id, rc.cause, hop=hop, why=["other destinations share this cause"])
        hs = hypotheses({"id": rc.id, "delays": own.get("delays")}, _focused_eod(eod, probe), t, found, route)
        d_profile = (own.get("delays") or {}).get("d") or {}
        out.append({"domain": d, "deferrals": int(n), "next_hop": hop,
                    "transport": (route or {}).get("transport"),
                    "smtp_data_done_timeout": (t or {}).get("smtp_data_done_timeout"),
                    "timeout_set_by": ((route or {}).get("origins") or {}).get("smtp_data_done_timeout"),
                    "d_median": d_profile.get("median"), "d_p95": d_profile.get("p95"),
                    "underlying": [{"id": h.id, "title": h.title, "score": round(h.score, 2), "evidence": h.evidence}
                                   for h in hs[:2]]})  # fmt: skip
    return out


MAX_DESTINATIONS = 8


def _for_route(f: Finding, route: Mapping[str, Any] | None) -> bool:
    """Whether a config.timeouts finding is about the value the destination's transport uses: its
    own master.cf -o override, or main.cf's when that transport has none (without a route: all)."""
    if route is None:
        return True
    origin = str((route.get("origins") or {}).get(str(f.values.get("parameter"))) or "")
    transport = str(route.get("transport") or "smtp")
    if origin.startswith("master.cf "):
        return f" {transport}/" in f.summary
    return "master.cf" not in f.summary


def _focused_eod(eod: Mapping[str, Any], rc: RankedCause) -> dict[str, Any]:
    """The end-of-data summary as far as it is this destination's: the PIX workarounds Postfix
    enabled for its own next hop (host[addr], and the port when it is not 25); message sizes and
    later deliveries are counted over every destination, so they stay out when others share it."""
    hop = rc.hop or {}
    mine = []
    for key, n in eod.get("pix_workarounds") or []:
        m = re.match(r"(?P<host>[^\[]*)\[(?P<addr>[^\]]*)\](?::(?P<port>\d+))?$", str(key))
        if m and hop.get("addr") == m["addr"] and int(m["port"] or 25) == int(hop.get("port") or 25):
            mine.append((key, n))
    shared = any("other destinations share this cause" in w for w in rc.why)
    out = {**eod, "pix_workarounds": mine}
    if shared:
        out = {"pix_workarounds": mine}
    return out


def _confidence(rc: RankedCause, found: list[Finding], log_causes: Mapping[str, Any], eod: Mapping[str, Any],
                timeouts: Mapping[str, float] | None, route: Mapping[str, Any] | None = None) -> None:  # fmt: skip
    if rc.id == "unclassified":
        rc.confidence = 0.25
        rc.why.append("no known Postfix message matched: the reason text is kept verbatim below")
        return
    c = 0.6
    rc.why.append("the deferral text matches Postfix's own message for this cause")
    if rc.log_deferrals and rc.queued_recipients:
        c += 0.15
        rc.why.append(f"seen in the logs ({rc.log_deferrals} deferrals) and still in the queue "
                      f"({rc.queued_recipients} recipients)")  # fmt: skip
    elif rc.queued_recipients:
        c += 0.1
        rc.why.append(f"{rc.queued_recipients} recipient(s) wait in the queue with this reason")
    elif rc.log_deferrals:
        rc.why.append(f"seen in the logs only ({rc.log_deferrals} deferrals); nothing with this reason is queued now")
        c -= 0.1
    for f in found:
        if f.cause_id == rc.id and f.severity >= Severity.WARNING and f.check_id != "config.timeouts":
            rc.confirmations.append(f)
    if rc.confirmations:
        c += 0.2
        rc.why.append("confirmed by a check: " + rc.confirmations[0].summary)
    if rc.id in EOD_CAUSES:
        rc.hypotheses = hypotheses(log_causes.get(rc.id, {"id": rc.id}), eod, timeouts, found, route)
        rc.duplicates_possible = int(eod.get("delivered_later_possible_duplicates") or 0)
        if rc.hypotheses:
            best = rc.hypotheses[0]
            rc.why.append(f"most likely underlying cause: {best.title if best.title.startswith('Postfix') else best.title[:1].lower() + best.title[1:]} ({confidence_label(best.score)} "
                          f"confidence)")  # fmt: skip
            c += 0.1 * best.score
    for f in found:  # shown with the cause, no confidence: it says why it happens, not that it does
        if f.check_id == "config.timeouts" and f.cause_id == rc.id and _for_route(f, route):
            rc.confirmations.append(f)
            if rc.id not in EOD_CAUSES:
                rc.why.append("Postfix's own wait for this phase is shortened: " + f.summary)
    rc.confidence = round(max(0.05, min(0.98, c)), 2)


# main.cf/master.cf parameters that name a service on this machine (or a relay) as a next hop
LOCAL_PARAMS = LOCAL_SERVICE_PARAMS
REPLY_CAUSES = ("E28", "E29")


def services_of(config: Any) -> dict[str, str] | None:
    """The local-service parameters (LOCAL_PARAMS) of a checks.postfix.postconf.PostfixConfig: main.cf
    values and master.cf -o overrides ("smtp-amavis/unix -o content_filter"); None when the
    configuration read holds none of them (then locality is judged from the address). The one
    input of ``localize``: the report, `pfdiag logs` and `pfdiag queue` all judge locality with it."""
    known = [n for n in LOCAL_PARAMS if n in config.values]
    out = {n: config.values[n] for n in known if config.values[n]}
    for (svc, kind, name), value in sorted(config.overrides.items()):
        if name in LOCAL_PARAMS and value:
            out[f"{svc}/{kind} -o {name}"] = value
            known.append(name)
    return out if known else None


def relocalize(report: dict[str, Any], config: Any, kind: str) -> dict[str, Any]:
    """`pfdiag logs` (kind "logs") or `pfdiag queue` ("queue") report with its E32 entries judged
    by ``localize``'s rule from ``config`` (a PostfixConfig; None: unknown, E32 stays as the text
    says, noted), as the report engine does: changed in place, the why per cause in "locality"."""
    services = services_of(config) if config is not None else None
    has_local = any(c.get("id") == "E32" for c in report.get("causes", [])) or any(
        g.get("cause_id") == "E32" for g in report.get("groups", []))  # fmt: skip
    if not has_local:
        return report
    if services is None:
        report["locality"] = {"E32": ["judged from the loopback/socket address alone: the local services' "
                                      "configuration (content_filter, relayhost, *_transport) was not read"]}  # fmt: skip
        return report
    if kind == "logs":
        new, _, notes = localize_inputs(report, None, services)
        report["causes"], report["domains"] = new["causes"], new["domains"]
        if "relays" in new:
            report["relays"] = new["relays"]
    else:
        _, new, notes = localize_inputs(None, report, services)
        report["groups"] = new["groups"]
    report["locality"] = notes
    return report


def _hop_key(hop: Mapping[str, Any] | None) -> str | None:
    if not hop or not hop.get("addr"):
        return None
    return f"{hop['addr']}:{hop['port']}" if hop.get("port") else str(hop["addr"])


def _named_by(hop: Mapping[str, Any], services: Mapping[str, str]) -> str | None:
    """The parameter whose value names this next hop ('content_filter = smtp-amavis:[127.0.0.1]:10024')."""
    addr, port = str(hop.get("addr") or ""), hop.get("port")
    for name, value in sorted(services.items()):
        v = value.replace("[", "").replace("]", "")
        if addr and addr in v and (port is None or f":{port}" in v or (port in (24, 25) and f"{addr}:" not in v)):
            return f"{name} = {value}"
    return None


def local_verdict(text: str, services: Mapping[str, str]) -> tuple[str, str]:
    """(cause id, why) for one E32 text (a log line or a queue reason) under the rule of ``localize``."""
    reason = text.rpartition("status=deferred (")[2][:-1] if "status=deferred (" in text else text
    c = classify(reason)
    hop = hop_of(text) or {"addr": c.addr, "port": c.port, "host": c.host}
    socket = "/" in str(hop.get("addr") or "")
    named = _named_by(hop, services) if hop.get("addr") else None
    sub = c.subcause if c.cause_id == "E32" else c.cause_id
    if (socket or named) and sub not in REPLY_CAUSES:
        return "E32", f"the next hop {_hop_key(hop)} is " + (f"a service on this machine: {named}" if named else
                                                            "a unix socket: a service on this machine")  # fmt: skip
    if not sub or sub == "E32":
        return "E32", "the next hop is on this machine"
    if named or socket:
        return sub, f"the local service that answered: {named or _hop_key(hop)} (its reply keeps its meaning)"
    inward = dns_points_inward(hop, _domain_of(text))
    if inward:
        return sub, inward
    return sub, (f"the next hop {_hop_key(hop)} is on loopback but no local service (content_filter, relayhost, "
                 "*_transport) is configured there: an MX/A record or a transport_maps route points at this "
                 "machine; judged by what happened there, not as a local filter")  # fmt: skip


# RFC 1918, shared address space (RFC 6598) and unique local IPv6: no MX on the Internet is there
# (the documentation ranges, 192.0.2.0/24..., stand for public addresses in examples: not these)
_PRIVATE = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
                                                    "fc00::/7"))  # fmt: skip


def dns_points_inward(hop: Mapping[str, Any] | None, domain: str | None = None) -> str | None:
    """Its own finding: the next hop is a host *name* (found in DNS: an MX or A record, not a
    bracketed transport_maps/relayhost address) whose address is loopback, private or link-local
    space: the destination's DNS (or a local override of it) points where no Internet MX can be."""
    if not hop or not hop.get("host") or not hop.get("addr"):
        return None
    host, addr = str(hop["host"]), str(hop["addr"])
    try:
        ip = ipaddress.ip_address(addr.removeprefix("ipv6:").removeprefix("IPv6:"))
    except ValueError:
        return None
    private = any(ip in net for net in _PRIVATE if net.version == ip.version)
    if host == addr or host.lower() in ("localhost", "unknown") or not (ip.is_loopback or private or ip.is_link_local):
        return None
    space = "loopback" if ip.is_loopback else "link-local" if ip.is_link_local else "private"
    whose = f" of {domain}" if domain else ""
    return (f"the destination's DNS points at {space} space: {host} (an MX or A record{whose}) resolves to {addr}; "
            "a DNS problem of the destination (or a local DNS override), its own finding, not a local filter on "
            "this machine: check it with dig MX / dig A, judged by what happened there")  # fmt: skip


def _domain_of(text: str) -> str | None:
    m = re.search(r"to=<[^>@]*@([^>]+)>", text)
    return m.group(1).lower() if m else None


def localize_inputs(logs: Mapping[str, Any] | None, queue: Mapping[str, Any] | None,
                    services: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, Any], dict[str, list[str]]]:  # fmt: skip
    """The logs and queue reports with their E32 entries re-judged per destination (``localize``):
    copies, the inputs are not changed. Returns (logs, queue, notes per cause id)."""
    notes: dict[str, list[str]] = {}
    new_logs: dict[str, Any] = dict(logs or {})
    new_queue: dict[str, Any] = dict(queue or {})
    verdict: dict[str, tuple[str, str]] = {}  # domain -> (cid, why)
    groups = []
    for g in (queue or {}).get("groups", []):
        if g.get("cause_id") == "E32" and g.get("example_reason"):
            v = local_verdict(g["example_reason"], services)
            verdict.setdefault((g.get("domain") or "").lower(), v)
            g = {**g, "cause_id": v[0]}
            notes.setdefault(v[0], []).append(v[1])
        groups.append(g)
    if queue is not None:
        new_queue["groups"] = groups
    causes: dict[str, dict[str, Any]] = {}
    for c in (logs or {}).get("causes", []):
        if c["id"] != "E32" or not c.get("example"):
            _merge(causes, c)
            continue
        own = local_verdict(c["example"], services)
        own_domain = _domain_of(c["example"])
        # top_domains counts lines (deferrals and suspended ones): each destination gets its share of
        # the cause's deferrals, messages and collateral lines; the last one the rounding rest
        tops = [(str(d), int(n)) for d, n in c.get("top_domains", [])] or [(own_domain or "", 1)]
        weight = sum(n for _, n in tops) or 1
        left = {k: int(c.get(k, 0)) for k in ("deferrals", "messages", "collateral")}
        slices = c.get("by_domain") or {}
        split: dict[str, int] = {}  # new cause id -> deferrals: the relays' E32 counts follow it
        for i, (d, n) in enumerate(tops):
            mine = (slices.get(d) or {}).get("example")  # that destination's own first line, when kept
            if d.lower() == own_domain:
                cid, why = own
            elif mine:
                cid, why = local_verdict(mine, services)
            else:
                cid, why = verdict.get(d.lower(), own)
            verdict.setdefault(d.lower(), (cid, why))
            part = {k: (v if i == len(tops) - 1 else int(c.get(k, 0)) * n // weight) for k, v in left.items()}
            for k in left:
                left[k] -= part[k]
            split[cid] = split.get(cid, 0) + part["deferrals"]
            _merge(causes, {**c, **part, "id": cid, "top_domains": [[d, n]],
                            "by_domain": {d: slices[d]} if d in slices else {},
                            "example": c["example"] if d.lower() == own_domain else mine})  # fmt: skip
            notes.setdefault(cid, []).append(why)
        new_logs["relays"] = [_resplit(r, split) for r in (logs or {}).get("relays", [])]
    new_logs["causes"] = [_retitle(c, "logs") for c in causes.values()]
    rows = []
    for row in (logs or {}).get("domains", []):
        if "E32" in (row.get("causes") or {}):
            counts = dict(row["causes"])
            n = counts.pop("E32")
            cid = verdict.get(str(row.get("domain", "")).lower(), ("", ""))[0]
            if not cid:
                cid = next((k for k, c in causes.items() for d, _ in c["top_domains"] if d == row.get("domain")), "E32")
            counts[cid] = counts.get(cid, 0) + n
            row = {**row, "causes": counts}
        rows.append(row)
    if logs is not None:
        new_logs["domains"] = rows
    if queue is not None:
        new_queue["groups"] = [_retitle(g, "queue") for g in groups]
    return new_logs, new_queue, {k: list(dict.fromkeys(v)) for k, v in notes.items()}


def _retitle(entry: dict[str, Any], kind: str) -> dict[str, Any]:
    """An entry whose cause id was re-judged gets that cause's own catalog fields, as its report
    names them: a `pfdiag logs` cause (logreport._cause_meta: slug, title, root cause), a `pfdiag
    queue` group (queuereport.cause_title)."""
    if kind == "queue":
        from diagnose.queuereport import cause_title

        return {**entry, "cause_title": cause_title(str(entry["cause_id"]))} if "cause_title" in entry else entry
    from diagnose.logreport import _cause_meta

    slug, title, root, _ = _cause_meta(str(entry["id"]))
    return {**entry, "slug": slug, "title": title, "root_cause": root} if "title" in entry else entry


def _resplit(row: Mapping[str, Any], split: Mapping[str, int]) -> dict[str, Any]:
    """A relay row's E32 count shared among the causes it was re-judged into, in their proportion."""
    counts = dict(row.get("causes") or {})
    n = counts.pop("E32", 0)
    if not n:
        return dict(row)
    total = sum(split.values()) or 1
    items = sorted(split.items(), key=lambda kv: -kv[1]) or [("E32", total)]
    given = 0
    for i, (cid, k) in enumerate(items):
        part = n - given if i == len(items) - 1 else n * k // total
        given += part
        if part:
            counts[cid] = counts.get(cid, 0) + part
    return {**row, "causes": dict(sorted(counts.items(), key=lambda kv: -kv[1]))}


def _merge(causes: dict[str, dict[str, Any]], c: Mapping[str, Any]) -> None:
    old = causes.get(c["id"])
    if old is None:
        causes[c["id"]] = dict(c)
        return
    for k in ("deferrals", "messages", "collateral"):
        old[k] = int(old.get(k, 0)) + int(c.get(k, 0))
    old["top_domains"] = list(old.get("top_domains", [])) + [x for x in c.get("top_domains", [])
                                                              if x not in old.get("top_domains", [])]  # fmt: skip
    old["example"] = old.get("example") or c.get("example")
    if c.get("by_domain"):
        old["by_domain"] = {**(old.get("by_domain") or {}), **c["by_domain"]}
    old["first_seen"] = min(filter(None, (old.get("first_seen"), c.get("first_seen"))), default=None)
    old["last_seen"] = max(filter(None, (old.get("last_seen"), c.get("last_seen"))), default=None)


def localize(causes: list[RankedCause], services: Mapping[str, str] | None,
             notes: Mapping[str, list[str]] | None = None) -> list[RankedCause]:  # fmt: skip
    """Locality from the configuration, not from the address alone (classify() only sees the
    text, so it calls every failure at a loopback address or socket E32, keeping the network or
    reply cause as its subcause). The rule, for real servers:

    * E32 (a local filter, LMTP server or relay is down) stays when the next hop is a unix socket
      (only local services listen there), or when a main.cf/master.cf -o parameter of a local
      service (``LOCAL_PARAMS``: content_filter, relayhost, virtual_transport, ...) names that
      address and port: the why says which one;
    * a *reply* from that service (E28/E29 kept as subcause: it answered, e.g. 451 queue file
      write error) keeps its reply meaning: back to the reply cause, saying which local service
      answered;
    * a loopback next hop that no local-service parameter names was reached through an MX/A
      record or a transport_maps route (the pfdiag test lab routes its simulated *remote* MXs
      as ``smtp:[127.0.0.1]:PORT`` in transport_maps): it keeps the network/reply meaning the
      text has (E02 refused, E28 ...) and the why says the next hop is on loopback: a DNS record
      or a transport map pointing at this machine, its own finding;
    * ``services`` None: those parameters were not read, E32 stays and the why says it was
      judged from the address alone.
    """
    for rc in causes:
        if services is None and rc.id == "E32":
            rc.why.append("judged from the loopback/socket address alone: this evidence does not hold the "
                          "local services' configuration (content_filter, relayhost, *_transport)")  # fmt: skip
        for note in (notes or {}).get(rc.id, []):
            if note not in rc.why:
                rc.why.append(note)
        inward = dns_points_inward(rc.hop, rc.top_domain)
        if inward and not any("the destination's DNS points at" in w for w in rc.why):
            rc.why.append(inward)
    return causes


def probe_targets(ranked: Iterable[RankedCause], limit: int = 10,
                  resolve: Callable[[str], dict[str, Any] | None] | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """The next hops worth talking to: those of root causes that happen on the wire. The hop
    Postfix really used (a log line with the port) comes first; without one, ``resolve``
    finds the domain's next hop the way Postfix would (transport maps, relayhost, MX).
    Deduplicated by address and port, most important first."""
    out: list[dict[str, Any]] = []
    seen: set[tuple[str, int]] = set()
    for rc in ranked:
        if not rc.root or rc.cause.family not in PROBE_FAMILIES:
            continue
        hop = None
        if rc.hop and rc.hop.get("port"):
            hop = {"host": rc.hop["addr"], "name": rc.hop["host"], "port": rc.hop["port"], "source": "the log"}
        elif resolve is not None and rc.top_domain:
            hop = resolve(rc.top_domain)
        if hop is None:
            continue
        key = (hop["host"], int(hop["port"]))
        if key in seen:
            continue
        seen.add(key)
        out.append({"host": hop["host"], "name": hop.get("name") or hop["host"], "port": int(hop["port"]),
                    "domain": rc.top_domain, "cause_id": rc.id, "source": hop.get("source", ""),
                    **({"transport": hop["transport"]} if hop.get("transport") else {})})  # fmt: skip
        if len(out) >= limit:
            break
    return out
