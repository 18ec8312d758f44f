"""Misbehaving SMTP servers on 127.0.0.1: the far end of the Postfix test lab.

Each failure mode Postfix's smtp client can meet gets one small server class,
written against plain blocking sockets and threads (stdlib only, so this file
also runs as a script: ``python peers.py KIND --port N``, for a peer inside a
network namespace). A peer has ``start()`` / ``stop()``, a ``port``, a bounded
``log`` of what it saw and said, and the bounded list of ``messages`` it read up
to the final ".": enough to count duplicates by Message-ID.

    peer                  what it does                                   Postfix logs (3.7)
    HealthyPeer           accepts everything, records messages           status=sent
    EndOfDataStallPeer    reads the body, never answers "."              timed out while sending end of data
    RefusedPeer           a bound port with no listen(): RST             connect to ...: Connection refused
    NoBannerPeer          accepts TCP, says nothing                      ... initial server greeting
    NoEhloReplyPeer       banner, then silence after EHLO                ... performing the EHLO handshake
    Banner421Peer         "421 4.3.2 ..." as its banner                  refused to talk to me: 421 ...
    GreylistPeer          451 4.7.1 ... Greylisted at RCPT               said: 451 4.7.1 ... (RCPT TO)
    RateLimitPeer         450 4.7.1 too many messages at MAIL FROM       said: 450 4.7.1 ... (MAIL FROM)
    MailboxFullPeer       452 4.2.2 <r>: Mailbox full at RCPT            said: 452 4.2.2 ... (RCPT TO)
    QueueWriteErrorPeer   451 4.3.0 queue file write error after "."     said: 451 4.3.0 ... (end of DATA)
    DropAtRcptPeer        closes the connection on RCPT                  lost connection ... RCPT TO
    BodyStallPeer         stops reading after 354, SO_RCVBUF 4096        timed out while sending message body
    StartTlsGarbagePeer   "220 Ready to start TLS", then plain garbage   Cannot start TLS: handshake failure
    NoStartTlsPeer        healthy, never offers STARTTLS                 TLS is required, but was not offered
    SelfSignedTlsPeer     real STARTTLS with a fresh self-signed cert    Server certificate not verified (verify)
    PixPeer               "220 *****" banner; first "." of each message   end of data timeout, then sent
                          gets no answer (by Message-ID)
    SlowDataPeer          answers "." after ``delay`` seconds            sent with d >= delay (or a timeout)

Every wait is bounded and wakes up on ``stop()``: a stalled session ends when
the peer stops, when the client closes, or after ``stall_limit`` seconds.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import itertools
import re
import select
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Iterator

HOST = "127.0.0.1"
MAX_LINE = 4096  # longer lines are cut into pieces: a peer never buffers more than this per line
KEEP_HEAD = 16 * 1024  # bytes of each message kept (headers and the start of the body)
TICK = 0.2  # how often blocking waits look at the stop flag

_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(<[^>\r\n]*>)", re.IGNORECASE | re.MULTILINE)


class Hangup(Exception):
    """End the session now: the peer closes the connection without a reply."""


@dataclass(frozen=True)
class LogEntry:
    at: float  # time.time()
    session: int
    direction: str  # "C" client said, "S" server said, "*" event
    text: str


@dataclass(frozen=True)
class Received:
    """One message a peer read up to the final "."."""

    session: int
    mail_from: str
    rcpt_to: tuple[str, ...]
    message_id: str | None
    size: int  # bytes after dot-unstuffing, CRLF line ends
    head: bytes  # the first KEEP_HEAD bytes
    at: float


def _angle(arg: str) -> str:
    """The address inside "FROM:<a> SIZE=1" / "TO:<b>"."""
    m = re.search(r"<([^>]*)>", arg)
    return m.group(1) if m else arg.partition(":")[2].strip()


class Session:
    """One SMTP connection: buffered line reading, replies, stop-aware waits."""

    def __init__(self, peer: Peer, sock: socket.socket, number: int) -> None:
        self.peer = peer
        self.sock: socket.socket = sock
        self.number = number
        self._buf = bytearray()
        self.mail_from: str | None = None
        self.rcpts: list[str] = []
        self.tls = False
        self._idle_deadline = time.monotonic() + peer.idle_timeout

    # -- output
    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self, *lines: str) -> None:
        """One reply; several lines become a multi-line reply ("250-a", "250 b")."""
        if not lines:
            return
        code = lines[0][:3]
        out = []
        for i, line in enumerate(lines):
            text = line if i == 0 else f"{code} {line}"
            if i < len(lines) - 1:
                text = f"{code}-{text[4:]}"
            out.append(text)
            self.peer._log(self.number, "S", text)
        self.send_raw("".join(f"{t}\r\n" for t in out).encode())

    # -- input
    def _recv(self) -> bytes:
        """Some bytes, b"" at EOF; Hangup when the peer stops or the client idles too long."""
        while True:
            if self.peer.stopping:
                raise Hangup("peer stopping")
            if time.monotonic() > self._idle_deadline:
                raise Hangup("idle timeout")
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except ssl.SSLWantReadError:
                continue
            except (ConnectionError, ssl.SSLError, OSError):
                return b""
            self._idle_deadline = time.monotonic() + self.peer.idle_timeout
            return data

    def read_chunk(self) -> bytes | None:
        """One line including its line end, or a MAX_LINE piece of a longer one; None at EOF."""
        while True:
            nl = self._buf.find(b"\n", 0, MAX_LINE)
            if nl >= 0 or len(self._buf) >= MAX_LINE:
                cut = nl + 1 if nl >= 0 else MAX_LINE
                chunk = bytes(self._buf[:cut])
                del self._buf[:cut]
                return chunk
            data = self._recv()
            if not data:  # EOF: hand out what is left once, then None
                rest = bytes(self._buf)
                self._buf.clear()
                return rest or None
            self._buf += data

    def readline(self) -> str | None:
        """One command line without its line end; None when the client closed."""
        chunk = self.read_chunk()
        if chunk is None:
            return None
        while not chunk.endswith(b"\n"):  # an overlong command: keep its start, drop the rest
            more = self.read_chunk()
            if more is None:
                break
            if more.endswith(b"\n"):
                break
        line = chunk.rstrip(b"\r\n").decode("utf-8", "replace")
        self.peer._log(self.number, "C", line)
        return line

    def read_message(self) -> Received:
        """The DATA content up to the lone ".": kept head, full size, Message-ID."""
        head = bytearray()
        size = 0
        at_line_start = True
        while True:
            chunk = self.read_chunk()
            if chunk is None:
                raise Hangup("client closed during DATA")
            if at_line_start and chunk in (b".\r\n", b".\n"):
                break
            if at_line_start and chunk.startswith(b".."):
                chunk = chunk[1:]
            at_line_start = chunk.endswith(b"\n")
            size += len(chunk)
            if len(head) < KEEP_HEAD:
                head += chunk[: KEEP_HEAD - len(head)]
        m = _MESSAGE_ID.search(bytes(head).split(b"\r\n\r\n", 1)[0])
        msg = Received(
            session=self.number,
            mail_from=self.mail_from or "",
            rcpt_to=tuple(self.rcpts),
            message_id=m.group(1).decode("ascii", "replace") if m else None,
            size=size,
            head=bytes(head),
            at=time.time(),
        )
        self.peer._log(self.number, "C", f"<message: {size} bytes, Message-ID {msg.message_id}>")
        return msg

    # -- misbehaviour helpers
    def wait(self, seconds: float) -> None:
        """Sleep without touching the socket; ends early (Hangup) when the peer stops."""
        if self.peer._stop.wait(seconds):
            raise Hangup("peer stopping")

    def stall(self) -> None:
        """Stop reading: wait until the peer stops or stall_limit passes, then hang up."""
        self.peer._log(self.number, "*", "stalling (not reading)")
        self.peer._stop.wait(self.peer.stall_limit)
        raise Hangup("stall over")

    def drain_until_close(self) -> None:
        """Say nothing; read and discard until the client gives up and closes, then hang up."""
        self.peer._log(self.number, "*", "silent until the client closes")
        deadline = time.monotonic() + self.peer.stall_limit
        while time.monotonic() < deadline and not self.peer.stopping:
            try:
                ready, _, _ = select.select([self.sock], [], [], TICK)
            except (OSError, ValueError):
                break
            if not ready:
                continue
            try:
                if not self.sock.recv(65536):
                    self.peer._log(self.number, "*", "client closed")
                    break
            except (TimeoutError, ssl.SSLWantReadError):
                continue
            except (OSError, ssl.SSLError):
                break
        raise Hangup("drained")

    def starttls(self, context: ssl.SSLContext) -> None:
        """Switch this connection to TLS (server side); Hangup if the handshake fails."""
        self._buf.clear()  # RFC 3207: nothing the client pipelined before the handshake counts
        self.sock.settimeout(self.peer.idle_timeout)
        try:
            self.sock = context.wrap_socket(self.sock, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            self.peer._log(self.number, "*", f"TLS handshake failed: {exc}")
            raise Hangup("TLS handshake failed") from exc
        self.sock.settimeout(TICK)
        self.tls = True
        self.peer._log(self.number, "*", f"TLS established: {self.sock.version()}")

    def reset(self) -> None:
        self.mail_from = None
        self.rcpts = []


class Peer:
    """A well-behaved SMTP server; subclasses override one hook each to misbehave."""

    kind: ClassVar[str] = "healthy"
    starttls: ClassVar[bool] = False  # offer STARTTLS in the EHLO reply
    rcvbuf: ClassVar[int | None] = None  # SO_RCVBUF for the listening socket (inherited by sessions)

    def __init__(
        self,
        name: str | None = None,
        *,
        host: str = HOST,
        port: int = 0,
        hostname: str | None = None,
        log_limit: int = 2000,
        message_limit: int = 500,
        max_sessions: int = 32,
        idle_timeout: float = 60.0,
        stall_limit: float = 120.0,
    ) -> None:
        self.name = name or self.kind
        self.host = host
        self._want_port = port
        self.hostname = hostname or f"{self.name}.test"
        self.idle_timeout = idle_timeout
        self.stall_limit = stall_limit
        self.max_sessions = max_sessions
        self.log: collections.deque[LogEntry] = collections.deque(maxlen=log_limit)
        # every message read up to the final "." (a real server may have delivered it, whatever
        # it answered) and, apart, how often each Message-ID got a 2xx answer
        self.messages: collections.deque[Received] = collections.deque(maxlen=message_limit)
        self.accepted: collections.Counter[str | None] = collections.Counter()
        self.sessions = 0  # connections accepted so far
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._open: dict[int, Session] = {}
        self._workers: set[threading.Thread] = set()
        self._slots = threading.BoundedSemaphore(max_sessions)
        self._counter = itertools.count(1)
        self._port = 0

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.host}:{self._port}>"

    # -- lifecycle
    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError(f"{self!r} is not started")
        return self._port

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def running(self) -> bool:
        return self._listener is not None and not self._stop.is_set()

    def _bind(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        sock.bind((self.host, self._want_port))
        return sock

    def start(self) -> Peer:
        """Bind and serve in a daemon thread; starting a running peer is a no-op."""
        if self.running:
            return self
        self._stop.clear()
        sock = self._bind()
        sock.listen(64)
        sock.settimeout(TICK)
        self._listener = sock
        self._port = sock.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, name=f"peer-{self.name}", daemon=True)
        self._thread.start()
        self._log(0, "*", f"listening on {self.host}:{self._port}")
        return self

    def request_stop(self) -> None:
        """Tell every wait to end now, without waiting for the threads (stop() joins them)."""
        self._stop.set()

    def stop(self) -> None:
        """Close the listener and every session; join the threads (bounded)."""
        self._stop.set()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.close()
        with self._lock:
            sessions = list(self._open.values())
            workers = list(self._workers)
        for s in sessions:
            with contextlib.suppress(OSError):
                s.sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(5)
        for t in workers:
            t.join(5)
        self._listener = None
        self._thread = None

    def __enter__(self) -> Peer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            if not self._slots.acquire(blocking=False):
                conn.close()  # bounded: a flood of connections cannot grow threads without limit
                self._log(0, "*", "session refused: too many open sessions")
                continue
            number = next(self._counter)
            t = threading.Thread(
                target=self._serve, args=(conn, number), name=f"peer-{self.name}-{number}", daemon=True
            )
            with self._lock:
                self.sessions += 1
                self._workers.add(t)
            t.start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        conn.settimeout(TICK)
        s = Session(self, conn, number)
        with self._lock:
            self._open[number] = s
        self._log(number, "*", "connected")
        try:
            self.dialogue(s)
        except Hangup as why:
            self._log(number, "*", f"hang up: {why}")
        except (OSError, ssl.SSLError) as exc:
            self._log(number, "*", f"connection error: {exc}")
        finally:
            with contextlib.suppress(OSError):
                s.sock.close()
            with self._lock:
                self._open.pop(number, None)
                self._workers.discard(threading.current_thread())
            self._slots.release()
            self._log(number, "*", "closed")

    def _log(self, session: int, direction: str, text: str) -> None:
        self.log.append(LogEntry(time.time(), session, direction, text[:300]))

    # -- what tests read
    def lines(self, direction: str | None = None) -> list[str]:
        return [e.text for e in list(self.log) if direction is None or e.direction == direction]

    def message_ids(self) -> collections.Counter[str | None]:
        """How many times each Message-ID was read to the final "." (2+ = a duplicate; see accepted)."""
        return collections.Counter(m.message_id for m in list(self.messages))

    def received(self, message_id: str) -> list[Received]:
        return [m for m in list(self.messages) if m.message_id == message_id]

    def wait_for_message(self, message_id: str, timeout: float = 10.0, count: int = 1) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.received(message_id)
            if len(got) >= count:
                return got
            time.sleep(0.05)
        raise TimeoutError(f"{self!r}: {message_id} arrived {len(self.received(message_id))}x, wanted {count}")

    # -- the SMTP dialogue (template method) and its hooks
    def dialogue(self, s: Session) -> None:
        self.greet(s)
        while True:
            line = s.readline()
            if line is None:
                return
            verb, _, arg = line.partition(" ")
            verb = verb.upper()
            if verb in ("EHLO", "HELO"):
                self.on_helo(s, verb, arg)
            elif verb == "STARTTLS" and self.starttls and not s.tls:
                self.on_starttls(s)
            elif verb == "MAIL":
                s.reset()
                reply = self.on_mail(s, _angle(arg))
                if reply.startswith("2"):
                    s.mail_from = _angle(arg)
                s.reply(reply)
            elif verb == "RCPT":
                if s.mail_from is None:
                    s.reply("503 5.5.1 Error: need MAIL command")
                    continue
                addr = _angle(arg)
                reply = self.on_rcpt(s, addr)
                if reply.startswith("2"):
                    s.rcpts.append(addr)
                s.reply(reply)
            elif verb == "DATA":
                if not s.rcpts:
                    s.reply("554 5.5.1 Error: no valid recipients")
                    continue
                self.on_data(s)
                msg = s.read_message()
                self.messages.append(msg)
                reply = self.on_message(s, msg)
                if reply.startswith("2"):
                    with self._lock:
                        if len(self.accepted) >= (self.messages.maxlen or 0):
                            self.accepted.clear()  # bounded, like messages
                        self.accepted[msg.message_id] += 1
                s.reply(reply)
                s.reset()
            elif verb == "RSET":
                s.reset()
                s.reply("250 2.0.0 Ok")
            elif verb == "NOOP":
                s.reply("250 2.0.0 Ok")
            elif verb == "QUIT":
                s.reply("221 2.0.0 Bye")
                return
            else:
                s.reply("502 5.5.2 Error: command not recognized")

    def greet(self, s: Session) -> None:
        s.reply(f"220 {self.hostname} ESMTP pfdiag lab peer ({self.kind})")

    def extensions(self, s: Session) -> list[str]:
        ext = ["PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES"]
        if self.starttls and not s.tls:
            ext.append("STARTTLS")
        return ext

    def on_helo(self, s: Session, verb: str, arg: str) -> None:
        s.reset()
        if verb == "HELO":
            s.reply(f"250 {self.hostname}")
        else:
            s.reply(f"250 {self.hostname}", *self.extensions(s))

    def on_starttls(self, s: Session) -> None:
        s.reply("454 4.7.0 TLS not available")

    def on_mail(self, s: Session, sender: str) -> str:
        return "250 2.1.0 Ok"

    def on_rcpt(self, s: Session, rcpt: str) -> str:
        return "250 2.1.5 Ok"

    def on_data(self, s: Session) -> None:
        s.reply("354 End data with <CR><LF>.<CR><LF>")

    def on_message(self, s: Session, msg: Received) -> str:
        return f"250 2.0.0 Ok: queued as {self.name.upper().replace('-', '')}{len(self.messages)}"


class HealthyPeer(Peer):
    kind = "healthy"


class EndOfDataStallPeer(Peer):
    kind = "eod-stall"

    def on_message(self, s: Session, msg: Received) -> str:
        s.drain_until_close()  # the body arrived; the answer to "." never comes
        return ""


class RefusedPeer(Peer):
    """Holds a port bound but never calls listen(): every SYN gets an RST (ECONNREFUSED),
    and no other program can take the port while the peer exists."""

    kind = "refused"

    def start(self) -> Peer:
        if self._listener is None:
            self._listener = self._bind()
            self._port = self._listener.getsockname()[1]
            self._log(0, "*", f"bound {self.host}:{self._port}, not listening")
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._listener is not None:
            self._listener.close()
        self._listener = None

    @property
    def running(self) -> bool:
        return self._listener is not None


class NoBannerPeer(Peer):
    kind = "no-banner"

    def greet(self, s: Session) -> None:
        s.drain_until_close()


class NoEhloReplyPeer(Peer):
    kind = "no-ehlo"

    def on_helo(self, s: Session, verb: str, arg: str) -> None:
        s.drain_until_close()


class Banner421Peer(Peer):
    kind = "banner-421"

    def greet(self, s: Session) -> None:
        s.reply(f"421 4.3.2 {self.hostname} Service not available, closing transmission channel")
        raise Hangup("421 sent")


class GreylistPeer(Peer):
    kind = "greylist"

    def on_rcpt(self, s: Session, rcpt: str) -> str:
        domain = rcpt.rpartition("@")[2] or self.hostname
        return (
            f"451 4.7.1 <{rcpt}>: Recipient address rejected: Greylisted, "
            f"see http://postgrey.schweikert.ch/help/{domain}.html"
        )


class RateLimitPeer(Peer):
    """A receiver that rate-limits this sender: every MAIL FROM gets 450 4.7.1 "too many
    messages" (E22), as a provider answers a server that floods it."""

    kind = "rate-limit"

    def on_mail(self, s: Session, sender: str) -> str:
        return f"450 4.7.1 {self.hostname} too many messages from you, rate limited: try again later"


