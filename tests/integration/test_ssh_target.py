"""SSHTarget against a real OpenSSH server on 127.0.0.1 (tests/lab/sshd.py).

No mocks: keys come from ssh-keygen, the server is /usr/sbin/sshd, agents are
ssh-agent, users are made with useradd. Everything stays on loopback.
Without root or OpenSSH these tests skip with the reason; under CI=true they fail.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from checks.errors import (
    CommandNotFound,
    CommandTimeout,
    ConnectFailed,
    InputError,
    PfdiagError,
    TargetError,
    UsageError,
)
from checks.targets import Target
from checks.targets.ssh import HostSpec, SSHTarget, parse_spec
from tests.lab import sshd as lab

pytestmark = pytest.mark.lab


from tests.integration.conftest import need_sshd as _need  # server, _no_user_agent: conftest.py


def _config(path: Path, server: lab.Sshd, key: Path | None = None) -> str:
    key = key or server.user_key
    common = f"  HostName 127.0.0.1\n  Port {server.port}\n  User root\n  IdentityFile {key}\n"
    path.write_text(
        f"Host lab jump\n{common}Host behind\n{common}  ProxyJump jump\nHost 127.0.0.1\n  IdentityFile {key}\n"
    )
    return str(path)


@pytest.fixture
def ssh_config(tmp_path: Path, server: lab.Sshd) -> str:
    return _config(tmp_path / "ssh_config", server)


@pytest.fixture
def known_hosts(tmp_path: Path, server: lab.Sshd) -> str:
    path = tmp_path / "known_hosts"
    path.write_text(server.known_hosts_line())
    return str(path)


@pytest.fixture
def target(ssh_config: str, known_hosts: str) -> Iterator[SSHTarget]:
    with SSHTarget.open("lab", ssh_config=ssh_config, known_hosts=known_hosts) as t:
        yield t


def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(exc.value)
    assert "\n" not in text, text
    return text


# --- login and commands ---------------------------------------------------------------------


def test_key_login_runs_postconf_like_locally(target: SSHTarget) -> None:
    assert isinstance(target, Target) and target.local_path("/var/log/mail.log") is None  # nothing to open from here
    assert (target.where, target.route, target.user) == ("ssh:lab", ("lab",), "root")
    local = subprocess.run(["postconf", "-h", "mail_version"], capture_output=True, text=True, check=True).stdout
    result = target.run(["postconf", "-h", "mail_version"])
    assert (result.returncode, result.stdout, result.stderr) == (0, local, "")
    assert result.argv == ("postconf", "-h", "mail_version") and result.duration > 0


def test_argv_is_never_parsed_by_a_shell(target: SSHTarget) -> None:
    tricky = ["a b", "$(touch /tmp/pfdiag-pwned)", "`id`", "x;y", "'\"", "*", "", "-n"]
    result = target.run(["printf", "%s|", *tricky])
    assert result.stdout == "|".join(tricky) + "|"
    assert not os.path.exists("/tmp/pfdiag-pwned")
    failed = target.run(["sh", "-c", "echo oops >&2; exit 3"])
    assert (failed.returncode, failed.stderr) == (3, "oops\n")  # a failure is the caller's to read
    assert target.run(["sh", "-c", "exit 127"]).returncode == 127  # 127 without "not found" is just a status
    assert target.run(["sh", "-c", 'printf "caf\\351\\n"']).stdout == "caf\ufffd\n"  # bad UTF-8 replaced


def test_missing_program_and_sbin_path(target: SSHTarget) -> None:
    with pytest.raises(CommandNotFound, match="no-such-program-xyz: command not found on ssh:lab"):
        target.run(["no-such-program-xyz"])
    path = target.run(["sh", "-c", 'echo "$PATH"']).stdout
    assert path.startswith("/usr/sbin:/sbin:")


def test_user_host_port_spec(ssh_config: str, known_hosts: str, server: lab.Sshd) -> None:
    with SSHTarget.open(f"root@127.0.0.1:{server.port}", ssh_config=ssh_config, known_hosts=known_hosts) as t:
        assert t.where == "ssh:127.0.0.1"
        assert t.run(["id", "-un"]).stdout == "root\n"


def test_command_timeout_kills_the_remote_command(target: SSHTarget, server: lab.Sshd) -> None:
    start = time.monotonic()
    with pytest.raises(CommandTimeout, match=r"sleep 30: no answer within 1 s on ssh:lab"):
        target.run(["sleep", "30"], timeout=1)
    assert time.monotonic() - start < 3
    _wait_gone(server, ["sleep", "30"])  # killed, not left running on the host
    assert target.run(["true"]).ok  # the connection survives a timeout


def _wait_gone(server: lab.Sshd, argv: list[str], seconds: float = 4) -> None:
    deadline = time.monotonic() + seconds
    while any(lab.cmdline(p) == argv for p in lab.descendants(server.pid)):
        assert time.monotonic() < deadline, f"the timed-out {argv} still runs on the host"
        time.sleep(0.05)


def test_connection_killed_mid_run(ssh_config: str, known_hosts: str, server: lab.Sshd) -> None:
    t = SSHTarget.open("lab", ssh_config=ssh_config, known_hosts=known_hosts)
    orphans: list[int] = []

    def kill_when_running() -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if any(lab.cmdline(p) == ["sleep", "20"] for p in lab.descendants(server.pid)):
                orphans.extend(server.kill_sessions())
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_when_running)
    killer.start()
    try:
        start = time.monotonic()
        with pytest.raises(TargetError, match=r"^connection to lab lost: ") as exc:
            t.run(["sleep", "20"], timeout=15)
        assert not isinstance(exc.value, CommandTimeout)
        assert time.monotonic() - start < 8
        _one_line(exc)
        for later in (
            lambda: t.run(["true"]),
            lambda: t.open_text("/etc/hostname"),
            lambda: t.connect("127.0.0.1", 1, 1),
        ):
            with pytest.raises(TargetError, match=r"^connection to lab lost"):
                later()
    finally:
        killer.join()
        t.close()
        for pid in orphans:
            if lab.cmdline(pid) == ["sleep", "20"]:
                os.kill(pid, 9)


def test_closed_target_says_so(ssh_config: str, known_hosts: str) -> None:
    t = SSHTarget.open("lab", ssh_config=ssh_config, known_hosts=known_hosts)
    t.close()
    t.close()  # idempotent
    with pytest.raises(TargetError, match="closed"):
        t.run(["true"])


# --- host keys -------------------------------------------------------------------------------


def test_unknown_host_key_is_refused_with_its_fingerprint(ssh_config: str, tmp_path: Path, server: lab.Sshd) -> None:
    store = tmp_path / "pfdiag_known_hosts"
    with pytest.raises(TargetError) as exc:
        SSHTarget.open("lab", ssh_config=ssh_config, known_hosts=str(store))
    text = _one_line(exc)
    assert lab.fingerprint(Path(f"{server.host_key}.pub")) in text  # what `ssh-keygen -lf` prints
    assert "ssh-ed25519 SHA256:" in text and "--accept-new-host-key" in text and f"[127.0.0.1]:{server.port}" in text
    assert not store.exists()  # nothing trusted behind the user's back


def test_accept_new_saves_the_key_in_openssh_format(ssh_config: str, tmp_path: Path, server: lab.Sshd) -> None:
    store = tmp_path / "config" / "pfdiag" / "known_hosts"  # parent dirs created as needed
    with SSHTarget.open("lab", ssh_config=ssh_config, known_hosts=str(store), accept_new_host_key=True) as t:
        assert t.run(["true"]).ok
    assert store.read_text() == server.known_hosts_line()
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    found = subprocess.run(
        ["ssh-keygen", "-F", f"[127.0.0.1]:{server.port}", "-f", str(store)], capture_output=True, check=False
    )
    assert found.returncode == 0  # OpenSSH reads what we wrote
    # hashed by OpenSSH's own tool: still recognised, and nothing is appended again
    subprocess.run(["ssh-keygen", "-H", "-f", str(store)], check=True, capture_output=True)
    hashed = store.read_text()
    assert hashed.startswith("|1|")
    with SSHTarget.open("lab", ssh_config=ssh_config, known_hosts=str(store), accept_new_host_key=True) as t:
        assert t.run(["true"]).ok
    assert store.read_text() == hashed


def test_changed_host_key_is_refused_even_with_accept_new(tmp_path: Path) -> None:
    _need(lab.missing())
    with lab.running_sshd() as own:
        config = _config(tmp_path / "ssh_config", own)
        store = tmp_path / "known_hosts"
        store.write_text("# pfdiag test\n" + own.known_hosts_line())
        with SSHTarget.open("lab", ssh_config=config, known_hosts=str(store)) as t:
            assert t.run(["true"]).ok
        original = store.read_text()
        own.restart(host_key=lab.keygen(own.root / "host_ed25519_new"))  # same port, new identity
        for accept_new in (False, True):
            with pytest.raises(TargetError) as exc:
                SSHTarget.open("lab", ssh_config=config, known_hosts=str(store), accept_new_host_key=accept_new)
            text = _one_line(exc)
            assert "HOST KEY CHANGED" in text and f"{store} line 2" in text
            assert lab.fingerprint(Path(f"{own.host_key}.pub")) in text
        assert store.read_text() == original  # the new key was not saved


# --- authentication --------------------------------------------------------------------------


def test_ssh_agent_login(tmp_path: Path, known_hosts: str, server: lab.Sshd, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(f"Host lab\n  HostName 127.0.0.1\n  Port {server.port}\n  User root\n")  # no IdentityFile
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh/id_* to fall back on
    with pytest.raises(TargetError, match=r"SSH login as root refused; tried no keys"):
        SSHTarget.open("lab", ssh_config=str(config), known_hosts=known_hosts)
    with lab.ssh_agent(tmp_path, server.user_key) as sock:
        monkeypatch.setenv("SSH_AUTH_SOCK", sock)
        with SSHTarget.open("lab", ssh_config=str(config), known_hosts=known_hosts) as t:
            assert t.run(["id", "-u"]).stdout == "0\n"


def test_encrypted_key_prompt_and_errors(tmp_path: Path, known_hosts: str, server: lab.Sshd) -> None:
    locked = lab.keygen(tmp_path / "id_locked", passphrase="s3cret pass")
    server.authorize("root", Path(f"{locked}.pub"))
    config = _config(tmp_path / "ssh_config", server, key=locked)
    try:
        with pytest.raises(TargetError, match=r"id_locked is passphrase-protected: load it with ssh-add"):
            SSHTarget.open("lab", ssh_config=config, known_hosts=known_hosts)
        prompts: list[str] = []

        def prompt(text: str) -> str:
            prompts.append(text)
            return "s3cret pass"

        with SSHTarget.open("lab", ssh_config=config, known_hosts=known_hosts, password_prompt=prompt) as t:
            assert t.run(["true"]).ok
        assert prompts == [f"Enter passphrase for key '{locked}': "]
        with pytest.raises(TargetError, match=r"wrong passphrase for .*id_locked"):
            SSHTarget.open("lab", ssh_config=config, known_hosts=known_hosts, password_prompt=lambda p: "nope")
    finally:
        server.authorize("root", Path(f"{server.user_key}.pub"))


def test_unauthorized_key_is_refused(tmp_path: Path, known_hosts: str, server: lab.Sshd) -> None:
    stranger = lab.keygen(tmp_path / "id_stranger")
    config = _config(tmp_path / "ssh_config", server, key=stranger)
    with pytest.raises(TargetError) as exc:
        SSHTarget.open("lab", ssh_config=config, known_hosts=known_hosts)
    assert "SSH login as root refused; tried" in _one_line(exc) and str(stranger) in str(exc.value)


# --- non-root user and sudo -------------------------------------------------------------------


def _open_as(user: str, tmp_path: Path, server: lab.Sshd, known_hosts: str) -> SSHTarget:
    key = lab.keygen(tmp_path / f"id_{user}")
    server.authorize(user, Path(f"{key}.pub"))
    config = _config(tmp_path / "ssh_config", server, key=key)
    return SSHTarget.open(f"{user}@127.0.0.1:{server.port}", ssh_config=config, known_hosts=known_hosts)


def test_non_root_with_passwordless_sudo(tmp_path: Path, server: lab.Sshd, known_hosts: str) -> None:
    _need(lab.missing_sudo())
    sudoers = ("/usr/bin/id", "/usr/sbin/postconf", "/usr/bin/sleep")
    with (
        lab.lab_user(server.root, sudo_commands=sudoers) as user,
        _open_as(user.pw_name, tmp_path, server, known_hosts) as t,
    ):
        assert t.run(["id", "-u"]).stdout == f"{user.pw_uid}\n"
        assert t.run(["postconf", "-h", "mail_version"]).ok  # found via the /usr/sbin PATH prefix
        assert t.run(["id", "-u"], privileged=True).stdout == "0\n"
        # a timed-out command run as root through sudo is stopped too (sudo relays TERM)
        with pytest.raises(CommandTimeout):
            t.run(["sleep", "31"], timeout=1, privileged=True)
        _wait_gone(server, ["sleep", "31"])


def test_non_root_without_sudo_rights_gets_a_clear_message(tmp_path: Path, server: lab.Sshd, known_hosts: str) -> None:
    _need(lab.missing_sudo())
    with lab.lab_user(server.root) as user, _open_as(user.pw_name, tmp_path, server, known_hosts) as t:
        assert t.run(["id", "-u"]).stdout == f"{user.pw_uid}\n"  # unprivileged runs are unaffected
        with pytest.raises(TargetError) as exc:
            t.run(["postqueue", "-j"], privileged=True)
        text = _one_line(exc)
        assert "passwordless sudo" in text and "(postqueue)" in text and "log in as root" in text
        assert f"{user.pw_name} ALL=(root) NOPASSWD:" in text


# --- files -----------------------------------------------------------------------------------


@pytest.fixture
def logs(server: lab.Sshd) -> Iterator[Path]:
    """A log directory on the "remote" host (the same machine, read over SFTP)."""
    root = server.root / "logs"
    root.mkdir(exist_ok=True)
    lines = [b"Nov 28 10:00:00 mx postfix/smtp[1]: A1: status=deferred caf\xe9\n", b"Nov 28 10:00:01 mx dovecot: x\n"]
    with gzip.open(root / "mail.log.2.gz", "wb") as fh:
        fh.writelines(lines)
    (root / "mail.log.3.xz").write_bytes(lzma.compress(b"".join(lines)))
    (root / "mail.log.4.bz2").write_bytes(bz2.compress(b"".join(lines)))
    (root / "subdir").mkdir(exist_ok=True)
    (root / "link").unlink(missing_ok=True)
    (root / "link").symlink_to(root / "mail.log.2.gz")
    yield root


def test_open_text_decompresses_over_sftp(target: SSHTarget, logs: Path) -> None:
    for name in ("mail.log.2.gz", "mail.log.3.xz", "mail.log.4.bz2"):
        with target.open_text(str(logs / name)) as fh:
            assert fh.readline() == "Nov 28 10:00:00 mx postfix/smtp[1]: A1: status=deferred caf\ufffd\n"
    with pytest.raises(InputError, match="No such file"):
        target.open_text(str(logs / "missing.log"))
    with pytest.raises(InputError, match="is a directory"):
        target.open_text(str(logs))
    damaged = logs / "damaged.gz"
    damaged.write_bytes((logs / "mail.log.2.gz").read_bytes()[:-12])
    with pytest.raises(InputError, match="damaged or truncated"):
        target.open_text(str(damaged)).read()


def test_open_text_streams_a_file_bigger_than_a_window(target: SSHTarget, logs: Path) -> None:
    big = logs / "big.log"
    line = "Nov 28 10:00:00 mx postfix/qmgr[2]: ABCDEF: from=<a@b>, size=1, nrcpt=1 (queue active)\n"
    big.write_text(line * 40_000)  # ~3.5 MB: several SFTP windows
    with target.open_text(str(big)) as fh:
        count = sum(1 for got in fh if got == line)
    assert count == 40_000


def test_file_info_list_dir_is_dir(target: SSHTarget, logs: Path) -> None:
    info = target.file_info(str(logs / "mail.log.2.gz"))
    st = (logs / "mail.log.2.gz").stat()
    assert (info.size, info.mtime) == (st.st_size, float(int(st.st_mtime)))
    names = [os.path.basename(f.path) for f in target.list_dir(str(logs))]
    assert names == sorted(names) and "link" in names and "subdir" not in names and "mail.log.3.xz" in names
    assert target.is_dir(str(logs)) and not target.is_dir(str(logs / "link")) and not target.is_dir("/no/such")
    with pytest.raises(InputError):
        target.file_info(str(logs / "missing"))
    with pytest.raises(InputError, match="cannot list directory"):
        target.list_dir(str(logs / "missing"))


def test_open_filtered_greps_on_the_host(target: SSHTarget, logs: Path) -> None:
    for name in ("mail.log.2.gz", "mail.log.3.xz", "mail.log.4.bz2"):
        with target.open_filtered(str(logs / name)) as fh:
            assert fh.read() == "Nov 28 10:00:00 mx postfix/smtp[1]: A1: status=deferred caf\ufffd\n"
    assert target.open_filtered(str(logs / "mail.log.2.gz"), pattern="$(reboot)").read() == ""  # a pattern, not code
    newer = (logs / "mail.log.2.gz").stat().st_mtime + 60
    assert target.open_filtered(str(logs / "mail.log.2.gz"), since_epoch=newer).read() == ""
    with pytest.raises(InputError, match="No such file"):
        target.open_filtered(str(logs / "missing.gz"))
    damaged = logs / "damaged2.gz"
    damaged.write_bytes((logs / "mail.log.2.gz").read_bytes()[:-12])
    with pytest.raises(InputError, match="remote filter failed"):
        target.open_filtered(str(damaged)).read()


# --- connections from the host's vantage point -----------------------------------------------


@pytest.fixture
def echo_server() -> Iterator[int]:
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                while data := conn.recv(4096):
                    conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(2)
    listener.close()


def test_connect_through_the_ssh_host(target: SSHTarget, echo_server: int) -> None:
    conn = target.connect("127.0.0.1", echo_server, timeout=5)
    try:
        conn.sendall(b"EHLO pfdiag\r\n")
        assert conn.recv(100) == b"EHLO pfdiag\r\n"
    finally:
        conn.close()
    with pytest.raises(ConnectFailed, match="Connection refused") as exc:
        target.connect("127.0.0.1", lab.free_port(), timeout=5)
    assert exc.value.kind == "refused"
    with pytest.raises(UsageError):
        target.connect("-oProxyCommand=x", 25, timeout=5)
    assert target.run(["true"]).ok  # failed channels leave the connection usable


def test_proxyjump_through_the_same_sshd(ssh_config: str, known_hosts: str, server: lab.Sshd) -> None:
    before = server.log.read_text().count("Accepted publickey for root")
    with SSHTarget.open("behind", ssh_config=ssh_config, known_hosts=known_hosts) as t:
        assert (t.where, t.route) == ("ssh:behind", ("jump", "behind"))
        assert t.run(["postconf", "-h", "mail_version"]).ok
    assert server.log.read_text().count("Accepted publickey for root") - before == 2  # two logins: jump, then behind


# --- refusing bad input and unreachable servers ----------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "   ",
        "-oProxyCommand=x",
        "a b",
        "host;reboot",
        "$(id)",
        "host:0",
        "host:99999",
        "host:ssh",
        "user@",
        "@host",
        "-l@host",
        "us er@host",
        "[::1",
        "[::1]x",
        "ho\nst",
        "exa_mple..com",
    ],
)
def test_bad_specs_are_usage_errors(spec: str, tmp_path: Path) -> None:
    # refused before any lookup or connection: no sshd needed
    with pytest.raises(UsageError, match=r"SSH host"):
        SSHTarget.open(spec, ssh_config=os.devnull, known_hosts=str(tmp_path / "known_hosts"))


def test_good_specs_parse() -> None:
    assert parse_spec("mx1") == HostSpec(None, "mx1", None)
    assert (parse_spec("a@mx1.example.net:2222").user, parse_spec("a@mx1.example.net:2222").port) == ("a", 2222)
    assert parse_spec("[2001:db8::1]:22").host == "2001:db8::1"
    assert parse_spec("root@2001:db8::1").port is None


def test_bad_config_values_are_usage_errors(tmp_path: Path) -> None:
    known_hosts = str(tmp_path / "known_hosts")
    config = tmp_path / "ssh_config"
    config.write_text(
        "Host evil\n  HostName -oProxyCommand=touch\n"
        "Host piped\n  HostName 127.0.0.1\n  ProxyCommand nc %h %p\n"
        "Host loop\n  HostName 127.0.0.1\n  ProxyJump loop\n"
    )
    for alias, message in (("evil", "HostName"), ("piped", "ProxyCommand"), ("loop", "ProxyJump")):
        with pytest.raises(UsageError, match=message):
            SSHTarget.open(alias, ssh_config=str(config), known_hosts=known_hosts)
    with pytest.raises(UsageError, match="no such file"):
        SSHTarget.open("lab", ssh_config=str(tmp_path / "nope"), known_hosts=known_hosts)


def test_silent_server_times_out_and_closed_port_is_refused(tmp_path: Path, known_hosts: str) -> None:
    silent = socket.create_server(("127.0.0.1", 0))  # accepts, never says a word
    try:
        start = time.monotonic()
        with pytest.raises(TargetError, match=r"no SSH handshake .* within 1 s") as exc:
            SSHTarget.open(
                f"root@127.0.0.1:{silent.getsockname()[1]}",
                ssh_config=os.devnull,
                known_hosts=known_hosts,
                connect_timeout=1,
            )
        assert time.monotonic() - start < 4
        _one_line(exc)
    finally:
        silent.close()
    with pytest.raises(TargetError, match="connection refused"):
        SSHTarget.open(f"root@127.0.0.1:{lab.free_port()}", ssh_config=os.devnull, known_hosts=known_hosts)


def test_no_paramiko_exception_escapes(target: SSHTarget) -> None:
    for call in (
        lambda: target.run([]),
        lambda: target.open_text(""),
        lambda: target.open_filtered("/etc/hostname", pattern=""),
        lambda: target.connect("127.0.0.1", 70000, 1),
    ):
        with pytest.raises(PfdiagError):
            call()
