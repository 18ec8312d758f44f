"""What a cause's delays=a/b/c/d profile says (postfix-deferrals.md §1.3).

a: arrival -> active queue (for retried mail this is the message's age)
b: active queue -> delivery agent (waiting for a free smtp process / concurrency)
c: connection setup (DNS, TCP, greeting, EHLO, STARTTLS)
d: transmission, from MAIL FROM on
Times are compared with Postfix's timeouts: the defaults unless the caller
passes this server's effective values.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

from checks.postfix.defaults import TIMEOUT_DEFAULTS  # the one table of Postfix's defaults

# the waits of a delivery that a delays= reading can land on (RSET and QUIT come after it)
DEFAULT_TIMEOUTS: dict[str, float] = {k: v for k, v in TIMEOUT_DEFAULTS.items() if k not in ("smtp_rset_timeout", "smtp_quit_timeout")}


MX_ADDRESS_LIMIT = 5  # smtp_mx_address_limit's default: no delivery tries more addresses


def smtp_timeouts(config: Any, service: str = "smtp/unix") -> dict[str, float]:
    """The smtp client's effective timeouts from a checks.postfix.postconf.PostfixConfig (the
    master.cf -o overrides of ``service`` included: "smtp/unix", or the transport a destination
    is routed through, "slowdest/unix"); a value postconf cannot give keeps Postfix's default."""
    from checks.errors import PfdiagError

    values = {}
    for name, default in DEFAULT_TIMEOUTS.items():
        try:
            values[name] = config.time(name, service)
        except PfdiagError:
            values[name] = default
    return values


def timeout_origin(config: Any, name: str, service: str = "smtp/unix") -> str:
    """Where ``service``'s value of ``name`` comes from, in words: "master.cf slowdest/unix -o
    smtp_data_done_timeout=2s", "main.cf smtp_data_done_timeout = 5s" or "Postfix's default 600s"."""
    svc, _, kind = service.partition("/")
    raw = config.overrides.get((svc, kind or "unix", name))
    if raw is not None:
        return f"master.cf {svc}/{kind or 'unix'} -o {name}={raw}"
    value = config.values.get(name)
    default = config.defaults.get(name)
    if value is not None and (default is None or " ".join(value.split()) != " ".join(default.split())):
        return f"main.cf {name} = {value}"
    return f"Postfix's default {name} = {default or value or f'{DEFAULT_TIMEOUTS.get(name, 0):g}s'}"


# The timeouts of another host's log: what Postfix's defaults say, and that the host's own are unknown
UNKNOWN_HOST_CONFIG = "compared with Postfix's defaults; this log's host configuration is unknown"
_SYSLOG_HOST = re.compile(r"^(?:\w{3} [ \d]\d \d\d:\d\d:\d\d|\d{4}-\d\d-\d\dT\S+) (\S+) \S*postfix")


def log_hosts(lines: Iterable[str | None]) -> set[str]:
    """The syslog host names of these raw log lines (the causes' examples), lower case."""
    out = set()
    for line in lines:
        m = _SYSLOG_HOST.match(line or "")
        if m:
            out.add(m.group(1).lower().rstrip("."))
    return out


def same_host(logged: set[str], own: Iterable[str]) -> bool | None:
    """Whether a log whose lines name the hosts ``logged`` was written on the host called ``own``
    (its myhostname, its system names): a name or its first label matches. None: the lines name
    no host (journal exports, other formats), so it cannot be told."""
    if not logged:
        return None
    names = {n.lower().rstrip(".") for n in own if n}
    short = {n.split(".", 1)[0] for n in names}
    return any(h in names or h.split(".", 1)[0] in short for h in logged)


def _near(value: float, target: float, tolerance: float = 0.1) -> bool:
    return target > 0 and abs(value - target) <= max(1.0, target * tolerance)


