"""Small (mis)behaving SMTP servers on 127.0.0.1 for probe tests: threads + sockets, stdlib.

Each peer listens on a free port (or one given), serves every connection in its own
thread, and stops itself after `lifetime` seconds if a test forgets to. Every wait polls
a stop event, so stop() returns within a fraction of a second. Usage:

    with SlowAfterDotPeer(delay=2.0) as peer:
        probe_address(LocalTarget(), peer.host, peer.port, ...)

    SmtpPeer              healthy ESMTP; records messages by Message-ID (STARTTLS with tls_context)
    SourceRecordingPeer   healthy, and records the source address of every connection
    SilentPeer            accepts, never greets (dead server, or SMTPS port without wrappermode)
    TarpitPeer            greets after `delay` seconds
    TricklePeer           sends its greeting one byte per `interval` seconds
    LongLinePeer          a greeting line of `line_bytes` bytes (optionally never ending)
    EndlessReplyPeer      answers EHLO with "250-" lines forever
    BadUtf8Peer           invalid UTF-8 in its greeting and EHLO reply
    CloseMidReplyPeer     closes the connection halfway through a reply (banner, ehlo or end-of-data)
    Banner421Peer         "421 4.3.2 Service currently unavailable" greeting
    NoEsmtpPeer           refuses EHLO (502), accepts HELO: an old SMTP-only server
    RejectingPeer         answers one verb (MAIL, RCPT, ...) with a given error reply
    PixPeer               greeting masked like a Cisco PIX fixup; optionally no reply after "."
    SlowAfterDotPeer      answers "." after `delay` seconds
    SizeStallPeer         stops reading (and answering) once more than `limit` bytes of DATA came
    StartTlsGarbagePeer   offers STARTTLS, says 220, then sends garbage instead of a handshake
    SmtpsPeer             implicit TLS from the first byte (port 465 style)
"""

from __future__ import annotations

import select
import shutil
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

POLL = 0.05
_MAX_LINE = 1 << 16
_MAX_MESSAGES = 1000
_HEADER_KEEP = 1 << 16


class _Stopped(Exception):
    """The peer is stopping: unwind the session thread."""


