"""The queue report (`pfdiag queue`) and the queue digest a diagnosis reads (`pfdiag report`).

Both are built one message at a time while postqueue is still listing (read_queue's
on_message), with the retry settings read at the same time:

* ReportBuilder: the full report of docs/queue-json.md, an entry per message (the command
  lists them all); queue_report() runs it against a target, render_text/render_md show it.
  For text it builds only what render_text shows (shown=: counts, table, groups and the 50
  oldest entries, as qshape prints a summary), for Markdown only its table rows (md=).
* QueueDigest: what the diagnosis needs (diagnose/engine.py's queue step, diagnose/correlate.py,
  diagnose/report.py), aggregated: counts, the deferred recipients grouped by (cause, domain)
  with their queue ids, the oldest message, the first next attempt and first expiry, and the
  arrivals of the ARRIVALS oldest messages. Its memory grows with the queue ids of deferred
  mail only, never with an entry per message: a 100,000-message queue fits in a few MB.

Nothing here imports diagnose.commands: the commands are glue around it.
"""

from __future__ import annotations

import heapq
import io
import itertools
import json
import operator
import struct
import time
from json import encoder as _json_encoder
from typing import IO, TYPE_CHECKING, Any, Callable, Iterator, Sequence, TextIO

from checks.config import ConfigReport, read_config
from checks.errors import CheckSkipped, InputError, PfdiagError
from checks.postfix.postqueue import QueuedMessage, QueuedRecipient
from checks.postfix.retry import DEFAULTS, RetrySettings
from checks.queue import (
    AgeTally,
    Forecaster,
    GroupTally,
    Matrix,
    QueueFiles,
    QueueRead,
    counts_of,
    domain_of,
    listing_time,
    read_queue,
)
from checks.targets import Target
from diagnose.fate import fate, first_cause, human
from diagnose.textsafe import md_code, md_text, visible

if TYPE_CHECKING:
    from checks.runner import Batch

SCHEMA = "pfdiag.queue/1"
DIGEST_SCHEMA = "pfdiag.queue-digest/1"
COMPACT_ABOVE = 1000  # messages; a bigger report is written as compact JSON
RUN = 8192  # a big report's entries per sorted run in a temporary file (some 6 MB of JSON)
WAIT_LIMIT = 4096  # deferred entries waiting for the retry settings before the listing waits for postconf
TEXT_SHOWN = 50  # deferred messages render_text lists (the rest: "... N more")
ARRIVALS = 2000  # the digest keeps the arrivals of this many of the oldest messages (the report's timeline)
ASSUMED_NOTE = ("next-attempt times marked 'assumed': the queue file's mtime could not be read, so the last attempt "
                "is assumed to have ended just now (the latest possible next attempt; the earliest is now)")  # fmt: skip
# no cycle check: the report is built here, acyclic, and the check costs a dict insert per container
_ENCODER = json.JSONEncoder(ensure_ascii=False, check_circular=False)
_ENCODE = _ENCODER.encode


def _entry_encoder() -> Callable[[Any], str]:
    """_ENCODE for one message entry at a time: the C encoder made once, not per call."""
    make = getattr(_json_encoder, "c_make_encoder", None)
    if make is None:  # a Python without the _json accelerator
        return _ENCODE
    # the arguments JSONEncoder(ensure_ascii=False, check_circular=False).iterencode passes
    chunks = make(None, _ENCODER.default, _json_encoder.encode_basestring, None, ": ", ", ", False, False, True)
    return lambda o: "".join(chunks(o, 0))


_encode_str = _json_encoder.encode_basestring  # ensure_ascii=False's, as the encoders use: the C one when there is one


def _number(x: Any) -> str:
    """The JSON text of an int or a float as json.dumps writes it (float.__repr__; NaN and the
    infinities as it spells them); anything else through the encoder itself."""
    t = type(x)
    if t is float:
        return repr(x) if x == x and x not in (_INF, -_INF) else _ENCODE(x)
    return int.__repr__(x) if t is int else _ENCODE(x)


_INF = float("inf")


def _flag(x: Any) -> str:
    """A bool's JSON text (anything else, e.g. the 1 of `forced_expire or ...`, as the encoder writes it)."""
    return "true" if x is True else "false" if x is False else _ENCODE(x)


def cause_of(reason: str) -> str:
    """The cause of a queued recipient's delay reason. A permanent (5xx) failure that is still in
    the queue was not bounced: soft_bounce kept it (main.cf or a transport's master.cf
    -o soft_bounce=yes; postqueue does not say which), so it is E33, not E37 "bounced"."""
    from diagnose.classify import queued_cause

    return queued_cause(reason)


def cause_title(cause_id: str) -> str:
    from diagnose.causes import get_cause

    if cause_id == "no-reason":
        return "No reason recorded yet"
    try:
        return get_cause(cause_id).title
    except KeyError:
        return cause_id


# ------------------------------------------------------------------ reading, with the settings alongside


def read_settings(target: Target, config_dir: str | None, notes: list[str]) -> tuple[RetrySettings, ConfigReport | None]:
    """The retry settings (Postfix's defaults, with a note, when postconf fails)."""
    try:
        report = read_config(target, config_dir)
        return report.settings, report
    except CheckSkipped as exc:  # no configuration by design (pasted input): said as it is, not as a failure
        notes.append(f"{exc} (forecasts too)")
        return DEFAULTS, None
    except PfdiagError as exc:
        notes.append(f"retry settings not readable ({exc}): forecasts use Postfix's defaults")
        return DEFAULTS, None


def _settings_and_state(target: Target, config_dir: str | None, notes: list[str]
                        ) -> tuple[RetrySettings, ConfigReport | None, bool]:  # fmt: skip
    """read_settings() and whether a local Postfix is down (master -t), off the main thread.
    The classifier is loaded here first: its ~30 ms import then fills the moments the main
    thread waits for postqueue's first lines instead of holding up the first message."""
    import importlib

    from diagnose.actions import ensure_running

    importlib.import_module("diagnose.classify")
    settings, cfg = read_settings(target, config_dir, notes)
    down = False
    if cfg is not None and target.can_change:  # a live Postfix of this machine: is its master running?
        try:  # root's postqueue reads the queue even when Postfix is down: say so
            ensure_running(target, config_dir, cfg.daemon_directory)
        except InputError:
            down = True
    return settings, cfg, down


