"""Text from outside (log lines, replies, banners, queue reasons, DNS answers) shown literally
by every renderer, in every format (diagnose/textsafe.py): issue 13, "The bad day".

A reply such as ``450 4.7.1 [/]`` once stopped `pfdiag logs` and `pfdiag report` with
``internal error: MarkupError``; ``[link=...]`` became a clickable link, ``vm[private/...]``
vanished, ESC sequences reached the terminal. Each hostile string below goes through the real
commands (log files, snapshot bundles, a real SMTP peer on loopback) and the renderers, and the
output is checked: no crash, no control character sent, the text visible as written, inert
Markdown and HTML, and the exact original string in JSON.
"""

from __future__ import annotations

import copy
import json
import re
import tarfile
import unicodedata
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from markdown_it import MarkdownIt

from checks.model import CommandResult
from checks.targets import SnapshotTarget
from checks.targets.bundle import SnapshotWriter
from diagnose import engine, fleet, logreport, report
from diagnose.cli import main
from diagnose import dnsreport
from diagnose.commands import dns as dns_cmd
from diagnose import probe_render
from diagnose.commands import probe as probe_cmd
from diagnose.commands import queue as queue_cmd
from diagnose.html import render_html
from diagnose.target_options import demo_path
from diagnose.textsafe import console, md_block, md_code, md_text, rich_markup, rich_text, visible, visible_lines
from tests.peers import RejectingPeer, SmtpPeer

HOSTILE: dict[str, str] = {
    "close-tag": "[/]",
    "link-tag": "[link=https://evil.example/]click here[/link]",
    "style-tag": "[bold red]ALARM[/bold red] [blink]",
    "dovecot-socket": "vm[private/dovecot-lmtp]",
    "esc-clear-osc8": "\x1b[2J\x1b]8;;http://evil.example/\x07link\x1b]8;;\x07",
    "cr-overwrite": "rejected\rOK: delivered, nothing to do   ",
    "rtl-override": "invoice\u202efdp.exe and \u2066isolate\u2069",
    "c1-csi": "x\x9b31mred\x85nel",
    "bell-backspace": "ab\x08\x08XY\x07",
    "long": "4.7.1 " + "very-long-reply-text-" * 150 + "END",
    "script": "<script>alert(1)</script><img src=x onerror=alert(2)>",
    "backticks": "a`b``c```d````",
    "pipe": "x | y || z |",
    "md-emphasis": "*bold* __strong__ ~~strike~~ _it_",
    "entity": "&amp; &lt;b&gt; &#x41;",
    "md-link": "[x](javascript:alert(1)) ![i](http://evil.example/i.png) <http://evil.example>",
    "md-heading": "# not a heading",
    "emoji-code": ":bomb: :+1:",
    "non-utf8": b"caf\xe9 \xff\xfe".decode("utf-8", "surrogateescape"),
    "replaced": b"caf\xe9".decode("utf-8", "replace"),
    "wide": "宽字符 😀 👨\u200d👩\u200d👧 e\u0301",
    "backslash-end": "C:\\path\\",
    "braces": "{0} {x} %s",
}
IDS = list(HOSTILE)
CORE = ["close-tag", "link-tag", "dovecot-socket", "esc-clear-osc8", "cr-overwrite", "rtl-override", "script",
        "backticks", "pipe", "md-link", "wide"]  # fmt: skip

LOG_LINE = ("Nov 28 17:43:40 lab postfix/smtp[17500]: {qid}: to=<u{i}@hostile{i}.test>, relay=mx.hostile{i}.test"
            "[192.0.2.9]:25, delay=1, delays=0/0/0.5/0.5, dsn=4.7.1, status=deferred (host mx.hostile{i}.test"
            "[192.0.2.9] said: 450 4.7.1 {h} (in reply to RCPT TO command))\n")  # fmt: skip
SGR = re.compile(r"\x1b\[[0-9;]*m")  # our own colours, with color=True only


