"""The probe conversation: connect, greeting, EHLO, STARTTLS, MAIL, RCPT (and, for the ladder,
DATA, the body and "."), RSET, QUIT, each phase timed against Postfix's timeout for it.

Each phase waits at most min(Postfix's timeout for that phase, what is left of the budget)
against ONE deadline per phase, so a peer trickling a byte a second cannot stretch it.
"""

from __future__ import annotations

import enum
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Literal

from checks.errors import ConnectFailed, UsageError
from checks.model import Evidence, Finding, Severity
from checks.postfix.defaults import (
    BANNER, BODY, CONNECT, DATA, EHLO, EHLO_TLS, END_OF_DATA, HELO, MAIL, OS_CONNECT_TIMEOUT, PHASE, QUIT, RCPT,
    RSET, STARTTLS, TIMEOUT_DEFAULTS, TLS_HANDSHAKE,
)  # fmt: skip
from checks.postfix.postconf import parse_time
from checks.smtp.wire import (
    _BODY_CHUNK, MAX_LINE_KEEP, Reply, TlsInfo, _Hostile, _Lost, _Plain, _Reader, _Timeout, _TlsFailed,
    _tls_handshake, default_tls_context, is_masked_banner,
)  # fmt: skip
from checks.targets.base import Connection, Target

if TYPE_CHECKING:
    import ssl

    from checks.smtp.ladder import LadderVerdict

CHECK_ID = "smtp.probe"

# Postfix does not wait for the QUIT reply (smtp_skip_quit_response = yes): neither do we, long.
_QUIT_WAIT = 5.0
# A greeting this late is a tarpit (or postscreen's greet pause), even when it is "ok".
_TARPIT_SECONDS = 5.0
SMTPS_PORTS = frozenset({465})



class Verdict(str, enum.Enum):
    OK = "ok"
    SLOW = "slow"
    WOULD_TIME_OUT = "would-time-out"
    UNDECIDED = "undecided"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


_RANK = {Verdict.OK: 0, Verdict.SLOW: 1, Verdict.UNDECIDED: 2, Verdict.WOULD_TIME_OUT: 3, Verdict.FAILED: 3}
_SEVERITY = {
    Verdict.OK: Severity.OK,
    Verdict.SLOW: Severity.WARNING,
    Verdict.UNDECIDED: Severity.WARNING,
    Verdict.WOULD_TIME_OUT: Severity.PROBLEM,
    Verdict.FAILED: Severity.PROBLEM,
}
_BAD = (Verdict.WOULD_TIME_OUT, Verdict.UNDECIDED, Verdict.FAILED)


# --- phases and Postfix's timeouts -----------------------------------------------------

_PHASES = PHASE  # phase name -> checks.postfix.defaults.Phase (param, Postfix's words, reply class)


@dataclass(frozen=True)
class PhaseTimeouts:
    """Postfix's SMTP client timeouts in seconds, under their postconf names."""

    smtp_connect_timeout: float = TIMEOUT_DEFAULTS["smtp_connect_timeout"]
    smtp_helo_timeout: float = TIMEOUT_DEFAULTS["smtp_helo_timeout"]
    smtp_starttls_timeout: float = TIMEOUT_DEFAULTS["smtp_starttls_timeout"]
    smtp_mail_timeout: float = TIMEOUT_DEFAULTS["smtp_mail_timeout"]
    smtp_rcpt_timeout: float = TIMEOUT_DEFAULTS["smtp_rcpt_timeout"]
    smtp_data_init_timeout: float = TIMEOUT_DEFAULTS["smtp_data_init_timeout"]
    smtp_data_xfer_timeout: float = TIMEOUT_DEFAULTS["smtp_data_xfer_timeout"]
    smtp_data_done_timeout: float = TIMEOUT_DEFAULTS["smtp_data_done_timeout"]
    smtp_rset_timeout: float = TIMEOUT_DEFAULTS["smtp_rset_timeout"]
    smtp_quit_timeout: float = TIMEOUT_DEFAULTS["smtp_quit_timeout"]

    @classmethod
    def from_postconf(cls, values: Mapping[str, str | int | float]) -> PhaseTimeouts:
        """From postconf values ("300s", "5m", "$other"); absent names keep the defaults,
        other names are ignored. A malformed time value raises InputError."""
        text = {k: str(v) for k, v in values.items()}
        known = {f.name for f in fields(cls)}
        return cls(**{k: parse_time(v, "s", text, name=k) for k, v in text.items() if k in known})

    @classmethod
    def uniform(cls, seconds: float) -> PhaseTimeouts:
        """Every phase with the same timeout (tests, quick looks)."""
        return cls(**{f.name: float(seconds) for f in fields(cls)})

    def for_phase(self, phase: str) -> tuple[str, float]:
        param = _PHASES[phase].param
        value = float(getattr(self, param))
        if param == "smtp_connect_timeout" and value <= 0:
            value = OS_CONNECT_TIMEOUT
        return param, value


