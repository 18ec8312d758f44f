#!/usr/bin/env python3
"""Write a realistic, deterministic Postfix log for benchmarking `pfdiag logs`.

    python benchmarks/logs_vs_pflogsumm/generate.py OUT.log [--lines 1000000] [--seed 1]

The log is produced by a small discrete-event simulation of one mail server
(mx1.example.org, 203.0.113.25) and streamed to the file in time order; nothing
but the live queue is kept in memory. Traditional syslog format
(`Nov  2 11:58:01 mx1 postfix/smtp[12345]: 4AB12C3D4E: ...`), timestamps never go
back, short hex queue ids unique among live messages. At the default rate 1M lines
span about three days; longer logs span proportionally more days (a bigger log is
a longer retention, not a busier server), so the queue stays the same size.

What is in it (reason texts from Postfix's source and real logs, see
/work/shared/reference/postfix-deferrals.md and /work/shared/corpus/):
  - inbound mail: postscreen, smtpd connect/TLS/client/disconnect, cleanup
    message-id, opendkim, qmgr from= (queue active), dovecot lmtp + postfix/lmtp,
    removed; outbound mail via submission with SASL, DKIM signing, postfix/smtp
    deliveries with TLS lines, conn_use, realistic delays=a/b/c/d and replies;
    local cron mail through pickup and postfix/local (with orig_to);
    a daily newsletter burst via localhost.
  - deferrals and retries on Postfix's backoff schedule (queue scans every 300 s,
    backoff clamped to 300..4000 s, qmgr logs from=... (queue active) on each
    retry): connect timed out / refused (with the per-MX `connect to` lines),
    greylisting (postgrey 450 4.2.0, 450 4.7.1, multi-line 451, Exim 451),
    Gmail 421-4.7.28 and 450-4.2.1, over quota 452-4.2.2, Microsoft 451 4.7.650
    and 451 4.7.500, Yahoo `refused to talk to me: 421 4.7.0 [TS01]`, 163.com
    `451 DT:SPM`, end-of-data timeouts (d ~ 600) and lost connections, lost
    connection while sending RCPT TO, greeting timeouts, DNS `Host not found,
    try again`, `Cannot start TLS: handshake failure` (with SSL_connect and TLS
    library lines; the plaintext retry succeeds), `452 4.3.1 Insufficient system
    storage`, local LMTP down, `mail transport unavailable` (postfix/error), and
    `delivery temporarily suspended: ...` from postfix/qmgr and postfix/error
    while a destination is throttled.
  - ends of life: later delivered, bounced (5xx, NXDOMAIN), expired after
    maximal_queue_lifetime (`from=<s>, status=expired, returned to sender`),
    bounce notifications (postfix/bounce + the from=<> message), removed; a
    backlog of old deferred mail that was queued before the log starts.
  - noise: postscreen (PASS, PREGREET, DNSBL, HANGUP, rejects), smtpd NOQUEUE
    rejects, SASL brute force, tlsproxy, anvil statistics, warnings, dovecot
    imap/pop3 logins.
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import math
import os
import random
import sys
from datetime import datetime, timedelta

HOST = "mx1"
MYHOST = "mx1.example.org"
MYIP = "203.0.113.25"
LOCAL_DOMAINS = ("example.org", "example.net", "lists.example.org")
LINES_PER_SECOND = 1_000_000 / (3 * 86400)  # 1M lines ~ 3 days
DEFAULT_START = datetime(2026, 11, 2, 0, 0, 7)

MIN_BACKOFF = 300.0
MAX_BACKOFF = 4000.0
QUEUE_RUN_DELAY = 300.0
LIFETIME = 5 * 86400.0

FIRST = ("anna", "ben", "carla", "david", "eva", "felix", "greta", "hans", "ines", "jonas", "karin", "lukas", "maria",
         "nils", "olga", "paul", "queenie", "rita", "sven", "tina", "uwe", "vera", "walter", "xenia", "yusuf", "zoe",
         "alice", "bob", "chris", "dana", "emil", "fatima", "georg", "hanna", "igor", "julia", "kai", "lena", "max", "nora")
LAST = ("mueller", "schmidt", "meyer", "wagner", "becker", "hoffmann", "koch", "richter", "klein", "wolf", "neumann",
        "schwarz", "braun", "zimmermann", "krueger", "hartmann", "lange", "werner", "krause", "lehmann", "smith",
        "jones", "brown", "taylor", "wilson", "martin", "dupont", "rossi", "garcia", "novak")
WORDS = ("alpha", "nord", "sun", "blue", "green", "data", "net", "tech", "bau", "haus", "media", "logistik", "consult",
         "solar", "agrar", "metall", "print", "design", "food", "travel", "legal", "health", "dental", "auto", "energy",
         "werk", "kraft", "stadt", "berg", "see", "feld", "wald", "stein", "licht", "form", "plan", "soft", "link")
TLDS = ("de", "de", "de", "com", "com", "net", "org", "eu", "at", "ch", "fr", "nl", "it", "co.uk", "io")

TLS13 = "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256"
TLS12 = "TLSv1.2 with cipher ECDHE-RSA-AES256-GCM-SHA384 (256/256 bits)"
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def fmt_delay(x: float) -> str:
    """Postfix's rendering (delay_logging_resolution_limit = 2)."""
    if x < 0.01:
        return "0"
    if x >= 10:
        return str(int(x + 0.5))
    s = f"{x:.1f}" if x >= 1 else f"{x:.2f}"
    s = s.rstrip("0").rstrip(".")
    return s


class Dom:
    __slots__ = ("name", "kind", "mxs", "grey", "grey_seen", "eod", "tls_bad", "outages", "dns_out", "dead_until",
                 "dead_reason", "weight", "storage_out")

    def __init__(self, name: str, kind: str, mxs: list[tuple[str, str]]) -> None:
        self.name = name
        self.kind = kind
        self.mxs = mxs
        self.grey: str | None = None  # greylisting style, or None
        self.grey_seen: dict = {}
        self.eod = 0.0  # per-attempt probability of an end-of-data problem
        self.tls_bad = False
        self.outages: list[tuple[float, float, str]] = []  # (start, end, "timeout"|"refused"|"greeting")
        self.dns_out: list[tuple[float, float]] = []
        self.storage_out: list[tuple[float, float]] = []
        self.dead_until = 0.0
        self.dead_reason: tuple[str, str] | None = None
        self.weight = 1.0


class Rcpt:
    __slots__ = ("addr", "dom", "orig", "bad", "quota", "done", "final")

    def __init__(self, addr: str, dom: Dom | None, orig: str | None = None) -> None:
        self.addr = addr
        self.dom = dom  # None: local delivery
        self.orig = orig
        self.bad = False  # unknown user: bounces when a session gets to RCPT TO
        self.quota = False  # over quota (temporary) at the receiver
        self.done = False
        self.final: str | None = None


class Msg:
    __slots__ = ("qid", "arrival", "sender", "size", "rcpts", "msgid", "pending", "attempts", "kind", "transport")

    def __init__(self, qid: str, arrival: float, sender: str, size: int, kind: str) -> None:
        self.qid = qid
        self.arrival = arrival
        self.sender = sender
        self.size = size
        self.rcpts: list[Rcpt] = []
        self.msgid = ""
        self.pending = 0
        self.attempts = 0
        self.kind = kind
        self.transport = "smtp"


class Done(Exception):
    pass


