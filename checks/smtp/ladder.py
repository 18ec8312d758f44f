"""The end-of-data size ladder behind E09: real test messages of growing size, each in its
own session, and the verdict: PMTU-like size stall vs slow receiver vs inspecting firewall
vs healthy. to_findings() turns a probe or a ladder verdict into Findings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from checks.errors import UsageError
from checks.model import Evidence, Finding, Severity
from checks.postfix.defaults import BODY, DATA, END_OF_DATA
from checks.smtp import DEFAULT_LADDER_SIZES
from checks.smtp.session import (  # noqa: F401 - to_findings: it was here, callers may still import it from here
    _BAD, CHECK_ID, PhaseTimeouts, ProbeResult, Verdict, _check_args, _converse, _Session, to_findings,
)  # fmt: skip
from checks.targets.base import Target

if TYPE_CHECKING:
    import ssl

_MAX_TEST_SIZE = 64 << 20

# --- the end-of-data size ladder -------------------------------------------------------


@dataclass(frozen=True)
class MessageResult:
    size: int  # body bytes
    message_id: str
    subject: str
    probe: ProbeResult  # the whole session, DATA / body / end-of-data phases included

    @property
    def accepted(self) -> bool:
        eod = self.probe.phase(END_OF_DATA)
        return eod is not None and eod.reply_code is not None and eod.reply_code // 100 == 2


_PATTERN = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _body_of(size: int) -> bytes:
    """Exactly `size` bytes of 76-character lines (78 with CRLF); no line starts with '.'."""
    lines = []
    for n in range(size // 78):
        head = f"pfdiag test line {n:07d} "
        lines.append((head + (_PATTERN * 2)[: 76 - len(head)]).encode())
    body = b"\r\n".join(lines) + (b"\r\n" if lines else b"")
    rest = size - len(body)
    if rest >= 2:
        body += (b"pfdiag end " + _PATTERN.encode() * 2)[: rest - 2] + b"\r\n"
    elif rest == 1:
        body = body[:-2] + b"-\r\n" if body else b"\n"
    return body


def _dot_stuff(message: bytes) -> bytes:
    """RFC 5321 4.5.2: a line starting with "." gets another one (ours never do; be correct anyway)."""
    stuffed = message.replace(b"\r\n.", b"\r\n..")
    return b"." + stuffed if stuffed.startswith(b".") else stuffed


def build_test_message(size: int, *, helo_name: str, mail_from: str, rcpt_to: str,
                       when: float | None = None) -> tuple[str, str, bytes]:
    """(Message-ID, Subject, message as sent after DATA without the final "."): headers,
    then a body of exactly `size` bytes."""
    import email.utils  # only when sending: a probe that sends nothing need not load the email package
    import uuid

    message_id = f"<pfdiag-{uuid.uuid4().hex[:20]}-{size}@{helo_name}>"
    subject = f"pfdiag end-of-data test {size} bytes"
    headers = (
        f"Date: {email.utils.formatdate(when, localtime=True)}\r\n"
        f"From: <{mail_from or 'postmaster@' + helo_name}>\r\n"
        f"To: <{rcpt_to}>\r\n"
        f"Subject: {subject}\r\n"
        f"Message-ID: {message_id}\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "X-pfdiag: end-of-data size test, safe to delete\r\n"
        "\r\n"
    )
    return message_id, subject, headers.encode("ascii") + _body_of(size)


def send_test_messages(
    target: Target,
    host: str,
    port: int,
    *,
    helo_name: str,
    mail_from: str,
    rcpt_to: str,
    sizes: Sequence[int] = DEFAULT_LADDER_SIZES,
    timeouts: PhaseTimeouts = PhaseTimeouts(),
    budget_per_message: float | None,
    starttls: bool | Literal["auto"] = "auto",
    tls_context: ssl.SSLContext | None = None,
    wrappermode: bool = False,
    source: str | None = None,
    bind_fallback: bool = False,
) -> tuple[MessageResult, ...]:
    """Deliver one REAL test message per size, each in its own session, timing DATA ->
    354, the body write and "." -> final reply. rcpt_to must be a mailbox you control."""
    if not rcpt_to or not rcpt_to.strip():
        raise UsageError("sending test messages needs an explicit recipient (a mailbox you control)")
    _check_args(host, port, helo_name, mail_from, rcpt_to, starttls)
    for size in sizes:
        if not isinstance(size, int) or not 1 <= size <= _MAX_TEST_SIZE:
            raise UsageError(f"test message size must be 1..{_MAX_TEST_SIZE} bytes, not {size!r}")
    context = tls_context  # None: each session makes the default one when TLS starts
    results = []
    for size in sizes:
        message_id, subject, payload = build_test_message(size, helo_name=helo_name, mail_from=mail_from, rcpt_to=rcpt_to)
        s = _Session(target, host, port, timeouts, budget_per_message, source, bind_fallback)
        try:
            _converse(s, helo_name=helo_name, mail_from=mail_from, rcpt_to=rcpt_to, starttls=starttls,
                      context=context, wrappermode=wrappermode, payload=_dot_stuff(payload))
        finally:
            s.close()
        results.append(MessageResult(size, message_id, subject, s.result()))
    return tuple(results)


@dataclass(frozen=True)
class LadderStep:
    size: int
    message_id: str
    outcome: str  # passed | slow | stalled-body | lost-body | stalled-eod | lost-eod | rejected | not-reached
    data_seconds: float | None
    body_seconds: float | None
    eod_seconds: float | None
    detail: str


@dataclass(frozen=True)
class LadderVerdict:
    # size-correlated-stall | slow-after-data (slow, silent, or lost after "." at every size:
    # cause E09, or E10 when the connection is lost) | inspecting-firewall | healthy | inconclusive
    kind: str
    explanation: str
    steps: tuple[LadderStep, ...]
    suggestions: tuple[str, ...] = ()
    first_failing_size: int | None = None
    cause_id: str | None = None
    host: str = ""
    port: int = 0


_STALLS = ("stalled-body", "lost-body", "stalled-eod", "lost-eod")


def _step(m: MessageResult) -> LadderStep:
    p = m.probe
    data, body, eod = p.phase(DATA), p.phase(BODY), p.phase(END_OF_DATA)
    secs = (data.seconds if data else None, body.seconds if body else None, eod.seconds if eod else None)
    if body is not None and body.verdict in _BAD:
        outcome = "lost-body" if body.verdict is Verdict.FAILED else "stalled-body"
        detail = body.detail
    elif eod is None:
        outcome, detail = "not-reached", p.error or "the conversation ended before DATA"
    elif eod.verdict in (Verdict.WOULD_TIME_OUT, Verdict.UNDECIDED):
        outcome, detail = "stalled-eod", eod.detail
    elif eod.verdict is Verdict.FAILED:
        outcome, detail = ("rejected" if eod.reply_code else "lost-eod"), eod.detail
    else:
        outcome = "slow" if eod.verdict is Verdict.SLOW else "passed"
        detail = f"'.' -> {eod.reply_code} in {eod.seconds:.3f} s"
    return LadderStep(m.size, m.message_id, outcome, *secs, detail)


def _numbers(steps: Sequence[LadderStep]) -> str:
    def one(st: LadderStep) -> str:
        if st.outcome in ("passed", "slow"):
            return f"{st.size} B: '.'->reply {st.eod_seconds:.2f} s"
        if st.outcome == "stalled-body":
            return f"{st.size} B: body write stalled after {st.body_seconds:.2f} s"
        if st.outcome == "stalled-eod":
            return f"{st.size} B: no reply to '.' in {st.eod_seconds:.2f} s"
        if st.outcome == "lost-eod":
            return f"{st.size} B: connection lost {st.eod_seconds:.2f} s after '.'"
        return f"{st.size} B: {st.outcome}"
    return "; ".join(one(st) for st in steps)


_PMTU_HINTS = (
    "tracepath -n {host}   (where does the path MTU drop?)",
    "ping -M do -s 1472 {host}   (IPv6: ping -6 -M do -s 1452 {host}); no answer while smaller sizes work = black hole",
    "clamp TCP MSS to the path MTU on the router/firewall: "
    "iptables -t mangle -A FORWARD -p tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu",
    "or lower the route MTU (ip route change ... mtu 1400), or sysctl net.ipv4.tcp_mtu_probing=1; "
    "let ICMP fragmentation-needed (IPv6 packet-too-big) through",
)
_SLOW_HINTS = (
    "the receiver works long after '.', typically synchronous content scanning (antivirus, spam milter, "
    "before-queue filter): ask its postmaster to scan after queueing",
    "check the recipient mailbox for duplicates of the test Message-IDs: a retry after this timeout can "
    "deliver a message twice",
    "stopgap for that destination only: a dedicated transport with a larger smtp_data_done_timeout "
    "(raises the duplicate risk)",
)
_LOST_HINTS = (
    "look at the receiver's side for what ends the session after DATA: a crashing or killed content "
    "filter, a policy drop, process limits",
    "if the loss always comes after the same delay, suspect a firewall/NAT idle timeout shorter than the "
    "receiver's processing",
    "check the recipient mailbox for duplicates of the test Message-IDs: the receiver may have kept them",
)
_FIREWALL_HINTS = (
    "turn off SMTP inspection on the firewall (PIX: no fixup protocol smtp 25; ASA: no inspect esmtp)",
    "meanwhile in Postfix: smtp_pix_workaround_threshold_time = 0, or smtp_pix_workaround_maps for that address",
)


def conclude_ladder(results: Sequence[MessageResult]) -> LadderVerdict:
    """What the end-of-data ladder says about the path and the receiver."""
    steps = tuple(sorted((_step(m) for m in results), key=lambda st: st.size))
    host, port = (results[0].probe.host, results[0].probe.port) if results else ("", 0)
    reached = [st for st in steps if st.outcome not in ("not-reached", "rejected")]
    skipped = len(steps) - len(reached)
    extra = f" ({skipped} of {len(steps)} sizes did not get that far or were rejected)" if skipped else ""

    def verdict(kind: str, why: str, hints: Sequence[str] = (), first: int | None = None,
                cause: str | None = None) -> LadderVerdict:
        return LadderVerdict(kind, why + extra, steps, tuple(h.format(host=host) for h in hints), first, cause, host, port)

    masked = any(m.probe.masked_banner for m in results)
    if masked and any(st.outcome != "passed" for st in steps):
        return verdict("inspecting-firewall", "the greeting is masked by an SMTP-inspecting firewall and test "
                       f"messages fail: {_numbers(steps)}", _FIREWALL_HINTS,
                       next((st.size for st in steps if st.outcome != "passed"), None), "E09")
    if not reached:
        why = steps[0].detail if steps else "no test message was sent"
        return verdict("inconclusive", f"no test message got through DATA: {why}")
    if all(st.outcome == "passed" for st in reached):
        return verdict("healthy", f"every size went through: {_numbers(reached)}")
    split = next(i for i, st in enumerate(reached) if st.outcome != "passed")
    if split > 0 and all(st.outcome in _STALLS for st in reached[split:]):
        first = reached[split]
        cause = "E08" if first.outcome in ("stalled-body", "lost-body") else "E09"
        return verdict("size-correlated-stall", (
            f"up to {reached[split - 1].size} B every message went through, from {first.size} B on the "
            f"transfer stalls, the signature of a path-MTU black hole (full-size packets lost, small ones pass): "
            f"{_numbers(reached)}"),
            _PMTU_HINTS, first.size, cause)
    body_fine = all(st.outcome not in ("stalled-body", "lost-body") for st in reached)
    if body_fine and all(st.outcome in ("slow", "stalled-eod", "lost-eod") for st in reached):
        if all(st.outcome == "lost-eod" for st in reached):
            return verdict("slow-after-data", (
                "the body goes through, but at every size, even the smallest, the connection is lost after '.' "
                f"instead of a final reply: {_numbers(reached)}"), _LOST_HINTS, reached[0].size, "E10")
        return verdict("slow-after-data", (
            "the body goes through at every size, but the receiver is slow to answer '.' at every size, "
            f"even the smallest: {_numbers(reached)}"), _SLOW_HINTS, reached[0].size, "E09")
    return verdict("inconclusive", f"no clear pattern (sporadic loss or an outage?): {_numbers(reached)}")


def _ladder_findings(v: LadderVerdict) -> list[Finding]:
    severity = {"healthy": Severity.OK, "inconclusive": Severity.INFO}.get(v.kind, Severity.PROBLEM)
    if v.kind == "inconclusive" and any(st.outcome in _STALLS for st in v.steps):
        severity = Severity.WARNING
    excerpt = "\n".join(f"{st.size} B {st.message_id} {st.outcome}: {st.detail}" for st in v.steps)
    values = {"ladder": v.kind, "first_failing_size": v.first_failing_size, "suggestions": list(v.suggestions),
              "steps": [{"size": st.size, "message_id": st.message_id, "outcome": st.outcome,
                         "data": st.data_seconds, "body": st.body_seconds, "end_of_data": st.eod_seconds}
                        for st in v.steps]}
    return [Finding(CHECK_ID, severity, f"{v.host}:{v.port} end-of-data test: {v.kind}: {v.explanation}",
                    v.cause_id, (Evidence(f"SMTP test messages to {v.host}:{v.port}", excerpt),), values)]
