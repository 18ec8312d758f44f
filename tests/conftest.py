"""Fixtures of the real test lab (tests/lab/): Postfix, SMTP peers, DNS.

Session-scoped, started on first use, stopped at the end of the session:

    smtp_peers    PeerSet: one started peer per row of tests.lab.scenarios.SCENARIOS,
                  ``smtp_peers["greylist"].port``
    postfix_lab   PostfixLab: a real Postfix instance on loopback, mail to <name>.test routed
                  to that scenario's peer (and its TLS policy set)
    dns_server    DnsServer: dnsmasq with the lab zone on 127.0.0.1:<port> (no namespace)
    dns_lab       DnsLab: a Postfix inside the pfdiag-lab-dns network namespace, resolving
                  through dnsmasq there (``dns_lab.postfix`` is its PostfixLab)

Function-scoped: ``make_peer(peers.SlowDataPeer, delay=7)`` starts a peer that stops when the
test ends (route it with ``postfix_lab.route(domain, peer.port); postfix_lab.apply()``).

When the lab cannot start here (not root, packages missing, no network namespaces...), the
tests that need it are SKIPPED with the reason, repeated in a banner at the end of the run;
under CI=true that is a failure instead. Tests using these fixtures get the ``lab`` marker
(``-m "not lab"`` deselects them). After every test, a guard checks that no lab Postfix was
left pointed beyond loopback; if one was, the test errors and that Postfix is stopped.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Iterator, TypeVar

import pytest

from tests.lab import SKIPPED, unavailable
from tests.lab.dns import DnsLab, DnsServer
from tests.lab.peers import Peer
from tests.lab.postfix import PostfixLab, running_labs
from tests.lab.scenarios import SCENARIOS, PeerSet

LAB_FIXTURES = {"smtp_peers", "postfix_lab", "dns_server", "dns_lab"}
T = TypeVar("T")


def _start(what: str, start: Callable[[], T]) -> T:
    try:
        return start()
    except Exception as exc:  # noqa: BLE001 - any start failure is reported as "the lab cannot run"
        unavailable(f"{what} cannot start here: {type(exc).__name__}: {exc}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if LAB_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.lab)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SKIPPED:
        terminalreporter.section("THE REAL TEST LAB DID NOT RUN", sep="!", red=True, bold=True)
        for reason in dict.fromkeys(SKIPPED):
            terminalreporter.line(f"  {reason}", red=True)
        terminalreporter.line("  lab tests were skipped; under CI=true this fails the run", red=True)


@pytest.fixture(scope="session")
def smtp_peers() -> Iterator[PeerSet]:
    peers = _start("the SMTP peers", PeerSet.start)
    yield peers
    peers.stop()


@pytest.fixture(scope="session")
def postfix_lab(smtp_peers: PeerSet) -> Iterator[PostfixLab]:
    lab = PostfixLab()
    for s in SCENARIOS:
        lab.route(s.domain, smtp_peers.port(s.name), tls=s.tls)
    _start("the Postfix lab", lab.start)
    yield lab
    lab.stop()


@pytest.fixture(scope="session")
def dns_server() -> Iterator[DnsServer]:
    server = DnsServer()
    _start("the lab DNS server (dnsmasq)", server.start)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def dns_lab() -> Iterator[DnsLab]:
    lab = DnsLab()
    _start("the DNS lab (network namespace, dnsmasq, Postfix)", lab.start)
    yield lab
    lab.stop()


@pytest.fixture
def make_peer() -> Iterator[Callable[..., Peer]]:
    started: list[Peer] = []

    def make(cls: type[Peer], *args: Any, **kwargs: Any) -> Peer:
        peer = cls(*args, **kwargs).start()
        started.append(peer)
        return peer

    yield make
    for peer in started:
        peer.stop()


# This machine's own Postfix and pfdiag files: no test may change them (pre-commit's
# dont_write_to_home_directory is the model). Checked once around the whole session.
# (a running Postfix changes its own log and spool by itself: those are not watched)
HOST_PLACES = ("/etc/postfix/main.cf", "/etc/postfix/master.cf", "/var/log/pfdiag", "/var/log/pfdiag/actions.log",
               "/var/lib/pfdiag", "/var/lib/pfdiag/backup")


def _state(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


@pytest.fixture(scope="session", autouse=True)
def _host_untouched() -> Iterator[None]:
    before = {p: _state(p) for p in HOST_PLACES}
    yield
    changed = [p for p in HOST_PLACES if _state(p) != before[p]]
    assert not changed, f"the test session changed this machine's own Postfix or pfdiag files: {changed}"


@pytest.fixture(autouse=True)
def _hermetic(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test reads or writes this machine's Postfix, logs or pfdiag files by accident: every
    default place (checks/places.py) points into a temporary directory, and Postfix's own tools see
    an empty configuration directory unless a test names one (-c DIR, the lab's MAIL_CONFIG). The
    subprocesses a test starts inherit this environment. A test that wants a default place sets it."""
    home = tmp_path_factory.mktemp("hermetic")
    (home / "postfix").mkdir()
    # Postfix's defaults, answered at once: a missing main.cf is a fatal error after postconf's one-second
    # pause, without myhostname postconf looks this machine's name up in DNS, and with an empty master.cf
    # postconf -x takes seconds; Debian's pristine master.cf is the default one
    (home / "postfix" / "main.cf").write_text("myhostname = hermetic.pfdiag.test\nmydomain = pfdiag.test\n")
    dist = "/usr/share/postfix/master.cf.dist"
    (home / "postfix" / "master.cf").write_text(open(dist).read() if os.path.exists(dist) else "")
    past = time.time() - 60  # Postfix waits until a table file is over a second old before it reads it
    for name in ("main.cf", "master.cf"):
        os.utime(home / "postfix" / name, (past, past))
    monkeypatch.setenv("PFDIAG_ACTION_LOG", str(home / "actions.log"))
    monkeypatch.setenv("PFDIAG_BACKUP_DIR", str(home / "backup"))
    monkeypatch.setenv("PFDIAG_CONFIG_DIR", str(home / "config"))
    monkeypatch.setenv("PFDIAG_MAIL_LOGS", str(home / "no-mail.log"))
    monkeypatch.setenv("MAIL_CONFIG", str(home / "postfix"))
    yield


@pytest.fixture(autouse=True)
def _lab_stays_on_loopback() -> Iterator[None]:
    yield
    for lab in running_labs():
        problems = lab.loopback_guard()
        if problems:
            lab.stop()
            pytest.fail(
                f"a test left lab Postfix {lab.name!r} pointed beyond loopback (it was stopped): {problems}",
                pytrace=False,
            )