# --- results ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PhaseResult:
    """One phase of a probe (connect, banner, ehlo...): how long it took, its verdict, its reply."""
    name: str
    seconds: float
    verdict: Verdict
    reply_code: int | None
    enhanced_code: str | None
    text: str  # the reply as Postfix logs it; "" when there was none
    timeout_param: str
    timeout_value: float
    detail: str = ""  # what happened, in a line
    cause_id: str | None = None  # the catalog entry (postfix-deferrals.md) a bad verdict points to


@dataclass(frozen=True)
class ProbeResult:
    """One SMTP conversation: every phase in order, what the server said and offered."""
    host: str
    port: int
    where: str
    phases: tuple[PhaseResult, ...]
    banner: str = ""
    masked_banner: bool = False
    esmtp: bool = False
    capabilities: tuple[str, ...] = ()
    starttls_offered: bool | None = None  # None: no EHLO answer to tell
    tls: TlsInfo | None = None
    tls_capabilities: tuple[str, ...] = ()
    completed: bool = False  # reached the end of the planned conversation
    error: str | None = None  # the first bad phase, in a line
    notes: tuple[str, ...] = ()
    transcript: tuple[str, ...] = ()
    seconds: float = 0.0
    source: str | None = None  # the bind address asked for (smtp_bind_address[6] or --bind); None: the default
    local_address: str | None = None  # the local end as connected ("addr:port"), when the connection tells
    bind_error: str | None = None  # binding to `source` failed (then a fallback may have connected without it)

    def phase(self, name: str) -> PhaseResult | None:
        return next((p for p in reversed(self.phases) if p.name == name), None)

    @property
    def worst(self) -> Verdict:
        return max((p.verdict for p in self.phases), key=_RANK.__getitem__, default=Verdict.OK)

    def offers(self, keyword: str) -> bool:
        caps = self.tls_capabilities if self.tls else self.capabilities
        return _offers(caps, keyword)


def _offers(caps: Sequence[str], keyword: str) -> bool:
    return any(c.split(None, 1)[0].upper() == keyword.upper() for c in caps if c.strip())


def _capabilities(reply: Reply) -> tuple[str, ...]:
    return tuple(line[4:].strip() for line in reply.lines[1:] if len(line) > 4)


# --- the conversation ------------------------------------------------------------------


class _Transcript:
    MAX_ENTRIES, MAX_CHARS = 200, 300

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, who: str, text: str) -> None:
        if len(self.lines) < self.MAX_ENTRIES:
            cut = text if len(text) <= self.MAX_CHARS else text[: self.MAX_CHARS] + f"... ({len(text)} chars)"
            self.lines.append(f"{who}: {cut}")


