"""Feasibility measurement only (issue 18), not pfdiag code: read a Postfix queue's deferred
queue files (envelope records up to the content) and their defer logs directly, as qshape reads
the queue files, and time it against `postqueue -j` (postqueue + showq) on the same queue.

    python benchmarks/queue_vs_qshape/direct_read.py QUEUE_DIRECTORY CONFIG_DIR
    # e.g. after run.py --keep: /var/spool/postfix-pfdiag-qbench /etc/postfix-pfdiag-qbench

Root only (the queue files are Postfix's). A prototype: recipients in the extracted segment
after the content, hash_queue_depth other than 1 and every record but C, T, S, R are ignored."""

import os
import subprocess
import sys
import time

Q, CFG = sys.argv[1], sys.argv[2]

def records(data):
    i, n = 0, len(data)
    while i < n:
        t = data[i]; i += 1
        ln = shift = 0
        while True:
            b = data[i]; i += 1
            ln |= (b & 0x7f) << shift; shift += 7
            if not b & 0x80: break
        yield t, data[i:i + ln]; i += ln

def read_one(path):
    with open(path, "rb") as fh:
        data = fh.read()
    arrival = sender = None; rcpts = []; size = 0
    for t, v in records(data):
        if t == 0x43:  # C: sizes
            size = int(v.split()[0])
        elif t == 0x54:  # T
            arrival = float(v.split()[0])
        elif t == 0x53:  # S
            sender = v
        elif t == 0x52:  # R
            rcpts.append(v)
        elif t == 0x4d:  # M: content follows; skip to the extracted segment (a prototype: just stop)
            break
    return arrival, sender, rcpts, size

def defer_log(path):
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        return b""

t0 = time.perf_counter(); c0 = time.process_time()
n = r = 0
base = f"{Q}/deferred"
for h in os.scandir(base):
    for e in os.scandir(h.path):
        a, s, rc, size = read_one(e.path)
        log = defer_log(f"{Q}/defer/{h.name}/{e.name}")
        reasons = [ln[7:] for ln in log.split(b"\n") if ln.startswith(b"reason=")]
        n += 1; r += len(rc)
print(f"direct: {n} files, {r} recipients: wall {time.perf_counter() - t0:.3f} s, CPU {time.process_time() - c0:.3f} s")
for _ in range(2):
    t0 = time.perf_counter()
    p = subprocess.run(["postqueue", "-c", CFG, "-j"], capture_output=True)
    print(f"postqueue -j: wall {time.perf_counter() - t0:.3f} s, {len(p.stdout)} bytes")
