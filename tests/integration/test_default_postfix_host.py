"""Issue 15: the unit suite passes on a machine where a default Postfix runs and logs to
/var/log/postfix.log, and does not touch that Postfix, its log or pfdiag's default files.

CI machines have no such Postfix, so this test makes one without touching the host's: in a
private mount namespace and a network namespace of its own (`unshare --mount --propagation
private --net`), tmpfs over /etc/postfix, /var/spool/postfix and /var/log, an overlay over
/var/lib (its writes in a tmpfs: /var/lib/postfix, /var/lib/pfdiag), a default Debian
main.cf (the package's main.cf.debian and main.cf.tls with what its postinst adds) with
`maillog_file = /var/log/postfix.log` and `inet_interfaces = loopback-only` (no route out of
the namespace anyway: only its own loopback is up), Debian's master.cf; /var/log/pfdiag with
an action log in it. That Postfix is started on the default paths (`postfix start`, no -c),
then the hermeticity-sensitive unit tests run inside, as CI runs them (CI=true, none of the
suite's PFDIAG_* variables inherited): the "no Postfix here" tests, the action log, the
default paths. Asserted: they pass; the namespace's main.cf, master.cf, postfix.log, action
log, /var/lib/pfdiag and mail queue are the same before and after; the mounts were there
inside (findmnt) and the host's mount table for those paths is the same after (findmnt).

Only the Postfix package's own scripts are read from the host's /etc/postfix (postfix-script,
post-install, postfix-files, dynamicmaps.cf: what `postfix start` needs from meta_directory);
the host's main.cf and master.cf are never read. Root and util-linux are needed: skipped
elsewhere, a failure under CI=true.

Run inside the namespaces, this file is also the script that does the work (`--inside`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
POSTFIX = "/usr/sbin/postfix"
SHARE = Path("/usr/share/postfix")
HOST_PATHS = ("/etc/postfix", "/var/spool/postfix", "/var/log", "/var/lib", "/var/log/pfdiag", "/var/lib/pfdiag")
# the tests that met the host before (issue 15): "no Postfix here", the action log, default paths
SUBSET = [
    "tests/unit/test_report_cli.py",
    "tests/unit/test_cli_logs.py",
    "tests/unit/test_action_log.py",
    "tests/unit/test_queue_config.py::test_postfix_not_installed",
]
META = ("postfix-script", "post-install", "postfix-files", "dynamicmaps.cf")  # package files, not configuration
META_DIRS = ("postfix-files.d", "dynamicmaps.cf.d")
SENTINEL = '{"run": "host-sentinel", "note": "written by the namespace test before the suite ran"}\n'
DEBIAN_POSTINST = """\
smtpd_relay_restrictions = permit_mynetworks permit_sasl_authenticated defer_unauth_destination
myhostname = nshost.pfdiag.test
alias_maps = hash:/etc/postfix/aliases
alias_database = hash:/etc/postfix/aliases
mydestination = $myhostname, nshost.pfdiag.test, localhost.localdomain, localhost
relayhost =
mynetworks = 127.0.0.0/8 [::ffff:127.0.0.0]/104 [::1]/128
mailbox_size_limit = 0
recipient_delimiter = +
inet_interfaces = loopback-only
inet_protocols = all
maillog_file = /var/log/postfix.log
"""


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (mount and network namespaces)"
    for tool in ("unshare", "findmnt", "mount", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (util-linux/iproute2)"
    if not os.path.exists(POSTFIX) or not (SHARE / "main.cf.debian").exists():
        return "Debian's postfix package is not installed"
    for name in META:
        if not os.path.exists(f"/etc/postfix/{name}"):
            return f"/etc/postfix/{name} (the postfix package's own file) is missing"
    return None


def _mounts(paths: tuple[str, ...] = HOST_PATHS) -> dict[str, str]:
    """findmnt's mount (target and fs type) holding each path, as this process sees it."""
    out = {}
    for p in paths:
        res = subprocess.run(["findmnt", "-n", "-o", "TARGET,FSTYPE,SOURCE", "--target", p], capture_output=True,
                             text=True, check=False)  # fmt: skip
        out[p] = res.stdout.strip() or f"(none: {res.stderr.strip()})"
    return out


