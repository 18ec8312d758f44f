"""Every failure mode against the real Postfix: what it logs, and what postqueue -j says.

One message per row of tests.lab.scenarios.SCENARIOS is injected at once (sendmail(1)); the
module waits for all first delivery attempts (about 5 s: the slowest are the 5 s timeouts),
takes one ``postqueue -j`` snapshot, and the tests read from that. Tests that retry or touch
the queue come after, with mail of their own.
"""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

import pytest

from tests.lab.peers import HealthyPeer, Peer
from tests.lab.postfix import Delivery, Injected, PostfixLab
from tests.lab.scenarios import BY_NAME, SCENARIOS, SENDER, PeerSet, Scenario

pytestmark = pytest.mark.lab


@dataclass(frozen=True)
class FirstAttempt:
    scenario: Scenario
    injected: Injected
    queue_id: str
    deliveries: list[Delivery]
    queued: dict[str, Any] | None  # this message in the postqueue -j snapshot


@pytest.fixture(scope="module")
def first_attempts(postfix_lab: PostfixLab, smtp_peers: PeerSet) -> dict[str, FirstAttempt]:
    t0 = time.monotonic()

    def inject(s: Scenario) -> Injected:
        return postfix_lab.inject(SENDER, s.recipients, size=s.size, subject=s.name)

    with ThreadPoolExecutor(8) as pool:
        injected = dict(zip((s.name for s in SCENARIOS), pool.map(inject, SCENARIOS)))
    done = {name: postfix_lab.wait_first_attempt(inj, timeout=30) for name, inj in injected.items()}
    snapshot = {str(m["queue_id"]): m for m in postfix_lab.postqueue_json()}
    print(f"\nfirst attempts of {len(SCENARIOS)} scenarios done in {time.monotonic() - t0:.1f} s")
    return {
        name: FirstAttempt(BY_NAME[name], injected[name], ds[0].queue_id, ds, snapshot.get(ds[0].queue_id))
        for name, ds in done.items()
    }


@pytest.mark.parametrize("name", [s.name for s in SCENARIOS])
def test_first_attempt_logs_the_real_reason(
    name: str, first_attempts: dict[str, FirstAttempt], smtp_peers: PeerSet
) -> None:
    fa = first_attempts[name]
    s, port = fa.scenario, smtp_peers.port(name)
    assert [d.to for d in fa.deliveries] == list(s.recipients)
    for d in fa.deliveries:
        assert (d.status, d.dsn) == (s.status, s.dsn), d.line
        assert s.reason_re(port).search(d.reason), d.line
        assert d.program in ("postfix/smtp", "postfix/error")


@pytest.mark.parametrize("name", [s.name for s in SCENARIOS if s.companions])
def test_companion_lines(name: str, first_attempts: dict[str, FirstAttempt], postfix_lab: PostfixLab,
                         smtp_peers: PeerSet) -> None:  # fmt: skip
    log = postfix_lab.log_lines()
    for pattern in BY_NAME[name].companion_res(smtp_peers.port(name)):
        assert any(pattern.search(line) for line in log), pattern.pattern


@pytest.mark.parametrize("name", [s.name for s in SCENARIOS if s.status == "deferred"])
def test_postqueue_shows_the_same_delay_reason(name: str, first_attempts: dict[str, FirstAttempt]) -> None:
    fa = first_attempts[name]
    assert fa.queued is not None, f"{fa.queue_id} is not in the queue"
    assert fa.queued["queue_name"] == "deferred"
    assert fa.queued["sender"] == SENDER
    rcpts = fa.queued["recipients"]
    assert isinstance(rcpts, list)
    assert {r["address"]: r["delay_reason"] for r in rcpts} == {d.to: d.reason for d in fa.deliveries}


@pytest.mark.parametrize("name", [s.name for s in SCENARIOS if s.status == "sent"])
def test_sent_mail_reached_the_peer_once(
    name: str, first_attempts: dict[str, FirstAttempt], smtp_peers: PeerSet
) -> None:
    fa = first_attempts[name]
    assert fa.queued is None  # delivered: gone from the queue
    got = smtp_peers[name].received(fa.injected.message_id)
    assert len(got) == 1
    assert got[0].rcpt_to == fa.injected.recipients
    assert got[0].mail_from == SENDER


@pytest.mark.parametrize(
    ("name", "part", "low", "high"),
    [
        # delays=a/b/c/d: which part carries the wait, and how long it must be
        ("eod-stall", 3, 4.5, 8.0),  # smtp_data_done_timeout = 5s, after the body
        ("body-stall", 3, 4.5, 8.0),  # smtp_data_xfer_timeout = 5s
        ("no-banner", 2, 4.5, 8.0),  # smtp_helo_timeout = 5s, during connection setup
        ("no-ehlo", 2, 4.5, 8.0),
        ("slow-data", 3, 1.9, 4.9),  # the peer's 2 s, under the 5 s timeout
        ("slow-data-late", 3, 4.5, 8.0),  # the peer's 8 s: cut at 5 s
        ("refused", 3, 0.0, 0.0),  # never got to transmission
    ],
)
def test_the_wait_shows_in_the_right_part_of_delays(
    name: str, part: int, low: float, high: float, first_attempts: dict[str, FirstAttempt]
) -> None:
    d = first_attempts[name].deliveries[0]
    value = float(d.delays.split("/")[part])
    assert low <= value <= high, d.line


