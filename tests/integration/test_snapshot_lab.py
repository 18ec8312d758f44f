"""pfdiag snapshot: record the live lab Postfix (locally and over SSH), diagnose the bundle
offline with the same result; and the redaction leak test on real public log lines."""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path
from typing import Any

import pytest

from diagnose.cli import main
from tests.corpus import corpus_files, need_corpus
from tests.lab.postfix import PostfixLab
from tests.lab.scenarios import SENDER, PeerSet

pytestmark = pytest.mark.lab
SOME = ("greylist", "mailbox-full", "eod-stall", "no-banner", "refused")


@pytest.fixture(scope="module")
def window(postfix_lab: PostfixLab, smtp_peers: PeerSet) -> dict[str, Any]:
    return {"since": postfix_lab.fresh_window([(SENDER, [f"user@{n}.test"], {"subject": n}) for n in SOME])}


def _json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, dict]:
    rc = main(argv)
    out, err = capsys.readouterr()
    assert out, err
    return rc, json.loads(out)


def _causes(doc: dict) -> list[tuple[str, int, int]]:
    return [(c["id"], c["impact"]["queued_recipients"], c["impact"]["log_deferrals"]) for c in doc["causes"]]


@pytest.mark.parametrize("via", ["local", "ssh"])
def test_round_trip_gives_the_same_diagnosis(via: str, postfix_lab: PostfixLab, window: dict, ssh: dict,
                                             tmp_path: Path, capsys) -> None:  # fmt: skip
    cfg = ["-c", str(postfix_lab.config_dir)]
    where = ["--host", "mx1", "--ssh-config", ssh["config"], "--known-hosts", ssh["known_hosts"]] if via == "ssh" else []
    rc, live = _json(capsys, ["report", "-f", "json", *cfg, *where, "--since", window["since"], "--budget", "40"])
    bundle = tmp_path / "lab.tar.gz"
    assert main(["snapshot", *cfg, *where, "-o", str(bundle), "--since", window["since"]]) == 0
    capsys.readouterr()
    rc2, offline = _json(capsys, ["report", "-f", "json", "--snapshot", str(bundle), "--since", window["since"]])
    assert offline["target"]["where"] == "snapshot:lab.tar.gz" and not offline["target"]["live"]
    # the same causes and counts (the order of ties can differ: live probes confirm some causes)
    assert sorted(_causes(offline)) == sorted(_causes(live)) and set(c for c, _, _ in _causes(live)) >= {"E21", "E09", "E04"}
    assert rc2 == rc == 4
    with tarfile.open(bundle) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert manifest["format"] == "pfdiag-snapshot" and manifest["postfix_version"]
    assert all(len(c["sha256"]) == 64 for c in manifest["commands"]) and all(len(f["sha256"]) == 64 for f in manifest["files"])
    assert {"/etc/postfix/master.cf", "/etc/resolv.conf"} <= {f["path"] for f in manifest["files"]}
    assert all("-c" not in c["argv"] for c in manifest["commands"]), "replayable without -c"


def test_snapshot_refuses_to_overwrite(tmp_path: Path, capsys) -> None:
    f = tmp_path / "x.tar.gz"
    f.write_text("keep me")
    assert main(["snapshot", "-o", str(f)]) == 2
    assert "exists" in capsys.readouterr().err and f.read_text() == "keep me"


def _corpus_log(tmp_path: Path) -> Path:
    need_corpus()
    lines = []
    for p in corpus_files():
        for line in p.read_text(errors="replace").splitlines():
            if re.search(r"postfix(?:-[\w.]+)?/[\w/-]+\[\d+\]: ", line) and re.match(r"^[A-Z][a-z]{2} [ \d]\d \d\d:", line):
                lines.append(line)
    assert len(lines) > 200, "the corpus has real syslog lines"
    f = tmp_path / "mail.log"
    f.write_text("\n".join(lines) + "\n")
    return f


_CLIENT_IP = re.compile(r"(?:connect from|client=|from)\s?[^\[\s]*\[((?:\d{1,3}\.){3}\d{1,3})\]")
_ADDR = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")


def test_redacted_bundle_leaks_no_address_or_client_ip(tmp_path: Path, capsys) -> None:
    log = _corpus_log(tmp_path)
    text = log.read_text()
    addresses = set(_ADDR.findall(text))
    client_ips = {ip for ip in _CLIENT_IP.findall(text) if not ip.startswith("127.")}
    assert len(addresses) > 20 and len(client_ips) > 10
    plain, red = tmp_path / "plain.tar.gz", tmp_path / "red.tar.gz"
    common = ["--log", str(log), "--since", "36500d"]
    assert main(["snapshot", *common, "-o", str(plain)]) == 0
    assert main(["snapshot", *common, "-o", str(red), "--redact"]) == 0
    capsys.readouterr()
    with tarfile.open(red) as tar:
        blobs = {m.name: tar.extractfile(m).read().decode("utf-8", "replace") for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    everything = "\n".join(blobs.values())
    # a whole address, not the tail of a token ("user-3fa2cc@d.com" must not count as "c@d.com")
    leaked_addr = sorted(a for a in addresses if re.search(rf"(?<![\w.+-]){re.escape(a)}", everything))
    leaked_ip = sorted(ip for ip in client_ips if re.search(rf"(?<![\d.]){re.escape(ip)}(?![\d])", everything))
    assert not leaked_addr, leaked_addr[:10]
    assert not leaked_ip, leaked_ip[:10]
    assert json.loads(blobs["manifest.json"])["redacted"] is True
    # the same causes with the same counts, redacted or not
    _, a = _json(capsys, ["logs", "--snapshot", str(plain), "--format", "json"])
    _, b = _json(capsys, ["logs", "--snapshot", str(red), "--format", "json"])
    assert [(c["id"], c["deferrals"]) for c in a["causes"]] == [(c["id"], c["deferrals"]) for c in b["causes"]]
    assert a["causes"], "the corpus has deferrals"
