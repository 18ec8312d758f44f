#!/usr/bin/env python3
"""Benchmark `pfdiag probe` against swaks, and a probe set against its slowest member.

    python benchmarks/probe_vs_swaks/run.py [--runs 5]

1. Starts SMTP peers on 127.0.0.1 (tests/peers.py): a healthy one, and a slow one that greets
   after 1 s (a greeting tarpit).
2. For each, median of --runs, alternating:
     swaks --server 127.0.0.1 --port P --quit-after RCPT --to probe@peer.test (Debian's swaks)
     pfdiag probe [127.0.0.1]:P --rcpt probe@peer.test (connect, banner, EHLO, STARTTLS when
     offered, MAIL, RCPT, RSET, QUIT: every phase timed against Postfix's timeouts)
3. A set of 10 destinations (peers that greet after 0.2 .. 2.0 s) in one `pfdiag probe` vs
   `pfdiag probe` of the slowest one alone.
Targets: pfdiag/swaks <= 1.2 for one address; the 10-set / slowest single <= 1.3.
Installs swaks with apt when it is missing (root). Exit 1 when a target fails.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
OUT = HERE / "out"
sys.path.insert(0, str(REPO))

from tests.peers import SmtpPeer, TarpitPeer  # noqa: E402

PFDIAG = shutil.which("pfdiag", path=str(Path(sys.executable).parent)) or shutil.which("pfdiag") or "pfdiag"


def swaks() -> str:
    found = shutil.which("swaks")
    if found:
        return found
    subprocess.run(["apt-get", "install", "-y", "-q", "swaks"], check=True, capture_output=True)
    return shutil.which("swaks") or "/usr/bin/swaks"


def timed(argv: list[str], ok: tuple[int, ...] = (0, 4)) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    dt = time.perf_counter() - t0
    if proc.returncode not in ok:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}: {(proc.stderr or proc.stdout)[-600:]}")
    return dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    sw = swaks()
    # bytecode, as `pip install` leaves it: with PYTHONDONTWRITEBYTECODE set (as on the CI machines) an
    # editable checkout would otherwise compile every edited module again in every timed start-up
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "checks"), str(REPO / "diagnose")],
                   check=False, capture_output=True)  # fmt: skip
    results: dict[str, object] = {"host": platform.node(), "python": platform.python_version(), "cpus": os.cpu_count()}
    peers = {"healthy": SmtpPeer(lifetime=600).start(), "slow-greeting": TarpitPeer(delay=1.0, lifetime=600).start()}
    fast = ["--timeouts", "short", "--helo", "bench.test", "--format", "json"]
    try:
        single: dict[str, dict[str, float]] = {}
        for name, peer in peers.items():
            s_argv = [sw, "--server", "127.0.0.1", "--port", str(peer.port), "--quit-after", "RCPT",
                      "--to", "probe@peer.test", "--from", "bench@bench.test", "--helo", "bench.test", "--silent", "2"]  # fmt: skip
            p_argv = [PFDIAG, "probe", f"[127.0.0.1]:{peer.port}", "--rcpt", "probe@peer.test", *fast]
            timed(s_argv), timed(p_argv)  # warm-up
            s_t, p_t = [], []
            for _ in range(args.runs):
                s_t.append(timed(s_argv))
                p_t.append(timed(p_argv))
            single[name] = {"swaks_s": round(statistics.median(s_t), 3), "pfdiag_s": round(statistics.median(p_t), 3),
                            "ratio": round(statistics.median(p_t) / statistics.median(s_t), 3)}  # fmt: skip
        results["single"] = single
        tarpits = [TarpitPeer(delay=0.2 * (i + 1), lifetime=600).start() for i in range(10)]
        try:
            all_argv = [PFDIAG, "probe", *[f"[127.0.0.1]:{p.port}" for p in tarpits], *fast]
            slow_argv = [PFDIAG, "probe", f"[127.0.0.1]:{tarpits[-1].port}", *fast]
            timed(all_argv)
            sets, slows = [], []
            for _ in range(args.runs):
                sets.append(timed(all_argv))
                slows.append(timed(slow_argv))
            results["set"] = {"destinations": 10, "set_s": round(statistics.median(sets), 3),
                              "slowest_alone_s": round(statistics.median(slows), 3),
                              "ratio": round(statistics.median(sets) / statistics.median(slows), 3)}  # fmt: skip
        finally:
            for p in tarpits:
                p.stop()
    finally:
        for p in peers.values():
            p.stop()
    checks = [(f"pfdiag/swaks, {n}", v["ratio"], 1.2) for n, v in results["single"].items()]  # type: ignore[union-attr]
    checks.append(("10-set / slowest alone", results["set"]["ratio"], 1.3))  # type: ignore[index]
    results["pass"] = all(v <= t for _, v, t in checks)
    (OUT / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    for name, value, target in checks:
        print(f"{'PASS' if value <= target else 'FAIL'}  {name}: {value} (target <= {target})")
    return 0 if results["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
