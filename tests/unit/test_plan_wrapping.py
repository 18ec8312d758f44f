"""A queue action's dry-run plan (`pfdiag queue hold ...` without --yes, and the wizard's) at 80
columns: an item too long for a line goes on with a hanging indent, never again at the margin."""

from __future__ import annotations

import io
import re

from checks.postfix.postqueue import QueuedMessage, QueuedRecipient
from diagnose import actions as act
from diagnose import queueselect as qs
from diagnose.textsafe import console

NOW = 1_764_000_000.0
LONG = "a-very-long-local-part.with.dots+and-a-tag"


def _plan(action: str = "hold") -> act.Plan:
    msgs = []
    for i in range(40):  # forty ids: postsuper's command line is one long item
        rcpts = tuple(QueuedRecipient(f"{LONG}{k}@destination-number-{i % 14}.example", "451 4.7.1 greylisted, try again later")
                      for k in range(3))  # fmt: skip
        msgs.append(QueuedMessage(f"{0x1A2B3C4D5 + i:X}", "deferred", NOW, 1200, f"{LONG}@sender.example", rcpts))
    return act.build_plan(action, msgs, "/etc/postfix-with-a-long-config-directory-name", None)


def _items_kept_whole(wide: list[str], narrow: list[str], width: int = 80) -> None:
    """narrow is wide wrapped: each item's first line at the item's indent, its other lines further in."""
    assert all(len(ln) <= width or len(ln.split()) == 1 for ln in narrow), [ln for ln in narrow if len(ln) > width]
    i = 0
    for item in wide:
        indent = len(item) - len(item.lstrip(" "))
        assert narrow[i][:indent] == " " * indent and narrow[i][indent:indent + 1] != " ", (item, narrow[i])
        words = narrow[i].split()
        i += 1
        while len(words) < len(item.split()):
            ln = narrow[i]
            assert len(ln) - len(ln.lstrip(" ")) > indent, f"back at the margin in the middle of an item: {ln!r}"
            words += ln.split()
            i += 1
        assert words == item.split(), item
    assert i == len(narrow)


def test_the_queue_commands_plan_hangs_its_wrapped_lines() -> None:
    plan = _plan("delete")
    plan.backup_dir = "/var/backups/pfdiag-queue/2026-12-06T19-00-00-long-enough-to-wrap"
    narrow = qs.render_plan(plan).splitlines()
    wide = qs.render_plan(plan, width=100_000).splitlines()
    assert max(map(len, wide)) > 80 and len(narrow) > len(wide)  # there was something to wrap
    _items_kept_whole(wide, narrow)
    assert any(ln.startswith("      ") and re.search(r"-d [0-9A-F]{9}", ln) for ln in narrow)  # postsuper's ids, hanging


def test_the_wizards_plan_hangs_its_wrapped_lines_at_80_columns() -> None:
    from diagnose.wizard import _show_plan

    buf = io.StringIO()
    _show_plan(console(file=buf, width=200, color_system=None), _plan())  # a wide terminal: still 80
    lines = buf.getvalue().splitlines()
    assert lines and all(len(ln) <= 80 for ln in lines), [ln for ln in lines if len(ln) > 80]
    starts = ("dry run:", "would run:", "warning:", "  ... ")
    items = [ln for ln in lines if ln.startswith(starts) or re.match(r"  [0-9A-F]{9,} ", ln)]
    rest = [ln for ln in lines if ln not in items]
    assert rest and all(ln.startswith("    ") for ln in rest), rest  # continuation lines hang
    assert any(ln.startswith("would run:") for ln in lines)
