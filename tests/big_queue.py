"""benchmarks/big_queue/bundle.py's snapshot bundles (N synthetic queued messages made from the
demo's real ones, no Postfix needed) for the unit tests of big queues."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BUNDLE_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "big_queue" / "bundle.py"


def make_bundle(path: Path, messages: int) -> Path:
    """The benchmark's bundle of `messages` messages at `path` (what its make_bundle returns)."""
    spec = importlib.util.spec_from_file_location("big_queue_bundle", BUNDLE_SCRIPT)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return Path(mod.make_bundle(path, messages))
