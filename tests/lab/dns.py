"""DNS for the lab: the real dnsmasq serving zones written here, on loopback only.

Two ways to use it:

* ``DnsServer``: dnsmasq on 127.0.0.1:<free port> in this network namespace, for DNS
  checks that take a resolver address and port (dnspython: ``Resolver(configure=False)``,
  ``nameservers=["127.0.0.1"]``, ``port=server.port``; or ``server.resolver()``).
* ``DnsNamespace``: a network namespace (``ip netns add pfdiag-lab-dns``, only ``lo`` in it)
  whose ``/etc/netns/<name>/resolv.conf`` says ``nameserver 127.0.0.1``, with dnsmasq on
  127.0.0.1:53 inside. Programs started with ``ip netns exec`` there (a Postfix: see
  ``DnsLab``) resolve through it with the ordinary libc resolver, and no packet can leave.

The zone (``zone_lines()``; everything under ``.test`` that is not listed is NXDOMAIN,
names outside ``.test`` are REFUSED: dnsmasq has no upstream server):

    ok.test                 MX 10 mx.ok.test, MX 20 mx2.ok.test
    mx.ok.test              A 127.0.0.2     (not 127.0.0.1: Postfix would see its own address)
    mx2.ok.test             A 127.0.0.3
    dual.ok.test            A 127.0.0.1, AAAA ::1
    ok.test                 TXT "v=spf1 ip4:127.0.0.0/8 -all"
    _dmarc.ok.test          TXT "v=DMARC1; p=reject; rua=mailto:dmarc@ok.test"
    _mta-sts.ok.test        TXT "v=STSv1; id=20260101T000000"
    _smtp._tls.ok.test      TXT "v=TLSRPTv1; rua=mailto:tlsrpt@ok.test"
    _25._tcp.mx.ok.test     TLSA 3 1 1 <sha256 of b"pfdiag lab">    (TLSA_DATA)
    2.0.0.127.in-addr.arpa  PTR mx.ok.test  (forward-confirmed)
    nullmx.test             MX 0 .          (RFC 7505 null MX)
    cname.test              MX 10 alias.cname.test; alias.cname.test CNAME mx.ok.test
    noaddr.test             MX 10 mx.noaddr.test   (which has no A/AAAA: NXDOMAIN)
    nodata.test             MX 10 mx.nodata.test   (which exists, TXT only: no address, NODATA)
    loop.test               MX 10 mx.loop.test; mx.loop.test A 127.0.0.1 (Postfix's own address)
    mxloop.test             MX 10 mx.mxloop.test; mx.mxloop.test A 127.0.0.26 (loopback, nothing listens)
    mxservfail.test         MX 10 mx.servfail.test (whose lookups SERVFAIL)
    servfail.test and below SERVFAIL for every type
    nxdomain.test           NXDOMAIN (not listed)
    fcrdns.test             A 127.0.0.25;  25.0.0.127.in-addr.arpa PTR fcrdns.test (forward-confirmed)
    26.0.0.127.in-addr.arpa PTR mismatch.test; mismatch.test A 127.0.0.27 (not confirmed)

SERVFAIL is real: dnsmasq forwards ``servfail.test`` to a tiny responder (``ServfailResponder``)
that answers every query with rcode 2, and dnsmasq passes the SERVFAIL on; Postfix logs
``Name service error for name=... type=...: Host not found, try again``. (Forwarding to a port
where nothing listens does not work: dnsmasq waits and the client times out instead.)

``DnsLab`` is the namespace plus a real Postfix instance started inside it (``PostfixLab`` with
``netns``), which routes the zone's domains by real MX lookups (transport ``smtp:``), and a
healthy SMTP peer on port 25 inside the namespace as the MX host's server.

Helpers run inside the namespace as ``python -m tests.lab.dns servfail|query`` and
``python -m tests.lab.peers`` from the repository root.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from tests.lab.postfix import LabUnavailable, PostfixLab

REPO = Path(__file__).resolve().parents[2]
DNSMASQ = "/usr/sbin/dnsmasq"
IP = shutil.which("ip") or "/usr/sbin/ip"
NETNS = "pfdiag-lab-dns"
SERVFAIL_PORT = 5300
TLSA_DATA = "030101" + hashlib.sha256(b"pfdiag lab").hexdigest()
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
QTYPES = {"A": 1, "NS": 2, "CNAME": 5, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28, "TLSA": 52}


def missing(netns: bool = False) -> str | None:
    """Why this machine cannot run the DNS lab, or None if it can."""
    if not os.access(DNSMASQ, os.X_OK):
        return f"{DNSMASQ} is missing (apt-get install dnsmasq-base)"
    if netns:
        if os.geteuid() != 0:
            return "the DNS namespace needs root (ip netns add)"
        if not os.access(IP, os.X_OK):
            return "ip is missing (apt-get install iproute2)"
    return None


def zone_lines(servfail_port: int = SERVFAIL_PORT) -> list[str]:
    """dnsmasq configuration lines of the lab zone (see the module docstring)."""
    return [
        "local=/test/",  # authoritative for .test: unknown names are NXDOMAIN, never forwarded
        "local=/127.in-addr.arpa/",
        f"server=/servfail.test/127.0.0.1#{servfail_port}",
        "mx-host=ok.test,mx.ok.test,10",
        "mx-host=ok.test,mx2.ok.test,20",
        "host-record=mx.ok.test,127.0.0.2",
        "host-record=mx2.ok.test,127.0.0.3",
        "host-record=dual.ok.test,127.0.0.1,::1",
        "ptr-record=2.0.0.127.in-addr.arpa,mx.ok.test",
        'txt-record=ok.test,"v=spf1 ip4:127.0.0.0/8 -all"',
        'txt-record=_dmarc.ok.test,"v=DMARC1; p=reject; rua=mailto:dmarc@ok.test"',
        'txt-record=_mta-sts.ok.test,"v=STSv1; id=20260101T000000"',
        'txt-record=_smtp._tls.ok.test,"v=TLSRPTv1; rua=mailto:tlsrpt@ok.test"',
        f"dns-rr=_25._tcp.mx.ok.test,52,{TLSA_DATA}",
        "dns-rr=nullmx.test,15,000000",  # MX preference 0, exchange "." (root: one zero byte)
        "mx-host=cname.test,alias.cname.test,10",
        "cname=alias.cname.test,mx.ok.test",
        "mx-host=noaddr.test,mx.noaddr.test,10",
        "mx-host=nodata.test,mx.nodata.test,10",
        'txt-record=mx.nodata.test,"no address here"',
        "mx-host=mxservfail.test,mx.servfail.test,10",
        "host-record=fcrdns.test,127.0.0.25",
        "ptr-record=25.0.0.127.in-addr.arpa,fcrdns.test",
        "host-record=mismatch.test,127.0.0.27",
        "ptr-record=26.0.0.127.in-addr.arpa,mismatch.test",
        "mx-host=loop.test,mx.loop.test,10",
        "host-record=mx.loop.test,127.0.0.1",
        "mx-host=mxloop.test,mx.mxloop.test,10",
        "host-record=mx.mxloop.test,127.0.0.26",  # the destination's MX on loopback, nothing listens
    ]


# -- a minimal stdlib DNS client/responder (readiness checks and the SERVFAIL upstream)


def _question_end(msg: bytes) -> int:
    """Offset just past the first question (name + type + class)."""
    i = 12
    while i < len(msg) and msg[i]:
        i += 1 + msg[i]
    return i + 5


def build_query(name: str, qtype: str, qid: int | None = None) -> bytes:
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
    header = struct.pack("!HHHHHH", qid if qid is not None else random.randrange(65536), 0x0100, 1, 0, 0, 0)
    return header + qname + struct.pack("!HH", QTYPES[qtype], 1)


def query(host: str, port: int, name: str, qtype: str = "A", timeout: float = 2.0) -> tuple[str, int]:
    """One UDP query: (rcode name, number of answer records)."""
    q = build_query(name, qtype)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(q, (host, port))
        while True:
            data, _ = s.recvfrom(4096)
            if data[:2] == q[:2]:
                flags, _, ancount = struct.unpack("!HHH", data[2:8])
                return RCODES.get(flags & 0xF, str(flags & 0xF)), ancount


class ServfailResponder:
    """An upstream 'authoritative server' that answers every UDP query with SERVFAIL."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.answered = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                break
            if len(data) < 12:
                continue
            qid, flags = struct.unpack("!HH", data[:4])
            # QR=1, opcode and RD copied, RA=1, rcode=2; the question echoed, nothing else
            out_flags = 0x8000 | (flags & 0x7900) | 0x0080 | 2
            end = _question_end(data)
            self.sock.sendto(struct.pack("!HHHHHH", qid, out_flags, 1, 0, 0, 0) + data[12:end], addr)
            self.answered += 1

    def start(self) -> ServfailResponder:
        self._thread = threading.Thread(target=self.serve, name="servfail-responder", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        self.sock.close()


# -- dnsmasq


def _kill(proc: subprocess.Popen[bytes] | None, timeout: float = 5.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


class Dnsmasq:
    """One dnsmasq process (foreground, killed by its pid) serving ``lines`` on host:port."""

    def __init__(self, lines: Sequence[str], *, port: int, host: str = "127.0.0.1", netns: str | None = None,
                 workdir: Path) -> None:  # fmt: skip
        self.lines = list(lines)
        self.port = port
        self.host = host
        self.netns = netns
        self.workdir = workdir
        self.conf = workdir / "dnsmasq.conf"
        self.log = workdir / "dnsmasq.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> Dnsmasq:
        if self.proc is not None and self.proc.poll() is None:
            return self
        self.workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o755)  # dnsmasq drops to user nobody
        self.conf.write_text(
            "\n".join(
                [
                    f"port={self.port}",
                    f"listen-address={self.host}",
                    "bind-interfaces",  # only the loopback address above, never a wildcard socket
                    "no-resolv",  # no upstream: nothing outside the zone is ever forwarded
                    "no-hosts",
                    "no-poll",
                    "log-queries",
                    f"log-facility={self.log}",
                    f"pid-file={self.workdir / 'dnsmasq.pid'}",
                    *self.lines,
                    "",
                ]
            )
        )
        subprocess.run([DNSMASQ, "--test", "-C", str(self.conf)], check=True, capture_output=True)
        argv = [DNSMASQ, "-k", "-C", str(self.conf)]
        if self.netns:
            argv = [IP, "netns", "exec", self.netns, *argv]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"dnsmasq exited {self.proc.returncode}: {err.strip()}")
            if self.log.exists() and "started, version" in self.log.read_text(errors="replace"):
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"dnsmasq did not start within {timeout:g} s")

    def stop(self) -> None:
        _kill(self.proc)
        self.proc = None

    def queries(self) -> list[str]:
        """The query lines of dnsmasq's log ("query[MX] ok.test from 127.0.0.1")."""
        if not self.log.exists():
            return []
        return [ln.split(": ", 1)[1] for ln in self.log.read_text(errors="replace").splitlines() if ": query[" in ln]


