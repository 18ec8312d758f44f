#!/usr/bin/env python3
"""Benchmark `pfdiag probe` against swaks, and a probe set against its slowest member.

    python benchmarks/probe_vs_swaks/run.py [--runs 7] [--install] [--netem] [--no-set] [--before PFDIAG]

1. Starts SMTP peers on 127.0.0.1 (tests/peers.py): a healthy one, and a slow one that greets
   after 1 s (a greeting tarpit).
2. For each, median of --runs, alternating:
     swaks --server 127.0.0.1 --port P --quit-after RCPT --to probe@peer.test (Debian's swaks)
     pfdiag probe [127.0.0.1]:P --rcpt probe@peer.test (connect, banner, EHLO, STARTTLS when
     offered, MAIL, RCPT, RSET, QUIT: every phase timed against Postfix's timeouts)
3. A set of 10 destinations (peers that greet after 0.2 .. 2.0 s) in one `pfdiag probe` vs
   `pfdiag probe` of the slowest one alone.
4. With --netem, a realistic round trip: a network namespace whose loopback delays every packet by
   30 ms (`tc qdisc add dev lo root netem delay 30ms`, a 60 ms round trip), the healthy peer inside
   it, and swaks and pfdiag both run inside it with `ip netns exec`. A kernel without sch_netem
   (CONFIG_NET_SCH_NETEM unset, as on these VMs) gets the same 30 ms each way from a relay in the
   namespace instead (every byte held 30 ms in each direction; only the TCP handshake is not
   delayed, for both tools alike); results.json says which one ran.
Targets: pfdiag/swaks <= 1.2 for one address on loopback, <= 1.1 with the 30 ms delay; the 10-set /
slowest single <= 1.3. --install times a regular (non-editable) `pip install .` of this checkout in
out/venv instead of the editable install next to this Python (whose .pth finder costs start-up).
Installs swaks with apt when it is missing (root). Exit 1 when a target fails.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import select
import socket
import statistics
import subprocess
import sys
import threading
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
    return timed_cpu(argv, ok)[0]


def timed_cpu(argv: list[str], ok: tuple[int, ...] = (0, 4)) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + system of the command and the processes it waited for)."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    dt = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode not in ok:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}: {(proc.stderr or proc.stdout)[-600:]}")
    return dt, r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime


def installed_pfdiag() -> str:
    """A regular (non-editable) install of this checkout in out/venv, as a user gets it from pip:
    no editable-install finder in site-packages, bytecode compiled by pip."""
    venv = OUT / "venv"
    if not (venv / "bin" / "pip").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # --force-reinstall --no-deps: this checkout's code, again, without touching the dependencies
    first = not (venv / "bin" / "pfdiag").exists()
    extra = [] if first else ["--force-reinstall", "--no-deps"]
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *extra, str(REPO)], check=True, capture_output=True)
    return str(venv / "bin" / "pfdiag")


def compare(s_argv: list[str], p_argv: list[str], runs: int, before: list[str] | None = None) -> dict[str, float]:
    """Median wall (and CPU) time of each, alternating, after one untimed run of each; ``before``:
    another pfdiag's command line (an install of an earlier commit) timed in the same rounds."""
    argvs = {"swaks": s_argv, "pfdiag": p_argv, **({"before": before} if before else {})}
    for argv in argvs.values():  # warm-up
        timed(argv)
    wall: dict[str, list[float]] = {k: [] for k in argvs}
    cpu: dict[str, list[float]] = {k: [] for k in argvs}
    for _ in range(runs):
        for k, argv in argvs.items():
            w, c = timed_cpu(argv)
            wall[k].append(w)
            cpu[k].append(c)
    out = {f"{k}_s": round(statistics.median(wall[k]), 4) for k in argvs}
    out |= {f"{k}_cpu_ms": round(statistics.median(cpu[k]) * 1000, 1) for k in argvs}
    out["ratio"] = round(statistics.median(wall["pfdiag"]) / statistics.median(wall["swaks"]), 3)
    out["cpu_ratio"] = round(statistics.median(cpu["pfdiag"]) / statistics.median(cpu["swaks"]), 3)
    if before:
        out["before_ratio"] = round(statistics.median(wall["before"]) / statistics.median(wall["swaks"]), 3)
    return out


