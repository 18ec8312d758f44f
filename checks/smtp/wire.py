"""SMTP on the wire: replies (parsing, bounds against a hostile peer) and line I/O with one
deadline per read, over plain Connections and TLS (ssl.MemoryBIO, so TLS works over any
Connection a Target returns: a socket, or a paramiko direct-tcpip channel)."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from checks.targets.base import Connection

if TYPE_CHECKING:  # ssl is imported where TLS starts: a probe of a plaintext peer never loads it (start-up)
    import ssl

# Hostile-peer bounds. Postfix itself cuts lines at line_length_limit (2048) and skips the
# rest of an overlong line; we keep twice that and also cap lines and bytes per reply.
MAX_LINE_KEEP = 4096
MAX_REPLY_LINES = 200
MAX_REPLY_BYTES = 4 << 20
MAX_HANDSHAKE_BYTES = 256 << 10  # a certificate chain is tens of KiB
_RECV_CHUNK = 1 << 16
_BODY_CHUNK = 1 << 14


# --- replies ---------------------------------------------------------------------------

_CODE = re.compile(r"(\d{3})([ -]|$)")
_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


@dataclass(frozen=True)
class Reply:
    """One SMTP reply. `lines` are as received (decoded, controls as '?', cut at MAX_LINE_KEEP)."""

    code: int  # of the last line, as Postfix takes it; 0 when that line has no 3-digit code
    enhanced: str | None  # of the last line, only when its class matches the code (Postfix's rule)
    lines: tuple[str, ...]
    truncated: bool = False  # some line was longer than MAX_LINE_KEEP
    malformed: bool = False  # some line had no "NNN-" / "NNN " prefix

    @property
    def text(self) -> str:
        """The reply as Postfix logs it: lines joined by spaces, codes kept."""
        return " ".join(self.lines)

    @property
    def full(self) -> str:
        """Lines joined by newlines: what Postfix's PIX test looks at."""
        return "\n".join(self.lines)


def parse_reply(lines: Sequence[str]) -> Reply:
    """Code and enhanced status code of complete reply lines (pure; used by the reader)."""
    malformed = any(_CODE.match(line) is None for line in lines)
    last = lines[-1] if lines else ""
    m = _CODE.match(last)
    code = int(m[1]) if m else 0
    enhanced = None
    if m:
        e = _ENHANCED.match(last[4:].lstrip())
        if e and int(e[1]) == code // 100:
            enhanced = f"{e[1]}.{int(e[2])}.{int(e[3])}"
    return Reply(code, enhanced, tuple(lines), malformed=malformed)


def is_masked_banner(greeting: str) -> bool:
    """Postfix's PIX test: the greeting consists only of "2", "0", space, "*", tab and
    newline (strspn(resp, "20 *\\t\\n")), what a Cisco PIX "fixup protocol smtp" leaves."""
    return all(c in "20 *\t\n" for c in greeting)


def _decode(raw: bytes) -> str:
    return _CONTROL.sub("?", raw.decode("utf-8", "replace"))


# --- I/O with deadlines ----------------------------------------------------------------


class _Timeout(Exception):
    pass


class _Lost(Exception):
    pass


class _Hostile(Exception):
    """The peer broke a bound (reply too long, too many lines)."""


class _TlsFailed(Exception):
    def __init__(self, why: str, verify: bool = False) -> None:
        super().__init__(why)
        self.verify = verify


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise _Timeout
    return left


