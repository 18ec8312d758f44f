"""postconf outputs and master.cf, captured from the real Postfix 3.7.11 of the lab machine
(tests/data/postconf/*; seed/ adds the seed admin's settings and -o overrides to a copy of
the same configuration, read back with `postconf -c DIR ...`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from checks.errors import InputError
from checks.postfix.postconf import (
    TIME_UNITS,
    ConfStats,
    MasterService,
    PostfixConfig,
    expand,
    parse_master,
    parse_postconf,
    parse_postconf_h,
    parse_postconf_p,
    parse_time,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "postconf"
SEED = DATA / "seed"


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def defaults() -> dict[str, str]:
    return parse_postconf(read(DATA / "postconf-d.txt"))


@pytest.fixture(scope="module")
def seed() -> PostfixConfig:
    return PostfixConfig.from_outputs(
        postconf=read(SEED / "postconf.txt"),
        postconf_d=read(DATA / "postconf-d.txt"),
        postconf_n=read(SEED / "postconf-n.txt"),
        postconf_m=read(SEED / "postconf-M.txt"),
        postconf_p=read(SEED / "postconf-P.txt"),
    )


# ---------------------------------------------------------------- postconf -d / -n / plain


def test_postconf_d_every_line(defaults):
    stats = ConfStats()
    again = parse_postconf(read(DATA / "postconf-d.txt"), stats)
    assert again == defaults
    assert len(defaults) == 1043 == stats.lines and stats.malformed == 0


@pytest.mark.parametrize("name,value", [
    ("mail_version", "3.7.11"),
    ("queue_run_delay", "300s"),
    ("minimal_backoff_time", "300s"),
    ("maximal_backoff_time", "4000s"),
    ("maximal_queue_lifetime", "5d"),
    ("bounce_queue_lifetime", "5d"),
    ("delay_warning_time", "0h"),
    ("smtp_data_done_timeout", "600s"),
    ("smtp_helo_timeout", "300s"),
    ("lmtp_connect_timeout", "0s"),
    ("smtp_tls_security_level", ""),  # printed as "smtp_tls_security_level =" with no space after
    ("smtp_pix_workarounds", "disable_esmtp,delay_dotcrlf"),
    ("default_rbl_reply", "$rbl_code Service unavailable; $rbl_class [$rbl_what] blocked using $rbl_domain${rbl_reason?; $rbl_reason}"),
])
def test_postconf_d_values(defaults, name, value):
    assert defaults[name] == value


def test_folded_output_is_the_same_configuration(defaults):
    # postconf -df folds long values onto indented lines
    text = read(DATA / "postconf-df.txt")
    assert any(line.startswith("    ") for line in text.splitlines())
    folded = parse_postconf(text)
    assert folded.pop("process_id") != defaults["process_id"]  # two postconf runs
    assert folded == {k: v for k, v in defaults.items() if k != "process_id"}


def test_postconf_n_and_main_cf():
    explicit = parse_postconf(read(DATA / "postconf-n.txt"))
    assert len(explicit) == 19
    assert explicit["relayhost"] == "" and explicit["default_transport"] == "error"
    assert explicit["mydestination"] == "lab.pfdiag.test, $myhostname, vm, localhost.localdomain, localhost"
    # main.cf itself (comments, "name=value" spacing) gives what postconf -n says it sets
    stats = ConfStats()
    main_cf = parse_postconf(read(SEED / "main.cf"), stats)
    assert stats.malformed == 0
    explicit = parse_postconf(read(SEED / "postconf-n.txt"))
    assert explicit.pop("config_directory").startswith("/tmp/")  # `postconf -c DIR -n` reports the -c
    assert main_cf == explicit


def test_postconf_plain_is_defaults_overlaid_with_n(defaults):
    plain = parse_postconf(read(DATA / "postconf.txt"))
    explicit = parse_postconf(read(DATA / "postconf-n.txt"))
    for name, value in explicit.items():
        assert plain[name] == value
    assert plain["queue_run_delay"] == defaults["queue_run_delay"]


def test_bad_lines_are_counted():
    stats = ConfStats()
    got = parse_postconf("a = 1\n  continued\n= x\nno equals sign\npostconf: warning: b: unknown parameter\nc=\n", stats)
    assert got == {"a": "1 continued", "c": ""}
    assert stats.malformed == 2
    assert [why for _, why, _ in stats.examples] == ["not 'name = value'", "not 'name = value'"]
    assert stats.warnings == ["postconf: warning: b: unknown parameter"]
    orphan = ConfStats()
    assert parse_postconf("   starts indented\n", orphan) == {} and orphan.malformed == 1


# ---------------------------------------------------------------- postconf -h


def test_postconf_h_with_an_unknown_name():
    names = ["queue_run_delay", "nosuchparam", "relayhost", "minimal_backoff_time"]
    got = parse_postconf_h(read(DATA / "postconf-h.txt"), names, stderr=read(DATA / "postconf-h.stderr"))
    assert got == {"queue_run_delay": "300s", "relayhost": "", "minimal_backoff_time": "300s"}


def test_postconf_h_refuses_to_guess():
    with pytest.raises(InputError, match="cannot tell which value"):
        parse_postconf_h(read(DATA / "postconf-h.txt"), ["queue_run_delay", "nosuchparam", "relayhost", "minimal_backoff_time"])
    assert parse_postconf_h(b"1\n\n", ["a", "b"]) == {"a": "1", "b": ""}
    assert parse_postconf_h("x, y,\n    z\n", ["a"]) == {"a": "x, y, z"}  # -hf folding


# ---------------------------------------------------------------- postconf -P


def test_postconf_p():
    assert parse_postconf_p(read(DATA / "postconf-P.txt")) == {("relay", "unix", "syslog_name"): "postfix/$service_name"}
    seed = parse_postconf_p(read(SEED / "postconf-P.txt"))
    assert seed[("slowdest", "unix", "smtp_data_done_timeout")] == "1800s"
    assert seed[("submission", "inet", "smtpd_client_restrictions")] == "permit_sasl_authenticated, reject"
    assert len(seed) == 7
    stats = ConfStats()
    assert parse_postconf_p("smtp/unix/x = 1\nsmtp_x = 2\n", stats) == {("smtp", "unix", "x"): "1"}
    assert stats.malformed == 1


# ---------------------------------------------------------------- master.cf / postconf -M


def _shape(services: list[MasterService]) -> list[tuple]:
    return [(s.service, s.type, s.private, s.unpriv, s.chroot, s.wakeup, s.maxproc, s.command, s.args, s.options)
            for s in services]


@pytest.mark.parametrize("folder", [DATA, SEED], ids=["debian", "seed"])
def test_master_cf_and_postconf_m_agree(folder):
    outputs = {}
    for name in ("master.cf", "postconf-M.txt", "postconf-Mf.txt"):
        stats = ConfStats()
        outputs[name] = parse_master(read(folder / name), stats)
        assert stats.malformed == 0, (name, stats.examples)
    m = _shape(outputs["postconf-M.txt"])
    assert _shape(outputs["postconf-Mf.txt"]) == m
    # the file writes "-o { a = b }" where postconf prints "-o {a=b}": compare the options
    assert [(s[0], s[1], s[9]) for s in _shape(outputs["master.cf"])] == [(s[0], s[1], s[9]) for s in m]
    assert len(m) == (31 if folder == DATA else 33)


def test_master_services_debian():
    services = {s.key: s for s in parse_master(read(DATA / "postconf-M.txt"))}
    assert services["smtp/inet"] == MasterService("smtp", "inet", "n", "-", "y", "-", "-", "smtpd", line=1)
    assert services["smtp/unix"].chrooted() and services["smtp/unix"].command == "smtp"
    assert services["relay/unix"].options == (("syslog_name", "postfix/$service_name"),)
    assert services["tlsmgr/unix"].wakeup == "1000?"
    assert services["postlog/unix-dgram"].command == "postlogd"
    assert services["scalemail-backend/unix"].maxproc == "2"
    assert services["maildrop/unix"].args == ("flags=DRXhu", "user=vmail", "argv=/usr/bin/maildrop", "-d", "${recipient}")
    assert not services["local/unix"].chrooted() and services["smtp/inet"].chrooted()
    dash = MasterService("x", "unix", "-", "-", "-", "-", "-", "smtp")
    assert not dash.chrooted() and dash.chrooted(default=True)  # "-": n since 3.0, y before


def test_master_options_and_braces():
    services = {s.key: s for s in parse_master(read(SEED / "master.cf"))}
    slow = services["slowdest/unix"]
    assert slow.options == (("smtp_data_done_timeout", "1800s"), ("smtp_helo_timeout", "120s"),
                            ("syslog_name", "postfix/slowdest"))
    assert slow.option("smtp_helo_timeout") == "120s" and slow.option("nope") is None
    sub = services["submission/inet"]
    assert sub.option("smtpd_client_restrictions") == "permit_sasl_authenticated, reject"


def test_master_bad_lines():
    stats = ConfStats()
    text = ("smtp inet n - y - - smtpd\n"
            "broken unix - -\n"
            "odd   tcp  - - - - - smtp\n"
            "brace unix - - n - - smtp -o {unclosed\n"
            "  -o smtp_helo_timeout=5s\n"
            "x unix - - n - - smtp -osmtp_helo_timeout=7s -o flag\n")
    services = parse_master(text, stats)
    assert [s.key for s in services] == ["smtp/inet", "x/unix"]
    assert services[1].options == (("smtp_helo_timeout", "7s"),)
    assert stats.malformed == 3
    assert [why for _, why, _ in stats.examples] == [
        "a service needs 8 columns", "unknown service type 'tcp'", "a service needs 8 columns"]


# ---------------------------------------------------------------- time values and $references


@pytest.mark.parametrize("value,unit,seconds", [
    ("300s", "s", 300), ("300", "s", 300), ("5m", "s", 300), ("2h", "s", 7200), ("5d", "s", 432000),
    ("1w", "s", 604800), ("0", "s", 0), ("0h", "h", 0), ("4", "h", 14400), ("5", "d", 432000),
    (" 10s", "s", 10), ("+10", "s", 10), ("10s ", "s", 10),
])
def test_parse_time(value, unit, seconds):
    assert parse_time(value, unit) == seconds


@pytest.mark.parametrize("value", ["", "s", "-1", "-1s", "1.5h", "10sec", "10 s", "10x", "1d2h", "0x10", "99999999999",
                                   "2147483647d", "$nosuch", "١٠"])
def test_parse_time_errors(value):
    with pytest.raises(InputError):
        parse_time(value)


def test_parse_time_references():
    mapping = {"maximal_queue_lifetime": "5d", "smtp_connect_timeout": "30s", "a": "$b", "b": "$a", "bare": "3"}
    assert parse_time("$maximal_queue_lifetime", "d", mapping) == 432000
    assert parse_time("${smtp_connect_timeout}", "s", mapping) == 30
    assert parse_time("$(smtp_connect_timeout)", "s", mapping) == 30
    assert parse_time("$bare", "d", mapping) == 3 * 86400  # the unit belongs to the parameter being read
    with pytest.raises(InputError, match="loops"):
        parse_time("$a", "s", mapping)
    with pytest.raises(InputError, match="unknown default time unit"):
        parse_time("1", "y")
    with pytest.raises(InputError, match=r"delay_warning_time = 'soon'"):
        parse_time("soon", "h", name="delay_warning_time")


def test_time_units_table_matches_postconf_d(defaults):
    # the non-second parameters exist (postscreen_dnsbl_ttl is gone from 3.7's -d output,
    # older configurations still set it) and their defaults parse with their own unit
    missing = {name for name in TIME_UNITS if name not in defaults}
    assert missing == {"postscreen_dnsbl_ttl"}
    for name in TIME_UNITS.keys() - missing:
        assert parse_time(defaults[name], TIME_UNITS[name], defaults, name=name) >= 0, name


def test_expand():
    m = {"set": "yes", "empty": "", "name": "mx", "nested": "$name.example"}
    assert expand("$name and ${name} and $(name)", m) == "mx and mx and mx"
    assert expand("$$name", m) == "$name"
    assert expand("${set?on}${empty?on}", m) == "on"
    assert expand("${set:off}${empty:off}", m) == "off"
    assert expand("${set?{a}:{b}} ${empty?{a}:{b}}", m) == "a b"
    assert expand("${missing?x}${missing:y}", m) == "y"
    assert expand("host=$nested", m) == "host=mx.example"
    assert expand("$missing", m, strict=False) == ""
    with pytest.raises(InputError, match=r"\$missing is not defined"):
        expand("$missing", m)


def test_the_postscreen_default_expands(defaults):
    # postscreen_dnsbl_max_ttl = ${postscreen_dnsbl_ttl?{$postscreen_dnsbl_ttl}:{1}}h
    assert parse_time(defaults["postscreen_dnsbl_max_ttl"], "h", defaults) == 3600


# ---------------------------------------------------------------- PostfixConfig


def test_effective_values_and_overrides(seed):
    assert seed.effective("smtp_data_done_timeout") == "600s"
    assert seed.effective("smtp_data_done_timeout", "slowdest") == "1800s"
    assert seed.effective("smtp_data_done_timeout", "slowdest/unix") == "1800s"
    assert seed.effective("smtp_data_done_timeout", "slowdest/inet") == "600s"
    assert seed.effective("smtp_data_done_timeout", "smtp") == "600s"
    assert seed.effective("no_such_parameter") is None
    assert seed.effective("syslog_name", "relay") == "postfix/$service_name"


def test_times_with_units_and_references(seed):
    assert seed.time("smtp_data_done_timeout", "slowdest") == 1800
    assert seed.time("smtp_helo_timeout") == 30  # = $smtp_connect_timeout
    assert seed.time("smtp_helo_timeout", "slowdest") == 120
    assert seed.time("bounce_queue_lifetime") == 86400  # = $maximal_queue_lifetime = 24h
    assert seed.time("delay_warning_time") == 4 * 3600  # "4": delay_warning_time counts hours
    assert seed.time("queue_run_delay") == 100
    assert seed.expanded("bounce_queue_lifetime") == "24h"
    with pytest.raises(InputError):
        seed.time("no_such_parameter")


def test_is_default(seed):
    assert not seed.is_default("queue_run_delay")
    assert seed.is_default("smtp_connect_timeout")
    assert seed.is_default("smtp_data_done_timeout")
    assert not seed.is_default("smtp_data_done_timeout", "slowdest")
    assert PostfixConfig(defaults={"a": "1"}, explicit={"a": "1"}).is_default("a")  # set to the default text
    assert not PostfixConfig(defaults={"a": "1"}, explicit={"a": "2"}).is_default("a")


def test_config_without_the_plain_output():
    cfg = PostfixConfig.from_outputs(postconf_d=read(DATA / "postconf-d.txt"), postconf_n=read(SEED / "postconf-n.txt"),
                                     postconf_m=read(SEED / "master.cf"))
    assert cfg.time("minimal_backoff_time") == 120
    assert cfg.time("smtp_data_done_timeout", "slowdest") == 1800
    assert cfg.mapping("slowdest")["smtp_helo_timeout"] == "120s"


# ---------------------------------------------------------------- properties


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=60), st.sampled_from([
    "a = b", "  cont", "# c", "smtp unix - - n - - smtp", "  -o a=b", "-o { x", "x/y/z = 1", "{", "}", "$x",
])), max_size=20))
def test_no_text_crashes_the_config_parsers(lines):
    text = "\n".join(lines)
    stats = ConfStats()
    parse_postconf(text, stats)
    parse_master(text, stats)
    parse_postconf_p(text, stats)
    cfg = PostfixConfig(values=parse_postconf(text))
    for name in list(cfg.values)[:5]:
        try:
            cfg.time(name)
            cfg.expanded(name)
        except InputError:
            pass


@given(st.text(max_size=30), st.sampled_from("smhdw"))
def test_parse_time_raises_only_input_error(value, unit):
    try:
        assert parse_time(value, unit) >= 0
    except InputError:
        pass
