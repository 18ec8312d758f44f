"""Every report opens with the verdict and 'Do this now': at most three steps, in order, each a
sentence and, where it is a change, the exact command (diagnose/report.do_now)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from diagnose.cli import main
from diagnose.report import do_now

ROOT = Path(__file__).resolve().parents[2]


def _cause(cid: str, *, queued: int = 3, fixes: list[tuple[str, str]] = (), domains: tuple[str, ...] = ("example.net",),
           dup: int = 0, root: bool = True, tier: int = 2) -> dict:  # type: ignore[assignment]
    return {"id": cid, "root_cause": root, "tier": tier, "possible_duplicates": dup,
            "impact": {"queued_recipients": queued}, "domains": [{"domain": d, "count": 1} for d in domains],
            "fixes": [{"kind": k, "text": t} for k, t in fixes]}  # fmt: skip


def test_end_of_data_timeouts_hold_first_then_the_fix_then_release() -> None:
    steps = do_now([_cause("E09", dup=2, fixes=[("postconf", "Local override: postconf -X smtp_data_done_timeout")])], True)
    assert [s["command"] for s in steps] == [
        "pfdiag queue hold --cause E09 --domain example.net", "postconf -X smtp_data_done_timeout",
        "pfdiag queue release --cause E09 --domain example.net && pfdiag queue retry --cause E09 --domain example.net"]
    assert steps[1]["step"] == "Local override"


def test_greylisting_says_wait_and_offers_no_retry() -> None:
    steps = do_now([_cause("E21", fixes=[("wait", "Usually nothing: wait for the next retry")])], True)
    assert [s["command"] for s in steps] == [None] and "wait" in steps[0]["step"]


def test_a_contact_fix_is_a_sentence_and_collateral_never_leads() -> None:
    causes = [_cause("E11", root=False, tier=4, fixes=[("advice", "Fix the inner cause first")]),
              _cause("E23", queued=0, fixes=[("contact", "Ask the list: request delisting at https://x.example")]),
              _cause("E24", fixes=[("postconf", "Set the name: postconf -e 'smtp_helo_name = mx.example.org'")])]
    steps = do_now(causes, True)
    assert steps[0] == {"step": "Ask the list: request delisting at https://x.example", "command": None, "cause": "E23",
                        "kind": "contact"}  # fmt: skip
    assert steps[1]["cause"] == "E24" and steps[1]["command"] == "postconf -e 'smtp_helo_name = mx.example.org'"
    assert len(do_now(causes * 3, True)) <= 3


def test_the_demo_report_opens_with_the_steps_at_80_columns(capsys: pytest.CaptureFixture[str]) -> None:
    env = {**os.environ, "COLUMNS": "80", "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-m", "diagnose.cli", "report", "--demo"], capture_output=True, text=True,
                         env=env, timeout=120)  # fmt: skip
    first = res.stdout.splitlines()[:40]
    assert any(line.startswith("Do this now") for line in first)
    assert "   pfdiag queue hold --cause E09 --domain partner.test" in first
    assert all(len(line) <= 80 for line in first)  # a long command is continued with " \\", never cut
    assert main(["report", "--demo", "-f", "json"]) == 4
    doc = json.loads(capsys.readouterr().out)
    assert doc["do_now"][0]["command"].startswith("pfdiag queue hold --cause E09")
    assert main(["report", "--demo", "-f", "md"]) == 4
    md = capsys.readouterr().out
    assert md.index("## Do this now") < md.index("## Causes")
    assert main(["report", "--demo", "-f", "html"]) == 4
    html = capsys.readouterr().out
    assert html.index('class="do-now"') < html.index("Causes, most important first")


def test_a_long_command_is_continued_for_the_shell_never_split_inside_quotes() -> None:
    from diagnose.report import _shell_lines

    cmd = "postconf -e 'smtp_pix_workaround_threshold_time = 0' 'smtp_pix_workaround_maps = hash:/etc/postfix/pix_maps'"
    lines = _shell_lines(cmd, 40)
    assert all(line.endswith(" \\") for line in lines[:-1]) and len(lines) == 3
    assert " ".join(line.removesuffix(" \\").strip() for line in lines) == cmd


def test_queue_actions_fit_the_cause() -> None:
    """The report lists only the queue actions that fit a cause, in the order they are used (the
    wizard's rule): duplicates are held, released after the fix, then retried; greylisted mail is
    retried, never held; a futile retry (soft_bounce-kept 5xx) is held; anything else: retry after
    the fix, or hold meanwhile."""
    from diagnose.causes import get_cause
    from diagnose.correlate import RankedCause
    from diagnose.report import _queue_actions

    def acts(cid: str) -> list[str]:
        return [a["action"] for a in _queue_actions(RankedCause(cid, get_cause(cid), queued_recipients=2), "b.test")]

    assert acts("E09") == ["hold", "release", "retry"]
    assert acts("E21") == ["retry"]
    assert acts("E33") == ["hold"]
    assert acts("E05") == ["retry", "hold"]
    assert _queue_actions(RankedCause("E09", get_cause("E09")), None) == []  # nothing queued: nothing to act on
    argv = _queue_actions(RankedCause("E21", get_cause("E21"), queued_recipients=1), "b.test")[0]["argv"]
    assert argv == ["pfdiag", "queue", "retry", "--cause", "E21", "--domain", "b.test"]