class DnsServer:
    """dnsmasq with the lab zone on 127.0.0.1:<free port>, in this namespace; no root needed
    beyond what dnsmasq itself wants (it drops to nobody)."""

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="pfdiag-dns-")
        self.workdir = Path(self._tmp.name)
        self.servfail = ServfailResponder()
        self.port = 0
        self.dnsmasq: Dnsmasq | None = None

    def start(self) -> DnsServer:
        if self.dnsmasq is not None:
            return self
        problem = missing()
        if problem:
            raise LabUnavailable(problem)
        self.servfail.start()
        for attempt in range(3):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.bind(("127.0.0.1", 0))
                self.port = int(probe.getsockname()[1])
            d = Dnsmasq(zone_lines(self.servfail.port), port=self.port, workdir=self.workdir)
            try:
                d.start()
            except RuntimeError:
                if attempt == 2:
                    raise
                continue  # the free port was taken between probing and binding
            self.dnsmasq = d
            break
        deadline = time.monotonic() + 5
        while True:  # "started" is logged before the socket answers on slow machines: ask it
            try:
                if query("127.0.0.1", self.port, "ok.test", "MX", timeout=0.5)[0] == "NOERROR":
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("dnsmasq does not answer")

    def stop(self) -> None:
        if self.dnsmasq is not None:
            self.dnsmasq.stop()
            self.dnsmasq = None
        self.servfail.stop()
        self._tmp.cleanup()

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def resolver(self, timeout: float = 2.0) -> Any:
        """A dnspython Resolver that asks only this server."""
        import dns.resolver

        r = dns.resolver.Resolver(configure=False)
        r.nameservers = ["127.0.0.1"]
        r.port = self.port
        r.timeout = r.lifetime = timeout
        return r

    def queries(self) -> list[str]:
        return self.dnsmasq.queries() if self.dnsmasq else []


