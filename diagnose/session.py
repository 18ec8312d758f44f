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
from diagnose.symptom import SymptomSearch

BACK = object()
Answerer = Callable[[flow.Question, Mapping[str, str]], Any]  # -> str or BACK
_WHERE_KEYS = ("target", "host", "snapshot", "mailq", "pasted_log")
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
    symptom: SymptomSearch | None = None  # what the operator noticed, looked for in the evidence


class NothingHere(InputError):
    """This machine has no Postfix to diagnose (no log, no running queue): the wizard asks what
    the user has instead (pasted text, a host, a bundle, the demo)."""


def state_of(facts: engine.Facts | None, checked: bool, interactive: bool, domain: str | None = None, *,
             nothing_here: bool = False, symptom: SymptomSearch | None = None) -> flow.State:  # fmt: skip
    if facts is None:
        return flow.State(interactive=interactive, nothing_here=nothing_here)
    ranked = rank(facts.logs, facts.queue, facts.findings, domain=domain)
    deferred = bool(ranked) or (not domain and bool(((facts.queue or {}).get("counts") or {}).get("deferred")))
    actions = sum(1 for r in ranked if r.queued_recipients and facts.live)
    eod = next((r for r in ranked if r.id in EOD_CAUSES), None)
    dest = (eod.top_domain or "") if eod else ""
    return flow.State(True, checked, facts.live, deferred, eod is not None or bool(symptom and symptom.symptom == "eod" and symptom.hits),
                      actions, interactive, nothing_here, symptom is not None, symptom.hits if symptom else 0,
                      dest, hop_text(eod.hop) if eod and eod.hop else "")  # fmt: skip


def hop_text(hop: Mapping[str, Any]) -> str:
    """A next hop as Postfix logs it: host[addr]:port."""
    host, addr, port = hop.get("host") or "", hop.get("addr") or "", hop.get("port")
    text = f"{host}[{addr}]" if host and addr and host != addr else str(addr or host)
    return f"{text}:{port}" if port else text


def where_answers(args: argparse.Namespace) -> dict[str, str]:
    """The answers --demo, --snapshot, --host and --mailq give (target, snapshot, host, mailq); {} for none."""
    if getattr(args, "demo", False):
        return {"target": "demo"}
    if getattr(args, "snapshot", None):
        return {"target": "snapshot", "snapshot": args.snapshot}
    if getattr(args, "host", None):
        return {"target": "ssh", "host": args.host}
    if getattr(args, "mailq", None):
        return {"target": "pasted", "mailq": args.mailq, "pasted_log": ""}
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
        logs = pasted_logs(answers, opts)
        if not answers.get("mailq"):  # log lines only: nothing for postqueue to answer
            from checks.targets.pasted import PastedTarget

            if not logs:
                raise InputError("nothing pasted: give a mailq listing, log lines, or both")
            pasted = PastedTarget(None, logs=logs)
            return pasted, f"pfdiag: reading pasted input: {pasted.describe()}"
        ns.mailq, ns.log_paths = answers["mailq"], logs
    return open_target(ns)


def pasted_logs(answers: Mapping[str, str], opts: Options) -> list[str] | None:
    """The logs to read: --log, else the log lines pasted into the wizard (a file)."""
    if opts.log_paths or answers.get("target") != "pasted":
        return opts.log_paths
    return [answers["pasted_log"]] if answers.get("pasted_log") else None


def take_paste(text: str, key: str, temps: list[str]) -> str:
    """A wizard answer to "paste it or give a file name": "" (none), the file name as it is, or the
    pasted lines written to a private temporary file (removed when the session ends) whose name
    is returned: the readers read files. One word that is no file is an error (asked again)."""
    import tempfile

    if not text.strip():
        return ""
    one = text.strip()
    if "\n" not in one and not any(c.isspace() for c in one):  # one word: a file name (a log line has spaces)
        path = os.path.expanduser(one)
        if not os.path.isfile(path):
            raise InputError(f"no such file: {one} (paste the lines themselves, or give a file name)")
        return path
    fd, path = tempfile.mkstemp(prefix=f"pfdiag-{key.replace('_', '-')}-", suffix=".txt")
    temps.append(path)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text.strip("\n") + "\n")
    return path


def open_with_fallback(answers: dict[str, str], opts: Options) -> tuple[Target, str | None]:
    """Like open_from_answers, but a machine with nothing to diagnose - no Postfix, or an
    installed Postfix that has no log and is not running (so no queue either) - gets the demo
    snapshot instead, with a notice that says so (and answers["target"] becomes "demo").
    A Postfix with a queue or a log is diagnosed."""
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
        from checks.queue import queue_answers

        try:
            answers_here = queue_answers(target, opts.config_dir)
        except PfdiagError:
            answers_here = False
        if answers_here:
            return target, notice  # a live queue to look at, even without a log file (journald)
        why += "; and Postfix is not running here (postqueue -j fails), so there is no queue to read either"
    if opts.interactive:  # the wizard asks what the user has instead: pasted text, a host, a bundle, the demo
        raise NothingHere(f"nothing to diagnose on this machine: {why}")
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
    temps: list[str] = []  # pasted text written to files for the readers
    try:
        return _run(answer, given, opts, progress, open_target, on_checked, on_notice or (lambda _: None), temps)
    finally:
        for path in temps:
            try:
                os.unlink(path)
            except OSError:
                pass


