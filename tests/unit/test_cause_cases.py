"""Every cause file's [[example]] reason lines, run through the classifier (sqlfluff's rule cases).

The examples are real texts: reasons from ../shared/corpus, the lab's observed lines (lab-notes.md)
and the reference's own examples (postfix-deferrals.md, "ref"); each names where it was seen. A
new cause or a newly recognised text is a new [[example]] in diagnose/causes/<id>.toml.
"""

from __future__ import annotations

import dataclasses

import pytest

from diagnose.causes import CAUSES, FIX_KINDS, Example, parse_cause, CatalogError
from diagnose.classify import Classification, classify

CASES = [
    pytest.param(cause_id, ex, id=f"{cause_id}:{ex.reason[:50]}")
    for cause_id in CAUSES for ex in CAUSES[cause_id].examples
]  # fmt: skip
FIELDS = {f.name for f in dataclasses.fields(Classification)}


@pytest.mark.parametrize("cause_id,ex", CASES)
def test_example_is_classified_as_its_file_says(cause_id: str, ex: Example) -> None:
    c = classify(ex.reason, status=ex.status, dsn=ex.dsn)
    expected = {"cause_id": cause_id, "phase": ex.phase, **ex.expect, **{k: None for k in ex.absent}}
    assert set(expected) <= FIELDS, f"unknown fields in the example: {set(expected) - FIELDS}"
    assert {k: getattr(c, k) for k in expected} == expected


def test_every_cause_has_examples_and_every_cause_is_reached() -> None:
    assert [k for k in CAUSES if k != "unclassified" and not CAUSES[k].examples] == []
    seen = {k for k in CAUSES for _ in CAUSES[k].examples}
    seen |= {ex.expect.get("subcause") for k in CAUSES for ex in CAUSES[k].examples}
    assert {f"E{n:02d}" for n in range(1, 39)} <= seen


def test_every_fix_has_a_known_kind_and_the_eod_fixes_name_their_underlying_cause() -> None:
    from diagnose.eod import TITLES

    for cause in CAUSES.values():
        assert all(f.kind in FIX_KINDS for f in cause.fixes), cause.id
        assert all(set(f.hypotheses) <= set(TITLES) for f in cause.fixes), cause.id
    e09 = {h for f in CAUSES["E09"].fixes for h in f.hypotheses}
    assert e09 == set(TITLES) - {"sporadic"}  # every underlying cause but chance has its own fix


@pytest.mark.parametrize("text,problem", [
    ('id = "E99"\nslug = "x"\ntitle = "t"\nfamily = "nowhere"\nmeaning = "m"\n', "unknown family"),
    ('id = "E99"\nslug = "x"\ntitle = "t"\nfamily = "dns"\nmeaning = "m"\n[[fix]]\nkind = "magic"\ntext = "t"\n',
     "fix kind 'magic'"),
    ('id = "E99"\nslug = "x"\ntitle = "t"\nfamily = "dns"\nmeaning = "m"\n[[example]]\nreason = "r"\n', "needs a phase"),
    ('id = "E99"\ntitle = "t"\n', "slug must be"),
    ("id = ", "E99.toml"),
])  # fmt: skip
def test_a_broken_cause_file_is_named_in_one_line(text: str, problem: str) -> None:
    with pytest.raises(CatalogError, match=problem.replace("(", r"\(")) as err:
        parse_cause(text, "E99.toml")
    assert str(err.value).startswith("E99.toml: ") and "\n" not in str(err.value).strip()
