"""Ranking by harm (diagnose/correlate.py): duplicates, then mail about to bounce, then queued
volume; collateral folded under its root cause; deterministic; nothing dropped from the report."""

from __future__ import annotations

import random
from typing import Any

from diagnose import report
from diagnose.correlate import rank
from diagnose.engine import Facts

NOW = 1_800_000_000.0
DAY = 86400.0


def cause(cid: str, n: int, domain: str, example: str = "", collateral: int = 0) -> dict[str, Any]:
    return {"id": cid, "deferrals": n, "messages": n, "collateral": collateral, "top_domains": [[domain, n]],
            "top_relays": [], "example": example}  # fmt: skip


def group(cid: str, domain: str, recipients: int, age_days: float = 0.1) -> dict[str, Any]:
    return {"cause_id": cid, "domain": domain, "recipients": recipients,
            "messages": [f"Q{cid}{domain[:3].upper()}{i}" for i in range(recipients)],
            "example_reason": "", "oldest_arrival": NOW - age_days * DAY}  # fmt: skip


def test_an_end_of_data_timeout_with_queued_mail_outranks_a_bigger_queue() -> None:
    logs = {"causes": [cause("E02", 200, "big.example"), cause("E09", 1, "eod.example")], "domains": [],
            "end_of_data": {"delivered_later_possible_duplicates": 0}}
    queue = {"now": NOW, "groups": [group("E02", "big.example", 50), group("E09", "eod.example", 1)]}
    ranked = rank(logs, queue, [], lifetime=5 * DAY)
    assert [r.id for r in ranked] == ["E09", "E02"]
    assert ranked[0].tier == 0 and "duplicate" in ranked[0].why_ranked and "every retry" in ranked[0].why_ranked
    assert ranked[1].tier == 2 and ranked[1].why_ranked.startswith("queued volume: 50 recipient(s)")


def test_an_end_of_data_timeout_with_nothing_queued_and_no_duplicates_is_volume() -> None:
    logs = {"causes": [cause("E02", 5, "a.example"), cause("E09", 9, "eod.example")], "domains": [], "end_of_data": {}}
    queue = {"now": NOW, "groups": [group("E02", "a.example", 3)]}
    ranked = rank(logs, queue, [])
    assert [(r.id, r.tier) for r in ranked] == [("E02", 2), ("E09", 2)]


def test_mail_about_to_bounce_comes_before_volume_earliest_expiry_first() -> None:
    logs = {"causes": [], "domains": [], "end_of_data": {}}
    queue = {"now": NOW, "groups": [group("E02", "big.example", 40, age_days=1),
                                    group("E21", "grey.example", 1, age_days=4.5),
                                    group("E27", "full.example", 2, age_days=4.9)]}  # fmt: skip
    ranked = rank(logs, queue, [], lifetime=5 * DAY)
    assert [r.id for r in ranked] == ["E27", "E21", "E02"]
    assert [r.tier for r in ranked] == [1, 1, 2]
    assert "expires in 2.4 h" in ranked[0].why_ranked and "maximal_queue_lifetime" in ranked[0].why_ranked
    assert ranked[0].expires_at == NOW + 0.1 * DAY
    # without the lifetime (configuration unreadable) nothing is known to expire: volume decides
    assert [r.id for r in rank(logs, queue, [])] == ["E02", "E27", "E21"]


def test_a_soft_bounced_refusal_is_mail_about_to_bounce() -> None:
    logs = {"causes": [cause("E33", 2, "sb.example"), cause("E02", 30, "a.example")], "domains": [], "end_of_data": {}}
    queue = {"now": NOW, "groups": [group("E02", "a.example", 30), group("E33", "sb.example", 1)]}
    ranked = rank(logs, queue, [], lifetime=5 * DAY)
    assert [r.id for r in ranked] == ["E33", "E02"] and "soft_bounce" in ranked[0].why_ranked