def queue_report(target: Target, config_dir: str | None, *, by: str = "recipient", top: int = 20,
                 shape_queues: list[str] | None = None, encode: bool = False,
                 keep: Callable[[QueuedMessage, float], bool] | None = None, said: str = "",
                 shown: int | None = None, md: bool = False) -> tuple[dict[str, Any], ReportBuilder]:  # fmt: skip
    """`pfdiag queue`'s report, and its builder. encode: a big queue's entries are kept as
    sorted runs of JSON (ReportBuilder): memory bounded, "messages" a SortedEntries that
    builder.write_json streams and render_text/render_md read once.
    postqueue and the postconf/master runs wait on Postfix, not on us: they are asked at the
    same time, and the report is built from each message as postqueue lists it.
    keep(message, now): only the messages it accepts are in the report (the selectors of
    `pfdiag queue`); `said` describes them in a note, with how many of the queued ones.
    shown: the text report's summary only (ReportBuilder's shown; render_text needs TEXT_SHOWN);
    md: the Markdown report's rows instead of entries (ReportBuilder's md)."""
    from checks.runner import start

    notes: list[str] = []
    now = listing_time(target)
    builder = ReportBuilder(now, by=by, top=top, shape_queues=shape_queues, encode=encode, shown=shown, md=md)
    config_job = start("config", lambda _deadline: _settings_and_state(target, config_dir, notes))
    builder.configure_when_done(config_job, target)
    listed, wanted = [0], keep or (lambda m, t: True)

    def add(m: QueuedMessage) -> None:
        listed[0] += 1
        if wanted(m, now):
            builder.add(m)

    read = read_queue(target, config_dir, now=now, on_message=builder.add if keep is None else add, keep=False)
    settings, cfg, down = config_job.wait()[0].unwrap()
    if keep is not None:
        notes.insert(0, f"selected messages only ({said}): {builder.count} of the {listed[0]} queued; "
                        "counts, table and groups are over these")  # fmt: skip
    read.notes.extend(notes)
    if down:
        read.notes.insert(0, "Postfix is NOT running (master -t): nothing is delivered or retried until `postfix start`")
    rep = builder.finish(read, settings, target, cfg.queue_directory if cfg else None, cfg.config if cfg else None)
    from diagnose.correlate import relocalize  # E32 only for a configured local service, as the report says

    return relocalize(rep, cfg.config if cfg else None, "queue"), builder


def collect_digest(target: Target, config_dir: str | None, config: Callable[[], Any]) -> dict[str, Any]:
    """The diagnosis's queue step: QueueDigest.finish() of the listing. ``config`` gives the
    ConfigReport (shared with the other steps, asked once): in a thread of its own, so the
    listing does not wait for postconf."""
    from checks.runner import start

    notes: list[str] = []

    def settings() -> tuple[RetrySettings, ConfigReport | None]:
        try:
            cfg = config()
            return cfg.settings, cfg
        except PfdiagError as exc:
            notes.append(f"retry settings not readable ({exc}): forecasts use Postfix's defaults")
            return DEFAULTS, None

    digest = QueueDigest(listing_time(target))
    job = start("config", lambda _deadline: settings())
    digest.configure_when_done(job, target)
    read = read_queue(target, config_dir, now=digest.now, on_message=digest.add, keep=False)
    retry, cfg = job.wait()[0].unwrap()
    read.notes.extend(notes)
    return digest.finish(read, retry, target, cfg.queue_directory if cfg else None)


# ------------------------------------------------------------------ the report model


def _oldest(m: QueuedMessage | None, now: float) -> dict[str, Any] | None:
    if m is None:
        return None
    return {"queue_id": m.queue_id, "queue_name": m.queue_name, "arrival_time": m.arrival_time,
            "age_seconds": round(now - m.arrival_time, 1), "sender": m.sender}  # fmt: skip


def _groups(tally: GroupTally) -> list[dict[str, Any]]:
    return [{"cause_id": g.cause_id, "cause_title": cause_title(g.cause_id), "domain": g.domain,
             "recipients": g.recipients, "messages": sorted(g.messages), "example_reason": g.example,
             "oldest_arrival": g.oldest_arrival} for g in tally.groups()]  # fmt: skip


def _notes(read: QueueRead, sources: set[str]) -> list[str]:
    notes = list(read.notes)
    if "assumed" in sources:
        notes.append(ASSUMED_NOTE)
    return notes


def _iso(t: float | None) -> str | None:
    return None if t is None else time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t))


def build_report(read: QueueRead, settings: RetrySettings, target: Target, queue_directory: str | None, *,
                 by: str = "recipient", top: int = 20, shape_queues: list[str] | None = None) -> dict[str, Any]:  # fmt: skip
    builder = ReportBuilder(read.taken_at, by=by, top=top, shape_queues=shape_queues)
    for m in read.messages:
        builder.add(m)
    return builder.finish(read, settings, target, queue_directory)


