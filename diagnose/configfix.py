"""Configuration fixes as a guarded action, with the safety of the queue actions (diagnose.actions):

    plan_fix(target, changes)   read the values before (postconf -n, -h, -P) and build the argv:
                                ``postconf -e name=value`` for main.cf, ``postconf -P
                                service/type/name=value`` for a master.cf -o, then ``postfix reload``,
                                and the exact rollback (the previous value, or -X / -PX when it
                                was not set)
    run_fix(target, plan, ...)  a dry run unless confirmed (a terminal "yes", or --yes); the
                                action log (diagnose.actionlog, PFDIAG_ACTION_LOG) gets the intent
                                before each command and its outcome after, with the values before
                                and the rollback command; then postfix reload through the target
    offer_fixes(...)            the wizard's offer: the fixes of the top causes, before/after,
                                confirm, reload; never on a snapshot or the demo

Every process goes through the target (checks/targets), as an argv list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from checks.config import postfix_argv
from checks.errors import InputError, PfdiagError
from checks.targets.base import Target

_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
_SERVICE = re.compile(r"[A-Za-z0-9_.:\[\]-]+/(unix|inet|fifo|pass|unix-dgram)\Z")


@dataclass(frozen=True)
class Change:
    """One parameter to set: in main.cf, or (service "smtp/unix") as a master.cf -o of that service."""

    name: str
    value: str
    service: str | None = None
    why: str = ""

    @property
    def key(self) -> str:
        return f"{self.service}/{self.name}" if self.service else self.name


def parse_change(text: str, why: str = "") -> Change:
    """'name=value' (main.cf) or 'service/type/name=value' (a master.cf -o); InputError otherwise."""
    left, eq, value = text.partition("=")
    left, value = left.strip(), value.strip()
    parts = left.split("/")
    if not eq or len(parts) not in (1, 3) or not _NAME.match(parts[-1]) or any(c in value for c in "\n\r"):
        raise InputError(f"{text!r}: use NAME=VALUE or SERVICE/TYPE/NAME=VALUE (a master.cf -o), "
                         "e.g. smtp_data_done_timeout=600s")  # fmt: skip
    service = "/".join(parts[:2]) if len(parts) == 3 else None
    if service is not None and not _SERVICE.match(service):
        raise InputError(f"{text!r}: {service} is not SERVICE/TYPE (e.g. smtp/unix)")
    return Change(parts[-1], value, service, why)


@dataclass(frozen=True)
class Step:
    change: Change
    before: str | None  # the value in effect before (None: this Postfix does not know the parameter)
    was_set: bool  # main.cf set it (or the -o existed): the rollback restores it, else removes it

    def line(self) -> str:
        where = f"master.cf {self.change.service} -o" if self.change.service else "main.cf"
        before = self.before if self.before is not None else "(unknown to this Postfix)"
        unset = "" if self.was_set else " (not set: the default)"
        return f"{self.change.key}: {before}{unset} -> {self.change.value} ({where})" + (
            f": {self.change.why}" if self.change.why else "")


@dataclass
class FixPlan:
    steps: list[Step]
    config_dir: str | None = None

    def _argv(self, flag: str, items: list[str]) -> list[str]:
        return postfix_argv("postconf", self.config_dir, flag, *items)

    def commands(self) -> list[list[str]]:
        """postconf -e (main.cf), postconf -P (master.cf -o), postfix reload: in that order."""
        main = [f"{s.change.name}={s.change.value}" for s in self.steps if not s.change.service]
        master = [f"{s.change.key}={s.change.value}" for s in self.steps if s.change.service]
        out = ([self._argv("-e", main)] if main else []) + ([self._argv("-P", master)] if master else [])
        return out + [self.reload()]

    def rollback(self) -> list[list[str]]:
        """The exact commands that put every value back: the previous value, or its removal."""
        out: list[list[str]] = []
        restore = [f"{s.change.name}={s.before}" for s in self.steps if not s.change.service and s.was_set]
        drop = [s.change.name for s in self.steps if not s.change.service and not s.was_set]
        restore_o = [f"{s.change.key}={s.before}" for s in self.steps if s.change.service and s.was_set]
        drop_o = [s.change.key for s in self.steps if s.change.service and not s.was_set]
        for flag, items in (("-e", restore), ("-X", drop), ("-P", restore_o), ("-PX", drop_o)):
            if items:
                out.append(self._argv(flag, items))
        return out + [self.reload()]

    def reload(self) -> list[str]:
        return postfix_argv("postfix", self.config_dir, "reload")

    def to_dict(self) -> dict[str, Any]:
        return {"changes": [{"parameter": s.change.name, "service": s.change.service, "before": s.before,
                             "was_set": s.was_set, "after": s.change.value, "why": s.change.why} for s in self.steps],
                "commands": self.commands(), "rollback": self.rollback()}  # fmt: skip


def _run(target: Target, argv: list[str], timeout: float = 60) -> tuple[int | None, str, str]:
    try:
        res = target.run(argv, timeout=timeout)
    except PfdiagError as exc:
        return None, "", str(exc)
    return res.returncode, res.stdout, res.stderr


def plan_fix(target: Target, changes: Sequence[Change], config_dir: str | None = None) -> FixPlan:
    """The values before, read from the target: main.cf's own settings (postconf -n), the effective
    values (postconf -h) and the master.cf -o overrides (postconf -P)."""
    from checks.postfix.postconf import parse_postconf, parse_postconf_p

    if not changes:
        raise InputError("no configuration change to make")
    names = list(dict.fromkeys(c.name for c in changes))
    rc, explicit_out, err = _run(target, postfix_argv("postconf", config_dir, "-n"))
    if rc != 0:
        raise InputError(f"postconf -n failed: {(err.strip().splitlines() or ['no message'])[-1]}")
    explicit = parse_postconf(explicit_out)
    _, eff_out, _ = _run(target, postfix_argv("postconf", config_dir, *names))  # unknown names: warned, left out
    effective = parse_postconf(eff_out)
    overrides: dict[tuple[str, str, str], str] = {}
    if any(c.service for c in changes):
        rc, p_out, err = _run(target, postfix_argv("postconf", config_dir, "-P"))
        if rc != 0:
            raise InputError(f"postconf -P failed: {(err.strip().splitlines() or ['no message'])[-1]}")
        overrides = parse_postconf_p(p_out)
    steps = []
    for c in changes:
        if c.service:
            svc, kind = c.service.split("/")
            key = (svc, kind, c.name)
            was = key in overrides
            steps.append(Step(c, overrides[key] if was else effective.get(c.name), was))
        else:
            steps.append(Step(c, explicit.get(c.name, effective.get(c.name)), c.name in explicit))
    return FixPlan(steps, config_dir)


@dataclass
class FixResult:
    applied: bool  # the postconf commands ran (and were logged)
    reloaded: bool
    lines: list[str] = field(default_factory=list)  # what was said, in order
    rollback: list[list[str]] = field(default_factory=list)
    causes: list[str] = field(default_factory=list)  # the diagnosed causes these changes fix (the wizard's offer)

    @property
    def ok(self) -> bool:
        return self.applied and self.reloaded


def describe(plan: FixPlan) -> list[str]:
    """Before/after, the commands and the rollback, for the operator to read before confirming."""
    out = ["Configuration change (before -> after):"] + [f"  {s.line()}" for s in plan.steps]
    out += ["Commands:"] + [f"  {' '.join(a)}" for a in plan.commands()]
    out += ["To undo it:"] + [f"  {' '.join(a)}" for a in plan.rollback()]
    return out


def run_fix(target: Target, plan: FixPlan, log_path: str, *, yes: bool = False, dry_run: bool = False,
            interactive: bool = False, say: Callable[[str], None] = print,
            ask: Callable[[str], str] | None = None) -> FixResult:  # fmt: skip
    """A dry run unless confirmed. Each command: an intent record in the action log (on disk
    first), the command, its outcome with the values before and the rollback. A failed postconf
    stops before the reload; a failed reload says the change is in the files but not live."""
    from diagnose.actionlog import ActionLog, check_writable, warn_interrupted
    from diagnose.actions import ask_on_stderr, confirm

    if not target.can_change:
        raise InputError(f"a configuration change needs a live Postfix: it cannot run on {target.where}")
    for line in describe(plan):
        say(line)
    acks: list[str] = []
    if not dry_run:  # as the queue actions: an interrupted earlier run is said, an unwritable log stops us first
        acks = warn_interrupted(log_path)
        check_writable(log_path)
    if not confirm("Apply this configuration change and reload Postfix?", yes=yes, dry_run=dry_run,
                   interactive=interactive, ask=ask or ask_on_stderr):  # fmt: skip
        why = "dry run" if dry_run else "not confirmed" if interactive else "no terminal to confirm on and no --yes"
        say(f"nothing was changed ({why})")
        return FixResult(False, False, [f"nothing was changed ({why})"])
    keys = [s.change.key for s in plan.steps]
    before = {s.change.key: s.before for s in plan.steps}
    rollback = plan.rollback()
    log = ActionLog(log_path)
    result = FixResult(False, False, rollback=rollback)
    ok = False
    try:
        log.begin("config", keys, acknowledges=acks)
        for argv in plan.commands():
            seq = log.intent("config", keys, argv)
            rc, _, err = _run(target, argv, timeout=120)
            detail = "ok" if rc == 0 else (err.strip().splitlines() or [f"exit {rc}"])[-1]
            log.outcome(seq, action="config", argv=argv, returncode=rc, result=detail,
                        changes={s.change.key: s.change.value for s in plan.steps}, before=before,
                        rollback=[" ".join(a) for a in rollback])  # fmt: skip
            line = f"  {'ok ' if rc == 0 else 'FAIL'} {' '.join(argv)}" + ("" if rc == 0 else f": {detail}")
            say(line)
            result.lines.append(line)
            if rc != 0:
                if argv == plan.reload():
                    say("the change is in the configuration files but Postfix did not reload: run postfix reload "
                        "once the error above is fixed, or undo it with the commands below")  # fmt: skip
                break
            if argv == plan.reload():
                result.reloaded = True
            else:
                result.applied = True
        ok = result.ok
    finally:
        if log.run:
            try:
                log.end(ok)
            finally:
                log.close()
        else:
            log.close()
    if result.applied:
        say("to undo it: " + " && ".join(" ".join(a) for a in rollback))
    say(f"logged to {log_path}")
    return result


# ------------------------------------------------------------------ the fixes the diagnosis supports

# the timeout Postfix waits in the phase a cause names (a shortened one makes that cause itself)
CAUSE_TIMEOUTS: dict[str, tuple[str, ...]] = {
    "E09": ("smtp_data_done_timeout",), "E08": ("smtp_data_xfer_timeout",),
    "E01": ("smtp_connect_timeout",), "E04": ("smtp_helo_timeout",), "E06": ("smtp_helo_timeout", "smtp_starttls_timeout"),
    "E07": ("smtp_mail_timeout", "smtp_rcpt_timeout", "smtp_data_init_timeout"),
}  # fmt: skip
ALWAYS_TIMED_OUT = ("E01", "E09")  # the others also stand for a lost connection, which no timeout fixes


def timed_out(cause_id: str, texts: Sequence[str]) -> bool:
    """A cause whose wait ran out (not a lost connection): E01 and E09 always, the others when
    their evidence says "timed out"."""
    return cause_id in ALWAYS_TIMED_OUT or any("timed out" in t for t in texts)


@dataclass(frozen=True)
class ShortTimeout:
    name: str
    value: str  # as configured
    seconds: float
    default: float
    service: str | None  # "smtp/unix" for a master.cf -o, None for main.cf

    @property
    def where(self) -> str:
        return f"master.cf {self.service} -o" if self.service else "main.cf"

    def restore(self, why: str = "") -> Change:
        """Back to Postfix's default (the RFC 5321 minimum for the replies that have one)."""
        return Change(self.name, f"{self.default:g}s", self.service, why)


