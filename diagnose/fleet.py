"""Many mail hosts at once: the same diagnosis on each, over SSH, then a comparison.

A cause seen on every host points at something they share (the receiving provider: rate
limits, reputation, its outage); a cause seen on one host only points at that host (its
network, its DNS, its configuration). An unreachable host is a finding of the fleet report,
not a failed run.

Hosts come from ``--hosts h1,h2`` or ``--inventory FILE``: one ``[user@]host[:port]`` per
line, an Ansible INI inventory (groups, ``ansible_host``/``ansible_user``/``ansible_port``,
``mail[01:03].example.net`` ranges), or an Ansible YAML inventory.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from checks.errors import InputError, PfdiagError, UsageError
from checks.runner import run_within
from diagnose.flow import valid_host
from diagnose.textsafe import console, md_code, md_text, rich_markup, rich_text

SCHEMA = "pfdiag.fleet/1"
DEFAULT_CONCURRENCY = 8


@dataclass(frozen=True)
class HostSpec:
    name: str  # how the report calls it (the inventory name)
    address: str  # what --host gets: [user@]host[:port] or an ssh_config alias


@dataclass
class HostResult:
    host: HostSpec
    doc: dict[str, Any] | None
    error: str | None
    seconds: float


MAX_HOSTS = 10_000  # more is a typo in a range, not a fleet: refused before anything connects
_PORT = re.compile(r":(\d+)$")


def _spec(name: str, address: str | None = None) -> HostSpec:
    address = (address or name).strip()
    why = valid_host(address)
    port = _PORT.search(address)
    if not why and port and not 1 <= int(port.group(1)) <= 65535:
        why = "a port from 1 to 65535"
    if why:
        raise UsageError(f"invalid host {address!r}: expected {why}")
    return HostSpec(name.strip(), address)


def parse_hosts(text: str) -> list[HostSpec]:
    items = [h.strip() for h in text.split(",") if h.strip()]
    if not items:
        raise UsageError("--hosts needs at least one host")
    return _unique([_spec(h) for h in items])


def _unique(specs: Iterable[HostSpec]) -> list[HostSpec]:
    seen: dict[str, HostSpec] = {}
    for s in specs:
        seen.setdefault(s.name, s)
    return list(seen.values())


_RANGE = re.compile(r"\[(\d+):(\d+)\]")


def _expand(pattern: str) -> list[str]:
    """Ansible's numeric host ranges: mail[01:03].example.net -> mail01, mail02, mail03."""
    m = _RANGE.search(pattern)
    if not m:
        return [pattern]
    lo, hi = m.group(1), m.group(2)
    total = 1  # ranges multiply: mail[1:100][1:100] is 10,000 names
    for r in _RANGE.finditer(pattern):
        total *= max(0, int(r.group(2)) - int(r.group(1)) + 1)
    if int(hi) < int(lo) or total > MAX_HOSTS:
        raise UsageError(f"bad host range in {pattern!r} (at most {MAX_HOSTS} hosts)")
    width = len(lo) if lo.startswith("0") else 0
    out = []
    for n in range(int(lo), int(hi) + 1):
        out.extend(_expand(pattern[: m.start()] + str(n).zfill(width) + pattern[m.end() :]))
    return out


def _address(name: str, vars_: Mapping[str, Any]) -> str:
    host = str(vars_.get("ansible_host") or name)
    user, port = vars_.get("ansible_user"), vars_.get("ansible_port")
    if ":" in host and not host.startswith("["):  # an IPv6 literal
        host = f"[{host}]"
    return (f"{user}@" if user else "") + host + (f":{port}" if port else "")


def read_inventory(path: str) -> list[HostSpec]:
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the inventory ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not a text inventory (byte {exc.start} is not UTF-8)") from None
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith(("#", ";"))]
    if not lines:
        raise InputError(f"{path}: the inventory names no host")
    if path.endswith((".yml", ".yaml")) or lines[0].rstrip().endswith(":") or lines[0].startswith("---"):
        specs = _yaml_inventory(text, path)
    elif any(ln.lstrip().startswith("[") and ln.rstrip().endswith("]") for ln in lines) or any("=" in ln for ln in lines):
        specs = _ini_inventory(lines, path)
    else:
        specs = [_spec(ln.split()[0]) for ln in lines]
    if not specs:
        raise InputError(f"{path}: the inventory names no host")
    if len(specs) > MAX_HOSTS:
        raise UsageError(f"{path}: {len(specs)} hosts; at most {MAX_HOSTS}")
    return _unique(specs)


