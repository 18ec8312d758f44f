"""Outbreak triage by SASL login on the real lab Postfix (issue 16): smtpd authenticates against
a Dovecot auth server (tests/lab/saslauth.py: smtpd_sasl_type = dovecot, inet:127.0.0.1:PORT), so
Postfix logs `client=..., sasl_method=PLAIN, sasl_username=LOGIN` as in production. One login
floods a rate-limiting receiver from one address; another login and an unauthenticated client
send a little. The report names the login and its client with numbers and offers the hold by
--sasl-user (its dry run plans exactly the flood and changes nothing) and the check_sasl_access
line that stops it."""

from __future__ import annotations

import json
import smtplib
import time
from datetime import datetime
from typing import Any, Iterator

import pytest

from diagnose.cli import main
from tests.lab.peers import RateLimitPeer
from tests.lab.postfix import POSTMAP, PostfixLab
from tests.lab.saslauth import DovecotAuth

pytestmark = pytest.mark.lab
RL = "ratelimit.test"
BOB, ANN = "bob@corp.test", "ann@corp.test"
FLOOD_IP, OTHER_IP = "127.0.0.7", "127.0.0.6"
FLOOD = 20
SASL = {"smtpd_sasl_auth_enable": "yes", "smtpd_sasl_type": "dovecot", "smtpd_tls_auth_only": "no"}
SET_BY_TEST = (*SASL, "smtpd_sasl_path", "smtpd_sender_restrictions")


def _smtp(lab: PostfixLab, source: str, login: str | None, tags: list[str]) -> list[str]:
    return lab.submit(login or "carl@corp.test", [(f"{tag}@{RL}", tag) for tag in tags], source=source,
                      login=(login, "secret-" + login) if login else None)


@pytest.fixture(scope="module")
def flood(postfix_lab: PostfixLab) -> Iterator[dict[str, Any]]:
    lab = postfix_lab
    auth = DovecotAuth({BOB: "secret-" + BOB, ANN: "secret-" + ANN}).start()
    peer = RateLimitPeer("rate-limit", hostname=f"mx.{RL}").start()
    try:
        lab.postconf_edit("-e", *(f"{k}={v}" for k, v in SASL.items()), f"smtpd_sasl_path=inet:127.0.0.1:{auth.port}")
        lab.route(RL, peer.port)
        lab.apply()  # reloads: smtpd offers AUTH now
        lab.clear_queue()
        time.sleep(1.1)
        since = datetime.now().isoformat(timespec="seconds")
        flood_mids = _smtp(lab, FLOOD_IP, BOB, [f"bob{i}" for i in range(FLOOD)])
        other_mids = _smtp(lab, OTHER_IP, ANN, ["ann0", "ann1"]) + _smtp(lab, OTHER_IP, None, ["carl0"])
        ids = {m: lab.wait_first_attempt(lab.queue_id(m, timeout=30), timeout=60)[0].queue_id for m in flood_mids + other_mids}
        assert (BOB, True) in auth.logins and (ANN, True) in auth.logins
        yield {"since": since, "flood": {ids[m] for m in flood_mids}}
    finally:
        lab.clear_queue()
        lab.postconf_edit("-X", *SET_BY_TEST)
        for name in ("sasl_access", "sasl_access.db"):
            (lab.config_dir / name).unlink(missing_ok=True)
        lab.routes.pop(RL, None)
        lab.apply()
        peer.stop()
        auth.stop()


