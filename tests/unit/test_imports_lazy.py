"""Start-up discipline (issue 18): a command imports what it runs, and help imports nothing heavy.

Each case runs pfdiag in a fresh interpreter (the only way to see what one command line imports)
and lists sys.modules at the end. `pfdiag --help` and `pfdiag CMD --help` must load none of the
commands' heavy dependencies; a plain probe of a loopback peer must load no log analysis, no queue
actions, no SSH, no DNS library (an address needs no lookup), no size ladder, no TLS and no rich.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from diagnose.commands import command_names
from tests.peers import SmtpPeer

ROOT = Path(__file__).resolve().parents[2]

# What the commands run on, by package prefix: none of it belongs in a help text.
HEAVY = (
    "diagnose.classify", "diagnose.deferrals", "diagnose.logscan", "diagnose.logreport", "diagnose.causes",
    "checks.logs", "checks.smtp.session", "checks.smtp.wire", "checks.smtp.ladder", "checks.queue",
    "checks.postfix.postqueue", "checks.postfix.retry", "checks.config", "checks.nexthop", "checks.dns",
    "diagnose.actions", "diagnose.queuereport", "diagnose.queueselect", "diagnose.restore", "diagnose.monitor",
    "diagnose.configreport", "diagnose.probedoc", "diagnose.report", "diagnose.engine", "diagnose.wizard",
    "checks.targets.local", "checks.targets.ssh", "checks.targets.snapshot",
    "paramiko", "dns", "rich", "questionary", "yaml", "httpcore", "cryptography", "ssl", "importlib.metadata",
    "subprocess", "socket", "dataclasses", "inspect",
)  # fmt: skip

# A probe talks SMTP: it needs the SMTP core, routing and Postfix's settings, nothing of these.
NOT_FOR_A_PROBE = (
    "diagnose.classify", "diagnose.deferrals", "diagnose.logscan", "diagnose.logreport", "checks.logs",
    "checks.queue", "checks.postfix.postqueue", "checks.postfix.retry", "diagnose.actions", "diagnose.queuereport",
    "diagnose.queueselect", "diagnose.restore", "diagnose.monitor", "diagnose.report", "diagnose.engine",
    "checks.smtp.ladder", "checks.targets.ssh", "checks.targets.snapshot", "checks.dns", "diagnose.probe_render",
    "paramiko", "dns", "rich", "questionary", "yaml", "httpcore", "cryptography", "ssl", "importlib.metadata",
    "hashlib", "bz2", "lzma", "shutil", "pkgutil", "email",
    # issue 18, start-up of a probe: subprocess (LocalTarget spawns postconf itself), the idna codec (an
    # address is connected to as bytes), the config report's retry model. (inspect, ast and dis come with
    # the standard library's dataclasses: a stand-in module that deferred them saved ~9 ms and was removed)
    "subprocess", "encodings.idna", "stringprep", "checks.postfix.retry",
)  # fmt: skip

_RUN = """
import json, sys
from diagnose.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:  # --help
    code = exc.code
sys.stdout.flush()
sys.stderr.write("\\nMODULES " + json.dumps(sorted(sys.modules)) + " EXIT " + str(code))
"""


def modules_after(*argv: str) -> tuple[set[str], str, int]:
    """(modules imported, stdout, exit code) of `pfdiag ARGV` in a fresh interpreter."""
    proc = subprocess.run([sys.executable, "-c", _RUN, *argv], capture_output=True, text=True, cwd=ROOT, timeout=60)
    tail = proc.stderr.rsplit("\nMODULES ", 1)
    assert len(tail) == 2, proc.stderr[-2000:]
    mods, code = tail[1].rsplit(" EXIT ", 1)
    return set(json.loads(mods)), proc.stdout, int(code) if code.strip().lstrip("-").isdigit() else -1


def loaded(mods: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(m for m in mods if any(m == p or m.startswith(p + ".") for p in prefixes))


def test_top_level_help_loads_no_command_dependencies():
    mods, out, code = modules_after("--help")
    assert code == 0 and "probe" in out and "report" in out  # the command list is still there
    assert not loaded(mods, HEAVY), "pfdiag --help imported them"


@pytest.mark.parametrize("command", sorted(command_names()))
def test_command_help_loads_no_heavy_dependencies(command):
    mods, out, code = modules_after(command, "--help")
    assert code == 0 and f"pfdiag {command}" in out
    assert not loaded(mods, HEAVY), f"pfdiag {command} --help imported them"


def test_a_probe_loads_only_what_a_probe_needs():
    with SmtpPeer() as peer:
        mods, out, code = modules_after("probe", f"[{peer.host}]:{peer.port}", "--rcpt", "someone@peer.test",
                                        "--timeouts", "short", "--helo", "client.test", "-f", "json")  # fmt: skip
    doc = json.loads(out)
    assert code == 0 and [p["phase"] for p in doc["probe"]["phases"]][:5] == ["connect", "banner", "ehlo", "mail", "rcpt"]
    assert {"checks.smtp.session", "checks.nexthop", "diagnose.probedoc"} <= mods  # the checker sees real imports
    assert not loaded(mods, NOT_FOR_A_PROBE), "a plain probe imported them"


def test_a_probe_shown_as_text_loads_its_renderer_and_no_more():
    """The text report of a probe is plain text (diagnose.probe_render): no rich, and otherwise
    the same modules as the JSON one."""
    with SmtpPeer() as peer:
        mods, out, code = modules_after("probe", f"[{peer.host}]:{peer.port}", "--rcpt", "someone@peer.test",
                                        "--timeouts", "short", "--helo", "client.test", "-f", "text")  # fmt: skip
    assert code == 0 and "rcpt" in out and "diagnose.probe_render" in mods
    assert not loaded(mods, tuple(m for m in NOT_FOR_A_PROBE if m != "diagnose.probe_render")), "a text probe imported them"


def test_listing_the_checks_imports_no_plugin_machinery_without_plugins():
    """importlib.metadata (~35 ms: email, zipfile, csv) loads only when a distribution on sys.path
    declares pfdiag.checks entry points (test_registry.py installs one and finds it)."""
    mods, out, code = modules_after("checks", "-f", "json")
    assert code == 0 and "smtp.nexthops" in out
    assert "importlib.metadata" not in mods and "email" not in mods


def test_the_checker_sees_a_heavy_import():
    """The tests above would pass vacuously if modules_after missed imports: it must see one."""
    mods, _, code = modules_after("explain", "E09", "-f", "json")
    assert code == 0 and "diagnose.causes" in mods and loaded(mods, ("diagnose.causes",))


def test_queue_parser_constants_match_their_modules():
    """queue's parser spells out what it would otherwise import (for a light --help): kept equal here."""
    from checks.postfix.postqueue import QUEUE_NAMES
    from diagnose import actions, queueselect, restore
    from diagnose.commands import queue

    assert queue.ACTIONS == (*actions.SPECS, *restore.MORE)
    assert queue.QUEUE_NAMES == QUEUE_NAMES
    assert queue.JOIN_CAP_DAYS * 86400 == queueselect.JOIN_CAP


def test_lazy_exports_resolve():
    """checks.smtp's lazily loaded names and the commands' re-exports for scripts are all there."""
    import checks.smtp as smtp
    from diagnose.commands import config, probe, queue

    for name in smtp.__all__:
        assert getattr(smtp, name) is not None, name
    assert callable(probe.render_md) and callable(queue.render_text) and config.SEED and callable(config.proposal)
    with pytest.raises(AttributeError):
        getattr(smtp, "no_such_name")