def argvs(sw: str, pfdiag: str, port: int) -> tuple[list[str], list[str]]:
    s_argv = [sw, "--server", "127.0.0.1", "--port", str(port), "--quit-after", "RCPT",
              "--to", "probe@peer.test", "--from", "bench@bench.test", "--helo", "bench.test", "--silent", "2"]  # fmt: skip
    p_argv = [pfdiag, "probe", f"[127.0.0.1]:{port}", "--rcpt", "probe@peer.test", "--from", "bench@bench.test",
              "--timeouts", "short", "--helo", "bench.test", "--format", "json"]  # fmt: skip
    return s_argv, p_argv


# --- the realistic round trip: a network namespace with a 30 ms delay each way -----------------


class DelayRelay:
    """127.0.0.1:port -> upstream, every chunk held `delay` seconds in each direction (order kept):
    netem's delay in user space, for kernels built without sch_netem."""

    def __init__(self, upstream: int, delay: float) -> None:
        self.upstream, self.delay = upstream, delay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            client, _ = self.listener.accept()
            server = socket.create_connection(("127.0.0.1", self.upstream))
            for a, b in ((client, server), (server, client)):
                a.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        held: list[tuple[float, bytes]] = []
        ready = threading.Condition(threading.Lock())

        def deliver() -> None:
            while True:
                with ready:
                    while not held:
                        ready.wait()
                    due, data = held[0]
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                with ready:
                    held.pop(0)
                try:
                    if data:
                        dst.sendall(data)
                    else:
                        dst.shutdown(socket.SHUT_WR)
                        return
                except OSError:
                    return

        threading.Thread(target=deliver, daemon=True).start()
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            with ready:
                held.append((time.monotonic() + self.delay, data))
                ready.notify()
            if not data:
                return


def serve(delay: float) -> int:
    """--serve: the healthy peer (and, with a delay, the relay in front of it) in this process, for
    `ip netns exec`; prints the port to use, runs until stdin closes."""
    peer = SmtpPeer(lifetime=3600, max_connections=1 << 20).start()
    port = DelayRelay(peer.port, delay).port if delay > 0 else peer.port
    print(port, flush=True)
    select.select([sys.stdin], [], [])
    peer.stop()
    return 0


