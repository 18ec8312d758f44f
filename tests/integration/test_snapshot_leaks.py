"""The leak test of issue 13 on real Postfix output: mail with a quoted local part, a HELO name
of the client's choosing, a Message-ID and a Subject that header_checks logs (WARN), sent to the
lab over SMTP; a second log of the same lines as the system's syslog writes them, with the
machine's own name (not myhostname) in the host field. A --redact bundle of it is searched byte
by byte for every one of those values, and so is every report format of the plain bundle with
--redact. Postfix's service names (master.cf's `local`) stay."""

from __future__ import annotations

import html
import re
import smtplib
import tarfile
import time
from datetime import datetime
from pathlib import Path

import pytest

from diagnose.cli import main
from tests.lab.postfix import PostfixLab
from tests.lab.scenarios import PeerSet

pytestmark = pytest.mark.lab
HELO = "secret-helo.customer-lan.org"
RCPT = '"John Q. Doe"@greylist.test'
SENDER = "ceo.private@sender.test"
SUBJECT = "Quarterly salary review"
MACHINE = "bastion-7"  # the machine's name in the system syslog, not myhostname
MSGID_LEFT = "20261206.secretleft"


@pytest.fixture(scope="module")
def recorded(postfix_lab: PostfixLab, smtp_peers: PeerSet, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("leaks")
    checks = tmp / "header_checks"
    checks.write_text("/^Subject: .*salary/ WARN salary talk\n")
    postfix_lab.postconf_edit(f"header_checks=regexp:{checks}")
    postfix_lab.reload()
    try:
        time.sleep(1.1)
        since = datetime.now().isoformat(timespec="seconds")
        mark = postfix_lab.mark()
        mid = f"<{MSGID_LEFT}.{int(time.time())}@client.customer-lan.org>"
        msg = (f"From: {SENDER}\r\nTo: {RCPT}\r\nSubject: {SUBJECT}\r\nMessage-ID: {mid}\r\n\r\nbody\r\n").encode()
        with smtplib.SMTP("127.0.0.1", postfix_lab.smtpd_port, local_hostname=HELO, timeout=30) as c:
            c.sendmail(SENDER, [RCPT], msg)
        qid = postfix_lab.queue_id(mid, timeout=30)
        postfix_lab.wait_for_log(rf"{qid}: to=<\"John Q\. Doe\"@greylist\.test>.*status=deferred", 30, mark)
    finally:
        postfix_lab.postconf_edit("-X", "header_checks")
        postfix_lab.reload()
    lines = [ln for ln in postfix_lab.log_lines()[mark:] if qid in ln or HELO in ln]
    assert any("warning: header Subject: " + SUBJECT in ln for ln in lines), lines
    syslog = tmp / "syslog"
    syslog.write_text("".join(re.sub(r"^(\S+ +\S+ \S+) \S+ ", rf"\1 {MACHINE} ", ln) + "\n" for ln in lines))
    out = {}
    for name, extra in (("plain", []), ("red", ["--redact"])):
        out[name] = tmp / f"{name}.tar.gz"
        assert main(["snapshot", "-c", str(postfix_lab.config_dir), "--log", str(postfix_lab.log_path),
                     "--log", str(syslog), "--since", since, "-o", str(out[name]), *extra]) == 0  # fmt: skip
    out["since"] = Path(since)
    return out


def _members(bundle: Path) -> dict[str, bytes]:
    with tarfile.open(bundle) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


SECRETS = ["John Q. Doe", HELO, SUBJECT, MACHINE, MSGID_LEFT, "ceo.private", "customer-lan"]


def _leaks(data: str) -> list[str]:
    return [s for s in SECRETS if s in data or html.escape(s) in data]


def test_the_redacted_bundle_has_none_of_the_values(recorded: dict[str, Path], capsys) -> None:  # noqa: ANN001
    plain = "\n".join(b.decode("utf-8", "replace") for b in _members(recorded["plain"]).values())
    assert set(_leaks(plain)) == set(SECRETS), "the unredacted bundle carries every value"
    red = _members(recorded["red"])
    for name, data in red.items():
        assert not _leaks(data.decode("utf-8", "replace")), (name, _leaks(data.decode("utf-8", "replace")))
    text = "\n".join(b.decode("utf-8", "replace") for b in red.values())
    # the bundle still describes the server: master.cf's local service, Postfix's own words
    master = red["files/etc/postfix/master.cf"] if "files/etc/postfix/master.cf" in red else next(
        v for k, v in red.items() if k.endswith("master.cf"))  # fmt: skip
    assert re.search(rb"^local +unix .* local$", master, re.M), master[:400]
    assert "warning: header Subject: text-" in text and "status=deferred" in text and "greylist.test" in text
    # one token per value: the quoted mailbox in the header_checks warning and in the delivery lines
    johns = set(re.findall(r'to=<(user-[0-9a-f]{6})@greylist\.test>', text))
    assert len(johns) == 1, johns
    assert not re.search(r"\bhost-[0-9a-f]{6}\b", master.decode()), "nothing in master.cf is this server's name"


@pytest.mark.parametrize("fmt", ["text", "md", "json", "html"])
def test_every_report_format_with_redact_has_none_of_the_values(fmt: str, recorded: dict[str, Path], capsys) -> None:  # noqa: ANN001
    common = ["report", "--snapshot", str(recorded["plain"]), "--since", str(recorded["since"]), "-f", fmt]
    main(common)
    plain = capsys.readouterr().out
    assert _leaks(plain), "the plain report shows some of the values"
    main([*common, "--redact"])
    red = capsys.readouterr().out
    assert red and not _leaks(red), _leaks(red)
