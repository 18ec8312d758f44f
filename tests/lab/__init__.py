"""The real test lab: Postfix, SMTP peers and DNS on loopback (see tests/conftest.py).

``unavailable()`` is the one rule for a lab that cannot start here: skip loudly (the reasons
are repeated in a banner at the end of the pytest run), or fail under CI=true.
"""

from __future__ import annotations

import os
from typing import NoReturn

SKIPPED: list[str] = []  # reasons the lab did not run in this session (for the end-of-run banner)


def unavailable(reason: str) -> NoReturn:
    import pytest  # here, not at the top: lab helpers also run as plain scripts without pytest

    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true, and {reason}", pytrace=False)
    SKIPPED.append(reason)
    pytest.skip(f"LAB SKIPPED: {reason}")
