"""The one reader of a Postfix configuration: every command and check reads it here.

Postfix's timeout, backoff, lifetime and concurrency settings: effective value, default,
where it is overridden, and why a value is risky (postfix-deferrals.md §2.1-2.2); the
value a given transport really uses (ConfigReport.effective(name, "smtp/unix"): its
master.cf -o override, else main.cf, else the default).

Three commands, each run once with the whole parameter list:
    postconf -h P...      effective main.cf values (unknown names only warn on stderr)
    postconf -d -h P...   compiled-in defaults
    postconf -P           master.cf "-o" overrides, e.g. smtp/unix/smtp_data_done_timeout
plus two files read through the target: $queue_directory/etc/resolv.conf (what a chrooted
smtp(8) resolves with) and /etc/resolv.conf.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

from checks.errors import CheckSkipped, CommandNotFound, InputError, PfdiagError
from checks.postfix.postconf import TIME_UNITS, PostfixConfig, parse_postconf, parse_postconf_h, parse_postconf_p, parse_time
from checks.targets.base import Started, Target

if TYPE_CHECKING:  # retry and resolv.conf load where they are used: routing a probe (checks.nexthop) needs neither
    from checks.postfix.retry import RetrySettings

# §2.1: SMTP/LMTP client and receiving-side timeouts.
TIMEOUTS = (
    "smtp_connect_timeout", "smtp_helo_timeout", "smtp_starttls_timeout", "smtp_xforward_timeout",
    "smtp_mail_timeout", "smtp_rcpt_timeout", "smtp_data_init_timeout", "smtp_data_xfer_timeout",
    "smtp_data_done_timeout", "smtp_rset_timeout", "smtp_quit_timeout", "smtp_per_request_deadline",
    "smtp_min_data_rate", "smtp_pix_workaround_delay_time", "smtp_pix_workaround_threshold_time",
    "lmtp_connect_timeout", "lmtp_lhlo_timeout", "milter_connect_timeout", "milter_command_timeout",
    "milter_content_timeout", "smtpd_proxy_timeout",
)  # fmt: skip
# §2.2: queueing, retry, concurrency.
QUEUEING = (
    "queue_run_delay", "minimal_backoff_time", "maximal_backoff_time", "maximal_queue_lifetime",
    "bounce_queue_lifetime", "delay_warning_time", "default_destination_concurrency_limit",
    "initial_destination_concurrency", "default_destination_recipient_limit",
    "default_destination_rate_delay", "default_destination_concurrency_failed_cohort_limit",
    "transport_retry_time", "qmgr_message_active_limit", "qmgr_message_recipient_limit",
    "smtp_mx_address_limit", "smtp_mx_session_limit", "smtp_skip_5xx_greeting",
    "smtp_defer_if_no_mx_address_found", "smtp_sasl_auth_soft_bounce", "soft_bounce",
    "default_process_limit",
)  # fmt: skip
PARAMETERS = TIMEOUTS + QUEUEING
# Read alongside, not shown in the table: where the queue (and the smtp chroot) lives.
_CONTEXT = ("queue_directory", "daemon_directory")
# the parameters that name a service on this machine (or a relay) as a next hop: read apart (a
# recording made before they were read lacks them: then the values are simply unknown)
LOCAL_SERVICE_PARAMS = ("content_filter", "relayhost", "fallback_relay", "virtual_transport", "mailbox_transport",
                        "relay_transport", "default_transport", "local_transport")  # fmt: skip
DEFAULT_QUEUE_DIRECTORY = "/var/spool/postfix"  # Debian's, and Postfix's compiled-in default


def postfix_argv(program: str, config_dir: str | None, *args: str) -> list[str]:
    """argv of a Postfix tool for one instance: `-c DIR` selects a non-default config directory."""
    return [program, *(("-c", config_dir) if config_dir else ()), *args]


def postconf_x(target: Target, config_dir: str | None, *names: str) -> dict[str, str]:
    """`postconf -x NAME...`: values with $names expanded; an empty dict when postconf fails."""
    res = target.run(postfix_argv("postconf", config_dir, "-x", *names), timeout=20)
    return parse_postconf(res.stdout) if res.ok else {}


# What a probe reads besides the timeouts, source addresses and TLS policy: the names it greets with.
PROBE_NAMES = ("smtp_helo_name", "myhostname", "mydomain")


def start_probe_reading(target: Target, config_dir: str | None) -> tuple[Started, Started]:
    """A probe's two postconf processes, started at once and now (Target.start): ``postconf -x``
    of the smtp client's timeouts, names, source addresses and TLS policy, and ``postconf -P``
    (master.cf -o overrides). diagnose.probedoc.read_postfix collects them; pfdiag probe starts
    them before it loads the SMTP code, which they overlap."""
    from checks.bind import BIND_NAMES
    from checks.postfix.defaults import TIMEOUT_NAMES
    from checks.tls import TLS_PARAMS

    x = target.start(postfix_argv("postconf", config_dir, "-x", *TIMEOUT_NAMES, *PROBE_NAMES, *BIND_NAMES,
                                  *TLS_PARAMS), timeout=20)  # fmt: skip
    try:
        return x, target.start(postfix_argv("postconf", config_dir, "-P"), timeout=20)
    except BaseException:
        x.close()
        raise


def with_overrides(values: Mapping[str, str], overrides: Mapping[tuple[str, str, str], str], service: str,
                   names: Sequence[str]) -> dict[str, str]:  # fmt: skip
    """main.cf ``values`` as the ``service`` ("smtp", a unix delivery agent) sees them: its master.cf
    -o overrides of ``names`` (postconf -P: {(service, type, name): value}) win over main.cf."""
    out = dict(values)
    for name in names:
        found = overrides.get((service, "unix", name))
        if found:
            out[name] = found
    return out


def transport_settings(target: Target, config_dir: str | None, service: str, names: Sequence[str],
                       overridable: Sequence[str] | None = None) -> dict[str, str]:  # fmt: skip
    """What the ``service`` delivery agent uses for ``names``: `postconf -x` (main.cf, $names
    expanded) with its master.cf -o overrides of ``overridable`` (default: all of ``names``) from
    `postconf -P service/unix/NAME...` on top. Names postconf cannot say are left out."""
    values = postconf_x(target, config_dir, *names)
    wanted = list(names if overridable is None else overridable)
    try:
        res = target.run(postfix_argv("postconf", config_dir, "-P", *(f"{service}/unix/{n}" for n in wanted)), timeout=20)
        overrides = parse_postconf_p(res.stdout) if res.ok else {}
    except PfdiagError:
        overrides = {}
    return with_overrides(values, overrides, service, wanted)


def postmap_query(target: Target, config_dir: str | None, key: str, table: str) -> str | None:
    """`postmap -q KEY TABLE` through the target: the first result line ("" for an empty
    result), or None when the key is not in the table."""
    res = target.run(postfix_argv("postmap", config_dir, "-q", key, table), timeout=20)
    if res.returncode != 0:
        return None
    return res.stdout.strip().splitlines()[0] if res.stdout.strip() else ""


def domain_keys(domain: str) -> list[str]:
    """The lookup keys of a domain in transport(5)-style maps: itself, then .parent ones."""
    labels = domain.lower().split(".")
    return [domain.lower()] + ["." + ".".join(labels[i:]) for i in range(1, len(labels))]


@dataclass(frozen=True, slots=True)
class ParamRow:
    """One parameter of the configuration report: its value, default and where it is set."""
    name: str
    effective: str | None  # main.cf value (or the default); None: this Postfix does not know it
    default: str | None
    where: tuple[str, ...]  # "main.cf", "master.cf smtp/unix -o ..."; empty: the default applies
    risks: tuple[str, ...] = ()


@dataclass
class ConfigReport:
    """The retry and timeout settings of this Postfix, with the risks found in them."""
    rows: list[ParamRow]
    config: PostfixConfig
    settings: RetrySettings  # the effective retry settings (main.cf; qmgr reads no -o for these normally)
    risks: list[tuple[str, str]] = field(default_factory=list)  # (parameter or topic, why)
    queue_directory: str | None = None
    daemon_directory: str | None = None
    unknown: tuple[str, ...] = ()  # parameters this Postfix version does not know
    argv: tuple[tuple[str, ...], ...] = ()  # the commands run

    def effective(self, name: str, service: str | None = None) -> str | None:
        """The raw value ``service`` ("smtp/unix", or a bare "smtp") uses: its master.cf -o
        override, else main.cf, else the default; None when this Postfix does not know it."""
        return self.config.effective(name, service)

    def seconds(self, name: str, service: str | None = None) -> float | None:
        """A time parameter in seconds as ``service`` sees it; None when it cannot be read."""
        return _seconds(self.config, name, service)


def _postconf(target: Target, argv: list[str]) -> tuple[str, str]:
    try:
        res = target.run(argv)
    except CommandNotFound as exc:
        if isinstance(exc, CheckSkipped):  # no configuration by design (pasted input): its own reason
            raise
        raise CommandNotFound("postconf not found: is Postfix installed here?") from None
    if res.returncode != 0:
        msg = (res.stderr.strip() or res.stdout.strip()).splitlines()
        shown = argv if len(argv) <= 6 else [*argv[:5], f"... ({len(argv) - 5} more)"]
        raise InputError(f"{' '.join(shown)} failed (exit {res.returncode}): {msg[-1] if msg else 'no message'}")
    return res.stdout, res.stderr


def _local_services(target: Target, argv: list[str]) -> tuple[str | None, str]:
    """The local-service parameters (content_filter, relayhost, *_transport): None when this
    postconf or recording cannot answer (an old Postfix): locality then stays unknown."""
    try:
        return _postconf(target, argv)
    except PfdiagError:
        return None, ""


def read_config(target: Target, config_dir: str | None = None, names: Sequence[str] = PARAMETERS) -> ConfigReport:
    wanted = list(names) + [n for n in _CONTEXT if n not in names]
    eff_argv = postfix_argv("postconf", config_dir, "-h", *wanted)
    def_argv = postfix_argv("postconf", config_dir, "-d", "-h", *wanted)
    p_argv = postfix_argv("postconf", config_dir, "-P")
    l_argv = postfix_argv("postconf", config_dir, "-h", *LOCAL_SERVICE_PARAMS)
    from checks.postfix.retry import RetrySettings
    from checks.runner import run_within
    from checks.runner import values as all_values

    # four quick commands whose cost is starting them (or a round trip over SSH): at once (each
    # bounded by its own command timeout; the first one's error is raised, as it was)
    def job(argv: list[str], optional: bool = False) -> Callable[[float], tuple[str | None, str]]:
        return lambda _deadline: _local_services(target, argv) if optional else _postconf(target, argv)

    runs = [("postconf -h", job(eff_argv)), ("postconf -d", job(def_argv)), ("postconf -P", job(p_argv)),
            ("postconf -h local services", job(l_argv, optional=True))]  # fmt: skip
    (out, err), (d_out, d_err), (p_out, _), (l_out, l_err) = all_values(
        run_within(None, runs, workers=4, name="pfdiag-postconf"))
    assert out is not None and d_out is not None and p_out is not None  # _postconf raises rather than give None
    values = parse_postconf_h(out, wanted, err)
    if l_out is not None:
        values.update(parse_postconf_h(l_out, list(LOCAL_SERVICE_PARAMS), l_err))
    defaults = parse_postconf_h(d_out, wanted, d_err)
    overrides = parse_postconf_p(p_out)
    cfg = PostfixConfig(values=values, defaults=defaults, overrides=overrides)
    settings = RetrySettings.from_config(cfg)
    report = ConfigReport(
        rows=[], config=cfg, settings=settings,
        queue_directory=values.get("queue_directory"), daemon_directory=values.get("daemon_directory"),
        unknown=tuple(n for n in names if n not in values),
        argv=(tuple(eff_argv), tuple(def_argv), tuple(p_argv)),
    )  # fmt: skip
    report.risks = assess(cfg, settings) + resolv_risks(target, report.queue_directory)
    by_name: dict[str, list[str]] = {}
    for name, why in report.risks:
        by_name.setdefault(name, []).append(why)
    for name in names:
        if name not in values and name not in defaults:
            continue
        where = []
        if name in values and name in defaults and _norm(values[name]) != _norm(defaults[name]):
            where.append("main.cf")
        for (svc, kind, pname), val in sorted(overrides.items()):
            if pname == name:
                where.append(f"master.cf {svc}/{kind} -o {name}={val}")
        report.rows.append(ParamRow(name, values.get(name), defaults.get(name), tuple(where), tuple(by_name.get(name, ()))))
    return report


def _norm(value: str) -> str:
    return " ".join(value.split())


def _seconds(cfg: PostfixConfig, name: str, service: str | None = None) -> float | None:
    try:
        return cfg.time(name, service)
    except (InputError, PfdiagError):
        return None


# RFC 5321 4.5.3.2: the least time a client should wait for each reply. Below it, a server that is
# only slow looks dead to Postfix: (parameter, RFC minimum s, cause it produces, the wait, what fails).
RFC_CLIENT_TIMEOUTS = (
    ("smtp_helo_timeout", 300, "E04", "the greeting and the EHLO reply", "servers that pause before greeting "
     "(anti-spam greet delays, tarpits) fail with 'timed out while receiving the initial server greeting'"),
    ("smtp_mail_timeout", 300, "E07", "the reply to MAIL FROM", "receivers that check the sender first are cut off"),
    ("smtp_rcpt_timeout", 300, "E07", "the reply to RCPT TO",
     "receivers that verify the recipient (callouts) or delay on purpose are cut off"),
    ("smtp_data_init_timeout", 120, "E07", "the 354 reply to DATA", "a busy receiver is given up on before the message"),
    ("smtp_data_xfer_timeout", 180, "E08", "each write of the message",
     "a slow link or a stalled TCP window ends the delivery halfway"),
)
RFC_CAUSES = {name: cause for name, _, cause, _, _ in RFC_CLIENT_TIMEOUTS} | {"smtp_data_done_timeout": "E09"}
_RFC_LEAST = {name: least for name, least, _, _, _ in RFC_CLIENT_TIMEOUTS}


def shortened(cfg: PostfixConfig, name: str) -> float | None:
    """The effective seconds of one of RFC_CLIENT_TIMEOUTS when set below RFC 5321's minimum, else None."""
    secs = _seconds(cfg, name) if name in _RFC_LEAST else None
    return secs if secs is not None and secs < _RFC_LEAST[name] else None


