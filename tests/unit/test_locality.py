"""Locality from configuration (diagnose/correlate.localize): E32 only for a next hop that a
local-service parameter names or a unix socket; a local service's reply keeps its meaning; a
loopback next hop reached any other way keeps the network/reply meaning of its text."""

from __future__ import annotations

from typing import Any

from diagnose.correlate import rank

REFUSED = "connect to 127.0.0.1[127.0.0.1]:10024: Connection refused"
WRITE_ERR = ("Nov 28 17:43:40 lab postfix/smtp[1]: ABC: to=<u@x.test>, relay=127.0.0.1[127.0.0.1]:10024, delay=1, "
             "delays=0/0/0/1, dsn=4.3.0, status=deferred (host 127.0.0.1[127.0.0.1] said: 451 4.3.0 Error: queue file "
             "write error (in reply to end of DATA command))")  # fmt: skip
SOCKET = "connect to private/dovecot-lmtp[private/dovecot-lmtp]: No such file or directory"
AMAVIS = {"content_filter": "smtp-amavis:[127.0.0.1]:10024", "relayhost": ""}


def logs(*causes: tuple[str, str, str]) -> dict[str, Any]:
    return {"causes": [{"id": cid, "deferrals": 2, "messages": 2, "collateral": 0, "top_domains": [[dom, 2]],
                        "top_relays": [], "example": ex} for cid, dom, ex in causes],
            "domains": [], "end_of_data": {}}  # fmt: skip


def one(services: dict[str, str] | None, example: str, extra: tuple = ()) -> list:
    return rank(logs(("E32", "x.test", example), *extra), None, [], services=services)


def test_without_the_configuration_e32_is_judged_from_the_address_and_says_so() -> None:
    [rc] = one(None, REFUSED)
    assert rc.id == "E32" and any("address alone" in w for w in rc.why)


def test_a_refused_content_filter_is_e32_naming_the_parameter() -> None:
    [rc] = one(AMAVIS, REFUSED)
    assert rc.id == "E32" and any("content_filter = smtp-amavis:[127.0.0.1]:10024" in w for w in rc.why)


def test_a_unix_socket_next_hop_is_e32() -> None:
    [rc] = one({}, SOCKET)
    assert rc.id == "E32" and any("unix socket" in w for w in rc.why)


def test_a_loopback_hop_no_local_service_names_keeps_its_network_meaning() -> None:
    # the lab's transport_maps 'x.test smtp:[127.0.0.1]:10024' stands for a remote MX; so does an MX
    # record resolving to 127.0.0.2: neither is a local filter
    [rc] = one({"relayhost": ""}, REFUSED)
    assert rc.id == "E02" and any("no local service" in w and "transport_maps" in w for w in rc.why)


def test_a_reply_from_a_local_service_keeps_its_reply_meaning_and_names_the_service() -> None:
    [rc] = one(AMAVIS, WRITE_ERR)
    assert rc.id == "E28" and any("answered: content_filter" in w for w in rc.why)
    [rc] = one({}, WRITE_ERR)
    assert rc.id == "E28"


def test_relabelled_causes_merge_with_the_same_cause_seen_elsewhere() -> None:
    ranked = one({}, REFUSED, (("E02", "y.test", "connect to mx.y.test[192.0.2.7]:25: Connection refused"),))
    assert [r.id for r in ranked] == ["E02"]
    assert {d for d, _ in ranked[0].domains} == {"x.test", "y.test"} and ranked[0].log_deferrals == 4


def test_one_e32_entry_over_two_destinations_is_judged_per_destination() -> None:
    # the logs aggregate by cause: refused.test (a refusal) and qwe.test (a 451 reply) share one E32 entry;
    # each destination's own queue reason decides its cause
    refused_line = ("Nov 28 17:43:29 lab postfix/smtp[1]: D4: to=<user@refused.test>, relay=none, delay=0.09, "
                    "delays=0.03/0.06/0/0, dsn=4.4.1, status=deferred (" + REFUSED + ")")  # fmt: skip
    logs_doc = {"causes": [{"id": "E32", "deferrals": 4, "messages": 4, "collateral": 0, "top_relays": [],
                            "top_domains": [["refused.test", 3], ["qwe.test", 1]], "example": refused_line}],
                "domains": [{"domain": "refused.test", "causes": {"E32": 3}}, {"domain": "qwe.test", "causes": {"E32": 1}}],
                "end_of_data": {}}  # fmt: skip
    queue = {"groups": [{"cause_id": "E32", "domain": "qwe.test", "recipients": 1, "messages": ["Q1"],
                         "example_reason": WRITE_ERR.rpartition("status=deferred (")[2][:-1]},
                        {"cause_id": "E32", "domain": "refused.test", "recipients": 2, "messages": ["Q2", "Q3"],
                         "example_reason": REFUSED}]}  # fmt: skip
    by = {r.id: r for r in rank(logs_doc, queue, [], services={})}
    assert set(by) == {"E02", "E28"}
    assert by["E02"].domains[0] == ("refused.test", 3) and by["E02"].queued_recipients == 2 and by["E02"].log_deferrals == 3
    assert by["E28"].domains[0] == ("qwe.test", 1) and by["E28"].queued_recipients == 1
    focused = rank(logs_doc, queue, [], services={}, domain="qwe.test")
    assert [(r.id, r.log_deferrals) for r in focused] == [("E28", 1)]
    assert rank(logs_doc, queue, [], services=None)[0].id == "E32", "configuration unknown: as classified"
