#!/usr/bin/env bash
# The project's test command: prepares the host (Docker engine, packages),
# the venv and the local images, then runs pytest with any arguments given.
#   bash scripts/test.sh [--quick] [pytest args...]
# --quick runs the quick tier alone (`-m "not slow"`: no engine images, sshd hosts, PostgreSQL,
# mock clouds or browser; conftest.py says which tests are slow).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO_ROOT=$(pwd)

log() { printf '[test] %s\n' "$*" >&2; }
die() { printf '[test] ERROR: %s\n' "$*" >&2; exit 1; }

bash scripts/setup-host.sh </dev/null

if [ ! -x .venv/bin/python ]; then
    command -v python3 >/dev/null || die "python3 not found"
    log "creating .venv with $(command -v python3)"
    python3 -m venv .venv || die "python3 -m venv failed (on Debian: apt-get install python3-venv)"
fi

log "installing vh-orch[test] into .venv"
if ! PIP_DISABLE_PIP_VERSION_CHECK=1 timeout 1200 .venv/bin/python -m pip install -q --no-input -e '.[test]' \
        </dev/null >.venv/vh-orch-pip.log 2>&1; then
    tail -n 40 .venv/vh-orch-pip.log >&2
    die "pip install -e '.[test]' failed (full log: $REPO_ROOT/.venv/vh-orch-pip.log)"
fi

bash scripts/build-images.sh </dev/null

args=()
for arg in "$@"; do
    if [ "$arg" = "--quick" ]; then args+=(-m "not slow"); else args+=("$arg"); fi
done
exec .venv/bin/python -m pytest "${args[@]}"
