#!/usr/bin/env python3
"""Benchmark the fleet: the full diagnosis of 1 host vs 10 hosts at once.

    python benchmarks/fleet/run.py [--runs 3] [--hosts 10]

1. Starts the lab (tests/lab): a real Postfix on loopback with one misbehaving SMTP peer per
   failure mode, one message per scenario injected and attempted, and a real sshd on
   127.0.0.1. An ssh_config names that one mail host ten times (mx01..mx10): each is a full,
   separate SSH session and diagnosis (logs grepped on the host, queue, config, probes
   through direct-tcpip channels).
2. Times, median of --runs:  pfdiag report --host mx01   vs   pfdiag report --hosts mx01,...,mx10
3. Prints PASS/FAIL, writes out/results.json, stops everything. Exit 1 when the target fails.

Target: 10 hosts take at most 2x the time of one.
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

from tests.lab import sshd as sshlab  # noqa: E402
from tests.lab.session import scenario_lab  # noqa: E402

PFDIAG = shutil.which("pfdiag", path=str(Path(sys.executable).parent)) or shutil.which("pfdiag") or "pfdiag"


CPU: dict[str, float] = {}


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, dict]:
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    dt = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU["last"] = round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 3)
    if proc.returncode not in (0, 4, 5):
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr[-800:]}")
    return dt, json.loads(proc.stdout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--hosts", type=int, default=10)
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    why = sshlab.missing()
    if why:
        raise SystemExit(f"cannot run: {why}")
    results: dict[str, object] = {"host": platform.node(), "python": platform.python_version(), "cpus": os.cpu_count()}
    with scenario_lab() as (lab, _peers, since):
        with sshlab.running_sshd() as server:
            d = Path(server.root)
            names = [f"mx{i:02d}" for i in range(1, args.hosts + 1)]
            cfg = d / "bench_ssh_config"
            cfg.write_text("".join(f"Host {n}\n  HostName 127.0.0.1\n  Port {server.port}\n  User root\n"
                                   f"  IdentityFile {server.user_key}\n" for n in names))  # fmt: skip
            kh = d / "bench_known_hosts"
            kh.write_text(server.known_hosts_line())
            env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
            env.pop("SSH_AUTH_SOCK", None)
            common = ["-f", "json", "-c", str(lab.config_dir), "--log", str(lab.log_path), "--since", since,
                      "--budget", "60", "--ssh-config", str(cfg), "--known-hosts", str(kh)]  # fmt: skip
            one = [PFDIAG, "report", "--host", names[0], *common]
            many = [PFDIAG, "report", "--hosts", ",".join(names), "--concurrency", str(args.hosts), *common]
            timed(one, env)  # warm-up
            t1, t10 = [], []
            for _ in range(args.runs):
                dt, doc1 = timed(one, env)
                t1.append(dt)
                results["one_host_client_cpu_s"] = CPU["last"]
                results["one_host_steps"] = {s["id"]: s["seconds"] for s in doc1["steps"]}
                dt, doc = timed(many, env)
                t10.append(dt)
                results["all_hosts_client_cpu_s"] = CPU["last"]
                results["slowest_host_steps"] = max(
                    ({s["id"]: s["seconds"] for s in h["report"]["steps"]} for h in doc["hosts"] if h["report"]),
                    key=lambda st: sum(st.values()))  # fmt: skip
                results["host_seconds"] = [h["seconds"] for h in doc["hosts"]]
                reachable = doc["comparison"]["reachable"]
                if reachable != args.hosts:
                    raise SystemExit(f"only {reachable} of {args.hosts} hosts were diagnosed: {doc['comparison']['unreachable']}")
            ratio = statistics.median(t10) / statistics.median(t1)
            results["fleet"] = {"hosts": args.hosts, "one_host_s": [round(x, 3) for x in t1],
                                "all_hosts_s": [round(x, 3) for x in t10], "ratio": round(ratio, 3)}  # fmt: skip
    ok = results["fleet"]["ratio"] <= 2.0  # type: ignore[index]
    results["pass"] = ok
    (OUT / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    print(f"{'PASS' if ok else 'FAIL'}  {args.hosts} hosts / 1 host: {results['fleet']['ratio']} (target <= 2.0)")  # type: ignore[index]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
