"""A snapshot bundle of the lab captures in tests/data/lab (the real Postfix outputs of
tests/lab/capture.py, every failure mode once, with the lab's lowered 5 s timeouts), built
for unit tests that need what the shipped demo no longer shows: collateral ``delivery
temporarily suspended`` lines, a lowered smtp_data_done_timeout, the PIX firewall peer,
lowered phase timeouts. (It was the demo snapshot before issue 14.)"""

from __future__ import annotations

import calendar
import json
import time
from pathlib import Path

from checks.model import CommandResult
from checks.targets.bundle import SnapshotWriter

LAB = Path(__file__).resolve().parent / "data" / "lab"

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


def build_capture_bundle(out: Path) -> Path:
    log = LAB / "postfix.log"
    # "now" of the bundle: the capture's last log line (file mtimes are checkout times in git)
    arrivals = [json.loads(x)["arrival_time"] for x in (LAB / "postqueue-j.jsonl").read_text().splitlines() if x.strip()]
    year = time.gmtime(max(arrivals)).tm_year
    last = log.read_text().splitlines()[-1][:15]
    end = calendar.timegm(time.strptime(f"{year} {last}", "%Y %b %d %H:%M:%S"))
    captured = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(end))
    w = SnapshotWriter(
        host="lab", postfix_version="3.7.11", extra={"origin": "pfdiag test lab (tests/data/lab)", "created": captured}
    )
    for argv, name in COMMANDS.items():
        path = LAB / name
        if path.exists():
            w.add_command(CommandResult(argv, 0, path.read_text(encoding="utf-8", errors="replace"), ""))
    w.add_command(CommandResult(("postconf", "-h", "maillog_file"), 0, "/var/log/mail.log\n", ""))
    _add_postconf_h(w)
    w.add_file("/var/log/mail.log", log.read_bytes(), end)
    out.parent.mkdir(parents=True, exist_ok=True)
    w.write(str(out))
    return out