def test_the_report_names_the_login_and_offers_the_hold_by_sasl_user(postfix_lab, flood, capsys):
    lab = postfix_lab
    assert any(f"client=unknown[{FLOOD_IP}], sasl_method=PLAIN, sasl_username={BOB}" in ln for ln in lab.log_lines())
    rc = main(["report", "-f", "json", "-c", str(lab.config_dir), "--log", str(lab.log_path), "--since", flood["since"],
               "--budget", "60"])  # fmt: skip
    out, err = capsys.readouterr()
    doc = json.loads(out)
    ob = doc["outbreak"]
    n = FLOOD + 3
    assert rc == 4 and ob["deferred_messages"] == n and ob["joined"] == n
    assert ob["lead"] == {"kind": "sasl-user", "key": BOB, "deferred": FLOOD, "total": FLOOD,
                          "share": round(FLOOD / n, 4), "deferred_ratio": 1.0, "via": FLOOD_IP}  # fmt: skip
    assert [r["key"] for r in ob["top"]["logins"]] == [BOB, ANN]
    assert ob["summary"] == (f"87 % of the {n} messages deferred by E22 in the log read came from SASL login {BOB}, "
                             f"client {FLOOD_IP}; 100 % of that login's mail ({FLOOD} of {FLOOD} message(s)) was deferred")  # fmt: skip
    assert doc["do_now"][0]["command"] == f"pfdiag queue hold --sasl-user={BOB} --dry-run"
    stop = ob["plan"]["stop"]
    assert stop["map_file"] == "/etc/postfix/sasl_access" and stop["map_line"].startswith(f"{BOB} REJECT ")
    assert stop["restriction"] == "check_sasl_access hash:/etc/postfix/sasl_access"
    assert any(f"doveadm auth test {BOB}" in note for note in stop["notes"])
    before = {m["queue_id"]: m["queue_name"] for m in lab.postqueue_json()}
    rc = main(["queue", "hold", f"--sasl-user={BOB}", "--dry-run", "-f", "json", "-c", str(lab.config_dir)])
    out, err = capsys.readouterr()
    assert rc == 0 and set(json.loads(out)["ids"]) == flood["flood"]
    assert f"{FLOOD} message(s); by cause: E22 {FLOOD}" in err  # the plan, on stderr with -f json
    assert {m["queue_id"]: m["queue_name"] for m in lab.postqueue_json()} == before  # the dry run changed nothing
    rc = main(["report", "-c", str(lab.config_dir), "--log", str(lab.log_path), "--since", flood["since"], "--budget", "60"])
    text = capsys.readouterr().out
    assert f"Outbreak triage: 87 % of the {n} messages deferred by E22" in text and f"{BOB} REJECT account disabled" in text


def test_the_suggested_access_line_stops_the_login_and_only_it(postfix_lab, flood, capsys):
    """The plan's map line and restriction, applied as the report says (in the lab's own config
    directory instead of /etc/postfix): bob's next message is refused, ann's still goes."""
    lab = postfix_lab
    rc = main(["report", "-f", "json", "-c", str(lab.config_dir), "--log", str(lab.log_path), "--since", flood["since"],
               "--budget", "60"])  # fmt: skip
    stop = json.loads(capsys.readouterr().out)["outbreak"]["plan"]["stop"]
    table = lab.config_dir / "sasl_access"
    table.write_text(stop["map_line"] + "\n")
    lab.run([POSTMAP, "-c", str(lab.config_dir), f"hash:{table}"], check=True)
    restriction = stop["restriction"].replace(stop["map_file"], str(table))
    mark = lab.mark()
    lab.postconf_edit("-e", f"{stop['parameter']}={restriction}, permit_mynetworks")
    lab.reload()
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        _smtp(lab, FLOOD_IP, BOB, ["bob-after"])
    code, text = next(iter(refused.value.recipients.values()))
    assert code == 554 and b"account disabled: mail flood" in text
    assert len(_smtp(lab, OTHER_IP, ANN, ["ann-after"])) == 1  # another login still sends
    lab.wait_for_log(rf"NOQUEUE: reject: RCPT from unknown\[{FLOOD_IP}\]: 554 5\.7\.1 .*account disabled: mail flood.*"
                     rf"from=<{BOB}>", timeout=10, since=mark)  # fmt: skip


def test_the_hold_and_release_it_offers_act_on_exactly_the_login_and_the_listing_gives_their_fate(postfix_lab, flood, capsys,
                                                                                                   tmp_path):  # fmt: skip
    lab = postfix_lab
    conf = ["-c", str(lab.config_dir), "--action-log", str(tmp_path / "actions.log")]
    assert main(["queue", "hold", f"--sasl-user={BOB}", "--yes", *conf]) == 0
    capsys.readouterr()
    queues = {m["queue_id"]: m["queue_name"] for m in lab.postqueue_json()}
    assert {q for q, name in queues.items() if name == "hold"} == flood["flood"]
    assert main(["queue", "-c", str(lab.config_dir)]) == 0
    text = capsys.readouterr().out
    held = text[text.index("Held and active messages: what happens to them"):]
    for qid in flood["flood"]:
        assert f"on hold: nothing happens until it is released (pfdiag queue release --id {qid}) (last deferred: E22)" in held
    assert main(["queue", "release", f"--sasl-user={BOB}", "--yes", *conf]) == 0
    queues = {m["queue_id"]: m["queue_name"] for m in lab.postqueue_json()}
    assert all(queues[q] != "hold" for q in flood["flood"])
