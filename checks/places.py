"""Where things are on this machine when nothing else is said: Postfix's tools and logs, pfdiag's own
action log, backups and configuration. One place, so that packagers, containers and the test suite
can move each of them with an environment variable:

    PFDIAG_SBIN_PATH     where Postfix's tools are looked for after PATH   /usr/sbin:/sbin:/usr/local/sbin
    PFDIAG_MAIL_LOGS     the logs tried when Postfix names no maillog_file  /var/log/mail.log:/var/log/maillog:/var/log/postfix.log
    PFDIAG_ACTION_LOG    the queue/config action log                        /var/log/pfdiag/actions.log
    PFDIAG_BACKUP_DIR    where queue deletions keep their copies            /var/lib/pfdiag/backup
    PFDIAG_CONFIG_DIR    pfdiag's own settings (known_hosts it saved)      $XDG_CONFIG_HOME/pfdiag or ~/.config/pfdiag

Lists are separated by ':' (os.pathsep); an empty value means "none". Read at each call, not at
import, so a caller that changes its environment sees the change. Postfix's own configuration
directory is Postfix's business: its tools honour MAIL_CONFIG, and pfdiag passes -c DIR when asked.
"""

from __future__ import annotations

import os

SBIN_PATH = ("/usr/sbin", "/sbin", "/usr/local/sbin")
MAIL_LOGS = ("/var/log/mail.log", "/var/log/maillog", "/var/log/postfix.log")
ACTION_LOG = "/var/log/pfdiag/actions.log"
BACKUP_DIR = "/var/lib/pfdiag/backup"


def _list(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    value = os.environ.get(name)
    if value is None:
        return default
    return tuple(p for p in value.split(os.pathsep) if p)


def sbin_path() -> tuple[str, ...]:
    return _list("PFDIAG_SBIN_PATH", SBIN_PATH)


def mail_logs() -> tuple[str, ...]:
    return _list("PFDIAG_MAIL_LOGS", MAIL_LOGS)


def action_log() -> str:
    return os.environ.get("PFDIAG_ACTION_LOG") or ACTION_LOG


def backup_dir() -> str:
    return os.environ.get("PFDIAG_BACKUP_DIR") or BACKUP_DIR


def config_dir() -> str:
    given = os.environ.get("PFDIAG_CONFIG_DIR")
    if given:
        return given
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "pfdiag")
