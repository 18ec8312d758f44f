"""Times and time zones given on the command line: --since/--until, --tz."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone, tzinfo

from checks.errors import UsageError

_RELATIVE = re.compile(r"^(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_when(text: str, now: float | None = None) -> float:
    """'24h', '2d12h', '90m' (ago), or an ISO date/time ('2026-11-28', '2026-11-28T10:00')."""
    now = time.time() if now is None else now
    value = text.strip()
    m = _RELATIVE.match(value)
    if value and m and any(m.groups()):
        w, d, h, mi, s = (int(g) if g else 0 for g in m.groups())
        return now - (((w * 7 + d) * 24 + h) * 60 + mi) * 60 - s
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise UsageError(f"cannot read the time {text!r}: use 24h, 7d, 90m, or 2026-11-28T10:00") from None


def parse_zone(name: str | None) -> tzinfo | None:
    if not name:
        return None
    if name.upper() in ("UTC", "Z"):
        return timezone.utc
    m = re.fullmatch(r"([+-])(\d\d):?(\d\d)", name)
    if m:
        delta = timedelta(hours=int(m[2]), minutes=int(m[3]))
        return timezone(-delta if m[1] == "-" else delta)
    try:
        from zoneinfo import ZoneInfo

        return ZoneInfo(name)
    except Exception:
        raise UsageError(f"unknown time zone {name!r}: use an IANA name like Europe/Berlin, UTC, or +01:00") from None
