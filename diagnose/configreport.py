"""The configuration report (``pfdiag config``, and the engine's config step): the settings
table, the retry timeline they give, proposed changes with the before/after timeline, its
renderings, and applying a proposal (postconf -e, postfix reload), logged.

A document, built from checks.config.ConfigReport; the command only parses flags and prints.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from checks.config import ConfigReport, parse_assignment, postfix_argv
from checks.errors import InputError, PfdiagError
from checks.postfix.postconf import PostfixConfig
from checks.postfix.retry import SEED_PROPOSAL, RetrySettings, Timeline, risky_settings, timeline
from checks.targets.base import Target
from diagnose.fate import human
from diagnose.textsafe import md_block, md_code, md_text, visible
from diagnose.actions import ActionLog

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
    out: dict[str, str] = {}
    for item in items or []:
        if item == "seed":
            out.update(SEED)
        else:
            name, value = parse_assignment(item)
            out[name] = value
    return out


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


def build(rep: ConfigReport, changes: dict[str, str], config_dir: str | None = None) -> dict[str, Any]:
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
        after_cfg = PostfixConfig(values={**cfg.values, **changes}, defaults=cfg.defaults, overrides=cfg.overrides)
        after = RetrySettings.from_config(after_cfg)
        doc["proposal"] = {
            "changes": changes,
            "commands": [postconf_e(config_dir, changes), postfix_argv("postfix", config_dir, "reload")],
            "settings_after": dataclasses.asdict(after),
            "timeline_after": timeline_dict(timeline(after)) if _valid(after) else None,
            "risks_after": [{"parameter": n, "why": w} for n, w in risky_settings(after)],
        }
    return doc


def _valid(s: RetrySettings) -> bool:
    try:
        s.check()
        return True
    except PfdiagError:
        return False


def postconf_e(config_dir: str | None, changes: dict[str, str]) -> list[str]:
    return postfix_argv("postconf", config_dir, "-e", *(f"{k}={v}" for k, v in changes.items()))


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
        out += ["", "Proposed (--apply runs these):"] + [f"  {' '.join(c)}" for c in p["commands"]]
        out += ["", "Timeline after the change:"] + _tl_text(p["timeline_after"])
        if p["risks_after"]:
            out += ["Risky after the change:"] + [f"  ! {x['parameter']}: {x['why']}" for x in p["risks_after"]]
    return "\n".join(map(visible, out)) + "\n"  # values and file names from the configuration, shown literally (textsafe)


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
        out += ["", "## Proposed", ""] + md_block([*(f"postconf -e {k}={v}" for k, v in p["changes"].items()), "postfix reload"])
        out += ["", "After:", ""] + [ln.strip() for ln in _tl_text(p["timeline_after"])]
    return "\n".join(out) + "\n"



def apply(target: Target, rep: ConfigReport, changes: dict[str, str], commands: list[list[str]], log: ActionLog,
          say: Callable[[str], None]) -> None:  # fmt: skip
    """Run a proposal's commands (postconf -e, then postfix reload) on a target that may be
    changed, each logged with the values before; InputError at the first that fails."""
    if not target.can_change:
        raise InputError(f"--apply changes a live Postfix: it cannot run on {target.where}")
    before = {r.name: r.effective for r in rep.rows}
    for argv in commands:
        res = target.run(argv, timeout=120)
        detail = "ok" if res.returncode == 0 else (res.stderr.strip().splitlines() or [f"exit {res.returncode}"])[-1]
        log.write(action="config", argv=argv, returncode=res.returncode, result=detail,
                  changes=changes, before={k: before.get(k) for k in changes})  # fmt: skip
        say(f"  {'ok ' if res.returncode == 0 else 'FAIL'} {' '.join(argv)}" + ("" if res.returncode == 0 else f": {detail}"))
        if res.returncode != 0:
            raise InputError(f"{' '.join(argv)} failed: {detail} (logged to {log.path})")
