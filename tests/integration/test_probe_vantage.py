"""The probe from two vantage points: through the mail host (SSH direct-tcpip, the lab sshd)
and from this machine, and what their difference means."""

from __future__ import annotations

import json
from typing import Any

import pytest

from diagnose.cli import main
from diagnose.vantage import compare_vantage
from tests.lab.scenarios import PeerSet


def _probe(*phases: tuple[str, str]) -> dict[str, Any]:
    return {"phases": [{"phase": p, "verdict": v, "detail": f"{p} {v}"} for p, v in phases]}


OK = _probe(("connect", "ok"), ("greeting", "ok"), ("ehlo", "ok"))


@pytest.mark.parametrize(
    "there, here, differs, words",
    [
        (_probe(("connect", "would-time-out")), OK, True, "outbound port 25 is blocked on the mail host"),
        (_probe(("connect", "ok"), ("greeting", "failed")), OK, True, "treated differently"),
        (OK, _probe(("connect", "failed")), True, "this machine's network"),
        (_probe(("connect", "failed")), _probe(("connect", "failed")), False, "the destination itself"),
        (OK, OK, False, "alike"),
    ],
)
def test_compare_vantage(there: dict, here: dict, differs: bool, words: str) -> None:
    c = compare_vantage(there, here, "ssh:mx1", 25)
    assert c["differs"] is differs and words in c["conclusion"]


@pytest.mark.lab
def test_both_vantage_points_live(ssh: dict, smtp_peers: PeerSet, capsys) -> None:
    for name, differs in (("healthy", False), ("refused", False)):
        rc = main(["probe", f"[127.0.0.1]:{smtp_peers.port(name)}", "--host", "mx1", "--ssh-config", ssh["config"],
                   "--known-hosts", ssh["known_hosts"], "--compare-here", "--timeouts", "short", "--format", "json",
                   "--budget", "40"])  # fmt: skip
        doc = json.loads(capsys.readouterr().out)
        assert doc["where"] == "ssh:mx1" and doc["compare"]["differs"] is differs, doc["compare"]["conclusion"]
        assert rc == (0 if name == "healthy" else 4)


def test_compare_needs_a_remote_host(capsys) -> None:
    assert main(["probe", "[127.0.0.1]:9", "--compare-here", "--timeouts", "short"]) == 2
    assert "--host" in capsys.readouterr().err