def _os_text(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


class _Plain:
    """The raw Connection, with every call bounded by a deadline."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def recv(self, deadline: float) -> bytes:
        try:
            self.conn.settimeout(_left(deadline))
            data = self.conn.recv(_RECV_CHUNK)
        except TimeoutError:
            raise _Timeout from None
        except OSError as exc:
            raise _Lost(_os_text(exc)) from None
        if not data:
            raise _Lost("the server closed the connection")
        return data

    def send(self, data: bytes, deadline: float) -> None:
        try:
            self.conn.settimeout(_left(deadline))
            self.conn.sendall(data)  # the timeout bounds the whole sendall (socket and channel)
        except TimeoutError:
            raise _Timeout from None
        except OSError as exc:
            raise _Lost(_os_text(exc)) from None


class _Tls:
    """TLS over any Connection: an SSLObject between two memory BIOs."""

    def __init__(self, raw: _Plain, obj: ssl.SSLObject, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO) -> None:
        self.raw, self.obj, self.incoming, self.outgoing = raw, obj, incoming, outgoing

    def _flush(self, deadline: float) -> None:
        pending = self.outgoing.read()
        if pending:
            self.raw.send(pending, deadline)

    def recv(self, deadline: float) -> bytes:
        import ssl

        while True:
            try:
                data = self.obj.read(_RECV_CHUNK)
            except ssl.SSLWantReadError:
                self._flush(deadline)
                self.incoming.write(self.raw.recv(deadline))
                continue
            except ssl.SSLZeroReturnError:
                raise _Lost("the server closed the TLS session") from None
            except ssl.SSLError as exc:
                raise _Lost(f"TLS error: {exc.reason or exc}") from None
            self._flush(deadline)
            if not data:
                raise _Lost("the server closed the TLS session")
            return data

    def send(self, data: bytes, deadline: float) -> None:
        import ssl

        view = memoryview(data)
        try:
            while view:
                view = view[self.obj.write(view) :]
                self._flush(deadline)
        except ssl.SSLError as exc:
            raise _Lost(f"TLS error: {exc.reason or exc}") from None


_Stream = _Plain | _Tls


class _Reader:
    """Replies off a stream; memory stays bounded by one chunk plus one kept line."""

    def __init__(self, stream: _Stream) -> None:
        self.stream = stream
        self.buf = bytearray()
        self.count = 0  # bytes consumed for the reply being read
        self.truncated = False

    def take_buffer(self) -> bytes:
        """Bytes that came after the last reply (fed to TLS when switching to it)."""
        data, self.buf = bytes(self.buf), bytearray()
        return data

    def _line(self, deadline: float) -> bytes:
        kept = bytearray()
        while True:
            nl = self.buf.find(b"\n")
            end = nl if nl >= 0 else len(self.buf)
            room = MAX_LINE_KEEP - len(kept)
            if end > room:
                self.truncated = True
            kept += self.buf[: min(end, max(room, 0))]
            consumed = end + 1 if nl >= 0 else end
            del self.buf[:consumed]
            self.count += consumed
            if nl >= 0:
                return bytes(kept[:-1] if kept.endswith(b"\r") else kept)
            if self.count > MAX_REPLY_BYTES:
                raise _Hostile(f"the reply grew beyond {MAX_REPLY_BYTES} bytes")
            self.buf += self.stream.recv(deadline)

    def read_reply(self, deadline: float) -> Reply:
        self.count, self.truncated = 0, False
        lines: list[str] = []
        while True:
            line = _decode(self._line(deadline))
            lines.append(line)
            m = _CODE.match(line)
            if m and m[2] != "-":
                break
            # "NNN-" continues; a line without a code also continues (Postfix flags it and reads on)
            if len(lines) >= MAX_REPLY_LINES:
                raise _Hostile(f"the reply ran past {MAX_REPLY_LINES} lines")
        return replace(parse_reply(lines), truncated=self.truncated)


@dataclass(frozen=True)
class TlsInfo:
    """The TLS session a probe negotiated: protocol, cipher, the certificates the server sent."""
    protocol: str | None
    cipher: str | None
    bits: int | None
    peer_certificate: bytes | None  # DER, for a later certificate check
    server_hostname: str | None  # SNI sent, if any
    peer_chain: tuple[bytes, ...] = ()  # DER, as the server sent it (leaf first): DANE-TA matches its issuers



def default_tls_context() -> ssl.SSLContext:
    """Like Postfix at levels may/encrypt: encrypt, do not verify; the peer certificate
    is recorded for a separate TLS check."""
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _tls_handshake(raw: _Plain, context: ssl.SSLContext, sni: str | None, deadline: float,
                   leftover: bytes) -> tuple[_Tls, TlsInfo]:
    import ssl

    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = context.wrap_bio(incoming, outgoing, server_side=False, server_hostname=sni)
    first = bytearray(leftover[:64])  # what the peer sent first: plaintext instead of TLS says a lot
    received = len(leftover)
    if leftover:
        incoming.write(leftover)
    while True:
        try:
            obj.do_handshake()
            break
        except ssl.SSLWantReadError:
            pending = outgoing.read()
            if pending:
                raw.send(pending, deadline)
            data = raw.recv(deadline)
            received += len(data)
            first += data[: 64 - len(first)]
            if received > MAX_HANDSHAKE_BYTES:
                raise _TlsFailed(f"the server sent {received} bytes without completing a handshake") from None
            incoming.write(data)
        except ssl.SSLCertVerificationError as exc:
            raise _TlsFailed(f"certificate verification failed: {exc.verify_message}", verify=True) from None
        except ssl.SSLError as exc:
            raise _TlsFailed(f"{exc.reason or exc}{_plaintext_hint(bytes(first))}") from None
    pending = outgoing.read()  # the client's Finished
    if pending:
        raw.send(pending, deadline)
    cipher = obj.cipher()
    info = TlsInfo(
        protocol=obj.version(),
        cipher=cipher[0] if cipher else None,
        bits=cipher[2] if cipher else None,
        peer_certificate=obj.getpeercert(binary_form=True),
        server_hostname=sni,
        peer_chain=peer_chain(obj),
    )
    return _Tls(raw, obj, incoming, outgoing), info


def peer_chain(obj: ssl.SSLObject | ssl.SSLSocket) -> tuple[bytes, ...]:
    """The certificates the server sent, leaf first, as DER; () when this Python cannot tell.
    3.13 has a public get_unverified_chain() (DER bytes); 3.10-3.12 only the private
    _sslobj.get_unverified_chain() (_ssl.Certificate objects)."""
    import ssl

    getter = getattr(obj, "get_unverified_chain", None)
    if getter is None:
        getter = getattr(getattr(obj, "_sslobj", None), "get_unverified_chain", None)
    if getter is None:
        return ()
    try:
        chain = getter() or []
        return tuple(c if isinstance(c, bytes) else c.public_bytes(ssl._ssl.ENCODING_DER) for c in chain)  # type: ignore[attr-defined]
    except (ssl.SSLError, ValueError, TypeError, AttributeError):
        return ()


def _plaintext_hint(first: bytes) -> str:
    if not first:
        return ""
    shown = _decode(first[:40])
    if first[:3].isdigit():
        return f"; the server sent a plaintext SMTP reply instead of TLS ({shown!r})"
    if sum(32 <= b < 127 or b in (9, 10, 13) for b in first) >= len(first) * 0.8:
        return f"; the server sent plaintext instead of TLS ({shown!r})"
    return ""


