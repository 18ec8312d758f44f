#!/usr/bin/env python3
"""Benchmark `pfdiag queue` against qshape on a real 10,000-message Postfix queue.

    python benchmarks/queue_vs_qshape/run.py [--messages 10000] [--runs 3] [--keep] [--before DIR]

1. Starts a lab Postfix of tests/lab/postfix.py, an instance of its own (config dir
   /etc/postfix-pfdiag-qbench, loopback only; the test suite's instance is left alone) with 20 test domains (d00.qbench.test ...) routed to a loopback port
   where nothing listens, and fills its queue over SMTP: several parallel sessions to the
   lab's own smtpd on 127.0.0.1 sending many messages each. Every first delivery attempt
   gets "connection refused", so the mail lands in the deferred queue (the backoff times
   are raised so nothing is retried while we measure). The fill is timed: submission and
   until the whole queue is deferred. A lab left running by `--keep` with at least
   --messages deferred messages is reused as it is.
2. Times, best of --runs, alternating the tools, stdout to /dev/null, with each one's peak
   RSS (wait4's ru_maxrss) and the load average before and after:
       pfdiag queue -c /etc/postfix-pfdiag-qbench                  (text: a summary, as qshape's)
       pfdiag queue -c /etc/postfix-pfdiag-qbench --format json    (every message listed)
       qshape -c /etc/postfix-pfdiag-qbench deferred
   and with --before DIR the same pfdiag commands from that tree (PYTHONPATH=DIR).
   The like-for-like comparison is the text one: qshape prints a table of domains x age
   buckets, `pfdiag queue` in text the same table plus the groups by cause and destination
   and the oldest messages; --format json writes every message's entry and forecast (70 MB
   at 100,000 messages), which qshape has no counterpart of.
3. Times checks.postfix.postqueue.parse_postqueue_json on 100,000 `postqueue -j` lines
   made from the real records of the filled queue (queue ids and addresses varied).
4. Prints a PASS/FAIL table, writes out/results.json, cleans the queue and stops the
   lab (unless --keep). Exit status 1 when a target fails.

Targets: pfdiag/qshape wall-time ratio <= 1.0, text and json each; pfdiag's peak RSS < 100 MB
(issue 18: at 100,000 messages, --messages 100000); 100k records parsed in < 2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import smtplib
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
OUT = HERE / "out"
sys.path.insert(0, str(REPO))

from checks.postfix.postqueue import parse_postqueue_json  # noqa: E402
from tests.lab import postfix as labmod  # noqa: E402
from tests.lab.postfix import PostfixLab, free_port  # noqa: E402

DOMAINS = [f"d{i:02d}.qbench.test" for i in range(20)]
SENDER = "bench@sender.test"
QSHAPE = shutil.which("qshape") or "/usr/sbin/qshape"
PFDIAG = shutil.which("pfdiag", path=str(Path(sys.executable).parent)) or shutil.which("pfdiag") or "pfdiag"

# Nothing is retried while we measure; mail arrives as fast as cleanup can take it.
SETTINGS = {
    "in_flow_delay": "0s",
    "minimal_backoff_time": "4h",
    "maximal_backoff_time": "8h",
    "queue_run_delay": "4h",
}


def count_queue(lab: PostfixLab, name: str) -> int:
    n = 0
    for _dir, _subdirs, files in os.walk(lab.queue_dir / name):
        n += len(files)
    return n


# An instance of its own: a test session on the shared "pfdiag-lab" instance empties its
# queue, which would wipe a queue kept with --keep (and a fill would disturb the tests).
LAB_NAME = "pfdiag-qbench"


def make_lab() -> PostfixLab:
    lab = PostfixLab(LAB_NAME, log_name="qbench.log", settings=SETTINGS)
    dead = free_port()  # nothing listens here: connection refused, mail deferred
    for d in DOMAINS:
        lab.route(d, dead)
    return lab


def send_batch(port: int, start: int, count: int, errors: list[str]) -> None:
    rnd = random.Random(start)
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
            s.ehlo("bench.sender.test")
            for i in range(start, start + count):
                rcpts = [f"user{i}-{k}@{rnd.choice(DOMAINS)}" for k in range(1 + (i % 3 == 0))]
                msg = (
                    f"From: {SENDER}\r\nTo: {', '.join(rcpts)}\r\nSubject: qbench {i}\r\n"
                    f"Message-ID: <qbench.{i}.{start}@sender.test>\r\nX-Pfdiag-Lab: yes\r\n\r\n"
                    f"queue benchmark message {i}\r\n"
                )
                s.sendmail(SENDER, rcpts, msg)
    except Exception as exc:  # noqa: BLE001 - reported by the caller
        errors.append(f"{type(exc).__name__}: {exc}")


def fill(lab: PostfixLab, messages: int, sessions: int) -> dict[str, float]:
    per = [messages // sessions + (i < messages % sessions) for i in range(sessions)]
    errors: list[str] = []
    threads, start = [], 0
    t0 = time.monotonic()
    for n in per:
        threads.append(threading.Thread(target=send_batch, args=(lab.smtpd_port, start, n, errors)))
        start += n
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    submitted = time.monotonic() - t0
    if errors:
        raise SystemExit(f"fill failed: {errors[:3]}")
    deadline = time.monotonic() + 600
    while True:
        deferred = count_queue(lab, "deferred")
        busy = sum(count_queue(lab, q) for q in ("maildrop", "incoming", "active"))
        if deferred >= messages and busy == 0:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"queue did not settle: {deferred} deferred, {busy} still in maildrop/incoming/active")
        time.sleep(0.2)
    settled = time.monotonic() - t0
    return {"sessions": sessions, "submit_s": round(submitted, 3), "all_deferred_s": round(settled, 3),
            "messages_per_s": round(messages / submitted, 1)}  # fmt: skip


CPU: dict[str, list[float]] = {}  # per command line: user + system seconds of the process itself


def time_cmd(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall time (s) and the process's own peak RSS (MB, wait4's ru_maxrss; its children,
    postqueue for pfdiag, are not counted, nor is showq, a Postfix daemon). Its own CPU time
    goes to CPU: on a shared machine it moves less with the load than the wall time."""
    t0 = time.perf_counter()
    with open(os.devnull, "wb") as null:
        proc = subprocess.Popen(argv, stdout=null, stderr=subprocess.PIPE, env=env)
        assert proc.stderr is not None
        err = proc.stderr.read()  # small: only a failure writes here
        _, status, usage = os.wait4(proc.pid, 0)
    dt = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}: {err.decode(errors='replace')[-500:]}")
    CPU.setdefault(" ".join(argv) + env.get("PYTHONPATH", ""), []).append(usage.ru_utime + usage.ru_stime)
    return dt, usage.ru_maxrss / 1024


