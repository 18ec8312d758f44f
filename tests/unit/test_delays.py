"""What a delays=a/b/c/d profile says (postfix-deferrals.md §1.3), as a table of profiles."""

from __future__ import annotations

import pytest

from diagnose.delays import explain


def profile(a: float | None, b: float | None, c: float | None, d: float | None,
            d95: float | None = None) -> dict[str, dict[str, float | None]]:  # fmt: skip
    return {"a": {"median": a, "p95": a}, "b": {"median": b, "p95": b}, "c": {"median": c, "p95": c},
            "d": {"median": d, "p95": d if d95 is None else d95}}  # fmt: skip


@pytest.mark.parametrize(
    "prof, timeouts, expected",
    [
        (profile(0.1, 0, 0, 600), None, "smtp_data_done_timeout (600 s): Postfix sent the whole message"),
        (profile(0.1, 0, 0.2, 5), {"smtp_data_done_timeout": 5}, "smtp_data_done_timeout (5 s)"),
        (profile(0.1, 0, 0, 0), None, "no SMTP session was attempted"),
        (profile(0.1, 0, 30, 0), None, "1 address(es) never answered the TCP connect"),
        (profile(0.1, 0, 60, 0), None, "2 address(es) never answered the TCP connect"),
        (profile(0.1, 0, 150, 0), None, "5 address(es) never answered the TCP connect"),
        (profile(0.1, 0, 180, 0), None, "while setting up the connection"),  # 6 x 30 s: more than Postfix tries
        (profile(0.1, 0, 300, 0), None, "smtp_helo_timeout (300 s): the greeting or EHLO reply never came"),
        (profile(0.1, 0, 4.5, 0), None, "while setting up the connection"),
        (profile(0.1, 0, 0.3, 300), None, "smtp_rcpt_timeout (300 s): the receiver stopped answering during MAIL FROM/RCPT TO"),
        (profile(0.1, 0, 0.3, 120), None, "smtp_data_init_timeout (120 s)"),
        (profile(0.1, 0, 0.3, 240, d95=320), None, "more than smtp_data_xfer_timeout (180 s): time spent writing the body"),
        (profile(0.1, 0, 0.3, 30, d95=30.5), None, "a NAT or firewall idle timeout"),
        (profile(0.1, 95, 0.3, 0.5), None, "waited for a free delivery agent"),
        (profile(93000, 0.03, 1.6, 0.23), None, "a ≈ 25.8 h: most of these are retries"),
        (profile(430000, 0.03, 1.6, 0.23), None, "a ≈ 5.0 days"),
        (profile(0.4, 0.01, 0.5, 0.3), None, "nothing stands out"),
        (profile(None, None, None, None), None, "no delays= fields"),
    ],
)
def test_profile_readings(prof: dict, timeouts: dict | None, expected: str) -> None:
    readings = explain(prof, timeouts)
    assert any(expected in r for r in readings), readings


def test_a_reading_that_fits_says_nothing_of_the_rest() -> None:
    readings = explain(profile(0.1, 0, 0, 600))
    assert not any("nothing stands out" in r for r in readings)
    assert not any("connection" in r for r in readings), readings


@pytest.mark.parametrize(
    "prof, phase, expected, never",
    [
        # a 421 at the greeting: refused at once, a session was attempted
        (profile(0.1, 0, 0, 0), "greeting", "it ended at greeting within a fraction of a second", "no SMTP session"),
        (profile(0.1, 0, 0, 0), "dns", "no SMTP session was attempted", "fraction"),
        # a body timeout is the data_xfer wait, not the end-of-data wait
        (profile(0.1, 0, 0.2, 180), "body", "smtp_data_xfer_timeout (180 s): Postfix waited the full timeout for the "
         "receiver to take more of the message body", "smtp_data_done_timeout"),
        (profile(0.1, 0, 0.2, 600), "body", "d ≈ 600 s from MAIL FROM until the failure at body", "end-of-data timeout"),
        # a loss at RCPT TO or a MAIL FROM rejection is not 'while setting up the connection'
        (profile(0.1, 0, 1.5, 0), "rcpt", "", "setting up the connection"),
        (profile(0.1, 0, 1.5, 0.2), "mail", "d ≈ 0.2 s from MAIL FROM until the failure at mail", "setting up"),
        (profile(0.1, 0, 0.3, 300), "rcpt", "smtp_rcpt_timeout (300 s): Postfix waited the full timeout for the reply to RCPT TO", "end-of-data"),
        (profile(0.1, 0, 0.3, 600), "end-of-data", "smtp_data_done_timeout (600 s): Postfix waited the full timeout for "
         "the reply to the final '.'", "body"),
        (profile(0.1, 0, 0.3, 30, d95=30.4), "end-of-data", "a NAT or firewall idle timeout", "waited the full"),
        # a reply (greylisting at RCPT TO) is an answer, not a connection that ended
        (profile(0.1, 0, 0.01, 0.04), "rcpt", "", "connection ended"),
        (profile(0.1, 0, 300, 0), "connect", "the failure happened at connect", "smtp_helo_timeout"),
        (profile(0.1, 0, 300, 0), "greeting", "smtp_helo_timeout (300 s): the greeting or EHLO reply never came", "connect"),
    ],
)
def test_readings_follow_the_phase_the_reasons_name(prof: dict, phase: str, expected: str, never: str) -> None:
    readings = explain(prof, None, phase, answered=expected == "" and never == "connection ended")
    assert any(expected in r for r in readings), readings
    assert not any(never in r for r in readings), readings


def test_a_slow_answer_is_read_as_a_slow_receiver() -> None:
    readings = explain(profile(0.1, 0, 0.3, 45), None, "rcpt", answered=True)
    assert any("before the receiver answered at rcpt" in r for r in readings), readings
