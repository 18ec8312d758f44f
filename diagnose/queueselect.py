"""The queue actions of `pfdiag queue ACTION`, before and after diagnose/actions.py runs them:
checking the selectors, choosing the messages from a fresh listing, and the plan and its
result as text and as JSON (schema pfdiag.queue-action/1). diagnose/actions.py plans and
executes; the command (diagnose/commands/queue.py) asks and prints."""

from __future__ import annotations

import re
import sys
import time
from collections import Counter
from typing import Any, Callable

from checks.config import read_config
from checks.errors import InputError, PfdiagError, UsageError
from checks.postfix.postqueue import QueuedMessage
from checks.queue import domain_of, read_queue
from checks.targets import Target
from diagnose import actions as act
from diagnose.queuereport import cause_of
from diagnose.fate import human
from diagnose.textsafe import visible

PLAN_SHOWN = 200  # messages listed in a plan's text
JOIN_CAP = 7 * 86400  # --sasl-user/--client read the log back at most this far by default (seconds)
JOIN_SLACK = 300  # seconds before the oldest arrival: smtpd logs client= before cleanup stamps the arrival
_AGE = re.compile(r"^(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)([kmg]?)b?$", re.I)


def parse_age(text: str, option: str = "--older-than") -> float:
    """AGE like 30m, 2h, 3d, 1w, 1d12h (seconds); UsageError otherwise."""
    m = _AGE.match(text.strip().lower())
    if not text.strip() or not m or not any(m.groups()):
        raise UsageError(f"{option}: cannot read the age {text!r}: use 30m, 2h, 3d or 1d12h")
    w, d, h, mi, sec = (int(g) if g else 0 for g in m.groups())
    return float((((w * 7 + d) * 24 + h) * 60 + mi) * 60 + sec)


def parse_size(text: str, option: str = "--min-size") -> int:
    """SIZE in bytes, or with k/M/G (powers of 1024, as Postfix counts message_size_limit in bytes)."""
    m = _SIZE.match(text.strip())
    if not m:
        raise UsageError(f"{option}: cannot read the size {text!r}: use bytes (20000), 500k or 1M")
    return int(float(m[1]) * 1024 ** " kmg".index(m[2].lower() or " "))


def parse_reason(text: str) -> re.Pattern[str]:
    try:
        return re.compile(text, re.I)
    except re.error as exc:
        raise UsageError(f"--reason: not a valid regular expression {text!r} ({exc})") from None


def selection(args: Any) -> act.Selection:
    """The selectors of a `pfdiag queue` command line (checked: UsageError when one is malformed)."""
    sel = act.Selection(args.id, args.cause, args.domain, args.queue, args.all_deferred)
    for name in ("sender", "recipient"):
        value = getattr(args, name)
        if value is not None and (not value.strip() or (value != "<>" and "@" not in value)):
            raise UsageError(f"--{name}: give an address (ann@example.com) or a domain (@example.com), not {value!r}")
    if args.recipient == "<>":
        raise UsageError("--recipient: <> is a sender only (the null sender of bounces)")
    sel.sender, sel.recipient = args.sender, args.recipient
    sel.older_than = None if args.older_than is None else parse_age(args.older_than, "--older-than")
    sel.younger_than = None if args.younger_than is None else parse_age(args.younger_than, "--younger-than")
    sel.min_size = None if args.min_size is None else parse_size(args.min_size, "--min-size")
    sel.max_size = None if args.max_size is None else parse_size(args.max_size, "--max-size")
    sel.reason = None if args.reason is None else parse_reason(args.reason)
    sel.sasl_user, sel.client = args.sasl_user, args.client
    if args.client:
        import ipaddress

        try:
            ipaddress.ip_network(args.client, strict=False)
        except ValueError:
            raise UsageError(f"--client: not an IP address or network: {args.client!r}") from None
    return sel