class _Session:
    """One SMTP conversation: records a PhaseResult per step; `dead` once the stream is unusable."""

    def __init__(self, target: Target, host: str, port: int, timeouts: PhaseTimeouts, budget: float | None,
                 source: str | None = None, bind_fallback: bool = False) -> None:  # fmt: skip
        self.target, self.host, self.port, self.timeouts = target, host, port, timeouts
        self.source, self.bind_fallback = source, bind_fallback
        self.local_address: str | None = None
        self.bind_error: str | None = None
        self.start = time.monotonic()
        self.budget_end = None if budget is None else self.start + max(budget, 0.0)
        self.phases: list[PhaseResult] = []
        self.notes: list[str] = []
        self.log = _Transcript()
        self.conn: Connection | None = None
        self.reader: _Reader | None = None
        self.dead = False
        self.completed = False
        self.banner: Reply | None = None
        self.masked = False
        self.esmtp = False
        self.capabilities: tuple[str, ...] = ()
        self.tls_capabilities: tuple[str, ...] = ()
        self.starttls_offered: bool | None = None
        self.tls: TlsInfo | None = None
        self.quit_sent = False  # QUIT went out pipelined with MAIL..RSET: quit() only records it

    # -- time

    def _window(self, name: str, cap: float | None = None) -> tuple[str, float, float]:
        """(param, Postfix's timeout, how long we may wait) for a phase."""
        param, timeout = self.timeouts.for_phase(name)
        wait = timeout if cap is None else min(timeout, cap)
        if self.budget_end is not None:
            wait = min(wait, self.budget_end - time.monotonic())
        return param, timeout, wait

    def addr(self) -> str:
        return f"{self.host}:{self.port}"

    def record(self, name: str, seconds: float, verdict: Verdict, *, reply: Reply | None = None,
               detail: str = "", cause: str | None = None) -> PhaseResult:
        param, timeout = self.timeouts.for_phase(name)
        result = PhaseResult(
            name=name,
            seconds=round(seconds, 4),
            verdict=verdict,
            reply_code=reply.code if reply else None,
            enhanced_code=reply.enhanced if reply else None,
            text=reply.text if reply else "",
            timeout_param=param,
            timeout_value=timeout,
            detail=detail,
            cause_id=cause if verdict in _BAD or verdict is Verdict.SLOW else None,
        )
        self.phases.append(result)
        return result

    def _no_answer(self, name: str, seconds: float, timeout: float, wait: float, got: int) -> PhaseResult:
        param, doing = _PHASES[name].param, _PHASES[name].doing
        partial = f" ({got} bytes of a reply arrived)" if got else ""
        self.dead = True
        if wait < timeout:
            return self.record(name, seconds, Verdict.UNDECIDED, cause=_cause(name, "timeout"), detail=(
                f"no answer from {self.addr()} while {doing} within the {max(wait, 0):.3g} s left of the "
                f"budget{partial}; Postfix would wait {timeout:g} s ({param})"))
        return self.record(name, seconds, Verdict.WOULD_TIME_OUT, cause=_cause(name, "timeout"), detail=(
            f"conversation with {self.addr()} timed out while {doing}: nothing complete within "
            f"{timeout:g} s ({param}){partial}"))

    def _lost(self, name: str, seconds: float, why: str) -> PhaseResult:
        self.dead = True
        return self.record(name, seconds, Verdict.FAILED, cause=_cause(name, "lost"),
                           detail=f"lost connection with {self.addr()} while {_PHASES[name].doing}: {why}")

    # -- steps

    def connect(self) -> bool:
        _, timeout, wait = self._window(CONNECT)
        t0 = time.monotonic()
        try:
            self.conn = self._open(max(wait, 0.001))
        except ConnectFailed as exc:
            seconds = time.monotonic() - t0
            self.dead = True
            if exc.kind == "timeout":
                self._no_answer(CONNECT, seconds, timeout, wait, 0)
            elif exc.kind == "bind":  # Postfix: "warning: smtp_connect_addr: bind ...", 4.4.0 server configuration error
                self.record(CONNECT, seconds, Verdict.FAILED, cause="E03", detail=(
                    f"{exc}: Postfix defers with 4.4.0 'server configuration error' when smtp_bind_address_enforce "
                    "= yes (= no: it warns and sends from the default source address)"))
            else:
                self.record(CONNECT, seconds, Verdict.FAILED, detail=str(exc), cause=_CONNECT_CAUSE.get(exc.kind))
            return False
        self.reader = _Reader(_Plain(self.conn))
        seconds = time.monotonic() - t0
        try:  # a socket says where it connected from; an SSH channel does not
            local = self.conn.getsockname()  # type: ignore[attr-defined]
            self.local_address = f"{local[0]}:{local[1]}"
        except (AttributeError, OSError, IndexError, TypeError):
            self.local_address = None
        frm = f" from {self.local_address.rsplit(':', 1)[0]}" if self.local_address else ""
        self.record(CONNECT, seconds, _timed(seconds, timeout), detail=f"TCP connection{frm} in {seconds:.3f} s")
        return True

    def _open(self, wait: float) -> Connection:
        """target.connect, from self.source when one is set. bind_fallback: like Postfix with
        smtp_bind_address_enforce = no, a failed bind is a warning and the default source is used."""
        if self.source is None:
            return self.target.connect(self.host, self.port, wait)
        t0 = time.monotonic()
        try:
            return self.target.connect(self.host, self.port, wait, source=self.source)
        except ConnectFailed as exc:
            if exc.kind not in ("bind", "bind-unsupported") or not self.bind_fallback:
                raise
            if exc.kind == "bind":
                self.bind_error = str(exc)
                self.notes.append(f"{exc}: Postfix logs 'warning: smtp_connect_addr: bind {self.source}: ...' and, "
                                  "with smtp_bind_address_enforce = no, connects from the default source address; "
                                  "so did this probe")  # fmt: skip
            else:
                self.notes.append(f"{exc}; this probe used that default source, so a firewall or route tied to "
                                  f"{self.source} is not tested")  # fmt: skip
            return self.target.connect(self.host, self.port, max(wait - (time.monotonic() - t0), 0.001))

    def exchange(self, name: str, command: str | None, *, cap: float | None = None) -> Reply | None:
        """Send a command (None: just read, for the greeting) and judge the reply.
        None when the stream is gone (no answer, lost, hostile)."""
        assert self.reader is not None
        _, timeout, wait = self._window(name, cap)
        t0 = time.monotonic()
        deadline = t0 + max(wait, 0.0)
        self.reader.count = 0
        try:
            if command is not None:
                self.log.add("C", command)
                self.reader.stream.send(command.encode("utf-8") + b"\r\n", deadline)
            reply = self.reader.read_reply(deadline)
        except _Timeout:
            self._no_answer(name, time.monotonic() - t0, timeout, wait, self.reader.count)
            return None
        except _Lost as exc:
            got = f" after {self.reader.count} bytes of a reply" if self.reader.count else ""
            self._lost(name, time.monotonic() - t0, f"{exc}{got}")
            return None
        except _Hostile as exc:
            self.dead = True
            self.record(name, time.monotonic() - t0, Verdict.FAILED, cause=_cause(name, "lost"),
                        detail=f"{self.addr()} sent an unusable reply while {_PHASES[name].doing}: {exc}")
            return None
        seconds = time.monotonic() - t0
        for line in reply.lines[:20]:
            self.log.add("S", line)
        if reply.truncated:
            self.notes.append(f"a {name} reply line was longer than {MAX_LINE_KEEP} bytes and was cut "
                              "(Postfix cuts at line_length_limit, 2048, and reads on)")
        ok_class = reply.code // 100 == _PHASES[name].expect
        verdict = _timed(seconds, timeout) if ok_class else Verdict.FAILED
        detail = f"{reply.code} in {seconds:.3f} s" if ok_class else f"{self.addr()} said: {reply.text}"
        self.record(name, seconds, verdict, reply=reply, detail=detail, cause=None if ok_class else _cause(name, "reply"))
        return reply

    def send_pipelined(self, name: str, commands: Sequence[str]) -> bool:
        """Write several commands at once (the server offered PIPELINING), within the window of the
        first one's phase ``name``; False (and that phase recorded) when the write fails."""
        assert self.reader is not None
        _, timeout, wait = self._window(name)
        t0 = time.monotonic()
        for command in commands:
            self.log.add("C", command)
        try:
            self.reader.stream.send("".join(f"{c}\r\n" for c in commands).encode("utf-8"), t0 + max(wait, 0.0))
        except _Timeout:
            self._no_answer(name, time.monotonic() - t0, timeout, wait, 0)
            return False
        except _Lost as exc:
            self._lost(name, time.monotonic() - t0, str(exc))
            return False
        return True

    def handshake(self, context: ssl.SSLContext | None) -> bool:
        assert self.reader is not None and isinstance(self.reader.stream, _Plain)
        context = context or default_tls_context()
        raw = self.reader.stream
        _, timeout, wait = self._window(TLS_HANDSHAKE)
        t0 = time.monotonic()
        sni = self.host if context.check_hostname else None
        try:
            stream, info = _tls_handshake(raw, context, sni, t0 + max(wait, 0.0), self.reader.take_buffer())
        except _Timeout:
            self._no_answer(TLS_HANDSHAKE, time.monotonic() - t0, timeout, wait, 0)
            return False
        except _Lost as exc:
            self._lost(TLS_HANDSHAKE, time.monotonic() - t0, str(exc))
            return False
        except _TlsFailed as exc:
            self.dead = True
            self.record(TLS_HANDSHAKE, time.monotonic() - t0, Verdict.FAILED, cause="E19" if exc.verify else "E18",
                        detail=f"Cannot start TLS with {self.addr()}: handshake failure: {exc}")
            return False
        seconds = time.monotonic() - t0
        self.reader = _Reader(stream)
        self.tls = info
        self.log.add("-", f"TLS {info.protocol} {info.cipher}")
        self.record(TLS_HANDSHAKE, seconds, _timed(seconds, timeout), detail=f"{info.protocol} {info.cipher}")
        return True

    def quit(self, await_reply: bool = True) -> None:
        """QUIT and a short wait: Postfix skips the QUIT reply, so no answer is harmless. With
        ``await_reply=False`` (a session that ended normally: RSET or "." answered) QUIT is sent and
        the connection closed, as Postfix does (smtp_skip_quit_response = yes): waiting for the 221
        would cost one more round trip that Postfix never spends."""
        if self.dead or self.reader is None:
            return
        if self.quit_sent:  # pipelined: replies still in flight belong to other commands, none is read
            self.record(QUIT, 0.0, Verdict.OK, detail="sent pipelined after RSET; reply not awaited, as Postfix "
                        "does (smtp_skip_quit_response = yes)")  # fmt: skip
            return
        _, _, wait = self._window(QUIT, _QUIT_WAIT)
        t0 = time.monotonic()
        try:
            self.log.add("C", "QUIT")
            self.reader.stream.send(b"QUIT\r\n", t0 + max(wait, 0.0))
            if not await_reply:
                self.record(QUIT, time.monotonic() - t0, Verdict.OK,
                            detail="sent; reply not awaited, as Postfix does (smtp_skip_quit_response = yes)")
                return
            reply = self.reader.read_reply(t0 + max(wait, 0.0))
        except (_Timeout, _Lost, _Hostile) as exc:
            why = str(exc) or f"no reply within {max(wait, 0):.3g} s"
            self.record(QUIT, time.monotonic() - t0, Verdict.OK,
                        detail=f"{why}; harmless: Postfix does not wait for it (smtp_skip_quit_response = yes)")
            return
        self.log.add("S", reply.text)
        self.record(QUIT, time.monotonic() - t0, Verdict.OK, reply=reply, detail=f"{reply.code}")

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except OSError:
                pass

    def body(self, message: bytes) -> bool:
        """Write the message and the final ".": like smtp_data_xfer_timeout, a limit on each
        write's progress. The "." travels with the last chunk, as Postfix flushes it: alone
        it would wait for a delayed ACK (Nagle) and add ~40 ms to the end-of-data time."""
        assert self.reader is not None
        _, timeout, _ = self._window(BODY)
        t0 = time.monotonic()
        longest = 0.0
        payload = message + b".\r\n"
        for sent in range(0, len(payload), _BODY_CHUNK):
            _, _, wait = self._window(BODY)
            c0 = time.monotonic()
            try:
                self.reader.stream.send(payload[sent : sent + _BODY_CHUNK], c0 + max(wait, 0.0))
            except _Timeout:
                self._no_answer(BODY, time.monotonic() - t0, timeout, wait, 0)
                self.phases[-1] = replace(self.phases[-1], detail=self.phases[-1].detail
                                          + f"; the peer stopped taking data after {sent} of {len(payload)} bytes")
                return False
            except _Lost as exc:
                self._lost(BODY, time.monotonic() - t0, f"{exc} after {sent} of {len(payload)} bytes")
                return False
            longest = max(longest, time.monotonic() - c0)
        seconds = time.monotonic() - t0
        self.log.add("C", f"({len(message)} bytes of message)")
        self.log.add("C", ".")
        self.record(BODY, seconds, _timed(longest, timeout), cause="E08", detail=(
            f"{len(message)} bytes and '.' written in {seconds:.3f} s; longest wait for the peer to take data {longest:.3f} s"))
        return True

    def result(self) -> ProbeResult:
        bad = next((p for p in self.phases if p.verdict in _BAD), None)
        return ProbeResult(
            host=self.host,
            port=self.port,
            where=self.target.where,
            phases=tuple(self.phases),
            banner=self.banner.text if self.banner else "",
            masked_banner=self.masked,
            esmtp=self.esmtp,
            capabilities=self.capabilities,
            starttls_offered=self.starttls_offered,
            tls=self.tls,
            tls_capabilities=self.tls_capabilities,
            completed=self.completed,
            error=bad.detail if bad else None,
            notes=tuple(dict.fromkeys(self.notes)),
            transcript=tuple(self.log.lines),
            seconds=round(time.monotonic() - self.start, 4),
            source=self.source,
            local_address=self.local_address,
            bind_error=self.bind_error,
        )


