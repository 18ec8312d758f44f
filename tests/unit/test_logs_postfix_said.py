"""`pfdiag logs` text and Markdown (issue 14): Postfix's own warning lines that bear on a cause
appear under that cause, literally, with their counts and bounded; the unrelated ones in one
short section at the end. Lines as Postfix writes them (smtp, qmgr)."""

from __future__ import annotations

from diagnose.cli import main
from diagnose.logreport import SAID_OTHER, SAID_PER_CAUSE

LOG = """\
Dec  6 10:00:01 mx postfix/smtp[100]: SMTPS wrappermode (TCP port 465) requires setting "smtp_tls_wrappermode = yes", and "smtp_tls_security_level = encrypt" (or stronger)
Dec  6 10:00:01 mx postfix/smtp[101]: SMTPS wrappermode (TCP port 465) requires setting "smtp_tls_wrappermode = yes", and "smtp_tls_security_level = encrypt" (or stronger)
Dec  6 10:00:02 mx postfix/smtp[100]: 1A2B3C4D5E: to=<a@example.net>, relay=mx.example.net[192.0.2.1]:465, delay=5, delays=0/0/5/0, dsn=4.4.2, status=deferred (conversation with mx.example.net[192.0.2.1] timed out while receiving the initial server greeting)
Dec  6 10:00:03 mx postfix/qmgr[99]: warning: connect to transport private/slow: No such file or directory
Dec  6 10:00:04 mx postfix/error[101]: 2A2B3C4D5E: to=<b@example.org>, relay=none, delay=1, delays=0/1/0/0, dsn=4.3.0, status=deferred (mail transport unavailable)
Dec  6 10:00:05 mx postfix/smtp[102]: warning: TLS library problem: error:0A000086:SSL routines::certificate verify failed \x1b[31mred
Dec  6 10:00:06 mx postfix/smtp[103]: Verified TLS connection established to mx.example.com[192.0.2.9]:25: TLSv1.3
"""
WRAP = 'SMTPS wrappermode (TCP port 465) requires setting "smtp_tls_wrappermode = yes"'


def _run(tmp_path, capsys, *fmt: str) -> str:
    log = tmp_path / "mail.log"
    log.write_text(LOG)
    assert main(["logs", str(log), *fmt]) == 0
    return capsys.readouterr().out


def _section(text: str, head: str) -> str:
    start = text.index(head)
    end = text.find("\n\n", start)
    return text[start: end if end > 0 else len(text)]


def test_text_shows_each_warning_under_its_cause_with_its_count(tmp_path, capsys):
    out = _run(tmp_path, capsys)
    e04 = _section(out, "E04 No SMTP greeting after connecting —")
    assert f"postfix: Dec  6 10:00:01 mx postfix/smtp[100]: {WRAP}" in e04 and "(2x)" in e04
    e31 = _section(out, "E31 Delivery agent or transport unavailable —")
    assert "postfix: Dec  6 10:00:03 mx postfix/qmgr[99]: warning: connect to transport private/slow: No such file" in e31
    assert WRAP not in e31
    other = out[out.index("Other Postfix warnings"):]
    assert "warning: TLS library problem" in other and "(1x)" in other  # no E18 deferral here: unrelated
    assert "\x1b" not in out and "\\x1b[31mred" in out  # shown literally, never interpreted (textsafe)
    assert "Verified TLS connection established" not in out  # a TLS session note, no warning


def test_markdown_fences_them_under_the_cause(tmp_path, capsys):
    md = _run(tmp_path, capsys, "-f", "md")
    e04 = md[md.index("### E04"):md.index("### E31")]
    assert "Postfix said (count):" in e04 and f"{WRAP}" in e04 and "(2x)" in e04
    assert "### Other Postfix warnings" in md and "TLS library problem" in md.split("### Other Postfix warnings")[1]
    assert "\x1b" not in md


def test_bounded_per_cause_and_at_the_end(tmp_path, capsys):
    from diagnose.logreport import postfix_said

    report = {"causes": [{"id": "E31"}], "companions": {
        f"warning: connect to transport {i}": {"count": i + 1, "example": f"Dec  6 10:00:03 mx postfix/qmgr[99]: warning: "
                                               f"connect to transport private/t{i}: No such file or directory"}
        for i in range(SAID_PER_CAUSE + 4)} | {
        f"warning: TLS library problem {i}": {"count": 1, "example": f"Dec  6 mx postfix/smtp[1]: warning: TLS library problem: {i}"}
        for i in range(SAID_OTHER + 4)}}  # fmt: skip
    said, other = postfix_said(report)
    assert len(said["E31"]) == SAID_PER_CAUSE and said["E31"][0][1] == SAID_PER_CAUSE + 4  # most frequent first
    assert len(other) == SAID_OTHER


def test_a_daemons_fatal_line_is_shown_first_among_the_others(tmp_path, capsys):
    """A delivery agent or qmgr that gave up (fatal:/panic:) is counted like the warnings and shown
    first in the other warnings, however rare: pflogsumm lists fatal errors too."""
    log = tmp_path / "mail.log"
    tls = "Dec  6 10:00:05 mx postfix/smtp[102]: warning: TLS library problem: error:0A000086:SSL routines::x\n"
    fatal = ("Dec  6 10:00:07 mx postfix/trivial-rewrite[104]: fatal: open database /etc/postfix/transport.db: "
             "No such file or directory\n")  # fmt: skip
    log.write_text(LOG.splitlines(keepends=True)[2] + tls * 3 + fatal)
    assert main(["logs", str(log)]) == 0
    other = _section(capsys.readouterr().out, "Other Postfix warnings")
    lines = [ln for ln in other.splitlines()[1:] if ln.strip()]
    assert "fatal: open database /etc/postfix/transport.db" in lines[0] and "(1x)" in lines[0], other
    assert "TLS library problem" in lines[1] and "(3x)" in lines[1]
    assert main(["logs", str(log), "-f", "json"]) == 0
    import json

    assert json.loads(capsys.readouterr().out)["companions"]["fatal"]["count"] == 1