def test_collateral_is_folded_under_the_root_cause_of_its_destination_and_never_leads() -> None:
    logs = {"causes": [cause("E11", 500, "dead.example"), cause("E01", 1, "dead.example"), cause("E21", 2, "grey.example")],
            "domains": [], "end_of_data": {}}  # fmt: skip
    queue = {"now": NOW, "groups": [group("E11", "dead.example", 80), group("E21", "grey.example", 1)]}
    ranked = rank(logs, queue, [], lifetime=5 * DAY)
    assert [r.id for r in ranked] == ["E21", "E01", "E11"], "collateral ranks last, whatever its volume"
    by = {r.id: r for r in ranked}
    assert by["E11"].folded_under == "E01" and by["E01"].folded == ["E11"]
    assert by["E01"].collateral_lines == 500 and "counted under E01" in by["E11"].why_ranked


def test_collateral_without_its_root_in_the_evidence_says_so() -> None:
    logs = {"causes": [cause("E11", 5, "dead.example"), cause("E21", 1, "grey.example")], "domains": [], "end_of_data": {}}
    ranked = rank(logs, {"groups": []}, [])
    assert [r.id for r in ranked] == ["E21", "E11"]
    assert ranked[1].folded_under is None and "not in this evidence" in ranked[1].why_ranked


def test_same_evidence_same_ranking_ties_broken_by_id() -> None:
    causes = [cause(cid, 3, f"{cid.lower()}.example") for cid in ("E21", "E04", "E16", "E05", "E27", "E02")]
    groups = [group(c["id"], c["top_domains"][0][0], 1) for c in causes]
    first = None
    rng = random.Random(7)
    for _ in range(6):
        rng.shuffle(causes)
        rng.shuffle(groups)
        ids = [r.id for r in rank({"causes": list(causes), "domains": [], "end_of_data": {}},
                                  {"now": NOW, "groups": list(groups)}, [], lifetime=5 * DAY)]  # fmt: skip
        first = first or ids
        assert ids == first
    assert first == sorted(first), "equal harm and confidence: ordered by id"


def many_causes_facts(n: int) -> Facts:
    ids = [f"E{i:02d}" for i in range(1, n + 1)]
    logs = {"causes": [cause(cid, i + 1, f"d{i}.example") for i, cid in enumerate(ids)], "domains": [], "end_of_data": {}}
    queue = {"now": NOW, "counts": {"deferred": n}, "groups": [group(cid, f"d{i}.example", 1) for i, cid in enumerate(ids)]}
    return Facts(where="local", logs=logs, queue=queue)


def test_the_json_carries_every_cause_and_text_says_how_to_see_the_rest() -> None:
    doc = report.build(many_causes_facts(16), {})
    assert len(doc["causes"]) == 16 and doc["causes_shown"] == report.MAX_CAUSES and doc["more_causes"] == 4
    assert [c["rank"] for c in doc["causes"]] == list(range(1, 17))
    assert all(c["why_ranked"] for c in doc["causes"])
    last = doc["causes"][-1]["id"]
    text, md = report.render_text(doc, width=200), report.render_markdown(doc)
    for out in (text, md):
        assert "4 more cause(s)" in out and "pfdiag report --all-causes" in out and "-f json" in out
        assert f"{last} " not in out.split("Causes, most important first")[1].split("more cause(s)")[0]
    full = report.build(many_causes_facts(16), {}, all_causes=True)
    assert full["more_causes"] == 0 and full["causes_shown"] == 16
    assert f"| 16 | {last} " in report.render_markdown(full) and "more cause(s)" not in report.render_text(full, width=200)


def test_the_headline_is_never_collateral() -> None:
    logs = {"causes": [cause("E11", 90, "dead.example"), cause("E21", 1, "grey.example")], "domains": [], "end_of_data": {}}
    queue = {"now": NOW, "counts": {"deferred": 2}, "groups": [group("E11", "dead.example", 50), group("E21", "grey.example", 1)]}
    doc = report.build(Facts(where="local", logs=logs, queue=queue), {})
    assert doc["verdict"]["headline"].startswith("E21 ")
    assert doc["causes"][-1]["id"] == "E11" and doc["causes"][-1]["tier"] == 4