def origins(target: Target, config_dir: str | None, messages: list[QueuedMessage], now: float,
            since: float | None = None, sources: list[str] | None = None) -> tuple[dict[str, act.Origin], str]:  # fmt: skip
    """Who submitted each of these messages, from smtpd's client= lines in the default log,
    read from `since` (default: the oldest message's arrival, at most JOIN_CAP back); and a
    note saying what was read. A log that cannot be read is an InputError: --sasl-user and
    --client are refused rather than guessed. sources: log files instead of the default ones.

    A message requeued with postsuper -r has a new queue id and no client= line of its own:
    pickup logs ``orig_id=OLD`` for it (the chain diagnose/trace.py follows), and its submitter
    is that of the first id of the chain. The log is read a second time, for those first ids
    only, when such messages are among the ones asked about."""
    from checks.logs import ReadStats, default_sources

    if since is None:
        oldest = min((m.arrival_time for m in messages if m.arrival_time > 0), default=now)
        since = max(oldest - JOIN_SLACK, now - JOIN_CAP)
    wanted = {m.queue_id for m in messages}
    files = sources or default_sources(target, config_dir)
    stats = ReadStats()
    links: dict[str, str] = {}  # new queue id -> the id it was requeued from (pickup's orig_id=)
    try:
        found = _join(target, files, stats, since, wanted, links)
        firsts = {qid: first for qid in wanted - set(found) if (first := first_id(qid, links)) != qid}
        if firsts:
            earlier = _join(target, files, ReadStats(), since, set(firsts.values()), {})
            found.update({qid: earlier[first] for qid, first in firsts.items() if first in earlier})
    except PfdiagError as exc:
        raise InputError(f"--sasl-user/--client need the mail log, which cannot be read ({exc}); "
                         "those selectors are refused") from None  # fmt: skip
    if not stats.files:
        raise InputError("--sasl-user/--client need the mail log, and none was found; those selectors are refused")
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(since))
    requeued = f" ({len(firsts)} requeued: joined through pickup's orig_id= to their first queue id)" if firsts else ""
    return found, (f"submitters read from {', '.join(dict.fromkeys(stats.files))} since {when}: "
                   f"{len(found)} of {len(wanted)} message(s) came in over SMTP{requeued}")  # fmt: skip


MAX_LINKS = 100_000  # requeue links (pickup's orig_id=) remembered in one read of the log


def _join(target: Target, files: list[str], stats: Any, since: float, wanted: set[str], links: dict[str, str]
          ) -> dict[str, act.Origin]:  # fmt: skip
    """One read of the log: the submitters of the wanted ids (checks/outbreak.py's SubmitterJoin,
    the one join of smtpd's client= lines) and the requeue links pickup logs."""
    from checks.logs import read_lines
    from checks.outbreak import SubmitterJoin
    from diagnose.trace import _ORIG_ID

    join = SubmitterJoin(wanted)
    for line in read_lines(target, files, stats, since=since, skip_daemons=frozenset({"qmgr", "smtp", "cleanup"})):
        if join.see(line) is None and line.queue_id and "orig_id=" in line.text and len(links) < MAX_LINKS:
            m = _ORIG_ID.search(line.text)
            if m and m["id"] != line.queue_id:
                links[line.queue_id] = m["id"]
    return {qid: act.Origin(s.addr, s.host, s.login) for qid, s in join.origins.items()}


def first_id(qid: str, links: dict[str, str]) -> str:
    """The first queue id of a chain of requeues (postsuper -r, then pickup's orig_id=)."""
    seen = {qid}
    while qid in links and links[qid] not in seen:
        qid = links[qid]
        seen.add(qid)
    return qid


def choose_listed(messages: list[QueuedMessage], sel: act.Selection, now: float, target: Target,
                  config_dir: str | None, since: float | None = None) -> tuple[list[QueuedMessage], list[str], list[str]]:  # fmt: skip
    """select() with the log joined when --sasl-user/--client ask for it: (chosen, missing
    --id values, notes)."""
    if not sel.needs_log:
        chosen, missing = act.select(messages, sel, cause_of, now=now)
        return chosen, missing, []
    plain = act.Selection(**{**sel.__dict__, "sasl_user": None, "client": None})
    first, _ = act.select(messages, plain, cause_of, now=now)
    found, note = origins(target, config_dir, first, now, since)
    chosen, missing = act.select(first, sel, cause_of, now=now, origins=found)
    return chosen, missing, [note]


def multi_recipient_warning(sel: act.Selection, chosen: list[QueuedMessage]) -> str | None:
    """Selected by recipient or domain, these messages also go to other recipients: an action acts on whole messages."""
    if not sel.by_recipient:
        return None
    mixed = [m for m in chosen if not all(sel.recipient_matches(r.address) for r in m.recipients)]
    if not mixed:
        return None
    others = sum(1 for m in mixed for r in m.recipients if not sel.recipient_matches(r.address))
    ids = ", ".join(m.queue_id for m in mixed[:5]) + (" ..." if len(mixed) > 5 else "")
    return (f"{len(mixed)} of the {len(chosen)} selected message(s) also have {others} other recipient(s) "
            f"({ids}): an action acts on whole messages, so those recipients are affected too")  # fmt: skip


