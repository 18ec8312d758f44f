"""The configuration report (``pfdiag config``, and the engine's config step): the settings
table, the retry timeline they give, proposed changes with the before/after timeline and their
judgement against the diagnosis (judge), and its renderings. Applying a proposal is the guarded
action of diagnose.configfix (postconf -e / -P, postfix reload, logged, with its rollback).

A document, built from checks.config.ConfigReport; the command only parses flags and prints.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from checks.config import ConfigReport, parse_assignment
from checks.errors import PfdiagError
from checks.postfix.postconf import PostfixConfig
from checks.postfix.retry import SEED_PROPOSAL, RetrySettings, Timeline, risky_settings, timeline
from checks.targets.base import Target
from diagnose.fate import human
from diagnose.textsafe import md_block, md_code, md_text, visible

SCHEMA = "pfdiag.config/1"
SEED = {  # the seed admin's faster-retry values (postfix-deferrals.md §2.2), as postconf -e text
    "minimal_backoff_time": "120s",
    "maximal_backoff_time": "600s",
    "queue_run_delay": "100s",
    "maximal_queue_lifetime": "24h",
    "bounce_queue_lifetime": "24h",
}
assert RetrySettings.from_config(SEED) == SEED_PROPOSAL  # one source of truth with the retry model


def proposal(items: list[str] | None) -> dict[str, str]:
    """{name: value}; a master.cf -o is keyed SERVICE/TYPE/NAME (diagnose.configfix.parse_change)."""
    from diagnose.configfix import parse_change

    out: dict[str, str] = {}
    for item in items or []:
        if item == "seed":
            out.update(SEED)
        elif "/" in item.partition("=")[0]:
            ch = parse_change(item)
            out[ch.key] = ch.value
        else:
            name, value = parse_assignment(item)
            out[name] = value
    return out


def changes_of(changes: dict[str, str]) -> list[Any]:
    """The proposal as diagnose.configfix Changes (main.cf, or a master.cf -o for SERVICE/TYPE/NAME)."""
    from diagnose.configfix import Change

    out = []
    for key, value in changes.items():
        parts = key.split("/")
        out.append(Change(parts[-1], value, "/".join(parts[:2]) if len(parts) == 3 else None))
    return out


def fix_plan(changes: dict[str, str], rep: ConfigReport, config_dir: str | None) -> Any:
    """The configfix plan of a proposal with the values before from the configuration read (rep);
    --apply re-reads them from the target (configfix.plan_fix) right before changing anything."""
    from diagnose.configfix import FixPlan, Step

    steps = []
    for c in changes_of(changes):
        if c.service:
            key = (*c.service.split("/"), c.name)
            steps.append(Step(c, rep.config.overrides.get(key, rep.config.values.get(c.name)), key in rep.config.overrides))
        else:
            cfg = rep.config  # main.cf sets it when postconf -n says so, or when it differs from the default
            was = c.name in (cfg.explicit or {}) or cfg.values.get(c.name) != cfg.defaults.get(c.name, cfg.values.get(c.name))
            steps.append(Step(c, cfg.values.get(c.name), was))
    return FixPlan(steps, config_dir)


def timeline_dict(t: Timeline) -> dict[str, Any]:
    return {
        "attempt_count": t.attempt_count,
        "attempt_offsets": [round(o) for o in t.offsets()[:30]],
        "listed": min(len(t.attempts), 30),
        "warning_offset": None if t.warning_at is None else round(t.warning_at - t.arrival),
        "expires_offset": round(t.expires_at - t.arrival),
        "lifetime": t.lifetime,
        "summary": t.describe(10),
    }


def build(rep: ConfigReport, changes: dict[str, str], config_dir: str | None = None,
          diagnosis: Diagnosis | None = None) -> dict[str, Any]:
    cfg = rep.config
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "parameters": [dataclasses.asdict(r) for r in rep.rows],
        "risks": [{"parameter": n, "why": w} for n, w in rep.risks],
        "unknown_parameters": list(rep.unknown),
        "settings": dataclasses.asdict(rep.settings),
        "timeline": timeline_dict(timeline(rep.settings)) if _valid(rep.settings) else None,
        "commands_read": [list(a) for a in rep.argv],
        "proposal": None,
    }
    if changes:
        main = {k: v for k, v in changes.items() if "/" not in k}  # SERVICE/TYPE/NAME: a master.cf -o
        after_cfg = PostfixConfig(values={**cfg.values, **main}, defaults=cfg.defaults, overrides=cfg.overrides)
        after = RetrySettings.from_config(after_cfg)
        doc["proposal"] = {
            "changes": changes,
            "commands": fix_plan(changes, rep, config_dir).commands(),
            "settings_after": dataclasses.asdict(after),
            "timeline_after": timeline_dict(timeline(after)) if _valid(after) else None,
            "risks_after": [{"parameter": n, "why": w} for n, w in risky_settings(after)],
            "rollback": fix_plan(changes, rep, config_dir).rollback(),
            "judgement": judge(rep, changes, diagnosis, config_dir),
        }
    return doc


# ------------------------------------------------------------------ the proposal judged


@dataclasses.dataclass
class Diagnosis:
    """What the logs say, for judging a proposal: deferred messages per cause id, and how many
    were possibly delivered twice (an end-of-data timeout, then a later success)."""

    causes: dict[str, int] = dataclasses.field(default_factory=dict)
    duplicates: int = 0
    source: str = ""  # what was read ("/var/log/mail.log")
    error: str | None = None  # why there is no diagnosis
    examples: dict[str, str] = dataclasses.field(default_factory=dict)  # cause id -> a log line of it


EOD = ("E09", "E10")  # diagnose.correlate.EOD_CAUSES: Postfix sent everything, the reply never came


def read_diagnosis(target: Target, rep: ConfigReport, config_dir: str | None, budget: float = 60.0) -> Diagnosis:
    """The logs' causes within ``budget`` seconds (diagnose.engine.collect_logs, the report's reading)."""
    from checks.runner import start
    from diagnose.engine import collect_logs

    job = start("read the logs", lambda _deadline: collect_logs(target, None, None, lambda: rep, config_dir), budget=budget)
    out = job.wait()[0]
    if out.value is None:
        why = getattr(out.missing, "error", None) or getattr(out.missing, "reason", None) or "not read"
        return Diagnosis(error=str(why))
    logs = out.value
    from diagnose.correlate import relocalize  # E32 only for a configured local service, as the report says

    relocalize(logs, rep.config, "logs")
    causes = {str(c["id"]): int(c.get("messages") or c.get("deferrals") or 0) for c in logs.get("causes", [])}
    files = ", ".join((logs.get("input") or {}).get("files") or []) or "the mail log"
    dup = int(((logs.get("end_of_data") or {}).get("delivered_later_possible_duplicates")) or 0)
    examples = {str(c["id"]): str(c.get("example") or "") for c in logs.get("causes", [])}
    return Diagnosis(dict(sorted(causes.items(), key=lambda kv: -kv[1])), dup, files, examples=examples)


def judge(rep: ConfigReport, changes: dict[str, str], diag: Diagnosis | None,
          config_dir: str | None = None) -> dict[str, Any]:  # fmt: skip
    """A proposal against the diagnosis: duplicates (every extra retry after an end-of-data
    timeout may deliver the message again), earlier bounces (a shorter lifetime returns mail
    sooner), load (more attempts), the short smtp_*_timeout values it leaves as they are, and the
    fix of the cause found, to make first."""
    from diagnose.configfix import fixes_for, short_timeouts, timed_out

    before = rep.settings
    main = {k: v for k, v in changes.items() if "/" not in k}
    after = RetrySettings.from_config(PostfixConfig(values={**rep.config.values, **main}, defaults=rep.config.defaults,
                                                    overrides=rep.config.overrides))  # fmt: skip
    t0 = timeline(before) if _valid(before) else None
    t1 = timeline(after) if _valid(after) else None
    found = [c for c in (diag.causes if diag else {}) if c != "unclassified"]
    eod = [c for c in found if c in EOD]
    warnings: list[str] = []
    more = after.minimal_backoff_time < before.minimal_backoff_time or after.queue_run_delay < before.queue_run_delay \
        or after.maximal_backoff_time < before.maximal_backoff_time  # fmt: skip
    if more and t0 and t1:
        per_day = lambda t: sum(1 for o in t.offsets() if o <= 86400)  # noqa: E731 - attempts in a message's first day
        load = (f"{per_day(t1)} attempts in a message's first day instead of {per_day(t0)}: more connections to "
                "receivers that are already failing, and more load here")  # fmt: skip
        if eod:
            n = sum(diag.causes[c] for c in eod) if diag else 0
            dup = f"; {diag.duplicates} message(s) were possibly delivered twice already" if diag and diag.duplicates else ""
            warnings.append(f"{'/'.join(eod)} (no reply after the end of the message) is diagnosed for {n} message(s){dup}: "
                            "the receiver may have accepted each of them, so every extra retry may deliver the message "
                            f"again. Faster retries mean more duplicates: {load}. Hold that mail while the cause is "
                            f"fixed: pfdiag queue hold --cause {eod[0]}")  # fmt: skip
        else:
            warnings.append("faster retries: " + load)
    if after.maximal_queue_lifetime < before.maximal_queue_lifetime:
        warnings.append(f"maximal_queue_lifetime {_span(after.maximal_queue_lifetime)}: mail still "
                        f"undeliverable after {_span(after.maximal_queue_lifetime)} is returned to its senders "
                        f"(a bounce) instead of after {_span(before.maximal_queue_lifetime)}; a receiver down "
                        "for a weekend makes your users' mail bounce")  # fmt: skip
    if after.bounce_queue_lifetime < before.bounce_queue_lifetime:
        warnings.append(f"bounce_queue_lifetime {_span(after.bounce_queue_lifetime)}: a bounce that cannot "
                        f"be delivered is dropped after {_span(after.bounce_queue_lifetime)} instead of "
                        f"{_span(before.bounce_queue_lifetime)}: the sender never learns the mail failed")  # fmt: skip
    fixes = fixes_for([c for c in found if timed_out(c, [diag.examples.get(c, "")] if diag else [])], rep.config)
    fix_keys = {c.key for c in fixes}
    left = []
    for st in short_timeouts(rep.config):
        key = f"{st.service}/{st.name}" if st.service else st.name
        if key not in changes:
            where = "" if st.service is None else f", {st.where}"
            left.append(f"{key} = {st.value} (default {st.default:g}s{where}"
                        + ("; the cause found: its fix is above)" if key in fix_keys else ")"))  # fmt: skip
    if left:
        left = [f"this proposal leaves the short smtp_*_timeout values as they are: {', '.join(left)}"]
    if diag is None or diag.error:
        warnings.append("the logs were not read" + (f" ({diag.error})" if diag and diag.error else "") + ": whether "
                        "end-of-data timeouts happen here (each retry then a possible duplicate) is not known")  # fmt: skip
    first = [{"parameter": c.name, "service": c.service, "value": c.value, "why": c.why,
              "before": (rep.config.overrides.get((*c.service.split("/"), c.name)) if c.service  # type: ignore[arg-type]
                         else rep.config.values.get(c.name)),
              } for c in fixes]  # fmt: skip
    apply = ["pfdiag", "config", *(("-c", config_dir) if config_dir else ()), "--propose",
             *(f"{c.key}={c.value}" for c in fixes), "--apply"] if fixes else None  # fmt: skip
    return {"diagnosis": None if diag is None else dataclasses.asdict(diag), "fix_first": first,
            "fix_first_command": apply, "warnings": warnings, "left_as_is": left}


def _span(seconds: float) -> str:
    """'1 day', '5 days', '12 h': a lifetime in a sentence."""
    if seconds >= 86400 and seconds % 86400 == 0:
        n = int(seconds // 86400)
        return f"{n} day" + ("s" if n != 1 else "")
    return human(seconds, prose=True)


def _valid(s: RetrySettings) -> bool:
    try:
        s.check()
        return True
    except PfdiagError:
        return False


def _tl_text(t: dict[str, Any] | None) -> list[str]:
    if t is None:
        return ["  (no timeline: a backoff or queue_run_delay is 0, which Postfix refuses)"]
    warn = "never (delay_warning_time = 0)" if t["warning_offset"] is None else f"+{human(t['warning_offset'])}"
    return [f"  attempts at arrival {t['summary']}",
            f"  {t['attempt_count']} attempt(s); delay warning {warn}; returned to sender at "
            f"+{human(t['expires_offset'])} (lifetime {human(t['lifetime'])})"]  # fmt: skip


def _cell(value: str | None, width: int = 12) -> str:
    v = value or ""
    return v if len(v) <= width else v[: width - 3] + "..."


def render_text(doc: dict[str, Any]) -> str:
    rows = doc["parameters"]
    nw = max(len(r["name"]) for r in rows)
    out = [f"{'parameter':<{nw}}  {'effective':<12} {'default':<12} set in"]
    for r in rows:
        eff, d = _cell(r["effective"]), _cell(r["default"])
        where = "; ".join(r["where"]) or "-"
        flag = "  !" if r["risks"] else ""
        out.append(f"{r['name']:<{nw}}  {eff:<12} {d:<12} {where}{flag}")
    if doc["unknown_parameters"]:
        out.append(f"(not known to this Postfix: {', '.join(doc['unknown_parameters'])})")
    if doc["risks"]:
        out += ["", "Risky settings:"]
        out += [f"  ! {x['parameter']}: {x['why']}" for x in doc["risks"]]
    out += ["", "Retry timeline with these settings (if every attempt fails):"] + _tl_text(doc["timeline"])
    p = doc["proposal"]
    if p:
        out += [""] + _judgement_text(p.get("judgement"))
        out += ["", "Proposed (--apply runs these):"] + [f"  {' '.join(c)}" for c in p["commands"]]
        out += ["To undo it:"] + [f"  {' '.join(c)}" for c in p.get("rollback") or []]
        out += ["", "Timeline after the change:"] + _tl_text(p["timeline_after"])
        if p["risks_after"]:
            out += ["Risky after the change:"] + [f"  ! {x['parameter']}: {x['why']}" for x in p["risks_after"]]
    return "\n".join(map(visible, out)) + "\n"


def _diagnosis_line(j: dict[str, Any]) -> str:
    d = j.get("diagnosis")
    if not d or d.get("error"):
        return "Judged without a diagnosis: the logs were not read"
    causes = ", ".join(f"{c} {n} msg(s)" for c, n in list(d["causes"].items())[:5]) or "no deferral"
    return f"Judged against the diagnosis ({d['source']}: {causes})"


def _judgement_text(j: dict[str, Any] | None) -> list[str]:
    if not j:
        return []
    out = [_diagnosis_line(j) + ":"]
    if j["fix_first"]:
        out.append("Fix the cause found first, before any retry tuning:")
        for f in j["fix_first"]:
            where = f"master.cf {f['service']} -o " if f["service"] else ""
            out.append(f"  {where}{f['parameter']}: {f['before']} -> {f['value']}: {f['why']}")
        out.append(f"  {' '.join(j['fix_first_command'])}")
    out += [f"  ! {w}" for w in j["warnings"]]
    out += [f"  - {x}" for x in j["left_as_is"]]
    return out  # values and file names from the configuration, shown literally (textsafe)


def render_md(doc: dict[str, Any]) -> str:
    out = ["# Postfix retry and timeout settings", "", "| parameter | effective | default | set in | risk |",
           "|---|---|---|---|---|"]  # fmt: skip
    for r in doc["parameters"]:
        risk = md_text("; ".join(r["risks"]))  # values and file names from the configuration: escaped (textsafe)
        out.append(f"| {md_text(r['name'])} | {md_code(r['effective'], table=True)} | {md_code(r['default'], table=True)} "
                   f"| {md_text('; '.join(r['where']) or '-')} | {risk} |")  # fmt: skip
    if doc["risks"]:
        out += ["", "## Risks", ""] + [f"- **{md_text(x['parameter'])}**: {md_text(x['why'])}" for x in doc["risks"]]
    out += ["", "## Retry timeline", ""] + [ln.strip() for ln in _tl_text(doc["timeline"])]
    p = doc["proposal"]
    if p:
        j = p.get("judgement")
        if j:
            out += ["", "## The proposal against the diagnosis", "", md_text(_diagnosis_line(j)), ""]
            if j["fix_first"]:
                out += ["Fix the cause found first, before any retry tuning:", ""]
                out += [f"- {md_text((f'master.cf ' + f['service'] + ' -o ' if f['service'] else '') + f['parameter'])}: "
                        f"{md_code(str(f['before']))} -> {md_code(f['value'])}: {md_text(f['why'])}"
                        for f in j["fix_first"]]  # fmt: skip
                out += ["", md_code(" ".join(j["fix_first_command"])), ""]
            out += [f"- **warning**: {md_text(w)}" for w in j["warnings"]]
            out += [f"- {md_text(x)}" for x in j["left_as_is"]]
        out += ["", "## Proposed", ""] + md_block([" ".join(c) for c in p["commands"]])
        out += ["", "To undo it:", ""] + md_block([" ".join(c) for c in p.get("rollback") or []])
        out += ["", "After:", ""] + [ln.strip() for ln in _tl_text(p["timeline_after"])]
    return "\n".join(out) + "\n"
