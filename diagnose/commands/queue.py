"""pfdiag queue: what is in the mail queue, why, and when it will be tried again; and the
guarded queue actions (hold, release, requeue, retry, expire, delete, flush)."""

from __future__ import annotations

ORDER = 20  # place in pfdiag --help

import argparse
import io
import json
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, TextIO

from checks import places
from checks.config import ConfigReport, read_config
from checks.errors import InputError, PfdiagError, UsageError
from checks.postfix.postqueue import QUEUE_NAMES
from checks.postfix.retry import DEFAULTS, RetrySettings
from checks.postfix.postqueue import QueuedMessage
from checks.queue import (
    AgeTally,
    Forecaster,
    GroupTally,
    Matrix,
    QueueRead,
    counts_of,
    domain_of,
    listing_time,
    QueueFiles,
    read_queue,
)
from checks.targets import LocalTarget, Target
from diagnose import actions as act
from diagnose.target_options import add_target_options, open_target
from diagnose.textsafe import md_code, md_text, visible, visible_lines

if TYPE_CHECKING:
    from concurrent.futures import Future

SCHEMA = "pfdiag.queue/1"
COMPACT_ABOVE = 1000  # messages; a bigger report is written as compact JSON
# no cycle check: the report is built here, acyclic, and the check costs a dict insert per container
_ENCODE = json.JSONEncoder(ensure_ascii=False, check_circular=False).encode


def _entry_encoder() -> Callable[[Any], str]:
    """_ENCODE for one message entry at a time: the C encoder made once, not per call."""
    from json import encoder

    if encoder.c_make_encoder is None:  # a Python without the _json accelerator
        return _ENCODE
    # the arguments JSONEncoder(ensure_ascii=False, check_circular=False).iterencode passes
    chunks = encoder.c_make_encoder(None, _ENCODE.__self__.default, encoder.encode_basestring, None, ": ", ", ",
                                    False, False, True)  # fmt: skip
    return lambda o: "".join(chunks(o, 0))
HELP = """\
Lists the Postfix queue: messages per queue, a qshape-style age x domain table,
deferred recipients grouped by cause and destination, the oldest message, and per
deferred message when it is tried next and when it is returned to its sender.

Actions change the queue. They show the exact messages and commands first and run
nothing without a "yes" on a terminal or --yes (without a terminal: a dry run).
Prefer the gentle ones:
  hold     before delete   (held mail is kept and can be released)
  retry    before flush    (postqueue -i ID tries one message; -f forgets dead sites)

examples:
  pfdiag queue                                     the report
  pfdiag queue --format json                       (schema: docs/queue-json.md)
  pfdiag queue hold --cause E09                    hold everything deferred for one cause
  pfdiag queue retry --domain example.com --yes    try one destination's mail now
  pfdiag queue delete --id 2984816E715             delete, after a postcat backup
"""


def cause_of(reason: str) -> str:
    from diagnose.classify import classify

    return classify(reason).cause_id


