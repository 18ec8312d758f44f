"""pfdiag probe sends from Postfix's source address (smtp_bind_address[6], inet_interfaces with
one address, or --bind): a peer on 127.0.0.1 records the address each connection came from.
Configurations are real main.cf/master.cf files read with postconf -c (never started)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from checks.errors import ConnectFailed
from checks.targets import LocalTarget
from diagnose.cli import main
from checks.bind import bind_plan
from tests.peers import SourceRecordingPeer

FAST = ["--timeouts", "short", "--helo", "client.test", "--budget", "10", "-f", "json"]
NOT_HERE = "192.0.2.77"  # TEST-NET-1 (RFC 5737): on no host, so bind() fails with EADDRNOTAVAIL


@pytest.fixture
def peer():
    with SourceRecordingPeer(lifetime=60) as p:
        yield p


def conf(tmp_path: Path, *lines: str, master: str = "smtp unix - - n - - smtp\n") -> str:
    d = tmp_path / "postfix"
    d.mkdir(exist_ok=True)
    (d / "main.cf").write_text("\n".join(["compatibility_level = 3.6", *lines]) + "\n")
    (d / "master.cf").write_text(master)
    return str(d)


def probe(capsys, peer: SourceRecordingPeer, *extra: str) -> tuple[int, dict, str]:
    rc = main(["probe", f"[127.0.0.1]:{peer.port}", *FAST, *extra])
    out = capsys.readouterr()
    return rc, json.loads(out.out) if out.out.strip() else {}, out.err


def test_smtp_bind_address_is_the_source_the_peer_sees(peer, tmp_path, capsys) -> None:  # noqa: ANN001
    rc, doc, _ = probe(capsys, peer, "-c", conf(tmp_path, "smtp_bind_address = 127.0.0.2"))
    assert rc == 0 and peer.sources == ["127.0.0.2"]
    b = doc["bind"]
    assert (b["address"], b["from"], b["reproduced"], b["bind_error"]) == ("127.0.0.2", "smtp_bind_address = 127.0.0.2", True, None)
    assert b["local_address"].startswith("127.0.0.2:")
    assert doc["probe"]["phases"][0]["detail"].startswith("TCP connection from 127.0.0.2 ")


def test_master_cf_override_of_the_smtp_service_wins(peer, tmp_path, capsys) -> None:  # noqa: ANN001
    master = "smtp unix - - n - - smtp\n  -o smtp_bind_address=127.0.0.4\nrelay unix - - n - - smtp\n  -o smtp_bind_address=127.0.0.9\n"
    rc, doc, _ = probe(capsys, peer, "-c", conf(tmp_path, "smtp_bind_address = 127.0.0.2", master=master))
    assert rc == 0 and peer.sources == ["127.0.0.4"] and doc["bind"]["from"] == "master.cf smtp -o smtp_bind_address"
    assert any("service relay sets -o smtp_bind_address=127.0.0.9" in n for n in doc["notes"])


def test_bind_option_overrides_the_configuration(peer, tmp_path, capsys) -> None:  # noqa: ANN001
    rc, doc, err = probe(capsys, peer, "-c", conf(tmp_path, "smtp_bind_address = 127.0.0.2"), "--bind", "127.0.0.3")
    assert rc == 0 and peer.sources == ["127.0.0.3"], err
    assert doc["bind"]["from"] == "--bind" and doc["bind"]["local_address"].startswith("127.0.0.3:")


def test_text_output_names_the_source(peer, tmp_path, capsys) -> None:  # noqa: ANN001
    rc = main(["probe", f"[127.0.0.1]:{peer.port}", *FAST[:-2], "-c", conf(tmp_path, "smtp_bind_address = [127.0.0.5]")])
    out = capsys.readouterr().out
    assert rc == 0 and peer.sources == ["127.0.0.5"]
    assert "source address: 127.0.0.5 (smtp_bind_address = [127.0.0.5]); connected from 127.0.0.5:" in out


def test_bind_option_to_an_address_not_on_this_host_fails_clearly(peer, tmp_path, capsys) -> None:  # noqa: ANN001
    rc, doc, err = probe(capsys, peer, "-c", conf(tmp_path), "--bind", NOT_HERE)
    connect = doc["probe"]["phases"][0]
    assert rc == 4 and peer.sources == [] and "Traceback" not in err
    assert connect["phase"] == "connect" and connect["verdict"] == "failed" and connect["cause_id"] == "E03"
    assert connect["detail"].startswith(f"cannot bind to {NOT_HERE}: Cannot assign requested address")
    assert doc["findings"][0]["severity"] in ("problem", "critical") and doc["findings"][0]["cause_id"] == "E03"


def test_configured_address_not_on_this_host_falls_back_like_postfix(peer, tmp_path, capsys) -> None:  # noqa: ANN001
    """smtp_bind_address_enforce = no (the default): Postfix warns and sends from the default source."""
    rc, doc, _ = probe(capsys, peer, "-c", conf(tmp_path, f"smtp_bind_address = {NOT_HERE}"))
    assert peer.sources == ["127.0.0.1"] and rc == 4  # a warning is a problem worth an exit status
    b = doc["bind"]
    assert b["address"] == NOT_HERE and b["reproduced"] is False and b["bind_error"].startswith(f"cannot bind to {NOT_HERE}")
    assert [p["verdict"] for p in doc["probe"]["phases"]][:3] == ["ok", "ok", "ok"]
    warn = [f for f in doc["findings"] if f["cause_id"] == "E03"]
    assert warn and warn[0]["severity"] == "warning" and "smtp_bind_address_enforce = no" in warn[0]["summary"]


def test_enforced_bind_address_not_on_this_host_defers(peer, tmp_path, capsys) -> None:  # noqa: ANN001
    rc, doc, _ = probe(capsys, peer, "-c", conf(tmp_path, f"smtp_bind_address = {NOT_HERE}", "smtp_bind_address_enforce = yes"))
    connect = doc["probe"]["phases"][0]
    assert rc == 4 and peer.sources == [] and connect["verdict"] == "failed"
    assert "4.4.0" in connect["detail"] and doc["bind"]["enforce"] is True


def test_ipv6_bind_address_is_not_used_for_an_ipv4_peer(peer, tmp_path, capsys) -> None:  # noqa: ANN001
    rc, doc, _ = probe(capsys, peer, "-c", conf(tmp_path, "smtp_bind_address6 = ::1"))
    assert rc == 0 and peer.sources == ["127.0.0.1"] and doc["bind"]["address"] is None
    assert doc["bind"]["reproduced"] is True  # no IPv4 bind address: the default source is Postfix's too


def test_bind_option_must_be_an_address(peer, capsys) -> None:  # noqa: ANN001
    rc = main(["probe", f"[127.0.0.1]:{peer.port}", *FAST, "--bind", "eth0"])
    err = capsys.readouterr().err
    assert rc == 2 and "--bind 'eth0'" in err and "Traceback" not in err and peer.sources == []


def test_local_target_bind_errors_are_connect_failures(peer) -> None:  # noqa: ANN001
    t = LocalTarget()
    conn = t.connect("127.0.0.1", peer.port, 5, source="127.0.0.6")
    try:
        assert conn.getsockname()[0] == "127.0.0.6"  # type: ignore[attr-defined]
    finally:
        conn.close()
    for source, words in ((NOT_HERE, "Cannot assign requested address"), ("::1", "other address family"),
                          ("not-an-ip", "not an IP address")):  # fmt: skip
        with pytest.raises(ConnectFailed) as info:
            t.connect("127.0.0.1", peer.port, 5, source=source)
        assert info.value.kind == "bind" and words in str(info.value)


def test_bind_plan_follows_postconf5() -> None:
    """inet_interfaces with one non-loopback address of a family is that family's bind address."""
    plan, _ = bind_plan({"inet_interfaces": "192.0.2.10, 2001:db8::10"}, {}, None, True)
    assert plan.for_address("198.51.100.1") == ("192.0.2.10", "inet_interfaces = 192.0.2.10, 2001:db8::10 (one IPv4 address)")
    assert plan.for_address("2001:db8::99")[0] == "2001:db8::10"
    for inet in ("all", "127.0.0.1", "192.0.2.10, 192.0.2.11", "mail.example.net"):
        assert bind_plan({"inet_interfaces": inet}, {}, None, True)[0].for_address("198.51.100.1") == (None, "")
    plan, notes = bind_plan({"smtp_bind_address": "192.0.2.10", "inet_interfaces": "192.0.2.11"}, {}, None, False)
    assert plan.for_address("198.51.100.1")[0] == "192.0.2.10" and plan.kwargs("198.51.100.1") == {}
    assert any("direct-tcpip cannot choose one" in n for n in notes)
    plan, notes = bind_plan({"smtp_bind_address": "2001:db8::1"}, {}, None, True)
    assert plan.v4 is None and any("is not an IPv4 address" in n for n in notes)
    assert bind_plan({"smtp_bind_address": "192.0.2.1"}, {}, None, True)[0].kwargs("192.0.2.9") == {
        "source": "192.0.2.1", "bind_fallback": True}
    assert bind_plan({"smtp_bind_address": "192.0.2.1", "smtp_bind_address_enforce": "yes"}, {}, None, True)[0].kwargs(
        "192.0.2.9")["bind_fallback"] is False


