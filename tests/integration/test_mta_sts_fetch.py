"""The MTA-STS policy fetch (checks.dns.mtasts over checks.targets.http, httpcore) against real
HTTPS servers on loopback: the body cap, redirects not followed, the total deadline, and TLS over
a connection that is not a socket (as an SSH channel is), every connection made by target.connect."""

from __future__ import annotations

import http.server
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from checks import dns as d
from checks.targets import LocalTarget
from tests.lab.authdns import AuthDns
from tests.peers import make_self_signed, server_tls_context

POLICY = b"version: STSv1\r\nmode: enforce\r\nmx: mx.sts.test\r\nmax_age: 86400\r\n"


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hits: list[str]  # set per server
    behaviour = "ok"

    def do_GET(self) -> None:  # noqa: N802
        self.hits.append(self.path)
        if self.behaviour == "redirect":
            self.send_response(301)
            self.send_header("Location", "/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.behaviour == "endless":  # no length, no end: only the cap stops a reader
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            line = b"mx: " + b"x" * 1000 + b"\r\n"
            try:
                for _ in range(100_000):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
            except OSError:
                pass
        elif self.behaviour == "stall":  # headers, then nothing
            self.send_response(200)
            self.send_header("Content-Length", str(len(POLICY)))
            self.end_headers()
            self.wfile.flush()
            time.sleep(5)
        else:
            self.send_response(200)
            self.send_header("Content-Length", str(len(POLICY)))
            self.end_headers()
            self.wfile.write(POLICY)

    def log_message(self, *a: object) -> None:
        pass


@pytest.fixture
def https(tmp_path: Path) -> Iterator[Any]:
    """Start(behaviour) -> (server, hits, cafile, resolver) for mta-sts.sts.test on 127.0.0.1."""
    cert, key = make_self_signed(tmp_path, "mta-sts.sts.test")
    servers: list[http.server.ThreadingHTTPServer] = []
    dns_srv = AuthDns({("mta-sts.sts.test", "A"): ["127.0.0.1"]})

    def start(behaviour: str) -> tuple[http.server.ThreadingHTTPServer, list[str], str, Any]:
        hits: list[str] = []
        handler = type("H", (Handler,), {"hits": hits, "behaviour": behaviour})
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        srv.daemon_threads = True
        srv.socket = server_tls_context(cert, key).wrap_socket(srv.socket, server_side=True)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return srv, hits, str(cert), d.make_resolver(["127.0.0.1"], port=dns_srv.port)

    try:
        yield start
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()
        dns_srv.close()


class ChannelLike:
    """Only what a paramiko Channel offers (sendall, recv, settimeout, close): no fileno, no
    socket to wrap, so TLS must run over memory BIOs."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock

    def sendall(self, data: bytes) -> None:
        self._sock.sendall(data)

    def recv(self, size: int) -> bytes:
        return bytes(self._sock.recv(size))

    def settimeout(self, timeout: float | None) -> None:
        self._sock.settimeout(timeout)

    def close(self) -> None:
        self._sock.close()


class RecordingTarget(LocalTarget):
    def __init__(self) -> None:
        super().__init__()
        self.connects: list[tuple[str, int]] = []

    def connect(self, host: str, port: int, timeout: float, *, source: str | None = None) -> Any:
        self.connects.append((host, port))
        return ChannelLike(super().connect(host, port, timeout, source=source))


def test_policy_over_tls_on_a_channel_through_target_connect(https: Any) -> None:
    srv, hits, ca, r = https("ok")
    target = RecordingTarget()
    pol = d.mta_sts_policy(target, r, "sts.test", port=srv.server_address[1], cafile=ca)
    assert (pol.status, pol.mode, pol.mx, pol.max_age) == ("ok", "enforce", ("mx.sts.test",), 86400), pol
    assert target.connects == [("127.0.0.1", srv.server_address[1])], "the one connection is target.connect's"
    assert hits == ["/.well-known/mta-sts.txt"]
    # the system CA store does not know the test's certificate: not valid, as for a real sender
    untrusted = d.mta_sts_policy(target, r, "sts.test", port=srv.server_address[1])
    assert untrusted.status == "unreachable" and "certificate of mta-sts.sts.test not valid" in untrusted.detail


def test_redirect_is_not_followed(https: Any) -> None:
    srv, hits, ca, r = https("redirect")
    pol = d.mta_sts_policy(LocalTarget(), r, "sts.test", port=srv.server_address[1], cafile=ca)
    assert pol.status == "http-error" and pol.detail.startswith("HTTP/1.1 301"), pol
    assert "redirect" in pol.detail and "RFC 8461" in pol.detail
    assert hits == ["/.well-known/mta-sts.txt"], f"the redirect must not be followed: {hits}"
    assert pol.findings()[0].summary.startswith("MTA-STS policy of sts.test: http-error")


def test_body_is_capped(https: Any) -> None:
    """An endless body (about 100 MB if read): the fetch stops at MAX_POLICY and says the policy is invalid."""
    srv, _, ca, r = https("endless")
    t0 = time.monotonic()
    pol = d.mta_sts_policy(LocalTarget(), r, "sts.test", port=srv.server_address[1], cafile=ca, timeout=10)
    took = time.monotonic() - t0
    assert pol.status == "invalid" and "larger than 64 KiB" in pol.detail, pol
    assert d.MAX_POLICY == 64 * 1024
    assert took < 5, f"the cap, not the deadline, ends the read: {took:.2f} s"


def test_total_deadline(https: Any) -> None:
    srv, _, ca, r = https("stall")
    t0 = time.monotonic()
    pol = d.mta_sts_policy(LocalTarget(), r, "sts.test", port=srv.server_address[1], cafile=ca, timeout=1.0)
    took = time.monotonic() - t0
    assert pol.status == "unreachable" and "Timeout" in pol.detail, pol
    assert took < 2.0, f"one deadline for the whole fetch: {took:.2f} s"


def test_direct_get_reports_status_and_truncation(https: Any) -> None:
    """checks.targets.http.get itself: the status line as sent, a capped body marked truncated."""
    from checks.targets.http import get

    srv, _, ca, _r = https("ok")
    ctx = ssl.create_default_context(cafile=ca)
    url = f"https://mta-sts.sts.test:{srv.server_address[1]}/.well-known/mta-sts.txt"
    whole = get(LocalTarget(), url, timeout=5, max_body=1024, context=ctx, addresses={"mta-sts.sts.test": "127.0.0.1"})
    assert (whole.status, whole.status_line, whole.body, whole.truncated) == (200, "HTTP/1.1 200 OK", POLICY, False)
    part = get(LocalTarget(), url, timeout=5, max_body=10, context=ctx, addresses={"mta-sts.sts.test": "127.0.0.1"})
    assert part.body == POLICY[:10] and part.truncated


def test_policy_over_ssh_leaves_from_the_mail_host(https: Any, ssh: dict[str, str]) -> None:
    """Through a real SSHTarget (the lab's sshd on 127.0.0.1): the HTTPS connection is a
    direct-tcpip channel from the mail host, TLS runs over that paramiko channel, and the
    policy says where it was fetched from."""
    from checks.targets.ssh import SSHTarget

    srv, hits, ca, r = https("ok")
    with SSHTarget.open("mx1", ssh_config=ssh["config"], known_hosts=ssh["known_hosts"]) as t:
        pol = d.mta_sts_policy(t, r, "sts.test", port=srv.server_address[1], cafile=ca, timeout=10)
        assert (pol.status, pol.mode, pol.mx) == ("ok", "enforce", ("mx.sts.test",)), pol
        assert pol.where == t.where and pol.where != "local"
    assert hits == ["/.well-known/mta-sts.txt"]