def assess(cfg: PostfixConfig, settings: RetrySettings) -> list[tuple[str, str]]:
    """(parameter, why) for every risky value: the retry model's own list plus the ones
    that need the whole configuration (duplicates, soft_bounce, master.cf overrides)."""
    from checks.postfix.retry import risky_settings

    out = list(risky_settings(settings))
    done = _seconds(cfg, "smtp_data_done_timeout")
    if done is not None and done < 600:
        out.append(("smtp_data_done_timeout",
                    f"{done:g}s is below 600s (RFC 5321's 10 minutes): a slow server that is still "
                    "processing the message gets cut off after accepting it, and the retry delivers "
                    "it twice (\"message may be sent more than once\")"))  # fmt: skip
    for name, least, _cause, wait, consequence in RFC_CLIENT_TIMEOUTS:
        secs = shortened(cfg, name)
        if secs is not None:
            out.append((name, f"{secs:g}s is below {least}s (RFC 5321's minimum wait for {wait}): {consequence}"))
    for (svc, kind, name), value in sorted(cfg.overrides.items()):
        if name.endswith(("_timeout", "_deadline")) or name in TIME_UNITS or name in QUEUEING:
            if name == "smtp_data_done_timeout":
                secs = _seconds(cfg, name, f"{svc}/{kind}")
                if secs is not None and secs < 600 and (done is None or done >= 600):
                    out.append((name, f"master.cf {svc}/{kind} sets {value}: below 600s for that "
                                      "transport only, so duplicates come from it alone"))  # fmt: skip
            out.append((name, f"master.cf overrides it for {svc}/{kind} (-o {name}={value}): "
                              "postconf -h shows the main.cf value, not what this transport uses"))  # fmt: skip
    if cfg.values.get("soft_bounce", "no").strip().lower() == "yes":
        out.append(("soft_bounce", "yes: permanent (5xx) failures are deferred instead of returned, so "
                                   "undeliverable mail piles up in the deferred queue until it expires"))  # fmt: skip
    return out