# the SMTP phases a reason can name (diagnose/classify.py), grouped by the part of delays= they fall in
_SETUP = frozenset({"connect", "greeting", "helo", "starttls", "tls", "xforward", "sasl"})
_TRANSFER = frozenset({"mail", "rcpt", "data", "body", "end-of-data"})
_NO_SESSION = frozenset({"dns", "queue", "transport", "local"})
_PHASE_WAIT = {  # the timeout that governs the wait in each transfer phase, and what it waits for
    "mail": ("smtp_mail_timeout", "the reply to MAIL FROM"),
    "rcpt": ("smtp_rcpt_timeout", "the reply to RCPT TO"),
    "data": ("smtp_data_init_timeout", "the reply to the DATA command"),
    "body": ("smtp_data_xfer_timeout", "the receiver to take more of the message body"),
    "end-of-data": ("smtp_data_done_timeout", "the reply to the final '.'"),
}


def explain(profile: dict[str, dict[str, float | None]], timeouts: dict[str, float] | None = None,
            phase: str | None = None, answered: bool = False) -> list[str]:
    """Plain-language readings of a {part: {"median": x, "p95": y}} profile. `phase` is the SMTP
    phase the reasons name (classify's: connect, greeting, rcpt, body, end-of-data...): when it is
    known, the readings follow it instead of guessing the phase from the numbers alone.
    `answered`: the reasons are the receiver's replies (host X said: 4xx), not timeouts or losses."""
    t = {**DEFAULT_TIMEOUTS, **(timeouts or {})}
    med = {p: (profile.get(p) or {}).get("median") for p in "abcd"}
    p95 = {p: (profile.get(p) or {}).get("p95") for p in "abcd"}
    if any(med[p] is None for p in "bcd"):
        return ["no delays= fields on these lines (Postfix before 2.3, or another program): no timing profile"]
    b, c, d = float(med["b"] or 0), float(med["c"] or 0), float(med["d"] or 0)
    out: list[str] = []
    done = t["smtp_data_done_timeout"]
    if c == 0 and d == 0:
        if phase is None or phase in _NO_SESSION:
            out.append("c = d = 0: no SMTP session was attempted; the queue manager, the retry service or a "
                       "lookup deferred the mail")
        else:
            out.append(f"c = d = 0: it ended at {phase} within a fraction of a second: no timeout was involved")
    elif phase in _PHASE_WAIT:
        name, what = _PHASE_WAIT[phase]
        limit = t.get(name, DEFAULT_TIMEOUTS.get(name, 0.0))
        if limit and _near(d, limit):
            out.append(f"d ≈ {d:g} s ≈ {name} ({limit:g} s): Postfix waited the full timeout for {what}")
        elif answered:
            if d >= 30:
                out.append(f"d ≈ {d:g} s before the receiver answered at {phase}: it is slow to reply (callouts, "
                           "tarpitting, overload)")
        elif d > 0 and _clustered(d, p95["d"], done):
            out.append(_nat(d, float(p95["d"] or 0)))
        elif d > 0:
            out.append(f"d ≈ {d:g} s from MAIL FROM until the failure at {phase}" +
                       (f", below {name} ({limit:g} s): the connection ended, no timeout ran out" if limit and d < limit * 0.9 else ""))
    else:
        if phase is None and _near(d, done):
            out.append(
                f"d ≈ {d:g} s ≈ smtp_data_done_timeout ({done:g} s): Postfix sent the whole message and waited the full "
                "end-of-data timeout for the final reply"
            )
        elif phase is None and d > 0 and _clustered(d, p95["d"], done):
            out.append(_nat(d, float(p95["d"] or 0)))
        if phase is None:
            for name, label in (
                ("smtp_rcpt_timeout", "MAIL FROM/RCPT TO (callouts or tarpitting at the receiver)"),
                ("smtp_data_init_timeout", "the DATA command"),
            ):
                if d > 0 and not _near(d, done) and _near(d, t[name]):
                    out.append(f"d ≈ {d:g} s ≈ {name} ({t[name]:g} s): the receiver stopped answering during {label}")
                    break
            else:
                xfer = t["smtp_data_xfer_timeout"]
                if d > xfer and not _near(d, done) and d < done * 0.9:
                    out.append(
                        f"d ≈ {d:g} s, more than smtp_data_xfer_timeout ({xfer:g} s): time spent writing the body; "
                        "a stall while sending it (bandwidth, path MTU) fits"
                    )
        connect = t["smtp_connect_timeout"]
        if d == 0 and c > 0 and (phase is None or phase in _SETUP):
            k = round(c / connect) if connect else 0
            if _near(c, t["smtp_helo_timeout"]) and phase in (None, "greeting", "helo"):
                out.append(
                    f"c ≈ {c:g} s ≈ smtp_helo_timeout ({t['smtp_helo_timeout']:g} s): the greeting or EHLO reply never came"
                )
            elif 1 <= k <= MX_ADDRESS_LIMIT and _near(c, k * connect, 0.15) and phase in (None, "connect"):
                # Postfix tries at most smtp_mx_address_limit addresses per delivery
                out.append(
                    f"c ≈ {c:g} s ≈ {k} × smtp_connect_timeout ({connect:g} s), d = 0: {k} address(es) never answered "
                    "the TCP connect"
                )
            else:
                where = f"at {phase}" if phase else "while setting up the connection (DNS, TCP, greeting, TLS)"
                out.append(f"c ≈ {c:g} s, d = 0: the failure happened {where}")
    if b >= 60:
        out.append(
            f"b ≈ {b:g} s: mail waited for a free delivery agent (process limit, destination concurrency or rate delay)"
        )
    a = float(med["a"] or 0)
    if a >= 3600:
        out.append(f"a ≈ {_hours(a)}: most of these are retries of mail queued that long (a counts the time "
                   "in the deferred queue); old mail, not a slow queue manager")  # fmt: skip
    if not out:
        out.append(f"median a/b/c/d = {a:g}/{b:g}/{c:g}/{d:g} s: nothing stands out")
    return out


