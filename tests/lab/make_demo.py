"""Build the demo snapshot shipped in the package (diagnose/data/demo-snapshot.tar.gz)
from the real lab captures in tests/data/lab/ (see its README). Run after refreshing
the captures: `.venv/bin/python -m tests.lab.make_demo`."""

from __future__ import annotations

import os
import time
from pathlib import Path

from checks.model import CommandResult
from checks.targets.bundle import SnapshotWriter

REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "tests" / "data" / "lab"
OUT = REPO / "diagnose" / "data" / "demo-snapshot.tar.gz"

COMMANDS = {
    ("postqueue", "-j"): "postqueue-j.jsonl",
    ("postqueue", "-p"): "postqueue-p.txt",
    ("postconf", "-n"): "postconf-n.txt",
    ("postconf", "-d"): "postconf-d.txt",
    ("postconf", "-P"): "postconf-P.txt",
    ("postconf", "-M"): "postconf-M.txt",
}


def _add_postconf_h(w: SnapshotWriter) -> None:
    """`postconf -h NAMES` and `postconf -d -h NAMES` as pfdiag config asks them,
    answered from the captured -n/-d outputs (postconf prints raw values, in order)."""
    from checks.config import _CONTEXT, PARAMETERS
    from checks.postfix.postconf import parse_postconf

    defaults = parse_postconf((LAB / "postconf-d.txt").read_text())
    effective = {**defaults, **parse_postconf((LAB / "postconf-n.txt").read_text())}
    effective["maillog_file"] = "/var/log/mail.log"
    wanted = list(PARAMETERS) + [n for n in _CONTEXT if n not in PARAMETERS]
    for argv, table in ((("postconf", "-h"), effective), (("postconf", "-d", "-h"), defaults)):
        known = [n for n in wanted if n in table]
        unknown = "".join(f"postconf: warning: {n}: unknown parameter\n" for n in wanted if n not in table)
        w.add_command(CommandResult((*argv, *wanted), 0, "".join(table[n] + "\n" for n in known), unknown))


def build(out: Path = OUT) -> Path:
    log = LAB / "postfix.log"
    captured = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(os.stat(LAB / "postqueue-j.jsonl").st_mtime))
    w = SnapshotWriter(
        host="lab", postfix_version="3.7.11", extra={"origin": "pfdiag test lab (tests/data/lab)", "created": captured}
    )
    for argv, name in COMMANDS.items():
        path = LAB / name
        if path.exists():
            w.add_command(CommandResult(argv, 0, path.read_text(encoding="utf-8", errors="replace"), ""))
    maillog = ""
    for line in (LAB / "postconf-n.txt").read_text().splitlines():
        if line.startswith("maillog_file ="):
            maillog = line.split("=", 1)[1].strip()
    w.add_command(CommandResult(("postconf", "-h", "maillog_file"), 0, "/var/log/mail.log\n", ""))
    _add_postconf_h(w)
    # the log keeps its real name too, so the configuration and the files agree
    w.add_file("/var/log/mail.log", log.read_bytes(), os.stat(log).st_mtime)
    if maillog and maillog != "/var/log/mail.log":
        w.extra["lab_maillog_file"] = maillog
    out.parent.mkdir(parents=True, exist_ok=True)
    w.write(str(out))
    return out


if __name__ == "__main__":
    print(build())