# -- what "shown literally" means, per format ----------------------------------------------------


def shown(out: str) -> str:
    """Text output with nothing a terminal would act on: no control or format character but
    newline (and so no ESC at all), no lone surrogate (it could not even be written to a UTF-8 stream)."""
    bad = sorted({f"U+{ord(c):04X}" for c in out if c != "\n" and unicodedata.category(c) in ("Cc", "Cf", "Cs")})
    assert not bad, f"control/format characters reach the terminal: {bad}"
    out.encode("utf-8")
    return out


def squeeze(text: str) -> str:
    """Whitespace removed: rich may fold a long line at the terminal width, never drop characters."""
    return re.sub(r"\s+", "", text)


def assert_text_shows(out: str, original: str) -> None:
    shown(out)
    assert squeeze(visible(original)) in squeeze(out), f"{visible(original)[:120]!r} not shown as written"


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: set[str] = set()
        self.text: list[str] = []
        self.attrs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attrs += [k for k, _ in attrs]

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def html_page(page: str) -> _Page:
    p = _Page()
    p.feed(page)
    p.close()
    return p


def assert_html_inert(page: str, original: str, allowed: set[str] | None = None) -> None:
    p = html_page(page)
    assert not p.tags & {"script", "img", "a", "iframe", "object", "link", "blink"}, p.tags
    assert not any(a.startswith("on") for a in p.attrs), p.attrs
    if allowed is not None:
        assert p.tags <= allowed, p.tags - allowed
    assert squeeze(visible(original)) in squeeze("".join(p.text)), f"{original[:80]!r} not in the page text"
    shown(page)  # control characters written out in HTML too (a bidi override would reorder the page)


MD = MarkdownIt("commonmark").enable("table").enable("strikethrough")


def assert_md_inert(md: str, original: str) -> None:
    """Rendered as CommonMark (+ GitHub tables): the text reads as written (so no emphasis,
    strike-through, entity or escape consumed a character of it), and it made no link, image,
    raw HTML or heading."""
    tokens = MD.parse(md)
    kinds = {t.type for t in tokens} | {c.type for t in tokens for c in (t.children or [])}
    assert not kinds & {"link_open", "image", "html_inline", "html_block"}, kinds
    headings = [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open"]
    assert not any("not a heading" in h and h.startswith("not") for h in headings), headings
    page = html_page(MD.render(md))
    assert squeeze(visible(original)) in squeeze("".join(page.text)), f"{visible(original)[:80]!r} not read as written"


# -- the rule itself -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [("\x1b[2J", "\\x1b[2J"), ("a\rb", "a\\rb"), ("a\nb\tc", "a\\nb\\tc"), ("\x00", "\\x00"), ("\x7f\x9b", "\\x7f\\x9b"),
     ("\u202e", "\\u202e"), ("\u200b\ufeff\u00ad", "\\u200b\\ufeff\\xad"), ("\u2028", "\\u2028"),
     ("\udcff", "\\udcff"), ("\U000e0041", "\\U000e0041"), ("[/] <b> `x` é 宽 😀", "[/] <b> `x` é 宽 😀"), (None, "")],
)  # fmt: skip
def test_visible_writes_out_what_a_terminal_would_act_on(raw: str | None, expected: str) -> None:
    assert visible(raw) == expected
    assert visible(expected) == expected, "idempotent: a visible text stays as it is"


def test_visible_lines_keeps_line_breaks_only() -> None:
    assert visible_lines("a\x1b\nb\r") == "a\\x1b\nb\\r"


@pytest.mark.parametrize("name", IDS)
def test_rich_markup_slots_are_never_parsed(name: str) -> None:
    h = HOSTILE[name]
    t = rich_markup("[bold]{}[/] [red]{}[/red] {} {{literal}}", h, h, h)
    assert t.plain == f"{visible(h)} {visible(h)} {visible(h)} {{literal}}"
    assert {str(s.style) for s in t.spans} <= {"bold", "red"}
    assert rich_text(h).plain == visible(h) and not rich_text(h).spans


