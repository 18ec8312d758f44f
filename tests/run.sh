#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what it needs, then runs pytest.
# Usage: bash tests/run.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the real test lab uses (Postfix, DNS server, sshd, anchors for benchmarks).
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    bash tests/lab/install.sh
fi

python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
# the type gate (pyproject.toml [tool.mypy]: checks/ and diagnose/), then the tests
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
