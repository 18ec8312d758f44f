"""The layering of pfdiag, checked on the source (AST), so that it cannot erode quietly:

- the core (checks/ and diagnose/, except the command glue diagnose/commands/ and diagnose/cli.py)
  never imports diagnose.commands: commands call the core, never the other way round;
- process and network I/O (subprocess, socket, paramiko) happen only in checks/targets/;
- questionary (terminal prompts) only in the wizard, diagnose/wizard.py.

Every import counts, at module level or inside a function. A rule another change is still
bringing a module into line with is listed in PENDING: its test is an xfail until then, and
the rule holds strictly for every other module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("checks", "diagnose")


def _modules() -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def _imports(file: Path) -> set[str]:
    """Every module name imported by the file: "a.b" for `import a.b` and `from a.b import c`,
    plus "a.b.c" for `from a.b import c` (c may be a module)."""
    tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _is_core(path: str) -> bool:
    return not path.startswith("diagnose/commands/") and path != "diagnose/cli.py"


def _under(name: str, top: str) -> bool:
    return name == top or name.startswith(top + ".")


def _breaks(rule: str, path: str, file: Path | None = None) -> list[str]:
    """The imports of ``path`` (relative to the repository; read from ``file`` if given) that break ``rule``."""
    names = _imports(file or ROOT / path)
    if rule == "core-imports-no-commands":
        return sorted(n for n in names if _is_core(path) and _under(n, "diagnose.commands"))
    if rule == "io-only-in-targets":
        if path.startswith("checks/targets/"):
            return []
        return sorted(n for n in names if any(_under(n, top) for top in ("subprocess", "socket", "paramiko")))
    if rule == "questionary-only-in-wizard":
        return sorted(n for n in names if path != "diagnose/wizard.py" and _under(n, "questionary"))
    raise AssertionError(rule)


RULES = ("core-imports-no-commands", "io-only-in-targets", "questionary-only-in-wizard")

# (rule, module): why it still breaks the rule, while a change that brings it into line is under way.
# Empty: every module keeps every rule, and test_rule_holds_for_every_module_not_pending checks them all.
PENDING: dict[tuple[str, str], str] = {}


@pytest.mark.parametrize("rule", RULES)
def test_rule_holds_for_every_module_not_pending(rule: str) -> None:
    broken = {path: names for path in _modules() if (rule, path) not in PENDING and (names := _breaks(rule, path))}
    assert not broken, f"{rule}: {broken}"


def test_every_pending_exception_still_names_a_module_that_breaks_its_rule() -> None:
    """An exception outlives its reason only as long as the module still breaks the rule."""
    for (rule, path), why in PENDING.items():
        assert (ROOT / path).exists() and _breaks(rule, path), f"{path} keeps {rule} now: drop it from PENDING ({why})"


def test_the_checker_sees_imports_in_functions_and_from_forms(tmp_path: Path) -> None:
    """The rules would pass vacuously if the scanner missed import forms: it must see each one."""
    src = tmp_path / "probe.py"
    src.write_text("import os\ndef f():\n    import socket\n    from diagnose.commands import queue\n    from questionary import text\n")
    rel = "diagnose/probe_module.py"
    assert _breaks("io-only-in-targets", rel, src) == ["socket"]
    assert _breaks("core-imports-no-commands", rel, src) == ["diagnose.commands", "diagnose.commands.queue"]
    assert _breaks("questionary-only-in-wizard", rel, src) == ["questionary", "questionary.text"]
    assert _breaks("io-only-in-targets", "checks/targets/x.py", src) == []  # targets do the I/O
    assert _breaks("core-imports-no-commands", "diagnose/cli.py", src) == []  # the CLI loads commands
    assert _breaks("questionary-only-in-wizard", "diagnose/wizard.py", src) == []


def test_the_decision_model_touches_nothing_outside_itself() -> None:
    """diagnose/flow.py is documented as pure: no file system, processes or network (the session
    and the checks do that), so it imports none of their modules and calls no open()."""
    path = ROOT / "diagnose" / "flow.py"
    io_modules = ("os", "pathlib", "shutil", "io", "glob", "tempfile", "subprocess", "socket", "checks.targets")
    assert not [n for n in _imports(path) if any(_under(n, m) for m in io_modules)]
    calls = [node.func.id for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)]  # fmt: skip
    assert "open" not in calls and "print" not in calls and "input" not in calls


# The one concurrency runner (checks/runner.py) and I/O plumbing inside the target seam (the
# stderr reader of checks/targets/streams.py, the deadline watchdog Timer of an SSH channel in
# checks/targets/ssh/channels.py) are the only modules of checks/ and diagnose/ that start threads.
THREAD_STARTERS = ("checks/runner.py", "checks/targets/streams.py", "checks/targets/ssh/channels.py")


def _thread_starts(file: Path) -> list[str]:
    """What in the file starts a thread or makes a thread pool: threading.Thread / Timer (called,
    subclassed or imported by name), concurrent.futures.ThreadPoolExecutor, the _thread module."""
    tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("Thread", "Timer", "ThreadPoolExecutor"):
            found.append(f"line {node.lineno}: .{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module in ("threading", "concurrent.futures", "concurrent.futures.thread"):
            found += [f"line {node.lineno}: from {node.module} import {a.name}" for a in node.names
                      if a.name in ("Thread", "Timer", "ThreadPoolExecutor", "*")]  # fmt: skip
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [f"line {node.lineno}: import {m}" for m in mods if _under(m, "_thread") or _under(m, "multiprocessing.dummy")]
        elif isinstance(node, ast.Name) and node.id == "ThreadPoolExecutor":
            found.append(f"line {node.lineno}: ThreadPoolExecutor")
    return found


def test_threads_start_only_in_the_runner() -> None:
    """Issue 11: one concurrency runner. Every other module runs its concurrent work through
    checks.runner (run_within, Batch, start)."""
    starters = {p: found for p in _modules() if p not in THREAD_STARTERS and (found := _thread_starts(ROOT / p))}
    assert not starters, f"threads started outside checks/runner.py: {starters}"
    assert _thread_starts(ROOT / "checks/runner.py"), "the runner itself must be where threads start"


def test_the_thread_scanner_sees_every_form(tmp_path: Path) -> None:
    src = tmp_path / "t.py"
    src.write_text("import threading\nimport _thread\nfrom threading import Thread\n"
                   "from concurrent.futures import ThreadPoolExecutor\nimport concurrent.futures as cf\n"
                   "def f():\n    threading.Thread(target=f).start()\n    cf.ThreadPoolExecutor(2)\n"
                   "    threading.Lock()\n")  # fmt: skip
    found = _thread_starts(src)
    assert [f.split(":")[0] for f in found].count("line 7") == 1 and any("line 8" in f for f in found)
    assert any("_thread" in f for f in found) and any("import Thread" in f for f in found)
    assert any("import ThreadPoolExecutor" in f for f in found) and not any("line 9" in f for f in found)