def _read(target: Target, path: str) -> str | None:
    try:
        with target.open_text(path) as fh:
            return fh.read(1 << 20)
    except PfdiagError:
        return None


def resolv_risks(target: Target, queue_directory: str | None) -> list[tuple[str, str]]:
    """A chrooted smtp(8) resolves with $queue_directory/etc/resolv.conf: a stale copy sends
    its DNS lookups somewhere else than the host's (Debian copies it at start only)."""
    from checks.resolvconf import HOST_RESOLV, chroot_resolv, parse_resolv_conf

    if not queue_directory:
        return []
    chroot_path = chroot_resolv(queue_directory)
    chroot, host = _read(target, chroot_path), _read(target, HOST_RESOLV)
    if chroot is None or host is None or parse_resolv_conf(chroot).lines == parse_resolv_conf(host).lines:
        return []
    return [("resolv.conf", f"{chroot_path} differs from {HOST_RESOLV}: chrooted delivery agents resolve "
                            "with the old copy (postfix reload or restart refreshes it on Debian)")]  # fmt: skip


def queue_directory(target: Target, config_dir: str | None = None) -> str:
    """$queue_directory (where the chroot's resolv.conf lives); Postfix's default when postconf cannot say."""
    try:
        res = target.run(postfix_argv("postconf", config_dir, "-h", "queue_directory"), timeout=10)
    except PfdiagError:
        return DEFAULT_QUEUE_DIRECTORY
    value = res.stdout.strip()
    return value if res.ok and value.startswith("/") else DEFAULT_QUEUE_DIRECTORY


