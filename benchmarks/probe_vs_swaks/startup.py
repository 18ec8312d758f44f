#!/usr/bin/env python3
"""What pfdiag's start-up costs, per command: wall time and import time.

    python benchmarks/probe_vs_swaks/startup.py [--runs 7] [--pfdiag PATH ...] [--port P]

For each command line (``pfdiag --help``, ``pfdiag probe --help``, ``pfdiag report --help``, a probe of a
healthy peer on 127.0.0.1, ``pfdiag report --demo``): the median wall time of --runs runs, and the median
of the total import time ``python -X importtime`` reports (the sum of the top-level imports'
cumulative times, which includes ``site`` and the editable-install finder when there is one), with the
number of modules imported and the largest imports. Several --pfdiag (say, an install of the commit
before and one of this checkout) are measured in the same run, alternating. Prints a table; ``--json``
for JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def import_profile(python: str, script: list[str]) -> tuple[float, int, list[tuple[int, str]]]:
    """(total import ms, modules imported, [(cumulative us, top-level module)]) of one run."""
    proc = subprocess.run([python, "-X", "importtime", *script], capture_output=True, text=True, check=False)
    total, count, tops = 0, 0, []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cum, name = line.split("|")
        count += 1
        if not name[1:].startswith(" "):  # a top-level import: its cumulative time counts once
            total += int(cum)
            tops.append((int(cum), name.strip()))
    return total / 1000, count, sorted(tops, reverse=True)


def measure(pfdiags: list[str], cases: dict[str, list[str]], runs: int) -> dict[str, dict[str, dict[str, object]]]:
    keys = [(p, name) for name in cases for p in pfdiags]
    walls: dict[tuple[str, str], list[float]] = {k: [] for k in keys}
    imports: dict[tuple[str, str], list[float]] = {k: [] for k in keys}
    last: dict[tuple[str, str], tuple[int, list[tuple[int, str]]]] = {}
    for _ in range(runs):  # alternating the cases and the installs
        for pfdiag, name in keys:
            argv = cases[name]
            t0 = time.perf_counter()
            subprocess.run([pfdiag, *argv], capture_output=True, check=False)
            walls[(pfdiag, name)].append(time.perf_counter() - t0)
            total, count, tops = import_profile(str(Path(pfdiag).parent / "python"), [pfdiag, *argv])
            imports[(pfdiag, name)].append(total)
            last[(pfdiag, name)] = (count, tops)
    out: dict[str, dict[str, dict[str, object]]] = {p: {} for p in pfdiags}
    for pfdiag, name in keys:
        count, tops = last[(pfdiag, name)]
        out[pfdiag][name] = {"wall_ms": round(statistics.median(walls[(pfdiag, name)]) * 1000, 1),
                             "import_ms": round(statistics.median(imports[(pfdiag, name)]), 1), "modules": count,
                             "largest": [f"{n} {us / 1000:.1f}" for us, n in tops[:6]]}  # fmt: skip
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--pfdiag", action="append", help="a pfdiag console script (default: next to this Python); repeatable")
    ap.add_argument("--port", type=int, help="a healthy SMTP peer on 127.0.0.1 (default: start one)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    pfdiags = args.pfdiag or [str(Path(sys.executable).parent / "pfdiag")]
    peer = None
    if args.port is None:
        sys.path.insert(0, str(REPO))
        from tests.peers import SmtpPeer

        peer = SmtpPeer(lifetime=600).start()
        args.port = peer.port
    cases = {
        "--help": ["--help"],
        "probe --help": ["probe", "--help"],
        "report --help": ["report", "--help"],
        "probe (healthy peer)": ["probe", f"[127.0.0.1]:{args.port}", "--rcpt", "probe@peer.test", "--timeouts", "short",
                                 "--helo", "bench.test", "--format", "json"],  # fmt: skip
        "report --demo": ["report", "--demo", "--format", "json"],
    }
    try:
        res = measure(pfdiags, cases, args.runs)
    finally:
        if peer is not None:
            peer.stop()
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        for pfdiag, rows in res.items():
            print(f"== {pfdiag}")
            print(f"{'command':24s} {'wall ms':>8s} {'import ms':>9s} {'modules':>7s}  largest imports (ms, importtime)")
            for name, r in rows.items():
                print(f"{name:24s} {r['wall_ms']:8.1f} {r['import_ms']:9.1f} {r['modules']:7d}  "
                      f"{', '.join(r['largest'][:4])}")  # type: ignore[index]
    return 0


if __name__ == "__main__":
    sys.exit(main())
