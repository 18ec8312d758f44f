"""qmgr's retry schedule as a pure model: when deferred mail is tried again, warned about
and returned. Reference: postfix-deferrals.md §2.3; src/qmgr/qmgr_active.c,
src/cleanup/cleanup_envelope.c.

What Postfix does [V]:
  * The first attempt follows arrival at once (the incoming queue is scanned on demand).
  * When an attempt ends with recipients deferred, qmgr computes ("arrival" is the queue
    file's create_time, normally the arrival time postqueue lists)
        delay = now - arrival, clamped first to <= maximal_backoff_time, then to
        >= minimal_backoff_time (so the minimum wins when the two are inverted),
    and sets the queue file's mtime to now + delay.
  * A deferred-queue scan runs every queue_run_delay and takes the files whose mtime has
    passed: an attempt starts at the first scan after its file became eligible.
  * Expiry is checked when an attempt ENDS: now >= arrival + maximal_queue_lifetime
    (bounce_queue_lifetime for the null sender) -> "status=expired, returned to sender".
    So the message goes back at the end of the first attempt at or after the lifetime,
    which can be up to one backoff (plus one scan) after arrival + lifetime. With a
    lifetime of 0 the first failed attempt returns it: "try once". A message forced to
    expire (postsuper -e/-f, 3.5+) is returned at the end of its next attempt.
  * The delay warning (delay_warning_time > 0) is sent once, at the end of the first
    deferred attempt with now >= arrival + delay_warning_time - 1 that does not expire;
    cleanup does not arm it for null-sender mail.

What this model assumes [I]:
  * Scan lag: scans are every queue_run_delay at a phase we do not know, so a file is
    picked up somewhere in [eligible, eligible + queue_run_delay). lag="none" takes the
    lower end, lag="max" the upper end. The next eligible time only grows with the attempt
    time, so attempt k of the real schedule lies between attempt k of these two chains, and
    the number of attempts between their counts. The expiry time is NOT monotonic that way
    (a later chain can cross the lifetime at an earlier attempt): it lies in
    [arrival + lifetime, arrival + lifetime + one backoff + one scan] (+ the attempt's
    duration). scan_phase=t models scans at exactly t + k * queue_run_delay. All of this
    assumes the active queue has room (qmgr_message_active_limit) and qmgr is running;
    otherwise mail waits longer.
  * attempt_duration (default 0): how long each attempt takes before it is deferred
    (connect timeouts, 600 s end-of-data waits...). Its end is "now" above.
  * Dead-destination suspension and postqueue -f / -i / postsuper -r are not modelled:
    a flush ignores the mtime and starts an attempt at once.

With the defaults the attempts fall at arrival +0, +5, +10, +20, +40, +80 min, then every
4000 s (~67 min), and a message is returned after 113 attempts, 800 s after the 5 days.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from checks.errors import InputError
from checks.postfix.postconf import TIME_UNITS, PostfixConfig, parse_time

__all__ = [
    "DEFAULTS",
    "SEED_PROPOSAL",
    "Attempt",
    "Forecast",
    "RetrySettings",
    "Timeline",
    "forecast",
    "last_attempt_from_mtime",
    "next_delay",
    "next_scan",
    "risky_settings",
    "timeline",
]

PARAMETERS = (
    "minimal_backoff_time",
    "maximal_backoff_time",
    "queue_run_delay",
    "maximal_queue_lifetime",
    "bounce_queue_lifetime",
    "delay_warning_time",
)
# Postfix documents queue_run_delay and the two backoff times as non-zero; qmgr refuses to
# start otherwise. The model needs them >= 1 s to make progress.
_NONZERO = ("minimal_backoff_time", "maximal_backoff_time", "queue_run_delay")
Lag = Literal["none", "max"]


@dataclass(frozen=True, slots=True)
class RetrySettings:
    """The six parameters that shape the schedule, in seconds (Postfix 2.4+ defaults)."""

    minimal_backoff_time: float = 300.0
    maximal_backoff_time: float = 4000.0
    queue_run_delay: float = 300.0
    maximal_queue_lifetime: float = 5 * 86400.0
    bounce_queue_lifetime: float = 5 * 86400.0
    delay_warning_time: float = 0.0  # 0 = no warning

    def __post_init__(self) -> None:
        for name in PARAMETERS:
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
                raise InputError(f"{name} must be a non-negative number of seconds, not {value!r}")

    @classmethod
    def from_config(cls, config: PostfixConfig | Mapping[str, str], service: str | None = None) -> RetrySettings:
        """From a PostfixConfig (its units, $references and -o overrides of `service`) or a
        {name: raw value} mapping such as parse_postconf() output; missing names keep the defaults."""
        values: dict[str, float] = {}
        if isinstance(config, PostfixConfig):
            for name in PARAMETERS:
                if config.effective(name, service) is not None:
                    values[name] = config.time(name, service)
        elif isinstance(config, Mapping):
            for name in PARAMETERS:
                if name in config:
                    values[name] = parse_time(config[name], TIME_UNITS.get(name, "s"), config, name=name)
        else:
            raise InputError(f"cannot read retry settings from {type(config).__name__}")
        return cls(**values)

    def lifetime(self, null_sender: bool = False) -> float:
        return self.bounce_queue_lifetime if null_sender else self.maximal_queue_lifetime

    def check(self) -> None:
        """InputError when qmgr itself would refuse these values."""
        for name in _NONZERO:
            if getattr(self, name) < 1:
                raise InputError(f"{name} = {getattr(self, name):g}s: Postfix requires a non-zero value")


DEFAULTS = RetrySettings()
# The seed admin's blog proposal for faster retries (postfix-deferrals.md §2.2).
SEED_PROPOSAL = RetrySettings(
    minimal_backoff_time=120.0,
    maximal_backoff_time=600.0,
    queue_run_delay=100.0,
    maximal_queue_lifetime=86400.0,
    bounce_queue_lifetime=86400.0,
)


def next_delay(age: float, settings: RetrySettings) -> float:
    """qmgr's backoff after a deferred attempt that ended `age` seconds after arrival.
    Same order as qmgr_active.c: the maximum first, then the minimum."""
    return max(min(age, settings.maximal_backoff_time), settings.minimal_backoff_time)


def last_attempt_from_mtime(arrival: float, mtime: float, settings: RetrySettings) -> float:
    """When the attempt that deferred a file ended, from the mtime qmgr gave it
    (mtime = end + next_delay(end - arrival)). The map is strictly increasing, so the
    inverse is unique. Meaningful only for files qmgr deferred (not after postsuper -r,
    a manual touch, or for mail still in incoming/hold)."""
    lo, hi = settings.minimal_backoff_time, settings.maximal_backoff_time
    if hi < lo:  # the minimum always wins
        return mtime - lo
    if mtime - lo - arrival <= lo:
        return mtime - lo
    if mtime - hi - arrival >= hi:
        return mtime - hi
    return (mtime + arrival) / 2.0


@dataclass(frozen=True, slots=True)
class Attempt:
    number: int  # 1 = the first delivery attempt
    at: float  # when it starts
    eligible_at: float  # when its queue file became eligible (the mtime qmgr set)
    ends: float  # at + attempt_duration: when qmgr looks at expiry and the warning
    outcome: str  # "deferred", "warned" (deferred + delay warning sent), "expired"
    next_eligible: float | None  # mtime set after it; None for the expiring attempt


@dataclass(frozen=True, slots=True)
class Timeline:
    """A message's attempts if every one is deferred. attempt_count includes the expiring
    attempt: it is a real delivery attempt, and mail it delivers is not returned."""

    arrival: float
    attempts: tuple[Attempt, ...]  # the first max_listed attempts (all of them when complete)
    lifetime: float  # the lifetime that applies (bounce_queue_lifetime for <>)
    warning_at: float | None  # when the delay warning goes out; None: never
    expires_at: float  # end of the attempt that returns the mail
    attempt_count: int

    @property
    def complete(self) -> bool:
        """Whether `attempts` lists every attempt (see max_listed)."""
        return len(self.attempts) == self.attempt_count

    def offsets(self) -> tuple[float, ...]:
        """Listed attempt start times relative to arrival, in seconds."""
        return tuple(a.at - self.arrival for a in self.attempts)

    def describe(self, limit: int = 8) -> str:
        """'+0, +5m, +10m, ...' for reports."""
        parts = [_short(o) for o in self.offsets()[:limit]]
        if self.attempt_count > limit:
            parts.append("...")
        return ", ".join(parts)


def _short(seconds: float) -> str:
    """'+5m', '+1h20m', '+2d3h': exact where it matters (a schedule's steps are whole
    seconds) and in one style, the two largest units, rather than '+80m' next to '+2.4h'."""
    if seconds == 0:
        return "+0"
    if seconds < 60 and seconds != int(seconds):
        return f"+{seconds:g}s"
    left = int(round(seconds))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, left = divmod(left, size)
        if count:
            parts.append(f"{count}{unit}")
    return "+" + "".join(parts[:2])


def _pickup(eligible: float, settings: RetrySettings, lag: Lag, scan_phase: float | None) -> float:
    qrd = settings.queue_run_delay
    if scan_phase is not None:
        k = math.ceil((eligible - scan_phase) / qrd)
        return scan_phase + k * qrd
    return eligible + (qrd if lag == "max" else 0.0)


def _first_step(start: float, period: float, duration: float, target: float) -> int:
    """The smallest j >= 1 with start + j * period + duration >= target."""
    j = max(1, math.ceil((target - duration - start) / period))
    while j > 1 and start + (j - 1) * period + duration >= target:  # float rounding, both ways
        j -= 1
    while start + j * period + duration < target:
        j += 1
    return j


def timeline(
    settings: RetrySettings = DEFAULTS,
    arrival: float = 0.0,
    *,
    null_sender: bool = False,
    forced_expire: bool = False,
    first_attempt: float | None = None,
    first_eligible: float | None = None,
    attempt_duration: float = 0.0,
    lag: Lag = "none",
    scan_phase: float | None = None,
    warning_pending: bool = True,
    max_listed: int = 1000,
) -> Timeline:
    """Every attempt from `first_attempt` (default: arrival) until the mail is returned,
    assuming each attempt is deferred. See the module docstring for the lag choices.
    first_eligible: when the first of these attempts became eligible (its mtime), if
    it started later. warning_pending=False when the delay warning was already sent.

    Once the backoff has reached its maximum the attempts are periodic, and the rest of
    the schedule (count, warning, expiry) is computed rather than stepped through, so a
    1 s backoff over a 5-day lifetime costs no more than the defaults; only the first
    `max_listed` attempts are materialised."""
    settings.check()
    if attempt_duration < 0 or not math.isfinite(attempt_duration):
        raise InputError(f"attempt_duration must be >= 0, not {attempt_duration!r}")
    duration = attempt_duration
    lifetime = settings.lifetime(null_sender)
    expire_at = arrival + lifetime
    warn_at = arrival + settings.delay_warning_time - 1  # qmgr: now >= warn_time - 1
    warn_pending = warning_pending and settings.delay_warning_time > 0 and not null_sender
    steady_delay = max(settings.minimal_backoff_time, settings.maximal_backoff_time)
    at = arrival if first_attempt is None else first_attempt
    eligible = at if first_eligible is None else min(first_eligible, at)
    attempts: list[Attempt] = []
    warning_sent: float | None = None
    number = 1

    def listed(attempt: Attempt) -> None:
        if len(attempts) < max_listed:
            attempts.append(attempt)

    while True:
        ends = at + duration
        if forced_expire or ends >= expire_at:
            if len(attempts) < max_listed:
                attempts.append(Attempt(number, at, eligible, ends, "expired", None))
            return Timeline(arrival, tuple(attempts), lifetime, warning_sent, ends, number)
        outcome = "deferred"
        if warn_pending and ends >= warn_at:
            outcome, warn_pending, warning_sent = "warned", False, ends
        delay = next_delay(ends - arrival, settings)
        next_eligible = ends + delay
        if len(attempts) < max_listed:  # a forecast asks for counts only: build no records then
            attempts.append(Attempt(number, at, eligible, ends, outcome, next_eligible))
        next_at = _pickup(next_eligible, settings, lag, scan_phase)
        # The delay stays at its maximum from here on (the age only grows), and pickups on the
        # scan grid are a fixed whole number of scans apart: the rest is periodic.
        if delay == steady_delay and (scan_phase is None or number > 1):
            break
        at, eligible, number = next_at, next_eligible, number + 1

    period = next_at - at
    last_step = _first_step(at, period, duration, expire_at)
    warn_step = _first_step(at, period, duration, warn_at) if warn_pending else None
    if warn_step is not None and warn_step < last_step:
        warning_sent = at + warn_step * period + duration
    for j in range(1, min(last_step, max_listed - len(attempts)) + 1):
        start = at + j * period
        end = start + duration
        if j == last_step:
            listed(Attempt(number + j, start, start - (next_at - next_eligible), end, "expired", None))
        else:
            listed(Attempt(number + j, start, start - (next_at - next_eligible), end,
                           "warned" if j == warn_step else "deferred", end + steady_delay))
    expires = at + last_step * period + duration
    return Timeline(arrival, tuple(attempts), lifetime, warning_sent, expires, number + last_step)


@dataclass(frozen=True, slots=True)
class Forecast:
    """What happens next to one deferred message, if every attempt fails."""

    next_attempt_earliest: float
    next_attempt_latest: float
    expires_at: float  # estimate: the no-lag chain's return time
    expires_at_earliest: float  # bounds that hold whatever the scan phase
    expires_at_latest: float
    lifetime_ends: float  # arrival + the applicable lifetime
    remaining_attempts: tuple[int, int]  # (fewest, most) attempts left, the expiring one included
    last_attempt: float | None  # estimated end of the attempt that deferred it (from mtime)
    warning_at: float | None  # estimate of when the delay warning goes out; None: none pending
    overdue: bool  # eligible for over a scan interval and not picked up: qmgr stuck or busy
    expiring: bool  # the next attempt returns it if it fails
    earliest: Timeline = field(repr=False)  # the no-lag chain
    latest: Timeline = field(repr=False)  # the chain with a full scan of lag before every attempt


def next_scan(mtime: float, now: float, queue_run_delay: float) -> tuple[float, float, bool]:
    """(earliest, latest, overdue): when a queue scan takes a deferred message whose queue file's
    mtime is `mtime` (eligible from then on), seen at `now`."""
    if mtime > now:
        return mtime, mtime + queue_run_delay, False
    # Eligible already: the next scan takes it, unless one should have done so by now.
    overdue = now > mtime + queue_run_delay
    return now, (now + queue_run_delay if overdue else max(now, mtime + queue_run_delay)), overdue


def forecast(
    message_arrival: float,
    mtime: float,
    now: float,
    settings: RetrySettings = DEFAULTS,
    *,
    null_sender: bool = False,
    forced_expire: bool = False,
    attempt_duration: float = 0.0,
    max_listed: int = 1000,
) -> Forecast:
    """Next attempt and expiry of a message in the DEFERRED queue, from its arrival time,
    its queue file's mtime (the time qmgr made it eligible again) and the current time."""
    settings.check()
    qrd = settings.queue_run_delay
    earliest, latest, overdue = next_scan(mtime, now, qrd)
    estimate = last_attempt_from_mtime(message_arrival, mtime, settings)
    last = estimate if estimate >= message_arrival else None  # else mtime was not set by a deferral
    warn_time = message_arrival + settings.delay_warning_time
    warning_pending = (
        settings.delay_warning_time > 0
        and not null_sender
        and not (last is not None and last >= warn_time - 1)
    )
    # Only counts, the warning and the expiry are needed here: listing the attempts of every
    # queued message would cost 10,000 x 2 x dozens of records for a big queue.
    common = dict(null_sender=null_sender, forced_expire=forced_expire, attempt_duration=attempt_duration,
                  warning_pending=warning_pending, max_listed=max_listed)
    early = timeline(settings, message_arrival, first_attempt=earliest, first_eligible=mtime, lag="none", **common)  # type: ignore[arg-type]
    late = timeline(settings, message_arrival, first_attempt=latest, first_eligible=mtime, lag="max", **common)  # type: ignore[arg-type]
    lifetime_ends = message_arrival + settings.lifetime(null_sender)
    expiring = forced_expire or earliest + attempt_duration >= lifetime_ends
    if expiring:
        expiry_bounds = (earliest + attempt_duration, latest + attempt_duration)
    else:
        # The attempt that returns the mail ends at or after the lifetime; the one before it
        # ended earlier, so at most one backoff and one scan (and one attempt) separate them.
        backoff = max(settings.minimal_backoff_time, settings.maximal_backoff_time)
        expiry_bounds = (lifetime_ends, max(latest, lifetime_ends + backoff + qrd) + attempt_duration)
    return Forecast(
        next_attempt_earliest=earliest,
        next_attempt_latest=latest,
        expires_at=early.expires_at,
        expires_at_earliest=expiry_bounds[0],
        expires_at_latest=expiry_bounds[1],
        lifetime_ends=lifetime_ends,
        remaining_attempts=(late.attempt_count, early.attempt_count),
        last_attempt=last,
        warning_at=early.warning_at,
        overdue=overdue,
        expiring=expiring,
        earliest=early,
        latest=late,
    )


