"""Forecaster.row's steady-state path (checks/queue.py _steady_relative): for a message past
the backoff's growth it computes a row's numbers itself instead of forecast()'s two timelines
(a queue that has waited for days has one (mtime, now) offset pair per message, so the memo
does not help); the numbers are exactly, float for float, forecast()'s, for every kind of
settings (Postfix's defaults, fast retries, maximum below minimum, a scan slower than the
backoff, a zero or short lifetime, a shorter bounce lifetime, delay warnings), mtimes past,
future and overdue, bounces and forced expiries."""

from __future__ import annotations

import random

import pytest

from checks.errors import InputError
from checks.postfix.postqueue import QueuedMessage, QueuedRecipient
from checks.postfix.retry import DEFAULTS, SEED_PROPOSAL, RetrySettings
from checks.queue import Forecaster, _relative_forecast, _steady_relative, forecast_message

SETTINGS = [
    DEFAULTS,
    SEED_PROPOSAL,
    RetrySettings(minimal_backoff_time=4000, maximal_backoff_time=300),  # the maximum is ignored
    RetrySettings(queue_run_delay=3600, minimal_backoff_time=300),  # scans slower than the backoff
    RetrySettings(maximal_queue_lifetime=0, bounce_queue_lifetime=0),  # try once
    RetrySettings(maximal_queue_lifetime=1800, bounce_queue_lifetime=600),  # shorter than the backoff
    RetrySettings(bounce_queue_lifetime=86400, delay_warning_time=4 * 3600),
    RetrySettings(minimal_backoff_time=1, maximal_backoff_time=1, queue_run_delay=1),
    RetrySettings(minimal_backoff_time=1.5, maximal_backoff_time=7.25, queue_run_delay=1.75, maximal_queue_lifetime=99.5),
]


def numbers(key: tuple[int, int, bool, bool], settings: RetrySettings) -> tuple:
    f = _relative_forecast(*key[:2], settings, *key[2:])
    return (f.next_attempt_earliest, f.next_attempt_latest, f.expires_at, f.expires_at_latest, f.lifetime_ends,
            f.remaining_attempts, f.overdue, f.expiring)  # fmt: skip


@pytest.mark.parametrize("settings", SETTINGS, ids=range(len(SETTINGS)))
def test_the_steady_path_gives_forecasts_numbers(settings: RetrySettings) -> None:
    rnd = random.Random(4)
    steady = 0
    for _ in range(4000):
        now = rnd.choice([rnd.randrange(0, 10 * 86400), rnd.randrange(0, 9000), 5 * 86400 + rnd.randrange(-5000, 5000)])
        mtime = now + rnd.choice([rnd.randrange(-20000, 20000), rnd.randrange(-400, 400), 0])
        key = (mtime, now, rnd.random() < 0.3, rnd.random() < 0.1)
        got = _steady_relative(float(mtime), float(now), settings, key[2], key[3])
        if got is not None:
            steady += 1
            assert got == numbers(key, settings), key
    assert steady > 1000  # most of them past the backoff's growth


def test_rows_are_forecast_messages_on_a_multi_day_queue() -> None:
    """Forecaster.row against forecast_message (no memo, no steady path) for 3,000 messages
    spread over 6 days, mtimes known or assumed."""
    rnd = random.Random(9)
    now = 1_796_000_000.0
    for settings in (DEFAULTS, SETTINGS[3], SETTINGS[6]):
        fc = Forecaster(now, settings)
        for i in range(3000):
            arrival = now - rnd.randrange(0, 6 * 86400)
            m = QueuedMessage(f"{i:011X}", "deferred", arrival, 100, rnd.choice(["a@b.test", ""]),
                              (QueuedRecipient("x@y.test", "r"),), rnd.random() < 0.05)  # fmt: skip
            mtime = None if i % 3 == 0 else now + rnd.randrange(-3000, 5000)
            row = fc.row(m, mtime)
            want = forecast_message(m, now, settings, mtime)
            assert (row.mtime_source, row.next_earliest, row.next_latest, row.expires_at, row.expires_latest) == (
                want.mtime_source, want.next_earliest, want.next_latest, want.expires_at, want.expires_latest)
            assert (row.lifetime_ends, row.remaining_attempts, row.overdue, row.expiring) == (
                want.forecast.lifetime_ends, want.forecast.remaining_attempts, want.forecast.overdue,
                want.forecast.expiring)  # fmt: skip


def test_settings_qmgr_refuses_are_refused_by_the_first_row() -> None:
    bad = RetrySettings(queue_run_delay=0)
    m = QueuedMessage("ABCDEF12345", "deferred", 0.0, 1, "a@b", ())
    with pytest.raises(InputError):
        Forecaster(10 * 86400.0, bad).row(m, None)
