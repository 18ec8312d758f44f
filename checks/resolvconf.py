"""resolv.conf(5): the one reader of it. Pure parsing plus one read through a Target.

Postfix's chrooted delivery agents resolve with $queue_directory/etc/resolv.conf, a copy
of /etc/resolv.conf made at start (Debian): the DNS checks ask what it lists, and the
configuration report warns when the copy and the original differ.
"""

from __future__ import annotations

from dataclasses import dataclass

from checks.errors import InputError
from checks.targets.base import Target

HOST_RESOLV = "/etc/resolv.conf"


def chroot_resolv(queue_directory: str) -> str:
    """Where a chrooted smtp(8) finds its resolv.conf."""
    return queue_directory.rstrip("/") + "/etc/resolv.conf"


@dataclass(frozen=True)
class ResolvConf:
    nameservers: tuple[str, ...]  # as listed (a zone index like %eth0 removed)
    search: tuple[str, ...] = ()
    options: tuple[str, ...] = ()
    lines: tuple[str, ...] = ()  # every significant line, comments and blanks removed

    @property
    def servers(self) -> list[str]:
        """The servers libc asks: none listed means 127.0.0.1."""
        return list(self.nameservers) or ["127.0.0.1"]


def parse_resolv_conf(text: str) -> ResolvConf:
    """resolv.conf text -> ResolvConf; "#" and ";" start comments; unknown keywords are kept
    in ``lines`` only. The last search/domain line wins, as in libc."""
    servers: list[str] = []
    search: list[str] = []
    options: list[str] = []
    lines: list[str] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if not line:
            continue
        lines.append(" ".join(line.split()))
        key, *values = line.split()
        if key == "nameserver" and values:
            servers.append(values[0].split("%", 1)[0])
        elif key in ("search", "domain"):
            search = values
        elif key == "options":
            options.extend(values)
    return ResolvConf(tuple(servers), tuple(search), tuple(options), tuple(lines))


def read_resolv_conf(target: Target, path: str = HOST_RESOLV) -> ResolvConf:
    """The target's resolv.conf at ``path``; InputError naming the file and the target."""
    try:
        with target.open_text(path) as fh:
            text = fh.read(1 << 20)  # a resolv.conf is a few lines: a bound, not a limit
    except InputError as exc:
        raise InputError(f"cannot read {path} on {target.where}: {exc}") from None
    return parse_resolv_conf(text)
