"""Run the lab's scenarios once against the real Postfix and save what it produced.

    sudo .venv/bin/python -m tests.lab.capture [--out tests/data/lab]

The outputs are real (Postfix 3.7 on Debian 12): unit tests parse them without a lab, and
tests/lab_bundle.py makes a snapshot bundle of them (the demo is tests/lab/make_demo.py). What happens, in order:

1. Every row of SCENARIOS gets one message, and on top, sent in parallel: 3 more messages for
   the end-of-data stall peer, 3 for the PIX peer (it stalls after the first "." of every
   message, then accepts it), a burst of 8 for the refusing port (qmgr marks the destination dead: collateral
   ``delivery temporarily suspended`` lines), a two-recipient message for the mailbox-full peer
   (one sent, one deferred), a 2-recipient greylisted message and one unrouted domain (bounced).
2. After all first attempts: ``postqueue -j`` / ``-p`` saved as ``*.first.*``.
3. ``postqueue -f`` (retry everything): the PIX messages are delivered now (the peer holds
   each twice), the rest is deferred again or suspended.
4. One deferred message is put on hold, one is force-expired (``postsuper -e``, ``postqueue -i``).
5. Final ``postqueue -j`` / ``-p``, ``postfix.log``, ``postconf -n/-d/-P/-M``; the DNS lab
   (Postfix in the pfdiag-lab-dns namespace) runs its scenarios and saves ``dns/``.

``scenarios.json`` maps every message to its scenario, peer port, queue id(s) and outcome.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from tests.lab.dns import DnsLab
from tests.lab.postfix import Injected, PostfixLab
from tests.lab.scenarios import DNS_SCENARIOS, SCENARIOS, SENDER, PeerSet

OUT = Path(__file__).resolve().parents[1] / "data" / "lab"


def _wait_idle(lab: PostfixLab, timeout: float = 60.0) -> None:
    """Until no message is in the incoming or active queue (every attempt has ended)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(m["queue_name"] in ("deferred", "hold") for m in lab.postqueue_json()):
            return
        time.sleep(0.2)
    raise TimeoutError("the queue did not settle")


def _save_queue(lab: PostfixLab, out: Path, suffix: str = "") -> None:
    (out / f"postqueue-j{suffix}.jsonl").write_text(lab.postqueue("-j", check=True).stdout)
    (out / f"postqueue-p{suffix}.txt").write_text(lab.postqueue("-p", check=True).stdout)


