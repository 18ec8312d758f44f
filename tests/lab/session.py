"""The whole lab for a benchmark or a demo capture: every scenario's peer, the lab Postfix routing
each scenario's domain to it, one message per scenario injected and attempted."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from tests.lab.postfix import PostfixLab
from tests.lab.scenarios import SCENARIOS, PeerSet, scenario_mail


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
            since = lab.fresh_window(scenario_mail(), clear=False)
            print(f"lab ready: {len(SCENARIOS)} scenarios injected and attempted", flush=True)
            yield lab, peers, since
        finally:
            lab.stop()
    finally:
        peers.stop()