def _timed(seconds: float, timeout: float) -> Verdict:
    return Verdict.SLOW if seconds > timeout / 2 else Verdict.OK


_CONNECT_CAUSE = {"refused": "E02", "unreachable": "E03"}


def _cause(name: str, how: str) -> str | None:
    """Catalog entry for a phase that went wrong; how = timeout | lost | reply."""
    phase = PHASE.get(name)
    if phase is None:
        return None
    if name == END_OF_DATA and how == "lost":
        return "E10"
    if name == CONNECT and how != "timeout":
        return None  # refused / unreachable: _CONNECT_CAUSE
    return phase.reply_cause if how == "reply" else phase.timeout_cause


# --- the conversation plan -------------------------------------------------------------


def _hello(s: _Session, phase: str, helo_name: str, esmtp: bool) -> tuple[str, ...] | None:
    """EHLO (HELO when ESMTP is off, or when EHLO gets a 5xx: Postfix's fallback).
    None when the conversation cannot go on."""
    if esmtp:
        reply = s.exchange(phase, f"EHLO {helo_name}")
        if reply is None:
            return None
        if reply.code // 100 == 2:
            s.esmtp = True
            return _capabilities(reply)
        if reply.code // 100 != 5:
            s.quit()
            return None
    reply = s.exchange(HELO, f"HELO {helo_name}")
    if reply is None or reply.code // 100 != 2:
        if reply is not None:
            s.quit()
        return None
    if esmtp:  # the 5xx to EHLO was survivable: Postfix goes on without ESMTP
        i = max(i for i, p in enumerate(s.phases) if p.name == phase)
        s.phases[i] = replace(s.phases[i], verdict=Verdict.OK, cause_id=None, detail=(
            f"EHLO refused ({s.phases[i].text}); HELO worked, as Postfix falls back: no ESMTP, so no STARTTLS, SIZE or PIPELINING"))
        s.notes.append("the server refuses EHLO: no ESMTP, so no STARTTLS")
    return ()


