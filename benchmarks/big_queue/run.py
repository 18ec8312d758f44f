#!/usr/bin/env python3
"""Benchmark `pfdiag report` against `pfdiag queue` on big queues: time and peak memory.

    python benchmarks/big_queue/run.py [--sizes 20000,50000,100000] [--runs 2] [--before DIR]

1. Makes, per size, a snapshot bundle with that many queued messages (bundle.py: the demo
   snapshot shipped with pfdiag - real postconf answers, a real log - with a synthetic
   `postqueue -j` made from its real records; 70% wait for one cause). No Postfix needed.
2. Runs, best of --runs, alternating, stdout to /dev/null:
       pfdiag report --snapshot B -f json --budget 30
       pfdiag queue  --snapshot B -f json
   each a process of its own, timed and with its peak RSS (wait4's ru_maxrss).
3. With --before DIR (a checkout of another commit, e.g. `git archive REV | tar -x -C DIR`),
   the same commands from that tree as well (PYTHONPATH=DIR), for before/after numbers.
4. Prints a table, writes out/results.json. Exit status 1 when a target fails.

Targets (issue 13): report wall time <= 2 x queue + 2 s at every size; report peak RSS
< 100 MB at every size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
OUT = HERE / "out"
sys.path.insert(0, str(HERE))

from bundle import make_bundle  # noqa: E402


def measure(argv: list[str], env: dict[str, str], cwd: str, timeout: float) -> tuple[float, float, int]:
    """(wall seconds, peak RSS in MB, exit status) of one process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=cwd)
    deadline = t0 + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            return float("inf"), usage.ru_maxrss / 1024, -9
        time.sleep(0.01)
    dt = time.perf_counter() - t0
    rc = os.waitstatus_to_exitcode(status)
    proc.returncode = rc
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if rc not in (0, 4):  # report: 4 = deferrals with a root cause
        raise SystemExit(f"{' '.join(argv)} exited {rc}: {err[-600:]}")
    return dt, usage.ru_maxrss / 1024, rc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="20000,50000,100000")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--before", metavar="DIR", help="also run pfdiag from this tree (another commit)")
    ap.add_argument("--before-runs", type=int, default=1, help="runs of the --before tree (default 1: it may be slow)")
    ap.add_argument("--timeout", type=float, default=900.0, help="per command (s); a slower run counts as inf")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    OUT.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "checks"), str(REPO / "diagnose")],
                   check=False, capture_output=True)  # fmt: skip
    trees = {"after": str(REPO)}
    if args.before:
        trees = {"before": str(Path(args.before).resolve()), **trees}
    results: dict[str, object] = {"host": platform.node(), "python": platform.python_version(),
                                  "cpus": os.cpu_count(), "sizes": {}}  # fmt: skip
    rows = []
    for n in sizes:
        bundle = make_bundle(OUT / f"bundle-{n}", n)
        cmds = {"report": ["report", "--snapshot", str(bundle), "-f", "json", "--budget", "30"],
                "queue": ["queue", "--snapshot", str(bundle), "-f", "json"]}  # fmt: skip
        per: dict[str, dict[str, object]] = {}
        for tree, path in trees.items():
            env = {**os.environ, "PYTHONPATH": path}
            best: dict[str, tuple[float, float]] = {}
            for _ in range(args.before_runs if tree == "before" else args.runs):
                for name, tail in cmds.items():
                    # cwd too: `python -m` puts it before PYTHONPATH on sys.path
                    dt, rss, _rc = measure([sys.executable, "-m", "diagnose.cli", *tail], env, path, args.timeout)
                    old = best.get(name)
                    best[name] = (min(dt, old[0]), max(rss, old[1])) if old else (dt, rss)
                if best["report"][0] == float("inf"):
                    break  # one timeout is enough
            rep_s, rep_mb = best["report"]
            q_s, q_mb = best["queue"]
            per[tree] = {"report_s": round(rep_s, 2), "report_rss_mb": round(rep_mb, 1), "queue_s": round(q_s, 2),
                         "queue_rss_mb": round(q_mb, 1), "ratio": round(rep_s / q_s, 2)}  # fmt: skip
            rows.append((n, tree, rep_s, q_s, rep_s / q_s, rep_mb, q_mb))
            print(f"{n:>7} {tree:<6} report {rep_s:7.2f} s {rep_mb:6.1f} MB   queue {q_s:6.2f} s {q_mb:6.1f} MB   "
                  f"ratio {rep_s / q_s:5.2f}", flush=True)  # fmt: skip
        results["sizes"][str(n)] = per  # type: ignore[index]

    targets = []
    for n, tree, rep_s, q_s, _ratio, rep_mb, _q_mb in rows:
        if tree != "after":
            continue
        targets.append((f"{n:,}: report <= 2 x queue + 2 s", f"{rep_s:.2f} s", f"{2 * q_s + 2:.2f} s", rep_s <= 2 * q_s + 2))
        targets.append((f"{n:,}: report peak RSS < 100 MB", f"{rep_mb:.0f} MB", "100 MB", rep_mb < 100))
    results["targets"] = [{"target": t, "value": v, "limit": lim, "pass": ok} for t, v, lim, ok in targets]
    print()
    print("| messages | tree | report | queue | report / queue | report RSS | queue RSS |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for n, tree, rep_s, q_s, ratio, rep_mb, q_mb in rows:
        print(f"| {n:,} | {tree} | {rep_s:.2f} s | {q_s:.2f} s | {ratio:.2f} | {rep_mb:.0f} MB | {q_mb:.0f} MB |")
    print()
    w = max(len(t[0]) for t in targets)
    for t, v, lim, ok in targets:
        print(f"{t.ljust(w)}  {v:>9}  {lim:>9}  {'PASS' if ok else 'FAIL'}")
    (OUT / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nresults: {OUT / 'results.json'}")
    return 0 if all(t[3] for t in targets) else 1


if __name__ == "__main__":
    sys.exit(main())
