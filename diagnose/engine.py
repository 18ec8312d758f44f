"""Run what a diagnosis needs, concurrently and within a time budget, and keep what came back.

A diagnosis gathers evidence in two rounds:

1. *collect*: the logs analysis, the queue report and the configuration report, at once
   (three daemon threads; each is what ``pfdiag logs|queue|config`` computes);
2. *checks*: every registered check (built-in and plugins, checks/registry.py), again at
   once; ``Context.options`` carries what round 1 found (the ConfigReport, the next hops of
   deferred mail, the destinations deferred for DNS reasons), so nothing is asked twice.

A step that fails or runs out of budget becomes a StepStatus with the reason; the facts
that did come back are kept. One broken step or plugin never stops a diagnosis.
Correlating the evidence into ranked causes is diagnose/correlate.py's job.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Generic, Mapping, TypeVar, cast

from checks.errors import CheckSkipped, PfdiagError
from checks.model import Evidence, Finding, Severity
from checks.registry import CheckSpec, Context, load_checks
from checks.targets.base import Target

if TYPE_CHECKING:
    from checks.config import ConfigReport

DEFAULT_BUDGET = 180.0
Progress = Callable[[str, str, str], None]  # (step id, state: start|ok|error|timeout|skipped, detail)


@dataclass
class StepStatus:
    id: str
    title: str
    state: str = "pending"  # ok | error | timeout | skipped
    seconds: float = 0.0
    detail: str = ""
    where: str = ""


@dataclass
class Facts:
    """Everything one diagnosis saw. Plain dicts so that reports and tests can read them."""

    where: str
    logs: dict[str, Any] | None = None
    queue: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    config_report: ConfigReport | None = None  # handed to the checks
    identity: dict[str, str] = field(default_factory=dict)  # own names (IDENTITY) and bind settings (BIND_NAMES)
    probe_targets: list[dict[str, Any]] = field(default_factory=list)
    dns_targets: list[str] = field(default_factory=list)  # destinations deferred for DNS reasons
    findings: list[Finding] = field(default_factory=list)
    steps: list[StepStatus] = field(default_factory=list)
    live: bool = True  # False for snapshots: nothing can be probed
    kind: str = "local"  # the target's kind: local, ssh, snapshot, pasted
    routes: dict[str, dict[str, Any]] = field(default_factory=dict)  # domain -> its transport (routes_of)


def _noop(step: str, state: str, detail: str) -> None:
    pass


def run_parallel(jobs: Mapping[str, tuple[str, Callable[[], Any]]], budget: float, where: str,
                 progress: Progress = _noop) -> tuple[dict[str, Any], list[StepStatus]]:  # fmt: skip
    """Run every job at once (checks.runner, one daemon thread each); wait for them until ``budget`` seconds.

    A job still running at the deadline is reported as a timeout and abandoned (daemon
    threads do not keep pfdiag alive); its result, if it ever comes, is ignored. A job's
    PfdiagError, and any other exception (a bug or a broken plugin), is its "error" step."""
    from checks.runner import run_within

    statuses = {jid: StepStatus(jid, title, where=where) for jid, (title, _) in jobs.items()}

    def task(jid: str, func: Callable[[], Any]) -> Callable[[float], tuple[Any, str, str, float]]:
        def work(deadline: float) -> tuple[Any, str, str, float]:
            t0 = time.monotonic()
            try:
                value = func()
                state, detail = "ok", ""
            except CheckSkipped as exc:  # it does not apply here: said as such, with its reason
                value, state, detail = [], "skipped", str(exc)
            except PfdiagError as exc:
                value, state, detail = None, "error", str(exc)
            except Exception as exc:  # a bug or a broken plugin: reported, never fatal
                value, state, detail = None, "error", f"{type(exc).__name__}: {exc}"
            progress(jid, state, detail)
            return value, state, detail, round(time.monotonic() - t0, 3)

        return work

    for jid in jobs:
        progress(jid, "start", statuses[jid].title)
    outcomes = run_within(budget, [(jid, task(jid, func)) for jid, (_, func) in jobs.items()], workers=max(len(jobs), 1),
                          name="pfdiag-step")  # fmt: skip
    results: dict[str, Any] = {}
    for o in outcomes:
        st = statuses[o.label]
        if o.value is not None:
            results[o.label], st.state, st.detail, st.seconds = o.value
        else:  # not finished within the budget (the tasks themselves never fail)
            st.state, st.seconds = "timeout", round(budget, 3)
            st.detail = f"did not finish within the {budget:g} s budget"
            progress(o.label, "timeout", st.detail)
    return results, list(statuses.values())


# ------------------------------------------------------------------ round 1: collect


_V = TypeVar("_V")


class _Once(Generic[_V]):
    """A value computed once, by whichever thread asks first (the others wait for it)."""

    def __init__(self, make: Callable[[], _V]) -> None:
        self._make, self._lock, self._done = make, threading.Lock(), False
        self._value: _V | None = None
        self._error: Exception | None = None

    def __call__(self) -> _V:
        with self._lock:
            if not self._done:
                try:
                    self._value = self._make()
                except Exception as exc:  # every caller sees the same failure
                    self._error = exc
                self._done = True
        if self._error is not None:
            raise self._error
        return cast(_V, self._value)  # set once _done and no error


def collect_logs(target: Target, since: float | None, paths: list[str] | None, config: Callable[[], ConfigReport],
                 config_dir: str | None = None) -> dict[str, Any]:  # fmt: skip
    from checks.logs import default_sources, resolve_sources
    from diagnose.delays import DEFAULT_TIMEOUTS, config_for_log, smtp_timeouts
    from diagnose.logreport import to_dict
    from diagnose.logscan import analyse_logs

    sources = resolve_sources(target, paths) if paths else default_sources(target, config_dir)
    analysis, stats = analyse_logs(target, sources, since, None)
    # the configuration of the host the log came from (another host's log: Postfix's defaults, said so)
    cfg, source = config_for_log(target, config_dir, config, (c.example for c in analysis.causes.values()), bool(paths))
    timeouts = smtp_timeouts(cfg) if cfg is not None else None
    report = to_dict(analysis, stats, since, None, timeouts)
    report["timeouts"] = {"source": source, "values": timeouts or DEFAULT_TIMEOUTS, "host_config": cfg is not None}
    return report


ROUTED_CAUSES = ("E09", "E10", "E31", "E33")  # causes whose reasoning needs the destination's transport
MAX_ROUTES = 8


def routes_of(target: Target, config_dir: str | None, cfg: Any, domains: list[str]) -> dict[str, dict[str, Any]]:
    """{domain: {"transport", "source", "timeouts", "origins", "soft_bounce"}}: the master.cf
    service each destination is delivered by (transport_maps, relayhost, default_transport,
    looked up as Postfix does; no DNS) and what that service really uses: its smtp_*_timeout
    values and soft_bounce with its master.cf -o overrides (diagnose.delays.timeout_origin says
    which line sets each). A domain that cannot be looked up is left out."""
    from checks.nexthop import resolve_nexthop
    from diagnose.delays import DEFAULT_TIMEOUTS, smtp_timeouts, timeout_origin

    out: dict[str, dict[str, Any]] = {}
    for d in domains[:MAX_ROUTES]:
        try:
            hop = resolve_nexthop(target, d, config_dir, None)
        except PfdiagError:
            continue
        service = f"{hop.transport}/unix"
        out[d] = {"domain": d, "transport": hop.transport, "nexthop": hop.nexthop, "source": hop.source,
                  "timeouts": smtp_timeouts(cfg, service),
                  "origins": {n: timeout_origin(cfg, n, service) for n in DEFAULT_TIMEOUTS},
                  "soft_bounce": (cfg.effective("soft_bounce", service) or "no").strip().lower(),
                  "soft_bounce_origin": timeout_origin(cfg, "soft_bounce", service)}  # fmt: skip
    return out


def collect_queue(target: Target, config_dir: str | None, config: Callable[[], Any]) -> dict[str, Any]:
    from diagnose.queuereport import collect_digest

    return collect_digest(target, config_dir, config)  # aggregated as postqueue lists: no entry per message


IDENTITY = ("myhostname", "mydomain", "mydestination", "smtp_helo_name")  # expanded by postconf -x


def read_identity(target: Target, config_dir: str | None) -> dict[str, str]:
    """This server's own names (what redaction must hide) and where its smtp client sends from
    (checks.bind.BIND_NAMES: the probes bind there too), in one postconf -x; empty when postconf
    cannot say."""
    from checks.bind import BIND_NAMES
    from checks.config import postconf_x

    for wanted in ((*IDENTITY, *BIND_NAMES), IDENTITY):  # a bundle recorded before the bind names has the second
        try:
            return {k: v for k, v in postconf_x(target, config_dir, *wanted).items() if k in wanted}
        except PfdiagError:
            continue
    return {}


def collect_config(target: Target, config_dir: str | None, config: Callable[[], ConfigReport]
                   ) -> tuple[dict[str, Any], ConfigReport, dict[str, str]]:  # fmt: skip
    from diagnose.configreport import build

    rep = config()
    return build(rep, {}), rep, read_identity(target, config_dir)


def collect(target: Target, *, budget: float = DEFAULT_BUDGET, config_dir: str | None = None,
            log_paths: list[str] | None = None, since: float | None = None, progress: Progress = _noop,
            domain: str | None = None) -> Facts:  # fmt: skip
    """Round 1: logs, queue and configuration at once, within ``budget`` seconds."""
    from checks.config import read_config
    from diagnose.correlate import probe_targets, rank

    facts = Facts(where=target.where, live=target.live, kind=target.kind)
    for warning in target.warnings:  # a bundle whose entries its manifest does not vouch for
        facts.findings.append(Finding("snapshot.integrity", Severity.WARNING, f"snapshot bundle: {warning}",
                                      evidence=(Evidence("manifest.json sha256", warning, target.where),)))  # fmt: skip
    # logs (for the effective timeouts), queue (for the backoff settings) and config all
    # need postconf's answers: asked once, over SSH that is a third of the round trips
    config = _Once(lambda: read_config(target, config_dir))
    jobs = {
        "logs": ("read the Postfix logs", lambda: collect_logs(target, since, log_paths, config, config_dir)),
        "queue": ("read the mail queue", lambda: collect_queue(target, config_dir, config)),
        "config": ("read the configuration", lambda: collect_config(target, config_dir, config)),
    }
    results, steps = run_parallel(jobs, budget, target.where, progress)
    facts.logs, facts.queue = results.get("logs"), results.get("queue")
    if results.get("config"):
        facts.config, facts.config_report, facts.identity = results["config"]
    facts.steps.extend(steps)
    for st in steps:
        if st.state in ("error", "timeout"):
            facts.findings.append(Finding(f"collect.{st.id}", Severity.ERROR, f"{st.title}: {st.detail}",
                                          evidence=(Evidence(st.title, st.detail, target.where),)))  # fmt: skip
    resolve: Callable[[str], dict[str, Any] | None] | None = None
    if facts.live:
        from checks.nexthop import first_address

        resolve = lambda d: first_address(target, d, config_dir)  # noqa: E731 - the next hop, as Postfix finds it

    ranked = rank(facts.logs, facts.queue, [], domain=domain)
    if facts.config_report is not None and ((facts.logs or {}).get("timeouts") or {}).get("host_config", True):
        wanted = [domain.lower().rstrip(".")] if domain else [d for rc in ranked if rc.id in ROUTED_CAUSES
                                                             for d, _ in rc.domains]  # fmt: skip
        facts.routes = routes_of(target, config_dir, facts.config_report.config, list(dict.fromkeys(d for d in wanted if d)))
    facts.probe_targets = probe_targets(ranked, resolve=resolve)
    facts.dns_targets = list(dict.fromkeys(rc.top_domain for rc in ranked
                                           if rc.cause.family == "dns" and rc.top_domain))  # fmt: skip
    return facts


def gather(target: Target, answers: Mapping[str, str], *, budget: float = DEFAULT_BUDGET,
           config_dir: str | None = None, log_paths: list[str] | None = None, since: float | None = None,
           progress: Progress = _noop, include_plugins: bool = True) -> Facts:  # fmt: skip
    """Both rounds; about ``budget`` seconds at most (two thirds for collecting, the rest
    and anything left over for the checks)."""
    t0 = time.monotonic()
    facts = collect(target, budget=budget * 2 / 3, config_dir=config_dir, log_paths=log_paths, since=since,
                    progress=progress)  # fmt: skip
    remaining = max(5.0, budget - (time.monotonic() - t0))
    run_checks(facts, target, answers, remaining, config_dir, progress, include_plugins)
    return facts


# ------------------------------------------------------------------ round 2: registered checks


def run_checks(facts: Facts, target: Target, answers: Mapping[str, str], budget: float, config_dir: str | None,
               progress: Progress = _noop, include_plugins: bool = True, dns_resolver: str | None = None) -> None:  # fmt: skip
    from diagnose.probedoc import report_probe_findings  # the probes judged as pfdiag probe judges them

    specs, problems = load_checks(include_plugins=include_plugins)
    ctx = Context(target=target, answers=dict(answers),
                  options={"collected": {"config_report": facts.config_report, "identity": facts.identity, "logs": facts.logs}, "probe_targets": facts.probe_targets,
                           "probe_findings": report_probe_findings,
                           "dns_targets": facts.dns_targets, "dns_resolver": dns_resolver,
                           "config_dir": config_dir, "budget": budget})  # fmt: skip
    jobs: dict[str, tuple[str, Callable[[], Any]]] = {}
    for spec in specs:
        jobs[spec.id] = (spec.title, _runner(spec, ctx))
    results, steps = run_parallel(jobs, budget, target.where, progress)
    by_id = {s.id: s for s in specs}
    for st in steps:
        spec = by_id[st.id]
        found = results.get(st.id) or []
        if st.state in ("error", "timeout"):
            facts.findings.append(Finding(st.id, Severity.ERROR, f"check {st.id} ({spec.origin}) {st.state}: {st.detail}",
                                          evidence=(Evidence(f"check {st.id}", st.detail, target.where),)))  # fmt: skip
        facts.findings.extend(found)
    for prob in problems:
        facts.findings.append(Finding("plugins", Severity.ERROR, f"plugin {prob.origin} could not be loaded: {prob.error}",
                                      evidence=(Evidence(prob.origin, prob.error, "local"),)))  # fmt: skip
    facts.steps.extend(steps)


def _runner(spec: CheckSpec, ctx: Context) -> Callable[[], list[Finding]]:
    def call() -> list[Finding]:
        out = list(spec.func(ctx) or ())
        bad = [f for f in out if not isinstance(f, Finding)]
        if bad:
            raise TypeError(f"returned {type(bad[0]).__name__}, not Finding")
        return out

    return call
