"""One module per pfdiag subcommand: add_parser(subparsers) and run(args) -> exit code.

Every module in this package that defines ``add_parser`` is a subcommand; ``ORDER`` (an
int, default 100) sets its place in ``pfdiag --help``. Adding a command is adding a file.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


# subcommand name -> module name, where they differ
ALIASES = {"checks": "listchecks"}


def command_modules(only: str | None = None) -> list[ModuleType]:
    """Every command module; with ``only`` (the subcommand the user typed), just that one,
    so that running one command does not import what every other command needs."""
    names = [info.name for info in pkgutil.iter_modules(__path__) if not info.name.startswith("_")]
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
    names = {info.name for info in pkgutil.iter_modules(__path__) if not info.name.startswith("_")}
    return (names - set(ALIASES.values())) | set(ALIASES)