def cause_title(cause_id: str) -> str:
    from diagnose.causes import get_cause

    if cause_id == "no-reason":
        return "No reason recorded yet"
    try:
        return get_cause(cause_id).title
    except KeyError:
        return cause_id


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("queue", help="the mail queue: shape, causes, forecasts; safe queue actions",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("action", nargs="?", choices=(*act.SPECS, *act.MORE), metavar="ACTION",
                   help="hold | release | requeue | retry | expire | delete | flush (none: report); "
                        "restore BACKUP_DIR: send deleted mail again; log: the action log's runs")  # fmt: skip
    p.add_argument("path", nargs="?", metavar="BACKUP_DIR", help="restore: a backup directory of delete")
    p.add_argument("--by", choices=("recipient", "sender"), default="recipient", help="domains of the age table")
    p.add_argument("--shape-queues", default="all", metavar="Q,Q",
                   help="queues in the age table (default all; qshape's own default is incoming,active)")
    p.add_argument("--top", type=int, default=20, metavar="N", help="domains shown in the age table (default 20)")
    p.add_argument("-f", "--format", choices=("text", "md", "json"), default="text")
    p.add_argument("-c", "--config-dir", metavar="DIR", help="Postfix configuration directory (postqueue -c DIR)")
    g = p.add_argument_group("selecting messages for an action (all given must match)")
    g.add_argument("--id", action="append", default=[], metavar="ID", help="a queue id (repeatable)")
    g.add_argument("--cause", metavar="EXX", help="deferred for this cause (e.g. E09)")
    g.add_argument("--domain", metavar="DOMAIN", help="a recipient in this domain (or a subdomain)")
    g.add_argument("--queue", choices=QUEUE_NAMES, help="messages in this queue")
    g.add_argument("--all-deferred", action="store_true", help="every deferred message")
    g = p.add_argument_group("running an action")
    g.add_argument("--dry-run", action="store_true", help="show what would run, change nothing")
    g.add_argument("--yes", action="store_true", help="run without asking")
    g.add_argument("--backup-dir", metavar="DIR", help=f"delete: where postcat copies go (default {places.backup_dir()}/<time>/)")
    g.add_argument("--action-log", metavar="FILE", default=places.action_log(), help="JSON-lines log of what ran (default %(default)s)")
    add_target_options(p)
    p.set_defaults(func=run)


def _config(target: Target, config_dir: str | None, notes: list[str]) -> tuple[RetrySettings, ConfigReport | None]:
    try:
        report = read_config(target, config_dir)
        return report.settings, report
    except PfdiagError as exc:
        notes.append(f"retry settings not readable ({exc}): forecasts use Postfix's defaults")
        return DEFAULTS, None


def run(args: argparse.Namespace) -> int:
    if args.top < 1:
        raise UsageError("--top must be at least 1")
    target, notice = open_target(args)
    if notice and args.format != "json":
        print(visible_lines(notice), file=sys.stderr)
    if args.path and args.action != "restore":
        raise UsageError(f"unexpected argument {args.path!r} (only restore takes a directory)")
    if args.action in act.MORE:
        return act.run_more(args, target)
    if args.action:
        return run_action(args, target)
    act.warn_interrupted(args.action_log)
    sel = act.Selection(args.id, args.cause, args.domain, args.queue, args.all_deferred)
    if not sel.empty or args.yes or args.dry_run:
        raise UsageError("selectors, --yes and --dry-run go with an action: pfdiag queue hold --id ID (see --help)")
    # Some 10 containers per message, none in a cycle: the collector would only walk them
    # again and again while the report grows (a few % of the run on a big queue).
    import gc

    # Until the report is written: re-enabled earlier, it would walk all of it once more.
    gc.disable()
    try:
        report, builder = _report(args, target)
        if args.format == "json":
            builder.write_json(report, sys.stdout)
            sys.stdout.write("\n")
        elif args.format == "md":
            sys.stdout.write(render_md(report))
        else:
            sys.stdout.write(render_text(report))
    finally:
        gc.enable()
    return 0


def _config_and_state(target: Target, config_dir: str | None, notes: list[str]) -> tuple[RetrySettings, ConfigReport | None, bool]:
    """_config() and whether a local Postfix is down (master -t), off the main thread.
    The classifier is loaded here first: its ~30 ms import then fills the moments the main
    thread waits for postqueue's first lines instead of holding up the first message."""
    import importlib

    importlib.import_module("diagnose.classify")
    settings, cfg = _config(target, config_dir, notes)
    down = False
    if cfg is not None and isinstance(target, LocalTarget):
        try:  # root's postqueue reads the queue even when Postfix is down: say so
            act.ensure_running(target, config_dir, cfg.daemon_directory)
        except InputError:
            down = True
    return settings, cfg, down


def _report(args: argparse.Namespace, target: Target) -> tuple[dict[str, Any], ReportBuilder]:
    # postqueue and the postconf/master runs wait on Postfix, not on us: ask at the same time,
    # and build the report from each message as postqueue lists it
    from concurrent.futures import ThreadPoolExecutor

    notes: list[str] = []
    shape = None if args.shape_queues == "all" else [q.strip() for q in args.shape_queues.split(",") if q.strip()]
    now = listing_time(target)
    builder = ReportBuilder(now, by=args.by, top=args.top, shape_queues=shape, encode=args.format == "json")
    with ThreadPoolExecutor(1) as pool:
        config_job = pool.submit(_config_and_state, target, args.config_dir, notes)
        builder.configure_when_done(config_job, target)
        read = read_queue(target, args.config_dir, now=now, on_message=builder.add)
        settings, cfg, down = config_job.result()
    read.notes.extend(notes)
    if down:
        read.notes.insert(0, "Postfix is NOT running (master -t): nothing is delivered or retried until `postfix start`")
    return builder.finish(read, settings, target, cfg.queue_directory if cfg else None), builder


# ------------------------------------------------------------------ the report model


def _iso(t: float | None) -> str | None:
    return None if t is None else time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t))


