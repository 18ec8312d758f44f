"""The catalog of deferral causes (E01..E38 of postfix-deferrals.md §3), one file per cause.

Each cause is a TOML file in this folder, named by its id (``E09.toml``, ``unclassified.toml``):

    id, slug, title, family      who it is ("connection", "dns", "tls", "sasl", "reply", "routing",
                                 "local", "lifetime", "unknown")
    root = false                 only for a consequence of another cause (E11)
    meaning                      2-4 sentences: what happened, what it usually means
    checks = [...]               commands that confirm it or rule it out
    likely_causes = [...]        distinct underlying causes, most likely first, with how to confirm each
    [[fix]] kind, text           a fix; kind is one of FIX_KINDS; ``for = ["pmtu", ...]`` names the
            for, always, when    underlying causes (diagnose/eod.py) it fixes, ``always = true`` keeps it
                                 shown whichever underlying cause leads; ``when = ["Relay access denied"]``
                                 offers it only when the evidence holds one of those texts
                                 (``"port=465"``: only when the next hop's port is 465)
    [[example]] reason, phase    a real reason text and what classify() must make of it: the phase
            status, dsn          ("none" for no phase), the log's status and dsn, ``expect = {...}``
            expect, absent       other Classification fields, ``absent = [...]`` fields that must be
            source               None; ``source`` says where the text was seen

The examples are test cases (tests/unit/test_cause_cases.py): adding a cause touches its file and
the classifier, nothing else. Commands and fixes use placeholders the report fills in: <domain>
recipient domain, <host>/<addr>/<port> the next hop, <rcpt>, <queue-id>, <sender-domain>,
<egress-ip>, <mx-host>, <log> the log file read, <transport> the master.cf service of the
destination (or the one qmgr could not reach), <undo-timeout> the command that removes a lowered
smtp_data_done_timeout where it is set. A command whose placeholders the evidence cannot fill is
not shown (diagnose/report.py).

Files are read on first use, one at a time: ``CAUSES`` knows the ids from the folder listing, so
the classifier's start-up (which only asks "is E21 a cause?") parses none of them.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

FAMILIES = frozenset({"connection", "dns", "tls", "sasl", "reply", "routing", "local", "lifetime", "unknown"})
# postconf: a main.cf change (postconf -e/-X, a lookup table); master.cf: a service line; queue: a queue
# action; contact: someone else must act (postmaster, the sender, a DNS owner); network: a router, firewall
# or route on the path; dns: records of a zone; service: a program, file or package on this machine;
# wait: nothing to do yet; advice: what to do or not to do, no single command
FIX_KINDS = ("postconf", "master.cf", "queue", "contact", "network", "dns", "service", "wait", "advice")
UNCLASSIFIED_ID = "unclassified"


class CatalogError(Exception):
    """A cause file that does not describe a cause (a packaging or editing mistake)."""


@dataclass(frozen=True, slots=True)
class Fix:
    text: str
    kind: str  # one of FIX_KINDS
    hypotheses: tuple[str, ...] = ()  # underlying causes it fixes (diagnose/eod.py ids); () = the cause itself
    always: bool = False  # shown whichever underlying cause leads
    when: tuple[str, ...] = ()  # offered only when the evidence (the reply text) holds one of these (any case)

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True)
class Example:
    reason: str
    phase: str | None
    status: str | None = None
    dsn: str | None = None
    expect: Mapping[str, Any] = field(default_factory=dict)
    absent: tuple[str, ...] = ()
    source: str | None = None


@dataclass(frozen=True, slots=True)
class Cause:
    id: str  # "E01".."E38" or "unclassified"
    slug: str
    title: str
    family: str
    meaning: str
    checks: tuple[str, ...]
    fixes: tuple[Fix, ...]
    root: bool = True  # False: a consequence of another cause (E11)
    likely_causes: tuple[str, ...] = ()
    examples: tuple[Example, ...] = ()


def _strings(doc: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = doc.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise CatalogError(f"{where}: {key} must be a list of non-empty strings")
    return tuple(value)


def _fix(entry: Any, where: str) -> Fix:
    if not isinstance(entry, dict) or not isinstance(entry.get("text"), str) or not entry["text"]:
        raise CatalogError(f"{where}: every [[fix]] needs a text")
    kind = entry.get("kind")
    if kind not in FIX_KINDS:
        raise CatalogError(f"{where}: fix kind {kind!r} is not one of {', '.join(FIX_KINDS)}")
    return Fix(entry["text"], kind, _strings(entry, "for", where), bool(entry.get("always", False)),
               _strings(entry, "when", where))


def _example(entry: Any, where: str) -> Example:
    if not isinstance(entry, dict) or not isinstance(entry.get("reason"), str):
        raise CatalogError(f"{where}: every [[example]] needs a reason")
    phase = entry.get("phase")
    if not isinstance(phase, str):
        raise CatalogError(f"{where}: example {entry['reason']!r} needs a phase (\"none\" for none)")
    expect = entry.get("expect", {})
    if not isinstance(expect, dict):
        raise CatalogError(f"{where}: expect must be a table")
    return Example(entry["reason"], None if phase == "none" else phase, entry.get("status"), entry.get("dsn"),
                   expect, _strings(entry, "absent", where), entry.get("source"))


def parse_cause(text: str, name: str) -> Cause:
    """One cause file's text -> Cause; CatalogError naming the file for anything missing or wrong."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{name}: {exc}") from None
    for key in ("id", "slug", "title", "family", "meaning"):
        if not isinstance(doc.get(key), str) or not doc[key]:
            raise CatalogError(f"{name}: {key} must be a non-empty string")
    if doc["family"] not in FAMILIES:
        raise CatalogError(f"{name}: unknown family {doc['family']!r}")
    return Cause(
        doc["id"], doc["slug"], doc["title"], doc["family"], doc["meaning"], _strings(doc, "checks", name),
        tuple(_fix(f, name) for f in doc.get("fix", [])), bool(doc.get("root", True)),
        _strings(doc, "likely_causes", name), tuple(_example(e, name) for e in doc.get("example", [])),
    )


