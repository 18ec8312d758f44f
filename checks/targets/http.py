"""HTTPS GET from a target's vantage point: httpcore (httpx's engine) over target.connect().

httpcore takes a network backend; TargetBackend is one whose TCP connections are
``target.connect(host, port, timeout)`` - locally a socket, over SSH a direct-tcpip channel
that leaves from the mail host. TLS runs over that connection through an ssl.SSLObject between
two memory BIOs (as checks/smtp/wire.py does), so it works over a channel as over a socket.

``get()`` is the one request pfdiag makes (the MTA-STS policy): one GET, a total deadline
(every connect, read and write is bounded by what is left of it), a cap on the body, no
redirects followed (httpcore never follows them), the certificate verified by the given
context (the system's CA store by default).
"""

from __future__ import annotations

import math
import ssl
import time
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import httpcore

from checks.targets.base import Connection, Target

_CHUNK = 65536


def _left(deadline: float, timeout: float | None, exc: type[Exception]) -> float:
    """What a call may wait: its own timeout, never past the deadline; `exc` when none is left."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise exc("the deadline has passed")
    return left if timeout is None else min(timeout, left)


class ConnectionStream(httpcore.NetworkStream):
    """A target's Connection (socket or SSH channel) as an httpcore stream."""

    def __init__(self, conn: Connection, deadline: float) -> None:
        self.conn, self.deadline = conn, deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            self.conn.settimeout(_left(self.deadline, timeout, httpcore.ReadTimeout))
            return self.conn.recv(min(max_bytes, _CHUNK))
        except TimeoutError:
            raise httpcore.ReadTimeout("no answer in time") from None
        except OSError as exc:
            raise httpcore.ReadError(exc.strerror or str(exc) or type(exc).__name__) from None

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        try:
            self.conn.settimeout(_left(self.deadline, timeout, httpcore.WriteTimeout))
            self.conn.sendall(buffer)
        except TimeoutError:
            raise httpcore.WriteTimeout("could not send in time") from None
        except OSError as exc:
            raise httpcore.WriteError(exc.strerror or str(exc) or type(exc).__name__) from None

    def close(self) -> None:
        self.conn.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:  # fmt: skip
        return TlsStream(self, ssl_context, server_hostname, timeout)


class TlsStream(httpcore.NetworkStream):
    """TLS over a ConnectionStream: an SSLObject between two memory BIOs (works over any Connection)."""

    def __init__(self, raw: ConnectionStream, context: ssl.SSLContext, server_hostname: str | None,
                 timeout: float | None) -> None:  # fmt: skip
        self.raw = raw
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = context.wrap_bio(self.incoming, self.outgoing, server_side=False, server_hostname=server_hostname)
        try:
            self._retry(self.obj.do_handshake, timeout)
        except BaseException:
            raw.close()
            raise

    def _flush(self, timeout: float | None) -> None:
        pending = self.outgoing.read()
        if pending:
            self.raw.write(pending, timeout)

    def _retry(self, op: Any, timeout: float | None) -> Any:
        while True:
            try:
                result = op()
            except ssl.SSLWantReadError:
                self._flush(timeout)
                data = self.raw.read(_CHUNK, timeout)
                if data:
                    self.incoming.write(data)
                else:
                    self.incoming.write_eof()
                continue
            self._flush(timeout)
            return result

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            return bytes(self._retry(lambda: self.obj.read(min(max_bytes, _CHUNK)), timeout))
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):  # closed (with or without close_notify): the end
            return b""

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        view = memoryview(buffer)
        while view:
            view = view[self._retry(lambda: self.obj.write(view), timeout) :]

    def close(self) -> None:
        self.raw.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:  # fmt: skip
        raise NotImplementedError("TLS in TLS (an HTTPS proxy) is not used")

    def get_extra_info(self, info: str) -> Any:
        return self.obj if info == "ssl_object" else None


class TargetBackend(httpcore.NetworkBackend):
    """httpcore's TCP connections made by ``target.connect``, within ``deadline`` (time.monotonic()).
    ``addresses`` maps a URL's host name to the address to connect to (names resolved by the
    caller, through the target's DNS); the name stays the TLS server name."""

    def __init__(self, target: Target, deadline: float = math.inf, addresses: Mapping[str, str] | None = None) -> None:
        self.target, self.deadline, self.addresses = target, deadline, dict(addresses or {})

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:  # fmt: skip
        conn = self.target.connect(self.addresses.get(host, host), port, _left(self.deadline, timeout, httpcore.ConnectTimeout))
        return ConnectionStream(conn, self.deadline)

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:  # fmt: skip
        raise httpcore.UnsupportedProtocol("no UNIX sockets through a target")


@dataclass(frozen=True)
class HttpReply:
    status: int
    reason: str
    http_version: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    truncated: bool  # the body went past max_body: `body` is its first max_body bytes

    @property
    def status_line(self) -> str:
        return f"{self.http_version} {self.status} {self.reason}".rstrip()


# What get() may raise besides a target's PfdiagError and ssl.SSLError (a certificate not valid).
HTTP_ERRORS: tuple[type[Exception], ...] = (httpcore.TimeoutException, httpcore.NetworkError,
                                            httpcore.ProtocolError, httpcore.UnsupportedProtocol)  # fmt: skip


def get(target: Target, url: str, *, timeout: float, max_body: int, context: ssl.SSLContext | None = None,
        addresses: Mapping[str, str] | None = None) -> HttpReply:  # fmt: skip
    """One GET of `url` through `target` within `timeout` seconds in all; a 3xx is returned as it
    is (never followed). The body is read up to max_body bytes (then `truncated`). Raises a
    target's PfdiagError, ssl.SSLError, or one of HTTP_ERRORS."""
    deadline = time.monotonic() + timeout
    ctx = context or ssl.create_default_context()
    backend = TargetBackend(target, deadline, addresses)
    limits = {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}
    with httpcore.ConnectionPool(ssl_context=ctx, network_backend=backend, max_connections=1, retries=0,
                                 http1=True, http2=False) as pool:  # fmt: skip
        with pool.stream("GET", url, headers=[(b"Accept", b"*/*"), (b"Connection", b"close")],
                         extensions={"timeout": limits}) as response:  # fmt: skip
            body = bytearray()
            truncated = False
            for chunk in response.iter_stream():
                body += chunk
                if len(body) > max_body:
                    del body[max_body:]
                    truncated = True
                    break
            ext = response.extensions
            version = ext.get("http_version", b"HTTP/1.1").decode("ascii", "replace")
            reason = ext.get("reason_phrase", b"").decode("latin-1", "replace")
            headers = tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers)
            return HttpReply(response.status, reason, version, headers, bytes(body), truncated)
