"""The Target base class: every optional ability has a default, so callers read abilities
(kind, live, local_network, can_bind, can_change...) instead of asking which target they hold;
and what is built on it: one resolv.conf reader, one resolver_for, one output path."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Sequence, TextIO

import pytest

from checks import dns as d
from checks.config import config_or_defaults, queue_directory
from checks.errors import CommandNotFound, ConnectRefused, InputError, UsageError
from checks.model import CommandResult
from checks.resolvconf import chroot_resolv, parse_resolv_conf, read_resolv_conf
from checks.targets import LocalTarget, SnapshotTarget, Target
from checks.targets.base import FileInfo
from diagnose import flow, session
from diagnose.output import Output, add_output_options
from diagnose.target_options import demo_path


class Recorded(Target):
    """A target that only implements what every target must: the rest are the base's defaults."""

    where = "recorded:test"

    def __init__(self, outputs: dict[tuple[str, ...], str], files: dict[str, str] | None = None,
                 live: bool = True) -> None:  # fmt: skip
        self.outputs, self.files = outputs, files or {}
        self.live = live  # type: ignore[misc]

    def run(self, argv: Sequence[str], timeout: float = 30.0) -> CommandResult:
        if tuple(argv) not in self.outputs:
            raise CommandNotFound(f"{argv[0]}: not here")
        return CommandResult(tuple(argv), 0, self.outputs[tuple(argv)], "", 0.01)

    def open_text(self, path: str) -> TextIO:
        if path not in self.files:
            raise InputError(f"{path}: no such file")
        return io.StringIO(self.files[path])

    def file_info(self, path: str) -> FileInfo:
        return FileInfo(path, len(self.files.get(path, "")), 0.0)

    def list_dir(self, path: str) -> list[FileInfo]:
        return []

    def is_dir(self, path: str) -> bool:
        return False


def test_defaults_of_a_target_that_implements_only_the_reading() -> None:
    t = Recorded({("printf", "a\nb\n"): "a\nb\n", ("cat", "bin"): "caf\ufffd\n"}, {"/var/log/mail.log": "x postfix y\n"})
    assert (t.kind, t.live, t.local_network, t.can_bind, t.can_change, t.recorded_at) == ("target", True, False, False, False, None)
    assert t.describe() == "recorded:test" and t.local_path("/var/log/mail.log") is None
    with t.stream(["printf", "a\nb\n"]) as out:  # stream() from run()
        assert list(out) == ["a", "b"] and out.result().returncode == 0
    sink = io.BytesIO()
    res = t.run_into(["printf", "a\nb\n"], sink)
    assert sink.getvalue() == b"a\nb\n" and res.stdout == "" and res.returncode == 0
    with pytest.raises(InputError, match="not UTF-8 text .* no exact copy"):
        t.run_into(["cat", "bin"], io.BytesIO())  # a decoded copy would not be exact: refused
    assert t.open_filtered("/var/log/mail.log", since_epoch=0.0, pattern="postfix").read() == "x postfix y\n"
    with pytest.raises(ConnectRefused, match="recorded:test"):
        t.connect("127.0.0.1", 25, 1.0)
    with t as same:
        assert same is t


def test_the_targets_say_what_they_can() -> None:
    local = LocalTarget()
    assert isinstance(local, Target) and local.kind == "local" and local.live and local.local_network
    assert local.can_bind and local.can_change and local.local_path("/etc/hostname") == "/etc/hostname"
    snap = SnapshotTarget(demo_path())
    assert isinstance(snap, Target) and snap.kind == "snapshot" and not snap.live and not snap.can_change
    assert snap.recorded_at is not None and snap.describe().startswith("snapshot:demo-snapshot.tar.gz (recorded ")
    from checks.targets.ssh import SSHTarget as ssh

    assert issubclass(ssh, Target) and ssh.kind == "ssh" and ssh.live and not ssh.local_network and not ssh.can_bind
    assert not ssh.can_change


def test_resolv_conf_is_parsed_in_one_place() -> None:
    text = "# written by hand\nsearch a.example b.example\nnameserver 192.0.2.53 ; old\nnameserver fe80::1%eth0\noptions edns0 ndots:2\n"
    rc = parse_resolv_conf(text)
    assert rc.nameservers == ("192.0.2.53", "fe80::1") and rc.search == ("a.example", "b.example")
    assert rc.options == ("edns0", "ndots:2") and len(rc.lines) == 4
    assert parse_resolv_conf("search x\n").servers == ["127.0.0.1"]  # libc's default
    assert d.resolv_conf_servers(text) == ["192.0.2.53", "fe80::1"]
    assert chroot_resolv("/var/spool/postfix/") == "/var/spool/postfix/etc/resolv.conf"
    with pytest.raises(InputError, match="cannot read /etc/resolv.conf on recorded:test"):
        read_resolv_conf(Recorded({}))


def test_resolver_for_decides_by_abilities_not_classes() -> None:
    remote = Recorded({}, {"/etc/resolv.conf": "nameserver 192.0.2.53\n",
                           "/spool/etc/resolv.conf": "nameserver 192.0.2.54\n"})  # fmt: skip
    r, said = d.resolver_for(remote, "system")
    assert isinstance(r, d.TargetResolver) and r.nameservers == ["192.0.2.53"] and "asked from there" in said
    r, said = d.resolver_for(remote, "chroot", "/spool")
    assert r.nameservers == ["192.0.2.54"] and d.asks_from(remote, r) == "recorded:test"
    r, said = remote.resolver("127.0.0.1:5353")
    assert isinstance(r, d.TargetResolver) and said == "127.0.0.1#5353 asked from recorded:test"
    recording = Recorded({}, live=False)
    with pytest.raises(UsageError, match="a snapshot has no live DNS"):
        d.resolver_for(recording, "system")
    r, said = d.resolver_for(recording, "[::1]:53")
    assert not isinstance(r, d.TargetResolver) and said == "::1#53 from this machine" and d.asks_from(recording, r) == "local"
    assert d.route_resolver(recording) is None  # nothing live to find next hops with
    hop = d.route_resolver(remote)
    assert isinstance(hop, d.NoReserved) and hop.nameservers == ["192.0.2.53"]
    assert d.lookup(hop, "mx.example", "MX").status == "nxdomain"  # a reserved name never leaves


