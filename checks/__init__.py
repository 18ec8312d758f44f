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

from checks.model import CommandResult, Evidence, Finding, Severity
from checks.registry import CheckSpec, Context, check

__all__ = ["CheckSpec", "CommandResult", "Context", "Evidence", "Finding", "Severity", "check"]
__version__ = "0.1.0"
