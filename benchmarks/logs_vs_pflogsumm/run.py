#!/usr/bin/env python3
"""Benchmark `pfdiag logs` against pflogsumm on generated Postfix logs.

    python benchmarks/logs_vs_pflogsumm/run.py [--sizes 1000000,4000000] [--runs 3]

For each size: generate (or reuse) a log in out/, then run in the same session
`pflogsumm FILE` and `pfdiag logs FILE --format json`, both with stdout going to
/dev/null, alternating the two tools, and keep the best wall time of --runs runs.
Memory: every run's peak RSS is the tool's ru_maxrss (the largest single process,
including reaped worker processes), taken by GNU time or a small launcher that
forks the tool afresh (see run_once); one extra untimed run per tool
samples the whole process tree's PSS every 20 ms (pfdiag forks workers for big
logs, and their sum is what the machine pays). That run also warms the page cache
and captures the outputs for the counts cross-check.

Targets (exit status 1 when one fails):
  speed     pfdiag at least 5x faster than pflogsumm (wall time, every size)
  memory    pfdiag peak memory under 150 MB (every size; the larger of the
            max single-process RSS and the sampled tree PSS)
  flat      pfdiag peak memory at the largest size <= 1.2x the smallest size
  agree     pfdiag's deferral counts within 10x of pflogsumm's (deferral lines
            and deferred messages), i.e. same order of magnitude
  traffic   pfdiag's `traffic` totals identical to pflogsumm's Grand Totals
            (received, delivered, forwarded, deferred and deferrals, bounced,
            rejected, reject warnings, held, discarded)
Results: a table on stdout and out/results.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
OUT = HERE / "out"
sys.path.insert(0, str(HERE))

import generate  # noqa: E402  (next to this file)

GENERATOR_SHA256 = hashlib.sha256((HERE / "generate.py").read_bytes()).hexdigest()  # of the code imported above

SPEED_TARGET = 5.0
MEMORY_TARGET_MB = 150.0
FLAT_TARGET = 1.2
AGREE_FACTOR = 10.0
SAMPLE_EVERY = 0.02


# -- tools ------------------------------------------------------------------------------


def find_pflogsumm() -> str:
    path = shutil.which("pflogsumm") or ("/usr/sbin/pflogsumm" if os.path.exists("/usr/sbin/pflogsumm") else None)
    if path:
        return path
    print("pflogsumm is not installed: installing it with apt-get", file=sys.stderr)
    prefix = [] if os.geteuid() == 0 else (["sudo", "-n"] if shutil.which("sudo") else None)
    if prefix is None:
        sys.exit("pflogsumm is missing and we are not root: run `apt-get install -y pflogsumm` as root")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = prefix + ["apt-get", "install", "-y", "pflogsumm"]
    if subprocess.run(cmd, env=env).returncode != 0:
        subprocess.run(prefix + ["apt-get", "update"], env=env, check=False)
        subprocess.run(cmd, env=env, check=True)
    path = shutil.which("pflogsumm") or "/usr/sbin/pflogsumm"
    if not os.path.exists(path):
        sys.exit("pflogsumm is still missing after apt-get install")
    return path


def pfdiag_python() -> str:
    """The python that can import pfdiag's `diagnose`: this one, else the repo's venv."""
    for py in (sys.executable, str(REPO / ".venv" / "bin" / "python")):
        if os.path.exists(py) and subprocess.run([py, "-c", "import diagnose.cli"], capture_output=True, cwd=REPO).returncode == 0:
            return py
    sys.exit("cannot find a python that imports pfdiag (diagnose.cli): run with the repo's .venv/bin/python")


def tool_versions(pflogsumm: str, py: str) -> dict:
    v: dict = {}
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "pflogsumm"], capture_output=True, text=True)
        v["pflogsumm"] = out.stdout.strip() or None
    except OSError:
        v["pflogsumm"] = None
    out = subprocess.run([py, "-m", "diagnose.cli", "--version"], capture_output=True, text=True, cwd=REPO)
    v["pfdiag"] = out.stdout.strip()
    out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    v["pfdiag_commit"] = out.stdout.strip() or None
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no", "--", "diagnose", "checks"], capture_output=True, text=True)
    v["pfdiag_tree_dirty"] = bool(dirty.stdout.strip())
    v["python"] = subprocess.run([py, "-c", "import sys; print(sys.version.split()[0])"], capture_output=True, text=True).stdout.strip()
    v["perl"] = (subprocess.run(["perl", "-e", "print $^V"], capture_output=True, text=True).stdout.strip() or None) if shutil.which("perl") else None
    return v


# -- logs -------------------------------------------------------------------------------------


def log_for(lines: int, seed: int) -> Path:
    """The generated log of `lines` lines, regenerated when generate.py changed."""
    OUT.mkdir(exist_ok=True)
    path = OUT / f"postfix-{lines}-seed{seed}.log"
    meta = path.with_suffix(".meta.json")
    want = {"lines": lines, "seed": seed, "generate_sha256": GENERATOR_SHA256}
    if path.exists() and meta.exists():
        try:
            if json.loads(meta.read_text()) == want:
                return path
        except ValueError:
            pass
    print(f"generating {path.name} ({lines:,} lines) ...", file=sys.stderr, flush=True)
    t = time.perf_counter()
    n = generate.generate(str(path), lines, seed)
    if n != lines:
        sys.exit(f"generate.py wrote {n:,} lines, not {lines:,}")
    meta.write_text(json.dumps(want) + "\n")
    print(f"  {path.stat().st_size / 1e6:,.0f} MB in {time.perf_counter() - t:.1f} s", file=sys.stderr, flush=True)
    return path


# -- measuring ------------------------------------------------------------------------------------


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    todo.extend(int(c) for c in fh.read().split())
        except OSError:
            pass
    return pids


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


# A process's peak RSS (ru_maxrss) includes what it inherited at fork, before exec:
# a child forked straight from this Python (which generated the logs) would report
# this process's size. So every tool runs under a small launcher that forks it
# afresh and reports the tool's own ru_maxrss: GNU time when present (~1 MB floor),
# else a minimal Python launcher (a floor of about its own size, ~8 MB).
GNU_TIME = "/usr/bin/time" if os.path.exists("/usr/bin/time") else None
PY_LAUNCHER = (
    "import os, sys, resource\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "    try:\n"
    "        os.execvp(sys.argv[2], sys.argv[2:])\n"
    "    finally:\n"
    "        os._exit(127)\n"
    "_, status = os.waitpid(pid, 0)\n"
    "ru = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "open(sys.argv[1], 'w').write(f'{ru.ru_maxrss} {ru.ru_utime} {ru.ru_stime}\\n')\n"
    "sys.exit(os.waitstatus_to_exitcode(status) & 255)\n"
)


def launcher() -> str:
    return "GNU time" if GNU_TIME else "python launcher"


def run_once(cmd: list[str], stdout_path: str, sample: bool, cwd: Path) -> dict:
    """One run: wall time, CPU and peak RSS of the tool (and its reaped workers),
    and, when sampling, the peak PSS of its whole process tree."""
    usage = OUT / "last-usage.txt"
    if GNU_TIME:
        full = [GNU_TIME, "-f", "%M %U %S", "-o", str(usage), *cmd]
    else:
        full = [sys.executable, "-I", "-S", "-c", PY_LAUNCHER, str(usage), *cmd]
    with open(stdout_path, "wb") as out, open(OUT / "last-stderr.txt", "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(full, stdout=out, stderr=err, cwd=cwd)
        peak_pss = 0
        peak_procs = 1
        if sample:
            while True:
                pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                pids = _tree(proc.pid)[1:]  # the tool and its workers, not the launcher
                peak_procs = max(peak_procs, len(pids))
                peak_pss = max(peak_pss, sum(_pss_kb(p) for p in pids))
                time.sleep(SAMPLE_EVERY)
        else:
            pid, status, _ = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        msg = (OUT / "last-stderr.txt").read_text(errors="replace")[-2000:]
        sys.exit(f"{' '.join(cmd)} exited with {proc.returncode}:\n{msg}")
    maxrss_kb, utime, stime = usage.read_text().split()[-3:]
    result = {
        "wall_s": round(wall, 3),
        "cpu_s": round(float(utime) + float(stime), 3),
        "max_rss_mb": round(int(maxrss_kb) / 1024, 1),
    }
    if sample:
        result["tree_pss_mb"] = round(peak_pss / 1024, 1)
        result["processes"] = peak_procs
    return result


# pflogsumm's Grand Totals lines -> pfdiag's `traffic` keys (docs/logs-json.md)
GRAND_TOTALS = {
    "received": "received",
    "delivered": "delivered",
    "forwarded": "forwarded",
    "deferred": "deferred",
    "bounced": "bounced",
    "rejected": "rejected",
    "reject warnings": "reject_warnings",
    "held": "held",
    "discarded": "discarded",
}


def _grand_total(text: str, label: str) -> tuple[int, str] | None:
    """'  22277   received' -> (22277, ''); pflogsumm prints counts over 512k as '1234k'."""
    m = re.search(rf"^\s*(\d+)([km]?)\s+{label}\b", text, re.M)
    return (int(m[1]), m[2]) if m else None


def pflogsumm_counts(text: str) -> dict:
    m = re.search(r"^\s*(\d+)\s+deferred\s+\((\d+)\s+deferrals\)", text, re.M)
    grand = {key: _grand_total(text, label) for label, key in GRAND_TOTALS.items()}
    d = re.search(r"^\s*\d+[km]?\s+deferred\s+\((\d+)([km]?)\s+deferrals\)", text, re.M)
    grand["deferrals"] = (int(d[1]), d[2]) if d else ((0, "") if grand["deferred"] else None)  # printed when not 0
    return {
        "deferred_messages": int(m[1]) if m else None,
        "deferral_lines": int(m[2]) if m else None,
        "delivered": grand["delivered"][0] if grand["delivered"] else None,
        "bounced": grand["bounced"][0] if grand["bounced"] else None,
        "grand_totals": grand,
    }


def traffic_agrees(pfdiag_traffic: dict | None, grand: dict) -> list[str]:
    """The grand totals where pfdiag's count differs from pflogsumm's (empty: all agree).
    A count pflogsumm printed in 'k' (over 512k) is compared as pflogsumm rounds it."""
    if not pfdiag_traffic:
        return ["pfdiag has no traffic totals"]
    bad = []
    for key, shown in grand.items():
        if shown is None:
            bad.append(f"{key}: missing in pflogsumm's output")
            continue
        value, unit = shown
        ours = pfdiag_traffic.get(key)
        if ours is None or {"": ours, "k": ours // 1024, "m": ours // 1048576}[unit] != value:
            bad.append(f"{key}: pfdiag {ours} / pflogsumm {value}{unit}")
    return bad


def pfdiag_counts(report: dict) -> dict:
    tot = report.get("totals", {})
    sts = tot.get("statuses", {})
    causes = report.get("causes", [])
    return {
        "deferred_messages": tot.get("messages_deferred"),
        "deferral_lines": sts.get("deferred"),
        "delivered": sts.get("sent"),
        "bounced": sts.get("bounced"),
        "expired": sts.get("expired"),
        "collateral_lines": tot.get("collateral_lines"),
        "causes": {c["id"]: c["deferrals"] + c.get("collateral", 0) for c in causes},
        "outcomes": report.get("outcomes"),
        "end_of_data_messages": report.get("end_of_data", {}).get("messages"),
        "traffic": report.get("traffic"),
    }


def bench_size(lines: int, args, pflogsumm: str, py: str) -> dict:
    log = log_for(lines, args.seed)
    tools = {
        "pflogsumm": [pflogsumm, str(log)],
        "pfdiag": [py, "-m", "diagnose.cli", "logs", str(log), "--format", "json"],
    }
    if args.pfdiag_j1:
        tools["pfdiag -j1"] = tools["pfdiag"] + ["--jobs", "1"]
    res: dict = {"lines": lines, "bytes": log.stat().st_size, "file": str(log.relative_to(REPO)), "tools": {}}
    # 1) untimed: warms the page cache, samples tree memory, keeps the outputs
    for name, cmd in tools.items():
        if name == "pfdiag -j1":
            continue
        outp = OUT / f"{name.replace(' ', '')}-{lines}.out"
        print(f"  {name}: memory-sampling run ...", file=sys.stderr, flush=True)
        res["tools"][name] = {"sampled": run_once(cmd, str(outp), True, REPO), "runs": []}
    # 2) timed, alternating the tools
    for i in range(args.runs):
        for name, cmd in tools.items():
            r = run_once(cmd, os.devnull, False, REPO)
            res["tools"].setdefault(name, {"runs": []})["runs"].append(r)
            print(f"  {name} run {i + 1}/{args.runs}: {r['wall_s']:.2f} s wall, {r['cpu_s']:.2f} s cpu, {r['max_rss_mb']:.0f} MB", file=sys.stderr, flush=True)
    for name, t in res["tools"].items():
        runs = t["runs"]
        t["best_wall_s"] = min(r["wall_s"] for r in runs)
        t["best_cpu_s"] = min(r["cpu_s"] for r in runs)
        t["max_rss_mb"] = max(r["max_rss_mb"] for r in runs + ([t["sampled"]] if "sampled" in t else []))
        t["peak_mb"] = max(t["max_rss_mb"], t.get("sampled", {}).get("tree_pss_mb", 0))
    res["ratio"] = round(res["tools"]["pflogsumm"]["best_wall_s"] / res["tools"]["pfdiag"]["best_wall_s"], 2)
    if "pfdiag -j1" in res["tools"]:
        res["ratio_j1"] = round(res["tools"]["pflogsumm"]["best_wall_s"] / res["tools"]["pfdiag -j1"]["best_wall_s"], 2)
    res["counts"] = {
        "pflogsumm": pflogsumm_counts((OUT / f"pflogsumm-{lines}.out").read_text(errors="replace")),
        "pfdiag": pfdiag_counts(json.loads((OUT / f"pfdiag-{lines}.out").read_text())),
    }
    return res


# -- report -------------------------------------------------------------------------------------------


def within(a, b, factor: float) -> bool:
    if a is None or b is None:
        return False
    if a == 0 or b == 0:
        return a == b
    return 1 / factor <= a / b <= factor


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="pfdiag logs vs pflogsumm: wall time and peak memory on generated logs.")
    p.add_argument("--sizes", default="1000000,4000000", help="log sizes in lines, comma separated (default 1000000,4000000)")
    p.add_argument("--runs", type=int, default=3, help="timed runs per tool and size; the best counts (default 3)")
    p.add_argument("--seed", type=int, default=1, help="generator seed (default 1)")
    p.add_argument("--no-j1", dest="pfdiag_j1", action="store_false", help="skip the extra single-process pfdiag runs (--jobs 1)")
    args = p.parse_args(argv)
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    if not sizes or args.runs < 1:
        p.error("need at least one size and one run")
    OUT.mkdir(exist_ok=True)
    pflogsumm = find_pflogsumm()
    py = pfdiag_python()
    # bytecode, as `pip install` leaves it (PYTHONDONTWRITEBYTECODE would recompile edited modules each run)
    subprocess.run([py, "-m", "compileall", "-q", str(REPO / "checks"), str(REPO / "diagnose")], check=False,
                   capture_output=True)  # fmt: skip
    env = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": platform.node(),
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "machine": platform.machine(),
        "kernel": platform.release(),
        "runs": args.runs,
        "rss_from": launcher(),
        "seed": args.seed,
        **tool_versions(pflogsumm, py),
    }
    results = []
    for n in sizes:
        print(f"size {n:,} lines", file=sys.stderr, flush=True)
        results.append(bench_size(n, args, pflogsumm, py))

    # table
    print()
    print(f"{env['pfdiag']} ({env['pfdiag_commit']}{', modified' if env['pfdiag_tree_dirty'] else ''}) vs pflogsumm {env['pflogsumm']}; "
          f"{env['cpus']} CPUs; best of {args.runs} runs; memory = max(single-process RSS, sampled tree PSS)")
    head = f"{'lines':>10} {'MB':>5} {'pflogsumm s':>11} {'pfdiag s':>9} {'ratio':>6} {'pfdiag MB':>9} {'pflogsumm MB':>12} {'pfdiag cpu s':>12} {'pflogsumm cpu s':>15} {'pfdiag -j1 s':>12} {'ratio -j1':>9}"
    print(head)
    print("-" * len(head))
    for r in results:
        pl, pd = r["tools"]["pflogsumm"], r["tools"]["pfdiag"]
        j1 = r["tools"].get("pfdiag -j1")
        print(f"{r['lines']:>10,} {r['bytes'] / 1e6:>5.0f} {pl['best_wall_s']:>11.2f} {pd['best_wall_s']:>9.2f} {r['ratio']:>5.2f}x "
              f"{pd['peak_mb']:>9.1f} {pl['peak_mb']:>12.1f} {pd['best_cpu_s']:>12.2f} {pl['best_cpu_s']:>15.2f} "
              f"{(j1['best_wall_s'] if j1 else float('nan')):>12.2f} {(str(r['ratio_j1']) + 'x') if j1 else '-':>9}")
    print()
    print("memory detail (MB): pfdiag max single-process RSS / sampled tree PSS (processes); pflogsumm RSS")
    for r in results:
        pd, pl = r["tools"]["pfdiag"], r["tools"]["pflogsumm"]
        s = pd["sampled"]
        print(f"  {r['lines']:>10,}: pfdiag {pd['max_rss_mb']:.1f} / {s['tree_pss_mb']:.1f} ({s['processes']}); pflogsumm {pl['max_rss_mb']:.1f}")
    print()
    print("deferral counts (pfdiag totals vs pflogsumm Grand Totals)")
    for r in results:
        a, b = r["counts"]["pfdiag"], r["counts"]["pflogsumm"]
        print(f"  {r['lines']:>10,}: deferral lines pfdiag {a['deferral_lines']} / pflogsumm {b['deferral_lines']}; "
              f"deferred messages pfdiag {a['deferred_messages']} / pflogsumm {b['deferred_messages']}; "
              f"delivered {a['delivered']} / {b['delivered']}; bounced {a['bounced']} / {b['bounced']}")
        print(f"  {'':>10}  pfdiag causes: {a['causes']}")
        t = a.get("traffic") or {}
        print(f"  {'':>10}  traffic pfdiag / pflogsumm: " + ", ".join(
            f"{k} {t.get(k)} / {v[0] if v else None}{v[1] if v else ''}" for k, v in b["grand_totals"].items()))

    # targets
    checks = []
    for r in results:
        checks.append((f"speed {r['lines']:,}: pfdiag >= {SPEED_TARGET:g}x faster than pflogsumm", r["ratio"] >= SPEED_TARGET, f"{r['ratio']:.2f}x"))
    for r in results:
        mb = r["tools"]["pfdiag"]["peak_mb"]
        checks.append((f"memory {r['lines']:,}: pfdiag peak < {MEMORY_TARGET_MB:g} MB", mb < MEMORY_TARGET_MB, f"{mb:.1f} MB"))
    if len(results) > 1:
        small, big = min(results, key=lambda r: r["lines"]), max(results, key=lambda r: r["lines"])
        f = big["tools"]["pfdiag"]["peak_mb"] / small["tools"]["pfdiag"]["peak_mb"]
        checks.append((f"flat: pfdiag peak at {big['lines']:,} <= {FLAT_TARGET:g}x peak at {small['lines']:,}", f <= FLAT_TARGET, f"{f:.2f}x"))
    for r in results:
        a, b = r["counts"]["pfdiag"], r["counts"]["pflogsumm"]
        ok = within(a["deferral_lines"], b["deferral_lines"], AGREE_FACTOR) and within(a["deferred_messages"], b["deferred_messages"], AGREE_FACTOR)
        checks.append((f"agree {r['lines']:,}: deferral counts within {AGREE_FACTOR:g}x of pflogsumm", ok,
                       f"{a['deferral_lines']} vs {b['deferral_lines']} lines, {a['deferred_messages']} vs {b['deferred_messages']} messages"))
        bad = traffic_agrees(a.get("traffic"), b["grand_totals"])
        checks.append((f"traffic {r['lines']:,}: pfdiag's traffic totals equal pflogsumm's Grand Totals", not bad,
                       "; ".join(bad) or f"{len(b['grand_totals'])} totals identical"))
    print()
    failed = 0
    for name, ok, value in checks:
        failed += not ok
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {value}")
    (OUT / "results.json").write_text(json.dumps({
        "environment": env,
        "targets": {"speed_ratio": SPEED_TARGET, "memory_mb": MEMORY_TARGET_MB, "flat_ratio": FLAT_TARGET, "agree_factor": AGREE_FACTOR},
        "sizes": results,
        "checks": [{"name": n, "pass": ok, "value": v} for n, ok, v in checks],
        "pass": not failed,
    }, indent=2) + "\n")
    print(f"\nresults: {(OUT / 'results.json').relative_to(REPO)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