def test_one_configuration_reader_for_queue_directory_and_timeouts() -> None:
    assert queue_directory(Recorded({("postconf", "-h", "queue_directory"): "/srv/spool\n"})) == "/srv/spool"
    assert queue_directory(Recorded({})) == "/var/spool/postfix"  # no postconf: the default

    def missing() -> object:
        raise CommandNotFound("postconf not found")

    def failing() -> object:
        raise InputError("postconf -h ... failed (exit 1): fatal")

    assert config_or_defaults(missing, "x") == (None, "Postfix defaults (no postconf here)")  # type: ignore[arg-type]
    assert config_or_defaults(failing, "x") == (None, "Postfix defaults (postconf failed)")  # type: ignore[arg-type]


def test_flow_is_pure_and_the_session_checks_the_bundle(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.tar.gz")
    assert flow.valid_bundle(missing) is None  # the form only: flow touches no file system
    assert flow.valid_bundle("  ") is not None
    assert session.valid_bundle(missing) == f"no such file or directory: {missing}"
    assert session.valid_bundle(str(tmp_path)) is None and session.VALIDATORS["bundle"] is session.valid_bundle


def test_one_output_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    p = argparse.ArgumentParser()
    add_output_options(p, ("text", "json"))
    args = p.parse_args(["-f", "json", "-o", str(tmp_path / "out.json")])
    out = Output.from_args(args)
    assert out.machine and not out.to_tty
    out.write({"a": "ü"}, {"text": lambda doc: "never"})
    assert json.loads((tmp_path / "out.json").read_text(encoding="utf-8")) == {"a": "ü"}
    assert capsys.readouterr().out == ""  # -o: nothing on stdout
    Output("text").write({"a": 1}, {"text": lambda doc: f"a is {doc['a']}\n"})
    assert capsys.readouterr().out == "a is 1\n"
    with pytest.raises(InputError, match="cannot write"):
        Output("text", str(tmp_path / "no" / "dir" / "x.txt")).emit("x")
    with pytest.raises(UsageError, match="this command writes"):
        Output("md").render({}, {"text": str})
    with pytest.raises(SystemExit):
        p.parse_args(["-f", "html"])  # each command lists only the formats it renders


def test_the_wizard_plans_queue_actions_only_where_changes_may_run() -> None:
    from diagnose.wizard import plan_queue_action

    with pytest.raises(InputError, match="cannot run on snapshot:demo-snapshot.tar.gz"):
        plan_queue_action(SnapshotTarget(demo_path()), "hold", "E09", None, None)


def _postfix(overrides: str = "", main: dict[str, str] | None = None) -> Recorded:
    """A Postfix whose postconf answers read_config's three questions (and -x/-P for one transport)."""
    from checks.config import PARAMETERS, _CONTEXT

    wanted = list(PARAMETERS) + list(_CONTEXT)
    defaults = {n: "1" for n in wanted} | {"smtp_data_done_timeout": "600s", "queue_directory": "/var/spool/postfix",
                                          "daemon_directory": "/usr/lib/postfix/sbin"}  # fmt: skip
    values = defaults | (main or {})
    return Recorded({
        ("postconf", "-h", *wanted): "".join(values[n] + "\n" for n in wanted),
        ("postconf", "-d", "-h", *wanted): "".join(defaults[n] + "\n" for n in wanted),
        ("postconf", "-P"): overrides,
        ("postconf", "-x", "smtp_tls_security_level"): "smtp_tls_security_level = may\n",
        ("postconf", "-P", "smtp/unix/smtp_tls_security_level"): "smtp/unix/smtp_tls_security_level = dane\n",
    })  # fmt: skip


def test_one_configuration_reader_knows_each_transports_values() -> None:
    from checks.config import read_config, transport_settings, with_overrides
    from diagnose.commands.logs import effective_timeouts

    target = _postfix("smtp/unix/smtp_data_done_timeout = 20s\nrelay/unix/smtp_data_done_timeout = 900s\n")
    rep = read_config(target)
    assert rep.effective("smtp_data_done_timeout") == "600s"  # main.cf
    assert rep.effective("smtp_data_done_timeout", "smtp/unix") == "20s" and rep.seconds("smtp_data_done_timeout", "relay") == 900
    timeouts, source = effective_timeouts(target)  # the logs command reads what smtp(8) really waits
    assert timeouts is not None and timeouts["smtp_data_done_timeout"] == 20 and source == "postconf on recorded:test"
    assert effective_timeouts(Recorded({})) == (None, "Postfix defaults (no postconf here)")
    assert transport_settings(target, None, "smtp", ("smtp_tls_security_level",)) == {"smtp_tls_security_level": "dane"}
    assert with_overrides({"a": "1", "b": "2"}, {("smtp", "unix", "a"): "3", ("smtp", "inet", "b"): "4"}, "smtp", ["a", "b"]) \
        == {"a": "3", "b": "2"}  # fmt: skip
