#!/usr/bin/env bash
# The main job: install vh-orch into .venv, then run the example project end to end
# on the embedded default (SQLite in $VH_ORCH_HOME, default ~/.vh-orch; the `local`
# environment) and show its logs, metadata and outputs.
#   bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
say() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }
die() { printf 'demo: ERROR: %s\n' "$*" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
    say "creating .venv"
    python3 -m venv .venv || die "python3 -m venv failed (on Debian/Ubuntu: apt-get install python3-venv)"
fi
say "installing vh-orch into .venv"
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[examples]' </dev/null
export PATH="$ROOT/.venv/bin:$PATH"
HOME_DIR="${VH_ORCH_HOME:-$HOME/.vh-orch}"

# With a Docker engine the example runs in a container built here from Debian
# packages (never pulled from a registry); without one it runs as a plain process.
if timeout 10 docker info >/dev/null 2>&1; then
    if ! docker image inspect vh-orch/example-python:3.11 >/dev/null 2>&1; then
        say "building the example image (once; about a minute)"
        missing=""
        for pkg in debootstrap busybox-static; do
            dpkg -s "$pkg" 2>/dev/null | grep -q '^Status: install ok installed' || missing="$missing $pkg"
        done
        if [ -n "$missing" ]; then
            [ "$(id -u)" = 0 ] || die "building the image needs:$missing (apt-get install them as root)"
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
        fi
        bash scripts/build-images.sh </dev/null
    fi
else
    say "no Docker engine answers: the example runs in the process runtime"
fi

say "vh-orch init"
vh-orch init

# The example as a Git repository of its own, refreshed from examples/demo.
REPO="$HOME_DIR/examples/demo-repo"
mkdir -p "$REPO"
cp -r examples/demo/. "$REPO/"
git -C "$REPO" init -q -b main 2>/dev/null || true
git -C "$REPO" add -A
git -C "$REPO" -c user.name=vh-orch-demo -c user.email=demo@vh-orch.invalid commit -qm "example project" >/dev/null 2>&1 || true
if ! vh-orch project list --json | grep -q '"name": "demo"'; then
    say "vh-orch project add demo --repo $REPO"
    vh-orch project add demo --repo "$REPO"
fi

say "vh-orch serve (in the background for this demo)"
LOG="$HOME_DIR/demo-serve.log"
# The HTTP API on a free port for the demo (so a service already on 8700 is no obstacle).
VH_ORCH_LISTEN="${VH_ORCH_LISTEN:-127.0.0.1:0}" vh-orch serve >"$LOG" 2>&1 &
SERVE=$!
trap 'kill -TERM $SERVE 2>/dev/null; wait $SERVE 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do
    grep -q "HTTP API on" "$LOG" && { grep -o "HTTP API on [^ ]*" "$LOG" | tail -1 >&2; break; }
    if ! kill -0 $SERVE 2>/dev/null; then
        grep -q "another vh-orch daemon is running" "$LOG" && { echo "(using the daemon that already runs)"; break; }
        cat "$LOG" >&2; die "vh-orch serve did not start"
    fi
    sleep 0.1
done

say "vh-orch exec run train --project demo -p epochs=3 --follow"
vh-orch exec run train --project demo -p epochs=3 --follow
ID=$(vh-orch exec list --project demo --limit 1 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')

say "vh-orch exec info $ID"
vh-orch exec info "$ID"
say "vh-orch exec metadata $ID"
vh-orch exec metadata "$ID"
say "vh-orch exec outputs $ID"
vh-orch exec outputs "$ID"
say "vh-orch exec list --sort -accuracy"
vh-orch exec list --project demo --sort -accuracy

say "vh-orch task run lr-sweep --project demo   (a grid search from valohai.yaml)"
TASK=$(vh-orch task run lr-sweep --project demo --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
vh-orch task wait "$TASK" --timeout 600 || true
say "vh-orch task info $TASK"
vh-orch task info "$TASK"

say "vh-orch pipeline run train-and-evaluate --project demo   (train, then evaluate its model)"
PIPELINE=$(vh-orch pipeline run train-and-evaluate --project demo --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
vh-orch pipeline wait "$PIPELINE" --timeout 600 || true
say "vh-orch pipeline info $PIPELINE"
vh-orch pipeline info "$PIPELINE"

say "next: the web UI and the HTTP API (what Valohai's \`vh\` client uses)"
echo "start \`vh-orch serve\` (it listens on http://127.0.0.1:8700 unless --listen says otherwise), then"
echo "  web UI: open http://127.0.0.1:8700/ and sign in (\`vh-orch user passwd admin\` sets a password)"
echo "  API:    http://127.0.0.1:8700/api/docs; \`vh login --host http://127.0.0.1:8700 -u admin\`"