def counts(messages: list[QueuedMessage], cause: Callable[[str], str] = cause_of) -> dict[str, dict[str, int]]:
    """Messages per cause (of any deferred recipient) and per recipient domain, most first."""
    by_cause: Counter[str] = Counter()
    by_domain: Counter[str] = Counter()
    for m in messages:
        by_cause.update({cause(r.delay_reason) if r.delay_reason else "no-reason" for r in m.recipients} or {"no-reason"})
        by_domain.update({domain_of(r.address) for r in m.recipients})
    return {"by_cause": dict(by_cause.most_common()), "by_domain": dict(by_domain.most_common())}


def check(action: str, sel: act.Selection, *, yes: bool, dry_run: bool) -> None:
    """The selectors and flags make sense for the action (UsageError otherwise), before
    anything touches the target: every --id is a valid queue id."""
    for qid in sel.ids:
        act.select([], act.Selection(ids=[qid]), cause_of)
    if sel.older_than is not None and sel.younger_than is not None and sel.younger_than <= sel.older_than:
        raise UsageError("--younger-than must be more than --older-than: no message can match both")
    if sel.min_size is not None and sel.max_size is not None and sel.max_size < sel.min_size:
        raise UsageError("--max-size is below --min-size: no message can match both")
    if not action:  # the report: any selectors, or none
        pass
    elif action == "flush":
        if not sel.empty:
            raise UsageError("flush takes no selectors: it retries every queued message (use retry --id/--domain instead)")
    elif sel.empty:
        raise UsageError(f"{action}: say which messages (--id, --sender, --recipient, --cause, --domain, --older-than, "
                         "--reason, ... or --all-deferred; see --help)")
    if yes and dry_run:
        raise UsageError("--yes and --dry-run contradict each other")


def choose(target: Target, action: str, sel: act.Selection, config_dir: str | None, since: float | None = None
           ) -> tuple[list[QueuedMessage], list[str], list[str]]:  # fmt: skip
    """The messages the action applies to, from a listing taken now, and the --id values not
    found (said on stderr when others were), and notes (the log read for --client/--sasl-user). Only on a live local Postfix that is running;
    nothing chosen is an InputError: nothing was changed."""
    if not target.can_change:
        raise UsageError(f"queue actions change a live Postfix: they cannot run on {target.where}")
    cfg = read_config(target, config_dir)
    act.ensure_running(target, config_dir, cfg.daemon_directory)
    read = read_queue(target, config_dir)
    if action == "flush":
        return list(read.messages), [], []
    chosen, missing, notes = choose_listed(list(read.messages), sel, read.taken_at, target, config_dir, since)
    if missing and chosen:
        print(visible(f"pfdiag: not found in the queue (delivered, expired or removed?): {', '.join(missing)}"), file=sys.stderr)
    if not chosen:
        for n in notes:
            print(visible(f"pfdiag: {n}"), file=sys.stderr)
        if missing and len(missing) == len(sel.ids):
            raise InputError(f"queue id(s) not found: {', '.join(missing)}; nothing was changed")
        raise InputError(f"{action}: no queued message matches the selectors; nothing was changed")
    return chosen, missing, notes


def failure(action: str, result: act.Result, log_path: str) -> str | None:
    """What went wrong in an executed plan, as the one-line error the command exits with."""
    if result.skipped:
        return f"not deleted because the backup failed: {', '.join(result.skipped)}"
    if result.not_found:
        return f"{action}: some messages were not found when the command ran ({', '.join(result.not_found)})"
    if result.not_run:
        return f"{action}: stopped before reaching {', '.join(result.not_run)} (see {log_path})"
    if not result.ok:
        return f"{action}: a command failed (see above and {log_path})"
    return None