class Catalog(Mapping[str, Cause]):
    """id -> Cause, E01..E38 in order and "unclassified" last; each file parsed on first access."""

    def __init__(self) -> None:
        self._dir = resources.files(__name__)
        names = sorted(p.name[:-5] for p in self._dir.iterdir() if p.name.endswith(".toml"))
        self._ids = tuple(n for n in names if n != UNCLASSIFIED_ID) + ((UNCLASSIFIED_ID,) if UNCLASSIFIED_ID in names else ())
        self._loaded: dict[str, Cause] = {}

    def __getitem__(self, key: str) -> Cause:
        found = self._loaded.get(key)
        if found is None:
            if key not in self._ids:
                raise KeyError(key)
            name = f"{key}.toml"
            found = parse_cause(self._dir.joinpath(name).read_text(encoding="utf-8"), name)
            if found.id != key:
                raise CatalogError(f"{name}: its id is {found.id!r}, not the file's name")
            self._loaded[key] = found
        return found

    def __contains__(self, key: object) -> bool:
        return key in self._ids

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)


CAUSES = Catalog()


def get_cause(cause_id: str) -> Cause:
    """The catalog entry for "E01".."E38" (any case) or "unclassified"; KeyError for anything else."""
    key = cause_id.strip()
    for k in (key, key.upper(), key.lower()):
        if k in CAUSES:
            return CAUSES[k]
    raise KeyError(f"unknown cause id {cause_id!r}")


def all_causes() -> list[Cause]:
    """Every catalog entry in id order, "unclassified" last."""
    return list(CAUSES.values())


UNCLASSIFIED = CAUSES[UNCLASSIFIED_ID]