def test_end_of_data_stall_peer_did_get_the_whole_message(
    first_attempts: dict[str, FirstAttempt], smtp_peers: PeerSet
) -> None:
    """Why the reason says "may be sent more than once": the peer has the message, Postfix does not know."""
    fa = first_attempts["eod-stall"]
    assert len(smtp_peers["eod-stall"].received(fa.injected.message_id)) == 1


def test_body_stall_peer_never_got_to_the_end(first_attempts: dict[str, FirstAttempt], smtp_peers: PeerSet) -> None:
    assert first_attempts["body-stall"].injected.size > 8_000_000
    assert smtp_peers["body-stall"].received(first_attempts["body-stall"].injected.message_id) == []


def test_mailbox_full_holds_back_only_that_recipient(postfix_lab: PostfixLab, smtp_peers: PeerSet) -> None:
    inj = postfix_lab.inject(SENDER, ["full@mailbox-full.test", "ok@mailbox-full.test"], subject="two recipients")
    ds = {d.to: d for d in postfix_lab.wait_first_attempt(inj)}
    assert ds["ok@mailbox-full.test"].status == "sent"
    assert ds["full@mailbox-full.test"].status == "deferred"
    qid = ds["ok@mailbox-full.test"].queue_id
    queued = postfix_lab.queued(qid)
    assert queued is not None
    assert [r["address"] for r in queued["recipients"]] == ["full@mailbox-full.test"]
    assert "done_recipient: ok@mailbox-full.test" in postfix_lab.postcat("-eq", qid).stdout
    assert [m.rcpt_to for m in smtp_peers["mailbox-full"].received(inj.message_id)] == [("ok@mailbox-full.test",)]


def test_later_mail_for_a_dead_destination_is_suspended(postfix_lab: PostfixLab, smtp_peers: PeerSet) -> None:
    """A burst of mail for a refusing destination: after the first connection failures qmgr
    marks it dead, and the mail still waiting is deferred by the error service with the last
    reason, without a connection attempt. (Mail sent one at a time never shows this: the
    destination's queue, and its failure count, is gone whenever it runs empty.)"""
    port = smtp_peers.port("refused")
    with ThreadPoolExecutor(8) as pool:
        burst = list(pool.map(lambda n: postfix_lab.inject(SENDER, [f"burst{n}@refused.test"], subject=f"burst {n}"),
                              range(8)))  # fmt: skip
    ds = [d for inj in burst for d in postfix_lab.wait_first_attempt(inj)]
    suspended = [d for d in ds if d.program == "postfix/error"]
    if not suspended:  # timing: the burst trickled in; a flush sends all of them to qmgr at once
        mark = postfix_lab.mark()
        postfix_lab.flush()
        m = postfix_lab.wait_for_log(r"postfix/error\[\d+\]: \w+: to=<burst\d@refused\.test>.*", since=mark)
        suspended = [d for d in [Delivery.parse(m.string)] if d is not None]
    assert {d.status for d in ds} == {"deferred"}
    assert suspended
    d = suspended[0]
    assert (d.status, d.dsn, d.relay) == ("deferred", "4.4.1", "none")
    assert d.reason == f"delivery temporarily suspended: connect to 127.0.0.1[127.0.0.1]:{port}: Connection refused"
    # no connection setup; d is the error agent's own few milliseconds (seen: 0/0.01/0/0, 0.07/0.03/0/0.01)
    assert d.delays.split("/")[2] == "0" and float(d.delays.split("/")[3]) < 0.5


def test_postsuper_hold_release_requeue_delete(postfix_lab: PostfixLab) -> None:
    inj = postfix_lab.inject(SENDER, ["user@greylist.test"], subject="postsuper")
    first = postfix_lab.wait_first_attempt(inj)[0]
    qid = first.queue_id

    held = postfix_lab.postsuper("-h", qid)
    assert held.returncode == 0
    assert held.stderr.splitlines() == [f"postsuper: {qid}: placed on hold", "postsuper: Placed on hold: 1 message"]
    assert (postfix_lab.queued(qid) or {}).get("queue_name") == "hold"

    released = postfix_lab.postsuper("-H", qid)
    assert released.stderr.splitlines() == [
        f"postsuper: {qid}: released from hold",
        "postsuper: Released from hold: 1 message",
    ]
    back = postfix_lab.queued(qid)
    assert back is not None and back["queue_name"] == "deferred"
    assert back["recipients"][0]["delay_reason"] == first.reason

    mark = postfix_lab.mark()
    requeued = postfix_lab.postsuper("-r", qid)
    assert requeued.stderr.splitlines() == [f"postsuper: {qid}: requeued", "postsuper: Requeued: 1 message"]
    postfix_lab.kick_pickup()
    m = postfix_lab.wait_for_log(rf"postfix/pickup\[\d+\]: (\w+): uid=\d+ from=<{re.escape(SENDER)}> orig_id={qid}$",
                                 timeout=70, since=mark)  # fmt: skip
    new_id = m.group(1)
    assert new_id != qid
    assert postfix_lab.queue_ids_for(inj.message_id) == [qid, new_id]
    again = postfix_lab.wait_first_attempt(new_id, recipients=inj.recipients)
    assert again[0].reason == first.reason
    assert postfix_lab.queued(qid) is None

    deleted = postfix_lab.postsuper("-d", new_id)
    assert deleted.stderr.splitlines() == [f"postsuper: {new_id}: removed", "postsuper: Deleted: 1 message"]
    assert postfix_lab.queued(new_id) is None


