"""A Dovecot authentication server for the Postfix lab: enough of Dovecot's auth protocol (version
1.2, as Postfix's xsasl_dovecot client speaks it) for ``smtpd_sasl_type = dovecot`` with
``smtpd_sasl_path = inet:127.0.0.1:PORT``, so that lab mail can be submitted with a real SASL
login and Postfix logs ``sasl_method=PLAIN, sasl_username=LOGIN`` as it does in production.

Mechanism PLAIN only; the users and passwords are a dict. Loopback only, stdlib only; every wait
is bounded and ends on ``stop()``.
"""

from __future__ import annotations

import base64
import socket
import threading

HOST = "127.0.0.1"


class DovecotAuth:
    def __init__(self, users: dict[str, str], host: str = HOST) -> None:
        self.users = dict(users)
        self.host = host
        self.port = 0
        self.logins: list[tuple[str, bool]] = []  # (login, accepted), in order
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._threads: list[threading.Thread] = []

    def start(self) -> DovecotAuth:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        sock.listen(16)
        sock.settimeout(0.2)
        self._sock, self.port = sock, sock.getsockname()[1]
        t = threading.Thread(target=self._accept, name="lab-dovecot-auth", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._sock is not None:
            self._sock.close()
        for t in self._threads:
            t.join(timeout=5)

    def _accept(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(0.5)
        with conn:
            conn.sendall(b"VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nSPID\t1\nCUID\t1\n"
                         b"COOKIE\t00000000000000000000000000000000\nDONE\n")  # fmt: skip
            buf = b""
            while not self._stop.is_set():
                try:
                    data = conn.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                buf += data
                if len(buf) > 65536:
                    return
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    reply = self._answer(line.decode("utf-8", "replace"))
                    if reply:
                        conn.sendall(reply.encode() + b"\n")

    def _answer(self, line: str) -> str | None:
        f = line.split("\t")
        if f[0] != "AUTH" or len(f) < 3:
            return None  # VERSION, CPID: nothing to answer
        rid, mech = f[1], f[2]
        resp = next((x[5:] for x in f[3:] if x.startswith("resp=")), None)
        if mech.upper() != "PLAIN":
            return f"FAIL\t{rid}\treason=mechanism not supported"
        if resp is None:
            return f"CONT\t{rid}\t"
        try:
            _authz, login, password = base64.b64decode(resp).decode("utf-8").split("\0")
        except (ValueError, UnicodeDecodeError):
            return f"FAIL\t{rid}\treason=malformed"
        ok = self.users.get(login) == password
        self.logins.append((login, ok))
        return f"OK\t{rid}\tuser={login}" if ok else f"FAIL\t{rid}\tuser={login}"
