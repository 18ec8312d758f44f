"""Drive the flow (diagnose/flow.py) with an answerer until the report is ready.

The answerer is the only difference between the wizard (questionary on a terminal) and
``pfdiag report`` (answers given up front, defaults for the rest, never a prompt). It may
return BACK to undo its last answer: answers that decided where to look throw the
evidence away; answers that decided the checks re-run only the checks.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from checks.errors import InputError, PfdiagError, UsageError
from checks.targets.base import Target
from diagnose import engine, flow
from diagnose.correlate import EOD_CAUSES, rank

BACK = object()
Answerer = Callable[[flow.Question, Mapping[str, str]], Any]  # -> str or BACK
_WHERE_KEYS = ("target", "host", "snapshot")
_CHECK_KEYS = ("symptom", "send_test", "test_to")
_NOT_ASKED = ("domain",)


@dataclass
class Options:
    budget: float = engine.DEFAULT_BUDGET
    config_dir: str | None = None
    since: float | None = None
    log_paths: list[str] | None = None
    interactive: bool = False
    include_plugins: bool = True
    ssh: Mapping[str, Any] = field(default_factory=dict)  # extra --host options (identity, known hosts...)
    dns_resolver: str | None = None  # system | chroot | IP[:PORT] for the DNS checks

    @classmethod
    def from_args(cls, args: argparse.Namespace, interactive: bool = False) -> Options:
        """From report's (and the wizard's) options: --budget, -c, --since, --log, --no-plugins,
        --resolver and the SSH ones."""
        from diagnose.timespec import parse_when

        if args.budget <= 0:
            raise UsageError("--budget must be positive")
        ssh = {k: getattr(args, k) for k in ("accept_new_host_key", "known_hosts", "ssh_config", "ssh_timeout", "identity", "strict", "now")
               if hasattr(args, k)}  # fmt: skip
        return cls(budget=args.budget, config_dir=args.config_dir, since=parse_when(args.since) if args.since else None,
                   log_paths=args.log_paths, interactive=interactive, include_plugins=not args.no_plugins, ssh=ssh,
                   dns_resolver=getattr(args, "resolver", None))  # fmt: skip


@dataclass
class Outcome:
    facts: engine.Facts
    answers: dict[str, str]
    target: Target
    notices: list[str]


def state_of(facts: engine.Facts | None, checked: bool, interactive: bool, domain: str | None = None) -> flow.State:
    if facts is None:
        return flow.State(interactive=interactive)
    ranked = rank(facts.logs, facts.queue, facts.findings, domain=domain)
    deferred = bool(ranked) or (not domain and bool(((facts.queue or {}).get("counts") or {}).get("deferred")))
    actions = sum(1 for r in ranked if r.queued_recipients and facts.live)
    return flow.State(True, checked, facts.live, deferred, any(r.id in EOD_CAUSES for r in ranked), actions, interactive)


def where_answers(args: argparse.Namespace) -> dict[str, str]:
    """The answers --demo, --snapshot, --host and --mailq give (target, snapshot, host, mailq); {} for none."""
    if getattr(args, "demo", False):
        return {"target": "demo"}
    if getattr(args, "snapshot", None):
        return {"target": "snapshot", "snapshot": args.snapshot}
    if getattr(args, "host", None):
        return {"target": "ssh", "host": args.host}
    if getattr(args, "mailq", None):
        return {"target": "pasted", "mailq": args.mailq}
    return {}


def read_answers_file(path: str) -> dict[str, str]:
    """Answers from a file: KEY=VALUE lines (# comments), or one JSON object."""
    import json

    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read(1 << 20)
    except OSError as exc:
        raise InputError(f"{path}: cannot read answers ({exc.strerror})") from None
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(data, dict):
            raise InputError(f"{path}: expected a JSON object of answers")
        return {str(k): str(v) for k, v in data.items()}
    out = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise InputError(f"{path}:{n}: expected KEY=VALUE, got {line!r}")
        out[key.strip()] = value.strip()
    return out


def valid_bundle(text: str) -> str | None:
    """flow.valid_bundle, and the bundle must be there (the wizard asks again when it is not)."""
    why = flow.valid_bundle(text)
    if why is None and not os.path.exists(text.strip()):
        why = f"no such file or directory: {text.strip()}"
    return why


VALIDATORS = {**flow.VALIDATORS, "bundle": valid_bundle}


def open_from_answers(answers: Mapping[str, str], opts: Options) -> tuple[Target, str | None]:
    from diagnose.target_options import open_target

    kind = answers.get("target", "local")
    ns = argparse.Namespace(snapshot=None, demo=False, host=None, budget=opts.budget, **dict(opts.ssh))
    if kind == "demo":
        ns.demo = True
    elif kind == "snapshot":
        ns.snapshot = answers["snapshot"]
    elif kind == "ssh":
        ns.host = answers["host"]
    elif kind == "pasted":
        ns.mailq, ns.log_paths = answers["mailq"], opts.log_paths
    return open_target(ns)


def open_with_fallback(answers: dict[str, str], opts: Options) -> tuple[Target, str | None]:
    """Like open_from_answers, but a machine with nothing to diagnose - no Postfix, or an
    installed Postfix that has no log and is not running (so no queue either) - gets the demo
    snapshot instead, with a notice that says so (and answers["target"] becomes "demo").
    A Postfix with a queue or a log is diagnosed."""
    from checks.config import postfix_argv
    from checks.logs import default_sources, resolve_sources

    target, notice = open_from_answers(answers, opts)
    if answers.get("target") == "local" and opts.log_paths:
        resolve_sources(target, opts.log_paths)  # a missing or unreadable --log: one line now, not after the checks
    if answers.get("target") != "local" or opts.log_paths:
        return target, notice
    try:
        default_sources(target, opts.config_dir)
        return target, notice
    except InputError as exc:
        why = str(exc)
    if _postfix_on_path():
        try:
            queue = target.run(postfix_argv("postqueue", opts.config_dir, "-j"), timeout=20)
        except PfdiagError:
            queue = None
        if queue is not None and queue.ok:
            return target, notice  # a live queue to look at, even without a log file (journald)
        why += "; and Postfix is not running here (postqueue -j fails), so there is no queue to read either"
    answers["target"] = "demo"
    target, _ = open_from_answers(answers, opts)
    notice = (f"pfdiag: nothing to diagnose on this machine: {why}.\n"
              "pfdiag: diagnosing the demo snapshot shipped with pfdiag instead (a recorded test-lab Postfix); "
              "name a log with --log, or use --host / --snapshot.")  # fmt: skip
    return target, notice


def _postfix_on_path() -> bool:
    """Is Postfix installed for the user who runs pfdiag (postconf on their PATH)? Without
    it, this machine has no Postfix of theirs to diagnose."""
    import shutil

    return shutil.which("postconf") is not None


def run(answer: Answerer, given: Mapping[str, str], opts: Options,
        progress: engine.Progress = engine._noop,
        open_target: Callable[[dict[str, str], Options], tuple[Target, str | None]] = open_from_answers,
        on_checked: Callable[[engine.Facts, Mapping[str, str]], None] | None = None,
        on_notice: Callable[[str], None] | None = None) -> Outcome:  # fmt: skip
    """Ask, collect, check until the flow is done. ``on_checked`` sees the evidence each time
    the checks have run (the wizard prints the report there, before asking to act on it);
    ``on_notice`` hears at once what the user must know first (e.g. the demo stands in)."""
    answers = dict(given)
    asked: list[str] = []
    facts: engine.Facts | None = None
    target: Target | None = None
    checked = False
    notices: list[str] = []
    # --budget is the whole diagnosis: opening the target, collecting and the checks all come out of
    # it, counted from the moment the target is opened (questions asked before do not count)
    deadline = time.monotonic() + opts.budget
    while True:
        step = flow.next_step(answers, state_of(facts, checked, opts.interactive, answers.get("domain") or None))
        if isinstance(step, flow.Ask):
            value = answer(step.question, answers)
            if value is BACK:
                if not asked:
                    continue
                key = asked.pop()
                answers.pop(key, None)
                if key in _WHERE_KEYS:
                    facts, target, checked = None, None, False
                elif key in _CHECK_KEYS and facts is not None:
                    checked = False
                    _forget_checks(facts)
                continue
            answers[step.question.key] = str(value)
            asked.append(step.question.key)
        elif isinstance(step, flow.Run) and step.phase == "collect":
            deadline = time.monotonic() + opts.budget
            try:
                target, notice = open_target(answers, opts)
            except PfdiagError as exc:
                asked_where = [k for k in asked if k in _WHERE_KEYS]
                if not (opts.interactive and asked_where):
                    raise
                # a wrong host or bundle the user typed: say why, and ask where again
                if on_notice is not None:
                    on_notice(f"pfdiag: {exc}")
                for key in _WHERE_KEYS:
                    answers.pop(key, None)
                asked[:] = [k for k in asked if k not in _WHERE_KEYS]
                continue
            if notice:
                notices.append(notice)
                if on_notice is not None:
                    on_notice(notice)
            share = min(opts.budget * 2 / 3, max(deadline - time.monotonic(), 0.5))
            facts = engine.collect(target, budget=share, config_dir=opts.config_dir,
                                   log_paths=opts.log_paths, since=opts.since, progress=progress,
                                   domain=answers.get("domain") or None)  # fmt: skip
        elif isinstance(step, flow.Run):
            assert facts is not None and target is not None
            left = deadline - time.monotonic()  # what opening and collecting did not use
            engine.run_checks(facts, target, answers, max(1.0, left), opts.config_dir, progress,
                              opts.include_plugins, opts.dns_resolver)  # fmt: skip
            checked = True
            if on_checked is not None:
                on_checked(facts, answers)
        else:
            assert facts is not None and target is not None
            return Outcome(facts, answers, target, notices)


def _forget_checks(facts: engine.Facts) -> None:
    keep = {"logs", "queue", "config"}
    facts.steps = [s for s in facts.steps if s.id in keep]
    facts.findings = [f for f in facts.findings if f.check_id.startswith("collect.")]


def report_mode_answerer(question: flow.Question, answers: Mapping[str, str]) -> str:
    return flow.default_answer(question)