class MailboxFullPeer(Peer):
    """Recipients whose local part starts with ``full`` get 452 4.2.2; others are accepted."""

    kind = "mailbox-full"
    full_prefix = "full"

    def on_rcpt(self, s: Session, rcpt: str) -> str:
        if rcpt.lower().startswith(self.full_prefix):
            return f"452 4.2.2 <{rcpt}>: Mailbox full"
        return "250 2.1.5 Ok"


class QueueWriteErrorPeer(Peer):
    kind = "queue-write-error"

    def on_message(self, s: Session, msg: Received) -> str:
        return "451 4.3.0 Error: queue file write error"


class DropAtRcptPeer(Peer):
    kind = "drop-rcpt"

    def on_rcpt(self, s: Session, rcpt: str) -> str:
        raise Hangup("dropped at RCPT")


class BodyStallPeer(Peer):
    """Stops reading after 354. Postfix only notices when the message is bigger than what the
    socket buffers absorb (a few MB on loopback): send it an 8 MB message."""

    kind = "body-stall"
    rcvbuf = 4096

    def on_data(self, s: Session) -> None:
        s.reply("354 End data with <CR><LF>.<CR><LF>")
        s.stall()


class StartTlsGarbagePeer(Peer):
    kind = "starttls-garbage"
    starttls = True

    def on_starttls(self, s: Session) -> None:
        s.reply("220 2.0.0 Ready to start TLS")
        s.send_raw(b"this is not a TLS record, just garbage\r\n")
        s.drain_until_close()


