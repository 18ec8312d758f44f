"""pfdiag checks: gather evidence about a Postfix server.

Public API for check authors::

    from checks import check, Context, Finding, Evidence, Severity

    @check("example.thing", title="Example", tags=("config",))
    def thing(ctx: Context):
        '''What this check looks at, and what a failure means.'''
        result = ctx.target.run(["postconf", "-h", "relayhost"])
        yield Finding("example.thing", Severity.OK, "relayhost is " + result.stdout.strip())

Checks never import diagnose; they get a Target and return Findings.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CheckSkipped", "CheckSpec", "CommandResult", "Context", "Evidence", "Finding", "Severity", "check"]
__version__ = "0.1.0"

_HOME = {"CommandResult": "checks.model", "Evidence": "checks.model", "Finding": "checks.model",
         "Severity": "checks.model", "CheckSpec": "checks.registry", "Context": "checks.registry",
         "check": "checks.registry", "CheckSkipped": "checks.errors"}  # fmt: skip


def __getattr__(name: str) -> Any:
    """Imported on first use (PEP 562): `import checks.errors` must not pay for the registry."""
    if name in _HOME:
        import importlib

        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module 'checks' has no attribute {name!r}")
