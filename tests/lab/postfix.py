"""The real Debian Postfix, as a throwaway lab instance on loopback.

A ``PostfixLab`` is a Postfix instance of its own, never the machine's default one:
other sessions may use /etc/postfix and /var/spool/postfix at the same time, so the lab
keeps everything in dedicated places (nothing in /etc/postfix is read or changed):

    config directory   /etc/postfix-<name>/{main.cf,master.cf,transport,tls_policy}
    queue directory    /var/spool/postfix-<name>      (also the smtp(8) chroot)
    data directory     /var/lib/postfix-<name>
    log                /var/log/pfdiag-lab/<log name> (maillog_file, written by postlogd)
    lock               /run/pfdiag-lab/<name>.lock    (one session per instance at a time)

Every Postfix command gets the config directory explicitly (``postqueue -c DIR``,
``sendmail -C DIR``, ...; ``env`` has MAIL_CONFIG for tools run by other code). As root no
``alternate_config_directories`` entry in the default main.cf is needed.

Safety: ``inet_interfaces = loopback-only``; ``default_transport = error`` and
``relay_transport = error`` so mail to any domain not routed explicitly bounces inside the
machine; test domains (``.test``) are routed by ``transport_maps`` to
``smtp:[127.0.0.1]:PORT`` (brackets: no DNS at all); smtpd listens on 127.0.0.1:<free port>
only; the smtp chroot's resolv.conf points at 127.0.0.1, so even a stray lookup never reaches
the machine's resolver. An instance in a network namespace (the DNS lab) may route by MX
lookups: its namespace has nothing but ``lo``. ``loopback_violations()`` re-checks all this
from the live configuration; the test suite runs it after every test.

Start: configure-instance.sh (Debian's chroot sync, with MAIL_CONFIG) then ``postfix start``;
readiness by ``master -t`` (exit 0 = NOT running) and the "daemon started" log line. Stop:
SIGTERM to the master's pid (read from its pid file), which stops its children. Starting
twice is a no-op. A fresh start empties the instance's queue and rotates its log to ``.1``.
"""

from __future__ import annotations

import atexit
import contextlib
import email.utils
import fcntl
import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

SBIN = Path("/usr/sbin")
POSTFIX, POSTCONF, POSTQUEUE, POSTSUPER = (str(SBIN / p) for p in ("postfix", "postconf", "postqueue", "postsuper"))
POSTCAT, POSTMAP, POSTKICK, SENDMAIL = (str(SBIN / p) for p in ("postcat", "postmap", "postkick", "sendmail"))
MASTER = "/usr/lib/postfix/sbin/master"
CONFIGURE_INSTANCE = "/usr/lib/postfix/configure-instance.sh"
MASTER_CF_DIST = Path("/usr/share/postfix/master.cf.dist")  # Debian's pristine master.cf
IP = shutil.which("ip") or "/usr/sbin/ip"

LOG_DIR = Path("/var/log/pfdiag-lab")
RUN_DIR = Path("/run/pfdiag-lab")

# First delivery attempts end within seconds: every smtp(8) wait is short.
FAST_TIMEOUTS: dict[str, str] = {
    "smtp_connect_timeout": "3s",
    "smtp_helo_timeout": "5s",
    "smtp_starttls_timeout": "5s",
    "smtp_xforward_timeout": "5s",
    "smtp_mail_timeout": "5s",
    "smtp_rcpt_timeout": "5s",
    "smtp_data_init_timeout": "5s",
    "smtp_data_xfer_timeout": "5s",
    "smtp_data_done_timeout": "5s",
    "smtp_rset_timeout": "5s",
    "smtp_quit_timeout": "5s",
}

# Parameters that could send mail (or packets) somewhere else: the loopback guard reads them.
_GUARDED = (
    "inet_interfaces",
    "default_transport",
    "relay_transport",
    "relayhost",
    "smtp_fallback_relay",
    "sender_dependent_relayhost_maps",
    "sender_dependent_default_transport_maps",
    "content_filter",
    "smtp_bind_address",
    "smtp_bind_address6",
    "transport_maps",
)