def _ini_inventory(lines: list[str], path: str) -> list[HostSpec]:
    specs: list[HostSpec] = []
    section = ""
    for n, raw in enumerate(lines, 1):
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        if section.endswith((":vars", ":children")):
            continue  # group variables and group-of-groups lines name no host
        words = line.split()
        vars_: dict[str, str] = {}
        for w in words[1:]:
            key, sep, value = w.partition("=")
            if not sep:
                raise InputError(f"{path}: line {n}: expected key=value after the host name, got {w!r}")
            vars_[key] = value.strip("'\"")
        for name in _expand(words[0]):
            specs.append(_spec(name, _address(name, vars_)))
    return specs


def _yaml_inventory(text: str, path: str) -> list[HostSpec]:
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not a valid YAML inventory ({str(exc).splitlines()[0]})") from None
    specs: list[HostSpec] = []

    def walk(group: Any, where: str, depth: int = 0) -> None:
        if group is None:
            return  # "web:" with nothing under it: an empty group
        if not isinstance(group, Mapping) or depth > 50:
            raise InputError(f"{path}: group {where!r} is not a mapping (hosts: / children: / vars:)")
        hosts, children = group.get("hosts") or {}, group.get("children") or {}
        for key, value in (("hosts", hosts), ("children", children)):
            if not isinstance(value, Mapping):  # "hosts: [a, b]" is not Ansible's form: say so
                raise InputError(f"{path}: {where}.{key} must be a mapping of names (name: followed by its variables), "
                                 f"not a {type(value).__name__}")  # fmt: skip
        for name, vars_ in hosts.items():
            if not isinstance(name, (str, int)) or not str(name).strip():
                raise InputError(f"{path}: {where}.hosts: {name!r} is not a host name")
            for n in _expand(str(name)):
                specs.append(_spec(n, _address(n, vars_ if isinstance(vars_, Mapping) else {})))
        for cname, child in children.items():
            walk(child, str(cname), depth + 1)

    if not isinstance(data, Mapping):
        raise InputError(f"{path}: a YAML inventory is a mapping of groups (all: hosts: ...)")
    for gname, group in data.items():
        walk(group, str(gname))
    return specs


# ------------------------------------------------------------------ running


def run_fleet(hosts: list[HostSpec], diagnose_one: Callable[[HostSpec], dict[str, Any]], *,
              concurrency: int = DEFAULT_CONCURRENCY,
              progress: Callable[[str, str], None] = lambda h, s: None) -> list[HostResult]:  # fmt: skip
    """Diagnose every host, at most ``concurrency`` at once. A host that fails is a result."""
    if concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    lock = threading.Lock()

    def one(h: HostSpec) -> HostResult:
        progress(h.name, "start")
        t0 = time.monotonic()
        try:
            doc = diagnose_one(h)
            res = HostResult(h, doc, None, round(time.monotonic() - t0, 3))
        except PfdiagError as exc:
            res = HostResult(h, None, str(exc), round(time.monotonic() - t0, 3))
        except Exception as exc:  # a bug on one host must not cost the others
            res = HostResult(h, None, f"internal error: {type(exc).__name__}: {exc}", round(time.monotonic() - t0, 3))
        with lock:
            status = ((res.doc or {}).get("verdict") or {}).get("status", "?")
            progress(h.name, "error: " + res.error if res.error else status)
        return res

    # no budget of its own: each host's diagnosis has its own; `one` turns every error into a result
    def task(h: HostSpec) -> Callable[[float], HostResult]:
        return lambda _deadline: one(h)

    outcomes = run_within(None, [(h.name, task(h)) for h in hosts], workers=min(concurrency, len(hosts)), name="pfdiag-host")
    return [o.unwrap() for o in outcomes]


