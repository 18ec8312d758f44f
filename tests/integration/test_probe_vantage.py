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


@pytest.mark.lab
def test_a_name_only_the_mail_host_can_resolve(tmp_path, monkeypatch, capsys) -> None:  # noqa: ANN001
    """pfdiag probe --host H NAME:PORT resolves NAME on H, as Postfix there would: H (a lab sshd in
    its own mount namespace) has a resolv.conf naming a lab dnsmasq (127.0.0.77:53) that alone
    knows onlythere.pfdiag.internal; NAME:PORT is MX-looked-up (Postfix's rule for host:port),
    and the probe greets with H's smtp_helo_name, $mydomain expanded. This machine's own lookups
    are made to fail here: a name asked locally would be an error, and no query can leave."""
    import socket

    import dns.resolver

    from tests.integration.conftest import need_sshd
    from tests.lab import dns as labdns
    from tests.lab import sshd as lab
    from tests.peers import SmtpPeer

    need_sshd(lab.missing() or labdns.missing() or (None if lab.shutil.which("unshare") else "unshare is missing"))
    asked_here: list[str] = []
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *a, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        try:
            socket.inet_pton(socket.AF_INET6 if ":" in str(host) else socket.AF_INET, str(host))
        except (OSError, TypeError):
            asked_here.append(str(host))
            raise socket.gaierror(socket.EAI_NONAME, "not asked from this machine in this test") from None
        return real_getaddrinfo(host, *a, **kw)

    def resolve(self, name, *a, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        asked_here.append(str(name))
        raise dns.resolver.NoNameservers()

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(dns.resolver.Resolver, "resolve", resolve)
    zone = ["mx-host=onlythere.pfdiag.internal,mx.onlythere.pfdiag.internal,10",
            "host-record=mx.onlythere.pfdiag.internal,127.0.0.1"]  # fmt: skip
    server = labdns.Dnsmasq(zone, port=53, host="127.0.0.77", workdir=tmp_path / "dns").start()
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.77\n")
    resolv.chmod(0o644)
    conf = tmp_path / "postfix"
    conf.mkdir()
    (conf / "main.cf").write_text("compatibility_level = 3.6\nmydomain = lab.pfdiag.test\n"
                                  "smtp_helo_name = probe.$mydomain\n")  # fmt: skip
    (conf / "master.cf").write_text("smtp unix - - n - - smtp\n")
    try:
        with lab.running_sshd(wrap=lab.with_resolv_conf(resolv)) as sshd, SmtpPeer(lifetime=60) as peer:
            cfg = tmp_path / "ssh_config"
            cfg.write_text(f"Host mx\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User root\n  IdentityFile {sshd.user_key}\n")
            kh = tmp_path / "known_hosts"
            kh.write_text(sshd.known_hosts_line())
            rc = main(["probe", f"onlythere.pfdiag.internal:{peer.port}", "--host", "mx", "--ssh-config", str(cfg),
                       "--known-hosts", str(kh), "-c", str(conf), "--timeouts", "short", "--format", "json",
                       "--budget", "30"])  # fmt: skip
            doc = json.loads(capsys.readouterr().out)
    finally:
        server.stop()
    assert rc == 0 and doc["where"] == "ssh:mx", doc
    assert (doc["address"], doc["port"]) == ("127.0.0.1", peer.port)
    assert any("MX 10 mx.onlythere.pfdiag.internal of onlythere.pfdiag.internal" in n for n in doc["notes"]), doc["notes"]
    assert doc["helo"] == "probe.lab.pfdiag.test" and "EHLO probe.lab.pfdiag.test" in "\n".join(doc["probe"]["transcript"])
    assert any("query[MX] onlythere.pfdiag.internal" in q for q in server.queries()), server.queries()
    assert not [n for n in asked_here if "pfdiag.internal" in n], asked_here