class PeerConn:
    """The server side of one connection; every blocking call notices stop()."""

    def __init__(self, sock: socket.socket, peer: Peer) -> None:
        self.sock: socket.socket = sock
        self.peer = peer
        self.buf = bytearray()
        self.tls = False
        sock.settimeout(POLL)

    def _check(self) -> None:
        if self.peer.stopped():
            raise _Stopped

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            self._check()
            try:
                view = view[self.sock.send(view[:_MAX_LINE]) :]
            except TimeoutError:
                continue

    def recv(self) -> bytes:
        """Some bytes; b"" once the client has closed."""
        while True:
            self._check()
            try:
                return self.sock.recv(_MAX_LINE)
            except TimeoutError:
                continue
            except ssl.SSLWantReadError:
                continue

    def readline(self) -> bytes | None:
        """One line with its newline (cut at 64 KiB); None once the client has closed."""
        while True:
            nl = self.buf.find(b"\n")
            if nl >= 0 or len(self.buf) >= _MAX_LINE:
                end = nl + 1 if nl >= 0 else _MAX_LINE
                line = bytes(self.buf[:end])
                del self.buf[:end]
                return line
            data = self.recv()
            if not data:
                return None
            self.buf += data

    def sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self._check()
            time.sleep(min(POLL, max(end - time.monotonic(), 0)))

    def hold(self) -> None:
        """Stay connected WITHOUT reading, until the peer stops (fills the client's buffers)."""
        while True:
            self._check()
            time.sleep(POLL)

    def drain_until_closed(self) -> None:
        """Stay silent, reading and dropping, until the client closes or the peer stops."""
        while self.recv():
            pass

    def wait_readable(self) -> None:
        while True:
            self._check()
            if select.select([self.sock], [], [], POLL)[0]:
                return

    def start_tls(self, context: ssl.SSLContext) -> None:
        """Server-side handshake once the client has sent something (its ClientHello)."""
        self.wait_readable()
        self.sock.settimeout(5.0)
        self.sock = context.wrap_socket(self.sock, server_side=True)
        self.sock.settimeout(POLL)
        self.tls = True

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class Peer:
    """A loopback TCP server running `session(conn)` per connection in a thread."""

    def __init__(self, *, port: int = 0, lifetime: float = 60.0, max_connections: int = 32) -> None:
        self.host = "127.0.0.1"
        self.port = port
        self.lifetime = lifetime
        self.max_connections = max_connections
        self.connections = 0
        self._stop = threading.Event()
        self._deadline = 0.0
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def start(self) -> Peer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(64)
        sock.settimeout(POLL)
        self._listener = sock
        self.port = sock.getsockname()[1]
        self._deadline = time.monotonic() + self.lifetime
        self._spawn(self._accept_loop)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._listener is not None:
            self._listener.close()
        for t in list(self._threads):
            t.join(timeout=2.0)

    def __enter__(self) -> Peer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stopped(self) -> bool:
        return self._stop.is_set() or time.monotonic() > self._deadline

    def _spawn(self, fn: Callable[..., None], *args: object) -> None:
        t = threading.Thread(target=fn, args=args, daemon=True, name=f"{type(self).__name__}:{self.port}")
        with self._lock:
            self._threads.append(t)
        t.start()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self.stopped():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                full = self.connections >= self.max_connections
                self.connections += 1
            if full:
                sock.close()
                continue
            self._spawn(self._serve, sock)
        self._listener.close()

    def _serve(self, sock: socket.socket) -> None:
        conn = PeerConn(sock, self)
        try:
            self.session(conn)
        except (_Stopped, OSError):
            pass
        finally:
            conn.close()

    def session(self, conn: PeerConn) -> None:
        raise NotImplementedError


# --- SMTP ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    message_id: str
    subject: str
    mail_from: str
    rcpt_to: tuple[str, ...]
    size: int  # bytes between DATA's 354 and the final ".", dot-unstuffed


class _Txn:
    def __init__(self) -> None:
        self.mail_from = ""
        self.rcpt_to: list[str] = []


def _header(headers: bytes, name: str) -> str:
    for line in headers.decode("ascii", "replace").split("\r\n"):
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return ""


def reply(code: int, *lines: str) -> bytes:
    """A (multi-line) SMTP reply."""
    lines = lines or ("",)
    out = [f"{code}-{line}" for line in lines[:-1]] + [f"{code} {lines[-1]}".rstrip()]
    return ("\r\n".join(out) + "\r\n").encode()