def render_plan(plan: act.Plan, width: int = act.PLAN_WIDTH) -> str:
    spec = act.SPECS[plan.action]
    lines = [f"pfdiag queue {plan.action}: {spec.help}"]
    if plan.action != "flush":
        c = counts(plan.messages)
        lines.append(f"{len(plan.messages)} message(s); by cause: " + ", ".join(f"{k} {n}" for k, n in c["by_cause"].items()))
        shown = list(c["by_domain"].items())
        lines.append("  by recipient domain: " + ", ".join(f"{k} {n}" for k, n in shown[:10])
                     + (f" (+{len(shown) - 10} more)" if len(shown) > 10 else ""))  # fmt: skip
        for m in plan.messages[:PLAN_SHOWN]:
            rc = ", ".join(r.address for r in m.recipients[:3]) + (" ..." if len(m.recipients) > 3 else "")
            lines.append(f"  {m.queue_id:<17} {m.queue_name:<9} {m.sender or '<>'} -> {rc}")
        if len(plan.messages) > PLAN_SHOWN:
            lines.append(f"  ... {len(plan.messages) - PLAN_SHOWN} more")
    else:
        lines.append(f"{len(plan.messages)} queued message(s) will be tried at once")
    if plan.backup_dir:
        lines.append(f"backup first (postcat -q), into {plan.backup_dir}; an id that cannot be saved is not deleted")
    lines.append("commands:")
    lines += [f"  {' '.join(c)}" for c in plan.commands]
    lines += [f"warning: {w}" for w in plan.warnings]
    # senders and recipients are outside text (textsafe); long items wrap with a hanging indent
    return "\n".join(act.plan_lines(map(visible, lines), width)) + "\n"


def render_result(result: act.Result, plan: act.Plan, log_path: str) -> str:
    lines = [f"  {'ok ' if o.ok else 'FAIL'} {' '.join(o.argv)}: {o.detail}" for o in result.outcomes]
    if result.saved:
        lines.append(f"backups: {len(result.saved)} message(s) in {plan.backup_dir}")
    lines.append(f"logged to {log_path}")
    return "\n".join(map(visible, lines)) + "\n"


def plan_dict(plan: act.Plan, result: act.Result | None, *, dry: bool) -> dict[str, Any]:
    return {
        "schema": "pfdiag.queue-action/1", "action": plan.action, "dry_run": dry,
        "ids": [m.queue_id for m in plan.messages], "commands": plan.commands, "backup_dir": plan.backup_dir,
        "warnings": plan.warnings, "counts": counts(plan.messages) if plan.action != "flush" else None,
        "result": None if result is None else {
            "ok": result.ok, "saved": result.saved, "not_found": result.not_found, "skipped": result.skipped,
            "not_run": result.not_run,
            "outcomes": [{"argv": o.argv, "ok": o.ok, "detail": o.detail} for o in result.outcomes],
        },
    }  # fmt: skip


# -- the listing's text (pfdiag queue without an action)

OTHER_SHOWN = 50  # held and active messages listed with their fate in the text


def other_fates(report: dict[str, Any]) -> list[str]:
    """The held, active, incoming and maildrop messages with their fate (diagnose/fate.py's
    phrase, which the report entry carries): the deferred ones have their own table."""
    rows = [m for m in report.get("messages") or [] if m and m.get("queue_name") != "deferred" and m.get("fate")]
    if not rows:
        return []
    rows.sort(key=lambda m: (m["queue_name"] != "hold", -m["age_seconds"]))  # held first, oldest first
    total = report.get("others_total", len(rows))  # a summary (ReportBuilder(shown=...)) holds the first rows only
    out = ["", "Held and active messages: what happens to them"]
    out.append(f"  {'queue id':<17} {'queue':<9} {'age':>7}  {'sender':<30} fate")
    for m in rows[:OTHER_SHOWN]:
        causes = ",".join(dict.fromkeys(r["cause_id"] for r in m["recipients"] if r.get("cause_id")))
        why = f" (last deferred: {causes})" if causes else ""
        out.append(f"  {m['queue_id']:<17} {m['queue_name']:<9} {human(m['age_seconds']):>7}  {m['sender'] or '<>':<30} "
                   f"{m['fate']}{why}")  # fmt: skip
    if total > OTHER_SHOWN:
        out.append(f"  ... {total - OTHER_SHOWN} more (--format json lists all)")
    return [visible(line) for line in out]  # senders are outside text (textsafe)


def with_other_fates(text: str, report: dict[str, Any]) -> str:
    """render_text()'s listing with other_fates() after the deferred messages, before the notes."""
    extra = other_fates(report)
    if not extra:
        return text
    lines = text.rstrip("\n").split("\n")
    notes = len(lines)
    while notes > 0 and lines[notes - 1].startswith("note: "):
        notes -= 1
    if notes < len(lines) and notes > 0 and lines[notes - 1] == "":
        notes -= 1
    return "\n".join(lines[:notes] + extra + lines[notes:]) + "\n"
