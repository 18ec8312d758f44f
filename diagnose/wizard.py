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
from typing import Any, Mapping, Sequence

from checks.errors import InputError, PfdiagError
from checks.targets.base import Target

from diagnose import actions as act
from diagnose import flow, session
from diagnose.fate import fitting_actions
from diagnose.textsafe import console, rich_markup, visible

BACK_LABEL = "<- back"
_BACK_TEXT = "<"


def _style() -> Any:
    import questionary

    return questionary.Style([("qmark", "fg:ansicyan bold"), ("question", "bold"), ("answer", "fg:ansigreen bold"),
                              ("pointer", "fg:ansicyan bold"), ("highlighted", "fg:ansicyan bold"),
                              ("separator", "bold")])  # fmt: skip


class Asker:
    """Answers flow questions on the terminal; KeyboardInterrupt (Ctrl-C) ends the wizard."""

    def __init__(self, out: Any) -> None:
        self.out = out
        self.answered = 0

    def __call__(self, q: flow.Question, answers: Mapping[str, str]) -> Any:
        import questionary

        can_go_back = self.answered > 0
        message = _wrap(q.message, self.out.width)
        if q.kind == "select" or q.kind == "confirm":
            choices = list(q.choices) if q.kind == "select" else [("yes", "yes"), ("no", "no")]
            items = [questionary.Choice(label, value=value) for value, label in choices]
            if can_go_back:
                items.append(questionary.Choice(BACK_LABEL, value=session.BACK))
            default = next((c for c in items if c.value == q.default), None)
            value = questionary.select(message, choices=items, default=default, style=_style()).unsafe_ask()
        else:
            validator = session.VALIDATORS.get(q.validate or "")

            def check(text: str) -> bool | str:
                if can_go_back and text.strip() == _BACK_TEXT:
                    return True
                why = validator(text) if validator else None
                return True if why is None else why

            hint = f" ({_BACK_TEXT} to go back)" if can_go_back else ""
            if q.validate == "paste":  # pasted lines: Enter makes a new line, Esc Enter (or Alt-Enter) ends the answer;
                # the input starts on a line of its own (prompt_toolkit does not wrap a multi-line prompt's message)
                value = questionary.text(message + hint + "\n>", validate=check, style=_style(),
                                         multiline=True, instruction="").unsafe_ask()  # fmt: skip
            else:
                value = questionary.text(message + hint, validate=check, style=_style()).unsafe_ask()
            if can_go_back and value.strip() == _BACK_TEXT:
                value = session.BACK
            elif isinstance(value, str):
                value = value.strip()
        if value is session.BACK:
            self.answered = max(0, self.answered - 1)
        else:
            self.answered += 1
        return value


def _wrap(message: str, width: int) -> str:
    """A question's text broken at spaces to the terminal's width (the terminal would break it inside
    words), each paragraph of it ("\n") on its own; "? " goes before it, and the last line keeps room
    for the prompt's own hint ("(Use arrow keys)", "(< to go back)")."""
    import textwrap

    room = max(30, width - 3)
    lines = [ln for p in message.split("\n") for ln in textwrap.wrap(p, room, break_on_hyphens=False) or [""]]
    if len(lines[-1]) + 20 > width:
        lines[-1:] = textwrap.wrap(lines[-1], max(20, width - 22), break_on_hyphens=False) or [""]
    return "\n".join(lines)


def _notice(out: Any, notice: str) -> None:
    """What the user must know now (the demo stands in, a host could not be reached, what the symptom
    search found): each line of it wrapped with its continuation indented under its first word."""
    from diagnose.report import hang

    for line in notice.split("\n"):
        hang(out, out.width, None, line, indent=0, hang=8 if line.startswith("pfdiag: ") else 2, style="yellow")


def _progress(out: Any) -> Any:
    from diagnose.report import hang

    marks = {"ok": "[green]done[/]", "error": "[red]failed[/]", "timeout": "[red]out of time[/]", "skipped": "[dim]skipped[/]"}
    titles: dict[str, str] = {}

    def show(step: str, state: str, detail: str) -> None:
        width = out.width
        if state == "start":
            titles[step] = detail
            hang(out, width, rich_markup("[cyan]...[/] "), detail, hang=4)
        else:  # a step's detail may quote a remote reply or a file name: through textsafe, as every outside text
            extra = f": {detail}" if detail else ""
            mark, line = marks.get(state), titles.get(step, step) + extra
            hang(out, width, rich_markup(f"{mark} ") if mark else rich_markup("{} ", state), line, hang=4)

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
                              on_checked=show, on_notice=lambda notice: _notice(out, notice))  # fmt: skip
        doc = report.build(outcome.facts, outcome.answers)
        act_step(doc, outcome, out, opts.config_dir)
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


