"""pfdiag report / explain / checks through main(argv), the way a user runs them; and a
third-party check package installed with pip, including a broken one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from diagnose.cli import main


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:
    rc = main(list(argv))
    out = capsys.readouterr().out
    return rc, json.loads(out)


def test_report_demo_json(capsys: pytest.CaptureFixture[str]) -> None:
    rc, doc = run_json(capsys, "report", "--demo", "-f", "json")
    assert rc == 4 == doc["verdict"]["exit_code"]
    assert doc["schema"] == "pfdiag.report/1" and doc["answers"]["target"] == "demo"
    assert doc["answers"].get("send_test") is None, "report mode asks nothing: nothing to send on a snapshot"


def test_report_domain_focus(capsys: pytest.CaptureFixture[str]) -> None:
    rc, doc = run_json(capsys, "report", "--demo", "-f", "json", "--domain", "greylist.test")
    assert rc == 4 and [c["id"] for c in doc["causes"]] == ["E21"]


def test_report_domain_without_trouble_is_no_problem(capsys: pytest.CaptureFixture[str]) -> None:
    rc, doc = run_json(capsys, "report", "--demo", "-f", "json", "--domain", "healthy.test")
    assert doc["causes"] == [] and doc["verdict"]["status"] in ("no-problem", "warnings")
    assert rc in (0, 5)


def test_report_answers_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "answers"
    f.write_text("# from the ticket\nsymptom = eod\ndomain=eod-stall.test\n")
    rc, doc = run_json(capsys, "report", "--demo", "-f", "json", "--answers", str(f))
    assert doc["answers"]["symptom"] == "eod" and [c["id"] for c in doc["causes"]] == ["E09"]
    j = tmp_path / "answers.json"
    j.write_text(json.dumps({"domain": "mailbox-full.test"}))
    rc, doc = run_json(capsys, "report", "--demo", "-f", "json", "--answers", str(j))
    assert [c["id"] for c in doc["causes"]] == ["E27"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--answer", "send_test=yes"], "missing answer: test_to"),
        (["--answer", "send_test=perhaps"], "yes or no"),
        (["--answer", "nonsense"], "KEY=VALUE"),
        (["--answer", "colour=red"], "unknown answer"),
        (["--answer", "target=local"], "comes from --host"),
        (["--answers", "/nonexistent/answers"], "cannot read answers"),
        (["--budget", "0"], "--budget"),
        (["--format", "pdf"], "invalid choice"),
    ],
)
def test_report_usage_errors_are_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["report", "--demo", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc in (1, 2) and message in err[-1] and "Traceback" not in "\n".join(err)


def test_report_markdown_to_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ticket.md"
    assert main(["report", "--demo", "-f", "md", "-o", str(out)]) == 4
    text = out.read_text()
    assert text.startswith("# pfdiag report:") and "## Causes" in text and "E09" in text
    assert capsys.readouterr().out == ""


def test_explain(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "eod-timeout"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("E09 eod-timeout") and "Confirm with:" in out and "Fix:" in out
    assert main(["explain", "E99"]) == 2
    assert "unknown cause" in capsys.readouterr().err


def test_checks_lists_builtins(capsys: pytest.CaptureFixture[str]) -> None:
    rc, doc = run_json(capsys, "checks", "--format", "json")
    ids = {c["id"] for c in doc["checks"]}
    assert rc == 0 and {"config.timeouts", "postfix.running", "smtp.nexthops", "smtp.eod_ladder"} <= ids


PLUGIN = '''
from checks import check, Finding, Severity

@check("acme.relay_ok", title="ACME relay policy")
def relay_ok(ctx):
    """ACME's own rule: says where it ran."""
    return [Finding("acme.relay_ok", Severity.WARNING, f"acme rule ran on {ctx.target.where}")]

@check("acme.crashes", title="a check with a bug")
def crashes(ctx):
    """Raises: the diagnosis must go on without it."""
    raise RuntimeError("acme bug")