class Generator:
    def __init__(self, out, n_lines: int, seed: int = 1, start: datetime = DEFAULT_START) -> None:
        self.out = out
        self.n = n_lines
        self.rng = random.Random(seed)
        self.heap: list = []
        self.seq = 0
        self.count = 0
        self.buf: list[str] = []
        self.start_dt = start
        self.t0 = 0.0
        self.last_t = 0.0
        self.now = 0.0
        self._sec = -1
        self._stamp = ""
        midnight = datetime(start.year, start.month, start.day)
        self._sec_offset = int((start - midnight).total_seconds())
        self._days: list[str] = []
        self._midnight = midnight
        self.horizon = n_lines / LINES_PER_SECOND * 1.3 + 86400
        self.pid_next = 2300
        self.pools: dict[str, list[int]] = {}
        self.live: set[str] = set()
        self.qmgr_pid = self._pid()
        self.msg_rate = LINES_PER_SECOND / 12.5  # messages per second, tuned to the lines per message
        self.scan_phase = self.rng.uniform(0, QUEUE_RUN_DELAY)
        self._build_world()

    # -- output ---------------------------------------------------------------

    def stamp(self, t: float) -> str:
        sec = int(t) + self._sec_offset
        if sec != self._sec:
            self._sec = sec
            d, s = divmod(sec, 86400)
            days = self._days
            while len(days) <= d:
                dt = self._midnight + timedelta(days=len(days))
                days.append(f"{dt:%b} {dt.day:2d}")
            self._stamp = f"{days[d]} {s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"
        return self._stamp

    def emit(self, t: float, tag: str, text: str) -> None:
        if t > self.now + 0.2:  # later than the event being handled: queue it, so time never jumps ahead
            self.seq += 1
            heapq.heappush(self.heap, (t, self.seq, self.ev_emit, (tag, text)))
            return
        if t < self.last_t:
            t = self.last_t
        else:
            self.last_t = t
        self.buf.append(f"{self.stamp(t)} {HOST} {tag}: {text}\n")
        self.count += 1
        if len(self.buf) >= 20000:
            self.flush()

    def flush(self) -> None:
        buf = self.buf
        if self.count > self.n:
            del buf[len(buf) - (self.count - self.n):]
            self.count = self.n
        self.out.write("".join(buf))
        buf.clear()
        if self.count >= self.n:
            raise Done

    def at(self, t: float, fn, *args) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, fn, args))

    def run(self) -> int:
        self._seed_events()
        heap = self.heap
        pop = heapq.heappop
        try:
            while heap:
                t, _, fn, args = pop(heap)
                self.now = t
                fn(t, *args)
                if self.count >= self.n:
                    self.flush()
            self.flush()
        except Done:
            pass
        return self.count

    # -- small helpers -----------------------------------------------------------

    def _pid(self) -> int:
        self.pid_next += self.rng.randint(1, 40)
        if self.pid_next > 4_000_000:
            self.pid_next = 1000
        return self.pid_next

    def pid(self, daemon: str, size: int = 8) -> int:
        pool = self.pools.get(daemon)
        if pool is None:
            pool = self.pools[daemon] = [self._pid() for _ in range(size)]
        i = self.rng.randrange(len(pool))
        if self.rng.random() < 0.01:  # max_use / max_idle: a new process
            pool[i] = self._pid()
        return pool[i]

    def tag(self, daemon: str, service: str | None = None, size: int = 8) -> str:
        return f"postfix/{service or daemon}[{self.pid(service or daemon, size)}]"

    def qid(self) -> str:
        rng = self.rng
        while True:
            q = f"{rng.getrandbits(40):010X}" if rng.random() < 0.7 else f"{rng.getrandbits(44):011X}"
            if q not in self.live:
                self.live.add(q)
                return q

    def ip(self) -> str:
        r = self.rng.randrange
        return f"{r(2, 223)}.{r(0, 256)}.{r(0, 256)}.{r(1, 255)}"

    def token(self, n: int, alphabet: str = ALNUM) -> str:
        c = self.rng.choice
        return "".join(c(alphabet) for _ in range(n))

    def person(self) -> str:
        c = self.rng.choice
        style = self.rng.random()
        if style < 0.5:
            return f"{c(FIRST)}.{c(LAST)}"
        if style < 0.8:
            return f"{c(FIRST)[0]}{c(LAST)}"
        return f"{c(FIRST)}{self.rng.randint(1, 999)}"

    def hour_weight(self, t: float) -> float:
        h = ((t + self._sec_offset) % 86400) / 3600.0
        day = int((t + self._sec_offset) // 86400)
        weekend = (self._midnight + timedelta(days=day)).weekday() >= 5
        w = 0.25 + 1.6 * math.exp(-((h - 11.5) / 4.0) ** 2)
        return w * (0.45 if weekend else 1.0)

    # -- the world ---------------------------------------------------------------------

    def _build_world(self) -> None:
        rng = self.rng
        H = self.horizon
        self.local_users = [f"{self.person()}@{rng.choice(LOCAL_DOMAINS[:2])}" for _ in range(1500)]
        self.local_users = list(dict.fromkeys(self.local_users))
        doms: list[Dom] = []

        def g_ip() -> str:
            return rng.choice(("142.250.27.", "142.251.9.", "64.233.184.", "209.85.233.", "74.125.206.")) + str(rng.randint(26, 27))

        gmx = [("gmail-smtp-in.l.google.com", g_ip())] + [(f"alt{i}.gmail-smtp-in.l.google.com", g_ip()) for i in (1, 2)]
        for name, w in (("gmail.com", 220), ("googlemail.com", 25)):
            d = Dom(name, "gmail", gmx)
            d.weight = w
            doms.append(d)
        for name, w in (("outlook.com", 40), ("hotmail.com", 45), ("live.com", 15), ("hotmail.de", 12), ("msn.com", 5)):
            h = name.replace(".", "-")
            d = Dom(name, "microsoft", [(f"{h}.olc.protection.outlook.com", f"52.101.{rng.randint(8, 200)}.{rng.randint(1, 40)}")])
            d.weight = w
            doms.append(d)
        ymx = [(f"mta{i}.am0.yahoodns.net", f"67.195.204.{rng.randint(70, 80)}") for i in (5, 6, 7)]
        for name, w in (("yahoo.com", 25), ("yahoo.de", 8), ("aol.com", 6), ("ymail.com", 2)):
            d = Dom(name, "yahoo", ymx)
            d.weight = w
            doms.append(d)
        for name, mx, w in (("gmx.de", "mx00.emig.gmx.net", 60), ("gmx.net", "mx01.emig.gmx.net", 25), ("web.de", "mx-ha03.web.de", 55),
                            ("t-online.de", "mx00.t-online.de", 40), ("icloud.com", "mx01.mail.icloud.com", 20),
                            ("orange.fr", "smtp-in.orange.fr", 6), ("freenet.de", "mx.freenet.de", 8), ("posteo.de", "mx01.posteo.de", 5)):
            d = Dom(name, "isp", [(mx, self.ip()), (mx.replace("00", "01").replace("01.", "02.", 1), self.ip())])
            d.weight = w
            doms.append(d)
        d = Dom("163.com", "netease", [("mx.163.com", "220.181.12.51"), ("mx1.163.com", "220.181.12.52")])
        d.weight = 3
        d.eod = 0.0
        doms.append(d)
        self.netease = d
        # the long tail of companies, clubs and schools: Zipf-ish weights
        corp: list[Dom] = []
        names: set[str] = set()
        for i in range(4000):
            while True:
                name = f"{rng.choice(WORDS)}{rng.choice(WORDS)}{rng.choice(('', '-gmbh', '-ag', '24', '-group', ''))}.{rng.choice(TLDS)}"
                if name not in names:
                    names.add(name)
                    break
            r = rng.random()
            if r < 0.25:  # on Microsoft 365
                mxs = [(f"{name.replace('.', '-')}.mail.protection.outlook.com", f"52.101.{rng.randint(8, 200)}.{rng.randint(1, 40)}")]
                kind = "m365"
            elif r < 0.35:  # on Google Workspace
                mxs = [("aspmx.l.google.com", g_ip()), ("alt1.aspmx.l.google.com", g_ip())]
                kind = "gworkspace"
            elif r < 0.6:
                mxs = [(f"mx1.{name}", self.ip()), (f"mx2.{name}", self.ip())]
                kind = "corp"
            else:
                mxs = [(f"mail.{name}", self.ip())]
                kind = "corp"
            d = Dom(name, kind, mxs)
            d.weight = 60.0 / (i + 8) ** 0.9
            if kind == "corp":
                x = rng.random()
                if x < 0.15:
                    d.grey = rng.choice(("postgrey", "postgrey", "rspamd", "minutes", "exim", "multiline"))
                elif x < 0.17:
                    d.tls_bad = True
                elif x < 0.175:
                    d.eod = rng.uniform(0.2, 0.5)
            corp.append(d)
        # outages of the destination's MX hosts, DNS trouble, full disks
        for d in corp[:600]:
            if rng.random() < 0.1:
                for _ in range(max(1, int(H / 86400 / 4))):
                    s = rng.uniform(-3600, H)
                    dur = min(2 * 86400, rng.lognormvariate(math.log(3600), 1.2))
                    d.outages.append((s, s + dur, rng.choice(("timeout", "timeout", "refused", "greeting"))))
            if rng.random() < 0.04:
                s = rng.uniform(0, H)
                d.dns_out.append((s, s + rng.lognormvariate(math.log(5400), 1.0)))
            if rng.random() < 0.01:
                s = rng.uniform(0, H)
                d.storage_out.append((s, s + rng.uniform(3600, 6 * 3600)))
        # a few destinations that never answer: their mail expires after 5 days
        self.dead_doms = []
        for i, style in enumerate(("timeout", "refused", "dns", "dns", "timeout")):
            d = corp[50 + i * 37]
            if style == "dns":
                d.dns_out.append((-1e12, 1e12))
            else:
                d.outages.append((-1e12, 1e12, style))
            d.weight *= 0.3
            self.dead_doms.append(d)
        # destinations with slow content scanners (end-of-data timeouts)
        for d, p in zip([d for d in corp[:60] if d.kind == "corp" and not d.grey and not d.tls_bad][:3], (0.35, 0.25, 0.12)):
            d.eod = p
        self.doms = doms + corp
        self.dom_by_name = {d.name: d for d in self.doms}
        self.gmail = self.dom_by_name["gmail.com"]
        total = sum(d.weight for d in self.doms)
        acc = 0.0
        self.cum = []
        for d in self.doms:
            acc += d.weight / total
            self.cum.append(acc)
        self.microsoft_bad_days = {day for day in range(int(H // 86400) + 2) if rng.random() < 0.35}
        self.lmtp_down: list[tuple[float, float]] = []
        day = 0
        while day * 86400 < H:
            s = day * 86400 + rng.uniform(2 * 3600, 5 * 3600)  # nightly dovecot upgrade/restart
            if rng.random() < 0.5:
                self.lmtp_down.append((s, s + rng.uniform(30, 240)))
            day += 1
        s = rng.uniform(0.2, 0.8) * min(H, 3 * 86400)
        self.transport_down = (s, s + rng.uniform(600, 1500))  # private/lmtp missing after an upgrade
        self.popular_gmail = [f"{self.person()}@gmail.com" for _ in range(3)]  # receive too much mail: 450-4.2.1
        self.ext_senders = [f"{self.person()}@{rng.choice(self.doms).name}" for _ in range(3000)]
        self.inbound_clients = (
            [(f"mail-{self.token(2).lower()}{rng.randint(1, 9)}-f{rng.randint(40, 199)}.google.com", f"209.85.{rng.randint(128, 255)}.{rng.randint(1, 254)}") for _ in range(40)]
            + [(f"mail-{self.token(3).lower()}{rng.randint(10, 99)}.outbound.protection.outlook.com", f"40.107.{rng.randint(1, 255)}.{rng.randint(1, 254)}") for _ in range(40)]
            + [(f"a{rng.randint(8, 48)}-{rng.randint(1, 250)}.smtp-out.amazonses.com", f"54.240.{rng.randint(8, 48)}.{rng.randint(1, 250)}") for _ in range(20)]
            + [(f"mout.{rng.choice(('gmx.net', 'web.de', 'kundenserver.de'))}", f"212.227.{rng.randint(15, 17)}.{rng.randint(1, 250)}") for _ in range(20)]
            + [(f"mail.{d.name}", self.ip()) for d in corp[:200]]
            + [("unknown", self.ip()) for _ in range(20)]
        )
        self.home_ips = [self.ip() for _ in range(300)]

    def pick_dom(self) -> Dom:
        i = bisect.bisect_left(self.cum, self.rng.random())
        return self.doms[min(i, len(self.doms) - 1)]

    def remote_rcpt(self, dom: Dom | None = None) -> Rcpt:
        rng = self.rng
        dom = dom or self.pick_dom()
        if dom is self.gmail and rng.random() < 0.02:
            addr = rng.choice(self.popular_gmail)
        else:
            addr = f"{self.person()}@{dom.name}"
        r = Rcpt(addr, dom)
        x = rng.random()
        if x < 0.012:
            r.bad = True
        elif x < 0.0135:
            r.quota = True
        return r

    # -- events --------------------------------------------------------------------------

    def _seed_events(self) -> None:
        rng = self.rng
        self.at(rng.expovariate(self.msg_rate), self.ev_arrival)
        self.at(rng.uniform(0, 30), self.ev_spam)
        self.at(rng.uniform(0, 60), self.ev_imap)
        self.at(rng.uniform(0, 600), self.ev_anvil)
        self.at(60.0 - (self._sec_offset % 60) + 1, self.ev_cron)
        self.at((3600 * 9.5 - self._sec_offset) % 86400, self.ev_newsletter)  # 09:30 on weekdays
        s, e = self.transport_down
        self.at(s, self.ev_transport_warning, e)
        # mail queued before the log starts: stuck at dead destinations, backscatter
        for _ in range(60):
            arrival = -rng.uniform(600, LIFETIME - 600)
            if rng.random() < 0.4:
                sender = ""
                target = rng.choice(self.dead_doms)
            else:
                sender = rng.choice(self.local_users)
                target = rng.choice(self.dead_doms + [self.gmail])
            m = Msg(self.qid(), arrival, sender, int(rng.lognormvariate(8.5, 1.0)), "old")
            r = self.remote_rcpt(target)
            r.bad = False
            if target is self.gmail:
                r.quota = True
            m.rcpts.append(r)
            self.at(self.next_scan(rng.uniform(0, MAX_BACKOFF)), self.ev_retry, m)

    def next_scan(self, t: float) -> float:
        k = math.ceil((t - self.scan_phase) / QUEUE_RUN_DELAY)
        return self.scan_phase + k * QUEUE_RUN_DELAY + self.rng.uniform(0.05, 3.0)

    def ev_arrival(self, t: float) -> None:
        rng = self.rng
        self.at(t + rng.expovariate(self.msg_rate * self.hour_weight(t)), self.ev_arrival)
        x = rng.random()
        if x < 0.47:
            self.inbound(t)
        elif x < 0.97:
            self.outbound(t)
        else:
            self.local_mail(t, rng.choice(("root", "logwatch", "www-data")))

    def size(self) -> int:
        return min(40_000_000, int(self.rng.lognormvariate(9.6, 1.3)) + 600)

    def inbound(self, t: float) -> None:
        rng = self.rng
        host, ip = rng.choice(self.inbound_clients)
        port = rng.randint(30000, 65000)
        ps = self.tag("postscreen", size=1)
        self.emit(t, ps, f"CONNECT from [{ip}]:{port} to [{MYIP}]:25")
        self.emit(t, ps, f"PASS OLD [{ip}]:{port}" if rng.random() < 0.85 else f"PASS NEW [{ip}]:{port}")
        sd = self.tag("smtpd", size=12)
        t += rng.uniform(0.01, 0.3)
        self.emit(t, sd, f"connect from {host}[{ip}]")
        tls = rng.random() < 0.85
        if tls:
            self.emit(t, sd, f"Anonymous TLS connection established from {host}[{ip}]: {TLS13 if rng.random() < 0.7 else TLS12}")
        t += rng.uniform(0.1, 1.5)
        q = self.qid()
        m = Msg(q, t, rng.choice(self.ext_senders) if rng.random() < 0.9 else "", self.size(), "in")
        self.emit(t, sd, f"{q}: client={host}[{ip}]")
        n = 1 if rng.random() < 0.85 else rng.randint(2, 4)
        for _ in range(n):
            u = rng.choice(self.local_users)
            orig = None
            if rng.random() < 0.03:
                orig, u = f"postmaster@{u.split('@')[1]}", self.local_users[0]
            m.rcpts.append(Rcpt(u, None, orig))
        m.transport = "lmtp"
        t += rng.uniform(0.05, 0.5)
        m.msgid = f"<{self.token(rng.choice((12, 16, 24))).lower()}@{m.sender.split('@')[-1] or 'bounce.example.com'}>"
        self.emit(t, self.tag("cleanup", size=4), f"{q}: message-id={m.msgid}")
        dk = f"opendkim[{self.pid('opendkim', 1)}]"
        if rng.random() < 0.8:
            self.emit(t, dk, f"{q}: DKIM verification successful")
        elif rng.random() < 0.5:
            self.emit(t, dk, f"{q}: s=selector1 d={m.sender.split('@')[-1] or 'example.com'} SSL error:02000068:rsa routines::bad signature")
        t += rng.uniform(0.0, 0.05)
        self.emit(t, f"postfix/qmgr[{self.qmgr_pid}]", f"{q}: from=<{m.sender}>, size={m.size}, nrcpt={n} (queue active)")
        self.emit(t + 0.05, sd, f"disconnect from {host}[{ip}] ehlo=1{' starttls=1' if tls else ''} mail=1 rcpt={n} data=1 quit=1 commands={5 + tls}")
        self.at(t + rng.uniform(0.01, 0.2), self.ev_attempt, m)

    def outbound(self, t: float, sender: str | None = None, via_localhost: bool = False) -> None:
        rng = self.rng
        if via_localhost:
            host, ip, service = "localhost", "127.0.0.1", "smtpd"
        else:
            host, ip, service = "unknown", rng.choice(self.home_ips), "submission/smtpd"
        sd = self.tag("smtpd", service, size=6)
        self.emit(t, sd, f"connect from {host}[{ip}]")
        if not via_localhost:
            self.emit(t + 0.05, sd, f"Anonymous TLS connection established from {host}[{ip}]: {TLS13}")
        t += rng.uniform(0.2, 2.0)
        sender = sender or rng.choice(self.local_users)
        q = self.qid()
        m = Msg(q, t, sender, self.size(), "out")
        auth = "" if via_localhost else f", sasl_method={rng.choice(('PLAIN', 'LOGIN'))}, sasl_username={sender}"
        self.emit(t, sd, f"{q}: client={host}[{ip}]{auth}")
        if via_localhost:
            n = 1
        else:
            n = 1 if rng.random() < 0.75 else rng.randint(2, 5)
        dom = None
        for i in range(n):
            if i and rng.random() < 0.6 and dom is not None:
                m.rcpts.append(self.remote_rcpt(dom))
            elif rng.random() < 0.08 and not via_localhost:
                m.rcpts.append(Rcpt(rng.choice(self.local_users), None))
            else:
                r = self.remote_rcpt(None)
                dom = r.dom
                m.rcpts.append(r)
        # drop duplicate addresses (Postfix does)
        seen: dict[str, Rcpt] = {}
        for r in m.rcpts:
            seen.setdefault(r.addr, r)
        m.rcpts = list(seen.values())
        t += rng.uniform(0.05, 0.4)
        m.msgid = f"<{self.token(8).lower()}-{self.token(4).lower()}-{self.token(12).lower()}@{sender.split('@')[1]}>"
        self.emit(t, self.tag("cleanup", size=4), f"{q}: message-id={m.msgid}")
        self.emit(t, f"opendkim[{self.pid('opendkim', 1)}]", f"{q}: DKIM-Signature field added (s=mail, d={sender.split('@')[1]})")
        self.emit(t, f"postfix/qmgr[{self.qmgr_pid}]", f"{q}: from=<{sender}>, size={m.size}, nrcpt={len(m.rcpts)} (queue active)")
        extra = "" if via_localhost else " starttls=1 auth=1"
        self.emit(t + 0.02, sd, f"disconnect from {host}[{ip}] ehlo={1 if via_localhost else 2}{extra} mail=1 rcpt={len(m.rcpts)} data=1 quit=1 commands={5 + len(m.rcpts) - 1 + (0 if via_localhost else 3)}")
        self.at(t + rng.uniform(0.01, 0.3), self.ev_attempt, m)

    def local_mail(self, t: float, user: str) -> None:
        rng = self.rng
        q = self.qid()
        uid = {"root": 0, "logwatch": 0, "www-data": 33}.get(user, 1000)
        self.emit(t, self.tag("pickup", size=1), f"{q}: uid={uid} from=<{user}>")
        m = Msg(q, t, f"{user}@{MYHOST}", rng.randint(700, 40000), "local")
        m.msgid = f"<{self.stamp(t).replace(' ', '').replace(':', '')}.{q}@{MYHOST}>"
        self.emit(t + 0.01, self.tag("cleanup", size=4), f"{q}: message-id={m.msgid}")
        if rng.random() < 0.7:
            m.rcpts.append(Rcpt(f"root@{MYHOST}", None, "root"))
            m.transport = "local"
        else:
            m.rcpts.append(Rcpt(f"admin@{rng.choice(self.doms[:12]).name}", None, f"root@{MYHOST}"))
            m.rcpts[0].dom = self.dom_by_name[m.rcpts[0].addr.split("@")[1]]
        self.emit(t + 0.02, f"postfix/qmgr[{self.qmgr_pid}]", f"{q}: from=<{m.sender}>, size={m.size}, nrcpt=1 (queue active)")
        self.at(t + rng.uniform(0.01, 0.1), self.ev_attempt, m)

    def ev_cron(self, t: float) -> None:
        # cron output every 15 minutes on a few hosts' behalf
        self.local_mail(t + self.rng.uniform(0, 2), "root")
        self.at(t + 900, self.ev_cron)

    def ev_newsletter(self, t: float) -> None:
        rng = self.rng
        day = int((t + self._sec_offset) // 86400)
        weekday = (self._midnight + timedelta(days=day)).weekday()
        if weekday < 5:
            n = int(rng.uniform(0.03, 0.06) * self.msg_rate * 86400)
            s = t
            for _ in range(n):
                s += rng.expovariate(n / 1500.0)
                self.at(s, self.ev_newsletter_one)
        self.at(t + 86400, self.ev_newsletter)

    def ev_newsletter_one(self, t: float) -> None:
        self.outbound(t, sender="newsletter@lists.example.org", via_localhost=True)

    def ev_transport_warning(self, t: float, end: float) -> None:
        self.emit(t, f"postfix/qmgr[{self.qmgr_pid}]", "warning: connect to transport private/lmtp: No such file or directory")
        if t + 60 < end:
            self.at(t + 60, self.ev_transport_warning, end)

    # -- noise ---------------------------------------------------------------------------

    def ev_spam(self, t: float) -> None:
        rng = self.rng
        self.at(t + rng.expovariate(self.msg_rate * 0.09 * (0.6 + 0.4 * self.hour_weight(t))), self.ev_spam)
        ip = self.ip()
        port = rng.randint(1024, 65000)
        ps = self.tag("postscreen", size=1)
        x = rng.random()
        if x < 0.35:
            self.emit(t, ps, f"CONNECT from [{ip}]:{port} to [{MYIP}]:25")
            self.emit(t + 0.1, ps, f"DNSBL rank {rng.randint(2, 8)} for [{ip}]:{port}")
            if rng.random() < 0.5:
                self.emit(t + 6, ps, f"NOQUEUE: reject: RCPT from [{ip}]:{port}: 550 5.7.1 Service unavailable; client [{ip}] blocked using zen.spamhaus.org; from=<{self.person()}@{rng.choice(WORDS)}.{rng.choice(TLDS)}>, to=<{rng.choice(self.local_users)}>, proto=ESMTP, helo=<{rng.choice(WORDS)}.com>")
            self.emit(t + 6.2, ps, f"DISCONNECT [{ip}]:{port}")
        elif x < 0.5:
            self.emit(t, ps, f"CONNECT from [{ip}]:{port} to [{MYIP}]:25")
            self.emit(t + 0.05, ps, f"PREGREET 14 after 0.{rng.randint(10, 99)} from [{ip}]:{port}: EHLO User\\r\\n")
            self.emit(t + 0.1, ps, f"HANGUP after {rng.uniform(0.2, 5):.1f} from [{ip}]:{port} in tests after SMTP handshake")
            self.emit(t + 0.1, ps, f"DISCONNECT [{ip}]:{port}")
        elif x < 0.75:
            self.emit(t, ps, f"CONNECT from [{ip}]:{port} to [{MYIP}]:25")
            self.emit(t, ps, f"PASS NEW [{ip}]:{port}")
            sd = self.tag("smtpd", size=12)
            self.emit(t + 0.2, sd, f"connect from unknown[{ip}]")
            if rng.random() < 0.5:
                self.emit(t + 0.3, sd, f"warning: hostname {rng.choice(WORDS)}-{ip.replace('.', '-')}.dyn.example.com does not resolve to address {ip}: Name or service not known")
            to = rng.choice(self.local_users) if rng.random() < 0.5 else f"{self.person()}@{LOCAL_DOMAINS[0]}"
            reason = rng.choice((
                f"450 4.7.25 Client host rejected: cannot find your hostname, [{ip}]",
                f"550 5.1.1 <{to}>: Recipient address rejected: User unknown in virtual mailbox table",
                f"554 5.7.1 <{to}>: Relay access denied",
                f"450 4.7.1 <{rng.choice(WORDS)}>: Helo command rejected: Host not found",
            ))
            self.emit(t + 1.1, sd, f"NOQUEUE: reject: RCPT from unknown[{ip}]: {reason}; from=<{self.person()}@{rng.choice(WORDS)}.{rng.choice(TLDS)}> to=<{to}> proto=ESMTP helo=<{rng.choice(WORDS)}.{rng.choice(TLDS)}>")
            self.emit(t + 1.3, sd, f"disconnect from unknown[{ip}] ehlo=1 mail=1 rcpt=0/1 rset=1 quit=1 commands=4/5")
        elif x < 0.9:
            sd = self.tag("smtpd", "submission/smtpd", size=6)
            self.emit(t, sd, f"connect from unknown[{ip}]")
            self.emit(t + 1.5, sd, f"warning: unknown[{ip}]: SASL LOGIN authentication failed: UGFzc3dvcmQ6")
            self.emit(t + 1.6, sd, f"lost connection after AUTH from unknown[{ip}]")
            self.emit(t + 1.6, sd, f"disconnect from unknown[{ip}] ehlo=1 auth=0/1 commands=1/2")
        else:
            tp = self.tag("tlsproxy", size=2)
            self.emit(t, ps, f"CONNECT from [{ip}]:{port} to [{MYIP}]:25")
            self.emit(t + 0.01, tp, f"CONNECT from [{ip}]:{port}")
            self.emit(t + 0.3, tp, f"Anonymous TLS connection established from [{ip}]:{port}: {TLS12}")
            self.emit(t + 2.0, ps, f"COMMAND PIPELINING from [{ip}]:{port} after EHLO: QUIT\\r\\n")
            self.emit(t + 2.0, tp, f"DISCONNECT [{ip}]:{port}")
            self.emit(t + 2.0, ps, f"DISCONNECT [{ip}]:{port}")

    def ev_imap(self, t: float) -> None:
        rng = self.rng
        self.at(t + rng.expovariate(self.msg_rate * 0.25 * self.hour_weight(t)), self.ev_imap)
        u = rng.choice(self.local_users)
        ip = rng.choice(self.home_ips)
        sess = self.token(16, B64)
        proto = "imap" if rng.random() < 0.9 else "pop3"
        mpid = self._pid()
        self.emit(t, "dovecot", f"{proto}-login: Login: user=<{u}>, method=PLAIN, rip={ip}, lip={MYIP}, mpid={mpid}, TLS, session=<{sess}>")
        if proto == "imap":
            self.emit(t + rng.uniform(1, 600), "dovecot", f"imap({u})<{mpid}><{sess}>: Logged out in={rng.randint(50, 5000)} out={rng.randint(500, 200000)} deleted=0 expunged=0 trashed=0 hdr_count=0 hdr_bytes=0 body_count=0 body_bytes=0")
        else:
            self.emit(t + rng.uniform(1, 30), "dovecot", f"pop3({u})<{mpid}><{sess}>: Disconnected: Logged out top=0/0, retr=0/0, del=0/0, size=0")

    def ev_anvil(self, t: float) -> None:
        rng = self.rng
        a = self.tag("anvil", size=1)
        when = self.stamp(t - rng.uniform(60, 500))
        ip = self.ip()
        self.emit(t, a, f"statistics: max connection rate {rng.randint(1, 4)}/60s for (smtpd:{ip}) at {when}")
        self.emit(t, a, f"statistics: max connection count {rng.randint(1, 3)} for (smtpd:{ip}) at {when}")
        self.emit(t, a, f"statistics: max cache size {rng.randint(1, 20)} at {when}")
        self.at(t + 600 + rng.uniform(0, 120), self.ev_anvil)

    # -- delivery --------------------------------------------------------------------------

    def ev_retry(self, t: float, m: Msg) -> None:
        """A deferred message comes back from the deferred queue."""
        left = sum(1 for r in m.rcpts if not r.done)
        self.emit(t, f"postfix/qmgr[{self.qmgr_pid}]", f"{m.qid}: from=<{m.sender}>, size={m.size}, nrcpt={len(m.rcpts)} (queue active)")
        if left:
            self.at(t + self.rng.uniform(0.01, 0.5), self.ev_attempt, m)

    def ev_attempt(self, t: float, m: Msg) -> None:
        m.attempts += 1
        groups: dict = {}
        for r in m.rcpts:
            if not r.done:
                key = r.dom.name if r.dom is not None else m.transport
                groups.setdefault(key, []).append(r)
        m.pending = len(groups)
        for key, rcpts in groups.items():
            if rcpts[0].dom is None:
                self.deliver_local(t, m, rcpts)
            else:
                self.deliver_remote(t, m, rcpts[0].dom, rcpts)

    def status(self, t: float, tag: str, m: Msg, r: Rcpt, relay: str, a: float, b: float, c: float, d: float,
               dsn: str, status: str, reason: str, conn_use: int = 0) -> None:
        a_s, b_s, c_s, d_s = fmt_delay(a), fmt_delay(b), fmt_delay(c), fmt_delay(d)
        total = fmt_delay(a + b + c + d)
        orig = f", orig_to=<{r.orig}>" if r.orig else ""
        cu = f", conn_use={conn_use}" if conn_use else ""
        self.emit(t, tag, f"{m.qid}: to=<{r.addr}>{orig}, relay={relay}{cu}, delay={total}, delays={a_s}/{b_s}/{c_s}/{d_s}, dsn={dsn}, status={status} ({reason})")
        if status != "deferred":
            r.done = True
            r.final = status

    def suspended(self, t: float, m: Msg, rcpts: list[Rcpt], dsn: str, reason: str, via_error: bool) -> None:
        """qmgr (or the error/retry service) defers mail for a throttled destination at once."""
        rng = self.rng
        b = rng.uniform(0, 0.05)
        if via_error:
            tag = self.tag("error", size=2)
            t += rng.uniform(0.01, 0.1)
        else:
            tag = f"postfix/qmgr[{self.qmgr_pid}]"
        a = max(0.0, t - m.arrival)
        for r in rcpts:
            self.status(t, tag, m, r, "none", a, b, 0, 0, dsn, "deferred", f"delivery temporarily suspended: {reason}")
        self.group_done(t, m)

    def deliver_local(self, t: float, m: Msg, rcpts: list[Rcpt]) -> None:
        rng = self.rng
        a = max(0.0, t - m.arrival) + rng.uniform(0.005, 0.2)
        b = rng.uniform(0.0, 0.03)
        s, e = self.transport_down
        if m.transport == "lmtp" and s <= t < e:
            tag = self.tag("error", size=2)
            for r in rcpts:
                self.status(t + 0.01, tag, m, r, "none", a, b, 0, 0.01, "4.3.0", "deferred", "mail transport unavailable")
            self.group_done(t + 0.01, m)
            return
        if m.transport == "local":
            tag = self.tag("local", size=2)
            d = rng.uniform(0.005, 0.05)
            end = t + b + d
            for r in rcpts:
                self.status(end, tag, m, r, "local", a, b, 0, d, "2.0.0", "sent", "delivered to mailbox")
            self.group_done(end, m)
            return
        tag = self.tag("lmtp", size=4)
        if any(s <= t < e for s, e in self.lmtp_down):
            c = rng.uniform(0.001, 0.02)
            for r in rcpts:
                self.status(t + c, tag, m, r, "none", a, b, c, 0, "4.4.1", "deferred", f"connect to {MYHOST}[private/dovecot-lmtp]: Connection refused")
            self.group_done(t + c, m)
            return
        c = rng.uniform(0.0, 0.02)
        d = rng.uniform(0.02, 0.4) + m.size / 20e6
        end = t + b + c + d
        lpid = self._pid()
        self.at(t + b + c, self.ev_emit, "dovecot", f"lmtp({lpid}): Connect from local")
        for r in rcpts:
            sess = self.token(22, B64)
            self.at(end - 0.01, self.ev_emit, "dovecot", f"lmtp({r.addr})<{lpid}><{sess}>: msgid={m.msgid}: saved mail to INBOX")
        self.at(end, self.ev_local_sent, m, rcpts, tag, a, b, c, d, lpid)

    def ev_emit(self, t: float, tag: str, text: str) -> None:
        self.emit(t, tag, text)

    def ev_local_sent(self, t: float, m: Msg, rcpts: list[Rcpt], tag: str, a, b, c, d, lpid: int) -> None:
        for r in rcpts:
            self.status(t, tag, m, r, f"{MYHOST}[private/dovecot-lmtp]", a, b, c, d, "2.0.0", "sent", f"250 2.0.0 <{r.addr}> {self.token(22, B64)} Saved")
        self.emit(t, "dovecot", f"lmtp({lpid}): Disconnect from local: Successful quit")
        self.group_done(t, m)

    def deliver_remote(self, t: float, m: Msg, dom: Dom, rcpts: list[Rcpt]) -> None:
        rng = self.rng
        if dom.dead_until > t and dom.dead_reason is not None:
            dsn, reason = dom.dead_reason
            self.suspended(t, m, rcpts, dsn, reason, via_error=rng.random() < 0.4)
            return
        a = max(0.0, t - m.arrival) + (rng.uniform(0.01, 0.3) if m.attempts == 1 else rng.uniform(0, 0.05))
        b = rng.uniform(0.0, 0.05) if rng.random() < 0.95 else rng.uniform(0.5, 30)
        day = int((t + self._sec_offset) // 86400)
        tag = self.tag("smtp", size=20)
        mxs = dom.mxs
        pre: list[str] = []  # lines logged during connection setup
        fracs: list[float] = []  # when, as a fraction of c (default: at its end)

        def fail(c: float, d: float, dsn: str, reason: str, relay: str = "none", throttle: bool = False) -> None:
            self.pre_lines(t + b, c, tag, pre, fracs)
            self.at(t + b + c + d, self.ev_remote_done, m, dom, rcpts, tag, relay, a, b, c, d, dsn, "deferred", reason, throttle, {})

        # DNS
        for s, e in dom.dns_out:
            if s <= t < e:
                fail(rng.uniform(0.01, 5.0), 0, "4.4.3", f"Host or domain name not found. Name service error for name={dom.name} type=MX: Host not found, try again", throttle=True)
                return
        # TCP connect / greeting
        for s, e, style in dom.outages:
            if s <= t < e:
                if style == "greeting":
                    h, ip = mxs[0]
                    fail(rng.uniform(300, 302), 0, "4.4.2", f"conversation with {h}[{ip}] timed out while receiving the initial server greeting", f"{h}[{ip}]:25", True)
                    return
                what = "Connection timed out" if style == "timeout" else "Connection refused"
                per = 30.0 if style == "timeout" else 0.05
                c = 0.0
                for i, (h, ip) in enumerate(mxs[:-1]):
                    c += per + rng.uniform(0, 0.3)
                    pre.append(f"connect to {h}[{ip}]:25: {what}")
                    fracs.append((i + 1) / len(mxs))
                h, ip = mxs[-1]
                c += per + rng.uniform(0, 0.3)
                fail(c, 0, "4.4.1", f"connect to {h}[{ip}]:25: {what}", throttle=True)
                return
        if rng.random() < 0.0008:
            h, ip = rng.choice(mxs)
            fail(rng.uniform(0.3, 2), rng.uniform(0.1, 30), "4.4.2", f"lost connection with {h}[{ip}] while sending RCPT TO", f"{h}[{ip}]:25", True)
            return
        h, ip = mxs[0]
        if len(mxs) > 1 and rng.random() < 0.05:
            h, ip = mxs[1]
        relay = f"{h}[{ip}]:25"
        c = rng.uniform(0.05, 0.4) + (rng.uniform(0.2, 1.5) if rng.random() < 0.3 else 0)
        conn_use = 0
        if dom.kind in ("gmail", "microsoft", "m365", "gworkspace") and rng.random() < 0.25:
            conn_use = rng.randint(2, 12)
            c = rng.uniform(0.01, 0.06)
        d = rng.uniform(0.1, 1.2) + m.size / rng.uniform(2e6, 2e7)
        if not conn_use:
            if dom.kind in ("gmail", "gworkspace", "microsoft", "m365", "isp", "yahoo"):
                pre.append(f"Trusted TLS connection established to {h}[{ip}]:25: {TLS13}")
            elif not dom.tls_bad and rng.random() < 0.8:
                pre.append(f"Untrusted TLS connection established to {h}[{ip}]:25: {TLS12}")
        # greeting refusal (Yahoo), TLS failure, full disks: the whole delivery
        if dom.kind == "yahoo" and rng.random() < 0.03:
            pre.clear()
            ts01 = "refused to talk to me: 421 4.7.0 [TS01] Messages from " + MYIP + " temporarily deferred due to user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes"
            for h0, ip0 in mxs[:-1]:  # each MX refuses; the non-last ones log the reason with no status=
                pre.append(f"{m.qid}: host {h0}[{ip0}] {ts01}")
                fracs.append(len(pre) / len(mxs))
            h, ip = mxs[-1]
            fail(c * len(mxs), 0, "4.7.0", f"host {h}[{ip}] {ts01}", f"{h}[{ip}]:25", True)
            return
        if dom.tls_bad and t - m.arrival < MIN_BACKOFF:
            pre[:] = [f"SSL_connect error to {h}[{ip}]:25: -1",
                      "warning: TLS library problem: error:0A000410:SSL routines::sslv3 alert handshake failure:../ssl/record/rec_layer_s3.c:1586:SSL alert number 40:"]
            fail(c + rng.uniform(0.05, 0.5), 0, "4.7.5", "Cannot start TLS: handshake failure", relay, False)
            return
        for s, e in dom.storage_out:
            if s <= t < e:
                fail(c, rng.uniform(0.05, 0.3), "4.3.1", f"host {h}[{ip}] said: 452 4.3.1 Insufficient system storage (in reply to MAIL FROM command)", relay)
                return
        if dom.kind in ("microsoft", "m365"):
            p = 0.06 if day in self.microsoft_bad_days else 0.004
            if rng.random() < p:
                mx_id = self.token(16, "0123456789ABCDEF")
                fail(c, rng.uniform(0.1, 0.5), "4.7.650", f"host {h}[{ip}] said: 451 4.7.650 The mail server [{MYIP}] has been temporarily rate limited due to IP reputation. For e-mail delivery information, see https://postmaster.live.com (S775) [Name=Protocol Filter Agent][AGT=PFA][MxId={mx_id}] [{self.token(4).upper()}EUR0{rng.randint(1, 6)}FT0{rng.randint(10, 99)}.eop-eur0{rng.randint(1, 6)}.prod.protection.outlook.com] (in reply to MAIL FROM command)", relay)
                return
        # per recipient (RCPT TO)
        results: dict = {}
        accepted: list[Rcpt] = []
        rd = rng.uniform(0.05, 0.3)
        for r in rcpts:
            res = self.rcpt_reply(t, m, dom, r, h, ip)
            if res is None:
                accepted.append(r)
            else:
                results[r.addr] = res
        if not accepted and dom.grey and len(mxs) > 1 and (h, ip) == mxs[0] and rng.random() < 0.4:
            # every recipient soft-failed at the first MX: Postfix tries the next one
            first = results[rcpts[0].addr]
            pre.append(f"{m.qid}: {first[2]}")
            fracs.append(1.0)
            h2, ip2 = mxs[1]
            for addr, res in list(results.items()):
                results[addr] = (res[0], res[1], res[2].replace(f"{h}[{ip}]", f"{h2}[{ip2}]"))
            relay = f"{h2}[{ip2}]:25"
            rd += c
        self.pre_lines(t + b, c, tag, pre, fracs)
        if not accepted:
            self.at(t + b + c + rd, self.ev_remote_done, m, dom, rcpts, tag, relay, a, b, c, rd, "", "", "", False, results, conn_use)
            return
        # DATA / end of DATA
        data_fail = None
        if dom.eod and rng.random() < dom.eod:
            if rng.random() < 0.8:
                d = 600 + rng.uniform(0.1, 3) + m.size / 5e6
                data_fail = ("4.4.2", f"conversation with {h}[{ip}] timed out while sending end of data -- message may be sent more than once", True)
            else:
                d = rng.choice((50, 79, 120)) + rng.uniform(0, 2)
                data_fail = ("4.4.2", f"lost connection with {h}[{ip}] while sending end of data -- message may be sent more than once", True)
        elif dom is self.netease and rng.random() < 0.3:
            data_fail = ("4.0.0", f"host {h}[{ip}] said: 451 DT:SPM 163 mx{rng.randint(1, 40)},{self.token(30)}--.{rng.randint(10000, 99999)}S3 {int(t) + 1_700_000_000}, please try again 15min later (in reply to end of DATA command)", False)
        elif dom.kind in ("gmail", "gworkspace"):
            p = 0.2 if m.sender.startswith("newsletter@") else 0.002  # bursts trip Gmail's rate limits
            if rng.random() < p:
                data_fail = ("4.7.28", f"host {h}[{ip}] said: 421-4.7.28 [{MYIP}      15] Our system has detected an unusual rate of 421-4.7.28 unsolicited mail originating from your IP address. To protect our 421-4.7.28 users from spam, mail sent from your IP address has been temporarily 421-4.7.28 rate limited. Please visit 421-4.7.28  https://support.google.com/mail/?p=UnsolicitedRateLimitError to 421 4.7.28 review our Bulk Email Senders Guidelines. {self.token(10).lower()}si{rng.randint(100000, 999999)}.{rng.randint(100, 999)} - gsmtp (in reply to end of DATA command)", False)
        for r in accepted:
            if data_fail is not None:
                results[r.addr] = ("deferred",) + data_fail[:2]
            else:
                results[r.addr] = ("sent", "2.0.0", self.ok_reply(dom, m, r, t))
        throttle = data_fail is not None and data_fail[2]
        self.at(t + b + c + d, self.ev_remote_done, m, dom, rcpts, tag, relay, a, b, c, d, "", "", "", throttle, results, conn_use)

    def rcpt_reply(self, t: float, m: Msg, dom: Dom, r: Rcpt, h: str, ip: str):
        rng = self.rng
        tail = "(in reply to RCPT TO command)"
        if r.bad:
            if dom.kind in ("gmail", "gworkspace"):
                return ("bounced", "5.1.1", f"host {h}[{ip}] said: 550-5.1.1 The email account that you tried to reach does not exist. Please try 550-5.1.1 double-checking the recipient's email address for typos or 550-5.1.1 unnecessary spaces. For more information, go to 550 5.1.1  https://support.google.com/mail/?p=NoSuchUser {self.token(10).lower()}si{rng.randint(100000, 999999)}.{rng.randint(100, 999)} - gsmtp {tail}")
            if dom.kind in ("microsoft", "m365"):
                return ("bounced", "5.5.0", f"host {h}[{ip}] said: 550 5.5.0 Requested action not taken: mailbox unavailable (S2017062302). [{self.token(4).upper()}EUR0{rng.randint(1, 6)}FT0{rng.randint(10, 99)}.eop-eur0{rng.randint(1, 6)}.prod.protection.outlook.com] {tail}")
            return ("bounced", "5.1.1", f"host {h}[{ip}] said: 550 5.1.1 <{r.addr}>: Recipient address rejected: User unknown in virtual mailbox table {tail}")
        if r.quota:
            if t - m.arrival > 7200 and rng.random() < 0.08:
                r.quota = False  # the user cleaned up
            else:
                if dom.kind in ("gmail", "gworkspace"):
                    return ("deferred", "4.2.2", f"host {h}[{ip}] said: 452-4.2.2 The recipient's inbox is out of storage space. Please direct the 452-4.2.2 recipient to 452 4.2.2  https://support.google.com/mail/?p=OverQuotaTemp {self.token(10).lower()}si{rng.randint(100000, 999999)}.{rng.randint(100, 999)} - gsmtp {tail}")
                return ("deferred", "4.2.2", f"host {h}[{ip}] said: 452 4.2.2 <{r.addr}>: Mailbox full {tail}")
        if dom.grey:
            key = (m.sender, r.addr)
            first = dom.grey_seen.get(key)
            if first is None:
                dom.grey_seen[key] = t
                if len(dom.grey_seen) > 5000:
                    dom.grey_seen.pop(next(iter(dom.grey_seen)))
                first = t
            if t - first < 290:
                style = dom.grey
                if style == "postgrey":
                    return ("deferred", "4.2.0", f"host {h}[{ip}] said: 450 4.2.0 <{r.addr}>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/help/{dom.name}.html {tail}")
                if style == "minutes":
                    return ("deferred", "4.7.1", f"host {h}[{ip}] said: 450 4.7.1 <{r.addr}>: Recipient address rejected: Greylisted for 5 minutes {tail}")
                if style == "rspamd":
                    return ("deferred", "4.7.1", f"host {h}[{ip}] said: 451 4.7.1 Try again later {tail}")
                if style == "exim":
                    return ("deferred", "4.0.0", f"host {h}[{ip}] said: 451-{MYIP} is not yet authorized to deliver mail from 451 <{m.sender}> to <{r.addr}>. Please try later. {tail}")
                return ("deferred", "4.0.0", f"host {h}[{ip}] said: 451-You have been greylisted. This is part of our standard anti-spam measures 451-and your mail system should automatically try again later. We will accept 451 this mail from you in {rng.randint(30, 300)} seconds {tail}")
        if dom is self.gmail and r.addr in self.popular_gmail and rng.random() < 0.5:
            return ("deferred", "4.2.1", f"host {h}[{ip}] said: 450-4.2.1 The user you are trying to contact is receiving mail at a rate that 450-4.2.1 prevents additional messages from being delivered. Please resend your 450-4.2.1 message at a later point. If the user is able to receive mail at that 450-4.2.1 time, your message will be delivered. For more information, please 450-4.2.1 visit 450 4.2.1  https://support.google.com/mail/?p=ReceivingRate {self.token(10).lower()}si{rng.randint(100000, 999999)}.{rng.randint(100, 999)} - gsmtp {tail}")
        if dom.kind == "m365" and rng.random() < 0.004:
            return ("deferred", "4.7.500", f"host {h}[{ip}] said: 451 4.7.500 Server busy. Please try again later from [{MYIP}]. (S77719) [{self.token(4).upper()}EUR0{rng.randint(1, 6)}FT0{rng.randint(10, 99)}.eop-eur0{rng.randint(1, 6)}.prod.protection.outlook.com] {tail}")
        return None

    def ok_reply(self, dom: Dom, m: Msg, r: Rcpt, t: float) -> str:
        rng = self.rng
        k = dom.kind
        if k in ("gmail", "gworkspace"):
            return f"250 2.0.0 OK  {int(t) + 1_793_000_000} {self.token(10).lower()}si{rng.randint(100000, 999999)}.{rng.randint(100, 999)} - gsmtp"
        if k in ("microsoft", "m365"):
            return f"250 2.6.0 {m.msgid} [InternalId={rng.randint(10**11, 10**12)}, Hostname={self.token(4).upper()}PR0{rng.randint(1, 9)}MB{rng.randint(1000, 9999)}.eurprd0{rng.randint(1, 9)}.prod.outlook.com] {m.size + rng.randint(2000, 9000)} bytes in {rng.uniform(0.05, 0.9):.3f}, {rng.uniform(10, 900):.3f} KB/sec Queued mail for delivery"
        if k == "yahoo":
            return "250 ok dirdel"
        if k == "isp":
            return f"250 Requested mail action okay, completed: id={self.token(24)}"
        return f"250 2.0.0 Ok: queued as {self.token(rng.choice((10, 11)), '0123456789ABCDEF')}"

    def pre_lines(self, t: float, c: float, tag: str, pre: list[str], fracs: list[float]) -> None:
        """Lines logged during connection setup (per-MX connect failures, TLS)."""
        for i, line in enumerate(pre):
            self.at(t + c * (fracs[i] if i < len(fracs) else 1.0), self.ev_emit, tag, line)

    def ev_remote_done(self, t: float, m: Msg, dom: Dom, rcpts: list[Rcpt], tag: str, relay: str,
                       a: float, b: float, c: float, d: float, dsn: str, status: str, reason: str, throttle: bool,
                       results: dict, conn_use: int = 0) -> None:
        rng = self.rng
        if status:  # one outcome for the whole delivery
            for r in rcpts:
                self.status(t, tag, m, r, relay, a, b, c, d, dsn, status, reason)
        else:
            for r in rcpts:
                st, rdsn, rreason = results[r.addr]
                self.status(t, tag, m, r, relay, a, b, c, d, rdsn, st, rreason, conn_use)
        if throttle and rng.random() < 0.6:
            dom.dead_until = t + MIN_BACKOFF
            if status:
                dom.dead_reason = (dsn, reason)
            else:
                dom.dead_reason = next((v[1], v[2]) for v in results.values() if v[0] == "deferred")
        elif not throttle and any(r.final == "sent" for r in rcpts):
            dom.dead_until = 0.0
        self.group_done(t, m)

    def group_done(self, t: float, m: Msg) -> None:
        m.pending -= 1
        if m.pending > 0:
            return
        rng = self.rng
        q = m.qid
        qmgr = f"postfix/qmgr[{self.qmgr_pid}]"
        deferred = [r for r in m.rcpts if not r.done]
        bounced = [r for r in m.rcpts if r.final == "bounced" and r.done]
        if deferred and t - m.arrival < LIFETIME:
            self.at(self.next_scan(t + min(MAX_BACKOFF, max(MIN_BACKOFF, t - m.arrival))), self.ev_retry, m)
            return
        t += 0.01
        if deferred:
            self.emit(t, qmgr, f"{q}: from=<{m.sender}>, status=expired, returned to sender")
            for r in deferred:
                r.done = True
                r.final = "expired"
        if (deferred or bounced) and m.sender:
            self.bounce_notice(t, m)
            for r in bounced:
                r.final = "notified"
        self.emit(t + rng.uniform(0.0, 0.02), qmgr, f"{q}: removed")
        self.live.discard(q)

    def bounce_notice(self, t: float, m: Msg) -> None:
        rng = self.rng
        nq = self.qid()
        t += rng.uniform(0.01, 0.1)
        self.emit(t, self.tag("bounce", size=2), f"{m.qid}: sender non-delivery notification: {nq}")
        b = Msg(nq, t, "", rng.randint(2500, 8000) + min(m.size, 60000), "bounce")
        b.msgid = f"<{self.stamp(t).replace(' ', '').replace(':', '')}.{nq}@{MYHOST}>"
        self.emit(t, self.tag("cleanup", size=4), f"{nq}: message-id={b.msgid}")
        self.emit(t + 0.01, f"postfix/qmgr[{self.qmgr_pid}]", f"{nq}: from=<>, size={b.size}, nrcpt=1 (queue active)")
        domain = m.sender.rpartition("@")[2]
        if domain in LOCAL_DOMAINS or domain == MYHOST:
            b.rcpts.append(Rcpt(m.sender, None))
            b.transport = "local" if domain == MYHOST else "lmtp"
        else:
            b.rcpts.append(Rcpt(m.sender, self.dom_by_name.get(domain) or self.pick_dom()))
        self.at(t + rng.uniform(0.02, 0.3), self.ev_attempt, b)


def generate(path: str, n_lines: int, seed: int = 1) -> int:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="ascii", buffering=1 << 20) as fh:
        n = Generator(fh, n_lines, seed).run()
    os.replace(tmp, path)
    return n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Write a realistic, deterministic Postfix log (traditional syslog format).")
    p.add_argument("output", help="file to write")
    p.add_argument("-n", "--lines", type=int, default=1_000_000, help="number of lines (default 1,000,000)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    args = p.parse_args(argv)
    n = generate(args.output, args.lines, args.seed)
    print(f"{args.output}: {n:,} lines", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