def short_timeouts(config: Any) -> list[ShortTimeout]:
    """smtp_*_timeout values below Postfix's default, in main.cf or as a master.cf -o of an smtp
    service (checks.postfix.PostfixConfig: values and overrides as postconf read them)."""
    from checks.postfix.defaults import TIMEOUT_DEFAULTS
    from checks.postfix.postconf import parse_time

    out: list[ShortTimeout] = []
    found: list[tuple[str | None, str, str | None]] = [(None, n, (config.values or {}).get(n)) for n in TIMEOUT_DEFAULTS]
    found += [(f"{svc}/{kind}", n, v) for (svc, kind, n), v in sorted((config.overrides or {}).items())
              if n in TIMEOUT_DEFAULTS]  # fmt: skip
    for service, name, raw in found:
        if raw is None:
            continue
        try:
            secs = parse_time(raw, "s", name=name)
        except (PfdiagError, ValueError):
            continue
        if 0 < secs < TIMEOUT_DEFAULTS[name] or (name != "smtp_connect_timeout" and secs == 0 and service):
            out.append(ShortTimeout(name, raw, secs, TIMEOUT_DEFAULTS[name], service))
    return out


def fixes_for(cause_ids: Sequence[str], config: Any) -> list[Change]:
    """The configuration changes the diagnosis supports, the cause found first: a timeout of the
    phase a diagnosed cause names, shortened below Postfix's default, back to the default."""
    out: list[Change] = []
    shorts = short_timeouts(config)
    for cid in cause_ids:
        for name in CAUSE_TIMEOUTS.get(cid, ()):
            for st in shorts:
                if st.name == name and not any(c.key == st.restore().key for c in out):
                    out.append(st.restore(f"{cid} is diagnosed and {st.where} shortens {name} to {st.value} "
                                          f"(default {st.default:g}s)"))  # fmt: skip
    return out