def eod_facts(d_median: float, findings: list | None = None, domains: list | None = None) -> Facts:
    e09 = {**cause("E09", 4, "slow.example"), "top_domains": domains or [["slow.example", 4]],
           "delays": {"d": {"median": d_median, "p95": d_median}}, "delays_meaning": ["d sits at the timeout"],
           "example": "Nov 28 17:43:40 lab postfix/smtp[1]: ABC: to=<u@slow.example>, relay=mx.slow.example[192.0.2.9]:25, "
                      "delay=6, delays=0/0/1/5, dsn=4.4.2, status=deferred (conversation with mx.slow.example[192.0.2.9] "
                      "timed out while sending end of data -- message may be sent more than once)"}  # fmt: skip
    logs = {"causes": [e09], "domains": [{"domain": d, "causes": {"E09": n}} for d, n in e09["top_domains"]],
            "end_of_data": {"pix_workarounds": [["mx.slow.example[192.0.2.9]", 3]]},
            "timeouts": {"values": {"smtp_data_done_timeout": 5.0}}}  # fmt: skip
    reason = "conversation with mx.slow.example[192.0.2.9] timed out while sending end of data -- message may be sent more than once"
    queue = {"now": NOW, "counts": {"deferred": 1}, "groups": [{**group("E09", "slow.example", 1), "example_reason": reason}]}
    return Facts(where="local", logs=logs, queue=queue, findings=findings or [])


def lowered(seconds: float) -> Any:
    from checks.model import Finding, Severity

    return Finding("config.timeouts", Severity.WARNING, "smtp_data_done_timeout lowered", "E09",
                   values={"hypothesis": "local-timeout", "parameter": "smtp_data_done_timeout",
                           "effective": f"{seconds:g}s", "default": "600s", "seconds": seconds})  # fmt: skip


def test_fixes_follow_the_scores_of_the_hypotheses_they_fix() -> None:
    doc = report.build(eod_facts(5.0, [lowered(5.0)]), {})
    c = doc["causes"][0]
    scores = {h["id"]: h["score"] for h in c["underlying"]}
    assert scores["local-timeout"] > scores["firewall"] > 0
    texts = [f["text"] for f in c["fixes"]]
    assert "smtp_data_done_timeout" in texts[0] and texts[1].startswith("SMTP-inspecting firewall"), texts
    # the other way round: no lowered timeout, the firewall's fix comes first
    c2 = report.build(eod_facts(5.0), {})["causes"][0]
    assert c2["underlying"][0]["id"] == "firewall" and "firewall" in c2["fixes"][0]["text"].lower()


def test_evidence_lines_are_quoted_once() -> None:
    c = report.build(eod_facts(5.0), {})["causes"][0]
    excerpts = [e["excerpt"] for e in c["evidence"] if e["kind"] in ("log", "queue")]
    assert len(excerpts) == 1 and excerpts[0].startswith("Nov 28") and c["evidence"][0]["kind"] == "log"


def test_domain_focus_does_not_quote_other_destinations_delays() -> None:
    mixed = [["slow.example", 2], ["other.example", 2]]
    focused = report.build(eod_facts(5.0, [lowered(5.0)], mixed), {"domain": "slow.example"})["causes"][0]
    under = {h["id"]: h for h in focused["underlying"]}
    assert not any("median" in e for e in under["local-timeout"]["evidence"]), "d values of other.example"
    assert not any(e["kind"] == "delays" for e in focused["evidence"])
    assert any("other destinations share this cause" in w for w in focused["why"])
    alone = report.build(eod_facts(5.0, [lowered(5.0)]), {"domain": "slow.example"})["causes"][0]
    assert any("median 5 s" in e for e in alone["underlying"][0]["evidence"]), "its own lines: d is quoted"
