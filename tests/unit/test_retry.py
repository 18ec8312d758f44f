"""qmgr's retry schedule (postfix-deferrals.md §2.3): the documented shapes, the seed
admin's proposal, forecasts from a queue file's mtime, and properties of the model."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import assume, given, settings, strategies as st

from checks.errors import InputError
from checks.postfix.postconf import PostfixConfig, parse_postconf
from checks.postfix.retry import (
    DEFAULTS,
    SEED_PROPOSAL,
    RetrySettings,
    forecast,
    last_attempt_from_mtime,
    next_delay,
    risky_settings,
    timeline,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "postconf"
MIN, HOUR, DAY = 60, 3600, 86400


# ---------------------------------------------------------------- documented shapes


def test_default_schedule_doubles_then_settles_at_maximal_backoff():
    t = timeline(DEFAULTS)
    offsets = t.offsets()
    # arrival, then +5, +10, +20, +40, +80 min (TUNING_README), then every 4000 s (~67 min)
    assert offsets[:6] == (0, 5 * MIN, 10 * MIN, 20 * MIN, 40 * MIN, 80 * MIN)
    assert {b - a for a, b in zip(offsets[5:], offsets[6:])} == {4000}
    assert t.describe(6) == "+0, +5m, +10m, +20m, +40m, +1h20m, ..."
    # returned at the end of the first attempt at or after 5 days: 800 s late, attempt 113
    assert t.expires_at == 5 * DAY + 800
    assert t.attempt_count == 113
    assert [a.outcome for a in t.attempts].count("expired") == 1 and t.attempts[-1].outcome == "expired"
    assert t.warning_at is None and t.complete


def test_default_schedule_with_scans_every_queue_run_delay():
    # scans at arrival + k * 300 s: the doubling part is unchanged (multiples of 300),
    # 4000 s backoffs wait for the next scan: every 4200 s instead
    t = timeline(DEFAULTS, scan_phase=0.0)
    offsets = t.offsets()
    assert offsets[:7] == (0, 300, 600, 1200, 2400, 4800, 9000)
    assert {b - a for a, b in zip(offsets[6:], offsets[7:])} == {4200}
    assert all(o % 300 == 0 for o in offsets)


def test_seed_admin_proposal():
    # minimal_backoff_time 120s, maximal_backoff_time 600s, queue_run_delay 100s, lifetimes 24h
    t = timeline(SEED_PROPOSAL)
    offsets = t.offsets()
    assert offsets[:6] == (0, 120, 240, 480, 960, 1560)
    assert {b - a for a, b in zip(offsets[5:], offsets[6:])} == {600}
    assert t.expires_at == 86760  # 1560 + 142 * 600: the first attempt at or after 24h
    assert t.attempt_count == 148
    scanned = timeline(SEED_PROPOSAL, scan_phase=0.0).offsets()
    assert scanned[:6] == (0, 200, 400, 800, 1400, 2000)  # 120 s backoff waits for the 200 s scan
    assert risky_settings(SEED_PROPOSAL) == []
    # against the defaults: 147 attempts in the first day instead of 26, and mail returns 4 days sooner
    day_one_default = sum(1 for o in timeline(DEFAULTS).offsets() if o < DAY)
    assert (day_one_default, sum(1 for o in offsets if o < DAY)) == (26, 147)


def test_null_sender_uses_bounce_queue_lifetime_and_gets_no_warning():
    s = RetrySettings(bounce_queue_lifetime=HOUR, delay_warning_time=600)
    t = timeline(s, 1000.0, null_sender=True)
    assert t.lifetime == HOUR and t.expires_at == 1000 + 4800 and t.attempt_count == 6
    assert t.warning_at is None
    assert timeline(s, 1000.0).warning_at == 1000 + 600


def test_delay_warning_goes_out_once_at_the_end_of_an_attempt():
    t = timeline(RetrySettings(delay_warning_time=4 * HOUR))
    warned = [a for a in t.attempts if a.outcome == "warned"]
    assert len(warned) == 1
    assert warned[0].ends == t.warning_at == 16800  # first attempt end >= 4h - 1s: 4800, 8800, 12800, 16800
    # qmgr compares with warn_time - 1
    assert timeline(RetrySettings(delay_warning_time=16801)).warning_at == 16800
    assert timeline(RetrySettings(delay_warning_time=16802)).warning_at == 20800


@pytest.mark.parametrize("lifetime_field", ["maximal_queue_lifetime", "bounce_queue_lifetime"])
def test_lifetime_zero_means_try_once(lifetime_field):
    s = RetrySettings(**{lifetime_field: 0.0})
    t = timeline(s, 50.0, null_sender=lifetime_field == "bounce_queue_lifetime")
    assert t.attempt_count == 1 and t.expires_at == 50.0 and t.attempts[0].outcome == "expired"


def test_forced_expire_returns_at_the_next_attempt():
    t = timeline(DEFAULTS, forced_expire=True, first_attempt=1234.0)
    assert (t.attempt_count, t.expires_at) == (1, 1234.0)


def test_inverted_backoffs_always_wait_the_minimum():
    s = RetrySettings(minimal_backoff_time=1000, maximal_backoff_time=200, maximal_queue_lifetime=HOUR)
    offsets = timeline(s).offsets()
    assert {b - a for a, b in zip(offsets, offsets[1:])} == {1000}
    assert ("maximal_backoff_time", ) == tuple(p for p, _ in risky_settings(s) if p == "maximal_backoff_time")


def test_attempt_duration_counts_from_the_end_of_the_attempt():
    # an end-of-data timeout: every attempt takes 600 s before it is deferred
    t = timeline(DEFAULTS, attempt_duration=600)
    assert t.offsets()[:4] == (0, 600 + 600, 1200 + 600 + 1800, 3600 + 600 + 4000)
    assert all(a.ends == a.at + 600 for a in t.attempts)


def test_next_delay_clamps_in_qmgr_order():
    assert [next_delay(age, DEFAULTS) for age in (0, 299, 300, 1234, 4000, 99999)] == [300, 300, 300, 1234, 4000, 4000]
    inverted = RetrySettings(minimal_backoff_time=500, maximal_backoff_time=100)
    assert next_delay(10_000, inverted) == 500


def test_tiny_backoffs_over_a_long_lifetime_are_computed_not_stepped():
    s = RetrySettings(minimal_backoff_time=1, maximal_backoff_time=1, queue_run_delay=1, delay_warning_time=DAY)
    t = timeline(s, max_listed=10)
    assert t.attempt_count == 5 * DAY + 1 and t.expires_at == 5 * DAY and t.warning_at == DAY - 1
    assert len(t.attempts) == 10 and not t.complete and t.offsets() == tuple(range(10))


@pytest.mark.parametrize("kwargs", [
    {"minimal_backoff_time": -1}, {"queue_run_delay": float("nan")}, {"maximal_queue_lifetime": float("inf")},
    {"delay_warning_time": True}, {"maximal_backoff_time": "300s"},
])
def test_bad_settings_are_input_errors(kwargs):
    with pytest.raises(InputError):
        RetrySettings(**kwargs)


@pytest.mark.parametrize("name", ["minimal_backoff_time", "maximal_backoff_time", "queue_run_delay"])
def test_zero_backoff_or_scan_interval_cannot_be_modelled(name):
    s = RetrySettings(**{name: 0})
    with pytest.raises(InputError, match="non-zero"):
        timeline(s)
    assert (name, "must be non-zero: the queue manager refuses to start with 0") in risky_settings(s)


# ---------------------------------------------------------------- settings from a configuration


def test_settings_from_the_seed_configuration():
    cfg = PostfixConfig.from_outputs(
        postconf=(DATA / "seed" / "postconf.txt").read_text(), postconf_d=(DATA / "postconf-d.txt").read_text()
    )
    s = RetrySettings.from_config(cfg)
    assert s == RetrySettings(120, 600, 100, DAY, DAY, 4 * HOUR)  # delay_warning_time = 4 means hours
    assert RetrySettings.from_config(parse_postconf((DATA / "postconf-d.txt").read_text())) == DEFAULTS
    assert RetrySettings.from_config({"maximal_queue_lifetime": "2", "bounce_queue_lifetime": "$maximal_queue_lifetime"}) == \
        RetrySettings(maximal_queue_lifetime=2 * DAY, bounce_queue_lifetime=2 * DAY)
    with pytest.raises(InputError):
        RetrySettings.from_config({"queue_run_delay": "often"})
    with pytest.raises(InputError):
        RetrySettings.from_config(42)


# ---------------------------------------------------------------- forecasts


def test_forecast_between_attempts():
    # deferred at 4800 s (age 80 min): mtime = 4800 + 4000
    f = forecast(0.0, 8800.0, 5000.0)
    assert (f.next_attempt_earliest, f.next_attempt_latest) == (8800.0, 9100.0)
    assert f.last_attempt == 4800.0
    assert f.expires_at == 5 * DAY + 800  # the no-lag estimate
    assert (f.expires_at_earliest, f.expires_at_latest) == (5 * DAY, 5 * DAY + 4000 + 300)
    assert f.remaining_attempts == (100, 107)
    assert f.lifetime_ends == 5 * DAY and not f.overdue and not f.expiring and f.warning_at is None


def test_forecast_eligible_now_and_overdue():
    f = forecast(0.0, 600.0, 700.0)
    assert (f.next_attempt_earliest, f.next_attempt_latest, f.overdue) == (700.0, 900.0, False)
    stuck = forecast(0.0, 600.0, 10_000.0)  # eligible for hours: qmgr down or the active queue full
    assert (stuck.next_attempt_earliest, stuck.next_attempt_latest, stuck.overdue) == (10_000.0, 10_300.0, True)


def test_forecast_near_the_end_of_life():
    f = forecast(0.0, 5 * DAY + 100, 5 * DAY - 50)
    assert f.expiring and f.remaining_attempts == (1, 1) and f.expires_at == 5 * DAY + 100
    assert (f.expires_at_earliest, f.expires_at_latest) == (5 * DAY + 100, 5 * DAY + 400)
    g = forecast(0.0, 8800.0, 5000.0, forced_expire=True)
    assert g.expiring and g.expires_at == 8800.0 and g.remaining_attempts == (1, 1)


def test_forecast_delay_warning():
    s = RetrySettings(delay_warning_time=4 * HOUR)
    assert forecast(0.0, 12800.0, 9000.0, s).warning_at == 16800.0  # not sent yet
    assert forecast(0.0, 20800.0, 17000.0, s).warning_at is None  # sent at the end of the 16800 s attempt
    assert forecast(0.0, 12800.0, 9000.0, s, null_sender=True).warning_at is None


def test_last_attempt_from_mtime_regions():
    assert last_attempt_from_mtime(0, 300, DEFAULTS) == 0  # minimum backoff
    assert last_attempt_from_mtime(0, 2400, DEFAULTS) == 1200  # doubling region
    assert last_attempt_from_mtime(0, 20000, DEFAULTS) == 16000  # maximum backoff


# ---------------------------------------------------------------- risky settings


@pytest.mark.parametrize("kwargs,expected", [
    ({}, []),
    ({"queue_run_delay": 1000, "minimal_backoff_time": 300}, ["queue_run_delay"]),
    ({"minimal_backoff_time": 1000}, []),  # the pre-2.4 defaults
    ({"maximal_backoff_time": 100}, ["maximal_backoff_time"]),
    ({"maximal_queue_lifetime": 0}, ["maximal_queue_lifetime"]),
    ({"bounce_queue_lifetime": 0}, ["bounce_queue_lifetime"]),
    ({"maximal_queue_lifetime": 1800}, ["maximal_queue_lifetime"]),
    ({"delay_warning_time": 6 * DAY}, ["delay_warning_time"]),
    ({"delay_warning_time": 4 * HOUR}, []),
    ({"minimal_backoff_time": 3 * DAY, "maximal_backoff_time": 3 * DAY}, ["maximal_queue_lifetime"]),  # 0, 3d, 6d
])
def test_risky_settings(kwargs, expected):
    assert [p for p, _ in risky_settings(RetrySettings(**kwargs))] == expected


def test_risky_reasons_say_why():
    (param, why), = risky_settings(RetrySettings(queue_run_delay=1000))
    assert param == "queue_run_delay" and "1000s" in why and "minimal_backoff_time" in why


# ---------------------------------------------------------------- properties

_SECONDS = st.integers(1, 20_000).map(float)
_SETTINGS = st.builds(
    RetrySettings,
    minimal_backoff_time=_SECONDS,
    maximal_backoff_time=_SECONDS,
    queue_run_delay=_SECONDS,
    maximal_queue_lifetime=st.integers(0, 3 * DAY).map(float),
    bounce_queue_lifetime=st.integers(0, 3 * DAY).map(float),
    delay_warning_time=st.integers(0, 3 * DAY).map(float),
)


def _longest_backoff(s: RetrySettings) -> float:
    # the maximum, unless the minimum is larger: then every backoff is the minimum
    return max(s.minimal_backoff_time, s.maximal_backoff_time)


@settings(max_examples=300, deadline=None)
@given(_SETTINGS, st.floats(0, 2e9), st.booleans(), st.sampled_from(["none", "max"]), st.integers(0, 900).map(float))
def test_timeline_is_monotonic_and_ends_within_one_backoff_of_expiry(s, arrival, null_sender, lag, duration):
    t = timeline(s, arrival, null_sender=null_sender, lag=lag, attempt_duration=duration, max_listed=20_000)
    assume(t.complete)
    starts = [a.at for a in t.attempts]
    assert all(b > a for a, b in zip(starts, starts[1:]))
    assert all(a.eligible_at <= a.at and a.ends == a.at + duration for a in t.attempts)
    lifetime_end = arrival + s.lifetime(null_sender)
    assert all(a.ends < lifetime_end for a in t.attempts[:-1])  # nothing expires early
    assert t.attempts[-1].outcome == "expired" and t.expires_at == t.attempts[-1].ends >= lifetime_end
    scan = s.queue_run_delay if lag == "max" else 0.0
    # never scheduled later than expiry + one backoff (+ one scan of lag when modelled)
    if t.attempt_count > 1:
        assert t.attempts[-1].at <= lifetime_end + _longest_backoff(s) + scan + 1e-6
    else:
        assert t.attempts[0].at == arrival
    if t.warning_at is not None:
        assert t.warning_at >= arrival + s.delay_warning_time - 1 and not null_sender


@settings(max_examples=200, deadline=None)
@given(_SETTINGS, st.floats(0, 1e6))
def test_real_scan_phases_lie_between_the_bounds(s, phase_fraction):
    assume(s.maximal_queue_lifetime <= DAY)
    phase = phase_fraction % s.queue_run_delay
    early = timeline(s, 0.0, lag="none")
    late = timeline(s, 0.0, lag="max")
    real = timeline(s, 0.0, scan_phase=phase)
    # attempt k of the real schedule lies between attempt k of the two bounding chains,
    # the attempt count between theirs, the return within one backoff + one scan of the lifetime
    for k, attempt in enumerate(real.attempts[: min(len(early.attempts), len(late.attempts))]):
        assert early.attempts[k].at <= attempt.at <= late.attempts[k].at + 1e-6
    assert late.attempt_count <= real.attempt_count <= early.attempt_count
    lifetime_end = s.maximal_queue_lifetime
    assert lifetime_end <= real.expires_at <= lifetime_end + _longest_backoff(s) + s.queue_run_delay + 1e-6


def _stepped(s: RetrySettings, lag: str, phase: float | None, duration: float, null_sender: bool) -> tuple:
    """The schedule by brute force, straight from the rules: (starts, warning, expiry)."""
    lifetime = s.lifetime(null_sender)
    warn = s.delay_warning_time if s.delay_warning_time > 0 and not null_sender else None
    at, starts, warned = 0.0, [], None
    while True:
        starts.append(at)
        end = at + duration
        if end >= lifetime:
            return starts, warned, end
        if warn is not None and warned is None and end >= warn - 1:
            warned = end
        eligible = end + max(min(end, s.maximal_backoff_time), s.minimal_backoff_time)
        if phase is not None:
            at = phase + math.ceil((eligible - phase) / s.queue_run_delay) * s.queue_run_delay
        else:
            at = eligible + (s.queue_run_delay if lag == "max" else 0)


@settings(max_examples=300, deadline=None)
@given(_SETTINGS, st.sampled_from(["none", "max", "phase"]), st.integers(0, 10_000), st.integers(0, 900), st.booleans())
def test_computed_schedule_equals_the_stepped_one(s, lag, phase, duration, null_sender):
    assume(s.lifetime(null_sender) / max(s.minimal_backoff_time, s.maximal_backoff_time) < 20_000)
    scan_phase = float(phase % s.queue_run_delay) if lag == "phase" else None
    t = timeline(s, 0.0, lag="none" if lag == "phase" else lag, scan_phase=scan_phase,
                 attempt_duration=float(duration), null_sender=null_sender, max_listed=10**6)
    starts, warned, expiry = _stepped(s, lag, scan_phase, float(duration), null_sender)
    assert t.complete and t.attempt_count == len(starts)
    assert [a.at for a in t.attempts] == pytest.approx(starts)
    assert t.expires_at == pytest.approx(expiry)
    assert (t.warning_at is None) == (warned is None) and (warned is None or t.warning_at == pytest.approx(warned))


@given(_SETTINGS, st.floats(0, 1e9), st.floats(0, 1e7))
def test_last_attempt_inverts_the_backoff(s, arrival, age):
    end = arrival + age
    mtime = end + next_delay(age, s)
    assert math.isclose(last_attempt_from_mtime(arrival, mtime, s), end, abs_tol=1e-3)


@settings(max_examples=200, deadline=None)
@given(_SETTINGS, st.floats(0, 1e6), st.floats(0, 1e6), st.floats(0, 1e6))
def test_forecast_bounds_are_ordered(s, arrival, mtime_offset, now_offset):
    f = forecast(arrival, arrival + mtime_offset, arrival + now_offset, s)
    assert f.next_attempt_earliest <= f.next_attempt_latest
    assert f.expires_at_earliest <= f.expires_at <= f.expires_at_latest
    assert f.remaining_attempts[0] <= f.remaining_attempts[1]
    assert f.expires_at_latest <= max(f.next_attempt_latest, f.lifetime_ends + _longest_backoff(s) + s.queue_run_delay)
    assert f.next_attempt_earliest >= arrival + now_offset


def test_schedule_offsets_read_in_one_style():
    from checks.postfix.retry import _short

    # two largest units, exact: never "+80m" next to "+2.4h"
    assert [_short(s) for s in (0, 300, 4800, 8640, 16800, 86400, 90000)] == [
        "+0", "+5m", "+1h20m", "+2h24m", "+4h40m", "+1d", "+1d1h"]
