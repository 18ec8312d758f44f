"""Build the demo snapshot shipped in the package (diagnose/data/demo-snapshot.tar.gz): the seed
problem as an admin meets it, recorded from the real lab Postfix. Run as root:

    .venv/bin/python -m tests.lab.make_demo [--out FILE] [--rounds-only]

What it does:

1. Starts the lab Postfix (tests/lab/postfix.py) and misbehaving peers on loopback: the main
   destination ``partner.test`` never answers the final "." (the end-of-data timeout, E09),
   except for a few messages it accepts after stalling some copies (delivered on a retry: the
   peer then holds the message more than once); beside it fewer messages to a greylisting
   receiver, a full mailbox, a receiver that refuses sessions (421 at the greeting), a receiver that does not offer the TLS the
   policy requires, and a healthy one.
2. Plays the messages' history in rounds: each message is injected in the round that gives it
   as many attempts as Postfix's real backoff schedule gives a message of its planned age (up
   to ~26 h), then every round is a real retry of all deferred mail (``postqueue -f``).
3. Records the lab with the real recorder (diagnose/snapshot.py, as ``pfdiag snapshot`` does).
4. Time-shifts the recording (waiting hours is impractical): every log line is moved so that
   each message's attempts fall on qmgr's retry schedule (checks/postfix/retry.py: next
   attempt = end of the last + clamp(age, minimal_backoff_time, maximal_backoff_time), picked
   up by a deferred-queue scan up to queue_run_delay later) and the last attempt lies before
   the recording time; ``delay=`` and ``delays=a/b/c/d`` follow; queue arrival times
   (``postqueue -j`` / ``-p``) are moved alike. The lab runs short timeouts (5 s) and settings
   that keep qmgr from suspending the stalling destination, so that rounds take seconds; the
   bundle shows the configuration the story has, Postfix's defaults: those lab-only lines are
   left out of ``postconf -n`` / main.cf, ``postconf -h`` answers their defaults, and the
   5 s end-of-data waits become 600 s ones. The manifest's ``origin`` says all this.

The result is reproducible in shape (queue ids, pids and exact times change per run).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from checks.model import CommandResult
from checks.postfix.postconf import parse_postconf
from checks.postfix.retry import DEFAULTS, next_delay
from checks.targets.bundle import SnapshotWriter
from tests.lab import peers
from tests.lab.postfix import FAST_TIMEOUTS, Injected, PostfixLab

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "diagnose" / "data" / "demo-snapshot.tar.gz"
MAIN = "partner.test"
STORY_DATA_DONE = 600.0  # the smtp_data_done_timeout the bundle's configuration has (the default)
# Lab-only: every stalled attempt gets a real end-of-data timeout (no dead-destination suspension)
# and 20+ sessions run at once, so that one round of retries takes seconds.
LAB_ONLY = {
    "initial_destination_concurrency": "30",
    "smtp_destination_concurrency_limit": "30",
    "smtp_destination_concurrency_failed_cohort_limit": "1000",
    "smtp_destination_concurrency_negative_feedback": "0",
}
STRIPPED = set(FAST_TIMEOUTS) | set(LAB_ONLY)
EOD = "timed out while sending end of data"


class PartnerPeer(peers.Peer):
    """Never answers the final "." (the receiver or something on the path swallows it), except
    for the Message-IDs in ``accept_after``: those are accepted once they arrived that many times
    unanswered, so the peer holds such a message more than once."""

    kind = "eod-stall"

    def __init__(self, name: str | None = None, *, accept_after: dict[str, int] | None = None, **kw: Any) -> None:
        super().__init__(name, **kw)
        self.accept_after = dict(accept_after or {})
        self.seen: dict[str | None, int] = {}

    def greet(self, s: peers.Session) -> None:
        s.reply(f"220 {self.hostname} ESMTP")

    def on_message(self, s: peers.Session, msg: peers.Received) -> str:
        with self._lock:
            n = self.seen.get(msg.message_id, 0)
            self.seen[msg.message_id] = n + 1
        want = self.accept_after.get(msg.message_id or "")
        if want is not None and n >= want:
            return f"250 2.0.0 Ok: queued as P{len(self.messages):05d}"
        s.drain_until_close()
        return ""


@dataclass
class Plan:
    """One message: planned age (hours before the recording), recipients, sender."""

    sender: str
    rcpt: str
    age_h: float
    accept_after: int | None = None  # PartnerPeer: accepted after this many stalled copies
    inj: Injected | None = None
    attempts: int = 0
    lags: list[float] = field(default_factory=list)


SENDERS = ("billing@shop.test", "alice@shop.test", "noreply@shop.test", "bob@shop.test", "orders@shop.test")


def plans() -> list[Plan]:
    rng = random.Random(14)
    out: list[Plan] = []
    main_ages = [25.5, 24.0, 22.6, 21.0, 19.8, 18.1, 16.9, 15.2, 14.0, 12.7, 11.3, 10.0, 9.1, 8.2, 7.4, 6.6, 5.9, 5.1, 4.6]
    for i, age in enumerate(main_ages):
        out.append(Plan(SENDERS[i % len(SENDERS)], f"{['sales', 'ap', 'j.doe', 'support', 'm.rossi'][i % 5]}{i}@{MAIN}",
                        age + rng.uniform(-0.3, 0.3)))  # fmt: skip
    # delivered on a later attempt after stalling: the duplicates the warning is about
    for i, (age, stalls) in enumerate(((23.2, 3), (17.5, 5), (12.2, 2), (8.8, 4))):
        out.append(Plan(SENDERS[i], f"invoices{i}@{MAIN}", age, accept_after=stalls))
    out += [
        Plan("alice@shop.test", "newsletter@isp-greylist.test", 0.35),
        Plan("bob@shop.test", "team@isp-greylist.test", 0.2),
        Plan("orders@shop.test", "full.mailbox@fullbox.test", 9.5),
        Plan("billing@shop.test", "info@busy-mx.test", 13.3),
        Plan("billing@shop.test", "accounts@busy-mx.test", 6.2),
        Plan("noreply@shop.test", "it@tls-required.test", 2.4),
        Plan("alice@shop.test", "carol@customer.test", 20.0),
        Plan("bob@shop.test", "dave@customer.test", 11.0),
        Plan("orders@shop.test", "erin@customer.test", 3.0),
    ]
    return out


def chain(durations: list[float], lags: list[float], first_lag: float = 1.0) -> list[tuple[float, float]]:
    """(start, end) of each attempt relative to arrival, on qmgr's schedule (retry.py)."""
    out = []
    at = first_lag
    for k, dur in enumerate(durations):
        end = at + dur
        out.append((at, end))
        at = end + next_delay(end, DEFAULTS) + lags[k]  # the first deferred-queue scan after the mtime
    return out


