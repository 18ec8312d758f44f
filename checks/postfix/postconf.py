"""Postfix configuration outputs -> values. Pure; malformed lines are counted, never fatal.

Formats (postconf(1), postconf(5), master(5)):

    postconf, -n, -d        name = value        "name =" when empty; with -f long values
                                                continue on lines indented by whitespace.
    main.cf (file)          the same, plus "#" comments and "name=value" without spaces
    postconf -h a b c       values only, one per line, in the order asked. An unknown
                            name prints NOTHING on stdout (only a warning on stderr), so
                            pairing values with names needs that stderr: see parse_postconf_h.
    postconf -P             service/type/name = value   (master.cf "-o" overrides, 2.11+)
    postconf -M, -Mf        master.cf service lines: service type private unpriv chroot
    master.cf (file)        wakeup maxproc command [args...]; continuation lines start with
                            whitespace; "-o name=value" or "-o { name = value }" (3.0+).

Time values (parse_time) follow Postfix's conv_time(): an integer plus at most one unit
letter (s, m, h, d, w); without a letter the parameter's own default unit applies, which
is NOT always seconds (maximal_queue_lifetime counts days, delay_warning_time hours:
see TIME_UNITS). "$name" references are expanded first, as Postfix does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from checks.postfix.text import text_lines as _lines
from checks.errors import InputError

__all__ = [
    "ConfStats",
    "MasterService",
    "PostfixConfig",
    "TIME_UNITS",
    "expand",
    "iter_postconf",
    "parse_master",
    "parse_postconf",
    "parse_postconf_h",
    "parse_postconf_p",
    "parse_time",
]

# Time parameters whose bare numbers are not seconds (postconf(5) of Postfix 3.7:
# "The default time unit is d/h"). Every other time parameter defaults to seconds.
TIME_UNITS: dict[str, str] = {
    "address_verify_cache_cleanup_interval": "h",
    "address_verify_negative_expire_time": "d",
    "address_verify_negative_refresh_time": "h",
    "address_verify_positive_expire_time": "d",
    "address_verify_positive_refresh_time": "d",
    "bounce_queue_lifetime": "d",
    "delay_warning_time": "h",
    "fast_flush_purge_time": "d",
    "fast_flush_refresh_time": "h",
    "maximal_queue_lifetime": "d",
    "postscreen_bare_newline_ttl": "d",
    "postscreen_cache_cleanup_interval": "h",
    "postscreen_cache_retention_time": "d",
    "postscreen_dnsbl_max_ttl": "h",
    "postscreen_dnsbl_ttl": "h",
    "postscreen_greet_ttl": "d",
    "postscreen_non_smtp_command_ttl": "d",
    "postscreen_pipelining_ttl": "d",
    "smtp_sasl_auth_cache_time": "d",
}

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_INT_MAX = 2**31 - 1  # conv_time() works in a C int and refuses what would overflow it
_TIME = re.compile(r"\s*\+?([0-9]+)([smhdw]?)", re.ASCII)  # int() would take other scripts' digits
# main.cf names: parameter names, and per-transport ones like smtp-amavis_destination_recipient_limit.
_ASSIGN = re.compile(r"([A-Za-z0-9][A-Za-z0-9_.\-]*)\s*=\s?(.*)")
_P_LINE = re.compile(r"([^\s/=]+)/([^\s/=]+)/([A-Za-z0-9][A-Za-z0-9_.\-]*)\s*=\s?(.*)")
_UNKNOWN_WARNING = re.compile(r"warning: ([A-Za-z0-9][A-Za-z0-9_.\-]*): unknown parameter")
_REF = re.compile(r"\$(?:([A-Za-z0-9_]+)|\{([A-Za-z0-9_]+)(?:([?:])(\{[^{}]*\}(?::\{[^{}]*\})?|[^{}]*))?\}|\(([A-Za-z0-9_]+)\)|(\$))")
_BRACED = re.compile(r"\{([^{}]*)\}(?::\{([^{}]*)\})?")
_TOOL_MESSAGE = re.compile(r"(?:\S*/)?(?:postconf|postfix|postqueue|postsuper|sendmail|mailq)(?:\[\d+\])?: (?:warning|fatal|error|panic): ")
MASTER_TYPES = frozenset({"inet", "unix", "unix-dgram", "fifo", "pass"})
_MAX_EXPANSION_DEPTH = 100  # Postfix's own mac_expand() gives up at 100 levels too


@dataclass
class ConfStats:
    """What parsing one configuration output met besides good lines."""

    lines: int = 0
    malformed: int = 0
    examples: list[tuple[int, str, str]] = field(default_factory=list)  # (line no, why, text)
    warnings: list[str] = field(default_factory=list)  # "postconf: warning: ..." lines

    def bad(self, lineno: int, why: str, text: str) -> None:
        self.malformed += 1
        if len(self.examples) < 5:
            self.examples.append((lineno, why, text[:200]))


def _is_tool_message(line: str) -> bool:
    """stderr merged into stdout: "postconf: warning: ...", "postconf: fatal: ..."."""
    return _TOOL_MESSAGE.match(line) is not None


def _logical_lines(text_or_lines: str | bytes | Iterable[str | bytes], stats: ConfStats) -> Iterator[tuple[int, str]]:
    """Physical -> logical lines: whitespace at the start continues the previous line
    (main.cf, master.cf and postconf -f all fold this way). Comment lines are skipped
    without ending a logical line, as Postfix does."""
    pending: list[str] = []
    start = 0
    for lineno, raw in enumerate(_lines(text_or_lines), 1):
        stats.lines += 1
        stripped = raw.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            continue
        if _is_tool_message(stripped):
            stats.warnings.append(stripped)
            continue
        if raw[:1].isspace():
            if pending:
                pending.append(stripped)
            else:
                stats.bad(lineno, "continuation line without a line to continue", raw)
            continue
        if pending:
            yield start, " ".join(pending)
        pending, start = [raw.rstrip()], lineno
    if pending:
        yield start, " ".join(pending)


def iter_postconf(text_or_lines: str | bytes | Iterable[str | bytes], stats: ConfStats | None = None) -> Iterator[tuple[str, str]]:
    """(name, value) pairs of `postconf`, `postconf -n`, `postconf -d` (also -f) or main.cf."""
    stats = stats if stats is not None else ConfStats()
    for lineno, line in _logical_lines(text_or_lines, stats):
        m = _ASSIGN.fullmatch(line)
        if m is None:
            stats.bad(lineno, "not 'name = value'", line)
            continue
        yield m[1], m[2].strip()


def parse_postconf(text_or_lines: str | bytes | Iterable[str | bytes], stats: ConfStats | None = None) -> dict[str, str]:
    """`postconf [-n|-d]` output or main.cf text -> {name: raw value}. A later line wins, as in main.cf."""
    return dict(iter_postconf(text_or_lines, stats))


def parse_postconf_h(
    text: str | bytes, names: Iterable[str], stderr: str | bytes = "", stats: ConfStats | None = None
) -> dict[str, str]:
    """`postconf -h NAME...` -> {name: value}, for the names passed in the order asked.

    postconf skips unknown names on stdout and says so only on stderr, so the values are
    paired after dropping the names stderr calls unknown. When the counts still differ
    the pairing would be a guess, and a wrong pairing is worse than none: InputError."""
    stats = stats if stats is not None else ConfStats()
    wanted = list(names)
    if isinstance(stderr, bytes):
        stderr = stderr.decode("utf-8", "replace")
    unknown = set(_UNKNOWN_WARNING.findall(stderr))
    known = [n for n in wanted if n not in unknown]
    values: list[str] = []
    for raw in _lines(text):
        stats.lines += 1
        if _is_tool_message(raw.strip()):
            stats.warnings.append(raw.strip())
            continue
        if raw[:1].isspace() and raw.strip() and values:  # -hf folds long values
            values[-1] = f"{values[-1]} {raw.strip()}" if values[-1] else raw.strip()
            continue
        values.append(raw.strip())
    if len(values) != len(known):
        raise InputError(
            f"postconf -h printed {len(values)} value(s) for {len(known)} known parameter(s) "
            f"({', '.join(known) or 'none'}): cannot tell which value belongs to which name"
        )
    return dict(zip(known, values))


def parse_postconf_p(
    text_or_lines: str | bytes | Iterable[str | bytes], stats: ConfStats | None = None
) -> dict[tuple[str, str, str], str]:
    """`postconf -P` -> {(service, type, name): value}: the master.cf "-o" overrides."""
    stats = stats if stats is not None else ConfStats()
    out: dict[tuple[str, str, str], str] = {}
    for lineno, line in _logical_lines(text_or_lines, stats):
        m = _P_LINE.fullmatch(line)
        if m is None:
            stats.bad(lineno, "not 'service/type/name = value'", line)
            continue
        out[(m[1], m[2], m[3])] = m[4].strip()
    return out


@dataclass(frozen=True, slots=True)
class MasterService:
    """One master.cf service. Columns keep their raw text ("-" = Postfix's default)."""

    service: str
    type: str
    private: str
    unpriv: str
    chroot: str
    wakeup: str
    maxproc: str
    command: str
    args: tuple[str, ...] = ()  # everything after the command, braces removed, -o included
    options: tuple[tuple[str, str], ...] = ()  # the -o name=value pairs, in order
    line: int = 0

    @property
    def key(self) -> str:
        return f"{self.service}/{self.type}"

    def option(self, name: str) -> str | None:
        """The last -o value for `name` (the daemon sees the last one), or None."""
        found = None
        for n, v in self.options:
            if n == name:
                found = v
        return found

    def chrooted(self, default: bool = False) -> bool:
        """'-' means the default: n since Postfix 3.0, y before (pass default=True for those)."""
        if self.chroot == "-":
            return default
        return self.chroot.lower().startswith("y")


def _split_args(text: str) -> list[str] | None:
    """master.cf argument words; "{ a b }" is one word "a b" (Postfix 3.0+). None if unbalanced."""
    words: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        if text[i] == "{":
            depth, j = 0, i
            while j < n:
                if text[j] == "{":
                    depth += 1
                elif text[j] == "}":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            if depth:
                return None
            words.append(text[i + 1 : j].strip())
            i = j + 1
            continue
        j = i
        while j < n and not text[j].isspace():
            j += 1
        words.append(text[i:j])
        i = j
    return words


def _options(args: list[str]) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(args):
        word = args[i]
        spec = None
        if word == "-o" and i + 1 < len(args):
            spec, i = args[i + 1], i + 2
        elif word.startswith("-o") and len(word) > 2 and "=" in word:  # getopt also takes -oname=value
            spec, i = word[2:], i + 1
        else:
            i += 1
        if spec is not None and "=" in spec:
            name, _, value = spec.partition("=")
            out.append((name.strip(), value.strip()))
    return tuple(out)


def parse_master(text_or_lines: str | bytes | Iterable[str | bytes], stats: ConfStats | None = None) -> list[MasterService]:
    """master.cf text, `postconf -M` or `postconf -Mf` -> services in file order."""
    stats = stats if stats is not None else ConfStats()
    services: list[MasterService] = []
    for lineno, line in _logical_lines(text_or_lines, stats):
        words = _split_args(line)
        if words is None or len(words) < 8:
            stats.bad(lineno, "a service needs 8 columns", line)
            continue
        if words[1] not in MASTER_TYPES:
            stats.bad(lineno, f"unknown service type {words[1]!r}", line)
            continue
        args = tuple(words[8:])
        service, kind, private, unpriv, chroot, wakeup, maxproc, command = words[:8]
        services.append(MasterService(service, kind, private, unpriv, chroot, wakeup, maxproc, command,
                                      args=args, options=_options(list(args)), line=lineno))
    return services


def _conditional(body: str, op: str, current: str) -> str:
    """The text a ${name?...} or ${name:...} chooses, given the value of name."""
    m = _BRACED.fullmatch(body)
    if m is not None:
        if m[2] is not None:  # ${name?{when set}:{when empty}} (Postfix 3.0+)
            return m[1] if current else m[2]
        body = m[1]
    if op == "?":
        return body if current else ""
    return "" if current else body


def expand(value: str, mapping: Mapping[str, str], *, strict: bool = True, _depth: int = 0) -> str:
    """Expand $name, ${name}, $(name), $$, ${name?text}, ${name:text} and
    ${name?{text}:{text}} the way Postfix evaluates main.cf values.

    strict: an undefined name raises InputError (Postfix would silently use an empty
    string, which then makes a number or time unparseable anyway)."""
    if "$" not in value:
        return value
    if _depth > _MAX_EXPANSION_DEPTH:
        raise InputError(f"parameter expansion loops (more than {_MAX_EXPANSION_DEPTH} levels): {value[:80]!r}")

    def one(name: str) -> str:
        if name in mapping:
            return expand(mapping[name], mapping, strict=strict, _depth=_depth + 1)
        if strict:
            raise InputError(f"${name} is not defined")
        return ""

    def sub(m: re.Match[str]) -> str:
        if m[6]:
            return "$"
        name = m[1] or m[2] or m[5]
        if m[3]:  # ${name?...} / ${name:...}: the name only decides, undefined = empty
            current = expand(mapping.get(name, ""), mapping, strict=strict, _depth=_depth + 1)
            chosen = _conditional(m[4] or "", m[3], current)
            return expand(chosen, mapping, strict=strict, _depth=_depth + 1)
        return one(name)

    return _REF.sub(sub, value)


def parse_time(
    value: str, default_unit: str = "s", mapping: Mapping[str, str] | None = None, *, name: str | None = None
) -> float:
    """A Postfix time value -> seconds: '300s', '5d', '0', '$maximal_queue_lifetime'.

    Like conv_time(): a non-negative integer plus at most one of s m h d w; a bare number
    takes `default_unit` (use TIME_UNITS.get(name, 's')). References are expanded through
    `mapping` first. Anything else raises InputError naming the value."""
    label = f"{name} = {value!r}" if name else repr(value)
    if default_unit not in _UNIT_SECONDS:
        raise InputError(f"unknown default time unit {default_unit!r} for {label}")
    text = expand(value, mapping or {}) if "$" in value else value
    m = _TIME.fullmatch(text.rstrip())
    if m is None:
        raise InputError(f"not a Postfix time value (integer plus one of s, m, h, d, w): {label}")
    number, unit = int(m[1]), m[2] or default_unit
    factor = _UNIT_SECONDS[unit]
    if number > _INT_MAX or (factor > 1 and number >= _INT_MAX // factor):
        raise InputError(f"time value too large for Postfix: {label}")
    return float(number * factor)


def _service_spec(service: str) -> tuple[str, str | None]:
    name, _, kind = service.partition("/")
    return name, kind or None


class PostfixConfig:
    """Effective main.cf values, their defaults, and master.cf -o overrides per service.

    values:    effective main.cf values (`postconf` output), or None to build them as
               defaults overlaid with `explicit`
    defaults:  `postconf -d`
    explicit:  `postconf -n` (what main.cf sets)
    overrides: `postconf -P` {(service, type, name): value}; services from `postconf -M`
               or master.cf add theirs (an explicit -P entry wins)."""

    def __init__(
        self,
        values: Mapping[str, str] | None = None,
        defaults: Mapping[str, str] | None = None,
        explicit: Mapping[str, str] | None = None,
        overrides: Mapping[tuple[str, str, str], str] | None = None,
        services: Iterable[MasterService] = (),
    ) -> None:
        self.defaults: dict[str, str] = dict(defaults or {})
        self.explicit: dict[str, str] = dict(explicit or {})
        if values is None:
            values = {**self.defaults, **self.explicit}
        self.values: dict[str, str] = dict(values)
        self.services: tuple[MasterService, ...] = tuple(services)
        self.overrides: dict[tuple[str, str, str], str] = {}
        for svc in self.services:
            for name, value in svc.options:
                self.overrides[(svc.service, svc.type, name)] = value
        self.overrides.update(overrides or {})

    @classmethod
    def from_outputs(
        cls,
        *,
        postconf: str | None = None,
        postconf_d: str | None = None,
        postconf_n: str | None = None,
        postconf_m: str | None = None,
        postconf_p: str | None = None,
        stats: ConfStats | None = None,
    ) -> PostfixConfig:
        """From captured command outputs; any may be missing."""
        def kv(text: str | None) -> dict[str, str] | None:
            return parse_postconf(text, stats) if text is not None else None

        return cls(
            values=kv(postconf),
            defaults=kv(postconf_d),
            explicit=kv(postconf_n),
            overrides=parse_postconf_p(postconf_p, stats) if postconf_p is not None else None,
            services=parse_master(postconf_m, stats) if postconf_m is not None else (),
        )

    def _override(self, name: str, service: str) -> str | None:
        svc, kind = _service_spec(service)
        if kind is not None:
            return self.overrides.get((svc, kind, name))
        hits = {k[1]: v for k, v in self.overrides.items() if k[0] == svc and k[2] == name}
        if not hits:
            return None
        # A bare name ("smtp") can mean the smtpd (inet) or the smtp client (unix): pfdiag asks
        # about delivery, and delivery agents are unix services, so unix wins a conflict.
        return hits.get("unix", next(iter(hits.values())))

    def effective(self, name: str, service: str | None = None) -> str | None:
        """Raw value a daemon sees: the service's -o override, else main.cf, else the default.
        service: "smtp/unix" or a bare "smtp". None when nothing is known about `name`."""
        if service is not None:
            found = self._override(name, service)
            if found is not None:
                return found
        if name in self.values:
            return self.values[name]
        return self.defaults.get(name)

    def mapping(self, service: str | None = None) -> dict[str, str]:
        """Every known name -> value as `service` sees them (for $name expansion)."""
        merged = {**self.defaults, **self.values}
        if service is not None:
            svc, kind = _service_spec(service)
            for s, k, n in self.overrides:
                if s == svc and (kind is None or k == kind):
                    found = self._override(n, service)
                    if found is not None:
                        merged[n] = found
        return merged

    def expanded(self, name: str, service: str | None = None) -> str | None:
        raw = self.effective(name, service)
        return None if raw is None else expand(raw, self.mapping(service))

    def time(self, name: str, service: str | None = None) -> float:
        """A time parameter in seconds, with its own default unit and $references resolved."""
        raw = self.effective(name, service)
        if raw is None:
            raise InputError(f"{name} is not known to this configuration")
        return parse_time(raw, TIME_UNITS.get(name, "s"), self.mapping(service), name=name)

    def is_default(self, name: str, service: str | None = None) -> bool:
        """True when main.cf does not set `name` (or sets it to the default text) and no -o
        override of `service` does."""
        if service is not None and self._override(name, service) is not None:
            return False
        if name in self.explicit:
            return name in self.defaults and " ".join(self.explicit[name].split()) == " ".join(self.defaults[name].split())
        if self.defaults and name in self.values and name in self.defaults:
            return " ".join(self.values[name].split()) == " ".join(self.defaults[name].split())
        return True