STATUS_LINE = re.compile(
    r"^(?P<time>\w{3} [ \d]\d \d\d:\d\d:\d\d) (?P<host>\S+) (?P<program>[\w./-]+)\[(?P<pid>\d+)\]: "
    r"(?P<queue_id>[0-9A-Za-z]+): to=<(?P<to>[^>]*)>,(?: orig_to=<[^>]*>,)? relay=(?P<relay>[^,]+), "
    r"(?:conn_use=\d+, )?delay=(?P<delay>[\d.]+), delays=(?P<delays>[\d./]+), dsn=(?P<dsn>[\d.]+), "
    r"status=(?P<status>\S+) \((?P<reason>.*)\)$"
)
_FINAL = {"sent", "deferred", "bounced", "expired", "SOFTBOUNCE", "undeliverable", "deliverable"}


class LabError(RuntimeError):
    """The lab could not do what was asked (start, a command, a wait)."""


class LabUnavailable(LabError):
    """This machine cannot run the lab at all (not root, a package missing, ...)."""


def missing(netns: bool = False) -> str | None:
    """Why this machine cannot run a Postfix lab, or None if it can."""
    if os.geteuid() != 0:
        return "the Postfix lab needs root (it starts a real Postfix instance)"
    for path in (POSTFIX, POSTCONF, POSTQUEUE, POSTSUPER, POSTMAP, SENDMAIL, MASTER, CONFIGURE_INSTANCE):
        if not os.access(path, os.X_OK):
            return f"{path} is missing (bash tests/lab/install.sh installs postfix)"
    if not MASTER_CF_DIST.is_file():
        return f"{MASTER_CF_DIST} is missing (Debian's postfix package ships it)"
    if netns and not os.access(IP, os.X_OK):
        return "ip is missing (apt-get install iproute2)"
    return None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host in ("localhost", "loopback-only"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Delivery:
    """One delivery status line of the log."""

    queue_id: str
    to: str
    relay: str
    delay: float
    delays: str
    dsn: str
    status: str
    reason: str
    program: str
    line: str

    @classmethod
    def parse(cls, line: str) -> Delivery | None:
        m = STATUS_LINE.match(line)
        if not m or m["status"] not in _FINAL:
            return None
        return cls(
            m["queue_id"], m["to"], m["relay"], float(m["delay"]), m["delays"], m["dsn"], m["status"],
            m["reason"], m["program"], line,
        )  # fmt: skip

    @property
    def d(self) -> float:
        """The transmission part of delays=a/b/c/d."""
        return float(self.delays.split("/")[3])


@dataclass(frozen=True)
class Injected:
    """A message handed to sendmail(1); its queue id is known once cleanup(8) logged it."""

    message_id: str
    sender: str
    recipients: tuple[str, ...]
    size: int
    subject: str


def make_message_id(tag: str = "lab") -> str:
    slug = re.sub(r"[^A-Za-z0-9.-]", "-", tag)[:40]
    return f"<{slug}.{uuid.uuid4().hex[:12]}@lab.pfdiag.test>"


def build_message(
    sender: str,
    recipients: Sequence[str],
    *,
    subject: str,
    message_id: str,
    size: int = 0,
    headers: Mapping[str, str] | None = None,
    body: str | None = None,
) -> bytes:
    """An RFC 5322 message; with size, the body is padded with 76-column lines up to about size bytes."""
    head = [
        f"From: {sender}",
        f"To: {', '.join(recipients)}",
        f"Subject: {subject}",
        f"Date: {email.utils.formatdate(localtime=True)}",
        f"Message-ID: {message_id}",
        "X-Pfdiag-Lab: yes",
    ]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    text = "\n".join(head) + "\n\n" + (body if body is not None else "A pfdiag lab test message.\n")
    data = text.encode()
    if size > len(data):
        line = b"x" * 76 + b"\n"
        data += line * ((size - len(data)) // len(line) + 1)
    return data


class LogTail:
    """Incremental reader of a growing log file; thread-safe; lines kept for the session."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pos = 0
        self._partial = b""
        self._lines: list[str] = []
        self._lock = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self._pos, self._partial, self._lines = 0, b"", []

    def lines(self) -> list[str]:
        with self._lock:
            try:
                with open(self.path, "rb") as fh:
                    fh.seek(self._pos)
                    data = fh.read()
            except FileNotFoundError:
                return list(self._lines)
            self._pos += len(data)
            data = self._partial + data
            *complete, self._partial = data.split(b"\n")
            self._lines += [c.decode("utf-8", "replace") for c in complete]
            return list(self._lines)


class PostfixLab:
    """One lab instance of the real Postfix. See the module docstring for where it lives."""

    def __init__(
        self,
        name: str = "pfdiag-lab",
        *,
        log_name: str = "postfix.log",
        hostname: str = "lab.pfdiag.test",
        netns: str | None = None,
        settings: Mapping[str, str] | None = None,
        sender_domain: str = "sender.test",
    ) -> None:
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", name):
            raise ValueError(f"bad lab name {name!r}")
        self.name = name
        self.netns = netns
        self.hostname = hostname
        self.config_dir = Path(f"/etc/postfix-{name}")
        self.queue_dir = Path(f"/var/spool/postfix-{name}")
        self.data_dir = Path(f"/var/lib/postfix-{name}")
        self.log_path = LOG_DIR / log_name
        self.lock_path = RUN_DIR / f"{name}.lock"
        self.sender_domain = sender_domain
        self.settings: dict[str, str] = {**FAST_TIMEOUTS, **(settings or {})}
        # domain -> transport(5) value; the sender domain and our own name swallow bounces
        self.routes: dict[str, str] = {sender_domain: "discard:lab sender", hostname: "discard:lab postmaster"}
        self.tls_policy: dict[str, str] = {}  # "[127.0.0.1]:port" -> "encrypt" / "verify" / ...
        self.smtpd_port = 0
        self.master_pid: int | None = None
        self.log = LogTail(self.log_path)
        self.start_seconds: float | None = None
        self._lock_fh: int | None = None
        self._started = False
        self._clean_signature: tuple[tuple[int, int, int], ...] | None = None

    def __repr__(self) -> str:
        where = f" in netns {self.netns}" if self.netns else ""
        return f"<PostfixLab {self.name}{where} pid={self.master_pid}>"

    # -- commands
    @property
    def env(self) -> dict[str, str]:
        """Environment for Postfix tools run by other code (MAIL_CONFIG selects this instance)."""
        return {**os.environ, "MAIL_CONFIG": str(self.config_dir), "LC_ALL": "C"}

    def _in_ns(self, argv: Sequence[str]) -> list[str]:
        return [IP, "netns", "exec", self.netns, *argv] if self.netns else list(argv)

    def run(
        self, argv: Sequence[str], *, check: bool = True, input: bytes | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run one command (an argv list, never a shell string) with this instance's environment."""
        proc = subprocess.run(  # noqa: PLW1510 - the return code is checked below, with the output
            list(argv),
            input=input.decode() if input is not None else None,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise LabError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()}")
        return proc

    def postconf(self, *args: str) -> str:
        return self.run([POSTCONF, "-c", str(self.config_dir), *args]).stdout

    def postconf_edit(self, *args: str) -> None:
        """``postconf -e name=value`` (or -M/-P edits), then backdate main.cf and master.cf:
        Postfix commands wait up to ~2 s while main.cf looks freshly written. A running
        instance needs ``reload()`` for daemons that are already up."""
        self.run([POSTCONF, "-c", str(self.config_dir), *args])
        self._backdate()

    def _backdate(self) -> None:
        past = time.time() - 10
        for fname in ("main.cf", "master.cf"):
            with contextlib.suppress(FileNotFoundError):
                os.utime(self.config_dir / fname, (past, past))

    def reload(self) -> None:
        """``postfix reload`` (inside the namespace for a netns instance); waits for the master's log line."""
        mark = self.mark()
        self.run(self._in_ns([POSTFIX, "-c", str(self.config_dir), "reload"]))
        self.wait_for_log(r"postfix/master\[\d+\]: reload", timeout=10, since=mark)

    def postsuper(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return self.run([POSTSUPER, "-c", str(self.config_dir), *args], check=check)

    def postqueue(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return self.run([POSTQUEUE, "-c", str(self.config_dir), *args], check=check)

    def postcat(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return self.run([POSTCAT, "-c", str(self.config_dir), *args], check=check)

    def kick_pickup(self) -> None:
        """Wake pickup(8) now instead of at its 60 s poll (after postsuper -r)."""
        self.run([POSTKICK, "-c", str(self.config_dir), "public", "pickup", "W"])

    # -- configuration
    def route(
        self, domain: str, port: int | None = None, *, nexthop: str | None = None, tls: str | None = None
    ) -> None:
        """Send mail for domain to smtp:[127.0.0.1]:port (or a transport(5) nexthop you give);
        tls sets the smtp_tls_policy_maps level for that next hop. Live after ``apply()``."""
        if not domain.endswith(".test") and domain != self.hostname:
            raise ValueError(f"{domain}: lab routes are for .test domains only")
        if (port is None) == (nexthop is None):
            raise ValueError("give exactly one of port and nexthop")
        value = nexthop if nexthop is not None else f"smtp:[127.0.0.1]:{port}"
        self.routes[domain] = value
        if tls is not None:
            key = value.partition(":")[2]
            self.tls_policy[key] = tls

    def main_cf(self) -> str:
        base = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.data_dir),
            "maillog_file": str(self.log_path),
            "myhostname": self.hostname,
            "myorigin": "$myhostname",
            "mydestination": "",
            "local_transport": "error:local delivery is off in the pfdiag lab",
            "alias_maps": "",
            "alias_database": "",
            "inet_interfaces": "loopback-only",
            "inet_protocols": "all",
            "mynetworks": "127.0.0.0/8 [::1]/128",
            "relayhost": "",
            "default_transport": "error:the pfdiag lab delivers to routed .test domains only",
            "relay_transport": "error:the pfdiag lab delivers to routed .test domains only",
            "transport_maps": f"hash:{self.config_dir}/transport",
            "smtp_tls_policy_maps": f"hash:{self.config_dir}/tls_policy",
            "smtp_tls_loglevel": "1",
            "smtpd_peername_lookup": "no",
            "smtpd_banner": "$myhostname ESMTP $mail_name (pfdiag lab)",
            "biff": "no",
            "append_dot_mydomain": "no",
            "readme_directory": "no",
            "message_size_limit": "20480000",
        }
        base.update(self.settings)
        head = (
            f"# pfdiag test lab instance {self.name!r}: written by tests/lab/postfix.py at every start.\n"
            "# Loopback only; mail to anything not in transport_maps goes to the error transport.\n"
        )
        return head + "".join(f"{k} = {v}\n" for k, v in base.items())

    def master_cf(self) -> str:
        """Debian's master.cf with smtpd moved from *:25 to 127.0.0.1:<free port>."""
        out = []
        for line in MASTER_CF_DIST.read_text().splitlines():
            fields = line.split()
            if len(fields) >= 8 and fields[0] == "smtp" and fields[1] == "inet":
                line = line.replace("smtp ", f"127.0.0.1:{self.smtpd_port} ", 1)
            out.append(line)
        return "\n".join(out) + "\n"

    def _write_tables(self) -> None:
        transport = "".join(f"{d}\t{v}\n" for d, v in sorted(self.routes.items()))
        policy = "".join(f"{k}\t{v}\n" for k, v in sorted(self.tls_policy.items()))
        for fname, text in (("transport", transport), ("tls_policy", policy)):
            path = self.config_dir / fname
            path.write_text(text)
            self.run([POSTMAP, "-c", str(self.config_dir), f"hash:{path}"])

    def _write_config(self) -> None:
        self.config_dir.mkdir(mode=0o755, exist_ok=True)
        for fname, text in (("main.cf", self.main_cf()), ("master.cf", self.master_cf())):
            (self.config_dir / fname).write_text(text)
        self._backdate()  # Postfix tools wait (up to ~2 s, re-reading) while main.cf looks freshly written
        self._write_tables()

    def apply(self) -> None:
        """Write the routes and TLS policy; a running instance reloads them (unless the new
        configuration would reach beyond loopback: then LabError, and no reload)."""
        self._write_tables()
        self._refuse_unsafe()
        if self.running():
            self.reload()

    def _refuse_unsafe(self) -> None:
        problems = self.loopback_violations()
        if problems:
            raise LabError(f"{self.config_dir} would reach beyond loopback, not (re)starting it: {problems}")

    # -- life cycle
    def running(self) -> bool:
        """master -t exits 0 when the master is NOT running (and non-zero on errors too: so
        without a pid file this instance never ran, and master -t is not asked)."""
        if not (self.config_dir / "main.cf").exists() or not (self.queue_dir / "pid" / "master.pid").exists():
            return False
        proc = subprocess.run(
            [MASTER, "-c", str(self.config_dir), "-t"], capture_output=True, env=self.env, stdin=subprocess.DEVNULL,
            check=False,
        )  # fmt: skip
        return proc.returncode != 0

    def _pid_from_file(self) -> int | None:
        try:
            return int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def acquire(self, timeout: float = 300.0) -> None:
        """Take this instance's lock (held until release()): one test session per instance."""
        if self._lock_fh is not None:
            return
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise LabError(f"{self.lock_path}: another test session has used this lab for {timeout:g} s")
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fh = fd

    def release(self) -> None:
        if self._lock_fh is not None:
            os.close(self._lock_fh)  # closing drops the flock
            self._lock_fh = None

    def start(self, lock_timeout: float = 300.0) -> PostfixLab:
        """Configure and start the instance; a no-op when this object already runs it."""
        if self._started and self.running():
            return self
        problem = missing(netns=self.netns is not None)
        if problem:
            raise LabUnavailable(problem)
        t0 = time.monotonic()
        self.acquire(lock_timeout)
        try:
            if self.running():  # left over by a killed session: the instance is ours by its directory
                self._kill_master(self._pid_from_file())
            self.smtpd_port = free_port()
            self._write_config()
            self._refuse_unsafe()  # e.g. settings= overriding default_transport
            # a fresh queue each start: mail left by an earlier session must not mix into this one
            shutil.rmtree(self.queue_dir, ignore_errors=True)
            for d in (self.queue_dir, self.data_dir, LOG_DIR):  # postfix(1) chdirs to the queue first
                d.mkdir(mode=0o755, parents=True, exist_ok=True)
            shutil.chown(self.data_dir, "postfix", "postfix")  # the master's lock file lives there
            if self.log_path.exists():
                self.log_path.replace(self.log_path.with_name(self.log_path.name + ".1"))
            self.log.reset()
            self.run([POSTFIX, "-c", str(self.config_dir), "post-install", "create-missing"])
            self.run(self._in_ns([CONFIGURE_INSTANCE, "-"]))  # MAIL_CONFIG in env selects this instance
            self.run(self._in_ns([POSTFIX, "-c", str(self.config_dir), "start"]))
            if not self.netns:
                # Belt and braces: a stray lookup by the chrooted smtp(8) fails on loopback instead
                # of reaching the machine's resolver. Written after start, so postfix-script's check
                # does not log "resolv.conf ... differ" into the lab log.
                (self.queue_dir / "etc" / "resolv.conf").write_text("nameserver 127.0.0.1\noptions attempts:1\n")
            self._wait_started()
        except BaseException:
            with contextlib.suppress(Exception):
                self.stop()
            raise
        self._started = True
        self.start_seconds = time.monotonic() - t0
        _RUNNING.add(self)
        return self

    def _wait_started(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.running():
                self.master_pid = self._pid_from_file()
                started = any(re.search(r"postfix/master\[\d+\]: daemon started", ln) for ln in self.log.lines())
                if started and self.master_pid is not None:
                    return
            time.sleep(0.05)
        raise LabError(f"{self!r} did not start within {timeout:g} s; log tail: {self.log.lines()[-10:]}")

    def _kill_master(self, pid: int | None, timeout: float = 15.0) -> None:
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)  # the master stops its children itself
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.running():
            time.sleep(0.05)
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)

    def stop(self, release: bool = True) -> None:
        """Stop the master this lab started (by its pid); the queue and log stay for a post-mortem."""
        _RUNNING.discard(self)
        try:
            if self.running():
                self._kill_master(self.master_pid or self._pid_from_file())
        finally:
            self.master_pid = None
            self._started = False
            if release:
                self.release()

    def __enter__(self) -> PostfixLab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the log
    def log_lines(self) -> list[str]:
        return self.log.lines()

    def mark(self) -> int:
        """A position in the log: pass it as ``since`` to wait only for lines written after now."""
        return len(self.log.lines())

    def wait_for_log(self, regex: str | re.Pattern[str], timeout: float = 30.0, since: int = 0) -> re.Match[str]:
        """The first log line (from line index since) that matches regex; LabError on timeout."""
        pattern = re.compile(regex) if isinstance(regex, str) else regex
        deadline = time.monotonic() + timeout
        while True:
            lines = self.log.lines()
            for line in lines[since:]:
                m = pattern.search(line)
                if m:
                    return m
            if time.monotonic() > deadline:
                raise LabError(f"no log line matching {pattern.pattern!r} within {timeout:g} s in {self.log_path}")
            time.sleep(0.05)

    def queue_ids_for(self, message_id: str) -> list[str]:
        """Every queue id cleanup(8) gave this Message-ID (a requeued message gets a new one)."""
        needle = f": message-id={message_id}"
        out = []
        for line in self.log.lines():
            if line.endswith(needle) and "/cleanup[" in line:
                out.append(line[: -len(needle)].rsplit(" ", 1)[1])
        return out

    def queue_id(self, message_id: str, timeout: float = 15.0) -> str:
        """The (first) queue id of a message, waiting for cleanup(8) to log it."""
        m = self.wait_for_log(rf"postfix/cleanup\[\d+\]: (\w+): message-id={re.escape(message_id)}$", timeout)
        return m.group(1)

    def deliveries(self, queue_id: str, since: int = 0) -> list[Delivery]:
        out = []
        for line in self.log.lines()[since:]:
            if f": {queue_id}: to=<" in line:
                d = Delivery.parse(line)
                if d is not None and d.queue_id == queue_id:
                    out.append(d)
        return out

    def wait_first_attempt(
        self, ref: str | Injected, timeout: float = 30.0, recipients: Iterable[str] | None = None
    ) -> list[Delivery]:
        """The status lines of a message's first delivery attempt: one per recipient when the
        recipients are known (an Injected, or given), else at least one."""
        if isinstance(ref, Injected):
            queue_id = self.queue_id(ref.message_id, timeout)
            want = set(recipients if recipients is not None else ref.recipients)
        elif ref.startswith("<"):
            queue_id = self.queue_id(ref, timeout)
            want = set(recipients or ())
        else:
            queue_id, want = ref, set(recipients or ())
        deadline = time.monotonic() + timeout
        while True:
            got: dict[str, Delivery] = {}
            for d in self.deliveries(queue_id):
                got.setdefault(d.to, d)
            if got and want <= set(got):
                return [got[t] for t in sorted(got)]
            if time.monotonic() > deadline:
                raise LabError(f"{queue_id}: no first attempt for {sorted(want - set(got)) or 'any recipient'} "
                               f"within {timeout:g} s")  # fmt: skip
            time.sleep(0.05)

    # -- mail and queue
    def inject(
        self,
        sender: str,
        recipients: Sequence[str],
        *,
        size: int = 0,
        subject: str = "pfdiag lab",
        message_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        body: str | None = None,
    ) -> Injected:
        """Hand a message to the real sendmail(1) (``sendmail -C DIR -f SENDER -t -i``)."""
        if not recipients:
            raise ValueError("no recipients")
        mid = message_id or make_message_id(subject)
        data = build_message(sender, recipients, subject=subject, message_id=mid, size=size, headers=headers, body=body)
        proc = subprocess.run(  # noqa: PLW1510 - checked below
            [SENDMAIL, "-C", str(self.config_dir), "-f", sender, "-t", "-i"],
            input=data,
            capture_output=True,
            env=self.env,
            timeout=120,
        )
        if proc.returncode != 0:
            raise LabError(f"sendmail exited {proc.returncode}: {proc.stderr.decode(errors='replace').strip()}")
        return Injected(mid, sender, tuple(recipients), len(data), subject)

    def submit(self, sender: str, mails: Sequence[tuple[str, str]], *, source: str = "127.0.0.1",
               login: tuple[str, str] | None = None) -> list[str]:  # fmt: skip
        """Send messages over SMTP to the lab's smtpd from `source` (a loopback address), in one
        session, after SMTP AUTH when `login` is (user, password); mails: [(recipient, subject)].
        Returns their Message-IDs. A refusal raises smtplib's exception."""
        import smtplib

        mids = []
        with smtplib.SMTP("127.0.0.1", self.smtpd_port, timeout=30, source_address=(source, 0)) as c:
            if login:
                c.ehlo()
                c.login(*login)
            for rcpt, subject in mails:
                mid = make_message_id(subject)
                c.sendmail(sender, [rcpt], build_message(sender, [rcpt], subject=subject, message_id=mid).replace(b"\n", b"\r\n"))
                mids.append(mid)
        return mids

    def postqueue_json(self) -> list[dict[str, Any]]:
        """``postqueue -j``: one JSON object per queued message (nothing at all for an empty queue)."""
        import json

        proc = self.postqueue("-j", check=True)
        return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]

    def queue_ids(self) -> list[str]:
        return [str(m["queue_id"]) for m in self.postqueue_json()]

    def queued(self, queue_id: str) -> dict[str, Any] | None:
        for m in self.postqueue_json():
            if m["queue_id"] == queue_id:
                return m
        return None

    def flush(self) -> None:
        """``postqueue -f``: retry all deferred mail now (also forgets dead destinations)."""
        self.postqueue("-f", check=True)

    def clear_queue(self) -> None:
        """``postsuper -d ALL`` (every queue, hold included)."""
        self.postsuper("-d", "ALL", check=True)

    def deferred_mail(self, n: int, tag: str, domain: str = "greylist.test", body: str | None = None) -> list[str]:
        """Empty the queue, send n messages to a destination that defers them (the greylisting
        peer by default) and return their queue ids once each first attempt was deferred."""
        from tests.lab.scenarios import SENDER

        self.clear_queue()
        sent = [self.inject(SENDER, [f"{tag}{i}@{domain}"], subject=f"{tag} {i}",
                            **({"body": body.format(i=i)} if body else {})) for i in range(n)]  # fmt: skip
        ids = []
        for inj in sent:
            d = self.wait_first_attempt(inj, timeout=30)
            if d[0].status != "deferred":
                raise LabError(f"{inj.recipients[0]}: first attempt {d[0].status}, not deferred")
            ids.append(d[0].queue_id)
        return ids

    def fresh_window(
        self, messages: Sequence[tuple[str, Sequence[str], Mapping[str, Any]]], *, clear: bool = True, timeout: float = 60.0
    ) -> str:
        """A log window holding the first attempt of each message (sender, recipients, inject
        keywords): optionally empty the queue, let the log's second turn (stamps have whole
        seconds, so older lines stay out), inject them all at once, wait for every first
        attempt. Returns the window's start for --since (local ISO time, whole seconds)."""
        from concurrent.futures import ThreadPoolExecutor
        from datetime import datetime

        if clear:
            self.clear_queue()
        time.sleep(1.1)
        since = datetime.now().isoformat(timespec="seconds")
        with ThreadPoolExecutor(8) as pool:
            injected = list(pool.map(lambda m: self.inject(m[0], m[1], **m[2]), messages))
        for inj in injected:
            self.wait_first_attempt(inj, timeout=timeout)
        return since

    # -- the guard
    def loopback_violations(self) -> list[str]:
        """What in the live configuration could make this Postfix talk beyond loopback
        (empty list = fine). Reads postconf, master.cf and the transport table."""
        out: list[str] = []
        if not self.config_dir.joinpath("main.cf").exists():
            return out
        vals: dict[str, str] = {}
        for line in self.postconf("-x", *_GUARDED).splitlines():
            name, _, value = line.partition(" =")
            vals[name] = value.strip()
        if not all(is_loopback(h) for h in vals.get("inet_interfaces", "").replace(",", " ").split()):
            out.append(f"inet_interfaces = {vals['inet_interfaces']}")
        for p in ("default_transport", "relay_transport"):
            if not vals.get(p, "").startswith("error"):
                out.append(f"{p} = {vals.get(p)} (must stay error)")
        for p in ("relayhost", "smtp_fallback_relay", "sender_dependent_relayhost_maps",
                  "sender_dependent_default_transport_maps", "content_filter"):  # fmt: skip
            if vals.get(p):
                out.append(f"{p} = {vals[p]} (must stay empty)")
        for p in ("smtp_bind_address", "smtp_bind_address6"):
            if vals.get(p) and not is_loopback(vals[p]):
                out.append(f"{p} = {vals[p]}")
        if vals.get("transport_maps") != f"hash:{self.config_dir}/transport":
            out.append(f"transport_maps = {vals.get('transport_maps')} (not the lab's table)")
        isolated = self.netns is not None and self._netns_isolated(out)
        table = self.config_dir / "transport"
        for line in table.read_text().splitlines() if table.exists() else []:
            if not line.strip() or line.startswith("#"):
                continue
            domain, value = line.split(None, 1)
            transport, _, nexthop = value.partition(":")
            if transport in ("discard", "error", "retry"):
                continue
            host = nexthop.rsplit(":", 1)[0] if nexthop.startswith("[") else nexthop
            if host.startswith("[") and is_loopback(host):
                continue
            if not isolated:
                out.append(f"transport {domain} -> {value} is not [loopback]")
        for line in self.postconf("-M").splitlines():
            f = line.split()
            if len(f) > 1 and f[1] == "inet" and ":" in f[0] and not is_loopback(f[0].rsplit(":", 1)[0]):
                out.append(f"master.cf listens on {f[0]}")
        for line in self.postconf("-P").splitlines():
            name = line.split(" = ", 1)[0].rsplit("/", 1)[-1]
            if name in _GUARDED and name not in ("smtp_bind_address", "smtp_bind_address6"):
                out.append(f"master.cf override {line}")
        return out

    def _config_signature(self) -> tuple[tuple[int, int, int], ...]:
        sig = []
        for fname in ("main.cf", "master.cf", "transport", "transport.db"):
            try:
                st = os.stat(self.config_dir / fname)
            except FileNotFoundError:
                sig.append((0, 0, 0))
                continue
            sig.append((st.st_ino, st.st_ctime_ns, st.st_size))  # ctime: utime() cannot hide an edit
        return tuple(sig)

    def loopback_guard(self) -> list[str]:
        """loopback_violations(), skipping the postconf calls while the configuration files are
        unchanged since the last clean check (the guard runs after every test)."""
        sig = self._config_signature()
        if sig == self._clean_signature:
            out: list[str] = []
            if self.netns is not None:
                self._netns_isolated(out)
            return out
        out = self.loopback_violations()
        self._clean_signature = None if out else sig
        return out

    def _netns_isolated(self, out: list[str]) -> bool:
        assert self.netns is not None
        links = subprocess.run(
            [IP, "-n", self.netns, "-o", "link", "show"], capture_output=True, text=True, check=False
        )
        names = [ln.split(":")[1].strip().split("@")[0] for ln in links.stdout.splitlines() if ":" in ln]
        if links.returncode != 0 or names != ["lo"]:
            out.append(f"netns {self.netns} has links {names or links.stderr.strip()} (only lo allowed)")
            return False
        pid = self.master_pid
        if pid is not None:
            try:
                if os.stat(f"/proc/{pid}/ns/net").st_ino != os.stat(f"/run/netns/{self.netns}").st_ino:
                    out.append(f"master {pid} is not running inside netns {self.netns}")
                    return False
            except OSError:
                pass
        return True


_RUNNING: set[PostfixLab] = set()


@atexit.register
def _stop_forgotten_labs() -> None:
    # a script that forgot stop(), or an interpreter ending early: no lab master outlives it
    for lab in list(_RUNNING):
        with contextlib.suppress(Exception):
            lab.stop()


def running_labs() -> list[PostfixLab]:
    """The labs started in this process and not stopped yet (for the loopback guard)."""
    return list(_RUNNING)
