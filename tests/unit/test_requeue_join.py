"""--sasl-user/--client on a message requeued with postsuper -r (issue 16): its new queue id has no
client= line; pickup's orig_id= leads back (through every requeue) to the first id, whose client=
line names the submitter. Lines as Postfix 3.7 writes them (the lab's own log)."""

from __future__ import annotations

import time

from checks.postfix.postqueue import QueuedMessage
from checks.targets.local import LocalTarget
from diagnose.queueselect import first_id, origins

LOG = """\
{t} lab postfix/smtpd[10]: 880D61AA0BC: client=unknown[127.0.0.5], sasl_method=PLAIN, sasl_username=bob
{t} lab postfix/qmgr[9]: 880D61AA0BC: from=<bulk@corp.test>, size=400, nrcpt=1 (queue active)
{t} lab postfix/smtpd[10]: 990D61AA0BC: client=unknown[127.0.0.6]
{t} lab postfix/postsuper[20]: 880D61AA0BC: requeued
{t} lab postfix/pickup[21]: A10D61AA0BC: uid=0 from=<bulk@corp.test> orig_id=880D61AA0BC
{t} lab postfix/postsuper[22]: A10D61AA0BC: requeued
{t} lab postfix/pickup[21]: B20D61AA0BC: uid=0 from=<bulk@corp.test> orig_id=A10D61AA0BC
{t} lab postfix/pickup[21]: C30D61AA0BC: uid=0 from=<carl@corp.test>
"""


def _msg(qid: str, now: float) -> QueuedMessage:
    return QueuedMessage(queue_name="deferred", queue_id=qid, arrival_time=now - 60, size=400, sender="bulk@corp.test",
                         recipients=(), forced_expire=False)  # fmt: skip


def test_first_id_follows_the_chain_and_stops_on_a_cycle():
    links = {"C": "B", "B": "A"}
    assert first_id("C", links) == "A" and first_id("A", links) == "A"
    assert first_id("X", {"X": "Y", "Y": "X"}) in ("X", "Y")  # a looping log cannot hang it


def test_a_requeued_message_gets_its_first_ids_submitter(tmp_path):
    now = time.time()
    log = tmp_path / "mail.log"
    log.write_text(LOG.format(t=time.strftime("%b %e %H:%M:%S", time.localtime(now - 30))))
    msgs = [_msg(q, now) for q in ("B20D61AA0BC", "990D61AA0BC", "C30D61AA0BC")]
    found, note = origins(LocalTarget(), None, msgs, now, sources=[str(log)])
    assert found["B20D61AA0BC"].client == "127.0.0.5" and found["B20D61AA0BC"].sasl_user == "bob"
    assert found["990D61AA0BC"].client == "127.0.0.6"
    assert "C30D61AA0BC" not in found  # sendmail/pickup mail: no client, and no earlier id
    assert "2 of 3 message(s) came in over SMTP (1 requeued: joined through pickup's orig_id= to their first queue id)" in note
