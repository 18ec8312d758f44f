"""Third-party checks arrive through the `pfdiag.checks` entry point group.
A real distribution (dist-info on sys.path) is discovered by importlib.metadata;
a broken plugin is reported, never fatal."""

from __future__ import annotations

import sys
import textwrap

import pytest

from checks import Context, Finding, Severity
from checks.registry import ENTRY_POINT_GROUP, load_checks
from checks.targets import LocalTarget


def _install_plugin(root, name, entry_points: dict[str, str], module_source: str):
    pkg = root / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent(module_source))
    dist = root / f"{name}-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    eps = "\n".join(f"{k} = {v}" for k, v in entry_points.items())
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{eps}\n")


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    _install_plugin(
        tmp_path,
        "pfdiag_good_plugin",
        {"relay": "pfdiag_good_plugin:relayhost_set", "module": "pfdiag_good_plugin"},
        '''
        from checks import check, Finding, Severity

        @check("plugin.relayhost", title="Relayhost is set", tags=("config",))
        def relayhost_set(ctx):
            """Says whether relayhost is set."""
            value = ctx.target.run(["printf", "%s", "[relay.test]:587"]).stdout
            yield Finding("plugin.relayhost", Severity.INFO, f"relayhost is {value}")

        @check("plugin.second", title="Second check")
        def second(ctx):
            """Another one."""
            return []
        ''',
    )
    _install_plugin(tmp_path, "pfdiag_broken_plugin", {"broken": "pfdiag_broken_plugin:nothing"}, "raise ImportError('missing dependency foo')\n")
    _install_plugin(tmp_path, "pfdiag_empty_plugin", {"empty": "pfdiag_empty_plugin"}, "X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("pfdiag_good_plugin", "pfdiag_broken_plugin", "pfdiag_empty_plugin"):
        sys.modules.pop(name, None)
    return tmp_path


def test_plugins_load_and_broken_ones_are_reported(plugins):
    specs, problems = load_checks()
    by_id = {s.id: s for s in specs}
    assert {"plugin.relayhost", "plugin.second"} <= set(by_id)
    relay = by_id["plugin.relayhost"]
    assert relay.origin == "pfdiag_good_plugin:relay" and relay.tags == ("config",)
    assert relay.doc == "Says whether relayhost is set."
    findings = list(relay.func(Context(LocalTarget())))
    assert findings == [Finding("plugin.relayhost", Severity.INFO, "relayhost is [relay.test]:587")]
    reasons = {p.origin: p.error for p in problems}
    assert "missing dependency foo" in reasons["pfdiag_broken_plugin:broken"]
    assert "no @check function" in reasons["pfdiag_empty_plugin:empty"]
    # the module entry point re-exports plugin.relayhost: a duplicate id is reported, not loaded twice
    assert any("already defined" in p.error for p in problems)


def test_without_plugins(plugins):
    specs, problems = load_checks(include_plugins=False)
    assert not any(s.id.startswith("plugin.") for s in specs) and problems == []