def compare(results: list[HostResult]) -> dict[str, Any]:
    """Which causes every reachable host shares, and which only one host has."""
    reachable = [r for r in results if r.doc is not None]
    seen: dict[str, dict[str, Any]] = {}
    for r in reachable:
        for c in r.doc["causes"]:  # type: ignore[index]
            entry = seen.setdefault(c["id"], {"id": c["id"], "title": c["title"], "hosts": [], "queued_recipients": 0,
                                              "domains": set()})  # fmt: skip
            entry["hosts"].append(r.host.name)
            entry["queued_recipients"] += c["impact"]["queued_recipients"]
            entry["domains"].update(d["domain"] for d in c["domains"][:5])
    n = len(reachable)
    rows = []
    for e in sorted(seen.values(), key=lambda e: (-len(e["hosts"]), -e["queued_recipients"], e["id"])):
        spread = "every host" if n > 1 and len(e["hosts"]) == n else "one host" if n > 1 and len(e["hosts"]) == 1 else "some hosts"
        meaning = {
            "every host": "shared by all hosts: look at what they have in common - the receiving side "
                          "(a provider's rate limit or your reputation with it), a shared relay, or shared DNS",
            "one host": f"only {e['hosts'][0]}: look at that host - its network path, its resolver, its configuration",
            "some hosts": "on some hosts: compare what those hosts share (network segment, relay, configuration)",
        }[spread]  # fmt: skip
        rows.append({**e, "domains": sorted(e["domains"]), "spread": spread, "meaning": meaning})
    return {"reachable": n, "unreachable": [{"host": r.host.name, "address": r.host.address, "error": r.error}
                                            for r in results if r.doc is None], "causes": rows}  # fmt: skip


def build(results: list[HostResult]) -> dict[str, Any]:
    statuses = [r.doc["verdict"]["status"] for r in results if r.doc is not None]
    if "root-cause" in statuses:
        status, code = "root-cause", 4
    elif not statuses:
        status, code = "undiagnosed", 1
    elif any(r.doc is None for r in results) or "warnings" in statuses or "undiagnosed" in statuses:
        status, code = "warnings", 5
    else:
        status, code = "no-problem", 0
    return {
        "schema": SCHEMA,
        "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "verdict": {"status": status, "exit_code": code},
        "hosts": [{"host": r.host.name, "address": r.host.address, "seconds": r.seconds, "error": r.error,
                   "status": r.doc["verdict"]["status"] if r.doc else "unreachable",
                   "headline": r.doc["verdict"]["headline"] if r.doc else r.error,
                   "report": r.doc} for r in results],  # fmt: skip
        "comparison": compare(results),
    }


def render_markdown(doc: Mapping[str, Any]) -> str:
    out = [f"# pfdiag fleet report: {len(doc['hosts'])} host(s), verdict {md_text(doc['verdict']['status'])}", "",
           "| Host | Status | Headline | Seconds |", "|---|---|---|---|"]  # fmt: skip
    for h in doc["hosts"]:  # host names and headlines come from the inventory and the hosts: escaped (diagnose.textsafe)
        out.append(f"| {md_code(h['host'], table=True)} | {md_text(h['status'])} | {md_text(str(h['headline']))} | {h['seconds']:.1f} |")
    cmp_ = doc["comparison"]
    out += ["", "## Causes across hosts", "", "| Cause | Hosts | Spread | What it suggests |", "|---|---|---|---|"]
    for c in cmp_["causes"]:
        out.append(f"| {md_text(c['id'])} {md_text(c['title'])} | {md_text(', '.join(c['hosts']))} | {md_text(c['spread'])} "
                   f"| {md_text(c['meaning'])} |")  # fmt: skip
    if cmp_["unreachable"]:
        out += ["", "## Unreachable hosts", ""] + [f"- {md_code(u['host'])} ({md_code(u['address'])}): {md_text(u['error'])}"
                                                   for u in cmp_["unreachable"]]  # fmt: skip
    return "\n".join(out) + "\n"


def render_text(doc: Mapping[str, Any], width: int = 100) -> str:
    from io import StringIO

    from rich.table import Table

    buf = StringIO()
    con = console(buf, width=width, color_system=None)
    t = Table(title=rich_markup("{} host(s): {}", len(doc["hosts"]), doc["verdict"]["status"]), title_justify="left")
    for col in ("host", "status", "headline", "s"):
        t.add_column(col, overflow="fold")
    for h in doc["hosts"]:  # every cell a Text: nothing from a host or the inventory is parsed as markup
        t.add_row(*map(rich_text, (h["host"], h["status"], str(h["headline"]), f"{h['seconds']:.1f}")))
    con.print(t)
    t = Table(title="Causes across hosts", title_justify="left")
    for col in ("cause", "hosts", "spread", "what it suggests"):
        t.add_column(col, overflow="fold")
    for c in doc["comparison"]["causes"]:
        t.add_row(*map(rich_text, (f"{c['id']} {c['title']}", ", ".join(c["hosts"]), c["spread"], c["meaning"])))
    con.print(t)
    for u in doc["comparison"]["unreachable"]:
        con.print(rich_markup("unreachable: {} ({}): {}", u["host"], u["address"], u["error"]))
    return buf.getvalue()
