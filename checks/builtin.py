"""The built-in checks a diagnosis runs (registered in checks/registry.py BUILTIN_MODULES).

Each is a ``@check`` function ``(ctx) -> list[Finding]``; its docstring is what
``pfdiag checks`` and ``pfdiag explain`` show. They read what the engine already collected
from ``ctx.options`` (``collected``: the ConfigReport; ``probe_targets``: next hops worth
talking to) so that nothing is asked of the mail host twice.

A check that does not apply (a snapshot cannot be probed; no next hop to probe) returns
an INFO finding that says why, so the report shows what was not looked at.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from checks.errors import CheckSkipped, PfdiagError
from checks.model import Evidence, Finding, Severity
from checks.registry import Context, check

def _is_live(ctx: Context) -> bool:
    return ctx.target.live  # a recording (or a pasted listing): nothing to probe, resolve or change


def _config_report(ctx: Context) -> Any:
    from checks.config import read_config

    rep = (ctx.options.get("collected") or {}).get("config_report")
    return rep if rep is not None else read_config(ctx.target, ctx.options.get("config_dir"))


@check("config.timeouts", title="timeout and retry settings", tags=("config",))
def config_timeouts(ctx: Context) -> list[Finding]:
    """Postfix's effective timeout, backoff and lifetime settings (main.cf and master.cf -o
    overrides) against their defaults: a lowered smtp_data_done_timeout makes Postfix give up
    on a slow receiver early and retry a message that may already have been delivered (E09);
    other risky values (queue_run_delay above minimal_backoff_time, soft_bounce...) are warnings."""
    from checks.config import RFC_CAUSES, shortened

    rep = _config_report(ctx)
    where = ctx.target.where
    out: list[Finding] = []
    for name, why in rep.risks:
        row = next((r for r in rep.rows if r.name == name), None)
        excerpt = f"{name} = {row.effective}" if row is not None else name
        # a wait lowered below RFC 5321's: deferrals of that phase are (partly) Postfix's own doing
        cause = ("E09" if name == "smtp_data_done_timeout"
                 else RFC_CAUSES[name] if shortened(rep.config, name) is not None else None)  # fmt: skip
        values: dict[str, Any] = {"parameter": name, "effective": row.effective if row else None,
                                  "default": row.default if row else None}  # fmt: skip
        if row is not None and getattr(row, "where", None):
            values["set_in"] = list(row.where)
        if cause == "E09":
            values["hypothesis"] = "local-timeout"
            values["seconds"] = _seconds(rep, name)
        out.append(Finding("config.timeouts", Severity.WARNING, f"{name}: {why}", cause,
                           (Evidence(f"postconf -h {name}", excerpt, where),), values))  # fmt: skip
    if not out:
        out.append(Finding("config.timeouts", Severity.OK, "timeouts, backoff and lifetimes are within safe ranges",
                           evidence=(Evidence("postconf -n / -d / -P", "", where),)))  # fmt: skip
    return out


def _seconds(rep: Any, name: str) -> float | None:
    from checks.config import seconds_of

    try:
        return seconds_of(rep.config, name)
    except PfdiagError:
        return None


@check("postfix.running", title="is Postfix running", tags=("postfix",))
def postfix_running(ctx: Context) -> list[Finding]:
    """Whether the Postfix master process runs (``postfix status``). A stopped Postfix
    retries nothing: deferred mail then waits however the backoff settings look."""
    from checks.errors import CommandNotFound

    argv = ["postfix"] + (["-c", ctx.options["config_dir"]] if ctx.options.get("config_dir") and _is_live(ctx) else []) + ["status"]
    try:
        res = ctx.target.run(argv, timeout=20)
    except CommandNotFound:
        if not _is_live(ctx):
            return [Finding("postfix.running", Severity.INFO, "a snapshot: whether Postfix ran is not recorded")]
        raise
    text = (res.stderr or res.stdout).strip()
    ev = (Evidence(" ".join(argv), text[:400], ctx.target.where),)
    if res.ok:
        return [Finding("postfix.running", Severity.OK, "Postfix is running", evidence=ev)]
    # postfix-script exits 1 when the master is not running; its message may go to syslog only
    if "not running" in text or (res.returncode == 1 and not text):
        return [Finding("postfix.running", Severity.PROBLEM,
                        "Postfix is NOT running: nothing is delivered or retried until `postfix start`",
                        evidence=ev, values={"running": False})]  # fmt: skip
    return [Finding("postfix.running", Severity.WARNING, f"could not tell whether Postfix runs: {text or res.returncode}",
                    evidence=ev)]  # fmt: skip


def _timeouts(ctx: Context, transport: str = "smtp") -> Any:
    """Postfix's smtp_*_timeout values for `transport` (its master.cf -o overrides win), from
    the configuration the engine read; a value that cannot be read keeps Postfix's default."""
    from checks.smtp import PhaseTimeouts

    try:
        cfg = _config_report(ctx).config
    except PfdiagError:
        return PhaseTimeouts()
    values = {}
    for name in PhaseTimeouts.__dataclass_fields__:
        try:
            values[name] = cfg.time(name, f"{transport}/unix")
        except (PfdiagError, AttributeError):
            continue
    return PhaseTimeouts(**values)