def _starttls(s: _Session, mode: bool | str, context: ssl.SSLContext | None, helo_name: str) -> bool:
    offered = s.esmtp and _offers(s.capabilities, "STARTTLS")
    # masked greeting: Postfix sends HELO, so whether STARTTLS exists stays unknown
    s.starttls_offered = None if s.masked else offered
    if mode is False:
        return True
    if not offered:
        if mode is True:
            s.record(STARTTLS, 0.0, Verdict.FAILED, cause="E16",
                     detail=f"TLS is required, but was not offered by host {s.addr()}")
            s.quit()
            return False
        if not s.masked:
            s.notes.append("STARTTLS not offered: Postfix at security level may sends in plaintext; "
                           "a level of encrypt or stricter would defer (E16)")
        return True
    reply = s.exchange(STARTTLS, "STARTTLS")
    if reply is None:
        return False
    if reply.code // 100 != 2:
        if mode is True:
            s.phases[-1] = replace(s.phases[-1], detail=f"TLS is required, but host {s.addr()} "
                                   f"refused to start TLS: {reply.text}")
            s.quit()
            return False
        s.phases[-1] = replace(s.phases[-1], cause_id=None)
        s.notes.append(f"the server refused STARTTLS ({reply.text}): Postfix at level may goes on in plaintext")
        return True
    if not s.handshake(context):
        return False
    caps = _hello(s, EHLO_TLS, helo_name, True)
    if caps is None:
        return False
    s.tls_capabilities = caps
    return True


