"""The lab's failure modes as data: which peer, which TLS policy, what Postfix must log.

One row per failure mode. Mail to ``<rcpt>@<name>.test`` is routed to that row's peer
(``smtp:[127.0.0.1]:PORT``). ``reason`` is a regex on the text inside ``status=...(...)``
of the first attempt; ``{host}`` stands for ``127.0.0.1[127.0.0.1]`` and ``{port}`` for the
peer's port. The integration tests and tests/lab/capture.py both read this table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Iterable

from tests.lab import peers
from tests.lab.peers import Peer

HOST = re.escape("127.0.0.1[127.0.0.1]")
BODY_STALL_SIZE = 8 * 1024 * 1024  # more than loopback socket buffers absorb; see BodyStallPeer
SENDER = "lab@sender.test"


@dataclass(frozen=True)
class Scenario:
    name: str  # the domain label: mail goes to <rcpt>@<name>.test
    make_peer: Callable[[], peers.Peer]
    status: str  # of the first attempt
    dsn: str
    reason: str  # regex; {host} and {port} are filled in
    tls: str | None = None  # smtp_tls_policy_maps level for this peer's next hop
    size: int = 0
    rcpt: tuple[str, ...] = ("user",)
    companions: tuple[str, ...] = ()  # regexes of other lines the attempt must log
    note: str = ""

    @property
    def domain(self) -> str:
        return f"{self.name}.test"

    @property
    def recipients(self) -> tuple[str, ...]:
        return tuple(f"{r}@{self.domain}" for r in self.rcpt)

    def reason_re(self, port: int) -> re.Pattern[str]:
        return re.compile(self.reason.replace("{host}", HOST).replace("{port}", str(port)))

    def companion_res(self, port: int) -> list[re.Pattern[str]]:
        return [re.compile(c.replace("{host}", HOST).replace("{port}", str(port))) for c in self.companions]


def _p(cls: type[peers.Peer], name: str, **kw: object) -> Callable[[], peers.Peer]:
    return lambda: cls(name, **kw)  # type: ignore[arg-type]


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("healthy", _p(peers.HealthyPeer, "healthy"), "sent", "2.0.0", r"^250 2\.0\.0 Ok: queued as HEALTHY\d+$"),
    Scenario(
        "eod-stall", _p(peers.EndOfDataStallPeer, "eod-stall"), "deferred", "4.4.2",
        r"^conversation with {host} timed out while sending end of data -- message may be sent more than once$",
    ),
    Scenario(
        "refused", _p(peers.RefusedPeer, "refused"), "deferred", "4.4.1",
        r"^connect to {host}:{port}: Connection refused$",
        companions=(r"postfix/smtp\[\d+\]: connect to {host}:{port}: Connection refused$",),
    ),
    Scenario(
        "no-banner", _p(peers.NoBannerPeer, "no-banner"), "deferred", "4.4.2",
        r"^conversation with {host} timed out while receiving the initial server greeting$",
    ),
    Scenario(
        "no-ehlo", _p(peers.NoEhloReplyPeer, "no-ehlo"), "deferred", "4.4.2",
        r"^conversation with {host} timed out while performing the EHLO handshake$",
    ),
    Scenario(
        "banner-421", _p(peers.Banner421Peer, "banner-421"), "deferred", "4.3.2",
        r"^host {host} refused to talk to me: 421 4\.3\.2 banner-421\.test Service not available, "
        r"closing transmission channel$",
    ),
    Scenario(
        "greylist", _p(peers.GreylistPeer, "greylist"), "deferred", "4.7.1",
        r"^host {host} said: 451 4\.7\.1 <user@greylist\.test>: Recipient address rejected: Greylisted, "
        r"see http://postgrey\.schweikert\.ch/help/greylist\.test\.html \(in reply to RCPT TO command\)$",
    ),
    Scenario(
        "mailbox-full", _p(peers.MailboxFullPeer, "mailbox-full"), "deferred", "4.2.2",
        r"^host {host} said: 452 4\.2\.2 <full@mailbox-full\.test>: Mailbox full \(in reply to RCPT TO command\)$",
        rcpt=("full",),
    ),
    Scenario(
        "queue-write-error", _p(peers.QueueWriteErrorPeer, "queue-write-error"), "deferred", "4.3.0",
        r"^host {host} said: 451 4\.3\.0 Error: queue file write error \(in reply to end of DATA command\)$",
    ),
    Scenario(
        "drop-rcpt", _p(peers.DropAtRcptPeer, "drop-rcpt"), "deferred", "4.4.2",
        r"^lost connection with {host} while sending RCPT TO$",
    ),
    Scenario(
        "body-stall", _p(peers.BodyStallPeer, "body-stall"), "deferred", "4.4.2",
        r"^conversation with {host} timed out while sending message body$",
        size=BODY_STALL_SIZE,
    ),
    Scenario(
        "starttls-garbage", _p(peers.StartTlsGarbagePeer, "starttls-garbage"), "deferred", "4.7.5",
        r"^Cannot start TLS: handshake failure$",
        tls="may",
        companions=(
            r"SSL_connect error to {host}:{port}: -1$",
            r"warning: TLS library problem: .*wrong version number",
        ),
    ),
    Scenario(
        "no-starttls", _p(peers.NoStartTlsPeer, "no-starttls"), "deferred", "4.7.4",
        r"^TLS is required, but was not offered by host {host}$",
        tls="encrypt",
    ),
    Scenario(
        "self-signed", _p(peers.SelfSignedTlsPeer, "self-signed"), "deferred", "4.7.5",
        r"^Server certificate not verified$",
        tls="verify",
        companions=(r"certificate verification failed for {host}:{port}: self-signed certificate$",),
    ),
    Scenario(
        "tls-ok", _p(peers.SelfSignedTlsPeer, "tls-ok"), "sent", "2.0.0", r"^250 2\.0\.0 Ok: queued as TLSOK\d+$",
        tls="may",
        companions=(r"Untrusted TLS connection established to {host}:{port}: TLSv1\.[23]",),
        note="the same self-signed peer with policy may: delivered over an untrusted TLS connection",
    ),
    Scenario(
        "pix", _p(peers.PixPeer, "pix"), "deferred", "4.4.2",
        r"^conversation with {host} timed out while sending end of data -- message may be sent more than once$",
        # delay_dotcrlf is only used for mail older than smtp_pix_workaround_threshold_time (500 s)
        companions=(r": enabling PIX workarounds: disable_esmtp for {host}:{port}$",),
        note="delivered by the retry (a flush): the peer then holds the message twice",
    ),
    Scenario(
        "slow-data", _p(peers.SlowDataPeer, "slow-data", delay=2.0), "sent", "2.0.0",
        r"^250 2\.0\.0 Ok: queued as SLOWDATA\d+$",
        note="answers the final dot after 2 s, under smtp_data_done_timeout: sent, with d >= 2",
    ),
    Scenario(
        "slow-data-late", _p(peers.SlowDataPeer, "slow-data-late", delay=8.0), "deferred", "4.4.2",
        r"^conversation with {host} timed out while sending end of data -- message may be sent more than once$",
        note="the same peer answering after 8 s: over the 5 s smtp_data_done_timeout",
    ),
)  # fmt: skip

BY_NAME: dict[str, Scenario] = {s.name: s for s in SCENARIOS}


def scenario_mail(names: Iterable[str] | None = None) -> list[tuple[str, tuple[str, ...], dict[str, object]]]:
    """One message per scenario (or per named one), as PostfixLab.fresh_window takes them."""
    wanted = None if names is None else set(names)
    return [(SENDER, s.recipients, {"size": s.size, "subject": s.name}) for s in SCENARIOS
            if wanted is None or s.name in wanted]  # fmt: skip


@dataclass
class PeerSet:
    """The started peers of a scenario table, by scenario name."""

    peers: dict[str, Peer] = field(default_factory=dict)

    @classmethod
    def start(cls, scenarios: tuple[Scenario, ...] = SCENARIOS) -> PeerSet:
        out = cls()
        try:
            for s in scenarios:
                out.peers[s.name] = s.make_peer().start()
        except BaseException:
            out.stop()
            raise
        return out

    def stop(self) -> None:
        for p in self.peers.values():
            p.request_stop()  # all at once: every peer's threads wind down in parallel
        for p in self.peers.values():
            p.stop()

    def __getitem__(self, name: str) -> Peer:
        return self.peers[name]

    def port(self, name: str) -> int:
        return self.peers[name].port


@dataclass(frozen=True)
class DnsScenario:
    """Mail to user@<domain> from the Postfix inside the DNS namespace (tests/lab/dns.py)."""

    domain: str
    status: str
    dsn: str
    reason: str  # regex on the reason text
    relay: str = "none"
    companions: tuple[str, ...] = ()


DNS_SCENARIOS: tuple[DnsScenario, ...] = (
    DnsScenario("ok.test", "sent", "2.0.0", r"^250 2\.0\.0 Ok: queued as MX\.OK\d+$", relay="mx.ok.test[127.0.0.2]:25"),
    DnsScenario("cname.test", "sent", "2.0.0", r"^250 2\.0\.0 Ok: queued as MX\.OK\d+$",
                relay="alias.cname.test[127.0.0.2]:25"),
    DnsScenario(
        "mxservfail.test", "deferred", "4.4.3",
        r"^Host or domain name not found\. Name service error for name=mx\.servfail\.test type=AAAA: "
        r"Host not found, try again$",
        companions=(r"warning: no MX host for mxservfail\.test has a valid address record$",),
    ),
    DnsScenario(
        "servfail.test", "deferred", "4.4.3",
        r"^Host or domain name not found\. Name service error for name=servfail\.test type=MX: "
        r"Host not found, try again$",
    ),
    DnsScenario(
        "nxdomain.test", "bounced", "5.4.4",
        r"^Host or domain name not found\. Name service error for name=nxdomain\.test type=AAAA: Host not found$",
    ),
    DnsScenario(
        "noaddr.test", "bounced", "5.4.4",
        r"^Host or domain name not found\. Name service error for name=mx\.noaddr\.test type=AAAA: Host not found$",
        companions=(r"warning: no MX host for noaddr\.test has a valid address record$",),
    ),
    DnsScenario(
        "nodata.test", "bounced", "5.4.4",
        r"^Host or domain name not found\. Name service error for name=mx\.nodata\.test type=AAAA: "
        r"Host found but no data record of requested type$",
    ),
    DnsScenario("nullmx.test", "bounced", "5.1.0", r"^Domain nullmx\.test does not accept mail \(nullMX\)$"),
    DnsScenario("loop.test", "bounced", "5.4.6", r"^mail for loop\.test loops back to myself$"),
)  # fmt: skip
