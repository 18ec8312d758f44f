"""The whole lab for a benchmark or a demo capture: every scenario's peer, the lab Postfix routing
each scenario's domain to it, one message per scenario injected and attempted."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from tests.lab.postfix import PostfixLab
from tests.lab.scenarios import SCENARIOS, SENDER, PeerSet


@contextlib.contextmanager
def scenario_lab(lock_timeout: float = 1200) -> Iterator[tuple[PostfixLab, PeerSet, str]]:
    """Yields (lab, peers, since): `since` is an ISO time just before the injections, for
    --since. Stops the lab and the peers afterwards."""
    peers = PeerSet.start()
    lab = PostfixLab()
    try:
        for s in SCENARIOS:
            lab.route(f"{s.name}.test", peers.port(s.name), tls=s.tls)
        print(f"waiting for the lab lock {lab.lock_path} ...", flush=True)
        lab.acquire(timeout=lock_timeout)
        try:
            lab.start()
            bad = lab.loopback_violations()
            if bad:
                raise SystemExit(f"lab is not loopback-only: {bad}")
            time.sleep(1.1)  # log stamps have whole seconds: the window starts after older lines
            since = datetime.now().isoformat(timespec="seconds")
            with ThreadPoolExecutor(8) as pool:
                injected = list(pool.map(lambda s: lab.inject(SENDER, s.recipients, size=s.size, subject=s.name), SCENARIOS))
            for inj in injected:
                lab.wait_first_attempt(inj, timeout=60)
            print(f"lab ready: {len(SCENARIOS)} scenarios injected and attempted", flush=True)
            yield lab, peers, since
        finally:
            lab.stop()
    finally:
        peers.stop()