@pytest.mark.parametrize("name", IDS)
def test_console_prints_it_as_written_and_in_colour_sends_only_our_own_codes(name: str) -> None:
    import io

    h = HOSTILE[name]
    for color in (False, True):
        buf = io.StringIO()
        con = console(buf, width=80, force_terminal=color, color_system="standard" if color else None)
        con.print(rich_markup("[green]fix:[/] {}", h), overflow="fold")
        con.print(rich_text(h))
        out = SGR.sub("", buf.getvalue()) if color else buf.getvalue()
        assert_text_shows(out, h)


@pytest.mark.parametrize("name", IDS)
def test_markdown_helpers(name: str) -> None:
    h = HOSTILE[name]
    for md in (f"- {md_text(h)}", f"Reply {md_code(h)} seen", "\n".join(md_block([h, h])),
               f"| a | b |\n|---|---|\n| {md_text(h)} | {md_code(h, table=True)} |", md_text(h), f"1. {md_text(h)}"):
        assert_md_inert(md, h)
    tokens = MD.parse(f"| a | b |\n|---|---|\n| {md_text(h)} | {md_code(h, table=True)} |")
    assert sum(t.type == "td_open" for t in tokens) == 2, "a '|' in the text made no extra table cell"


def test_markdown_code_fence_outgrows_backticks() -> None:
    assert md_code("a`b``c") == "```a`b``c```" and md_code("`x") == "`` `x ``" and md_code("") == ""
    assert md_block(["```", "x"])[0] == "````"


# -- pfdiag logs FILE: every format --------------------------------------------------------------


def _log_file(tmp_path: Path, h: str) -> Path:
    log = tmp_path / "mail.log"
    log.write_bytes(LOG_LINE.format(qid="ABC000", i=0, h=h).encode("utf-8", "surrogateescape"))
    return log


