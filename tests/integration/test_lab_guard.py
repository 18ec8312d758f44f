"""The loopback guard itself: it must notice every way a lab Postfix could be pointed off loopback.

These tests write a lab configuration that is never started (no master runs with it), break
it in one way each with ``postconf -e`` / the transport table, and ask the guard.
"""

from __future__ import annotations

import shutil
from typing import Iterator

import pytest

from tests.lab import postfix as lab_postfix
from tests.lab import unavailable
from tests.lab.postfix import PostfixLab

pytestmark = pytest.mark.lab


@pytest.fixture
def unstarted() -> Iterator[PostfixLab]:
    problem = lab_postfix.missing()
    if problem:
        unavailable(f"the Postfix lab cannot run here: {problem}")
    lab = PostfixLab("pfdiag-lab-guardtest", hostname="guard.pfdiag.test", log_name="guardtest.log")
    lab.route("ok.test", 10025)
    lab.smtpd_port = 10587
    lab._write_config()
    assert not lab.running()
    yield lab
    shutil.rmtree(lab.config_dir, ignore_errors=True)


def test_a_fresh_lab_config_is_clean(unstarted: PostfixLab) -> None:
    assert unstarted.loopback_violations() == []


@pytest.mark.parametrize(
    ("setting", "expect"),
    [
        ("relayhost = [192.0.2.1]:25", "relayhost = [192.0.2.1]:25"),
        ("default_transport = smtp", "default_transport = smtp"),
        ("relay_transport = relay", "relay_transport = relay"),
        ("inet_interfaces = all", "inet_interfaces = all"),
        ("smtp_fallback_relay = [192.0.2.2]", "smtp_fallback_relay"),
        ("content_filter = smtp:[192.0.2.3]:10024", "content_filter"),
        ("smtp_bind_address = 192.0.2.4", "smtp_bind_address = 192.0.2.4"),
        ("transport_maps = hash:/etc/postfix/transport", "not the lab's table"),
    ],
)
def test_guard_catches_main_cf(unstarted: PostfixLab, setting: str, expect: str) -> None:
    unstarted.postconf_edit("-e", setting)
    assert any(expect in v for v in unstarted.loopback_violations())


def test_guard_catches_a_transport_off_loopback(unstarted: PostfixLab) -> None:
    unstarted.routes["elsewhere.test"] = "smtp:[192.0.2.10]:25"
    unstarted.routes["mx.test"] = "smtp:mx.test"  # an MX lookup: only allowed inside the DNS namespace
    unstarted._write_config()
    bad = unstarted.loopback_violations()
    assert any("elsewhere.test" in v for v in bad)
    assert any("mx.test" in v for v in bad)


def test_guard_catches_master_cf(unstarted: PostfixLab) -> None:
    unstarted.postconf_edit("-M", "smtp/inet=0.0.0.0:2525 inet n - y - - smtpd")
    unstarted.postconf_edit("-P", "relay/unix/relayhost=[192.0.2.5]")
    bad = unstarted.loopback_violations()
    assert any("0.0.0.0:2525" in v for v in bad)
    assert any("relay/unix/relayhost" in v for v in bad)


def test_route_refuses_non_test_domains(unstarted: PostfixLab) -> None:
    with pytest.raises(ValueError):
        unstarted.route("example.com", 25)


def test_an_unsafe_lab_refuses_to_start() -> None:
    problem = lab_postfix.missing()
    if problem:
        unavailable(f"the Postfix lab cannot run here: {problem}")
    lab = PostfixLab("pfdiag-lab-guardtest", log_name="guardtest.log", settings={"relayhost": "[192.0.2.1]"})
    try:
        with pytest.raises(lab_postfix.LabError, match="beyond loopback"):
            lab.start()
        assert not lab.running()
    finally:
        shutil.rmtree(lab.config_dir, ignore_errors=True)
        shutil.rmtree(lab.queue_dir, ignore_errors=True)
        shutil.rmtree(lab.data_dir, ignore_errors=True)