'''


def _pip_install(tmp_path: Path, name: str, module: str, entry: str) -> Path:
    src = tmp_path / f"src-{name}"
    (src / name).mkdir(parents=True)
    (src / name / "__init__.py").write_text(module)
    (src / "pyproject.toml").write_text(textwrap.dedent(f"""
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "{name.replace('_', '-')}"
        version = "1.0"
        [project.entry-points."pfdiag.checks"]
        {entry}
        """))
    site = tmp_path / "site"
    res = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(src)],
                         capture_output=True, text=True, timeout=300)
    if res.returncode != 0:
        pytest.fail(f"pip could not install the test plugin: {res.stderr[-500:]}")
    return site


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("plugins")
    site = _pip_install(tmp, "pfdiag_acme", PLUGIN, 'acme = "pfdiag_acme"')
    _pip_install(tmp, "pfdiag_broken", "import does_not_exist_anywhere\n", 'broken = "pfdiag_broken"')
    return site


def _pfdiag(site: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, "-m", "diagnose.cli", *argv], capture_output=True, text=True, env=env, timeout=120)


def test_installed_plugins_are_listed_and_a_broken_one_is_reported(plugin_site: Path) -> None:
    res = _pfdiag(plugin_site, "checks", "--format", "json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    origins = {c["id"]: c["origin"] for c in doc["checks"]}
    assert origins["acme.relay_ok"].startswith("pfdiag-acme") or origins["acme.relay_ok"].startswith("pfdiag_acme")
    assert any("does_not_exist_anywhere" in p["error"] for p in doc["problems"])


def test_report_runs_plugins_and_survives_broken_ones(plugin_site: Path) -> None:
    res = _pfdiag(plugin_site, "report", "--demo", "-f", "json")
    assert res.returncode == 4, res.stderr
    doc = json.loads(res.stdout)
    findings = {f["check"]: f for f in doc["findings"]}
    assert findings["acme.relay_ok"]["summary"] == "acme rule ran on snapshot:demo-snapshot.tar.gz"
    assert findings["acme.crashes"]["severity"] == "error" and "acme bug" in findings["acme.crashes"]["summary"]
    assert any("does_not_exist_anywhere" in e["summary"] for e in doc["errors"])
    assert [c["id"] for c in doc["causes"]][:2] == ["E09", "E32"], "plugins do not disturb the ranking"
    res = _pfdiag(plugin_site, "report", "--demo", "-f", "json", "--no-plugins")
    assert "acme.relay_ok" not in res.stdout


def test_without_postfix_report_shows_the_demo_and_says_so(tmp_path: Path) -> None:
    # a machine without Postfix: no postconf on PATH, no log
    env = {"PATH": str(Path(sys.executable).parent), "HOME": str(tmp_path), "LANG": "C.UTF-8", "PFDIAG_SBIN_PATH": "",
           "PFDIAG_MAIL_LOGS": str(tmp_path / "no-mail.log")}
    res = subprocess.run([sys.executable, "-m", "diagnose.cli", "report", "-f", "json"], capture_output=True,
                         text=True, env=env, cwd=tmp_path, timeout=120)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "nothing to diagnose on this machine" in res.stderr and "demo snapshot" in res.stderr
    doc = json.loads(res.stdout)
    assert doc["target"]["where"] == "snapshot:demo-snapshot.tar.gz" and doc["causes"]


def test_an_idle_installed_postfix_also_gets_the_demo(tmp_path: Path) -> None:
    """postconf exists but there is no log and postqueue fails (Postfix stopped): nothing to read."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, script in (("postconf", "echo ''"), ("postqueue", "echo 'postqueue: fatal: Queue report unavailable - mail system is down' >&2; exit 69")):
        f = bin_dir / name
        f.write_text(f"#!/bin/sh\n{script}\n")
        f.chmod(0o755)
    env = {"PATH": f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8",
           "PFDIAG_SBIN_PATH": "", "PFDIAG_MAIL_LOGS": str(tmp_path / "no-mail.log")}
    res = subprocess.run([sys.executable, "-m", "diagnose.cli", "report", "-f", "json"], capture_output=True,
                         text=True, env=env, cwd=tmp_path, timeout=120)  # fmt: skip
    assert res.returncode == 0 and "Postfix is not running here" in res.stderr
    assert json.loads(res.stdout)["target"]["live"] is False