class SortedEntries:
    """A big queue's `messages`, oldest first (listing order among equals), without holding
    them: ReportBuilder sorts each RUN of compact JSON entries and writes it to a temporary
    file as it fills (the last run stays in memory); reading merges the runs (heapq.merge,
    one line of each at a time). Memory is one run and a line per run, whatever the queue.
    len(); iteration gives the entries as dicts (the text and Markdown renderers), texts()
    their JSON (write_json). One reader at a time: each read starts the files over. Equal to
    a list of the same entries (build_report's), which the tests compare it with."""

    def __init__(self, files: list[IO[str]], last: list[str], count: int) -> None:
        self._files, self._last, self._count = files, last, count

    def __len__(self) -> int:
        return self._count

    def _rewound(self, fh: IO[str]) -> IO[str]:
        fh.seek(0)
        return fh

    def texts(self) -> Iterator[str]:
        # the lines (_line) compare as their (arrival, listing position) keys, which are unique: the
        # merge compares strings in C, and the texts after the keys are never what decides
        return map(_text_of_line, heapq.merge(*map(self._rewound, self._files), self._last))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return map(json.loads, self.texts())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SortedEntries):
            other = list(other)
        return isinstance(other, list) and len(other) == self._count and list(self) == other

    __hash__ = None  # type: ignore[assignment]  # mutable files behind it, compared by value

    def close(self) -> None:
        for fh in self._files:
            fh.close()
        self._files, self._last = [], []


_KEY_LEN = 29  # _line()'s key: 17 hex digits of the arrival, 12 of the listing position
_text_of_line = operator.itemgetter(slice(_KEY_LEN, -1))  # a run's line -> its text: line[_KEY_LEN:-1]
_pack_double = struct.Struct(">d").pack
_unpack_u64 = struct.Struct(">Q").unpack


def _line(arrival: float, seq: int, text: str) -> str:
    """One entry of a sorted run: a key whose string order is the order of (arrival, listing
    position) - the float's big-endian bits, which sort as the numbers do when positive ("1"
    first), inverted when negative ("0" first), exact for every arrival - then the JSON text
    (no raw newline in it) and a newline."""
    arrival += 0.0  # -0.0 is 0.0, as == has it
    if arrival >= 0:
        return f"1{_pack_double(arrival).hex()}{seq:012x}{text}\n"
    (bits,) = _unpack_u64(_pack_double(arrival))
    return f"0{bits ^ 0xFFFFFFFFFFFFFFFF:016x}{seq:012x}{text}\n"


def _spill_file() -> IO[str] | None:
    """A temporary file for a sorted run (gone when closed), or None when none can be made."""
    import tempfile

    try:  # reason texts are kept literally: lone surrogates too
        return tempfile.TemporaryFile("w+", encoding="utf-8", errors="surrogatepass", newline="\n", prefix="pfdiag-queue-")
    except OSError:
        return None