def _file_state(path: str) -> object:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def test_unit_suite_is_hermetic_beside_a_default_postfix(tmp_path: Path) -> None:
    import pytest

    problem = _missing()
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and the default-Postfix namespace test cannot run: {problem}", pytrace=False)
        pytest.skip(problem)
    host_before = _mounts()
    host_files = {p: _file_state(p) for p in ("/etc/postfix/main.cf", "/etc/postfix/master.cf", "/var/log/postfix.log",
                                              "/var/log/pfdiag/actions.log", "/var/lib/pfdiag")}  # fmt: skip
    # as a CI machine runs the suite: not with this session's hermetic PFDIAG_*/MAIL_CONFIG settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("PFDIAG_") and k != "MAIL_CONFIG"}
    env.update({"CI": "true", "PYTHONDONTWRITEBYTECODE": "1"})
    report = tmp_path / "inside.json"
    argv = ["unshare", "--mount", "--propagation", "private", "--net", "--",
            sys.executable, __file__, "--inside", str(report), str(tmp_path / "scratch")]  # fmt: skip
    res = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO, timeout=600, check=False)
    assert report.exists(), f"the namespace run failed before reporting (exit {res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    inside = json.loads(report.read_text())
    # the default Postfix really ran there, on the default paths, logging to /var/log/postfix.log
    assert inside["postfix_running"], inside
    assert "daemon started" in inside["postfix_log_start"], inside["postfix_log_start"]
    assert inside["postconf"]["maillog_file"] == "/var/log/postfix.log"
    assert inside["postconf"]["inet_interfaces"] == "loopback-only"
    for p in ("/etc/postfix", "/var/spool/postfix", "/var/log"):
        assert " tmpfs " in f" {inside['mounts'][p]} ", (p, inside["mounts"][p])
    assert " overlay " in f" {inside['mounts']['/var/lib']} ", inside["mounts"]["/var/lib"]
    # the subset passed, under CI=true, and touched nothing of that Postfix or pfdiag's default files
    assert inside["pytest_rc"] == 0, inside["pytest_tail"]
    assert " passed" in inside["pytest_tail"] and " skipped" not in inside["pytest_tail"], inside["pytest_tail"]
    assert inside["before"] == inside["after"], {"before": inside["before"], "after": inside["after"]}
    assert inside["after"]["/var/log/pfdiag/actions.log"]["sha256"] == hashlib.sha256(SENTINEL.encode()).hexdigest()
    assert res.returncode == 0, res.stderr[-3000:]
    # and the host saw none of it
    assert _mounts() == host_before
    assert {p: _file_state(p) for p in host_files} == host_files


# ------------------------------------------------------------------ inside the namespaces


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=120)
    if check and res.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed (exit {res.returncode}): {res.stderr.strip()[-1000:]}")
    return res


def _state() -> dict[str, object]:
    """What the suite must not change: the configuration, the log, pfdiag's files, the queue."""
    out: dict[str, object] = {}
    for p in ("/etc/postfix/main.cf", "/etc/postfix/master.cf", "/var/log/postfix.log", "/var/log/pfdiag/actions.log"):
        data = Path(p).read_bytes() if os.path.exists(p) else None
        st = os.stat(p) if data is not None else None
        out[p] = None if data is None or st is None else {"sha256": hashlib.sha256(data).hexdigest(),
                                                          "size": st.st_size, "mtime_ns": st.st_mtime_ns}  # fmt: skip
    for d in ("/var/log/pfdiag", "/var/lib/pfdiag", "/etc/postfix"):
        out[f"{d}/"] = sorted(os.listdir(d)) if os.path.isdir(d) else None
    queue = {}
    for q in ("maildrop", "incoming", "active", "deferred", "hold", "corrupt"):
        queue[q] = sum(len(files) for _, _, files in os.walk(f"/var/spool/postfix/{q}"))
    out["queue"] = queue
    return out