def make_records(lab: PostfixLab, n: int) -> list[str]:
    base = lab.postqueue("-j", check=True).stdout.splitlines()
    base = [ln for ln in base if ln.strip()] or (REPO / "tests/data/lab/postqueue-j.jsonl").read_text().splitlines()
    protos = [json.loads(ln) for ln in base[:500]]
    rnd = random.Random(7)
    out = []
    for i in range(n):
        rec = json.loads(json.dumps(protos[i % len(protos)]))
        rec["queue_id"] = f"{i:011X}"
        rec["arrival_time"] = int(rec.get("arrival_time", time.time())) - rnd.randrange(0, 5 * 86400)
        for k, r in enumerate(rec.get("recipients", [])):
            r["address"] = f"u{i}-{k}@{rnd.choice(DOMAINS).replace('d', 'x', 1)}{rnd.randrange(300)}.test"
        out.append(json.dumps(rec, separators=(", ", ": ")))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--sessions", type=int, default=8, help="parallel SMTP sessions for the fill")
    ap.add_argument("--records", type=int, default=100_000, help="postqueue -j records for the parse timing")
    ap.add_argument("--keep", action="store_true", help="leave the lab running with its queue")
    ap.add_argument("--out", default="results.json", help="file name in out/ (default results.json)")
    ap.add_argument("--before", metavar="DIR", help="also time pfdiag from another commit's tree (git archive REV | tar -x -C DIR)")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    # bytecode, as `pip install` leaves it: with PYTHONDONTWRITEBYTECODE set (as on the CI machines) an
    # editable checkout would otherwise compile every edited module again in every timed start-up
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "checks"), str(REPO / "diagnose")],
                   check=False, capture_output=True)  # fmt: skip

    lab = make_lab()
    print(f"waiting for the lab lock {lab.lock_path} ...", flush=True)
    lab.acquire(timeout=1200)
    results: dict[str, object] = {"host": platform.node(), "python": platform.python_version(),
                                  "cpus": os.cpu_count(), "messages_target": args.messages}  # fmt: skip
    try:
        reused = lab.running() and count_queue(lab, "deferred") >= args.messages
        if reused:
            print(f"reusing the running lab: {count_queue(lab, 'deferred')} deferred messages", flush=True)
            results["fill"] = {"reused": True}
        else:
            lab.start()
            print(f"lab started in {lab.start_seconds:.1f} s, smtpd on 127.0.0.1:{lab.smtpd_port}; filling ...",
                  flush=True)  # fmt: skip
            results["fill"] = fill(lab, args.messages, args.sessions)
            print(f"fill: {results['fill']}", flush=True)
        queued = count_queue(lab, "deferred")
        results["deferred_messages"] = queued
        bad = lab.loopback_violations()
        if bad:
            raise SystemExit(f"lab is not loopback-only: {bad}")

        env = {**lab.env, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
        cfg = str(lab.config_dir)
        tools = {
            "pfdiag text": [PFDIAG, "queue", "-c", cfg],  # the default format: a summary, as qshape's
            "pfdiag json": [PFDIAG, "queue", "-c", cfg, "--format", "json"],  # every message listed
            "qshape": [QSHAPE, "-c", cfg, "deferred"],
        }
        envs = {k: env for k in tools}
        if args.before:  # another commit's tree, alternating with the others (its modules first on the path)
            before = str(Path(args.before).resolve())
            subprocess.run([sys.executable, "-m", "compileall", "-q", f"{before}/checks", f"{before}/diagnose"],
                           check=False, capture_output=True)  # fmt: skip
            for fmt in ("text", "json"):
                tools[f"pfdiag-before {fmt}"] = tools[f"pfdiag {fmt}"]
                envs[f"pfdiag-before {fmt}"] = {**env, "PYTHONPATH": before}
        for name, argv in tools.items():  # warm-up (page cache, imports), untimed
            time_cmd(argv, envs[name])
        CPU.clear()  # not the warm-ups
        times: dict[str, list[float]] = {k: [] for k in tools}
        rss: dict[str, list[float]] = {k: [] for k in tools}
        load = [os.getloadavg()[0]]
        for _ in range(args.runs):
            for name, argv in tools.items():
                dt, mb = time_cmd(argv, envs[name])
                times[name].append(dt)
                rss[name].append(mb)
        load.append(os.getloadavg()[0])
        best = {k: min(v) for k, v in times.items()}
        median = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
        peak = {k: max(v) for k, v in rss.items()}
        ratio = {f: best[f"pfdiag {f}"] / best["qshape"] for f in ("text", "json")}
        median_ratio = {f: median[f"pfdiag {f}"] / median["qshape"] for f in ("text", "json")}
        cpu_s = {k: [round(x, 3) for x in CPU[" ".join(v) + envs[k].get("PYTHONPATH", "")]] for k, v in tools.items()}
        results["queue"] = qres = {"commands": {k: " ".join(v) for k, v in tools.items()},
                            "runs_s": {k: [round(x, 3) for x in v] for k, v in times.items()},
                            "best_s": {k: round(v, 3) for k, v in best.items()},
                            "median_s": {k: round(v, 3) for k, v in median.items()},
                            "ratio": {k: round(v, 3) for k, v in ratio.items()},
                            "median_ratio": {k: round(v, 3) for k, v in median_ratio.items()},
                            "rss_mb": {k: [round(x, 1) for x in v] for k, v in rss.items()},
                            "peak_rss_mb": {k: round(v, 1) for k, v in peak.items()},
                            "load_1min": [round(x, 2) for x in load],
                            "cpu_s": cpu_s}  # fmt: skip

        lines = make_records(lab, args.records)
        text = "\n".join(lines) + "\n"
        parse_times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            listing = parse_postqueue_json(text)
            n = sum(1 for _ in listing)
            parse_times.append(time.perf_counter() - t0)
        if n != args.records or listing.malformed:
            raise SystemExit(f"parse: {n} records, {listing.malformed} malformed (expected {args.records})")
        parse_best = min(parse_times)
        results["parse"] = {"records": args.records, "bytes": len(text), "runs_s": [round(x, 3) for x in parse_times],
                            "best_s": round(parse_best, 3)}  # fmt: skip
    finally:
        if not args.keep:
            try:
                if lab.running():
                    lab.clear_queue()
            finally:
                lab.stop()
        else:
            labmod._RUNNING.discard(lab)  # the atexit hook would stop it
            lab.release()

    targets = [
        (f"pfdiag queue (text) / qshape (wall, best of {args.runs})", f"{ratio['text']:.2f}x", "<= 1.0", ratio["text"] <= 1.0),
        (f"pfdiag queue -f json (all listed) / qshape (best of {args.runs})", f"{ratio['json']:.2f}x", "<= 1.0",
         ratio["json"] <= 1.0),
        ("pfdiag queue (text) peak RSS (max of the runs)", f"{peak['pfdiag text']:.0f} MB", "< 100 MB",
         peak["pfdiag text"] < 100),
        ("pfdiag queue -f json peak RSS (max of the runs)", f"{peak['pfdiag json']:.0f} MB", "< 100 MB",
         peak["pfdiag json"] < 100),
        (f"parse {args.records:,} postqueue -j records", f"{parse_best:.2f} s", "< 2 s", parse_best < 2.0),
    ]
    results["targets"] = [{"target": t, "value": v, "limit": lim, "pass": ok} for t, v, lim, ok in targets]
    fill_info = results["fill"]
    print()
    print(f"queue: {queued:,} deferred messages in {lab.config_dir}")
    if isinstance(fill_info, dict) and not fill_info.get("reused"):
        print(f"fill:  submitted in {fill_info['submit_s']:.1f} s ({fill_info['messages_per_s']:.0f} msg/s over "
              f"{fill_info['sessions']} SMTP sessions), all deferred after {fill_info['all_deferred_s']:.1f} s")  # fmt: skip
    print("best:    " + "   ".join(f"{k} {v:.3f} s" for k, v in best.items()) + f"   (runs: {qres['runs_s']})")
    print("medians: " + "   ".join(f"{k} {v:.3f} s" for k, v in median.items()))
    print("pfdiag / qshape: " + "   ".join(f"{f} best {ratio[f]:.2f}x, median {median_ratio[f]:.2f}x" for f in ratio))
    print("CPU (user+sys, median): " + "   ".join(f"{k} {sorted(v)[len(v) // 2]:.3f} s"
                                               for k, v in cpu_s.items()))
    print("peak RSS: " + "   ".join(f"{k} {v:.1f} MB" for k, v in peak.items()) + f"; load {load[0]:.2f} -> {load[1]:.2f}")
    print()
    w = max(len(t[0]) for t in targets)
    print(f"{'target'.ljust(w)}  {'value':>8}  {'limit':>7}  result")
    for t, v, lim, ok in targets:
        print(f"{t.ljust(w)}  {v:>8}  {lim:>7}  {'PASS' if ok else 'FAIL'}")
    (OUT / args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nresults: {OUT / args.out}")
    return 0 if all(t[3] for t in targets) else 1


if __name__ == "__main__":
    sys.exit(main())