def _run(answer: Answerer, given: Mapping[str, str], opts: Options, progress: engine.Progress,
         open_target: Callable[[dict[str, str], Options], tuple[Target, str | None]],
         on_checked: Callable[[engine.Facts, Mapping[str, str]], None] | None, on_notice: Callable[[str], None],
         temps: list[str]) -> Outcome:  # fmt: skip
    answers = dict(given)
    asked: list[str] = []
    facts: engine.Facts | None = None
    target: Target | None = None
    checked = False
    nothing_here = False
    symptom: SymptomSearch | None = None
    notices: list[str] = []
    # --budget is the whole diagnosis: opening the target, collecting and the checks all come out of
    # it, counted from the moment the target is opened (questions asked before do not count)
    deadline = time.monotonic() + opts.budget
    while True:
        state = state_of(facts, checked, opts.interactive, answers.get("domain") or None, nothing_here=nothing_here,
                         symptom=symptom)  # fmt: skip
        step = flow.next_step(answers, state)
        if isinstance(step, flow.Ask):
            value = answer(step.question, answers)
            if value is BACK:
                if not asked:
                    continue
                key = asked.pop()
                answers.pop(key, None)
                if key in _WHERE_KEYS:
                    facts, target, checked, symptom = None, None, False, None
                elif key in _CHECK_KEYS and facts is not None:
                    checked = False
                    symptom = None if key == "symptom" else symptom
                    _forget_checks(facts)
                continue
            value = str(value)
            try:
                if step.question.key in ("mailq", "pasted_log"):
                    value = take_paste(value, step.question.key, temps)
                elif step.question.key == "test_to" and target is not None and state.eod_hop:
                    _same_hop(target, value, state, opts.config_dir)
            except InputError as exc:
                on_notice(f"pfdiag: {exc}")  # said, and the same question is asked again
                continue
            answers[step.question.key] = value
            asked.append(step.question.key)
        elif isinstance(step, flow.Run) and step.phase == "collect":
            deadline = time.monotonic() + opts.budget
            try:
                target, notice = open_target(answers, opts)
            except PfdiagError as exc:
                asked_where = [k for k in asked if k in _WHERE_KEYS]
                if not (opts.interactive and asked_where):
                    raise
                # a wrong host or bundle the user typed, or nothing here: say why, and ask where again
                on_notice(f"pfdiag: {exc}")
                nothing_here = isinstance(exc, NothingHere)
                for key in _WHERE_KEYS:
                    answers.pop(key, None)
                asked[:] = [k for k in asked if k not in _WHERE_KEYS]
                continue
            if notice:
                notices.append(notice)
                on_notice(notice)
            share = min(opts.budget * 2 / 3, max(deadline - time.monotonic(), 0.5))
            facts = engine.collect(target, budget=share, config_dir=opts.config_dir,
                                   log_paths=pasted_logs(answers, opts), since=opts.since, progress=progress,
                                   domain=answers.get("domain") or None)  # fmt: skip
        elif isinstance(step, flow.Run) and step.phase == "search":
            assert facts is not None and target is not None
            from diagnose.symptom import search

            symptom = search(target, facts.logs, facts.queue, answers["symptom"],
                             max(1.0, min(20.0, deadline - time.monotonic())))  # fmt: skip
            symptom.files = ["the pasted log lines" if f in temps else f for f in symptom.files]
            notices.append(symptom.sentence())
            on_notice(symptom.sentence())
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
            return Outcome(facts, answers, target, notices, symptom)


def _same_hop(target: Target, address: str, state: flow.State, config_dir: str | None) -> None:
    """The test recipient's mail must take the next hop that timed out (any mailbox behind it will
    do); one routed elsewhere would test another path. A route pfdiag cannot resolve is accepted."""
    from checks.nexthop import first_address

    domain = address.strip().rsplit("@", 1)[-1].lower()
    if domain == state.eod_dest.lower():
        return
    hop = first_address(target, domain, config_dir)
    if hop is None:
        return
    wanted = state.eod_hop
    addr = str(hop.get("host") or "")
    if addr and f"[{addr}]" not in wanted and not wanted.startswith(addr):
        raise InputError(f"mail to {domain} goes to {hop_text({'host': hop.get('name'), 'addr': addr, 'port': hop.get('port')})}, "
                         f"not to {wanted}, the next hop that timed out: name a mailbox behind {wanted}")  # fmt: skip


def _forget_checks(facts: engine.Facts) -> None:
    keep = {"logs", "queue", "config"}
    facts.steps = [s for s in facts.steps if s.id in keep]
    facts.findings = [f for f in facts.findings if f.check_id.startswith("collect.")]


def report_mode_answerer(question: flow.Question, answers: Mapping[str, str]) -> str:
    return flow.default_answer(question)