class SmtpPeer(Peer):
    """A healthy ESMTP server. Offers STARTTLS when given a server tls_context."""

    hostname = "peer.test"
    greeting = b"220 peer.test ESMTP pfdiag test peer\r\n"
    _VERBS = ("EHLO", "HELO", "STARTTLS", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT")

    def __init__(self, *, tls_context: ssl.SSLContext | None = None, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.tls_context = tls_context
        self.messages: dict[str, Received] = {}
        self.commands: list[str] = []

    # -- the dialogue

    def session(self, conn: PeerConn) -> None:
        if not self.greet(conn):
            return
        txn = _Txn()
        while (line := conn.readline()) is not None:
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            verb, _, arg = text.partition(" ")
            verb = verb.upper()
            with self._lock:
                if len(self.commands) < 1000:
                    self.commands.append(verb)
            if verb not in self._VERBS:
                conn.send(reply(502, "5.5.2 Error: command not recognized"))
                continue
            if getattr(self, "on_" + verb.lower())(conn, arg, txn) is False:
                return

    def greet(self, conn: PeerConn) -> bool:
        conn.send(self.greeting)
        return True

    def ehlo_lines(self, conn: PeerConn) -> list[str]:
        tls = ["STARTTLS"] if self.tls_context is not None and not conn.tls else []
        return [self.hostname, "PIPELINING", "SIZE 10240000", *tls, "ENHANCEDSTATUSCODES", "8BITMIME"]

    def on_ehlo(self, conn: PeerConn, arg: str, txn: _Txn) -> bool | None:
        conn.send(reply(250, *self.ehlo_lines(conn)))
        return None

    def on_helo(self, conn: PeerConn, arg: str, txn: _Txn) -> bool | None:
        conn.send(reply(250, self.hostname))
        return None

    def on_starttls(self, conn: PeerConn, arg: str, txn: _Txn) -> bool | None:
        if self.tls_context is None or conn.tls:
            conn.send(reply(502, "5.5.1 Error: command not implemented"))
            return None
        conn.send(reply(220, "2.0.0 Ready to start TLS"))
        conn.start_tls(self.tls_context)
        return None

    def on_mail(self, conn: PeerConn, arg: str, txn: _Txn) -> bool | None:
        txn.__init__()  # type: ignore[misc]
        txn.mail_from = arg.partition(":")[2].strip().strip("<>")
        conn.send(reply(250, "2.1.0 Ok"))
        return None

    def on_rcpt(self, conn: PeerConn, arg: str, txn: _Txn) -> bool | None:
        txn.rcpt_to.append(arg.partition(":")[2].strip().strip("<>"))
        conn.send(reply(250, "2.1.5 Ok"))
        return None

    def on_data(self, conn: PeerConn, arg: str, txn: _Txn) -> bool | None:
        conn.send(reply(354, "End data with <CR><LF>.<CR><LF>"))
        got = self.read_data(conn)
        if got is None:
            return False
        size, headers = got
        if self.after_dot(conn, size) is False:
            return False
        message_id = _header(headers, "Message-ID")
        with self._lock:
            if len(self.messages) < _MAX_MESSAGES:
                self.messages[message_id] = Received(
                    message_id, _header(headers, "Subject"), txn.mail_from, tuple(txn.rcpt_to), size
                )
        conn.send(reply(250, "2.0.0 Ok: queued as 4TEST"))
        return None

    def on_rset(self, conn: PeerConn, arg: str, txn: _Txn) -> bool | None:
        txn.__init__()  # type: ignore[misc]
        conn.send(reply(250, "2.0.0 Ok"))
        return None

    def on_noop(self, conn: PeerConn, arg: str, txn: _Txn) -> bool | None:
        conn.send(reply(250, "2.0.0 Ok"))
        return None

    def on_quit(self, conn: PeerConn, arg: str, txn: _Txn) -> bool | None:
        conn.send(reply(221, "2.0.0 Bye"))
        return False

    # -- message data

    def read_data(self, conn: PeerConn) -> tuple[int, bytes] | None:
        """(size, headers) up to the lone "."; None when the client went away."""
        size, headers, in_headers = 0, bytearray(), True
        while (line := conn.readline()) is not None:
            if line in (b".\r\n", b".\n"):
                return size, bytes(headers)
            if line.startswith(b".."):
                line = line[1:]
            size += len(line)
            if in_headers:
                in_headers = line not in (b"\r\n", b"\n")
                if len(headers) < _HEADER_KEEP:
                    headers += line
            if self.on_data_bytes(conn, size) is False:
                return None
        return None

    def on_data_bytes(self, conn: PeerConn, total: int) -> bool | None:
        return None

    def after_dot(self, conn: PeerConn, size: int) -> bool | None:
        return None


class SourceRecordingPeer(SmtpPeer):
    """A healthy peer that remembers the source address of every connection (bind tests)."""

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.sources: list[str] = []

    def greet(self, conn: PeerConn) -> bool:
        with self._lock:
            self.sources.append(conn.sock.getpeername()[0])
        return super().greet(conn)


class SilentPeer(SmtpPeer):
    """Accepts the connection and never says a word."""

    def greet(self, conn: PeerConn) -> bool:
        conn.drain_until_closed()
        return False


class TarpitPeer(SmtpPeer):
    """Greets after `delay` seconds (greeting tarpit), then behaves."""

    def __init__(self, *, delay: float, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.delay = delay

    def greet(self, conn: PeerConn) -> bool:
        conn.sleep(self.delay)
        return super().greet(conn)


class TricklePeer(SmtpPeer):
    """Sends its greeting one byte every `interval` seconds."""

    def __init__(self, *, interval: float = 1.0, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.interval = interval

    def greet(self, conn: PeerConn) -> bool:
        for i in range(len(self.greeting)):
            conn.send(self.greeting[i : i + 1])
            conn.sleep(self.interval)
        return True


_XS = b"x" * (1 << 16)


class LongLinePeer(SmtpPeer):
    """A greeting line of `line_bytes` bytes; end_line=False never sends the newline."""

    def __init__(self, *, line_bytes: int = 1 << 20, end_line: bool = True, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.line_bytes = line_bytes
        self.end_line = end_line

    def greet(self, conn: PeerConn) -> bool:
        conn.send(b"220 ")
        for sent in range(0, self.line_bytes, len(_XS)):
            conn.send(_XS[: min(len(_XS), self.line_bytes - sent)])
        if not self.end_line:
            conn.drain_until_closed()
            return False
        conn.send(b"\r\n")
        return True


_ENDLESS = b"250-peer.test says more\r\n" * 2600  # ~64 KiB per send


class EndlessReplyPeer(SmtpPeer):
    """Answers EHLO with "250-" lines that never end (until the client leaves)."""

    def on_ehlo(self, conn: PeerConn, arg: str, txn: _Txn) -> bool | None:
        while True:
            conn.send(_ENDLESS)


class BadUtf8Peer(SmtpPeer):
    """Invalid UTF-8 in the greeting and the EHLO reply; otherwise healthy."""

    greeting = b"220 peer.test ESMTP caf\xe9 \xff\xfe \xc3\x28 ok\r\n"

    def on_ehlo(self, conn: PeerConn, arg: str, txn: _Txn) -> bool | None:
        conn.send(b"250-peer.test \xe9t\xe9\r\n250-X-ODD \xff\xfe\xfd\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
        return None


class CloseMidReplyPeer(SmtpPeer):
    """Closes the connection in the middle of a reply: phase "banner", "ehlo" or
    "end-of-data" (the final reply after ".": E10's lost connection)."""

    def __init__(self, *, phase: str = "ehlo", **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.phase = phase

    def greet(self, conn: PeerConn) -> bool:
        if self.phase == "banner":
            conn.send(b"220-peer.test hel")
            return False
        return super().greet(conn)

    def on_ehlo(self, conn: PeerConn, arg: str, txn: _Txn) -> bool | None:
        if self.phase != "ehlo":
            return super().on_ehlo(conn, arg, txn)
        conn.send(b"250-peer.test\r\n250-PIPEL")
        return False

    def after_dot(self, conn: PeerConn, size: int) -> bool | None:
        if self.phase != "end-of-data":
            return None
        conn.send(b"250 2.0.0 Ok: que")
        return False


class NoEsmtpPeer(SmtpPeer):
    """Refuses EHLO, accepts HELO."""

    def on_ehlo(self, conn: PeerConn, arg: str, txn: _Txn) -> bool | None:
        conn.send(reply(502, "5.5.2 Error: command not recognized"))
        return None


class RejectingPeer(SmtpPeer):
    """Answers `verb` with `answer` (a complete reply line, e.g. "550 5.1.1 User unknown")."""

    def __init__(self, *, verb: str, answer: str, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.verb = verb.upper()
        self.answer = answer.encode() + b"\r\n"

    def on_mail(self, conn: PeerConn, arg: str, txn: _Txn) -> bool | None:
        if self.verb == "MAIL":
            conn.send(self.answer)
            return None
        return super().on_mail(conn, arg, txn)

    def on_rcpt(self, conn: PeerConn, arg: str, txn: _Txn) -> bool | None:
        if self.verb == "RCPT":
            conn.send(self.answer)
            return None
        return super().on_rcpt(conn, arg, txn)


class Banner421Peer(SmtpPeer):
    """Refuses service in its greeting, answers QUIT, closes."""

    greeting = b"421 4.3.2 Service currently unavailable\r\n"

    def greet(self, conn: PeerConn) -> bool:
        conn.send(self.greeting)
        line = conn.readline()
        if line is not None and line.upper().startswith(b"QUIT"):
            conn.send(reply(221, "2.0.0 Bye"))
        return False


class PixPeer(SmtpPeer):
    """What a Cisco PIX "fixup protocol smtp" shows: a masked greeting, EHLO refused;
    with stall_after_dot, no reply to "." (the fixup's end-of-data bug)."""

    greeting = b"220 ****************************0*****0****20 ****200**0****0*00\r\n"

    def __init__(self, *, stall_after_dot: bool = True, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.stall_after_dot = stall_after_dot

    def on_ehlo(self, conn: PeerConn, arg: str, txn: _Txn) -> bool | None:
        conn.send(reply(500, '5.5.1 Command unrecognized: "XXXX"'))
        return None

    def after_dot(self, conn: PeerConn, size: int) -> bool | None:
        if self.stall_after_dot:
            conn.drain_until_closed()
            return False
        return None


class SlowAfterDotPeer(SmtpPeer):
    """Answers "." only after `delay` seconds, at every size (receiver scanning synchronously)."""

    def __init__(self, *, delay: float, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.delay = delay

    def after_dot(self, conn: PeerConn, size: int) -> bool | None:
        conn.sleep(self.delay)
        return None


class SizeStallPeer(SmtpPeer):
    """Reads the body until more than `limit` bytes of DATA came, then neither reads nor
    answers: what a path-MTU black hole looks like from the sender."""

    def __init__(self, *, limit: int = 8192, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.limit = limit

    def on_data_bytes(self, conn: PeerConn, total: int) -> bool | None:
        if total > self.limit:
            conn.hold()
        return None


class StartTlsGarbagePeer(SmtpPeer):
    """Offers STARTTLS, says 220, then sends garbage where the TLS handshake should be."""

    def ehlo_lines(self, conn: PeerConn) -> list[str]:
        return [self.hostname, "PIPELINING", "STARTTLS", "8BITMIME"]

    def on_starttls(self, conn: PeerConn, arg: str, txn: _Txn) -> bool | None:
        conn.send(reply(220, "2.0.0 Ready to start TLS"))
        conn.send(b"this is not TLS at all \x00\x01\x02\r\n" * 64)
        conn.drain_until_closed()
        return False


class SmtpsPeer(SmtpPeer):
    """Implicit TLS: a TLS handshake first, then SMTP (port 465 style). A client that
    waits for a greeting instead gets silence."""

    def __init__(self, *, tls_context: ssl.SSLContext, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.smtps_context = tls_context
        self.tls_context = None  # no STARTTLS inside SMTPS

    def greet(self, conn: PeerConn) -> bool:
        conn.start_tls(self.smtps_context)
        return super().greet(conn)


# --- a self-signed certificate, made at test time --------------------------------------


def make_self_signed(directory: Path, common_name: str = "peer.test") -> tuple[Path, Path]:
    """(cert.pem, key.pem) for CN/SAN `common_name` and 127.0.0.1: with the cryptography
    package when it is installed (paramiko needs it), else with the openssl CLI."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    try:
        _with_cryptography(cert, key, common_name)
    except ImportError:
        if shutil.which("openssl") is None:
            raise RuntimeError("neither the cryptography package nor the openssl CLI is available") from None
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={common_name}",
             "-addext", f"subjectAltName=DNS:{common_name},IP:127.0.0.1"],
            check=True, capture_output=True, timeout=30,
        )
    return cert, key


def _with_cryptography(cert: Path, key: Path, common_name: str) -> None:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName(common_name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def server_tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx
