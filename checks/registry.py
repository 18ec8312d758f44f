"""Which checks exist: built-ins (an explicit tuple you can grep) plus third-party
checks from the entry point group ``pfdiag.checks``.

A check is a plain function ``(ctx: Context) -> Iterable[Finding]`` decorated with
``@check(...)``; its docstring is what ``pfdiag explain``/``pfdiag checks`` show.
A plugin that fails to load becomes a LoadProblem record, never an exception.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from checks.model import Finding
from checks.targets.base import Target

ENTRY_POINT_GROUP = "pfdiag.checks"

# Modules whose @check functions are built in. Listed, not discovered, so that
# what ships is visible in one place.
BUILTIN_MODULES: tuple[str, ...] = ("checks.builtin", "diagnose.outbreak")  # the second: its check reads the logs report


@dataclass(frozen=True)
class Context:
    """What a check gets: where to look, and what the operator told us."""

    target: Target
    answers: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)


CheckFunc = Callable[[Context], Iterable[Finding]]


@dataclass(frozen=True)
class CheckSpec:
    id: str
    title: str
    func: CheckFunc
    tags: tuple[str, ...] = ()
    origin: str = "builtin"  # or the plugin's distribution/entry point name

    @property
    def doc(self) -> str:
        return inspect.cleandoc(self.func.__doc__ or "")


@dataclass(frozen=True)
class LoadProblem:
    origin: str
    error: str


def check(check_id: str, *, title: str, tags: Iterable[str] = ()) -> Callable[[CheckFunc], CheckFunc]:
    """Mark a function as a pfdiag check."""

    def mark(func: CheckFunc) -> CheckFunc:
        func.__pfdiag_check__ = CheckSpec(check_id, title, func, tuple(tags))  # type: ignore[attr-defined]
        return func

    return mark


def _specs_in(module: Any, origin: str) -> list[CheckSpec]:
    out = []
    for obj in vars(module).values():
        spec = getattr(obj, "__pfdiag_check__", None)
        if isinstance(spec, CheckSpec):
            out.append(CheckSpec(spec.id, spec.title, spec.func, spec.tags, origin))
    return out


def _group_declared(group: str) -> bool:
    """Whether any distribution on sys.path may declare entry points of ``group``: the files
    importlib.metadata reads them from (``*.dist-info/entry_points.txt``, ``*.egg-info/entry_points.txt``)
    are looked at with os.scandir first, so that a machine without pfdiag plugins never imports
    importlib.metadata. Anything this cannot read quickly (a zip file on sys.path, an unreadable
    directory) answers True: the full discovery then decides, as before."""
    import os
    import sys

    needle = f"[{group}]"
    for entry in sys.path:
        path = entry or "."
        try:
            if not os.path.isdir(path):
                if os.path.exists(path):  # a zip archive (or something else importlib may read)
                    return True
                continue
            with os.scandir(path) as it:
                infos = [e.path for e in it if e.name.endswith((".dist-info", ".egg-info"))]
        except OSError:
            return True
        for info in infos:
            try:
                with open(os.path.join(info, "entry_points.txt"), encoding="utf-8", errors="replace") as f:
                    if needle in f.read():
                        return True
            except (FileNotFoundError, NotADirectoryError):  # no entry points (an egg-info may be a file)
                continue
            except OSError:
                return True
    return False


def load_checks(include_plugins: bool = True) -> tuple[list[CheckSpec], list[LoadProblem]]:
    specs: list[CheckSpec] = []
    problems: list[LoadProblem] = []
    for name in BUILTIN_MODULES:
        specs.extend(_specs_in(importlib.import_module(name), "builtin"))
    if include_plugins and _group_declared(ENTRY_POINT_GROUP):
        from importlib.metadata import entry_points  # ~35 ms of CPU (email, zipfile, ...): only with a plugin

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            origin = f"{ep.dist.name if ep.dist else '?'}:{ep.name}"
            try:
                obj = ep.load()
            except Exception as exc:  # a broken plugin is reported, never fatal
                problems.append(LoadProblem(origin, f"{type(exc).__name__}: {exc}"))
                continue
            spec = getattr(obj, "__pfdiag_check__", None)
            if isinstance(spec, CheckSpec):
                specs.append(CheckSpec(spec.id, spec.title, spec.func, spec.tags, origin))
            elif inspect.ismodule(obj):
                found = _specs_in(obj, origin)
                if not found:
                    problems.append(LoadProblem(origin, "module defines no @check function"))
                specs.extend(found)
            else:
                problems.append(LoadProblem(origin, "entry point is neither a @check function nor a module"))
    seen: dict[str, CheckSpec] = {}
    for spec in specs:
        if spec.id in seen:
            problems.append(LoadProblem(spec.origin, f"check id {spec.id!r} already defined by {seen[spec.id].origin}"))
            continue
        seen[spec.id] = spec
    return list(seen.values()), problems
