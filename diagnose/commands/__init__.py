"""One module per pfdiag subcommand: add_parser(subparsers) and run(args) -> exit code.

Every module in this package that defines ``add_parser`` is a subcommand; ``ORDER`` (an
int, default 100) sets its place in ``pfdiag --help``. Adding a command is adding a file.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def command_modules() -> list[ModuleType]:
    mods = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        if callable(getattr(mod, "add_parser", None)):
            mods.append(mod)
    return sorted(mods, key=lambda m: (getattr(m, "ORDER", 100), m.__name__))