def _clustered(d: float, d95: float | None, done: float) -> bool:
    """d repeats at one value below every wait: a fixed cut-off on the path."""
    return d95 is not None and abs(float(d95) - d) <= max(1.0, 0.05 * d) and d < done * 0.9 and d >= 5


def _nat(d: float, d95: float) -> str:
    return (f"d clusters at {d:g} s (p95 {d95:g} s), below every SMTP timeout: a fixed cut-off on the path, "
            "such as a NAT or firewall idle timeout, ends these sessions")


def _hours(seconds: float) -> str:
    return f"{seconds / 86400:.1f} days" if seconds >= 2 * 86400 else f"{seconds / 3600:.1f} h"


def config_for_log(target: Any, config_dir: str | None, read: Any, examples: Iterable[str | None],
                   paths_given: bool) -> tuple[Any, str]:  # fmt: skip
    """(PostfixConfig or None, what the timings are compared with) for a log read through ``target``.

    The target's own log (no paths given), a snapshot's or a --host's: that host's configuration.
    Files named on the command line of a live target may come from another host (a colleague's
    log read here): their lines' syslog host must be one of the target's names, else the
    configuration here says nothing about them and Postfix's defaults are used, saying so."""
    from checks.config import config_or_defaults, postconf_x
    from checks.errors import PfdiagError

    cfg, source = config_or_defaults(read, target.where)
    if not paths_given or not target.live:
        return cfg, source
    logged = log_hosts(examples)
    if cfg is None:
        return None, UNKNOWN_HOST_CONFIG + (f" (no Postfix configuration could be read on {target.where})")
    own: set[str] = set()
    try:
        own |= set(postconf_x(target, config_dir, "myhostname").values())
    except PfdiagError:
        pass
    try:  # syslog writes the system's name, which myhostname need not be
        res = target.run(["hostname"], timeout=5)
        if res.ok:
            own.add(res.stdout.strip())
    except PfdiagError:
        pass
    if same_host(logged, own) is False:
        return None, (f"{UNKNOWN_HOST_CONFIG} (its lines come from {', '.join(sorted(logged))}, "
                      f"not from {target.where}'s {', '.join(sorted(n for n in own if n)) or 'Postfix'})")  # fmt: skip
    return cfg, source