class ReportBuilder:
    """build_report() one message at a time: `pfdiag queue` hands it each message while
    postqueue is still listing (read_queue's on_message), so the per-message work overlaps
    postqueue's. Forecasts need the retry settings and the queue directory: until
    configure() gives them (postconf runs at the same time) deferred messages wait, and
    finish() forecasts whatever still waits.

    Memory (encode=True, as `pfdiag queue` runs it): past COMPACT_ABOVE messages each entry
    is encoded to compact JSON as soon as it is complete and dropped; the texts are sorted
    by arrival in runs of RUN spilled to temporary files (SortedEntries): a 100,000-message
    queue's report is some 70 MB of JSON that is never in memory at once. Deferred entries
    waiting for the settings are whole: past WAIT_LIMIT of them the listing waits for
    postconf instead of piling them up."""

    def __init__(self, now: float, *, by: str = "recipient", top: int = 20, shape_queues: list[str] | None = None,
                 encode: bool = False, run: int | None = None, shown: int | None = None, md: bool = False) -> None:  # fmt: skip
        """encode: a big queue's entries become sorted runs of JSON texts on the way (see the
        class); finish()'s "messages" is then a SortedEntries. Without it every entry stays a
        dict in a list (build_report, small inputs). run: entries per sorted run (RUN).
        shown: the text report's summary instead (render_text, queueselect.other_fates): every
        count, table and group, but entries only for the `shown` oldest deferred messages and
        the `shown` first of the others in other_fates' order (held first, oldest first); the
        report's "others_total" says how many others there are. The same text, without an
        entry, a forecast or a JSON text per message (`pfdiag queue` in text, as qshape).
        md: the Markdown report's rows instead of entries: each deferred message's table row
        (render_md's) in the sorted runs, nothing for the others; "messages" is then a
        SortedEntries of those rows ("md_rows" in the report), which render_md writes as they are."""
        self.now, self.top, self.shape_queues = now, top, shape_queues
        self._shown = shown
        self._md = md
        # bounded max-heaps of the entries shown: (key negated, entry); the root is the last one shown
        self._shown_deferred: list[tuple[tuple[float, int], dict[str, Any]]] = []
        self._shown_others: list[tuple[tuple[int, float, float, int], dict[str, Any]]] = []
        self.ages = AgeTally(now, by=by, queues=shape_queues)
        self.causes = GroupTally(cause_of)
        self.queues: dict[str, int] = {}
        self.count = 0  # entries (messages in the report)
        self.recipients = 0
        self.oldest: QueuedMessage | None = None
        self.entries: list[dict[str, Any]] = []  # in listing order, until crossed
        self._encoding = encode
        self._encode_entry = _entry_encoder() if encode else _ENCODE
        self._crossed = False  # past COMPACT_ABOVE entries: encoded into runs as they complete
        self._run_size = run or RUN
        self._run: list[str] = []  # the current run's _line()s
        self._files: list[IO[str]] = []  # the spilled runs, each sorted
        self._spill_failed = False
        self.waiting: list[tuple[QueuedMessage, dict[str, Any] | None, int]] = []  # deferred entries not forecast yet
        self.sources: set[str] = set()  # mtime_source values used
        self._forecaster: Forecaster | None = None
        self._target: Target | None = None
        self._qfiles: QueueFiles | None = None
        self._pending: Batch[tuple[Any, ...]] | None = None  # (settings, ConfigReport | None, ...)
        self._services: dict[str, str] | None = None  # the local services' parameters, once postconf answered
        self._locals: dict[str, str] = {}  # E32 reason -> the cause the locality rule gives it
        self._memo: dict[str | None, str] = {}  # repeated strings -> their JSON text (_texts)
        self._rtails: dict[tuple[str | None, str | None], str] = {}  # (reason, cause) -> _rtail's text
        self._rows = 0  # md: the rows in the runs

    def configure(self, settings: RetrySettings, target: Target, queue_directory: str | None,
                  config: Any = None) -> None:  # fmt: skip
        """From now on forecast deferred messages as they come; the waiting ones first. ``config``
        (a PostfixConfig): a recipient's E32 ("local service down", from the address alone) is
        judged by the report engine's locality rule, as the groups are (correlate.relocalize)."""
        if config is not None:
            from diagnose.correlate import services_of

            self._services = services_of(config)
        self._forecaster = Forecaster(self.now, settings)
        self._target, self._qfiles = target, QueueFiles(target, queue_directory)
        waiting, self.waiting = self.waiting, []
        for m, entry, seq in waiting:
            if self._md:
                self._put_md(m, seq)
                continue
            if entry is None:  # a summary's message not shown: only whether its queue file's time is known
                self._source(m)
                continue
            self._forecast(m, entry)
            if self._crossed:  # before, the entry is in self.entries already
                self._put(entry, seq)

    def _put(self, entry: dict[str, Any], seq: int) -> None:
        """A complete entry past the mark: into the current run, spilled when full."""
        self._put_text(entry["arrival_time"], seq, self._encode_entry(entry))

    def _put_text(self, arrival: float, seq: int, text: str) -> None:
        """An entry's JSON text into the current run, spilled when full."""
        run = self._run
        run.append(_line(arrival, seq, text))
        if len(run) >= self._run_size and not self._spill_failed:
            fh = _spill_file()
            if fh is None:  # no temporary file: the runs stay in memory (correct, not bounded)
                self._spill_failed = True
                return
            run.sort()
            fh.writelines(run)
            fh.flush()
            self._files.append(fh)
            self._run = []

    def _cross(self) -> None:
        """Past COMPACT_ABOVE entries: the complete ones so far go into the runs."""
        self._crossed = True
        waiting = {seq for _, _, seq in self.waiting}
        entries, self.entries = self.entries, []
        for seq, e in enumerate(entries):
            if seq not in waiting:
                self._put(e, seq)

    def configure_when_done(self, job: Batch[tuple[Any, ...]], target: Target) -> None:
        """configure() from the configuration job as soon as it has finished (checked per message)."""
        self._pending, self._target = job, target

    def _configure_from_job(self) -> None:
        assert self._pending is not None and self._target is not None
        settings, cfg = self._pending.wait()[0].unwrap()[:2]
        self._pending = None
        self.configure(settings, self._target, cfg.queue_directory if cfg else None, cfg.config if cfg else None)

    def _forecast(self, m: QueuedMessage, entry: dict[str, Any]) -> None:
        assert self._forecaster is not None and self._qfiles is not None
        source, earliest, latest, expires, expires_latest, lifetime, remaining, overdue, expiring = (
            self._forecaster.row(m, self._qfiles.mtime(m)))
        self.sources.add(source)
        entry["forecast"] = {
            "mtime_source": source, "next_attempt_earliest": round(earliest), "next_attempt_latest": round(latest),
            "expires_at": round(expires), "expires_at_latest": round(expires_latest),
            "lifetime_ends": round(lifetime), "remaining_attempts": list(remaining),
            "overdue": overdue, "expiring": expiring,
        }  # fmt: skip
        if self._services is not None:
            for r in entry["recipients"]:
                if r["cause_id"] == "E32" and r["delay_reason"]:
                    r["cause_id"] = self._local_cause(r["delay_reason"])
        entry["fate"] = fate(m.queue_name, m.queue_id, first_cause([r["cause_id"] for r in entry["recipients"]]),
                             now=self.now, next_attempt=earliest, expires_at=expires, expiring=expiring)  # fmt: skip

    def _configure_if_ready(self) -> None:
        """configure() as soon as postconf's answer is there (looked at per deferred message)."""
        if self._forecaster is None and self._pending is not None and self._pending.ready():
            self._configure_from_job()

    def _wait_for_settings(self, m: QueuedMessage, entry: dict[str, Any] | None, seq: int) -> None:
        """A deferred message kept until the retry settings arrive (a summary's or md's: bounded)."""
        self.waiting.append((m, entry, seq))
        if len(self.waiting) > WAIT_LIMIT and self._pending is not None:
            self._configure_from_job()  # postconf is slower than the listing: wait for it, not pile up

    def _localized(self, causes: list[str | None], recipients: Sequence[QueuedRecipient]) -> list[str | None]:
        """The recipients' causes with each E32 judged by the locality rule, once the
        configuration is known (as _forecast() does to an entry's recipients)."""
        if self._services is None or "E32" not in causes:
            return causes
        return [self._local_cause(r.delay_reason) if c == "E32" and r.delay_reason else c
                for c, r in zip(causes, recipients)]  # fmt: skip

    def _local_cause(self, reason: str) -> str:
        got = self._locals.get(reason)
        if got is None:
            from diagnose.correlate import local_verdict

            assert self._services is not None
            got = local_verdict(reason, self._services)[0]
            if len(self._locals) < 4096:  # bounded: one entry per distinct reason text
                self._locals[reason] = got
        return got

    def _entry(self, m: QueuedMessage) -> dict[str, Any]:
        """A message's entry of docs/queue-json.md, without its forecast and fate."""
        cause = self.causes.cause
        return {
            "queue_id": m.queue_id, "queue_name": m.queue_name, "arrival_time": m.arrival_time,
            "age_seconds": round(self.now - m.arrival_time, 1), "size": m.size, "sender": m.sender,
            "forced_expire": m.forced_expire,
            "recipients": [{"address": r.address, "delay_reason": r.delay_reason, "cause_id": cause(r.delay_reason)}
                           for r in m.recipients],
            "forecast": None, "fate": None,
        }  # fmt: skip

    def _entry_text(self, m: QueuedMessage) -> str:
        """The compact JSON text of m's complete entry, as _encode_entry() of the entry that
        _entry() and _forecast() (or fate(), not deferred) build, written directly: the same
        bytes (test_queue_report_stream.py) without a dict per message, recipient and forecast
        for the encoder to walk. The settings are known when m is deferred. Hot (once per
        message of a big queue): the common values (finite floats, ints, bools, one recipient)
        are written inline, the rest through _number/_flag/first_cause as before."""
        cause, q, now, enc, rtail = self.causes.cause, m.queue_name, self.now, _encode_str, self._rtail
        recipients = m.recipients
        # one recipient (most messages) without a list comprehension's call
        causes = [cause(recipients[0].delay_reason)] if len(recipients) == 1 else [cause(r.delay_reason) for r in recipients]
        if q != "deferred":
            forecast, fate_text = "null", fate(q, m.queue_id, None, now=now)
        else:
            assert self._forecaster is not None and self._qfiles is not None
            row = self._forecaster.row(m, self._qfiles.mtime(m))
            source, earliest, latest, expires, expires_latest, lifetime, remaining, overdue, expiring = row
            self.sources.add(source)
            causes = self._localized(causes, recipients)
            forecast = (f'{{"mtime_source": "{source}", "next_attempt_earliest": {round(earliest)}, '
                        f'"next_attempt_latest": {round(latest)}, "expires_at": {round(expires)}, '
                        f'"expires_at_latest": {round(expires_latest)}, "lifetime_ends": {round(lifetime)}, '
                        f'"remaining_attempts": [{remaining[0]}, {remaining[1]}], '
                        f'"overdue": {"true" if overdue is True else "false" if overdue is False else _flag(overdue)}, '
                        f'"expiring": {"true" if expiring is True else "false" if expiring is False else _flag(expiring)}}}')  # fmt: skip
            if len(causes) == 1:  # first_cause([c]), without the lists
                first = causes[0]
                if not first or first == "no-reason":
                    first = None
            else:
                first = first_cause(causes)
            fate_text = fate(q, m.queue_id, first, now=now, next_attempt=earliest, expires_at=expires,
                             expiring=expiring)  # fmt: skip
        if len(recipients) == 1:
            r = recipients[0]
            rcpts = f'{{"address": {enc(r.address)}{rtail(r.delay_reason, causes[0])}'
        else:
            rcpts = ", ".join([f'{{"address": {enc(r.address)}{rtail(r.delay_reason, c)}'
                               for r, c in zip(recipients, causes)])  # fmt: skip
        a, size, forced = m.arrival_time, m.size, m.forced_expire
        age_s = now - a
        if type(a) is float and type(age_s) is float and a - a == 0.0 and -1e15 < age_s < 1e15:
            # finite: its JSON is its repr; repr(round(x, 1)) is x's correctly rounded one-decimal
            # form, which format spec .1f writes too (the same dtoa rounding) below 1e15 (no exponent)
            arrival, age = repr(a), f"{age_s:.1f}"
        else:
            arrival, age = _number(a), _number(round(now - a, 1))
        text = self._texts
        return (f'{{"queue_id": {enc(m.queue_id)}, "queue_name": {text(q)}, '
                f'"arrival_time": {arrival}, "age_seconds": {age}, '
                f'"size": {int.__repr__(size) if type(size) is int else _number(size)}, "sender": {text(m.sender)}, '
                f'"forced_expire": {"false" if forced is False else "true" if forced is True else _flag(forced)}, '
                f'"recipients": [{rcpts}], "forecast": {forecast}, "fate": {enc(fate_text)}}}')  # fmt: skip

    def _rtail(self, reason: str | None, cause_id: str | None) -> str:
        """A recipient's JSON text after its address: its delay_reason, cause_id and the closing
        brace, memoised per (reason, cause): a stuck queue repeats a few reasons."""
        memo = self._rtails
        key = (reason, cause_id)
        got = memo.get(key)
        if got is None:
            if len(memo) >= 16384:  # reasons carry hosts and ids; bound the memo (the only one holding reasons)
                memo.clear()
            got = memo[key] = (f', "delay_reason": {"null" if reason is None else _encode_str(reason)}, '
                               f'"cause_id": {"null" if cause_id is None else self._texts(cause_id)}}}')  # fmt: skip
        return got

    def _texts(self, value: str | None) -> str:
        """A repeated string's JSON text (queue names, senders, cause ids), memoised."""
        memo = self._memo
        got = memo.get(value)
        if got is None:
            if len(memo) >= 65536:  # reasons carry hosts and ids; bound the memo
                memo.clear()
            got = memo[value] = "null" if value is None else _encode_str(value)
        return got

    def _source(self, m: QueuedMessage) -> None:
        """What a forecast of m adds to self.sources (the "assumed" note), without the forecast."""
        if len(self.sources) < 2:
            assert self._qfiles is not None
            self.sources.add("assumed" if self._qfiles.mtime(m) is None else "file")

    def add(self, m: QueuedMessage) -> None:
        rcpts = m.recipients  # their domains once for both tallies (one recipient: no list comprehension's call)
        domains = [domain_of(rcpts[0].address)] if len(rcpts) == 1 else [domain_of(r.address) for r in rcpts]
        self.ages.add(m, domains)
        self.causes.add(m, domains)
        q = m.queue_name
        self.queues[q] = self.queues.get(q, 0) + 1
        self.recipients += len(m.recipients)
        if self.oldest is None or m.arrival_time < self.oldest.arrival_time:
            self.oldest = m
        if self._shown is not None:
            self._add_shown(m)
            return
        if self._md:
            self._add_md(m)
            return
        if q == "deferred":
            self._configure_if_ready()
        if self._crossed and (q != "deferred" or self._forecaster is not None):  # complete now: straight to text
            seq = self.count
            self.count += 1
            self._put_text(m.arrival_time, seq, self._entry_text(m))
            return
        entry = self._entry(m)
        seq = self.count
        self.count += 1
        complete = True
        if q != "deferred":
            entry["fate"] = fate(q, m.queue_id, None, now=self.now)
        else:
            if self._forecaster is not None:
                self._forecast(m, entry)
            else:
                self.waiting.append((m, entry, seq))
                complete = False
        if not self._crossed:
            self.entries.append(entry)
            if self._encoding and self.count > COMPACT_ABOVE:
                self._cross()
        elif complete:
            self._put(entry, seq)
        if len(self.waiting) > WAIT_LIMIT and self._pending is not None and self._encoding:
            self._configure_from_job()  # postconf is slower than the listing: wait for it, not pile up

    def _add_shown(self, m: QueuedMessage) -> None:
        """add()'s entry for a summary (shown): only when the message is among the shown so far.
        The order of the full listing is (arrival, listing position); other_fates sorts the
        others stably by (not held, -age_seconds): the keys below are those, negated, so that
        the root of each max-heap is the entry that leaves first."""
        seq = self.count
        self.count += 1
        q, a, limit = m.queue_name, m.arrival_time, self._shown
        assert limit is not None
        if q != "deferred":
            okey = (-(q != "hold"), round(self.now - a, 1), -a, -seq)
            others = self._shown_others
            if len(others) >= limit and okey <= others[0][0]:
                return
            entry = self._entry(m)
            entry["fate"] = fate(q, m.queue_id, None, now=self.now)
            (heapq.heappush if len(others) < limit else heapq.heapreplace)(others, (okey, entry))
            return
        self._configure_if_ready()
        dkey = (-a, -seq)
        heap = self._shown_deferred
        shown: dict[str, Any] | None = None
        if len(heap) < limit or dkey > heap[0][0]:
            shown = self._entry(m)
            (heapq.heappush if len(heap) < limit else heapq.heapreplace)(heap, (dkey, shown))
        if self._forecaster is None:
            self._wait_for_settings(m, shown, seq)
        elif shown is not None:
            self._forecast(m, shown)
        else:
            self._source(m)

    def _add_md(self, m: QueuedMessage) -> None:
        """add() for the Markdown rows (md): a deferred message's row once it can be forecast."""
        seq = self.count
        self.count += 1
        if m.queue_name != "deferred":
            return
        self._configure_if_ready()
        if self._forecaster is not None:
            self._put_md(m, seq)
            return
        self._wait_for_settings(m, None, seq)

    def _put_md(self, m: QueuedMessage, seq: int) -> None:
        """A deferred message's row of render_md's table into the sorted runs: the numbers
        _forecast() puts in its entry, rounded as there, and the same fate."""
        assert self._forecaster is not None and self._qfiles is not None
        source, earliest, latest, expires, _, _, _, _, expiring = self._forecaster.row(m, self._qfiles.mtime(m))
        self.sources.add(source)
        cause = self.causes.cause
        causes = [cause(r.delay_reason) for r in m.recipients]
        causes = self._localized(causes, m.recipients)
        now, a = self.now, m.arrival_time
        what = fate(m.queue_name, m.queue_id, first_cause(causes), now=now, next_attempt=earliest, expires_at=expires,
                    expiring=expiring)  # fmt: skip
        self._put_text(a, seq, _md_row(m.queue_id, round(now - a, 1), round(earliest), round(latest), round(expires),
                                       source, what, now))  # fmt: skip
        self._rows += 1

    def _shown_entries(self) -> list[dict[str, Any]]:
        """A summary's entries, in the order of the full listing (arrival, listing position)."""
        kept = [(-k[0], -k[1], e) for k, e in self._shown_deferred] + [(-k[2], -k[3], e) for k, e in self._shown_others]
        kept.sort(key=lambda t: (t[0], t[1]))
        return [e for _, _, e in kept]

    def finish(self, read: QueueRead, settings: RetrySettings, target: Target, queue_directory: str | None,
               config: Any = None) -> dict[str, Any]:  # fmt: skip
        """The report. settings, queue_directory and config are the ones configure() was given, if it was."""
        now = self.now
        if self._forecaster is None:
            self.configure(settings, target, queue_directory, config)
        messages: list[dict[str, Any]] | SortedEntries
        if self._shown is not None:
            messages = self._shown_entries()
        elif self._md:
            self._run.sort()
            messages = SortedEntries(self._files, self._run, self._rows)
            self._files, self._run = [], []
        elif not self._crossed:  # by arrival; sort() is stable: listing order among equals
            self.entries.sort(key=lambda e: e["arrival_time"])
            messages = self.entries
        else:
            self._run.sort()
            messages = SortedEntries(self._files, self._run, self.count)
            self._files, self._run = [], []
        return {
            "schema": SCHEMA,
            "generated_at": _iso(now),
            "now": round(now, 3),
            "where": target.where,
            "source": read.source,
            "counts": counts_of(self.queues),
            "total_messages": self.count,
            "total_recipients": self.recipients,
            "matrix": _matrix_dict(self.ages.matrix(self.top), self.shape_queues),
            "groups": _groups(self.causes),
            "oldest": _oldest(self.oldest, now),
            "settings": {k: getattr(settings, k) for k in settings.__dataclass_fields__},
            "messages": messages,
            "notes": _notes(read, self.sources),
        } | ({"others_total": sum(n for q, n in self.queues.items() if q != "deferred")} if self._shown is not None else {}
             ) | ({"md_rows": True} if self._md else {})

    def json_text(self, report: dict[str, Any]) -> str:
        """write_json() as one string."""
        out = io.StringIO()
        self.write_json(report, out)
        return out.getvalue()

    @staticmethod
    def write_json(report: dict[str, Any], out: TextIO) -> None:
        """The report as JSON, the same text as json.dumps(report) with the messages as a list:
        indented for people; a big queue compact (the C encoder writes it ~5x faster), its
        messages streamed from the sorted runs (SortedEntries) in pieces."""
        messages = report["messages"]
        if not isinstance(messages, SortedEntries):
            indent = 2 if len(messages) <= COMPACT_ABOVE else None
            out.write(json.dumps(report, indent=indent, ensure_ascii=False))
            return
        out.write("{")
        for n, (k, v) in enumerate(report.items()):
            out.write(f"{', ' if n else ''}{_ENCODE(k)}: ")
            if k != "messages":
                out.write(_ENCODE(v))
                continue
            out.write("[")
            texts, first = messages.texts(), True
            while True:
                chunk = list(itertools.islice(texts, 256))
                if not chunk:
                    break
                out.write(("" if first else ", ") + ", ".join(chunk))
                first = False
            out.write("]")
        out.write("}")


