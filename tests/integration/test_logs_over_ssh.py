"""pfdiag logs over SSH: the mail host greps its own logs (SSHTarget.open_filtered),
and the analysis equals the one made from the same files locally.

"The host" is this machine reached through the lab's real sshd on 127.0.0.1
(tests/lab/sshd.py, fixtures in tests/integration/conftest.py).
"""

from __future__ import annotations

import gzip
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from checks.logs import Chunk, plan_chunks
from checks.targets import LocalTarget
from checks.targets.ssh import SSHTarget
from diagnose.logreport import to_dict
from diagnose.logscan import analyse_logs

pytestmark = pytest.mark.lab

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks" / "logs_vs_pflogsumm"))
from generate import generate  # noqa: E402 - the benchmark's realistic log generator

NOISE = (
    "Nov  2 00:00:11 mx1 CRON[999]: (root) CMD (command -v debian-sa1 > /dev/null)\n",
    "Nov  2 00:00:11 mx1 dovecot: imap-login: Login: user=<ann>, method=PLAIN\n",
    "Nov  2 00:00:11 mx1 kernel: [123.4] eth0: link up\n",
)


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    """mail.log (Postfix lines with other programs' lines among them) and an old
    rotated mail.log.1.gz last written long before the window."""
    d = tmp_path / "logs"
    d.mkdir()
    raw = tmp_path / "raw.log"
    generate(str(raw), 6000)
    with open(raw) as src, open(d / "mail.log", "w") as out:
        for i, line in enumerate(src):
            out.write(line)
            if i % 7 == 0:
                out.write(NOISE[i % len(NOISE)])
    old = d / "mail.log.1.gz"
    with gzip.open(old, "wt") as fh:
        fh.write("Oct  1 00:00:00 mx1 postfix/smtp[1]: 0A1B2C3D4E: to=<a@old.example>, relay=none, delay=1, "
                 "delays=0/0/1/0, dsn=4.4.1, status=deferred (connect to old.example[192.0.2.1]:25: Connection refused)\n")
    os.utime(old, (1_000_000_000, 1_000_000_000))
    return d


@pytest.fixture
def remote(ssh: dict[str, str]) -> Iterator[SSHTarget]:
    with SSHTarget.open("mx1", ssh_config=ssh["config"], known_hosts=ssh["known_hosts"]) as t:
        yield t


def _analysis(target: Any, sources: list[str], since: float | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    analysis, stats = analyse_logs(target, sources, since=since)
    doc = to_dict(analysis, stats, since=since)
    doc.pop("generated")
    return doc, doc.pop("input")


def test_remote_analysis_equals_local(remote: SSHTarget, logs: Path) -> None:
    sources = [str(logs / "mail.log")]
    local, local_input = _analysis(LocalTarget(), sources)
    over_ssh, ssh_input = _analysis(remote, sources)
    assert local["totals"]["statuses"]["deferred"] > 0 and local["causes"]
    assert over_ssh == local
    # only Postfix lines crossed the network: the other programs' lines never arrived
    assert local_input["other_program_lines"] >= 6000 // 7
    assert ssh_input["other_program_lines"] == 0
    assert ssh_input["postfix_lines"] == local_input["postfix_lines"]


def test_rotated_file_older_than_since_is_not_read(remote: SSHTarget, logs: Path) -> None:
    since = 1_500_000_000.0  # after the old rotation was last written, before the generated log
    sources = [str(logs / "mail.log.1.gz"), str(logs / "mail.log")]
    local, _ = _analysis(LocalTarget(), sources, since)
    over_ssh, ssh_input = _analysis(remote, sources, since)
    assert over_ssh == local
    assert not any(d["domain"] == "old.example" for d in over_ssh["domains"])
    assert ssh_input["outside_window"] == 0  # the old file's line was never sent, not dropped here


def test_remote_reader_never_splits_a_filtered_stream(remote: SSHTarget, logs: Path) -> None:
    sources = [str(logs / "mail.log")]
    # the same file is cut into byte ranges locally, but never over SSH: the grepped
    # stream has other offsets than the file, and it cannot be entered in the middle
    assert len(plan_chunks(LocalTarget(), sources, 4, 1024)) == 4
    assert plan_chunks(remote, sources, 4, 1024) == [Chunk(sources[0])]
    # many workers asked for: a remote stream is read whole, in one pass, with the same result
    one, _ = _analysis(remote, sources)
    analysis, stats = analyse_logs(remote, sources, workers=4)
    many = to_dict(analysis, stats)
    many.pop("generated")
    many.pop("input")
    assert many == one
