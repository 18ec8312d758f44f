"""A snapshot bundle with a big synthetic queue: the demo snapshot shipped with pfdiag
(diagnose/data/demo-snapshot.tar.gz: a real lab Postfix's postconf answers, log and queue)
with its `postqueue -j` output replaced by N records made from its own real ones.

    python benchmarks/big_queue/bundle.py OUT_DIR -n 100000

Each record is one of the demo's 26 real records (their reason texts: E04, E09, E16, E21, ...;
70% the one of "Connection refused": a stuck queue mostly waits for one cause)
with a new queue id (11 hex digits), a new arrival time within the 5 days before the bundle
was recorded, recipients u<i>-<k>@ in the record's own domain or one of 300 subdomains of it,
one message in three with two or three recipients; about 4% are active, 1% hold, 1% incoming.
Deterministic (--seed). The bundle is a directory (SnapshotTarget reads one as it is).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tarfile
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "diagnose" / "data" / "demo-snapshot.tar.gz"


def records(protos: list[dict], n: int, now: float, seed: int = 1, start: int = 0) -> list[str]:
    """n `postqueue -j` lines, the messages start .. start + n - 1 of the queue."""
    rnd = random.Random(seed + start)
    refused = next((p for p in protos if "Connection refused" in str(p["recipients"])), protos[0])
    out = []
    for i in range(start, start + n):
        # a stuck queue: most of it waits for one cause (the first record of the demo with
        # "Connection refused"), the rest for every other reason of the demo
        p = refused if rnd.random() < 0.7 else protos[i % len(protos)]
        k = rnd.random()
        queue = "active" if k < 0.04 else "hold" if k < 0.05 else "incoming" if k < 0.06 else "deferred"
        base = p["recipients"][0]
        domain = base["address"].rpartition("@")[2]
        nrc = 1 if i % 3 else rnd.choice((2, 3))
        rcpts = []
        for j in range(nrc):
            d = domain if rnd.random() < 0.5 else f"m{rnd.randrange(300)}.{domain}"
            r = {"address": f"u{i}-{j}@{d}"}
            if queue != "incoming":
                r["delay_reason"] = base.get("delay_reason") or ""
            rcpts.append(r)
        rec = {"queue_name": queue, "queue_id": f"{i + 0x100000:011X}",
               "arrival_time": int(now) - rnd.randrange(60, 5 * 86400), "message_size": p["message_size"] + i % 977,
               "forced_expire": False, "sender": p["sender"] if i % 50 else "", "recipients": rcpts}  # fmt: skip
        out.append(json.dumps(rec))
    return out


def make_bundle(dest: Path, n: int, seed: int = 1) -> Path:
    """dest/ becomes a snapshot directory with n queued messages; returned."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    with tarfile.open(DEMO, "r:gz") as tar:
        tar.extractall(dest, filter="data")
    manifest = json.loads((dest / "manifest.json").read_text())
    now = datetime.fromisoformat(manifest["created"].replace("Z", "+00:00")).timestamp()
    cmd = next(c for c in manifest["commands"] if c["argv"] == ["postqueue", "-j"])
    out = dest / cmd["stdout"]
    protos = [json.loads(ln) for ln in out.read_text().splitlines() if ln.strip()]
    with out.open("w") as fh:
        for at in range(0, n, 10_000):
            fh.write("\n".join(records(protos, min(10_000, n - at), now, seed, at)) + "\n")
    manifest["origin"] = f"benchmarks/big_queue/bundle.py: the demo snapshot with {n} synthetic queued messages"
    cmd.pop("sha256", None)
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return dest


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("-n", "--messages", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    print(make_bundle(args.out, args.messages, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