def _matrix_dict(m: Matrix, queues: list[str] | None) -> dict[str, Any]:
    return {
        "by": m.by, "queues": queues or "all", "unit": "minutes", "headings": ["T", *m.headings],
        "rows": [{"domain": d, "total": t, "buckets": b} for d, t, b in m.rows], "hidden_domains": m.hidden,
    }  # fmt: skip



# ------------------------------------------------------------------ the digest a diagnosis reads


class QueueDigest:
    """What a diagnosis needs from the queue, aggregated one message at a time (see the module
    docstring): the fields of the report (docs/queue-json.md) that diagnose/correlate.py and
    diagnose/report.py read - counts, totals, groups (their queue ids in full: the causes count
    distinct messages from them and list some), oldest, settings, notes - without `matrix` and
    `messages`; instead `next_attempt` and `first_expiry` (the earliest over the deferred
    messages, rounded to the second as in the report's forecasts) and `arrivals`, the ARRIVALS
    oldest messages as {"arrival", "queue", "causes"}, oldest first (listing order among equals)."""

    def __init__(self, now: float, *, arrivals: int = ARRIVALS) -> None:
        self.now = now
        self.causes = GroupTally(cause_of)
        self.queues: dict[str, int] = {}
        self.messages = 0
        self.recipients = 0
        self.oldest: QueuedMessage | None = None
        self.next_attempt: int | None = None
        self.first_expiry: int | None = None
        self.sources: set[str] = set()  # mtime_source values used
        self._limit = arrivals
        # a max-heap of the oldest messages: (-arrival, -listing position, message)
        self._heap: list[tuple[float, int, QueuedMessage]] = []
        self._waiting: list[QueuedMessage] = []  # deferred messages (without recipients) until configured
        self._forecaster: Forecaster | None = None
        self._files: QueueFiles | None = None
        self._target: Target | None = None
        self._pending: Batch[tuple[Any, ...]] | None = None  # (settings, ConfigReport | None, ...)

    def configure(self, settings: RetrySettings, target: Target, queue_directory: str | None) -> None:
        """From now on forecast deferred messages as they come; the waiting ones first."""
        self._forecaster = Forecaster(self.now, settings)
        self._files = QueueFiles(target, queue_directory)
        waiting, self._waiting = self._waiting, []
        for m in waiting:
            self._forecast(m)

    def configure_when_done(self, job: Batch[tuple[Any, ...]], target: Target) -> None:
        """configure() from a job giving (settings, ConfigReport | None) as soon as it has finished."""
        self._pending, self._target = job, target

    def _forecast(self, m: QueuedMessage) -> None:
        """The earliest next attempt and expiry so far, as the report's forecasts round them.
        A message's whole schedule is computed only when its expiry can be the first: it is
        never before arrival + lifetime (Forecaster.expiry_floor), which already rules out
        nearly every message of a big queue."""
        fc, files = self._forecaster, self._files
        assert fc is not None and files is not None
        mtime = files.mtime(m)
        self.sources.add("assumed" if mtime is None else "file")
        nxt = round(fc.next_earliest(m, mtime))
        if self.next_attempt is None or nxt < self.next_attempt:
            self.next_attempt = nxt
        floor = fc.expiry_floor(m)
        if self.first_expiry is not None and floor is not None and round(floor) >= self.first_expiry:
            return
        exp = round(fc.row(m, mtime).expires_at)
        if self.first_expiry is None or exp < self.first_expiry:
            self.first_expiry = exp

    def add(self, m: QueuedMessage) -> None:
        domains = [domain_of(r.address) for r in m.recipients]
        self.causes.add(m, domains)
        q = m.queue_name
        self.queues[q] = self.queues.get(q, 0) + 1
        self.messages += 1
        self.recipients += len(m.recipients)
        a = m.arrival_time
        if self.oldest is None or a < self.oldest.arrival_time:
            self.oldest = m
        heap = self._heap
        if len(heap) < self._limit:
            heapq.heappush(heap, (-a, -self.messages, m))
        elif heap and a < -heap[0][0]:  # older than the youngest kept (a later equal one is not)
            heapq.heapreplace(heap, (-a, -self.messages, m))
        if q != "deferred":
            return
        if self._forecaster is None and self._pending is not None and self._pending.ready():
            settings, cfg = self._pending.wait()[0].unwrap()[:2]
            self._pending = None
            assert self._target is not None
            self.configure(settings, self._target, cfg.queue_directory if cfg else None)
        if self._forecaster is not None:
            self._forecast(m)
        else:  # what a forecast reads, not the recipients
            self._waiting.append(QueuedMessage(m.queue_id, q, a, m.size, m.sender, (), m.forced_expire))

    def arrivals(self) -> list[dict[str, Any]]:
        cause = self.causes.cause
        return [{"arrival": m.arrival_time, "queue": m.queue_name,
                 "causes": sorted({c for c in (cause(r.delay_reason) for r in m.recipients) if c})}
                for _, _, m in sorted(self._heap, key=lambda e: (-e[0], -e[1]))]  # fmt: skip

    def finish(self, read: QueueRead, settings: RetrySettings, target: Target, queue_directory: str | None) -> dict[str, Any]:
        """The digest. settings and queue_directory are the ones configure() was given, if it was."""
        if self._forecaster is None:
            self.configure(settings, target, queue_directory)
        now = self.now
        return {
            "schema": DIGEST_SCHEMA,
            "generated_at": _iso(now),
            "now": round(now, 3),
            "where": target.where,
            "source": read.source,
            "counts": counts_of(self.queues),
            "total_messages": self.messages,
            "total_recipients": self.recipients,
            "groups": _groups(self.causes),
            "oldest": _oldest(self.oldest, now),
            "settings": {k: getattr(settings, k) for k in settings.__dataclass_fields__},
            "next_attempt": self.next_attempt,
            "first_expiry": self.first_expiry,
            "arrivals": self.arrivals(),
            "notes": _notes(read, self.sources),
        }