def build_report(read: QueueRead, settings: RetrySettings, target: Target, queue_directory: str | None, *,
                 by: str = "recipient", top: int = 20, shape_queues: list[str] | None = None) -> dict[str, Any]:  # fmt: skip
    builder = ReportBuilder(read.taken_at, by=by, top=top, shape_queues=shape_queues)
    for m in read.messages:
        builder.add(m)
    return builder.finish(read, settings, target, queue_directory)


class ReportBuilder:
    """build_report() one message at a time: `pfdiag queue` hands it each message while
    postqueue is still listing (read_queue's on_message), so the per-message work overlaps
    postqueue's. Forecasts need the retry settings and the queue directory: until
    configure() gives them (postconf runs at the same time) deferred messages wait, and
    finish() forecasts whatever still waits."""

    def __init__(self, now: float, *, by: str = "recipient", top: int = 20, shape_queues: list[str] | None = None,
                 encode: bool = False) -> None:  # fmt: skip
        """encode: the report will be written as JSON (write_json): a big queue's message
        entries are encoded as they complete, while postqueue still lists."""
        self.now, self.top, self.shape_queues = now, top, shape_queues
        self.ages = AgeTally(now, by=by, queues=shape_queues)
        self.causes = GroupTally(cause_of)
        self.queues: dict[str, int] = {}
        self.recipients = 0
        self.oldest: QueuedMessage | None = None
        self.entries: list[dict[str, Any]] = []
        self.texts: list[str | None] | None = [] if encode else None  # entries as compact JSON, when encoding
        self._encode_entry = _entry_encoder() if encode else _ENCODE
        self._crossed = False  # past COMPACT_ABOVE entries: encoding as they complete
        self.waiting: list[tuple[QueuedMessage, int]] = []  # deferred entries not forecast yet
        self.sources: set[str] = set()  # mtime_source values used
        self._forecaster: Forecaster | None = None
        self._target: Target | None = None
        self._files: QueueFiles | None = None
        self._pending: Future[tuple[Any, ...]] | None = None  # (settings, ConfigReport | None, ...)

    def configure(self, settings: RetrySettings, target: Target, queue_directory: str | None) -> None:
        """From now on forecast deferred messages as they come; the waiting ones first."""
        self._forecaster = Forecaster(self.now, settings)
        self._target, self._files = target, QueueFiles(target, queue_directory)
        waiting, self.waiting = self.waiting, []
        for m, i in waiting:
            self._forecast(m, self.entries[i])
            self._encode(i)

    def _encode(self, i: int) -> None:
        # only past COMPACT_ABOVE: smaller reports are indented; finish() encodes stragglers
        texts = self.texts
        if texts is None or len(self.entries) <= COMPACT_ABOVE:
            return
        if not self._crossed:  # the first time past the mark: every complete entry so far (i among them)
            self._crossed = True
            for j, e in enumerate(self.entries):
                if texts[j] is None and (e["forecast"] is not None or e["queue_name"] != "deferred"):
                    texts[j] = self._encode_entry(e)
            return
        texts[i] = self._encode_entry(self.entries[i])

    def configure_when_done(self, job: Future[tuple[Any, ...]], target: Target) -> None:
        """configure() from the configuration job as soon as it has finished (checked per message)."""
        self._pending, self._target = job, target

    def _forecast(self, m: QueuedMessage, entry: dict[str, Any]) -> None:
        assert self._forecaster is not None and self._files is not None
        source, earliest, latest, expires, expires_latest, lifetime, remaining, overdue, expiring = (
            self._forecaster.row(m, self._files.mtime(m)))
        self.sources.add(source)
        entry["forecast"] = {
            "mtime_source": source, "next_attempt_earliest": round(earliest), "next_attempt_latest": round(latest),
            "expires_at": round(expires), "expires_at_latest": round(expires_latest),
            "lifetime_ends": round(lifetime), "remaining_attempts": list(remaining),
            "overdue": overdue, "expiring": expiring,
        }  # fmt: skip

    def add(self, m: QueuedMessage) -> None:
        domains = [domain_of(r.address) for r in m.recipients]  # once for both tallies
        self.ages.add(m, domains)
        self.causes.add(m, domains)
        q = m.queue_name
        self.queues[q] = self.queues.get(q, 0) + 1
        self.recipients += len(m.recipients)
        if self.oldest is None or m.arrival_time < self.oldest.arrival_time:
            self.oldest = m
        cause = self.causes.cause
        entry: dict[str, Any] = {
            "queue_id": m.queue_id, "queue_name": q, "arrival_time": m.arrival_time,
            "age_seconds": round(self.now - m.arrival_time, 1), "size": m.size, "sender": m.sender,
            "forced_expire": m.forced_expire,
            "recipients": [{"address": r.address, "delay_reason": r.delay_reason, "cause_id": cause(r.delay_reason)}
                           for r in m.recipients],
            "forecast": None,
        }  # fmt: skip
        self.entries.append(entry)
        if self.texts is not None:
            self.texts.append(None)
        if q != "deferred":
            self._encode(len(self.entries) - 1)
            return
        if self._forecaster is None and self._pending is not None and self._pending.done():
            settings, cfg = self._pending.result()[:2]
            self._pending = None
            self.configure(settings, self._target, cfg.queue_directory if cfg else None)  # type: ignore[arg-type]
        if self._forecaster is not None:
            self._forecast(m, entry)
            self._encode(len(self.entries) - 1)
        else:
            self.waiting.append((m, len(self.entries) - 1))

    def finish(self, read: QueueRead, settings: RetrySettings, target: Target, queue_directory: str | None) -> dict[str, Any]:
        """The report. settings and queue_directory are the ones configure() was given, if it was."""
        now = self.now
        if self._forecaster is None:
            self.configure(settings, target, queue_directory)
        sources = self.sources
        # by arrival; sorted() is stable: listing order among equals
        if self.texts is None:
            self.entries.sort(key=lambda e: e["arrival_time"])
        else:
            entries, texts = self.entries, self.texts
            order = sorted(range(len(entries)), key=lambda i: entries[i]["arrival_time"])
            self.entries = [entries[i] for i in order]
            self.texts = [texts[i] or self._encode_entry(entries[i]) for i in order]
        notes = list(read.notes)
        if "assumed" in sources:
            notes.append("next-attempt times marked 'assumed': the queue file's mtime could not be read, so the "
                         "last attempt is assumed to have ended just now (the latest possible next attempt; the "
                         "earliest is now)")  # fmt: skip
        oldest = self.oldest
        return {
            "schema": SCHEMA,
            "generated_at": _iso(now),
            "now": round(now, 3),
            "where": target.where,
            "source": read.source,
            "counts": counts_of(self.queues),
            "total_messages": len(self.entries),
            "total_recipients": self.recipients,
            "matrix": _matrix_dict(self.ages.matrix(self.top), self.shape_queues),
            "groups": [{
                "cause_id": g.cause_id, "cause_title": cause_title(g.cause_id), "domain": g.domain,
                "recipients": g.recipients, "messages": sorted(g.messages), "example_reason": g.example,
                "oldest_arrival": g.oldest_arrival,
            } for g in self.causes.groups()],  # fmt: skip
            "oldest": None if oldest is None else {
                "queue_id": oldest.queue_id, "queue_name": oldest.queue_name, "arrival_time": oldest.arrival_time,
                "age_seconds": round(now - oldest.arrival_time, 1), "sender": oldest.sender,
            },  # fmt: skip
            "settings": {k: getattr(settings, k) for k in settings.__dataclass_fields__},
            "messages": self.entries,
            "notes": notes,
        }

    def json_text(self, report: dict[str, Any]) -> str:
        """write_json() as one string."""
        out = io.StringIO()
        self.write_json(report, out)
        return out.getvalue()

    def write_json(self, report: dict[str, Any], out: TextIO) -> None:
        """The report as JSON: indented for people; a big queue compact, which the C encoder
        writes ~5x faster, from the entries encoded during the listing, written in pieces
        (one 7 MB string for 10,000 messages costs more in page faults than the writes):
        the same text as json.dumps(report)."""
        if len(report["messages"]) <= COMPACT_ABOVE:
            out.write(json.dumps(report, indent=2, ensure_ascii=False))
            return
        texts = self.texts
        if texts is None or report["messages"] is not self.entries:
            out.write(json.dumps(report, ensure_ascii=False))
            return
        out.write("{")
        for n, (k, v) in enumerate(report.items()):
            out.write(f"{', ' if n else ''}{_ENCODE(k)}: ")
            if k != "messages":
                out.write(_ENCODE(v))
                continue
            out.write("[")
            for at in range(0, len(texts), 256):
                out.write(("" if at == 0 else ", ") + ", ".join(texts[at : at + 256]))  # type: ignore[arg-type]  # finish() filled every slot
            out.write("]")
        out.write("}")


