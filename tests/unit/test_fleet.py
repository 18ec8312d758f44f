"""Fleet mode without the network: inventories in every accepted form, the comparison, and
an unreachable host as a finding (the run goes on)."""

from __future__ import annotations

from pathlib import Path

import pytest

from checks.errors import ConnectFailed, InputError, UsageError
from diagnose import fleet
from diagnose.fleet import HostSpec


def addrs(specs: list[HostSpec]) -> list[tuple[str, str]]:
    return [(s.name, s.address) for s in specs]


def test_hosts_list() -> None:
    assert addrs(fleet.parse_hosts("mx1, root@mx2:2222,mx1")) == [("mx1", "mx1"), ("root@mx2:2222", "root@mx2:2222")]
    with pytest.raises(UsageError):
        fleet.parse_hosts(" , ")
    with pytest.raises(UsageError, match="invalid host"):
        fleet.parse_hosts("mx1,$(reboot)")


def test_plain_inventory(tmp_path: Path) -> None:
    f = tmp_path / "hosts"
    f.write_text("# mail hosts\nmx1.example.net\nadmin@mx2.example.net:2222\n\n")
    assert addrs(fleet.read_inventory(str(f))) == [("mx1.example.net", "mx1.example.net"),
                                                  ("admin@mx2.example.net:2222", "admin@mx2.example.net:2222")]


def test_ansible_ini_inventory(tmp_path: Path) -> None:
    f = tmp_path / "inventory.ini"
    f.write_text(
        "[mail]\n"
        "mx[01:03].example.net ansible_user=pfdiag\n"
        "edge ansible_host=192.0.2.7 ansible_port=2200 ansible_user=root\n"
        "[mail:vars]\nansible_python_interpreter=/usr/bin/python3\n"
        "[all:children]\nmail\n"
        "[v6]\nsix ansible_host=2001:db8::25\n"
    )
    assert addrs(fleet.read_inventory(str(f))) == [
        ("mx01.example.net", "pfdiag@mx01.example.net"), ("mx02.example.net", "pfdiag@mx02.example.net"),
        ("mx03.example.net", "pfdiag@mx03.example.net"), ("edge", "root@192.0.2.7:2200"), ("six", "[2001:db8::25]"),
    ]  # fmt: skip


def test_ansible_yaml_inventory(tmp_path: Path) -> None:
    f = tmp_path / "inventory.yml"
    f.write_text(
        "all:\n  hosts:\n    relay1:\n      ansible_host: 198.51.100.1\n  children:\n    mail:\n      hosts:\n"
        "        mx1.example.net:\n        mx2.example.net:\n          ansible_port: 2222\n"
    )
    assert addrs(fleet.read_inventory(str(f))) == [("relay1", "198.51.100.1"), ("mx1.example.net", "mx1.example.net"),
                                                  ("mx2.example.net", "mx2.example.net:2222")]  # fmt: skip


@pytest.mark.parametrize("text, match", [("", "names no host"), ("[mail]\nmx1 ansible_user\n", "key=value"),
                                         ("all: [1, 2\n", "YAML")])
def test_bad_inventories(tmp_path: Path, text: str, match: str) -> None:
    f = tmp_path / ("inv.yml" if "all:" in text else "inv")
    f.write_text(text)
    with pytest.raises(InputError, match=match):
        fleet.read_inventory(str(f))


def test_missing_inventory() -> None:
    with pytest.raises(InputError, match="cannot read"):
        fleet.read_inventory("/nonexistent/inventory")


def doc(*causes: tuple[str, int, str]) -> dict:
    return {"verdict": {"status": "root-cause" if causes else "no-problem", "headline": "h"},
            "causes": [{"id": cid, "title": cid, "impact": {"queued_recipients": n}, "domains": [{"domain": d}]}
                       for cid, n, d in causes]}  # fmt: skip


def test_compare_tells_shared_from_single_host_causes() -> None:
    reports = {
        "mx1": doc(("E24", 40, "gmail.com"), ("E01", 3, "example.org")),
        "mx2": doc(("E24", 22, "gmail.com")),
        "mx3": None,  # unreachable
        "mx4": doc(("E24", 9, "gmail.com")),
    }

    def one(h: HostSpec) -> dict:
        d = reports[h.name]
        if d is None:
            raise ConnectFailed("mx3: connection refused", kind="refused")
        return d

    results = fleet.run_fleet([HostSpec(n, n) for n in reports], one, concurrency=2)
    out = fleet.build(results)
    assert out["verdict"] == {"status": "root-cause", "exit_code": 4}
    by_id = {c["id"]: c for c in out["comparison"]["causes"]}
    assert by_id["E24"]["spread"] == "every host" and by_id["E24"]["queued_recipients"] == 71
    assert by_id["E01"]["spread"] == "one host" and "mx1" in by_id["E01"]["meaning"]
    assert out["comparison"]["unreachable"] == [{"host": "mx3", "address": "mx3", "error": "mx3: connection refused"}]
    assert [h["status"] for h in out["hosts"]] == ["root-cause", "root-cause", "unreachable", "root-cause"]
    md = fleet.render_markdown(out)
    assert "every host" in md and "Unreachable hosts" in md


def test_all_unreachable_is_undiagnosed_not_a_crash() -> None:
    def one(h: HostSpec) -> dict:
        raise ConnectFailed("down", kind="timeout")

    out = fleet.build(fleet.run_fleet([HostSpec("a", "a"), HostSpec("b", "b")], one))
    assert out["verdict"]["exit_code"] == 1 and len(out["comparison"]["unreachable"]) == 2