def config_or_defaults(read: Callable[[], ConfigReport], where: str) -> tuple[PostfixConfig | None, str]:
    """(the configuration ``read`` gives, where it came from), or (None, why Postfix's defaults
    apply): what a report of the logs reads its delays against."""
    try:
        return read().config, f"postconf on {where}"
    except CheckSkipped as exc:  # no configuration by design (pasted input): said so
        return None, str(getattr(exc, "timings", f"Postfix defaults ({exc})"))
    except CommandNotFound:
        return None, "Postfix defaults (no postconf here)"
    except PfdiagError:
        return None, "Postfix defaults (postconf failed)"


def seconds_of(cfg: PostfixConfig, name: str) -> float | None:
    return _seconds(cfg, name)


def parse_assignment(text: str) -> tuple[str, str]:
    """'name=value' from --propose; InputError names what is wrong."""
    name, eq, value = text.partition("=")
    name, value = name.strip(), value.strip()
    if not eq or not name or not name.replace("_", "").isalnum():
        raise InputError(f"--propose {text!r}: use NAME=VALUE, e.g. minimal_backoff_time=120s")
    if "\n" in value:
        raise InputError(f"--propose {text!r}: a value cannot span lines")
    if name in TIME_UNITS or name in PARAMETERS and (name.endswith(("_time", "_timeout", "_delay", "_lifetime"))):
        parse_time(value, TIME_UNITS.get(name, "s"), name=name)  # refuse what Postfix would refuse
    return name, value
