"""A real OpenSSH server on 127.0.0.1 for the SSHTarget tests.

Everything lives in one temp dir: host key, user keys, authorized_keys/<user>,
sshd_config, pid file and the log (sshd -D -e writes it to stderr, which we
redirect). The server is started detached and stopped by its pid; nothing
listens beyond loopback.

Plain functions and context managers (no pytest here): fixtures wrap them.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

# PFDIAG_LAB_SSHD: another OpenSSH build to test against (or a missing path, to see the skip)
SSHD = os.environ.get("PFDIAG_LAB_SSHD", "/usr/sbin/sshd")
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"
SSHD_NAMES = ("sshd", "sshd-session")  # OpenSSH >= 9.8 names its per-connection process sshd-session


def missing() -> str | None:
    """Why this machine cannot run the sshd lab, or None if it can."""
    if os.geteuid() != 0:
        return "the sshd lab needs root (sshd must run as root to log users in)"
    if not os.access(SSHD, os.X_OK):
        return f"{SSHD} is missing (apt-get install openssh-server)"
    if not os.access(SSH_KEYGEN, os.X_OK):
        return "ssh-keygen is missing (apt-get install openssh-client)"
    return None


def missing_sudo() -> str | None:
    return None if shutil.which("sudo") else "sudo is missing (apt-get install sudo)"


def keygen(path: Path, passphrase: str = "", kind: str = "ed25519") -> Path:
    """A fresh key pair at path / path.pub; returns the private key path."""
    path.unlink(missing_ok=True)
    Path(f"{path}.pub").unlink(missing_ok=True)
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", kind, "-N", passphrase, "-C", f"pfdiag-lab-{path.name}", "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path


def fingerprint(pub: Path) -> str:
    """OpenSSH's own SHA256 fingerprint of a public key, to compare against ours."""
    out = subprocess.run([SSH_KEYGEN, "-l", "-E", "sha256", "-f", str(pub)], check=True, capture_output=True, text=True)
    return out.stdout.split()[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                stat = fh.read()
        except OSError:
            continue
        # the comm field may hold spaces and parens: the ppid follows the LAST ")"
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(entry))
    return out


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        kids = _children(todo.pop())
        out += kids
        todo += kids
    return out


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