def capture_main(out: Path, log: Callable[[str], None]) -> dict[str, object]:
    t0 = time.monotonic()
    table = SCENARIOS
    peer_set = PeerSet.start(table)
    lab = PostfixLab()
    try:
        for s in table:
            lab.route(s.domain, peer_set.port(s.name), tls=s.tls)
        lab.start()
        log(f"lab started in {lab.start_seconds:.1f} s")
        jobs: list[tuple[str, list[str], int]] = [(s.name, list(s.recipients), s.size) for s in table]
        jobs += [("eod-stall", [f"more{n}@eod-stall.test"], 0) for n in range(3)]
        jobs += [("pix", [f"more{n}@pix.test"], 0) for n in range(3)]
        jobs += [("refused", [f"burst{n}@refused.test"], 0) for n in range(8)]
        jobs += [("mailbox-full", ["full@mailbox-full.test", "ok@mailbox-full.test"], 0)]
        jobs += [("greylist", ["a@greylist.test", "b@greylist.test"], 0)]
        jobs += [("unrouted", ["someone@unrouted.test"], 0)]

        def send(job: tuple[str, list[str], int]) -> Injected:
            name, rcpts, size = job
            return lab.inject(SENDER, rcpts, size=size, subject=f"{name} {rcpts[0]}")

        with ThreadPoolExecutor(8) as pool:
            injected = list(pool.map(send, jobs))
        for inj in injected:
            lab.wait_first_attempt(inj, timeout=40)
        _wait_idle(lab)
        log(f"first attempts done at {time.monotonic() - t0:.1f} s")
        _save_queue(lab, out, ".first")

        lab.flush()
        pix = [inj for (name, _, _), inj in zip(jobs, injected) if name == "pix"]
        for inj in pix:
            qid = lab.queue_id(inj.message_id)
            lab.wait_for_log(rf"postfix/smtp\[\d+\]: {qid}: to=<[^>]+>, .* status=sent ", timeout=40)
        _wait_idle(lab)
        log(f"retry done at {time.monotonic() - t0:.1f} s")

        by_name = {name: inj for (name, _, _), inj in zip(jobs, injected)}
        hold_id = lab.queue_id(by_name["greylist"].message_id)
        lab.postsuper("-h", hold_id, check=True)
        expire_id = lab.queue_id(by_name["queue-write-error"].message_id)
        mark = lab.mark()
        lab.postsuper("-e", expire_id, check=True)
        lab.postqueue("-i", expire_id, check=True)
        lab.wait_for_log(rf"{expire_id}: from=<[^>]+>, status=force-expired, returned to sender$", since=mark)
        _wait_idle(lab)

        _save_queue(lab, out)
        (out / "postfix.log").write_text("\n".join(lab.log_lines()) + "\n")
        for flag in ("-n", "-d", "-P", "-M"):
            (out / f"postconf{flag}.txt").write_text(lab.postconf(flag))
        messages = []
        for (name, rcpts, size), inj in zip(jobs, injected):
            qids = lab.queue_ids_for(inj.message_id)
            peer = peer_set.peers.get(name)
            messages.append({
                "scenario": name,
                "message_id": inj.message_id,
                "recipients": rcpts,
                "size": inj.size,
                "queue_ids": qids,
                "statuses": [f"{d.to} {d.program} {d.status} {d.dsn}" for q in qids for d in lab.deliveries(q)],
                "copies_at_peer": len(peer.received(inj.message_id)) if peer else 0,  # read to the final dot
                "accepted_by_peer": peer.accepted[inj.message_id] if peer else 0,  # answered 2xx
            })  # fmt: skip
        summary: dict[str, object] = {
            "postfix": lab.postconf("-h", "mail_version").strip(),
            "config_directory": str(lab.config_dir),
            "log": str(lab.log_path),
            "peers": {
                s.name: {
                    "port": peer_set.port(s.name),
                    "domain": s.domain,
                    "tls_policy": s.tls,
                    "peer": type(peer_set[s.name]).__name__,
                }
                for s in table
            },
            "held": hold_id,
            "force_expired": expire_id,
            "messages": messages,
            "seconds": round(time.monotonic() - t0, 1),
        }
        return summary
    finally:
        lab.stop()
        peer_set.stop()


def capture_dns(out: Path, log: Callable[[str], None]) -> dict[str, object]:
    t0 = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    with DnsLab() as dl:
        pf = dl.postfix

        def send(domain: str) -> Injected:
            return pf.inject(SENDER, [f"user@{domain}"], subject=domain)

        with ThreadPoolExecutor(8) as pool:
            injected = list(pool.map(send, [s.domain for s in DNS_SCENARIOS]))
        results = {}
        for inj in injected:
            d = pf.wait_first_attempt(inj, timeout=30)[0]
            results[inj.recipients[0]] = f"{d.status} {d.dsn} ({d.reason})"
        _wait_idle(pf)
        _save_queue(pf, out)
        (out / "postfix.log").write_text("\n".join(pf.log_lines()) + "\n")
        (out / "postconf-n.txt").write_text(pf.postconf("-n"))
    log(f"DNS lab done in {time.monotonic() - t0:.1f} s")
    return {"results": results, "seconds": round(time.monotonic() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    summary = capture_main(out, log)
    summary["dns"] = capture_dns(out / "dns", log)
    (out / "scenarios.json").write_text(json.dumps(summary, indent=1) + "\n")
    log(f"saved to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