def test_postsuper_delete_unknown_id_is_not_an_error(postfix_lab: PostfixLab) -> None:
    proc = postfix_lab.postsuper("-d", "NOSUCHID")
    assert proc.returncode == 0
    assert proc.stderr.strip() == "postsuper: Deleted: 0 messages"


def test_force_expire_returns_the_message(postfix_lab: PostfixLab) -> None:
    inj = postfix_lab.inject(SENDER, ["expire@greylist.test"], subject="force-expire")
    qid = postfix_lab.wait_first_attempt(inj)[0].queue_id
    mark = postfix_lab.mark()
    assert postfix_lab.postsuper("-e", qid).returncode == 0
    postfix_lab.postqueue("-i", qid, check=True)
    m = postfix_lab.wait_for_log(rf"postfix/qmgr\[\d+\]: {qid}: from=<{re.escape(SENDER)}>, (status=force-expired, "
                                 r"returned to sender)$", since=mark)  # fmt: skip
    assert m.group(1) == "status=force-expired, returned to sender"


def test_pix_peer_delivers_on_retry_and_keeps_a_duplicate(
    first_attempts: dict[str, FirstAttempt], postfix_lab: PostfixLab, smtp_peers: PeerSet
) -> None:
    """The end-of-data timeout case that pfdiag exists for: the retry succeeds, and the
    receiver now holds the message twice."""
    fa = first_attempts["pix"]
    sent = rf"postfix/smtp\[\d+\]: {fa.queue_id}: to=<user@pix\.test>, .* status=sent "
    if postfix_lab.queued(fa.queue_id) is not None:
        postfix_lab.flush()  # retries all deferred mail now (an earlier flush may have done it)
    m = postfix_lab.wait_for_log(sent, timeout=30)
    d = Delivery.parse(m.string)
    assert d is not None and d.dsn == "2.0.0"
    assert smtp_peers["pix"].message_ids()[fa.injected.message_id] == 2  # read twice: a duplicate
    assert smtp_peers["pix"].accepted[fa.injected.message_id] == 1  # though only the retry got "250"
    assert postfix_lab.queued(fa.queue_id) is None
    retry = [ln for ln in postfix_lab.log_lines() if f"{fa.queue_id}: enabling PIX workarounds" in ln]
    assert len(retry) == 2  # the masked banner is seen again on the retry


def test_a_peer_and_route_added_at_runtime(postfix_lab: PostfixLab, make_peer: Callable[..., Peer]) -> None:
    """A peer of the test's own, route() + apply() (postmap, postfix reload): the domain is live."""
    peer = make_peer(HealthyPeer, "late-route")
    postfix_lab.route("late-route.test", peer.port)
    postfix_lab.apply()
    inj = postfix_lab.inject(SENDER, ["user@late-route.test"], subject="late route")
    (d,) = postfix_lab.wait_first_attempt(inj)
    assert (d.status, d.relay) == ("sent", f"127.0.0.1[127.0.0.1]:{peer.port}")
    assert peer.accepted[inj.message_id] == 1


def test_lab_stays_on_loopback(postfix_lab: PostfixLab) -> None:
    assert postfix_lab.loopback_violations() == []
    assert postfix_lab.postconf("-h", "default_transport").startswith("error")
    # the only inet listener is smtpd on 127.0.0.1
    inet = [ln.split()[0] for ln in postfix_lab.postconf("-M").splitlines() if ln.split()[1:2] == ["inet"]]
    assert inet == [f"127.0.0.1:{postfix_lab.smtpd_port}"]


def test_unrouted_domains_never_leave(postfix_lab: PostfixLab) -> None:
    inj = postfix_lab.inject(SENDER, ["someone@elsewhere.test"], subject="unrouted")
    d = postfix_lab.wait_first_attempt(inj)[0]
    assert (d.program, d.status, d.relay) == ("postfix/error", "bounced", "none")
    assert d.reason == "the pfdiag lab delivers to routed .test domains only"