def act_step(doc: Mapping[str, Any], outcome: session.Outcome, out: Any, config_dir: str | None = None) -> None:
    """After the report: what can be done about it here. On a recording (snapshot, demo, pasted
    text) nothing can be changed: say so, and how to get to the live host."""
    waiting = [c for c in doc["causes"] if c["impact"]["queued_messages"]]
    if not outcome.target.can_change:
        if waiting:
            out.print(rich_markup("\n[bold]Queue actions[/] (hold, retry, release) change a live Postfix, and this is a "
                                  "recording ({}): run pfdiag on the mail host, or `pfdiag --host HOST` from here "
                                  "(HOST: the mail host's SSH name).", outcome.target.where))  # fmt: skip
        return
    fixed: set[str] = set()  # ids of the causes whose fix was applied in this session: their mail may be retried now
    acting = outcome.answers.get("act_on_queue") == "yes"
    if acting:  # first what fits before a fix (hold what may be delivered twice, retry greylisted mail)
        offer_queue_actions(doc, outcome, out, config_dir, fixed=fixed)
    fixed |= offer_config_fixes(doc, outcome, out, config_dir)
    if acting and fixed:  # a fix was applied: now its causes' mail may be released and retried
        offer_queue_actions(dict(doc, causes=[c for c in doc["causes"] if c["id"] in fixed]), outcome, out,
                            config_dir, fixed=fixed)  # fmt: skip


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def action_menu(causes: Sequence[Mapping[str, Any]], fixed: set[str], width: int = 80,
                domain: str | None = None) -> list[tuple[str, list[tuple[str, Mapping[str, Any], str, list[str]]]]]:  # fmt: skip
    """[(group title, [(label, cause, why, argv)])]: one group per cause with queued mail and a fitting
    action, titled with the cause id, its title and how many messages wait; every line fits `width`."""
    groups = []
    for c in causes:
        n = c["impact"]["queued_messages"]
        acts = fitting_actions(c["id"], c["id"] in fixed) if n else []
        if not acts:
            continue
        sel = ["--cause", c["id"], *(["--domain", domain] if domain else [])]
        count = f" · {n} queued"
        title = _fit(f"{c['id']} {c['title']}", width - 5 - len(count)) + count  # questionary indents it by 3
        items = [(_fit(f"{a:<7} {why}", width - 7), c, why, ["pfdiag", "queue", a, *sel]) for a, why in acts]
        groups.append((visible(title), items))
    return groups


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
    """The dry run at 80 columns (act.PLAN_WIDTH): a wrapped item hangs, never back at the margin."""
    from diagnose.report import hang

    width = min(act.PLAN_WIDTH, out.width) + 1  # hang() keeps one column free
    hang(out, width, rich_markup("[dim]dry run[/]: "), f"{len(plan.messages)} message(s), {act.SPECS[plan.action].help}", indent=0, hang=4)
    for m in plan.messages[:20]:
        rcpt = ", ".join(r.address for r in m.recipients[:2]) + (" ..." if len(m.recipients) > 2 else "")
        hang(out, width, None, f"{m.queue_id:<17} {m.sender or '<>'} -> {rcpt}", indent=2, hang=4)
    if len(plan.messages) > 20:
        out.print(f"  ... {len(plan.messages) - 20} more")
    hang(out, width, rich_markup("would run: "), "; ".join(" ".join(c) for c in plan.commands), indent=0, hang=4)
    for w in plan.warnings:
        hang(out, width, rich_markup("[yellow]warning[/]: "), w, indent=0, hang=4)


def offer_queue_actions(doc: Mapping[str, Any], outcome: session.Outcome, out: Any, config_dir: str | None = None,
                        action_log: str | None = None, fixed: set[str] | None = None) -> None:  # fmt: skip
    """Pick actions from a list grouped per cause (only those that fit the cause and the moment,
    see fitting_actions); each picked one is planned and shown as a dry run (exactly which
    messages, which commands) and confirmed on its own, then executed by the guarded action
    (logged; delete is never offered here)."""
    import shutil

    import questionary

    from checks import places

    action_log = action_log or places.action_log()  # at call time: PFDIAG_ACTION_LOG may move it
    domain = outcome.answers.get("domain") or None
    width = shutil.get_terminal_size((80, 24)).columns
    groups = action_menu(doc["causes"], fixed or set(), width, domain)
    if not groups:
        out.print("No queue action fits now: the waiting mail needs its fix first (the report's fixes), "
                  "and a retry only after the fix: `pfdiag queue retry --cause ID`.")  # fmt: skip
        return
    items: list[Any] = []
    for title, acts in groups:
        items.append(questionary.Separator(title))
        items += [questionary.Choice(label, value=(cause, why, argv)) for label, cause, why, argv in acts]
    picked = questionary.checkbox("Which queue actions?", choices=items, style=_style(),
                                  instruction="(space selects, enter confirms; none is fine)").unsafe_ask()  # fmt: skip
    for cause, why, argv in picked or []:
        out.print(rich_markup("\n[bold]{} {}[/]: {}", cause["id"], cause["title"], why))
        try:
            plan = plan_queue_action(outcome.target, argv[2], cause["id"], domain, config_dir)
        except PfdiagError as exc:
            out.print(rich_markup("[red]{}[/]", exc))
            continue
        _show_plan(out, plan)
        if not questionary.confirm(f"Run `{visible(' '.join(argv))}` now?", default=False, style=_style()).unsafe_ask():
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


# --- configuration fixes: a hook of helper probecfg; the offer itself is diagnose.configfix.offer_fixes


def offer_config_fixes(doc: Mapping[str, Any], outcome: session.Outcome, out: Any, config_dir: str | None = None,
                       action_log: str | None = None) -> set[str]:  # fmt: skip
    """The configuration fixes of the top causes (before/after, rollback, confirmation, postfix
    reload), never on a snapshot or the demo: diagnose.configfix does it all, asking here."""
    import questionary

    from checks import places
    from diagnose.configfix import offer_fixes

    def ask(prompt: str) -> str:
        return "yes" if questionary.confirm(prompt, default=False, style=_style()).unsafe_ask() else "no"

    config = getattr(outcome.facts.config_report, "config", None)
    try:
        result = offer_fixes(outcome.target, dict(doc), config, config_dir=config_dir, ask=ask,
                             log_path=action_log or places.action_log(), say=lambda line: out.print(rich_markup("{}", line)))  # fmt: skip
    except PfdiagError as exc:
        out.print(rich_markup("[red]configuration fix not made:[/] {}", str(exc)))
        return set()
    return set(result.causes) if result is not None and result.ok else set()
