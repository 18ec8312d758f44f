"""One module per pfdiag subcommand: add_parser(subparsers) and run(args) -> exit code.

Every module in this package that defines ``add_parser`` is a subcommand; ``ORDER`` (an
int, default 100) sets its place in ``pfdiag --help``. Adding a command is adding a file.

`pfdiag --help` imports every command module and `pfdiag CMD --help` one: at module level a command
imports only what its parser needs (argparse, the shared option helpers); what it runs on is imported
in run() or through LazyModule. tests/unit/test_imports_lazy.py holds every command to that.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Any


# subcommand name -> module name, where they differ
ALIASES = {"checks": "listchecks"}


def command_modules(only: str | None = None) -> list[ModuleType]:
    """Every command module; with ``only`` (the subcommand the user typed), just that one,
    so that running one command does not import what every other command needs."""
    names = _module_names()
    if only is not None:
        wanted = ALIASES.get(only, only)
        if wanted in names:
            names = [wanted]
    mods = []
    for name in names:
        mod = importlib.import_module(f"{__name__}.{name}")
        if callable(getattr(mod, "add_parser", None)):
            mods.append(mod)
    return sorted(mods, key=lambda m: (getattr(m, "ORDER", 100), m.__name__))


def command_names() -> set[str]:
    """The subcommands' names, without importing them (for telling a command from an option's value)."""
    names = set(_module_names())
    return (names - set(ALIASES.values())) | set(ALIASES)


def _module_names() -> list[str]:
    """The command modules' names, from the package's directory (pkgutil.iter_modules would load
    inspect, ~5 ms of every start-up)."""
    found = set()
    for path in __path__:
        try:
            entries = os.listdir(path)
        except OSError:
            continue
        for entry in entries:
            stem, dot, ext = entry.partition(".")
            if dot and not stem.startswith("_") and (ext == "py" or (ext.startswith("cpython") and ext.endswith("so"))):
                found.add(stem)
    return sorted(found)


class LazyModule:
    """A module imported on its first attribute access: command modules keep their heavy helpers
    as module-level names (``mon = LazyModule("diagnose.monitor")``) while ``pfdiag CMD --help``
    and ``pfdiag --help`` import none of them. Declare the real import under TYPE_CHECKING for mypy."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name}>"