def _transaction(s: _Session, mail_from: str, rcpt_to: str | None, payload: bytes | None) -> bool:
    if payload is None and s.esmtp and _offers(s.tls_capabilities if s.tls else s.capabilities, "PIPELINING"):
        return _pipelined_probe(s, mail_from, rcpt_to)
    reply = s.exchange(MAIL, f"MAIL FROM:<{mail_from}>")
    if reply is None or reply.code // 100 != 2:
        return False
    if rcpt_to is not None:
        reply = s.exchange(RCPT, f"RCPT TO:<{rcpt_to}>")
        if reply is None or reply.code // 100 != 2:
            return False
    if payload is None:
        reply = s.exchange(RSET, "RSET")
        return reply is not None
    reply = s.exchange(DATA, "DATA")
    if reply is None or reply.code != 354:
        return False
    if not s.body(payload):
        return False
    return s.exchange(END_OF_DATA, None) is not None  # the "." went with the body


def _pipelined_probe(s: _Session, mail_from: str, rcpt_to: str | None) -> bool:
    """MAIL, [RCPT], RSET and QUIT in one write, as Postfix's smtp(8) sends an address probe to a server
    that offers PIPELINING (smtp_proto.c: the sender runs ahead of the replies; a trace-only request
    ends with RSET, then QUIT, whose reply it skips). Each reply is still read and judged on its own,
    against its own timeout from the moment the previous one arrived, as Postfix reads them: one round
    trip for the transaction instead of three. A rejected MAIL or RCPT ends the reading there (Postfix
    ignores what follows a rejected MAIL); QUIT is already on its way."""
    steps = [(MAIL, f"MAIL FROM:<{mail_from}>")]
    if rcpt_to is not None:
        steps.append((RCPT, f"RCPT TO:<{rcpt_to}>"))
    steps.append((RSET, "RSET"))
    if not s.send_pipelined(MAIL, [command for _, command in steps] + ["QUIT"]):
        return False
    s.quit_sent = True
    for name, _ in steps:
        reply = s.exchange(name, None)
        if reply is None:
            return False
        if reply.code // 100 != 2:
            return name == RSET  # a refused RSET: the probe got its answers; Postfix would just not reuse it
    return True


