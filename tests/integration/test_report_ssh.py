"""The same diagnosis over SSH (paramiko -> the lab's real sshd on 127.0.0.1 -> the lab's real
Postfix): every failure mode's root cause named first, with the evidence marked as measured on
the mail host (probes go through direct-tcpip channels from there); host keys verified from
the command line; and a fleet of three aliases of that host plus one that is down.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from diagnose.cli import main
from tests.integration.test_report_lab import EXPECTED
from tests.lab.postfix import PostfixLab
from tests.lab.scenarios import PeerSet, scenario_mail

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def window(postfix_lab: PostfixLab, smtp_peers: PeerSet) -> dict[str, Any]:
    return {"since": postfix_lab.fresh_window(scenario_mail())}


def _ssh_args(ssh: dict[str, str]) -> list[str]:
    return ["--ssh-config", ssh["config"], "--known-hosts", ssh["known_hosts"]]


def report(capsys, lab_: PostfixLab, window: dict, ssh: dict[str, str], *extra: str) -> tuple[int, dict]:
    rc = main(["report", "-f", "json", "-c", str(lab_.config_dir), "--log", str(lab_.log_path),
               "--since", window["since"], "--budget", "40", *_ssh_args(ssh), *extra])  # fmt: skip
    out, err = capsys.readouterr()
    assert out, err
    return rc, json.loads(out)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_failure_mode_over_ssh(name: str, postfix_lab: PostfixLab, window: dict, ssh: dict, capsys) -> None:
    rc, doc = report(capsys, postfix_lab, window, ssh, "--host", "mx1", "--domain", f"{name}.test")
    assert rc == 4 and doc["target"]["where"] == "ssh:mx1"
    top = doc["causes"][0]
    assert top["id"] == EXPECTED[name], [(c["id"], c["domains"]) for c in doc["causes"]]
    assert top["evidence"] and all(e["where"] == "ssh:mx1" for e in top["evidence"])
    assert {s["id"]: s["state"] for s in doc["steps"]}["logs"] == "ok"


def test_probes_start_from_the_mail_host(postfix_lab: PostfixLab, window: dict, ssh: dict, capsys) -> None:
    rc, doc = report(capsys, postfix_lab, window, ssh, "--host", "mx1", "--domain", "no-banner.test")
    probes = [f for f in doc["findings"] if f["check"].startswith("smtp.") and f["evidence"]]
    assert probes, doc["findings"]
    assert all(f["evidence"][0]["where"] == "ssh:mx1" for f in probes)
    # the no-banner peer accepts the connection and never greets: the probe names the cause too
    assert any(f["cause_id"] == "E04" for f in probes)


def test_unknown_host_key_is_refused_from_the_command_line(postfix_lab: PostfixLab, ssh: dict, capsys, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    rc = main(["report", "-f", "json", "--host", "mx1", "--ssh-config", ssh["config"], "--known-hosts", str(empty),
               "-c", str(postfix_lab.config_dir)])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1
    assert "SHA256:" in err[0] and "--accept-new-host-key" in err[0]
    assert empty.read_text() == "", "nothing is trusted without the flag"


def test_fleet_of_three_and_one_down(postfix_lab: PostfixLab, window: dict, ssh: dict, capsys) -> None:
    rc = main(["report", "-f", "json", "-c", str(postfix_lab.config_dir), "--log", str(postfix_lab.log_path),
               "--since", window["since"], "--budget", "40", "--hosts", "mx1,mx2,mx3,mxdown", "--domain", "greylist.test",
               *_ssh_args(ssh)])  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    assert rc == 4 and doc["schema"] == "pfdiag.fleet/1"
    status = {h["host"]: h["status"] for h in doc["hosts"]}
    assert status == {"mx1": "root-cause", "mx2": "root-cause", "mx3": "root-cause", "mxdown": "unreachable"}
    cmp_ = doc["comparison"]
    assert cmp_["reachable"] == 3 and [u["host"] for u in cmp_["unreachable"]] == ["mxdown"]
    e21 = next(c for c in cmp_["causes"] if c["id"] == "E21")
    assert e21["spread"] == "every host" and sorted(e21["hosts"]) == ["mx1", "mx2", "mx3"]