def netem_case(sw: str, pfdiag: str, runs: int, delay: float = 0.030) -> dict[str, object]:
    """The healthy peer and both tools inside a network namespace whose loopback delays each packet
    by `delay` (tc netem), or, where the kernel has no netem, a relay that does it in user space."""
    ns = f"pfdiag-bench-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    server = None
    try:
        subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)
        tc = subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay",
                             f"{delay * 1000:g}ms"], capture_output=True, text=True)  # fmt: skip
        how = f"tc netem delay {delay * 1000:g}ms on the namespace's loopback"
        if tc.returncode != 0:
            how = (f"tc netem unavailable ({tc.stderr.strip()}): a relay in the namespace holds every byte "
                   f"{delay * 1000:g} ms in each direction (the TCP handshake is not delayed)")  # fmt: skip
        server = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, __file__, "--serve",
                                   str(0.0 if tc.returncode == 0 else delay)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
        assert server.stdout is not None
        port = int(server.stdout.readline())
        inside = ["ip", "netns", "exec", ns]
        s_argv, p_argv = argvs(sw, pfdiag, port)
        out: dict[str, object] = {"delay": how, **compare([*inside, *s_argv], [*inside, *p_argv], runs)}
        # for reference: swaks with its own PIPELINING (not its default; the target is against the default)
        piped = compare([*inside, *s_argv, "--pipeline"], [*inside, *p_argv], runs)
        out["swaks_pipeline_s"], out["ratio_vs_swaks_pipeline"] = piped["swaks_s"], piped["ratio"]
        proc = subprocess.run([*inside, *p_argv], capture_output=True, text=True)
        doc = json.loads(proc.stdout)
        out["pfdiag_phases"] = {p["phase"]: p["seconds"] for p in doc["probe"]["phases"]}
        return out
    finally:
        if server is not None:
            server.stdin.close()  # type: ignore[union-attr]
            server.wait(timeout=10)
        subprocess.run(["ip", "netns", "del", ns], check=False)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--install", action="store_true", help="time a non-editable install in out/venv")
    ap.add_argument("--pfdiag", help="the pfdiag to time (default: next to this Python)")
    ap.add_argument("--before", metavar="PFDIAG", help="another pfdiag (an earlier commit's install) timed in the same "
                    "rounds in the healthy case, for a before/after in one run")
    ap.add_argument("--netem", action="store_true", help="also the 30 ms round-trip case in a network namespace")
    ap.add_argument("--no-set", action="store_true", help="skip the 10-destination set (about a minute)")
    ap.add_argument("--serve", type=float, metavar="DELAY", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve is not None:
        return serve(args.serve)
    OUT.mkdir(parents=True, exist_ok=True)
    sw = swaks()
    if args.install:
        pfdiag = installed_pfdiag()
    else:
        pfdiag = args.pfdiag or PFDIAG
        # bytecode, as `pip install` leaves it: with PYTHONDONTWRITEBYTECODE set (as on the CI machines) an
        # editable checkout would otherwise compile every edited module again in every timed start-up
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "checks"), str(REPO / "diagnose")],
                       check=False, capture_output=True)  # fmt: skip
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    results: dict[str, object] = {"host": platform.node(), "python": platform.python_version(), "cpus": os.cpu_count(),
                                  "commit": commit.stdout.strip(), "pfdiag": pfdiag,
                                  "install": "non-editable (out/venv)" if args.install else "as found (editable?)",
                                  "load_before": [round(x, 2) for x in os.getloadavg()]}  # fmt: skip
    peers = {"healthy": SmtpPeer(lifetime=600, max_connections=1 << 20).start(),
             "slow-greeting": TarpitPeer(delay=1.0, lifetime=600, max_connections=1 << 20).start()}  # fmt: skip
    fast = ["--timeouts", "short", "--helo", "bench.test", "--format", "json"]
    checks: list[tuple[str, float, float]] = []
    try:
        single: dict[str, dict[str, float]] = {}
        for name, peer in peers.items():
            before = argvs(sw, args.before, peer.port)[1] if args.before and name == "healthy" else None
            single[name] = compare(*argvs(sw, pfdiag, peer.port), args.runs, before)
            checks.append((f"pfdiag/swaks, {name}", single[name]["ratio"], 1.2))
        results["single"] = single
        if args.netem:
            results["netem"] = net = netem_case(sw, pfdiag, args.runs)
            checks.append(("pfdiag/swaks, healthy, 30 ms each way", net["ratio"], 1.1))  # type: ignore[arg-type]
        if not args.no_set:
            tarpits = [TarpitPeer(delay=0.2 * (i + 1), lifetime=600).start() for i in range(10)]
            try:
                all_argv = [pfdiag, "probe", *[f"[127.0.0.1]:{p.port}" for p in tarpits], *fast]
                slow_argv = [pfdiag, "probe", f"[127.0.0.1]:{tarpits[-1].port}", *fast]
                timed(all_argv)
                sets, slows = [], []
                for _ in range(args.runs):
                    sets.append(timed(all_argv))
                    slows.append(timed(slow_argv))
                results["set"] = {"destinations": 10, "set_s": round(statistics.median(sets), 3),
                                  "slowest_alone_s": round(statistics.median(slows), 3),
                                  "ratio": round(statistics.median(sets) / statistics.median(slows), 3)}  # fmt: skip
                checks.append(("10-set / slowest alone", results["set"]["ratio"], 1.3))  # type: ignore[index]
            finally:
                for p in tarpits:
                    p.stop()
    finally:
        for p in peers.values():
            p.stop()
    results["load_after"] = [round(x, 2) for x in os.getloadavg()]
    results["pass"] = all(v <= t for _, v, t in checks)
    (OUT / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    for name, value, target in checks:
        print(f"{'PASS' if value <= target else 'FAIL'}  {name}: {value} (target <= {target})")
    return 0 if results["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