def planned_attempts(age: float, dur: float, lags: list[float]) -> int:
    """How many attempts a message of this age has had (each lasting dur) by now."""
    n = 0
    while True:
        c = chain([dur] * (n + 1), lags)
        if c[-1][0] > age:
            return max(n, 1)
        n += 1


def _status_count(lab: PostfixLab, since: int) -> int:
    return sum(1 for line in lab.log_lines()[since:] if re.search(r"postfix/\w+\[\d+\]: \w+: to=<.*, status=", line))


def _wait_settled(lab: PostfixLab, since: int, expected: int, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _status_count(lab, since) >= expected and all(
            m["queue_name"] in ("deferred", "hold") for m in lab.postqueue_json()
        ):
            return
        time.sleep(0.3)
    raise TimeoutError(f"round did not settle: {_status_count(lab, since)}/{expected} status lines")


def record(out_bundle: Path, log: Any = print) -> tuple[list[Plan], dict[str, Any]]:
    """Run the lab and record it with the real recorder into out_bundle. Returns the plans."""
    from checks.targets.local import LocalTarget
    from diagnose.snapshot import collect

    todo = plans()
    for p in todo:
        p.lags = [random.Random(p.rcpt).uniform(5, DEFAULTS.queue_run_delay) for _ in range(200)]
        dur = STORY_DATA_DONE if p.rcpt.endswith(MAIN) else 1.0
        p.attempts = planned_attempts(p.age_h * 3600, dur, p.lags)
    rounds = max(p.attempts for p in todo)
    partner = PartnerPeer("partner", hostname=f"mx.{MAIN}", message_limit=2000)
    others: dict[str, peers.Peer] = {
        "isp-greylist.test": peers.GreylistPeer("greylist", hostname="mx.isp-greylist.test"),
        "fullbox.test": peers.MailboxFullPeer("mailbox-full", hostname="mx.fullbox.test"),
        "busy-mx.test": peers.Banner421Peer("busy-mx", hostname="mx.busy-mx.test"),
        "tls-required.test": peers.NoStartTlsPeer("tls-required", hostname="mx.tls-required.test"),
        "customer.test": peers.HealthyPeer("healthy", hostname="mx.customer.test"),
    }
    lab = PostfixLab(settings=LAB_ONLY, sender_domain="shop.test", hostname="mx1.shop.test")
    started: list[peers.Peer] = []
    try:
        for peer in (partner, *others.values()):
            started.append(peer.start())
        lab.route(MAIN, partner.port)
        for dom, peer in others.items():
            lab.route(dom, peer.port, tls="encrypt" if dom.startswith("tls-required") else None)
        lab.start()
        if lab.loopback_violations():
            raise SystemExit(f"lab is not loopback-only: {lab.loopback_violations()}")
        t0 = time.monotonic()
        for j in range(1, rounds + 1):
            mark = lab.mark()
            queued = sum(len(m["recipients"]) for m in lab.postqueue_json() if m["queue_name"] == "deferred")
            if queued:
                lab.flush()
            wave = [p for p in todo if p.attempts == rounds - j + 1]
            for p in wave:
                mid = f"<{random.Random(p.rcpt).getrandbits(64):016x}.{p.rcpt.split('@')[0]}@shop.test>"
                if p.accept_after is not None:
                    partner.accept_after[mid] = p.accept_after
                p.inj = lab.inject(p.sender, [p.rcpt], subject=f"Order {random.Random(p.rcpt).randrange(10000, 99999)}",
                                   message_id=mid)  # fmt: skip
            _wait_settled(lab, mark, queued + len(wave))
            log(f"round {j}/{rounds}: {queued} retried, {len(wave)} new ({time.monotonic() - t0:.0f} s)")
        recorded_at = time.time()
        collect(LocalTarget(), out_path=str(out_bundle), config_dir=str(lab.config_dir))
        meta = {"recorded_at": recorded_at, "log_path": str(lab.log_path),
                "copies": {p.rcpt: len(partner.received(p.inj.message_id)) for p in todo if p.inj and p.rcpt.endswith(MAIN)},
                "accepted": {p.rcpt: partner.accepted[p.inj.message_id] for p in todo if p.inj and p.rcpt.endswith(MAIN)}}  # fmt: skip
        return todo, meta
    finally:
        lab.stop()
        for peer in started:
            peer.request_stop()
        for peer in started:
            peer.stop()


# -- the time shift ---------------------------------------------------------------------------

LINE = re.compile(r"^(?P<ts>\w{3} [ \d]\d \d\d:\d\d:\d\d) (?P<host>\S+) (?P<prog>[\w./-]+)\[(?P<pid>\d+)\]: (?P<msg>.*)$")
QID = re.compile(r"^(?P<qid>[0-9A-F]{6,}): ")
STATUS = re.compile(r"to=<[^>]*>,(?: orig_to=<[^>]*>,)? relay=[^,]+, (?:conn_use=\d+, )?"
                    r"delay=(?P<delay>[\d.]+), delays=(?P<a>[\d.]+)/(?P<b>[\d.]+)/(?P<c>[\d.]+)/(?P<d>[\d.]+), "
                    r"dsn=[\d.]+, status=(?P<status>\S+)")  # fmt: skip


def _parse_ts(ts: str, year: int) -> float:
    return time.mktime(time.strptime(f"{year} {ts}", "%Y %b %d %H:%M:%S"))


def _fmt_ts(t: float) -> str:
    lt = time.localtime(t)
    return f"{time.strftime('%b', lt)} {lt.tm_mday:2d} {time.strftime('%H:%M:%S', lt)}"


def _num(x: float) -> str:
    """A delay as Postfix logs it: whole seconds from 10 s on, else two significant digits, 0 for ~0."""
    if x >= 10:
        return f"{x:.0f}"
    if x < 0.005:
        return "0"
    return f"{x:.2g}"


@dataclass
class Attempt:
    index: int  # line index of the status line
    lab_end: float
    lab_session: float  # b + c + d as logged
    new_session: float
    delays: tuple[float, float, float, float]
    eod: bool
    new_start: float = 0.0
    new_end: float = 0.0


def shift(log_text: str, plans_: list[Plan], now: float) -> tuple[str, dict[str, float]]:
    """The time-shifted log and {queue id: new arrival time}."""
    year = time.localtime(now).tm_year
    raw = log_text.splitlines()
    parsed = [LINE.match(x) for x in raw]
    times = [_parse_ts(m["ts"], year) if m else 0.0 for m in parsed]
    qids: list[str | None] = []
    for m in parsed:
        qm = QID.match(m["msg"]) if m else None
        qids.append(qm["qid"] if qm else None)
    attempts: dict[str, list[Attempt]] = {}
    for i, m in enumerate(parsed):
        s = STATUS.search(m["msg"]) if m else None
        if not (m and s and qids[i]):
            continue
        a, b, c, d = (float(s[k]) for k in "abcd")
        eod = EOD in m["msg"]
        new_d = d - float(FAST_TIMEOUTS["smtp_data_done_timeout"].rstrip("s")) + STORY_DATA_DONE if eod else d
        attempts.setdefault(qids[i] or "", []).append(Attempt(i, times[i], b + c + d, b + c + new_d, (a, b, c, new_d), eod))
    # queue id -> plan (by recipient of the first status line)
    by_rcpt = {p.rcpt: p for p in plans_}
    arrival: dict[str, float] = {}
    for qid, atts in attempts.items():
        rcpt = re.search(r"to=<([^>]*)>", raw[atts[0].index])[1]  # type: ignore[index]
        p = by_rcpt.get(rcpt)
        lags = p.lags if p else [random.Random(qid).uniform(5, 300) for _ in range(200)]
        first_lag = max(atts[0].delays[0], 0.5)
        sess = [x.new_session for x in atts]
        rel = chain(sess, lags, first_lag)
        final = raw[atts[-1].index]
        if "status=deferred" in final:  # still queued: the next attempt lies after now
            nxt = rel[-1][1] + next_delay(rel[-1][1], DEFAULTS) + lags[len(atts) - 1]
            lo, hi = now - nxt, now - rel[-1][1] - 30
            arr = lo + (hi - lo) * random.Random(qid + "a").uniform(0.15, 0.85)
        else:  # delivered: at its planned age
            age = (p.age_h * 3600) if p else rel[-1][1] + 600
            arr = now - max(age, rel[-1][1] + 60)
        arrival[qid] = float(int(arr))
        for x, (st, en) in zip(atts, rel):
            x.new_start, x.new_end = arr + st, arr + en
    # every line: its anchor (a status line) and its offset from it
    anchor_of: dict[int, Attempt] = {}
    for atts in attempts.values():
        for x in atts:
            anchor_of[x.index] = x
    by_qid_status: dict[str, list[int]] = {q: [x.index for x in atts] for q, atts in attempts.items()}
    by_pid_status: dict[tuple[str, str], list[int]] = {}
    for atts in attempts.values():
        for x in atts:
            m = parsed[x.index]
            assert m
            by_pid_status.setdefault((m["prog"], m["pid"]), []).append(x.index)
    for v in by_pid_status.values():
        v.sort()

    def pick(cands: list[int], i: int) -> int | None:
        after = [k for k in cands if k >= i]
        if after:
            return after[0]
        before = [k for k in cands if k < i]
        return before[-1] if before else None

    new_times: list[float | None] = [None] * len(raw)
    for i, m in enumerate(parsed):
        if not m:
            continue
        q = qids[i]
        k = pick(by_qid_status[q], i) if q in by_qid_status else pick(by_pid_status.get((m["prog"], m["pid"]), []), i)
        if k is None:
            continue
        x = anchor_of[k]
        delta = x.lab_end - times[i]
        if delta <= 0:
            new_times[i] = x.new_end - delta
        elif delta <= x.lab_session:
            new_times[i] = x.new_end - delta * (x.new_session / x.lab_session if x.lab_session else 1)
        else:
            new_times[i] = x.new_end - x.new_session - (delta - x.lab_session)
    # lines tied to no attempt (master, postfix-script, postsuper...): keep their distance to the
    # nearest line that has a new time
    first = min((t for t in new_times if t is not None), default=now)
    prev: tuple[float, float] | None = None
    for i in range(len(raw)):
        nt = new_times[i]
        if nt is not None:
            prev = (times[i], nt)
        elif parsed[i]:
            new_times[i] = (prev[1] + max(times[i] - prev[0], 0)) if prev else first - 600 + i
    # delays=: a is the time before the last qmgr pick-up (incl. the deferred queue), delay= the total
    for q, atts in attempts.items():
        for x in atts:
            a, b, c, d = x.delays
            total = x.new_end - arrival[q]
            new_a = max(total - (b + c + d), 0.0)
            s = STATUS.search(raw[x.index])
            assert s is not None
            d_text = _num(d) if x.eod else s["d"]  # b, c (and d unless stretched) stay as logged
            raw[x.index] = re.sub(r"delay=[\d.]+, delays=[\d./]+,",
                                  f"delay={_num(total)}, delays={_num(new_a)}/{s['b']}/{s['c']}/{d_text},", raw[x.index])
    order = sorted(range(len(raw)), key=lambda i: ((new_times[i] or 0.0), i))
    out = []
    for i in order:
        m = parsed[i]
        if not m:
            continue
        t = min(new_times[i] or now, now - 1)
        out.append(_fmt_ts(t) + raw[i][len(m["ts"]):])
    return "\n".join(out) + "\n", arrival


def _strip_config(text: str) -> str:
    return "".join(line + "\n" for line in text.splitlines() if line.split("=", 1)[0].strip() not in STRIPPED)


def _shift_postqueue_p(text: str, arrival: dict[str, float]) -> str:
    def sub(m: re.Match[str]) -> str:
        t = arrival.get(m["qid"])
        if t is None:
            return m[0]
        return m["head"] + time.strftime("%a %b ", time.localtime(t)) + f"{time.localtime(t).tm_mday:2d} " + time.strftime("%H:%M:%S", time.localtime(t))

    return re.sub(r"(?m)^(?P<head>(?P<qid>[0-9A-F]+)[*!]?\s+\d+ )\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d", sub, text)


def rewrite(bundle: Path, out: Path, plans_: list[Plan], meta: dict[str, Any]) -> dict[str, Any]:
    now = float(int(meta["recorded_at"]))
    with tarfile.open(bundle) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]

        def entry(name: str) -> bytes:
            return tar.extractfile(name).read()  # type: ignore[union-attr]

        cmds = [(c, entry(c["stdout"]).decode(), entry(c["stderr"]).decode()) for c in manifest["commands"]]
        files = [(f, entry(f["stored"])) for f in manifest["files"]]
    log_path = meta["log_path"]
    log_text = next(data.decode() for f, data in files if f["path"] == log_path)
    new_log, arrival = shift(log_text, plans_, now)
    defaults = parse_postconf(next(o for c, o, _ in cmds if c["argv"] == ["postconf", "-d"]))
    recorded = time.strftime("%Y-%m-%d", time.gmtime(now))
    w = SnapshotWriter(host="local", postfix_version=manifest["postfix_version"], extra={
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "origin": (f"pfdiag demo: recorded from the pfdiag test lab (real Postfix {manifest['postfix_version']} on "
                   f"loopback, tests/lab/make_demo.py) on {recorded}; timestamps shifted onto Postfix's retry schedule "
                   "(each message's attempts at its arrival +0, +5, +10, +20, +40, +80 min, then every ~67 min); "
                   "the lab's 5 s timeouts are shown as the defaults (end-of-data waits as 600 s) and its "
                   "concurrency settings are left out of the configuration; /etc/resolv.conf is the lab's (loopback)"),
        "since": None, "redacted": False, "problems": manifest.get("problems", []),
    })  # fmt: skip
    for c, stdout, stderr in cmds:
        argv = c["argv"]
        if argv == ["postconf", "-n"]:
            stdout = _strip_config(stdout)
        elif argv[:2] == ["postconf", "-h"] and len(argv) > 2:
            vals = stdout.splitlines()
            names = [n for n in argv[2:] if f"{n}: unknown parameter" not in stderr]
            if len(vals) == len(names):
                stdout = "".join((defaults.get(n, v) if n in STRIPPED else v) + "\n" for n, v in zip(names, vals))
        elif argv == ["postqueue", "-j"]:
            lines = []
            for line in stdout.splitlines():
                if line.strip():
                    obj = json.loads(line)
                    if obj.get("queue_id") in arrival:
                        obj["arrival_time"] = int(arrival[obj["queue_id"]])
                    line = json.dumps(obj, separators=(", ", ": "))
                lines.append(line + "\n")
            stdout = "".join(lines)
        elif argv == ["postqueue", "-p"]:
            stdout = _shift_postqueue_p(stdout, arrival)
        w.add_command(CommandResult(tuple(argv), c["returncode"], stdout, stderr, c["duration"]))
    for f, data in files:
        if f["path"].startswith(log_path + "."):
            continue  # a rotated log of an earlier lab session (another test's mail)
        if f["path"] == log_path:
            w.add_file(f["path"], new_log.encode(), now)
        elif f["path"] == "/etc/resolv.conf":  # the lab's own resolver: this machine's is no part of the story
            chroot = next((d for g, d in files if g["path"].endswith("/etc/resolv.conf") and g is not f), data)
            w.add_file(f["path"], chroot, f["mtime"])
        elif f["path"].endswith("/main.cf"):
            w.add_file(f["path"], _strip_config(data.decode()).encode(), f["mtime"])
        else:
            w.add_file(f["path"], data, f["mtime"])
    out.parent.mkdir(parents=True, exist_ok=True)
    w.write(str(out))
    ages = sorted((now - t) / 3600 for t in arrival.values())
    return {"out": str(out), "bytes": out.stat().st_size, "messages": len(arrival),
            "ages_h": [round(ages[0], 2), round(ages[-1], 2)], "log_lines": new_log.count("\n")}


def build(out: Path = OUT) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "recorded.tar.gz"
        todo, meta = record(raw, log=lambda s: print(s, file=sys.stderr, flush=True))
        summary = rewrite(raw, out, todo, meta)
        summary["copies_at_peer"] = meta["copies"]
        summary["accepted_by_peer"] = meta["accepted"]
        return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    print(json.dumps(build(args.out), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