def _helo(ctx: Context, transport: str = "smtp") -> str | None:
    """The name Postfix greets with for `transport`: its -o smtp_helo_name, else smtp_helo_name,
    as postconf -x expands them (the engine read them with the server's own names); None when
    neither could be read - never this machine's name."""
    from checks.probeset import helo_name

    identity = (ctx.options.get("collected") or {}).get("identity") or {}
    rep = (ctx.options.get("collected") or {}).get("config_report")
    overrides = getattr(getattr(rep, "config", None), "overrides", None) or {}
    return helo_name(dict(identity), dict(overrides), transport)


def _bind(ctx: Context, transport: str = "smtp") -> Any:
    """Where Postfix's smtp client sends from (checks.bind), from the settings the engine read
    with the server's names and the master.cf -o overrides; the probes bind there as well."""
    from checks.bind import bind_plan

    identity = (ctx.options.get("collected") or {}).get("identity") or {}
    rep = (ctx.options.get("collected") or {}).get("config_report")
    overrides = getattr(getattr(rep, "config", None), "overrides", None) or {}
    return bind_plan(identity, overrides, None, type(ctx.target).__name__ != "SSHTarget", transport)[0]


def _probe_targets(ctx: Context) -> Sequence[Mapping[str, Any]]:
    return ctx.options.get("probe_targets") or ()


@check("smtp.nexthops", title="talk SMTP to the next hops of deferred mail", tags=("smtp", "probe"))
def smtp_nexthops(ctx: Context) -> list[Finding]:
    """Talks SMTP, the way Postfix's smtp client does, to the next hops that deferred mail
    is waiting for (connect, greeting, EHLO, STARTTLS, MAIL FROM; nothing is sent), all at
    once within the budget, timing each phase against this Postfix's timeouts. A masked
    greeting (asterisks) gives away an SMTP-inspecting firewall (E09)."""
    from checks.probeset import Failed, ProbeJob, run_probes
    from checks.smtp import to_findings

    if not _is_live(ctx):
        raise CheckSkipped("a recording cannot be probed: the next hops were not contacted")
    hops = list(_probe_targets(ctx))[:10]
    if not hops:
        raise CheckSkipped("no next hop of deferred mail needs a probe")
    # the checks run under the same budget: a second is left to hand the findings back
    budget = max(1.0, float(ctx.options.get("budget") or 60.0) - 1.0)
    jobs, out = [], []
    for hop in hops:
        transport = str(hop.get("transport") or "smtp")
        helo = _helo(ctx, transport)
        if helo is None:
            out.append(Finding("smtp.nexthops", Severity.ERROR, f"{hop['host']}:{hop['port']}: not probed: "
                               "smtp_helo_name and myhostname could not be read (postconf), and a probe greets only "
                               "with the name Postfix uses", values={"domain": hop.get("domain")}))  # fmt: skip
            continue
        jobs.append((hop, ProbeJob(hop["host"], int(hop["port"]), helo, _timeouts(ctx, transport),
                                   label=f"{hop['host']}:{hop['port']}", **_bind(ctx, transport).kwargs(hop["host"]))))  # fmt: skip
    outcomes = run_probes(ctx.target, [j for _, j in jobs], budget)
    # diagnose judges the probes as pfdiag probe does (checks never import diagnose): the log classifier's cause for
    # a reply, one verdict under the destination's TLS policy
    judge = ctx.options.get("probe_findings")
    for (hop, job), o in zip(jobs, outcomes):
        if o.value is not None:
            found = judge(ctx.target, o.value, hop, ctx.options.get("config_dir")) if judge else to_findings(o.value)
            out.extend(_tag(f, hop) for f in found)
        else:  # could not be probed, or not finished within the budget (a typed Unfinished)
            why = f"probe failed: {o.missing.error}" if isinstance(o.missing, Failed) else getattr(o.missing, "reason", "")
            out.append(Finding("smtp.nexthops", Severity.ERROR, f"{job.label}: {why}",
                               values={"domain": hop.get("domain")}))  # fmt: skip
    return out


def _tag(f: Finding, hop: Mapping[str, Any]) -> Finding:
    values = dict(f.values)
    values.setdefault("domain", hop.get("domain"))
    values.setdefault("for_cause", hop.get("cause_id"))
    return Finding(f.check_id, f.severity, f.summary, f.cause_id, f.evidence, values)