def _wait_for(path: str, text: str, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = Path(path).read_text(errors="replace") if os.path.exists(path) else ""
        if text in got:
            return got
        time.sleep(0.1)
    raise SystemExit(f"{path}: no {text!r} within {timeout:g} s")


def inside(report: str, scratch: str) -> int:
    """In the new namespaces: mount, configure, start Postfix, run the subset, compare, stop."""
    meta = {n: Path(f"/etc/postfix/{n}").read_bytes() for n in META}  # before /etc/postfix is covered
    meta_dirs = {d: {f.name: f.read_bytes() for f in Path(f"/etc/postfix/{d}").glob("*") if f.is_file()}
                 for d in META_DIRS if os.path.isdir(f"/etc/postfix/{d}")}  # fmt: skip
    os.makedirs(scratch, exist_ok=True)
    _run("mount", "-t", "tmpfs", "-o", "mode=0700", "pfdiag-ns-scratch", scratch)
    for d in ("/etc/postfix", "/var/spool/postfix", "/var/log"):
        _run("mount", "-t", "tmpfs", "-o", "mode=0755", "pfdiag-ns", d)
    os.makedirs(f"{scratch}/lib-upper")
    os.makedirs(f"{scratch}/lib-work")
    _run("mount", "-t", "overlay", "pfdiag-ns-lib", "-o",
         f"lowerdir=/var/lib,upperdir={scratch}/lib-upper,workdir={scratch}/lib-work", "/var/lib")  # fmt: skip
    _run("ip", "link", "set", "lo", "up")
    mounts = _mounts()

    etc = Path("/etc/postfix")
    for name, data in meta.items():
        (etc / name).write_bytes(data)
        if name in ("postfix-script", "post-install"):
            (etc / name).chmod(0o755)
    for d, files in meta_dirs.items():
        (etc / d).mkdir()
        for name, data in files.items():
            (etc / d / name).write_bytes(data)
    main_cf = (SHARE / "main.cf.debian").read_text()
    if (SHARE / "main.cf.tls").exists():
        main_cf += (SHARE / "main.cf.tls").read_text()
    (etc / "main.cf").write_text(main_cf + DEBIAN_POSTINST)
    (etc / "master.cf").write_text((SHARE / "master.cf.dist").read_text())
    (etc / "aliases").write_text("postmaster: root\n")
    _run("/usr/sbin/postalias", "hash:/etc/postfix/aliases")
    past = time.time() - 60  # Postfix tools wait while main.cf looks freshly written
    for name in ("main.cf", "master.cf", "aliases"):
        os.utime(etc / name, (past, past))
    os.makedirs("/var/lib/postfix", exist_ok=True)
    shutil.chown("/var/lib/postfix", "postfix", "postfix")
    os.makedirs("/var/log/pfdiag", mode=0o750)
    Path("/var/log/pfdiag/actions.log").write_text(SENTINEL)
    os.makedirs("/var/lib/pfdiag/backup", exist_ok=True)
    _run(POSTFIX, "post-install", "create-missing")
    if os.path.exists("/usr/lib/postfix/configure-instance.sh"):
        _run("/usr/lib/postfix/configure-instance.sh", "-", check=False)
    _run(POSTFIX, "start")
    result: dict[str, object] = {"mounts": mounts}
    try:
        result["postfix_log_start"] = _wait_for("/var/log/postfix.log", "daemon started")[-500:]
        result["postfix_running"] = _run(POSTFIX, "status", check=False).returncode == 0
        result["postconf"] = dict(ln.split(" = ", 1) for ln in _run(
            "postconf", "maillog_file", "inet_interfaces", "queue_directory").stdout.splitlines())  # fmt: skip
        time.sleep(1.0)  # the start's own log lines written
        result["before"] = _state()
        env = {**os.environ, "CI": "true"}
        res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SUBSET], cwd=REPO,
                             env=env, capture_output=True, text=True, timeout=480, check=False)  # fmt: skip
        result["pytest_rc"] = res.returncode
        result["pytest_tail"] = "\n".join((res.stdout + res.stderr).strip().splitlines()[-30:])
        result["after"] = _state()
    finally:
        _run(POSTFIX, "stop", check=False)
        Path(report).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--inside":
        sys.exit(inside(sys.argv[2], sys.argv[3]))
    sys.exit(f"usage: {sys.argv[0]} --inside REPORT SCRATCH (run by the test, in new namespaces)")
