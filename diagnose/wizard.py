"""The guided wizard: ``pfdiag`` on a terminal. The only module that imports questionary.

It answers diagnose/flow.py's questions by asking the operator (select, confirm, text with
validation; "back" undoes the last answer), shows the checks' progress, prints the report,
and then offers the fixes: each queue action is planned and shown as a dry run, confirmed on
its own, then carried out by the same guarded functions as ``pfdiag queue`` (diagnose/actions.py:
build_plan, execute; logged) on the target the diagnosis looked at.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Mapping

from checks.errors import InputError, PfdiagError
from checks.targets.base import Target

from diagnose import actions as act
from diagnose import flow, session
from diagnose.textsafe import console, rich_markup, visible

BACK_LABEL = "<- back"
_BACK_TEXT = "<"


def _style() -> Any:
    import questionary

    return questionary.Style([("qmark", "fg:ansicyan bold"), ("question", "bold"), ("answer", "fg:ansigreen bold"),
                              ("pointer", "fg:ansicyan bold"), ("highlighted", "fg:ansicyan bold")])  # fmt: skip


class Asker:
    """Answers flow questions on the terminal; KeyboardInterrupt (Ctrl-C) ends the wizard."""

    def __init__(self, out: Any) -> None:
        self.out = out
        self.answered = 0

    def __call__(self, q: flow.Question, answers: Mapping[str, str]) -> Any:
        import questionary

        can_go_back = self.answered > 0
        if q.help:
            self.out.print(rich_markup("[dim]{}[/]", q.help))
        if q.kind == "select" or q.kind == "confirm":
            choices = list(q.choices) if q.kind == "select" else [("yes", "yes"), ("no", "no")]
            items = [questionary.Choice(label, value=value) for value, label in choices]
            if can_go_back:
                items.append(questionary.Choice(BACK_LABEL, value=session.BACK))
            default = next((c for c in items if c.value == q.default), None)
            value = questionary.select(q.message, choices=items, default=default, style=_style()).unsafe_ask()
        else:
            validator = session.VALIDATORS.get(q.validate or "")

            def check(text: str) -> bool | str:
                if can_go_back and text.strip() == _BACK_TEXT:
                    return True
                why = validator(text) if validator else None
                return True if why is None else why

            hint = f" ({_BACK_TEXT} to go back)" if can_go_back else ""
            value = questionary.text(q.message + hint, validate=check, style=_style()).unsafe_ask()
            if can_go_back and value.strip() == _BACK_TEXT:
                value = session.BACK
            elif isinstance(value, str):
                value = value.strip()
        if value is session.BACK:
            self.answered = max(0, self.answered - 1)
        else:
            self.answered += 1
        return value


def _progress(out: Any) -> Any:
    marks = {"ok": "[green]done[/]", "error": "[red]failed[/]", "timeout": "[red]out of time[/]", "skipped": "[dim]skipped[/]"}
    titles: dict[str, str] = {}

    def show(step: str, state: str, detail: str) -> None:
        if state == "start":
            titles[step] = detail
            out.print(rich_markup("  [cyan]...[/] {}", detail))
        else:  # a step's detail may quote a remote reply or a file name: through textsafe, as every outside text
            extra = f": {detail}" if detail else ""
            mark, line = marks.get(state), titles.get(step, step) + extra
            out.print(rich_markup(f"  {mark} {{}}", line) if mark else rich_markup("  {} {}", state, line))

    return show


def run(args: argparse.Namespace) -> int:
    import questionary

    from diagnose import report
    from diagnose.output import write_text
    from diagnose.rendering import redact, render

    out = console(stderr=True)
    out.print("[bold]pfdiag[/] - why is Postfix mail deferred, and what to do about it. "
              "[dim](Ctrl-C quits; nothing is changed without asking)[/]")  # fmt: skip
    opts = session.Options.from_args(args, interactive=True)
    given = session.where_answers(args)
    if getattr(args, "domain", None):
        given.update(flow.check_answers({"domain": args.domain}))
    try:
        def show(facts: Any, answers: Mapping[str, str]) -> None:
            sys.stdout.write(render(report.build(facts, answers), "text", sys.stdout.isatty()))
            sys.stdout.flush()

        # a notice (the demo stands in for an empty machine) comes before the progress and the report
        outcome = session.run(Asker(out), given, opts, _progress(out), open_target=session.open_with_fallback,
                              on_checked=show, on_notice=lambda notice: out.print(rich_markup("[yellow]{}[/]", notice)))  # fmt: skip
        doc = report.build(outcome.facts, outcome.answers)
        if outcome.answers.get("act_on_queue") == "yes":
            offer_queue_actions(doc, outcome, out, opts.config_dir)
        save = questionary.select("Save this report for a ticket?", style=_style(),
                                  choices=[questionary.Choice("no", value="no"),
                                           questionary.Choice("Markdown", value="md"),
                                           questionary.Choice("Markdown, redacted", value="md-redacted"),
                                           questionary.Choice("HTML page", value="html"),
                                           questionary.Choice("JSON", value="json")]).unsafe_ask()  # fmt: skip
        if save != "no":
            fmt = save.split("-")[0]
            path = questionary.text("File name:", default=f"pfdiag-report.{fmt}", style=_style(),
                                    validate=lambda t: bool(t.strip()) or "a file name").unsafe_ask()  # fmt: skip
            write_text(render(redact(doc) if save.endswith("redacted") else doc, fmt, False), path.strip())
            out.print(rich_markup("saved {}", path.strip()))
        return int(doc["verdict"]["exit_code"])
    except KeyboardInterrupt:
        out.print("[dim]pfdiag: stopped; nothing was changed[/]")
        return 130


def _cause_of(reason: str) -> str:
    from diagnose.classify import queued_cause

    return queued_cause(reason)


def plan_queue_action(target: Target, action: str, cause_id: str, domain: str | None, config_dir: str | None) -> act.Plan:
    """What ``pfdiag queue ACTION --cause ID [--domain D]`` would do, planned the same way:
    Postfix must run, the queue is read now, the messages of that cause are selected."""
    from checks.config import read_config
    from checks.queue import read_queue

    if not target.can_change:
        raise InputError(f"queue actions change a live Postfix: they cannot run on {target.where}")
    cfg = read_config(target, config_dir)
    act.ensure_running(target, config_dir, cfg.daemon_directory)
    chosen, _ = act.select(read_queue(target, config_dir).messages, act.Selection(cause=cause_id, domain=domain), _cause_of)
    if not chosen:
        raise InputError(f"{action}: no queued message of {cause_id} is left; nothing was changed")
    return act.build_plan(action, chosen, config_dir, None)


def _show_plan(out: Any, plan: act.Plan) -> None:
    out.print(rich_markup("[dim]dry run[/]: {} message(s), {}", len(plan.messages), act.SPECS[plan.action].help))
    for m in plan.messages[:20]:
        rcpt = ", ".join(r.address for r in m.recipients[:2]) + (" ..." if len(m.recipients) > 2 else "")
        out.print(rich_markup("  {} {} -> {}", f"{m.queue_id:<17}", m.sender or '<>', rcpt))
    if len(plan.messages) > 20:
        out.print(f"  ... {len(plan.messages) - 20} more")
    out.print(rich_markup("would run: {}", "; ".join(" ".join(c) for c in plan.commands)))
    for w in plan.warnings:
        out.print(rich_markup("[yellow]warning[/]: {}", w))


def offer_queue_actions(doc: Mapping[str, Any], outcome: session.Outcome, out: Any, config_dir: str | None = None,
                        action_log: str | None = None) -> None:  # fmt: skip
    """Pick actions from a list; each picked one is planned and shown as a dry run (exactly which
    messages, which commands) and confirmed on its own, then executed by the guarded action
    (logged; delete is never offered here)."""
    import questionary

    from checks import places

    action_log = action_log or places.action_log()  # at call time: PFDIAG_ACTION_LOG may move it

    items = []
    for cause in doc["causes"]:
        n = cause["impact"]["queued_messages"]
        for action in cause["queue_actions"]:
            label = visible(f"{action['action']:<6} {cause['id']} ({n} message(s)): {action['why']}")
            items.append(questionary.Choice(label, value=(cause, action)))
    if not items:
        return
    picked = questionary.checkbox("Which queue actions? (space selects, enter confirms; none is fine)",
                                  choices=items, style=_style()).unsafe_ask()  # fmt: skip
    domain = outcome.answers.get("domain") or None
    for cause, action in picked or []:
        out.print(rich_markup("\n[bold]{} {}[/]: {}", cause["id"], cause["title"], action["why"]))
        try:
            plan = plan_queue_action(outcome.target, action["action"], cause["id"], domain, config_dir)
        except PfdiagError as exc:
            out.print(rich_markup("[red]{}[/]", exc))
            continue
        _show_plan(out, plan)
        if not questionary.confirm(f"Run `{visible(' '.join(action['argv']))}` now?", default=False, style=_style()).unsafe_ask():
            out.print("[dim]skipped[/]")
            continue
        try:
            log = act.ActionLog(action_log)
            try:
                result = act.execute(outcome.target, plan, config_dir, log)
            finally:
                log.close()
        except PfdiagError as exc:
            out.print(rich_markup("[red]{}[/]", exc))
            continue
        for o in result.outcomes:
            out.print(rich_markup("  {} {}: {}", "ok " if o.ok else "FAIL", " ".join(o.argv), o.detail))
        out.print(rich_markup("[green]done[/] (logged to {})", action_log) if result.ok else rich_markup("[red]failed[/] (see {})", action_log))
