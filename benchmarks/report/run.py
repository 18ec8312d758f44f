#!/usr/bin/env python3
"""Benchmark `pfdiag report` against the same checks run one after another, and start-up.

    python benchmarks/report/run.py [--runs 3]

1. Starts the lab of tests/lab (a real Postfix on loopback, one misbehaving SMTP peer per
   failure mode) and injects one message per scenario; waits for every first attempt.
2. Times, median of --runs:
     parallel    pfdiag report -f json (logs, queue and config at once, then the probes of
                 every next hop of deferred mail at once, within one budget)
     sequential  the same work as separate commands, one after another:
                 pfdiag logs, pfdiag queue, pfdiag config, and one `pfdiag probe [addr]:port`
                 per next hop that the report probed
3. Times `pfdiag --help` (median of 15 runs): start-up cost of every command.
4. Prints PASS/FAIL, writes out/results.json, stops the lab. Exit 1 when a target fails.

Targets: parallel / sequential <= 0.5; `pfdiag --help` <= 0.3 s.
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

from tests.lab.session import scenario_lab  # noqa: E402

PFDIAG = shutil.which("pfdiag", path=str(Path(sys.executable).parent)) or shutil.which("pfdiag") or "pfdiag"


def timed(argv: list[str], env: dict[str, str], ok: tuple[int, ...] = (0, 4, 5)) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    dt = time.perf_counter() - t0
    if proc.returncode not in ok:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr[-800:]}")
    return dt, proc.stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    results: dict[str, object] = {"host": platform.node(), "python": platform.python_version(), "cpus": os.cpu_count()}

    with scenario_lab() as (lab, _peers, since):
        env = {**lab.env, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
        cfg, log = str(lab.config_dir), str(lab.log_path)
        report = [PFDIAG, "report", "-f", "json", "-c", cfg, "--log", log, "--since", since, "--budget", "60"]
        _, out = timed(report, env)  # warm-up, and the list of next hops it probes
        doc = json.loads(out)
        hops = [f"[{h['host']}]:{h['port']}" for h in doc["probed"]]
        sequence = [
            [PFDIAG, "logs", log, "--since", since, "--format", "json"],
            [PFDIAG, "queue", "-c", cfg, "--format", "json"],
            [PFDIAG, "config", "-c", cfg, "--format", "json"],
            *[[PFDIAG, "probe", hop, "-c", cfg, "--format", "json"] for hop in hops],
        ]
        par, seq = [], []
        for _ in range(args.runs):
            par.append(timed(report, env)[0])
            seq.append(sum(timed(argv, env, ok=(0, 1, 4))[0] for argv in sequence))
        ratio = statistics.median(par) / statistics.median(seq)
        results["report"] = {"probed_next_hops": len(hops), "parallel_s": [round(x, 3) for x in par],
                             "sequential_s": [round(x, 3) for x in seq], "ratio": round(ratio, 3),
                             "top_cause": doc["causes"][0]["id"] if doc["causes"] else None}  # fmt: skip
        helps = sorted(timed([PFDIAG, "--help"], env, ok=(0,))[0] for _ in range(15))
        results["help_s"] = {"median": round(statistics.median(helps), 3), "min": round(helps[0], 3)}

    checks = [
        ("report parallel / sequential", results["report"]["ratio"], 0.5),  # type: ignore[index]
        ("pfdiag --help (s)", results["help_s"]["median"], 0.3),  # type: ignore[index]
    ]
    results["pass"] = all(v <= t for _, v, t in checks)
    (OUT / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    for name, value, target in checks:
        print(f"{'PASS' if value <= target else 'FAIL'}  {name}: {value} (target <= {target})")
    return 0 if results["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