@pytest.mark.parametrize("name", IDS)
def test_pfdiag_logs_shows_hostile_replies_literally(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = _log_file(tmp_path, HOSTILE[name])
    assert main(["logs", str(log), "-f", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    example = doc["causes"][0]["example"]  # the reply as the reader decoded the file (bad bytes: U+FFFD)
    assert "hostile0.test" in example
    if name not in ("non-utf8", "cr-overwrite"):  # the log reader decodes bad bytes as U+FFFD and ends a line at CR
        assert HOSTILE[name] in example, "JSON keeps the exact original"
    assert main(["logs", str(log)]) == 0, "text: no MarkupError (was: internal error, exit 3)"
    assert_text_shows(capsys.readouterr().out, example)
    assert main(["logs", str(log), "-f", "md"]) == 0
    assert_md_inert(capsys.readouterr().out, example)


def test_pfdiag_logs_at_80_columns_folds_but_hides_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("COLUMNS", "80")
    log = tmp_path / "mail.log"
    log.write_text("".join(LOG_LINE.format(qid=f"ABC{i:03d}", i=i, h=HOSTILE[n]) for i, n in enumerate(CORE) if n != "non-utf8"))
    assert main(["logs", str(log), "-f", "json"]) == 0
    example = json.loads(capsys.readouterr().out)["causes"][0]["example"]
    assert main(["logs", str(log)]) == 0
    out = capsys.readouterr().out
    assert_text_shows(out, example)
    for w in (40, 80):
        doc = json.loads(json.dumps(logreport_doc(log)))
        assert_text_shows(logreport.render_text(doc, width=w), example)


def logreport_doc(log: Path) -> dict[str, Any]:
    from checks.targets import LocalTarget
    from diagnose.logscan import analyse_logs

    analysis, stats = analyse_logs(LocalTarget(), [str(log)], None, None)
    return logreport.to_dict(analysis, stats, None, None, None)


# -- pfdiag report --snapshot: a bundle whose log and queue carry the hostile replies ------------


def hostile_bundle(tmp_path: Path, names: list[str], sender: str | None = None, copies: int = 8) -> str:
    """The demo snapshot (a recorded lab Postfix), plus deferred messages whose reply is the
    hostile string: in the log (the deferral line) and in the queue (its delay_reason); `copies`
    of each, so that their cause ranks among the causes the report lists."""
    names = [n for n in names for _ in range(copies)]
    with tarfile.open(demo_path()) as t:
        m = json.load(t.extractfile("manifest.json"))  # type: ignore[arg-type]
        w = SnapshotWriter(host="lab", postfix_version=m["postfix_version"])
        for c in m["commands"]:
            out = t.extractfile(c["stdout"]).read().decode()  # type: ignore[union-attr]
            err = t.extractfile(c["stderr"]).read().decode()  # type: ignore[union-attr]
            if c["argv"] == ["postqueue", "-j"]:
                for i, n in enumerate(names):
                    said = HOSTILE[n].encode("utf-8", "surrogateescape").decode("utf-8", "replace")  # as a target decodes output
                    reason = f"host mx.hostile{i}.test[192.0.2.9] said: 450 4.7.1 {said} (in reply to RCPT TO command)"
                    out += json.dumps({"queue_name": "deferred", "queue_id": f"ABC{i:03d}", "arrival_time": 1795887810,
                                       "message_size": 364, "forced_expire": False, "sender": sender or f"s{i}@sender.test",
                                       "recipients": [{"address": f"u{i}@hostile{i}.test", "delay_reason": reason}]}) + "\n"  # fmt: skip
            w.add_command(CommandResult(tuple(c["argv"]), c["returncode"], out, err))
        for f in m["files"]:
            data = t.extractfile(f["stored"]).read()  # type: ignore[union-attr]
            data += "".join(LOG_LINE.format(qid=f"ABC{i:03d}", i=i, h=HOSTILE[n]) for i, n in enumerate(names)).encode(
                "utf-8", "surrogateescape")
            w.add_file(f["path"], data, f["mtime"])
    path = tmp_path / "hostile.tar.gz"
    w.write(str(path))
    return str(path)


def _hostile_excerpts(doc: dict[str, Any]) -> list[str]:
    return [e["excerpt"] for c in doc["causes"] for e in c["evidence"] if "hostile0.test" in e["excerpt"]]


@pytest.mark.parametrize("name", IDS)
def test_pfdiag_report_every_format(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = hostile_bundle(tmp_path, [name])
    assert main(["report", "--snapshot", bundle, "-f", "json"]) == 4
    doc = json.loads(capsys.readouterr().out)
    excerpts = _hostile_excerpts(doc)
    assert excerpts, "the hostile reply is evidence in the report"
    if name not in ("non-utf8", "cr-overwrite"):
        assert any(HOSTILE[name] in e for e in excerpts), "JSON keeps the exact original"
    top = next(c for c in doc["causes"] if any("hostile0.test" in e["excerpt"] for e in c["evidence"]))
    first = next(e["excerpt"] for e in top["evidence"] if "hostile0.test" in e["excerpt"])
    for fmt in ("text", "md", "html"):
        out = tmp_path / f"r.{fmt}"
        rc = main(["report", "--snapshot", bundle, "-f", fmt, "-o", str(out)])
        assert rc == 4, f"{fmt}: exit {rc} (3 = internal error)"
        page = out.read_text(encoding="utf-8")
        if fmt == "text":
            if doc["causes"].index(top) < 3:  # the terminal shows the first three causes in detail
                assert_text_shows(page, first)
            shown(page)
        elif fmt == "md":
            for e in excerpts:
                assert_md_inert(page, e)
        else:
            for e in excerpts:
                assert_html_inert(page, e)
    capsys.readouterr()


@pytest.fixture(scope="module")
def demo_doc() -> dict[str, Any]:
    return report.build(engine.gather(SnapshotTarget(demo_path()), {}), {})


def _poison(doc: dict[str, Any], h: str) -> dict[str, Any]:
    """Every place of the report that can carry outside text gets the hostile string."""
    d = copy.deepcopy(doc)
    d["verdict"]["headline"] = d["verdict"]["summary"] = h
    d["target"]["where"] = h
    for c in d["causes"]:
        c["why"].append(h)
        c["domains"].insert(0, {"domain": h, "count": 1})
        c["evidence"].insert(0, {"kind": "log", "source": "mail log", "where": h, "excerpt": h})
        c["fixes"].insert(0, {"kind": "contact", "text": h})
        c["queue_actions"].append({"action": "hold", "argv": ["pfdiag", "queue", "hold", "--domain", h], "why": h})
        for u in c["underlying"]:
            u["evidence"].append(h)
            u["against"].append(h)
    d["warnings"].append({"summary": h})
    d["errors"].append({"check": h, "summary": h})
    d["steps"].append({"id": h, "title": h, "state": h, "seconds": 1.0, "where": h, "detail": h})
    return d


@pytest.mark.parametrize("name", IDS)
def test_report_renderers_on_every_field(name: str, demo_doc: dict[str, Any]) -> None:
    h = HOSTILE[name]
    doc = _poison(demo_doc, h)
    assert json.loads(report.to_json(doc))["causes"][0]["evidence"][0]["excerpt"] == h
    for width in (80, 120):
        text = report.render_text(doc, width=width)
        assert_text_shows(text, h)
    coloured = report.render_text(doc, width=100, color=True)
    assert_text_shows(SGR.sub("", coloured), h)
    assert_md_inert(report.render_markdown(doc), h)
    assert_html_inert(render_html(doc), h)


def test_report_text_at_80_columns_shows_every_hostile_line(demo_doc: dict[str, Any]) -> None:
    doc = copy.deepcopy(demo_doc)
    c = doc["causes"][0]
    c["evidence"] = [{"kind": "log", "source": "mail log", "where": "w", "excerpt": HOSTILE[n]} for n in ("long", "link-tag", "cr-overwrite")]
    text = report.render_text(doc, width=80)
    for n in ("long", "link-tag", "cr-overwrite"):
        assert_text_shows(text, HOSTILE[n])
    assert max(len(line) for line in text.splitlines()) <= 80


# -- pfdiag queue --snapshot ----------------------------------------------------------------------


@pytest.mark.parametrize("name", [*CORE, "replaced"])
def test_pfdiag_queue_reasons_and_senders(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    h = HOSTILE[name]
    bundle = hostile_bundle(tmp_path, [name], sender=f"evil{h}@sender.test")
    assert main(["queue", "--snapshot", bundle, "-f", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    reasons = [g["example_reason"] for g in doc["groups"] if "hostile0.test" in g["example_reason"]]
    assert reasons and h in reasons[0], "JSON keeps the exact reason"
    assert main(["queue", "--snapshot", bundle]) == 0
    text = capsys.readouterr().out
    assert_text_shows(text, reasons[0][:160])
    assert main(["queue", "--snapshot", bundle, "-f", "md"]) == 0
    assert_md_inert(capsys.readouterr().out, reasons[0][:160])


# -- pfdiag probe against a real SMTP peer on loopback -------------------------------------------


class HostileBannerPeer(SmtpPeer):
    def __init__(self, text: str, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.greeting = b"220 " + text.encode("utf-8", "surrogateescape") + b"\r\n"


@pytest.mark.parametrize("name", [n for n in CORE if n != "cr-overwrite"])  # a CR ends an SMTP line
def test_pfdiag_probe_banner_and_reply(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    h = HOSTILE[name]
    argv = ["--timeouts", "short", "--helo", "client.test", "--budget", "5", "--rcpt", "someone@peer.test"]
    with HostileBannerPeer(h) as peer:
        assert main(["probe", f"[{peer.host}]:{peer.port}", *argv, "-f", "json"]) in (0, 4)
        doc = json.loads(capsys.readouterr().out)
        banner = doc["probe"]["banner"]
        for fmt in ("text", "md"):
            assert main(["probe", f"[{peer.host}]:{peer.port}", *argv, "-f", fmt]) in (0, 4)
            out = capsys.readouterr().out
            (assert_text_shows if fmt == "text" else assert_md_inert)(out, banner)
    with RejectingPeer(verb="RCPT", answer=f"450 4.7.1 {h}".encode("utf-8", "surrogateescape").decode("utf-8", "replace")) as peer:
        assert main(["probe", f"[{peer.host}]:{peer.port}", *argv, "-f", "json"]) == 4
        doc = json.loads(capsys.readouterr().out)
        rcpt = next(p for p in doc["probe"]["phases"] if p["phase"] == "rcpt")
        assert main(["probe", f"[{peer.host}]:{peer.port}", *argv]) == 4
        assert_text_shows(capsys.readouterr().out, probe_render._short(rcpt["text"]))
        md = probe_cmd.render_md(doc)
        assert_md_inert(md, rcpt["text"][:40])


# -- dns, fleet, config renderers ----------------------------------------------------------------


def _dns_doc(h: str) -> dict[str, Any]:
    ev = [{"source": "dns.txt", "excerpt": f"v=spf1 {h}", "where": "local"}]
    return {"schema": "pfdiag.dns/1", "subject": "example.test", "kind": "domain", "where": "local", "resolver": h,
            "compared_with": None, "notes": [h], "problem": True,
            "findings": [{"severity": "problem", "summary": f"TXT answer {h}", "cause_id": "E23", "evidence": ev}]}  # fmt: skip


@pytest.mark.parametrize("name", IDS)
def test_dns_renderers(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    h = HOSTILE[name]
    doc = _dns_doc(h)
    assert_text_shows(dnsreport.render(doc), h)
    assert_md_inert(dnsreport.render(doc, md=True), h)
    dns_cmd._render_rich(doc)
    assert_text_shows(capsys.readouterr().out, h)


@pytest.mark.parametrize("name", CORE)
def test_fleet_renderers(name: str) -> None:
    h = HOSTILE[name]
    doc = {"hosts": [{"host": h, "status": "unreachable", "headline": h, "seconds": 1.0}],
           "verdict": {"status": "undiagnosed", "exit_code": 1},
           "comparison": {"causes": [{"id": "E03", "title": h, "hosts": [h], "spread": "one host", "meaning": h}],
                          "unreachable": [{"host": h, "address": h, "error": h}]}}  # fmt: skip
    assert_text_shows(fleet.render_text(doc, width=80), h)
    assert_md_inert(fleet.render_markdown(doc), h)


@pytest.mark.parametrize("name", CORE)
def test_queue_renderers_in_process(name: str) -> None:
    h = HOSTILE[name]
    rep = {"now": 1000.0, "source": h, "where": h, "generated_at": "t", "total_messages": 0, "total_recipients": 0,
           "counts": {"deferred": 0}, "notes": [h]}  # fmt: skip
    assert_text_shows(queue_cmd.render_text(rep), h)
    assert_md_inert(queue_cmd.render_md({**rep, "matrix": {}, "groups": [], "messages": []}), h)


def test_the_one_line_error_shows_a_hostile_file_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    name = tmp_path / "mail\x1b[2J\nfake.log"
    assert main(["logs", str(name)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "\x1b" not in err and "mail\\x1b[2J\\nfake.log" in err


@pytest.mark.parametrize("name", CORE)
def test_wizard_progress_and_notices(name: str) -> None:
    import io

    from diagnose import wizard

    h = HOSTILE[name]
    buf = io.StringIO()
    con = console(buf, width=80)
    show = wizard._progress(con)
    show("probe", "start", f"probe {h}")
    show("probe", "error", f"said {h}")
    show("probe", h, "")
    assert_text_shows(buf.getvalue(), f"said {h}")
    assert_text_shows(buf.getvalue(), f"probe {h}")

