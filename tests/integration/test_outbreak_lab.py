"""Outbreak triage on the real lab Postfix (issue 16): one client floods a rate-limiting receiver
(tests/lab/peers.py RateLimitPeer: 450 4.7.1 too many messages at MAIL FROM) while others send a
little; `pfdiag report` names the client with numbers and offers the hold; the dry run it
suggests plans exactly the flood's messages and changes nothing. Then --client follows a message
requeued twice (postsuper -r: pickup logs orig_id=) back to its first queue id's client= line.

The flood comes over SMTP from 127.0.0.5, a little other mail from 127.0.0.6 and through
sendmail (pickup: no client=), and some to a healthy peer (delivered)."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any, Iterator

import pytest

from diagnose.cli import main
from tests.lab.peers import RateLimitPeer
from tests.lab.postfix import PostfixLab

pytestmark = pytest.mark.lab
RL = "ratelimit.test"
FLOOD_IP, OTHER_IP = "127.0.0.5", "127.0.0.6"
FLOOD = 24


def _smtp(lab: PostfixLab, source: str, sender: str, tags: list[str]) -> list[str]:
    """Send one message per tag over SMTP from `source`, in one session; their Message-IDs."""
    return lab.submit(sender, [(f"{tag}@{RL}", tag) for tag in tags], source=source)


@pytest.fixture(scope="module")
def flood(postfix_lab: PostfixLab) -> Iterator[dict[str, Any]]:
    lab = postfix_lab
    peer = RateLimitPeer("rate-limit", hostname=f"mx.{RL}").start()
    try:
        lab.route(RL, peer.port)
        lab.apply()
        lab.clear_queue()
        time.sleep(1.1)
        since = datetime.now().isoformat(timespec="seconds")
        flood_mids = _smtp(lab, FLOOD_IP, "bulk@corp.test", [f"flood{i}" for i in range(FLOOD)])
        other_mids = _smtp(lab, OTHER_IP, "ann@corp.test", ["other0", "other1"])
        picked = [lab.inject("carl@corp.test", [f"pick{i}@{RL}"], subject=f"pick {i}") for i in range(2)]
        healthy = [lab.inject("dora@corp.test", [f"ok{i}@healthy.test"], subject=f"ok {i}") for i in range(2)]
        ids = {}
        for mid in flood_mids + other_mids:
            ids[mid] = lab.wait_first_attempt(lab.queue_id(mid, timeout=30), timeout=60)[0].queue_id
        for inj in picked + healthy:
            ids[inj.message_id] = lab.wait_first_attempt(inj, timeout=60)[0].queue_id
        yield {"since": since, "flood": {ids[m] for m in flood_mids}, "other": {ids[m] for m in other_mids},
               "picked": {ids[i.message_id] for i in picked}, "peer": peer}  # fmt: skip
    finally:
        lab.clear_queue()
        lab.routes.pop(RL, None)
        lab.apply()
        peer.stop()


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _report(capsys, lab: PostfixLab, flood: dict[str, Any], fmt: str) -> tuple[int, str]:
    rc, out, err = _run(capsys, "report", "-f", fmt, "-c", str(lab.config_dir), "--log", str(lab.log_path),
                        "--since", flood["since"], "--budget", "60")  # fmt: skip
    assert out, err
    return rc, out


def test_the_report_names_the_flooding_client_and_offers_the_hold(postfix_lab, flood, capsys):
    lab = postfix_lab
    assert sum(1 for ln in lab.log_lines() if f"client=unknown[{FLOOD_IP}]" in ln) >= FLOOD  # what the join reads
    rc, out = _report(capsys, lab, flood, "json")
    doc = json.loads(out)
    assert rc == 4 and doc["causes"][0]["id"] == "E22"
    ob = doc["outbreak"]
    assert ob["deferred_messages"] == FLOOD + 4 and ob["by_cause"] == {"E22": FLOOD + 4}
    assert ob["joined"] == FLOOD + 2  # pickup's mail has no client= line
    assert ob["lead"] == {"kind": "client", "key": FLOOD_IP, "deferred": FLOOD, "total": FLOOD,
                          "share": round(FLOOD / (FLOOD + 4), 4), "deferred_ratio": 1.0, "via": None}  # fmt: skip
    assert ob["top"]["clients"][1] == {"key": OTHER_IP, "deferred": 2, "total": 2, "share": round(2 / (FLOOD + 4), 4)}
    assert ob["top"]["senders"][0]["key"] == "bulk@corp.test"
    assert ob["summary"] == (f"86 % of the {FLOOD + 4} messages deferred by E22 in the log read came from client {FLOOD_IP}; "
                             f"100 % of that client's mail ({FLOOD} of {FLOOD} message(s)) was deferred")  # fmt: skip
    assert ob["read"]["complete"] and ob["read"]["files"] == [str(lab.log_path)]
    assert doc["do_now"][0]["command"] == f"pfdiag queue hold --client={FLOOD_IP} --dry-run"
    assert doc["do_now"][1]["command"] == "postmap hash:/etc/postfix/client_access && postfix reload"
    assert any(w["check"] == "logs.outbreak" and w["summary"] == ob["summary"] for w in doc["warnings"])
    states = {s["id"]: s["state"] for s in doc["steps"]}
    assert states["logs.outbreak"] == "ok"
    rc, text = _report(capsys, lab, flood, "text")
    assert f"Outbreak triage: 86 % of the {FLOOD + 4} messages deferred by E22" in text
    assert f"pfdiag queue hold --client={FLOOD_IP} --dry-run" in text
    assert f"pfdiag queue release --client={FLOOD_IP} --yes" in text
    assert f"\n    {FLOOD_IP} REJECT mail flood from this client (pfdiag outbreak triage)\n" in text
    print(text)  # the excerpt the closing note quotes (pytest -s)


def test_the_suggested_dry_run_plans_exactly_the_flood_and_changes_nothing(postfix_lab, flood, capsys):
    lab = postfix_lab
    before = {m["queue_id"]: m["queue_name"] for m in lab.postqueue_json()}
    rc, out, err = _run(capsys, "queue", "hold", f"--client={FLOOD_IP}", "--dry-run", "-c", str(lab.config_dir))
    assert rc == 0, err
    assert f"{FLOOD} message(s); by cause: E22 {FLOOD}" in out and "nothing was changed (dry run)" in out
    assert {m["queue_id"]: m["queue_name"] for m in lab.postqueue_json()} == before
    rc, out, err = _run(capsys, "queue", "hold", f"--client={FLOOD_IP}", "--dry-run", "-f", "json", "-c", str(lab.config_dir))
    assert rc == 0 and set(json.loads(out)["ids"]) == flood["flood"]


def _wait_deferred(lab: PostfixLab, qid: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while (lab.queued(qid) or {}).get("queue_name") != "deferred":
        assert time.monotonic() < deadline, f"{qid} not in the deferred queue within {timeout:g} s"
        time.sleep(0.1)


def test_client_selector_follows_a_requeued_message_to_its_first_queue_id(postfix_lab, flood, capsys):
    lab = postfix_lab
    old = sorted(flood["flood"])[0]
    chain = [old]
    for _ in range(2):  # requeued twice: NEW2 <- NEW1 <- OLD, each new id's pickup line names the one before
        _wait_deferred(lab, chain[-1])  # not while qmgr still holds it in the active queue
        mark = lab.mark()
        lab.postsuper("-r", chain[-1], check=True)
        lab.kick_pickup()
        m = lab.wait_for_log(rf": (\w+): uid=\d+ from=<bulk@corp\.test> orig_id={chain[-1]}\b", timeout=60, since=mark)
        chain.append(m.group(1))
        lab.wait_first_attempt(chain[-1], timeout=60)
    _wait_deferred(lab, chain[-1])
    assert old not in lab.queue_ids() and chain[1] not in lab.queue_ids()
    rc, out, err = _run(capsys, "queue", "hold", f"--client={FLOOD_IP}", "--dry-run", "-f", "json", "-c", str(lab.config_dir))
    assert rc == 0, err
    assert set(json.loads(out)["ids"]) == (flood["flood"] - {old}) | {chain[-1]}
    assert "1 requeued: joined through pickup's orig_id= to their first queue id" in err
    rc, out, err = _run(capsys, "queue", "--client", FLOOD_IP, "-f", "json", "-c", str(lab.config_dir))
    assert rc == 0 and chain[-1] in {m["queue_id"] for m in json.loads(out)["messages"]}
