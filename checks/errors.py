"""pfdiag's own exception tree.

    PfdiagError                 anything pfdiag reports as one clear line (exit 1)
    ├── UsageError              the command line or an answer is wrong (exit 2)
    ├── InputError              a file, bundle or piece of input cannot be read
    └── TargetError             running something on a target failed
        ├── CommandNotFound     the program is not installed there
        ├── CommandTimeout      it did not finish within its timeout
        ├── ConnectFailed       a TCP connection could not be opened (kind: refused,
        │                       timeout, unreachable, ...): a finding, usually
        └── ConnectRefused      this target cannot open connections (a snapshot)

Lower-level errors (OSError, subprocess, paramiko, gzip) are mapped to the most
specific of these at the seam where they happen, so callers never see them.
"""

from __future__ import annotations


class PfdiagError(Exception):
    """An error pfdiag explains to the user in one line."""

    exit_code = 1


class UsageError(PfdiagError):
    exit_code = 2


class InputError(PfdiagError):
    pass


class TargetError(PfdiagError):
    pass


class CommandNotFound(TargetError):
    pass


class CommandTimeout(TargetError):
    pass


class ConnectFailed(TargetError):
    def __init__(self, message: str, kind: str = "error") -> None:
        super().__init__(message)
        self.kind = kind  # "refused", "timeout", "unreachable", "dns", "error"


class ConnectRefused(TargetError):
    pass


class CheckSkipped(PfdiagError):
    """A check that does not apply here says why (raise CheckSkipped("a recording cannot be probed")):
    its step is "skipped" with that reason, not "ok" and not an error."""
