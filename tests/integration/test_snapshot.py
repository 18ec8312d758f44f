"""Snapshot bundles, the parts test_snapshot_lab.py leaves out: `pfdiag queue` and `pfdiag config`
on a bundle recorded from the lab (locally and over --host) agree with the live commands; a
redacted bundle keeps no address, local part, client IP (v4 or v6) or own hostname in any byte of
any entry, while the diagnosis is unchanged; and a bundle's paths never lead out of it.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from diagnose.cli import main
from tests.lab.postfix import PostfixLab
from tests.lab.scenarios import SCENARIOS, SENDER

pytestmark = pytest.mark.lab


def _json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, dict]:
    rc = main(argv)
    out, err = capsys.readouterr()
    assert out, err
    return rc, json.loads(out)


def _entries(bundle: Path) -> dict[str, bytes]:
    with tarfile.open(bundle) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


@pytest.mark.parametrize("via", ["local", "ssh"])
def test_queue_and_config_offline_equal_live(via: str, postfix_lab: PostfixLab, ssh: dict, tmp_path: Path, capsys) -> None:
    cfg = ["-c", str(postfix_lab.config_dir)]
    where = ["--host", "mx1", "--ssh-config", ssh["config"], "--known-hosts", ssh["known_hosts"]] if via == "ssh" else []
    bundle = tmp_path / "lab.tar.gz"
    for _ in range(3):  # mail may arrive between the live reading and the recording: retry a race
        _, live_q = _json(capsys, ["queue", "--format", "json", *cfg, *where])
        if bundle.exists():
            bundle.unlink()
        assert main(["snapshot", *cfg, *where, "-o", str(bundle), "--since", "1h"]) == 0
        capsys.readouterr()
        _, off_q = _json(capsys, ["queue", "--format", "json", "--snapshot", str(bundle)])
        if off_q["counts"] == live_q["counts"]:
            break
    assert off_q["where"] == "snapshot:lab.tar.gz" and off_q["counts"] == live_q["counts"]
    assert off_q["total_recipients"] == live_q["total_recipients"]
    _, live_c = _json(capsys, ["config", "--format", "json", *cfg, *where])
    _, off_c = _json(capsys, ["config", "--format", "json", "--snapshot", str(bundle)])
    assert off_c["parameters"] == live_c["parameters"] and off_c["timeline"] == live_c["timeline"]
    manifest = json.loads(_entries(bundle)["manifest.json"])
    assert manifest["host"] == ("ssh:mx1" if via == "ssh" else "local") and manifest["redacted"] is False
    assert manifest["created"].endswith("Z")


def test_redacted_lab_bundle_over_ssh_hides_the_lab_addresses(postfix_lab: PostfixLab, ssh: dict, tmp_path: Path, capsys) -> None:
    healthy = next(s for s in SCENARIOS if s.name == "healthy")
    postfix_lab.wait_first_attempt(postfix_lab.inject(SENDER, healthy.recipients, subject="redact me"), timeout=60)
    bundle = tmp_path / "red.tar.gz"
    assert main(["snapshot", "-c", str(postfix_lab.config_dir), "--host", "mx1", "--ssh-config", ssh["config"],
                 "--known-hosts", ssh["known_hosts"], "-o", str(bundle), "--since", "7d", "--redact"]) == 0  # fmt: skip
    capsys.readouterr()
    entries = _entries(bundle)
    blob = b"\n".join(entries.values()).lower()
    assert SENDER.encode() in postfix_lab.log_path.read_bytes(), "the lab log names its sender"
    for secret in (SENDER, SENDER.split("@")[0] + "@", postfix_lab.hostname, *healthy.recipients):
        assert secret.encode() not in blob, secret
    assert b"host-" in blob and b"user-" in blob
    assert json.loads(entries["manifest.json"])["redacted"] is True


# a log of our own: distinctive local parts, v4 and v6 clients, an own hostname and a provider
_ID = "A1B2C3D4E5"
_LOG = f"""\
Nov 27 10:00:01 lab postfix/smtpd[100]: connect from mail.customer-a.example[198.51.100.77]
Nov 27 10:00:01 lab postfix/smtpd[100]: {_ID}: client=mail.customer-a.example[198.51.100.77], sasl_method=PLAIN, sasl_username=zelda.quartermain
Nov 27 10:00:02 lab postfix/smtpd[101]: connect from unknown[2001:db8:77::15]
Nov 27 10:00:02 lab postfix/smtpd[101]: B2C3D4E5F6: client=unknown[2001:db8:77::15]
Nov 27 10:00:02 lab postfix/cleanup[102]: {_ID}: message-id=<20261127.1@lab.pfdiag.test>
Nov 27 10:00:02 lab postfix/qmgr[103]: {_ID}: from=<bartholomew.sender@pfdiag.test>, size=1234, nrcpt=1 (queue active)
Nov 27 10:00:03 lab postfix/smtp[104]: {_ID}: to=<ottoline.recipient@gmail.com>, relay=gmail-smtp-in.l.google.com[142.250.27.26]:25, delay=1.2, delays=0.1/0/0.5/0.6, dsn=4.7.28, status=deferred (host gmail-smtp-in.l.google.com[142.250.27.26] said: 421-4.7.28 Our system has detected an unusual rate of unsolicited mail originating from your IP address. (in reply to end of DATA command))
Nov 27 10:00:04 lab postfix/qmgr[103]: B2C3D4E5F6: from=<wilhelmina.v6@lab.pfdiag.test>, size=99, nrcpt=1 (queue active)
Nov 27 10:00:05 lab postfix/smtp[105]: B2C3D4E5F6: to=<ottoline.recipient@gmail.com>, relay=gmail-smtp-in.l.google.com[142.250.27.26]:25, delay=1.2, delays=0.1/0/0.5/0.6, dsn=4.7.28, status=deferred (host gmail-smtp-in.l.google.com[142.250.27.26] said: 421-4.7.28 Our system has detected an unusual rate of unsolicited mail originating from your IP address. (in reply to end of DATA command))
"""
_SECRETS = ("zelda.quartermain", "bartholomew.sender", "ottoline.recipient", "wilhelmina.v6", "198.51.100.77",
            "2001:db8:77::15", "2001:0db8:0077", "lab.pfdiag.test", "customer-a")  # fmt: skip
_KEPT = ("4.7.28", "421-4.7.28", "gmail-smtp-in.l.google.com", "142.250.27.26", "unusual rate of unsolicited mail",
         _ID, "status=deferred", "Nov 27 10:00:03", "gmail.com")  # fmt: skip


def test_redaction_scans_every_byte(postfix_lab: PostfixLab, tmp_path: Path, capsys) -> None:
    log = tmp_path / "mail.log"
    log.write_text(_LOG)
    plain, red = tmp_path / "plain.tar.gz", tmp_path / "red.tar.gz"
    common = ["-c", str(postfix_lab.config_dir), "--log", str(log), "--since", "36500d"]
    assert main(["snapshot", *common, "-o", str(plain)]) == 0
    assert main(["snapshot", *common, "-o", str(red), "--redact"]) == 0
    capsys.readouterr()
    plain_blob = b"\n".join(_entries(plain).values())
    assert all(s.encode() in plain_blob for s in _SECRETS if s != "2001:0db8:0077"), "the unredacted bundle has them"
    entries = _entries(red)
    for name, data in entries.items():
        low = data.lower()
        for s in _SECRETS:
            assert s.encode() not in low, (name, s)
    logged = next(d for n, d in entries.items() if n.endswith("mail.log")).decode()
    for keep in _KEPT:
        assert keep in logged, keep
    assert "user-" in logged and "ip-" in logged and ".invalid" in logged
    _, a = _json(capsys, ["logs", "--snapshot", str(plain), "--format", "json"])
    _, b = _json(capsys, ["logs", "--snapshot", str(red), "--format", "json"])
    assert a["causes"] and [(c["id"], c["deferrals"]) for c in a["causes"]] == [(c["id"], c["deferrals"]) for c in b["causes"]]


def _manifest(commands: list[dict], files: list[dict]) -> str:
    return json.dumps({"format": "pfdiag-snapshot", "version": 1, "created": "2026-11-28T00:00:00Z", "host": "x",
                       "commands": commands, "files": files})  # fmt: skip


def _one_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    rc = main(argv)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert rc != 0 and len(lines) == 1, (rc, err)
    assert "root:" not in out + err, "nothing from outside the bundle is shown"
    return lines[0]


def test_bundle_paths_never_lead_outside(tmp_path: Path, capsys) -> None:
    dotdot = tmp_path / "dotdot"
    dotdot.mkdir()
    (dotdot / "manifest.json").write_text(_manifest(
        [{"argv": ["postqueue", "-j"], "returncode": 0, "stdout": "../../../../../../etc/passwd", "stderr": ""}], []))
    assert "outside the bundle" in _one_error(capsys, ["queue", "--snapshot", str(dotdot)])

    linked = tmp_path / "linked"
    (linked / "commands").mkdir(parents=True)
    (linked / "commands" / "001.out").symlink_to("/etc/passwd")
    (linked / "manifest.json").write_text(_manifest(
        [{"argv": ["postqueue", "-j"], "returncode": 0, "stdout": "commands/001.out", "stderr": ""}], []))
    assert "outside the bundle" in _one_error(capsys, ["queue", "--snapshot", str(linked)])

    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("../escaped")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
    assert "cannot unpack" in _one_error(capsys, ["queue", "--snapshot", str(evil)])
    assert not (tmp_path.parent / "escaped").exists()
