"""Every command over --host, unchanged: queue, config and probe against the lab Postfix through
the lab's real sshd (paramiko -> sshd on 127.0.0.1 -> the same machine's Postfix), each answer
marked as measured on the mail host; and the --host usage errors, each one clear line.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diagnose.cli import main
from tests.lab import sshd as lab
from tests.lab.postfix import PostfixLab
from tests.lab.scenarios import PeerSet

pytestmark = pytest.mark.lab


def _ssh(ssh: dict[str, str]) -> list[str]:
    return ["--ssh-config", ssh["config"], "--known-hosts", ssh["known_hosts"]]


def _json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, dict]:
    rc = main(argv)
    out, err = capsys.readouterr()
    assert out, err
    return rc, json.loads(out)


def test_queue_over_ssh_is_the_local_queue(postfix_lab: PostfixLab, ssh: dict, capsys) -> None:
    base = ["queue", "--format", "json", "-c", str(postfix_lab.config_dir)]
    for _ in range(3):  # other tests may add mail between the two readings: retry a race, not a difference
        _, here = _json(capsys, base)
        rc, there = _json(capsys, [*base, "--host", "mx1", *_ssh(ssh)])
        if here["counts"] == there["counts"]:
            break
    assert there["schema"] == "pfdiag.queue/1" and there["where"] == "ssh:mx1" and here["where"] == "local"
    assert there["source"] == "postqueue -j"
    assert there["counts"] == here["counts"] and there["total_messages"] == here["total_messages"]


def test_config_over_ssh_is_the_local_config(postfix_lab: PostfixLab, ssh: dict, capsys) -> None:
    base = ["config", "--format", "json", "-c", str(postfix_lab.config_dir)]
    _, here = _json(capsys, base)
    _, there = _json(capsys, [*base, "--host", "mx1", *_ssh(ssh)])
    assert there["schema"] == "pfdiag.config/1"
    assert {p["name"]: p["effective"] for p in there["parameters"]} == {p["name"]: p["effective"] for p in here["parameters"]}
    # the lab's main.cf sets short timeouts: read from the mail host, not from defaults
    assert {p["name"]: p["where"] for p in there["parameters"]}["smtp_connect_timeout"] == ["main.cf"]
    assert there["commands_read"] == here["commands_read"]


def test_probe_over_ssh_goes_through_the_mail_host(postfix_lab: PostfixLab, smtp_peers: PeerSet, ssh: dict, capsys) -> None:
    port = smtp_peers.port("healthy")
    rc, doc = _json(capsys, ["probe", "--format", "json", f"[127.0.0.1]:{port}", "--host", "mx1", *_ssh(ssh)])
    assert doc["where"] == "ssh:mx1", doc
    assert rc == 0 and not doc["problem"], doc
    assert doc["addresses"][0]["ok"] and doc["addresses"][0]["port"] == port


def test_probe_of_a_closed_port_over_ssh_is_a_problem_measured_there(ssh: dict, capsys) -> None:
    from tests.lab.postfix import free_port

    rc, doc = _json(capsys, ["probe", "--format", "json", f"[127.0.0.1]:{free_port()}", "--host", "mx1", *_ssh(ssh)])
    assert doc["where"] == "ssh:mx1" and doc["problem"] and rc != 0
    assert not doc["addresses"][0]["ok"]


def test_identity_option_logs_in_with_that_key(postfix_lab: PostfixLab, server: lab.Sshd, ssh: dict,
                                               capsys, tmp_path: Path) -> None:  # fmt: skip
    cfg = tmp_path / "ssh_config"  # an alias without IdentityFile: only --identity can log in
    cfg.write_text(f"Host bare\n  HostName 127.0.0.1\n  Port {server.port}\n  User root\n  IdentitiesOnly yes\n")
    argv = ["queue", "--format", "json", "-c", str(postfix_lab.config_dir), "--host", "bare",
            "--ssh-config", str(cfg), "--known-hosts", ssh["known_hosts"]]  # fmt: skip
    _, doc = _json(capsys, [*argv, "--identity", str(server.user_key)])
    assert doc["where"] == "ssh:bare"


@pytest.mark.parametrize(("argv", "says"), [
    (["queue", "--host", "mx1", "--demo"], "cannot be used together"),
    (["config", "--host", "mx1", "--snapshot", "x.tar.gz"], "cannot be used together"),
    (["logs", "--identity", "/nonexistent/key"], "--identity needs --host"),
    (["queue", "--host", "bad host!"], "host"),
    (["queue", "--host", "mx1", "--ssh-timeout", "0"], "--ssh-timeout"),
])  # fmt: skip
def test_host_usage_errors_are_one_line(argv: list[str], says: str, capsys) -> None:
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and says in err[0], err


def test_missing_identity_file_is_a_usage_error(ssh: dict, capsys) -> None:
    rc = main(["queue", "--host", "mx1", *_ssh(ssh), "--identity", "/nonexistent/key"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "no such key file" in err[0], err


def test_unknown_host_key_refused_for_queue(postfix_lab: PostfixLab, ssh: dict, capsys, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    rc = main(["queue", "--host", "mx1", "--ssh-config", ssh["config"], "--known-hosts", str(empty),
               "-c", str(postfix_lab.config_dir)])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1
    assert "SHA256:" in err[0] and "--accept-new-host-key" in err[0]
    assert empty.read_text() == ""
    rc = main(["queue", "--format", "json", "--host", "mx1", "--ssh-config", ssh["config"], "--known-hosts", str(empty),
               "--accept-new-host-key", "-c", str(postfix_lab.config_dir)])  # fmt: skip
    out = capsys.readouterr().out
    assert json.loads(out)["where"] == "ssh:mx1" and empty.read_text().strip()


def test_non_root_login_without_sudo(postfix_lab: PostfixLab, server: lab.Sshd, ssh: dict, tmp_path: Path, capsys) -> None:
    """A plain login user: what needs no root works; a log only root may read is one clear line."""
    if lab.missing_sudo():
        pytest.skip(lab.missing_sudo())
    secret = server.root / "root-only.log"
    secret.write_text("Nov 28 10:00:00 mx postfix/smtp[1]: A1B2C3D4E5: to=<a@b.test>, status=deferred (x)\n")
    secret.chmod(0o600)
    with lab.lab_user(server.root) as user:
        key = lab.keygen(tmp_path / "id_plain")
        server.authorize(user.pw_name, Path(f"{key}.pub"))
        spec = f"{user.pw_name}@127.0.0.1:{server.port}"
        common = ["--host", spec, "--identity", str(key), "--known-hosts", ssh["known_hosts"],
                  "--ssh-config", str(tmp_path / "none")]  # fmt: skip
        (tmp_path / "none").write_text("")
        _, doc = _json(capsys, ["config", "--format", "json", "-c", str(postfix_lab.config_dir), *common])
        assert doc["parameters"], "postconf needs no root"
        rc = main(["logs", "--format", "json", str(secret), *common])
        out, err = capsys.readouterr()
        lines = err.strip().splitlines()
        assert rc != 0 and len(lines) == 1, (rc, out, err)
        assert str(secret) in lines[0] and "Permission denied for" in lines[0] and "log in as root" in lines[0], lines
