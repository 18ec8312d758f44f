"""A hostile SSH server for the SSHTarget deadline and memory tests: paramiko's
ServerInterface on 127.0.0.1, a random port, keys made in a temp dir.

It logs any public key in (the client's key must exist, its value does not matter),
grants session channels, and then misbehaves by mode:

    noexec    never answers an exec (or subsystem) request
    silent    answers exec (and the sftp subsystem), then never sends a byte
    flood     answers exec and sends "x...x\\n" lines without end (no SFTP)
    longline  answers exec and sends one endless line, no newline (no SFTP)
    nobanner  accepts TCP and never sends the SSH banner (not SSH at all)

Run it as its own process (`python -m tests.lab.hostile_sshd MODE DIR`): it writes
DIR/host_key, DIR/client_key, DIR/known_hosts and prints its port on stdout, then serves
until killed. A separate process keeps the flood's CPU and memory out of the
measurement of the client. `running(mode, dir)` does all that for a test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko

MODES = ("noexec", "silent", "flood", "longline", "nobanner")
_LINE = b"x" * 99 + b"\n"
_BLOCK = _LINE * 320  # 32,000 bytes per send


class _Server(paramiko.ServerInterface):
    def __init__(self, mode: str) -> None:
        self.mode = mode

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        return paramiko.AUTH_SUCCESSFUL

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        if self.mode == "noexec":
            _forever()  # blocks the transport's thread: no reply to this request, ever
        if self.mode in ("flood", "longline"):
            threading.Thread(target=_flood, args=(channel, self.mode == "longline"), daemon=True).start()
        return True  # "silent": granted, then nothing

    def check_channel_subsystem_request(self, channel: paramiko.Channel, name: str) -> bool:
        if self.mode == "noexec":
            _forever()
        return self.mode == "silent" and name == "sftp"  # granted, and never a version packet


def _forever() -> None:
    while True:
        time.sleep(3600)


def _flood(channel: paramiko.Channel, one_line: bool) -> None:
    block = _BLOCK.replace(b"\n", b"x") if one_line else _BLOCK
    with contextlib.suppress(Exception):  # the client went away
        while not channel.closed:
            channel.sendall(block)  # waits for the client's window: the server's memory stays flat


def _serve(conn: socket.socket, mode: str, host_key: paramiko.PKey) -> None:
    transport = paramiko.Transport(conn)
    transport.add_server_key(host_key)
    with contextlib.suppress(Exception):
        transport.start_server(server=_Server(mode))
        channels = []  # held: a Channel closes itself when garbage collected
        while transport.is_active():
            chan = transport.accept(1.0)  # the callbacks above do the rest
            if chan is not None:
                channels.append(chan)


def serve(mode: str, directory: Path) -> None:
    if mode not in MODES:
        raise SystemExit(f"mode must be one of {', '.join(MODES)}")
    host_key = paramiko.ECDSAKey.generate()
    host_key.write_private_key_file(str(directory / "host_key"))
    paramiko.ECDSAKey.generate().write_private_key_file(str(directory / "client_key"))
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    (directory / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key.get_name()} {host_key.get_base64()}\n")
    print(port, flush=True)
    held: list[socket.socket] = []
    while True:
        conn, _ = listener.accept()
        if mode == "nobanner":
            held.append(conn)  # accepted, never a word
            continue
        threading.Thread(target=_serve, args=(conn, mode, host_key), daemon=True).start()


@dataclass
class Hostile:
    mode: str
    port: int
    dir: Path
    proc: subprocess.Popen[bytes]

    @property
    def spec(self) -> str:
        return f"root@127.0.0.1:{self.port}"

    @property
    def known_hosts(self) -> str:
        return str(self.dir / "known_hosts")

    @property
    def client_key(self) -> str:
        return str(self.dir / "client_key")

    def cli_options(self, timeout: float) -> list[str]:
        """pfdiag's own options to reach it: --host, --known-hosts, --identity, --ssh-timeout."""
        return ["--host", self.spec, "--ssh-config", os.devnull, "--known-hosts", self.known_hosts,
                "--identity", self.client_key, "--ssh-timeout", f"{timeout:g}"]  # fmt: skip


@contextlib.contextmanager
def running(mode: str, directory: Path) -> Iterator[Hostile]:
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-m", "tests.lab.hostile_sshd", mode, str(directory)],
                            cwd=root, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip  (paramiko's own log of resets)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.strip().isdigit():
            raise RuntimeError(f"hostile sshd ({mode}) did not start: {line!r}")
        yield Hostile(mode, int(line), directory, proc)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


if __name__ == "__main__":
    serve(sys.argv[1], Path(sys.argv[2]))