@pytest.mark.lab
def test_over_ssh_the_source_cannot_be_chosen_and_the_probe_says_so(peer, ssh, capsys) -> None:  # noqa: ANN001
    rc = main(["probe", f"[127.0.0.1]:{peer.port}", *FAST, "--bind", "127.0.0.2", "--host", "mx1",
               "--ssh-config", ssh["config"], "--known-hosts", ssh["known_hosts"]])  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0 and doc["where"] == "ssh:mx1" and peer.sources == ["127.0.0.1"]  # sshd's default source
    assert doc["bind"]["reproduced"] is False and doc["bind"]["local_address"] is None
    assert any("direct-tcpip cannot choose one" in n and "127.0.0.2" in n for n in doc["notes"])


@pytest.mark.lab
def test_ssh_target_refuses_a_source_clearly(ssh, peer) -> None:  # noqa: ANN001
    from checks.targets.ssh import SSHTarget

    with SSHTarget.open("mx1", ssh_config=ssh["config"], known_hosts=ssh["known_hosts"]) as t:
        with pytest.raises(ConnectFailed) as info:
            t.connect("127.0.0.1", peer.port, 5, source="127.0.0.2")
        assert info.value.kind == "bind-unsupported" and "sshd chooses the source address" in str(info.value)
        assert peer.sources == []


def test_the_diagnosis_probes_send_from_postfix_source_address(peer, tmp_path) -> None:  # noqa: ANN001
    """pfdiag report's own probes (smtp.nexthops) bind like pfdiag probe: the engine reads the
    bind settings with the server's names (one postconf -x of a real main.cf)."""
    from checks.builtin import smtp_nexthops
    from checks.registry import Context
    from diagnose.engine import read_identity

    target = LocalTarget()
    identity = read_identity(target, conf(tmp_path, "smtp_bind_address = 127.0.0.2"))
    assert identity["smtp_bind_address"] == "127.0.0.2" and "myhostname" in identity
    ctx = Context(target=target, answers={}, options={
        "collected": {"identity": identity, "config_report": None}, "budget": 10,
        "probe_targets": [{"host": "127.0.0.1", "port": peer.port, "domain": "peer.test", "cause_id": "E09"}]})
    findings = smtp_nexthops(ctx)
    assert peer.sources == ["127.0.0.2"], findings