def _greet(s: _Session, port: int, wrappermode: bool) -> Reply | None:
    reply = s.exchange(BANNER, None)
    if reply is None:
        _explain_silence(s, port, wrappermode)
        return None
    s.banner = reply
    seconds = s.phases[-1].seconds
    if reply.code // 100 == 2 and (seconds >= _TARPIT_SECONDS or s.phases[-1].verdict is Verdict.SLOW):
        s.phases[-1] = replace(s.phases[-1], cause_id="E04")
        s.notes.append(f"the greeting came after {seconds:.1f} s: a greeting delay (tarpit, postscreen, "
                       f"overload), not a dead server; Postfix waits {s.phases[-1].timeout_value:g} s (smtp_helo_timeout)")
    if is_masked_banner(reply.full):
        s.masked = True
        s.notes.append("masked greeting: an SMTP-inspecting firewall (Cisco PIX/ASA fixup) sits in the path; "
                       "Postfix turns on its PIX workarounds (disable_esmtp, delay_dotcrlf), and mail younger than "
                       "smtp_pix_workaround_threshold_time (500 s) can time out at end of data")
    return reply


def _explain_silence(s: _Session, port: int, wrappermode: bool) -> None:
    last = s.phases[-1]
    if last.name != BANNER:
        return
    if last.verdict is Verdict.FAILED:
        if s.reader is not None and not s.reader.count:
            s.notes.append("the server closed the connection without a greeting: a policy or rate-limit drop, "
                           "or an overloaded server")
        return
    if s.reader is not None and s.reader.count:
        s.notes.append("the greeting trickled in and was still incomplete at the deadline")
    elif port in SMTPS_PORTS and not wrappermode:
        s.notes.append(f"port {port} is SMTPS: the server waits for a TLS ClientHello while the client waits for "
                       "its greeting; set smtp_tls_wrappermode = yes and smtp_tls_security_level = encrypt, "
                       "or use port 587 with STARTTLS")
    else:
        s.notes.append("connected, but the server sent nothing at all: a dead or overloaded server, or a "
                       "firewall/proxy accepting connections with nothing behind it")


def _converse(s: _Session, *, helo_name: str, mail_from: str, rcpt_to: str | None, starttls: bool | str,
              context: ssl.SSLContext | None, wrappermode: bool, payload: bytes | None) -> None:
    if not s.connect():
        return
    if wrappermode and not s.handshake(context):
        return
    banner = _greet(s, s.port, wrappermode)
    if banner is None:
        return
    if banner.code // 100 != 2:
        s.quit()
        return
    caps = _hello(s, EHLO, helo_name, esmtp=not s.masked)  # masked: Postfix's disable_esmtp workaround
    if caps is None:
        return
    s.capabilities = caps
    if not _starttls(s, False if wrappermode else starttls, context, helo_name):
        return
    ok = _transaction(s, mail_from, rcpt_to, payload)
    s.completed = ok
    s.quit(await_reply=not ok)  # Postfix reads no QUIT reply after a normal end (smtp_skip_quit_response)


# --- public entry points ---------------------------------------------------------------

_BAD_ARG = re.compile(r"[\x00-\x1f\x7f<>]")


def _check_args(host: str, port: int, helo_name: str, mail_from: str, rcpt_to: str | None,
                starttls: bool | str) -> None:
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise UsageError(f"invalid port {port!r}")
    if not host or _BAD_ARG.search(host) or " " in host:
        raise UsageError(f"invalid host {host!r}")
    if not helo_name or _BAD_ARG.search(helo_name) or " " in helo_name:
        raise UsageError(f"invalid HELO name {helo_name!r}")
    for label, value in (("sender", mail_from), ("recipient", rcpt_to or "")):
        if _BAD_ARG.search(value):
            raise UsageError(f"invalid {label} address {value!r}")
    if starttls not in (True, False, "auto"):
        raise UsageError(f"starttls must be True, False or 'auto', not {starttls!r}")