@check("smtp.eod_ladder", title="end-of-data test with real messages (asked first)", tags=("smtp", "send"))
def smtp_eod_ladder(ctx: Context) -> list[Finding]:
    """Only when the operator said yes and named a recipient (answers send_test=yes,
    test_to=ADDRESS): sends real test messages of growing size to that mailbox through the
    next hop of its domain and times the body and the reply to "." separately. A stall that
    starts at a size is a path-MTU black hole; a slow reply at every size is a receiver slow
    after DATA; failures behind a masked greeting point at an SMTP-inspecting firewall."""
    from checks.smtp import DEFAULT_LADDER_SIZES, conclude_ladder, send_test_messages, to_findings

    if ctx.answers.get("send_test") != "yes":
        raise CheckSkipped("not asked for: no test message was sent (--answer send_test=yes --answer test_to=ADDRESS)")
    rcpt = ctx.answers.get("test_to") or ""
    if "@" not in rcpt:
        return [Finding("smtp.eod_ladder", Severity.ERROR, "send_test=yes needs test_to=ADDRESS")]
    if not _is_live(ctx):
        raise CheckSkipped("a recording cannot send test messages")
    from checks.nexthop import first_address

    domain = rcpt.rsplit("@", 1)[1].lower()
    hops = list(_probe_targets(ctx))
    hop = next((h for h in hops if (h.get("domain") or "").lower() == domain), None)
    if hop is None:  # the recipient's next hop, the way Postfix would find it
        found = first_address(ctx.target, domain, ctx.options.get("config_dir"))
        hop = {**found, "domain": domain, "cause_id": None} if found else None
    if hop is None:
        return [Finding("smtp.eod_ladder", Severity.ERROR, f"no next hop known for {domain}: no test message was sent")]
    transport = str(hop.get("transport") or "smtp")
    timeouts, helo = _timeouts(ctx, transport), _helo(ctx, transport)
    if helo is None:
        return [Finding("smtp.eod_ladder", Severity.ERROR, "smtp_helo_name and myhostname could not be read (postconf): "
                        "no test message was sent (they carry Postfix's own name)")]  # fmt: skip
    budget = float(ctx.options.get("budget") or 120.0)
    sizes = tuple(ctx.options.get("ladder_sizes") or DEFAULT_LADDER_SIZES)
    per = max(5.0, min(timeouts.smtp_data_done_timeout + timeouts.smtp_data_xfer_timeout, budget / max(1, len(sizes))))
    results = send_test_messages(ctx.target, hop["host"], int(hop["port"]), helo_name=helo,
                                 mail_from=ctx.answers.get("test_from") or "", rcpt_to=rcpt, sizes=sizes,
                                 timeouts=timeouts, budget_per_message=per, **_bind(ctx, transport).kwargs(hop["host"]))  # fmt: skip
    return [_tag(f, hop) for f in to_findings(conclude_ladder(results))]


@check("dns.destinations", title="DNS of the destinations that defer for DNS reasons", tags=("dns",))
def dns_destinations(ctx: Context) -> list[Finding]:
    """For mail deferred because of DNS (E12-E15), asks the destination's MX and address
    records again, from the mail host's point of view (its resolv.conf; over SSH the queries
    go from the mail host), and tells a lasting failure (SERVFAIL, null MX, an MX without an
    address) from one that has cleared up. Names under reserved TLDs (.test, .invalid,
    .example) are never sent to a real resolver; give report --resolver IP[:PORT] for a lab."""
    from checks import dns as d
    from checks.nexthop import RESERVED_TLDS

    domains = list(ctx.options.get("dns_targets") or ())[:5]
    if not domains:  # nothing to ask: the step says so instead of "done"
        raise CheckSkipped("no mail is deferred for a DNS reason: no lookup was needed")
    source = ctx.options.get("dns_resolver") or "system"
    if not _is_live(ctx) and source in ("system", "chroot"):
        raise CheckSkipped("a recording has no live DNS: the lookups were not repeated")
    queue_dir = getattr(_config_report(ctx), "queue_directory", None) or "/var/spool/postfix"
    resolver, described = d.resolver_for(ctx.target, source, queue_dir)
    where = ctx.target.where if type(resolver).__name__ == "TargetResolver" else "local"
    out: list[Finding] = []
    for domain in domains:
        if source in ("system", "chroot") and domain.rsplit(".", 1)[-1].lower() in RESERVED_TLDS:
            out.append(Finding("dns.destinations", Severity.INFO, f"{domain}: a reserved name, not asked of {described}"))
            continue
        for f in d.to_findings(d.mx_check(resolver, domain)):
            ev = tuple(type(e)(e.source, e.excerpt, where) for e in f.evidence)
            out.append(Finding("dns.destinations", f.severity, f"{f.summary} (asked: {described})", f.cause_id, ev,
                               {**f.values, "domain": domain}))  # fmt: skip
    return out