# ------------------------------------------------------------------ the wizard's offer


def offer_fixes(target: Target, doc: dict[str, Any], config: Any, *, config_dir: str | None, log_path: str,
                ask: Callable[[str], str], say: Callable[[str], None] = print) -> FixResult | None:  # fmt: skip
    """After the diagnosis: offer the configuration fixes of the top causes (before/after, the
    rollback, a confirmation, then postfix reload). None when there is nothing to offer, or the
    report comes from a snapshot or the demo (nothing there can be changed). ``config``: the
    configuration the diagnosis read (engine Facts.config_report.config)."""
    if not (doc.get("target") or {}).get("live") or not target.can_change or config is None:
        return None
    roots = [c for c in doc.get("causes") or [] if c.get("root_cause")][:3]
    top = [c["id"] for c in roots]
    timed = [c["id"] for c in roots if timed_out(c["id"], [e.get("excerpt", "") for e in c.get("evidence") or []])]
    changes = fixes_for(timed, config)
    if not changes:
        return None
    plan = plan_fix(target, changes, config_dir)
    plan.steps = [s for s in plan.steps if s.before != s.change.value]  # already so: nothing to change
    if not plan.steps:
        return None
    say(f"The diagnosis supports a configuration fix ({', '.join(top)}):")
    result = run_fix(target, plan, log_path, interactive=True, say=say, ask=ask)
    result.causes = [cid for cid in timed if fixes_for([cid], config)]
    return result