def probe_address(
    target: Target,
    host: str,
    port: int,
    *,
    helo_name: str,
    mail_from: str = "",
    rcpt_to: str | None = None,
    timeouts: PhaseTimeouts = PhaseTimeouts(),
    starttls: bool | Literal["auto"] = "auto",
    tls_context: ssl.SSLContext | None = None,
    total_budget: float | None = None,
    wrappermode: bool = False,
    source: str | None = None,
    bind_fallback: bool = False,
) -> ProbeResult:
    """Talk SMTP to host:port from the target's vantage point, up to RCPT TO (only when
    rcpt_to is given), then RSET and QUIT: nothing is ever sent after RCPT. A server that offers
    PIPELINING gets MAIL..QUIT in one write, as Postfix sends it an address probe (each reply is
    still timed on its own); QUIT's reply is never waited for after a normal end, as in Postfix.

    starttls: True = required (like smtp_tls_security_level = encrypt), "auto" = when
    offered (level may), False = never. wrappermode: TLS from the first byte (port 465).
    total_budget bounds the whole conversation; each phase waits min(its Postfix
    timeout, what is left). source: connect from that local address (smtp_bind_address);
    bind_fallback: when it cannot be bound, note it and connect from the default source
    (smtp_bind_address_enforce = no) instead of failing the connect phase."""
    _check_args(host, port, helo_name, mail_from, rcpt_to, starttls)
    s = _Session(target, host, port, timeouts, total_budget, source, bind_fallback)
    try:
        _converse(s, helo_name=helo_name, mail_from=mail_from, rcpt_to=rcpt_to, starttls=starttls,
                  context=tls_context, wrappermode=wrappermode, payload=None)
    finally:
        s.close()
    return s.result()


# --- findings --------------------------------------------------------------------------


def _probe_findings(r: ProbeResult) -> list[Finding]:
    evidence = (Evidence(f"SMTP probe {r.host}:{r.port}", "\n".join(r.transcript[-30:]), r.where),)
    values = {
        "host": r.host,
        "port": r.port,
        "phases": {p.name: {"seconds": p.seconds, "verdict": p.verdict.value, "reply_code": p.reply_code,
                            "timeout_param": p.timeout_param, "timeout": p.timeout_value} for p in r.phases},
        "masked_banner": r.masked_banner,
        "starttls_offered": r.starttls_offered,
        "tls_protocol": r.tls.protocol if r.tls else None,
        "tls_cipher": r.tls.cipher if r.tls else None,
        "notes": list(r.notes),
    }
    worst = max(r.phases, key=lambda p: _RANK[p.verdict], default=None)
    if worst is None or worst.verdict is Verdict.OK:
        timing = ", ".join(f"{p.name} {p.seconds:.2f} s" for p in r.phases)
        main = Finding(CHECK_ID, Severity.OK, f"{r.host}:{r.port} talks SMTP normally ({timing})", None, evidence, values)
    else:
        label = f"{worst.name}: {worst.verdict.value}"
        main = Finding(CHECK_ID, _SEVERITY[worst.verdict], f"{r.host}:{r.port} {label}: {worst.detail}",
                       worst.cause_id, evidence, values)
    out = [main]
    if r.bind_error:  # the connect phase itself failed only when there was no fallback
        out.append(Finding(CHECK_ID, Severity.WARNING, f"{r.host}:{r.port}: {r.bind_error}: Postfix logs a warning "
                           "and sends from the default source address (smtp_bind_address_enforce = no; = yes defers "
                           "with 4.4.0): fix smtp_bind_address[6] or put the address on this host", "E03", evidence))  # fmt: skip
    if r.masked_banner:
        out.append(Finding(CHECK_ID, Severity.WARNING,
                           f"{r.host}:{r.port}: masked greeting {r.banner!r}: an SMTP-inspecting firewall "
                           "(PIX/ASA fixup) in the path; end-of-data timeouts likely", "E09", evidence))
    if r.starttls_offered is False:
        out.append(Finding(CHECK_ID, Severity.INFO, f"{r.host}:{r.port} does not offer STARTTLS "
                           "(a problem only where Postfix requires TLS: E16)", None, evidence))
    return out


def to_findings(result: ProbeResult | LadderVerdict) -> list[Finding]:
    """Findings for diagnose: a probe gives its worst phase (+ masked banner, no STARTTLS);
    a ladder verdict gives one finding with its cause (checks.smtp.ladder, loaded only then)."""
    if isinstance(result, ProbeResult):
        return _probe_findings(result)
    from checks.smtp.ladder import _ladder_findings

    return _ladder_findings(result)
