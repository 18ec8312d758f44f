"""Adversarial inventories and host lists for fleet mode: every malformed one is one clear
line through the real CLI (exit 2/1, no traceback), ranges cannot explode into millions of
hosts, ports are checked, and a host whose diagnosis returns something odd stays a result."""

from __future__ import annotations

from pathlib import Path

import pytest

from diagnose import fleet
from diagnose.cli import main
from diagnose.fleet import HostSpec

BAD_INVENTORIES = {
    "hosts-as-list.yml": ("all:\n  hosts:\n    - mx1\n    - mx2\n", "all.hosts must be a mapping"),
    "children-as-list.yml": ("all:\n  children:\n    - mail\n", "all.children must be a mapping"),
    "hosts-as-string.yml": ("all:\n  hosts: mx1\n", "all.hosts must be a mapping"),
    "null-host-name.yml": ("all:\n  hosts:\n    ~: {}\n", "is not a host name"),
    "exploding-range.ini": ("[mail]\nmail[1:100][1:100][1:100].example.net\n", "at most 10000 hosts"),
    "port-too-big.ini": ("[mail]\nmx1 ansible_host=127.0.0.1 ansible_port=99999\n", "a port from 1 to 65535"),
    "port-zero.txt": ("mx1.invalid:0\n", "a port from 1 to 65535"),
}


@pytest.mark.parametrize("name", sorted(BAD_INVENTORIES))
def test_malformed_inventory_is_one_line_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         name: str) -> None:  # fmt: skip
    text, why = BAD_INVENTORIES[name]
    f = tmp_path / name
    f.write_text(text)
    rc = main(["report", "--inventory", str(f), "-f", "json"])
    out, err = capsys.readouterr()
    assert rc in (1, 2) and err.count("\n") == 1 and why in err and "Traceback" not in err, (rc, err)
    assert out == ""


def test_inventory_that_is_not_text_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "inventory"
    f.write_bytes(b"\xff\xfe\x00mx1\n")
    rc = main(["report", "--inventory", str(f)])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "not a text inventory" in err


def test_a_range_at_the_limit_still_works(tmp_path: Path) -> None:
    f = tmp_path / "inventory.ini"
    f.write_text("[mail]\nmx[1:100]-[1:100].example.net\n")
    specs = fleet.read_inventory(str(f))
    assert len(specs) == 10_000 and specs[0].name == "mx1-1.example.net" and specs[-1].name == "mx100-100.example.net"


def test_hosts_port_is_checked() -> None:
    assert [s.address for s in fleet.parse_hosts("mx1:22,[2001:db8::1]:2222")] == ["mx1:22", "[2001:db8::1]:2222"]
    for bad in ("mx1:0", "mx1:65536"):
        with pytest.raises(fleet.UsageError, match="a port from 1 to 65535"):
            fleet.parse_hosts(bad)


def test_a_diagnosis_without_a_verdict_is_a_result_not_a_crash() -> None:
    """A host whose report came back without a verdict (an old or broken pfdiag on the far side
    of a wrapper) must not take the progress line, and with it the whole fleet run, down."""
    seen: list[tuple[str, str]] = []
    results = fleet.run_fleet([HostSpec("mx1", "mx1")], lambda h: {"causes": []},
                              progress=lambda h, s: seen.append((h, s)))  # fmt: skip
    assert results[0].doc == {"causes": []} and seen[-1] == ("mx1", "?")