class NoStartTlsPeer(Peer):
    """Healthy, but never offers STARTTLS: pair it with TLS policy ``encrypt``."""

    kind = "no-starttls"


def make_self_signed(directory: Path, common_name: str) -> tuple[Path, Path]:
    """A fresh self-signed certificate and key made with the openssl CLI; returns (cert, key)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
            "-subj", f"/CN={common_name}", "-addext", f"subjectAltName=DNS:{common_name}",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


class SelfSignedTlsPeer(Peer):
    """Real STARTTLS with a self-signed certificate generated when the peer starts
    (policy ``verify`` fails it; ``may``/``encrypt`` deliver)."""

    kind = "self-signed"
    starttls = True

    def start(self) -> Peer:
        if not self.running:
            self._certdir = tempfile.TemporaryDirectory(prefix="pfdiag-peer-tls-")
            self.cert, self.key = make_self_signed(Path(self._certdir.name), self.hostname)
            self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.context.load_cert_chain(self.cert, self.key)
        return super().start()

    def stop(self) -> None:
        super().stop()
        if hasattr(self, "_certdir"):
            self._certdir.cleanup()

    def on_starttls(self, s: Session) -> None:
        s.reply("220 2.0.0 Ready to start TLS")
        s.starttls(self.context)


class PixPeer(Peer):
    """A Cisco PIX-style masked banner ("220 *****"), which makes Postfix enable its PIX
    workarounds (HELO, not EHLO). Each message (by Message-ID) gets no answer to "." the first
    ``stall_times`` times it arrives, and is accepted after that: delivered on a retry, and
    the peer holds it twice."""

    kind = "pix"

    def __init__(self, name: str | None = None, *, stall_times: int = 1, **kw: object) -> None:
        super().__init__(name, **kw)  # type: ignore[arg-type]
        self.stall_times = stall_times
        self.stalled: collections.Counter[str | None] = collections.Counter()

    def greet(self, s: Session) -> None:
        s.reply("220 " + "*" * 60)

    def on_message(self, s: Session, msg: Received) -> str:
        with self._lock:
            stall = self.stalled[msg.message_id] < self.stall_times
            if stall:
                if len(self.stalled) >= self.messages.maxlen:  # type: ignore[operator]
                    self.stalled.clear()  # bounded memory; a forgotten message just stalls again
                self.stalled[msg.message_id] += 1
        if stall:
            s.drain_until_close()
        return super().on_message(s, msg)


class SlowDataPeer(Peer):
    """Answers "." after ``delay`` seconds: below smtp_data_done_timeout the mail is sent
    with a large d in delays=a/b/c/d; above it, the end-of-data timeout."""

    kind = "slow-data"

    def __init__(self, name: str | None = None, *, delay: float = 2.0, **kw: object) -> None:
        super().__init__(name, **kw)  # type: ignore[arg-type]
        self.delay = delay

    def on_message(self, s: Session, msg: Received) -> str:
        s.wait(self.delay)
        return super().on_message(s, msg)


KINDS: dict[str, type[Peer]] = {
    cls.kind: cls
    for cls in (
        HealthyPeer, EndOfDataStallPeer, RefusedPeer, NoBannerPeer, NoEhloReplyPeer, Banner421Peer,
        GreylistPeer, RateLimitPeer, MailboxFullPeer, QueueWriteErrorPeer, DropAtRcptPeer, BodyStallPeer,
        StartTlsGarbagePeer, NoStartTlsPeer, SelfSignedTlsPeer, PixPeer, SlowDataPeer,
    )
}  # fmt: skip


@contextlib.contextmanager
def running(*peers: Peer) -> Iterator[tuple[Peer, ...]]:
    """Start peers for a with-block; they stop when it ends, even on failure."""
    started: list[Peer] = []
    try:
        for p in peers:
            started.append(p.start())
        yield peers
    finally:
        for p in started:
            p.stop()


def main(argv: list[str] | None = None) -> int:
    """Serve one peer until SIGTERM/SIGINT; prints "PORT <n>" once listening (for a parent
    process that starts it inside a network namespace with `ip netns exec`)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kind", choices=sorted(KINDS))
    ap.add_argument("--host", default=HOST)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--name")
    ap.add_argument("--lifetime", type=float, default=3600.0, help="stop by itself after this many seconds")
    args = ap.parse_args(argv)
    peer = KINDS[args.kind](args.name, host=args.host, port=args.port)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    with peer:
        print(f"PORT {peer.port}", flush=True)
        done.wait(args.lifetime)
    return 0


if __name__ == "__main__":
    sys.exit(main())
