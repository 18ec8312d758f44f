"""A small real DNS server on 127.0.0.1 (UDP and TCP, one port) that answers from a table, or
misbehaves on purpose: the cases dnsmasq cannot be made to do.

    records  {("name.", "A"): ["127.0.0.2"], ...}: authoritative answers, NXDOMAIN otherwise
    mode     "normal" | "silent" (reads queries, never answers) | "garbage" (answers with junk)
             | "truncated" (UDP answers are empty with TC set; the full answer comes over TCP)
             | "wrong-id" (answers with another query id)
             | "truncated-no-tcp" (UDP answers have TC set; TCP connections are closed unanswered)
"""

from __future__ import annotations

import os
import socket
import struct
import threading
from typing import Mapping, Sequence

import dns.flags
import dns.message
import dns.rcode
import dns.rrset


class AuthDns:
    def __init__(self, records: Mapping[tuple[str, str], Sequence[str]] | None = None, mode: str = "normal",
                 ad: bool = False) -> None:  # fmt: skip
        self.ad = ad  # claim DNSSEC validation (the AD flag), as a validating resolver would
        self.records = {(n.lower().rstrip(".") + ".", t.upper()): list(v) for (n, t), v in (records or {}).items()}
        self.mode = mode
        for _attempt in range(20):  # one port for UDP and TCP: the TCP side may be taken, try another
            self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.udp.bind(("127.0.0.1", 0))
            self.port = self.udp.getsockname()[1]
            self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                self.tcp.bind(("127.0.0.1", self.port))
                break
            except OSError:
                self.udp.close()
                self.tcp.close()
        else:
            raise OSError("no free port for both UDP and TCP on 127.0.0.1")
        self.tcp.listen(16)
        self._stop = threading.Event()
        self.queries = 0
        for fn in (self._serve_udp, self._serve_tcp):
            threading.Thread(target=fn, daemon=True).start()

    def answer(self, wire: bytes, via: str) -> bytes | None:
        self.queries += 1
        if self.mode == "silent":
            return None
        if self.mode == "garbage":
            return os.urandom(40)
        q = dns.message.from_wire(wire)
        r = dns.message.make_response(q)
        r.flags |= dns.flags.AA | (dns.flags.AD if self.ad else 0)
        if self.mode == "wrong-id":
            r.id = (q.id + 1) % 65536
        question = q.question[0]
        key = (question.name.to_text().lower(), dns.rdatatype.to_text(question.rdtype))
        if self.mode in ("truncated", "truncated-no-tcp") and via == "udp":
            r.flags |= dns.flags.TC
            return r.to_wire()
        values = self.records.get(key)
        if values:
            r.answer.append(dns.rrset.from_text_list(question.name, 60, "IN", key[1], values))
        elif not any(n == key[0] for n, _ in self.records):
            r.set_rcode(dns.rcode.NXDOMAIN)
        return r.to_wire()

    def _serve_udp(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.udp.recvfrom(65535)
            except OSError:
                return
            try:
                out = self.answer(data, "udp")
            except Exception:  # a query we cannot parse: no answer, as a real server
                out = None
            if out is not None:
                self.udp.sendto(out, peer)

    def _serve_tcp(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return
            threading.Thread(target=self._tcp_conn, args=(conn,), daemon=True).start()

    def _tcp_conn(self, conn: socket.socket) -> None:
        with conn:
            if self.mode == "truncated-no-tcp":
                return  # closed at once: the full answer is never available
            try:
                conn.settimeout(10)
                head = conn.recv(2)
                if len(head) < 2:
                    return
                need = struct.unpack("!H", head)[0]
                data = b""
                while len(data) < need:
                    chunk = conn.recv(need - len(data))
                    if not chunk:
                        return
                    data += chunk
                out = self.answer(data, "tcp")
                if out is None:
                    self._stop.wait(15)  # hold the connection open, silent
                    return
                conn.sendall(struct.pack("!H", len(out)) + out)
            except OSError:
                return

    def close(self) -> None:
        self._stop.set()
        for s in (self.udp, self.tcp):
            try:
                s.close()
            except OSError:
                pass