# ------------------------------------------------------------------ rendering


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


def _by_cause(groups: list[dict[str, Any]]) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """The deferred groups (one per cause and destination) per cause: (id, title, its destinations,
    most recipients first); the cause with the most recipients first."""
    causes: dict[str, list[dict[str, Any]]] = {}
    for g in groups:
        causes.setdefault(g["cause_id"], []).append(g)
    ordered = sorted(causes.values(), key=lambda gs: -sum(g["recipients"] for g in gs))  # stable: ties as listed
    return [(gs[0]["cause_id"], gs[0]["cause_title"], sorted(gs, key=lambda g: -g["recipients"])) for gs in ordered]


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
        for cause_id, title, dests in _by_cause(rep["groups"]):
            out.append(f"  {cause_id:<12} {title}")
            for g in dests:
                out.append(f"  {'':<12} {g['domain']}: {g['recipients']} recipient(s) in {len(g['messages'])} message(s), "
                           f"oldest {human(now - g['oldest_arrival'])}")  # fmt: skip
                if g["example_reason"]:
                    out.append(f"  {'':<12}   ({g['example_reason'][:160]})")
    o = rep["oldest"]
    if o:
        out += ["", f"Oldest: {o['queue_id']} ({o['queue_name']}) from {o['sender'] or '<>'}, "
                    f"{human(o['age_seconds'])} old"]  # fmt: skip
    # the first TEXT_SHOWN only: a big queue's messages are read from its sorted runs (SortedEntries)
    deferred = list(itertools.islice((m for m in rep["messages"] if m["forecast"]), TEXT_SHOWN))
    if deferred:
        s = rep["settings"]
        out += ["", f"Deferred messages: next attempt and return to sender (if every attempt fails; "
                    f"backoff {s['minimal_backoff_time']:g}-{s['maximal_backoff_time']:g}s, scan "
                    f"{s['queue_run_delay']:g}s, lifetime {human(s['maximal_queue_lifetime'])})"]  # fmt: skip
        out.append(f"  {'queue id':<17} {'age':>7}  {'next attempt':<22} {'returned':<13} {'cause':<5}  fate")
        for m in deferred:
            f = m["forecast"]
            nxt = f"{_when(f['next_attempt_earliest'], now)}..{_when(f['next_attempt_latest'], now).removeprefix('in ')}"
            if f["mtime_source"] == "assumed":
                nxt += "*"
            causes = ",".join(dict.fromkeys(r["cause_id"] or "-" for r in m["recipients"]))
            out.append(f"  {m['queue_id']:<17} {human(m['age_seconds']):>7}  {nxt:<22} "
                       f"{_when(f['expires_at'], now):<13} {causes:<5}  {m['fate']}")  # fmt: skip
        more = rep["counts"].get("deferred", 0) - len(deferred)  # every deferred entry has a forecast
        if more > 0:
            out.append(f"  ... {more} more (--format json lists all)")
    out += [""] + [f"note: {n}" for n in rep["notes"]] if rep["notes"] else []
    return "\n".join(map(visible, out)) + "\n"  # senders, domains, reasons: control characters written out (textsafe)