def risky_settings(settings: RetrySettings) -> list[tuple[str, str]]:
    """(parameter, why) for backoff/lifetime values that work against the operator."""
    s = settings
    out: list[tuple[str, str]] = []
    for name in _NONZERO:
        if getattr(s, name) < 1:
            out.append((name, "must be non-zero: the queue manager refuses to start with 0"))
    if s.queue_run_delay > s.minimal_backoff_time:
        out.append((
            "queue_run_delay",
            f"{s.queue_run_delay:g}s is longer than minimal_backoff_time ({s.minimal_backoff_time:g}s): deferred "
            "mail waits for the next queue scan, so retries come later than the backoff says "
            "(postconf(5): queue_run_delay should be <= minimal_backoff_time)",
        ))
    if s.maximal_backoff_time < s.minimal_backoff_time:
        out.append((
            "maximal_backoff_time",
            f"{s.maximal_backoff_time:g}s is below minimal_backoff_time ({s.minimal_backoff_time:g}s): the maximum "
            "is ignored and every retry waits minimal_backoff_time",
        ))
    for name in ("maximal_queue_lifetime", "bounce_queue_lifetime"):
        value = getattr(s, name)
        who = "null-sender (bounce) mail" if name == "bounce_queue_lifetime" else "mail"
        if value == 0:
            out.append((name, f"0 means try once: {who} that meets one temporary failure is returned at once"))
        elif value < s.maximal_backoff_time and value >= 1:
            out.append((
                name,
                f"{value:g}s is shorter than maximal_backoff_time ({s.maximal_backoff_time:g}s): {who} gets few "
                "retries and may be returned up to one backoff after the lifetime",
            ))
    if s.delay_warning_time > 0 and s.delay_warning_time >= s.maximal_queue_lifetime:
        out.append((
            "delay_warning_time",
            f"{s.delay_warning_time:g}s is not shorter than maximal_queue_lifetime "
            f"({s.maximal_queue_lifetime:g}s): senders hear of the delay only when the mail is returned",
        ))
    if all(getattr(s, n) >= 1 for n in _NONZERO) and s.maximal_queue_lifetime >= 1:
        count = timeline(s, 0.0).attempt_count
        if count < 4:
            out.append((
                "maximal_queue_lifetime",
                f"only {count} delivery attempt(s) fit in the lifetime with these backoff times: "
                "a short outage at the destination returns the mail",
            ))
    return out