class DnsNamespace:
    """A network namespace with only ``lo``, its resolv.conf pointing at dnsmasq on 127.0.0.1:53
    inside it. ``exec(argv)`` prefixes ``ip netns exec <name>``."""

    def __init__(self, name: str = NETNS) -> None:
        self.name = name
        self.etc = Path("/etc/netns") / name
        self.workdir = Path("/run/pfdiag-lab") / name
        self.dnsmasq: Dnsmasq | None = None
        self.servfail: subprocess.Popen[bytes] | None = None
        self.children: list[subprocess.Popen[bytes]] = []

    def exec(self, argv: Sequence[str]) -> list[str]:
        return [IP, "netns", "exec", self.name, *argv]

    def exists(self) -> bool:
        return Path("/run/netns", self.name).exists()

    def pids(self) -> list[int]:
        out = subprocess.run([IP, "netns", "pids", self.name], capture_output=True, text=True, check=False)
        return [int(p) for p in out.stdout.split()]

    def create(self) -> DnsNamespace:
        problem = missing(netns=True)
        if problem:
            raise LabUnavailable(problem)
        if self.exists():
            self.delete()  # left by a killed session: nothing but our own processes runs in it
        added = subprocess.run([IP, "netns", "add", self.name], capture_output=True, text=True, check=False)
        if added.returncode != 0:
            raise LabUnavailable(f"ip netns add {self.name} failed: {added.stderr.strip()}")
        subprocess.run([IP, "-n", self.name, "link", "set", "lo", "up"], check=True, capture_output=True)
        self.etc.mkdir(parents=True, exist_ok=True)
        # ip netns exec bind-mounts these over /etc/resolv.conf and /etc/hosts
        (self.etc / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:2 attempts:2\n")
        (self.etc / "hosts").write_text("127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n")
        self.servfail = subprocess.Popen(
            self.exec([sys.executable, "-m", "tests.lab.dns", "servfail", "--port", str(SERVFAIL_PORT)]),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True,
            cwd=REPO,
        )  # fmt: skip
        assert self.servfail.stdout is not None
        if not self.servfail.stdout.readline().startswith(b"READY"):
            raise RuntimeError("the SERVFAIL responder did not start in the namespace")
        self.dnsmasq = Dnsmasq(zone_lines(SERVFAIL_PORT), port=53, netns=self.name, workdir=self.workdir).start()
        return self

    def spawn(self, argv: Sequence[str], ready: bytes | None = None) -> subprocess.Popen[bytes]:
        """Start a helper inside the namespace (stopped by delete()); with ready, wait for a
        stdout line starting with it."""
        proc = subprocess.Popen(self.exec(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, start_new_session=True, cwd=REPO)  # fmt: skip
        self.children.append(proc)
        if ready is not None:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line.startswith(ready):
                raise RuntimeError(f"{argv[:3]} did not start in netns {self.name}: {line!r}")
        return proc

    def query(self, name: str, qtype: str = "A") -> tuple[str, int]:
        """Ask the namespace's dnsmasq, from inside the namespace."""
        out = subprocess.run(
            self.exec([sys.executable, "-m", "tests.lab.dns", "query", name, qtype]),
            capture_output=True, text=True, check=True, timeout=20, cwd=REPO,
        )  # fmt: skip
        rcode, count = out.stdout.split()
        return rcode, int(count)

    def delete(self) -> None:
        """Kill what runs inside (by pid), delete the namespace and its /etc/netns files."""
        for proc in self.children:
            _kill(proc)
        self.children = []
        if self.dnsmasq is not None:
            self.dnsmasq.stop()
            self.dnsmasq = None
        _kill(self.servfail)
        self.servfail = None
        if self.exists():
            for sig in (signal.SIGTERM, signal.SIGKILL):
                pids = self.pids()
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, sig)
                deadline = time.monotonic() + 5
                while pids and self.pids() and time.monotonic() < deadline:
                    time.sleep(0.05)
            subprocess.run([IP, "netns", "del", self.name], capture_output=True, check=False)
        shutil.rmtree(self.etc, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.etc.parent.rmdir()  # /etc/netns, if we were its only user
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> DnsNamespace:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.delete()


class DnsLab:
    """A real Postfix inside the DNS namespace: mail to the zone's domains goes where real MX
    and address lookups (answered by the namespace's dnsmasq) send it."""

    DOMAINS = ("ok.test", "cname.test", "loop.test", "nullmx.test", "noaddr.test", "nodata.test",
               "mxservfail.test", "servfail.test", "nxdomain.test")  # fmt: skip
    MX_ADDRESS = "127.0.0.2"  # mx.ok.test: where the healthy peer listens inside the namespace

    def __init__(self, ns_name: str = NETNS) -> None:
        self.ns = DnsNamespace(ns_name)
        self.postfix = PostfixLab(
            "pfdiag-lab-dns", netns=ns_name, hostname="dnslab.pfdiag.test", log_name="postfix-dns.log"
        )
        for domain in self.DOMAINS:
            self.postfix.route(domain, nexthop="smtp:")  # empty next hop: MX lookup of the domain
        self.mx_peer: subprocess.Popen[bytes] | None = None

    def start(self) -> DnsLab:
        if self.postfix.running() and self.ns.exists() and self.mx_peer is not None:
            return self
        self.postfix.acquire()  # before touching the namespace another session might be using
        try:
            self.ns.create()
            self.mx_peer = self.ns.spawn(
                [sys.executable, "-m", "tests.lab.peers", "healthy", "--host", self.MX_ADDRESS, "--port", "25",
                 "--name", "mx.ok"],
                ready=b"PORT",
            )  # fmt: skip
            self.postfix.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        try:
            self.postfix.stop(release=False)
        finally:
            self.ns.delete()
            self.mx_peer = None
            self.postfix.release()

    def __enter__(self) -> DnsLab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="lab DNS helpers (run inside a namespace)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sf = sub.add_parser("servfail", help="answer every query with SERVFAIL until SIGTERM")
    sf.add_argument("--port", type=int, default=SERVFAIL_PORT)
    sf.add_argument("--lifetime", type=float, default=3600.0, help="stop by itself after this many seconds")
    q = sub.add_parser("query", help="ask 127.0.0.1:53 once; print rcode and answer count")
    q.add_argument("name")
    q.add_argument("qtype", choices=sorted(QTYPES))
    args = ap.parse_args(argv)
    if args.cmd == "query":
        rcode, count = query("127.0.0.1", 53, args.name, args.qtype)
        print(rcode, count)
        return 0
    responder = ServfailResponder(port=args.port).start()
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    print(f"READY {responder.port}", flush=True)
    done.wait(args.lifetime)
    responder.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
