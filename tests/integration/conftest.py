"""Fixtures of the SSH lab shared by the integration tests: a real sshd on 127.0.0.1
(tests/lab/sshd.py) and an ssh_config that names it as mail hosts.

    server   the running Sshd (module scope: each module gets its own server)
    ssh      {"config", "known_hosts", "dir"}: aliases mx1, mx2, mx3 (that sshd, as root) and
             mxdown (a port where nothing listens)

Without root or OpenSSH these tests skip with the reason; under CI=true they fail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.lab import sshd as lab
from tests.lab.postfix import free_port


def need_sshd(reason: str | None) -> None:
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and the SSH lab cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def server() -> Iterator[lab.Sshd]:
    need_sshd(lab.missing())
    with lab.running_sshd() as running:
        yield running


@pytest.fixture(autouse=True)
def _no_user_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    # the developer's own ssh-agent must not log us in (or use up MaxAuthTries)
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


@pytest.fixture(scope="module")
def ssh(server: lab.Sshd, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("ssh")
    common = f"  HostName 127.0.0.1\n  Port {server.port}\n  User root\n  IdentityFile {server.user_key}\n"
    down = f"  HostName 127.0.0.1\n  Port {free_port()}\n  User root\n  IdentityFile {server.user_key}\n"
    cfg = d / "ssh_config"
    cfg.write_text("".join(f"Host mx{i}\n{common}" for i in (1, 2, 3)) + f"Host mxdown\n{down}")
    kh = d / "known_hosts"
    kh.write_text(server.known_hosts_line())
    return {"config": str(cfg), "known_hosts": str(kh), "dir": str(d)}