def _md_row(queue_id: str, age: float, earliest: float, latest: float, expires: float, source: str, what: str,
            now: float) -> str:  # fmt: skip
    """A deferred message's row of render_md's table (an entry's fields, as docs/queue-json.md names them)."""
    return (f"| {md_text(queue_id)} | {human(age)} | {_when(earliest, now)} .. {_when(latest, now)} | "
            f"{_when(expires, now)} | {source} | {_md_fate(what)} |")


_MD_FATES: dict[str, str] = {}  # md_text of a fate: a big queue's deferred messages share a handful of phrases


def _md_fate(what: str) -> str:
    got = _MD_FATES.get(what)
    if got is None:
        if len(_MD_FATES) >= 4096:
            _MD_FATES.clear()
        got = _MD_FATES[what] = md_text(what)
    return got


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
        out += ["", "## Deferred recipients by cause and destination"]
        for cause_id, title, dests in _by_cause(rep["groups"]):
            out += ["", f"### {md_text(cause_id)} {md_text(title)}", "",
                    "| destination | recipients | messages | example reason |", "|---|---:|---:|---|"]  # fmt: skip
            for g in dests:
                reason = md_text(g["example_reason"][:160])
                out.append(f"| {md_code(g['domain'], table=True)} | {g['recipients']} | {len(g['messages'])} | {reason} |")
    if rep["counts"].get("deferred"):
        out += ["", "## Deferred messages", "", "| queue id | age | next attempt | returned to sender | mtime | fate |",
                "|---|---:|---|---|---|---|"]  # fmt: skip
        if rep.get("md_rows"):  # ReportBuilder(md=True): the rows themselves, sorted, read from the runs
            out.extend(rep["messages"].texts())
        else:  # read as written: a big queue's from its runs
            for m in rep["messages"]:
                if m["forecast"]:
                    f = m["forecast"]
                    out.append(_md_row(m["queue_id"], m["age_seconds"], f["next_attempt_earliest"],
                                       f["next_attempt_latest"], f["expires_at"], f["mtime_source"], m["fate"], now))  # fmt: skip
    if rep["notes"]:
        out += [""] + [f"- {md_text(n)}" for n in rep["notes"]]
    return "\n".join(out) + "\n"

