"""SSHTarget: a mail host over SSH (paramiko), behind the same seam as LocalTarget.

Modules: spec (host spec, ssh_config), hostkeys (known_hosts), dial (connecting),
auth (login), channels (requests, output, streams, SFTP reads), target (SSHTarget).

    target = SSHTarget.open("admin@mx1.example.net:2222")   # or an ssh_config alias
    target.run(["postqueue", "-j"], privileged=True)

Connecting
    spec is ``[user@]host[:port]`` (IPv6 as ``[addr]:port``) or an alias from
    ~/.ssh/config (HostName, User, Port, IdentityFile, IdentitiesOnly,
    HostKeyAlias, UserKnownHostsFile, ProxyJump are honoured; ProxyCommand is
    not). ``user@`` and ``:port`` in spec win over the config, as with ssh.
    Authentication is by key only: ssh-agent first, then IdentityFile (or
    ~/.ssh/id_ed25519, id_ecdsa, id_rsa). An encrypted key is unlocked with
    ``password_prompt(prompt)`` when one is given (interactive use).

Host keys (the part that keeps pfdiag from talking to an impostor)
    Read from /etc/ssh/ssh_known_hosts, ~/.ssh/known_hosts and pfdiag's own
    file, PFDIAG_KNOWN_HOSTS (~/.config/pfdiag/known_hosts). pfdiag writes only
    to its own file, never to OpenSSH's. An unknown host is refused with its key
    type and SHA256 fingerprint unless ``accept_new_host_key`` (OpenSSH's
    accept-new): then the key is saved and used. A host whose known key differs
    from the one offered is always refused, naming the file and line.
    ``known_hosts=PATH`` replaces all of these with one file (read and written).
    Hashed entries, patterns and @revoked are understood; @cert-authority is
    not (such hosts count as unknown). StrictHostKeyChecking in ssh_config is
    ignored: the rules above always apply.

Commands
    argv is joined with shlex.join and run as ``sh -c WRAPPER sh ARGV...``:
    WRAPPER is a constant that puts /usr/sbin:/sbin first in PATH (postqueue
    and postconf live there; sshd's default PATH lacks them) and sets LC_ALL=C
    (the parsers and the sudo detection expect English), then ``exec "$@"``.
    The argv only ever reaches the remote shell as quoted positional words.
    ``privileged=True`` prefixes ``sudo -n`` when the login user is not root;
    sudo must then be passwordless for those commands. A command that overruns
    its timeout is stopped on the host (TERM, KILL 2 s later) from a second
    channel, using the pid WRAPPER reports first on stderr (stripped again).

Deadlines and caps (nothing waits or buffers without a limit)
    connect_timeout: each step of connecting (TCP, banner, key exchange, login).
    io_timeout: each answer after login (channel open, exec and SFTP requests,
    SFTP replies, a command silent on stdout and stderr); a request the server
    leaves unanswered marks it stalled, so later calls fail at once instead of
    waiting again. command_timeout: a whole command unless the caller gives one.
    A passed deadline stops the remote command and raises CommandTimeout.
    run() keeps at most max_output bytes of stdout (64 MiB; more stops the
    command with a TargetError); stream() and open_filtered cut lines at
    max_line bytes (1 MiB) and count them; stderr is kept up to 1 MiB.

Files
    open_text streams over SFTP in bounded, pipelined windows; open_filtered
    greps a big (possibly compressed) log on the host so only matching lines
    cross the link. Files must be readable by the login user (Debian: group adm).

The remote login shell must be POSIX-like (sh, bash, dash, ksh, zsh).
"""

from checks.targets.ssh.channels import MAX_LINE, MAX_OUTPUT, MAX_STDERR
from checks.targets.ssh.common import PasswordPrompt
from checks.targets.ssh.hostkeys import PFDIAG_KNOWN_HOSTS, HostKeyPolicy, sha256_fingerprint
from checks.targets.ssh.spec import HostSpec, parse_spec, valid_host
from checks.targets.ssh.target import SSHTarget

__all__ = [
    "MAX_LINE",
    "MAX_OUTPUT",
    "MAX_STDERR",
    "PFDIAG_KNOWN_HOSTS",
    "HostKeyPolicy",
    "HostSpec",
    "PasswordPrompt",
    "SSHTarget",
    "parse_spec",
    "sha256_fingerprint",
    "valid_host",
]