def _matrix_dict(m: Matrix, queues: list[str] | None) -> dict[str, Any]:
    return {
        "by": m.by, "queues": queues or "all", "unit": "minutes", "headings": ["T", *m.headings],
        "rows": [{"domain": d, "total": t, "buckets": b} for d, t, b in m.rows], "hidden_domains": m.hidden,
    }  # fmt: skip


# ------------------------------------------------------------------ rendering


def human(seconds: float) -> str:
    s = int(abs(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def _when(t: float, now: float) -> str:
    d = t - now
    return "now" if abs(d) < 1 else (f"in {human(d)}" if d > 0 else f"{human(d)} ago")


def _matrix_lines(mx: dict[str, Any]) -> list[str]:
    heads = mx["headings"]
    rows = [[r["domain"], r["total"], *r["buckets"]] for r in mx["rows"]]
    dw = max([len(str(r[0])) for r in rows] + [6])
    widths = [max(len(str(h)), *(len(str(r[i + 1])) for r in rows)) + 1 for i, h in enumerate(heads)]
    lines = [" " * dw + "".join(f"{h:>{w}}" for h, w in zip(heads, widths))]
    for r in rows:
        lines.append(f"{r[0]:>{dw}}" + "".join(f"{v:>{w}}" for v, w in zip(r[1:], widths)))
    return lines


def render_text(rep: dict[str, Any]) -> str:
    now = rep["now"]
    out = [f"Mail queue ({rep['source']}, {rep['where']}, {rep['generated_at']}): "
           f"{rep['total_messages']} message(s), {rep['total_recipients']} recipient(s)"]  # fmt: skip
    out.append("  " + "  ".join(f"{q} {n}" for q, n in rep["counts"].items()))
    if not rep["total_messages"]:
        out.append("")
        out.append("The queue is empty.")
        out += [f"note: {n}" for n in rep["notes"]]
        return "\n".join(map(visible, out)) + "\n"
    mx = rep["matrix"]
    qs = "all queues" if mx["queues"] == "all" else ", ".join(mx["queues"])
    out += ["", f"Age x {mx['by']} domain ({qs}; qshape buckets: count younger than N minutes)"]
    out += ["  " + ln for ln in _matrix_lines(mx)]
    if mx["hidden_domains"]:
        out.append(f"  ... {mx['hidden_domains']} more domain(s) (--top)")
    if rep["groups"]:
        out += ["", "Deferred recipients by cause and destination"]
        for g in rep["groups"]:
            out.append(f"  {g['cause_id']:<12} {g['cause_title']}")
            out.append(f"  {'':<12} {g['domain']}: {g['recipients']} recipient(s) in {len(g['messages'])} message(s), "
                       f"oldest {human(now - g['oldest_arrival'])}")  # fmt: skip
            if g["example_reason"]:
                out.append(f"  {'':<12} ({g['example_reason'][:160]})")
    o = rep["oldest"]
    if o:
        out += ["", f"Oldest: {o['queue_id']} ({o['queue_name']}) from {o['sender'] or '<>'}, "
                    f"{human(o['age_seconds'])} old"]  # fmt: skip
    deferred = [m for m in rep["messages"] if m["forecast"]]
    if deferred:
        s = rep["settings"]
        out += ["", f"Deferred messages: next attempt and return to sender (if every attempt fails; "
                    f"backoff {s['minimal_backoff_time']:g}-{s['maximal_backoff_time']:g}s, scan "
                    f"{s['queue_run_delay']:g}s, lifetime {human(s['maximal_queue_lifetime'])})"]  # fmt: skip
        out.append(f"  {'queue id':<17} {'age':>7}  {'next attempt':<22} {'returned':<13} cause")
        for m in deferred[:50]:
            f = m["forecast"]
            nxt = f"{_when(f['next_attempt_earliest'], now)}..{_when(f['next_attempt_latest'], now).removeprefix('in ')}"
            if f["mtime_source"] == "assumed":
                nxt += "*"
            causes = ",".join(dict.fromkeys(r["cause_id"] or "-" for r in m["recipients"]))
            out.append(f"  {m['queue_id']:<17} {human(m['age_seconds']):>7}  {nxt:<22} "
                       f"{_when(f['expires_at'], now):<13} {causes}")  # fmt: skip
        if len(deferred) > 50:
            out.append(f"  ... {len(deferred) - 50} more (--format json lists all)")
    out += [""] + [f"note: {n}" for n in rep["notes"]] if rep["notes"] else []
    return "\n".join(map(visible, out)) + "\n"  # senders, domains, reasons: control characters written out (textsafe)


def render_md(rep: dict[str, Any]) -> str:
    now = rep["now"]
    out = [f"# Mail queue ({md_text(rep['where'])})", "",  # outside text escaped or in code spans (textsafe)
           f"{rep['total_messages']} message(s), {rep['total_recipients']} recipient(s); source {md_code(rep['source'])}, "
           f"{md_text(rep['generated_at'])}.", "", "| queue | messages |", "|---|---:|"]  # fmt: skip
    out += [f"| {q} | {n} |" for q, n in rep["counts"].items()]
    mx = rep["matrix"]
    if rep["total_messages"]:
        out += ["", f"## Age x {mx['by']} domain (minutes)", "",
                "| domain | " + " | ".join(mx["headings"]) + " |", "|---" + "|---:" * len(mx["headings"]) + "|"]  # fmt: skip
        out += [f"| {md_code(r['domain'], table=True)} | {r['total']} | " + " | ".join(map(str, r["buckets"])) + " |" for r in mx["rows"]]
    if rep["groups"]:
        out += ["", "## Deferred recipients by cause and destination", "",
                "| cause | destination | recipients | messages | example reason |", "|---|---|---:|---:|---|"]  # fmt: skip
        for g in rep["groups"]:
            reason = md_text(g["example_reason"][:160])
            out.append(f"| {md_text(g['cause_id'])} {md_text(g['cause_title'])} | {md_code(g['domain'], table=True)} | {g['recipients']} | "
                       f"{len(g['messages'])} | {reason} |")  # fmt: skip
    deferred = [m for m in rep["messages"] if m["forecast"]]
    if deferred:
        out += ["", "## Deferred messages", "", "| queue id | age | next attempt | returned to sender | mtime |",
                "|---|---:|---|---|---|"]  # fmt: skip
        for m in deferred:
            f = m["forecast"]
            out.append(f"| {md_text(m['queue_id'])} | {human(m['age_seconds'])} | {_when(f['next_attempt_earliest'], now)} .. "
                       f"{_when(f['next_attempt_latest'], now)} | {_when(f['expires_at'], now)} | {f['mtime_source']} |")  # fmt: skip
    if rep["notes"]:
        out += [""] + [f"- {md_text(n)}" for n in rep["notes"]]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------ actions


def run_action(args: argparse.Namespace, target: Target) -> int:
    action = args.action
    sel = act.Selection(args.id, args.cause, args.domain, args.queue, args.all_deferred)
    for qid in sel.ids:  # before anything touches the target
        act.select([], act.Selection(ids=[qid]), cause_of)
    if action == "flush":
        if not sel.empty:
            raise UsageError("flush takes no selectors: it retries every queued message (use retry --id/--domain instead)")
    elif sel.empty:
        raise UsageError(f"{action}: say which messages (--id, --cause, --domain, --queue or --all-deferred)")
    if args.yes and args.dry_run:
        raise UsageError("--yes and --dry-run contradict each other")
    if not isinstance(target, LocalTarget):
        raise UsageError("queue actions change a live Postfix: they cannot run on a snapshot")
    acks = act.warn_interrupted(args.action_log)
    act.check_writable(args.action_log)
    cfg = read_config(target, args.config_dir)
    act.ensure_running(target, args.config_dir, cfg.daemon_directory)
    read = read_queue(target, args.config_dir)
    if action == "flush":
        chosen, missing = list(read.messages), []
    else:
        chosen, missing = act.select(read.messages, sel, cause_of)
    if missing and chosen:
        print(visible(f"pfdiag: not found in the queue (delivered, expired or removed?): {', '.join(missing)}"), file=sys.stderr)
    if not chosen and action != "flush":
        if missing and len(missing) == len(sel.ids):
            raise InputError(f"queue id(s) not found: {', '.join(missing)}; nothing was changed")
        raise InputError(f"{action}: no queued message matches the selectors; nothing was changed")
    backup = None
    if action == "delete":
        backup = args.backup_dir or act.default_backup_dir()
    plan = act.build_plan(action, chosen, args.config_dir, backup)
    interactive = sys.stdin.isatty()
    dry = args.dry_run or (not interactive and not args.yes)
    text = render_plan(plan)
    print(text, end="", file=sys.stderr if args.format == "json" else sys.stdout)
    if not act.confirm(f"Run these {len(plan.commands)} command(s)?", yes=args.yes, dry_run=dry, interactive=interactive):
        why = "dry run" if args.dry_run else ("no terminal to confirm on and no --yes" if not interactive else "not confirmed")
        print(f"nothing was changed ({why})", file=sys.stderr if args.format == "json" else sys.stdout)
        if args.format == "json":
            print(json.dumps(_plan_dict(plan, None, dry=True), indent=2))
        return 0
    log = act.ActionLog(args.action_log)
    try:
        result = act.execute(target, plan, args.config_dir, log, acks)
    finally:
        log.close()
    if args.format == "json":
        print(json.dumps(_plan_dict(plan, result, dry=False), indent=2))
    else:
        for o in result.outcomes:
            print(visible(f"  {'ok ' if o.ok else 'FAIL'} {' '.join(o.argv)}: {o.detail}"))
        if result.saved:
            print(f"backups: {len(result.saved)} message(s) in {plan.backup_dir}")
        print(f"logged to {args.action_log}")
    if result.skipped:
        raise InputError(f"not deleted because the backup failed: {', '.join(result.skipped)}")
    if result.not_found:
        raise InputError(f"{action}: some messages were not found when the command ran ({', '.join(result.not_found)})")
    if result.not_run:
        raise InputError(f"{action}: stopped before reaching {', '.join(result.not_run)} (see {args.action_log})")
    if not result.ok:
        raise InputError(f"{action}: a command failed (see above and {args.action_log})")
    return 0


def render_plan(plan: act.Plan) -> str:
    spec = act.SPECS[plan.action]
    lines = [f"pfdiag queue {plan.action}: {spec.help}"]
    if plan.action != "flush":
        lines.append(f"{len(plan.messages)} message(s):")
        for m in plan.messages[:200]:
            rc = ", ".join(r.address for r in m.recipients[:3]) + (" ..." if len(m.recipients) > 3 else "")
            lines.append(f"  {m.queue_id:<17} {m.queue_name:<9} {m.sender or '<>'} -> {rc}")
        if len(plan.messages) > 200:
            lines.append(f"  ... {len(plan.messages) - 200} more")
    else:
        lines.append(f"{len(plan.messages)} queued message(s) will be tried at once")
    if plan.backup_dir:
        lines.append(f"backup first (postcat -q), into {plan.backup_dir}; an id that cannot be saved is not deleted")
    lines.append("commands:")
    lines += [f"  {' '.join(c)}" for c in plan.commands]
    lines += [f"warning: {w}" for w in plan.warnings]
    return "\n".join(map(visible, lines)) + "\n"  # senders and recipients are outside text (textsafe)


def _plan_dict(plan: act.Plan, result: act.Result | None, *, dry: bool) -> dict[str, Any]:
    return {
        "schema": "pfdiag.queue-action/1", "action": plan.action, "dry_run": dry,
        "ids": [m.queue_id for m in plan.messages], "commands": plan.commands, "backup_dir": plan.backup_dir,
        "warnings": plan.warnings,
        "result": None if result is None else {
            "ok": result.ok, "saved": result.saved, "not_found": result.not_found, "skipped": result.skipped,
            "not_run": result.not_run,
            "outcomes": [{"argv": o.argv, "ok": o.ok, "detail": o.detail} for o in result.outcomes],
        },
    }  # fmt: skip