@dataclass
class Sshd:
    """One running sshd and the keys to talk to it."""

    root: Path
    port: int
    host_key: Path
    user_key: Path
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)
    wrap: tuple[str, ...] = ()  # argv prefix that starts sshd (with_resolv_conf: its own resolv.conf)

    def __post_init__(self) -> None:
        self.log = self.root / "sshd.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def authorize(self, user: str, pub: Path) -> None:
        """Let user log in with the key whose public half is pub."""
        keys = self.root / "authorized_keys" / user
        keys.write_text(pub.read_text())
        keys.chmod(0o644)  # sshd reads it with the user's uid

    def known_hosts_line(self) -> str:
        key_type, blob = Path(f"{self.host_key}.pub").read_text().split()[:2]
        return f"[127.0.0.1]:{self.port} {key_type} {blob}\n"

    def _config(self) -> Path:
        conf = self.root / "sshd_config"
        conf.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {self.host_key}",
                    f"PidFile {self.root / 'sshd.pid'}",
                    f"AuthorizedKeysFile {self.root / 'authorized_keys'}/%u",
                    # the temp dir sits under /tmp (mode 1777), which StrictModes rejects
                    "StrictModes no",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "PermitRootLogin prohibit-password",
                    "AllowTcpForwarding yes",
                    "Subsystem sftp internal-sftp",
                    # not DEBUG: with -e a session's debug lines land in the command's stderr
                    "LogLevel VERBOSE",
                    "",
                ]
            )
        )
        return conf

    def start(self, timeout: float = 10.0) -> None:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation directory
        conf = self._config()
        subprocess.run([SSHD, "-t", "-f", str(conf)], check=True, capture_output=True)
        seen = self.log.stat().st_size if self.log.exists() else 0  # a restart appends to the same log
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [*self.wrap, SSHD, "-D", "-e", "-f", str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # detached: a Ctrl-C on pytest does not reach it first
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            # bytes, not text: sshd -e ends lines with \r\n, which read_text() folds
            if f"Server listening on 127.0.0.1 port {self.port}".encode() in self.log.read_bytes()[seen:]:
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"sshd did not start within {timeout:g} s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        """Kill the server by its pid, then any session processes it left behind."""
        if self.proc is None:
            return
        sessions = descendants(self.proc.pid)
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        for pid in sessions:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc = None

    def restart(self, host_key: Path | None = None) -> None:
        """Stop, optionally swap the host key, start again on the same port."""
        self.stop()
        if host_key is not None:
            self.host_key = host_key
        self.start()

    def session_processes(self) -> list[int]:
        """The sshd processes serving connections (not the listener itself)."""
        return [p for p in descendants(self.pid) if comm(p) in SSHD_NAMES]

    def kill_sessions(self) -> list[int]:
        """SIGKILL every sshd serving a connection: the client sees the TCP stream die.
        Returns the commands those sessions were running (orphaned now) so the
        caller can clean them up."""
        tree = descendants(self.pid)
        for pid in self.session_processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return [p for p in tree if comm(p) not in SSHD_NAMES]


def lab_dir() -> Path:
    """A temp dir every local user can traverse (sshd reads a non-root user's
    authorized_keys as that user); private keys inside stay 0600."""
    root = Path(tempfile.mkdtemp(prefix="pfdiag-sshd-"))
    root.chmod(0o755)
    (root / "authorized_keys").mkdir(mode=0o755)
    return root


@contextlib.contextmanager
def running_sshd(root: Path | None = None, wrap: tuple[str, ...] = ()) -> Iterator[Sshd]:
    """An sshd on 127.0.0.1:<free port> that lets root in with a fresh ed25519 key."""
    own = root is None
    root = root or lab_dir()
    server = Sshd(root, free_port(), keygen(root / "host_ed25519"), keygen(root / "id_ed25519"), wrap=wrap)
    server.authorize("root", Path(f"{server.user_key}.pub"))
    try:
        for attempt in range(3):
            try:
                server.start()
                break
            except RuntimeError:
                # the free port can be taken between probing and binding: pick another
                if attempt == 2 or "Address already in use" not in server.log.read_text(errors="replace"):
                    raise
                server.port = free_port()
        yield server
    finally:
        server.stop()
        if own:
            shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def lab_user(home: Path, name: str = "pfdiaglab", sudo_commands: tuple[str, ...] = ()) -> Iterator[pwd.struct_passwd]:
    """A throwaway non-root login user with its home under home (a lab dir);
    with sudo_commands, a sudoers.d drop-in that lets it run exactly those
    commands as root without a password. Both are removed afterwards, even
    when the test fails."""
    with contextlib.suppress(KeyError):
        pwd.getpwnam(name)
        subprocess.run(["userdel", "-r", "-f", name], check=False, capture_output=True)  # left by a killed run
    # password "*": no password login, yet not "locked" ("!") which sshd would refuse
    # a real home: without one sshd prints "Could not chdir" into every command's stderr
    subprocess.run(
        ["useradd", "-m", "-d", str(home / name), "-s", "/bin/sh", "-p", "*", name], check=True, capture_output=True
    )
    dropin = Path(f"/etc/sudoers.d/{name}")
    try:
        if sudo_commands:
            # checked before it goes live: a broken drop-in would break sudo for everyone
            draft = home / f"{name}.sudoers"
            draft.write_text(f"{name} ALL=(root) NOPASSWD: {', '.join(sudo_commands)}\n")
            subprocess.run(["visudo", "-c", "-q", "-f", str(draft)], check=True, capture_output=True)
            shutil.copyfile(draft, dropin)
            dropin.chmod(0o440)
        yield pwd.getpwnam(name)
    finally:
        dropin.unlink(missing_ok=True)
        # -f: a session of the user may still be winding down in sshd
        subprocess.run(["userdel", "-r", "-f", name], check=False, capture_output=True)


@contextlib.contextmanager
def ssh_agent(root: Path, *keys: Path) -> Iterator[str]:
    """A real ssh-agent holding keys; yields its socket path (SSH_AUTH_SOCK)."""
    sock = root / "agent.sock"
    agent = subprocess.Popen(
        [shutil.which("ssh-agent") or "/usr/bin/ssh-agent", "-D", "-a", str(sock)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 5
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        env = dict(os.environ, SSH_AUTH_SOCK=str(sock))
        for key in keys:
            subprocess.run(["ssh-add", str(key)], env=env, check=True, capture_output=True)
        yield str(sock)
    finally:
        agent.terminate()
        agent.wait(5)


def with_resolv_conf(resolv: Path) -> tuple[str, ...]:
    """Sshd.wrap for a mail host whose /etc/resolv.conf is `resolv`: sshd runs in its own mount
    namespace (unshare, no fork: the pid stays sshd's) where that file is bind-mounted over
    /etc/resolv.conf; its network is this machine's loopback as for any lab sshd."""
    import sys

    return ("unshare", "--mount", "--propagation", "private", "--", sys.executable, __file__, "with-resolv",
            str(resolv), "--")  # fmt: skip


if __name__ == "__main__":  # python sshd.py with-resolv FILE -- ARGV...: bind-mount FILE, exec ARGV
    import sys

    if sys.argv[1:2] != ["with-resolv"] or sys.argv[3:4] != ["--"]:
        raise SystemExit("usage: sshd.py with-resolv FILE -- ARGV...")
    subprocess.run(["mount", "--bind", sys.argv[2], "/etc/resolv.conf"], check=True)
    os.execv(sys.argv[4], sys.argv[4:])
