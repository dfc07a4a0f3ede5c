#!/usr/bin/env bash
# Prepare this machine (Debian 12, as root) for vh-orch's tests and demo:
#   - install the Debian packages the tests need (Docker engine, busybox-static,
#     debootstrap, sshd, git, chromium and its driver for the web UI's tests, PostgreSQL
#     for the database tests that run on both SQLite and PostgreSQL, docker-registry for the
#     private registry tests),
#     running `apt-get update` only when needed;
#   - start dockerd in the background when `docker info` does not answer;
#   - check that every docker client on PATH talks to the daemon.
# Idempotent; every wait is bounded; works with no stdin and CI=true.
set -euo pipefail

PACKAGES=(docker.io busybox-static debootstrap openssh-server git chromium chromium-driver postgresql docker-registry)
DOCKERD_LOG=/var/log/vh-orch-dockerd.log
DOCKER_WAIT_SECONDS=${VH_ORCH_DOCKER_WAIT_SECONDS:-60}

log() { printf '[setup-host] %s\n' "$*" >&2; }
die() { printf '[setup-host] ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (uses apt-get and starts dockerd)"
command -v apt-get >/dev/null || die "apt-get not found: this script expects Debian 12"

export DEBIAN_FRONTEND=noninteractive
APT_OPTS=(-y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)

# ---------------------------------------------------------------- packages
missing=()
for pkg in "${PACKAGES[@]}"; do
    # (no `grep -q` here: with pipefail, its early exit can fail the pipeline)
    status=$(dpkg -s "$pkg" 2>/dev/null | sed -n 's/^Status: //p' || true)
    if [ "$status" != "install ok installed" ]; then
        missing+=("$pkg")
    fi
done

apt_update() {
    log "apt-get update"
    timeout 600 apt-get update -q </dev/null || die "apt-get update failed"
}

if [ "${#missing[@]}" -eq 0 ]; then
    log "packages already installed: ${PACKAGES[*]}"
else
    log "installing: ${missing[*]}"
    # Update the package lists first only when they are absent or do not know
    # one of the packages (apt-cache policy prints 'Candidate: (none)').
    need_update=0
    if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
        need_update=1
    else
        for pkg in "${missing[@]}"; do
            cand=$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ {print $2}')
            if [ -z "$cand" ] || [ "$cand" = "(none)" ]; then need_update=1; fi
        done
    fi
    [ "$need_update" -eq 0 ] || apt_update
    if ! timeout 1200 apt-get install "${APT_OPTS[@]}" --no-install-recommends "${missing[@]}" </dev/null; then
        # Stale lists point at versions the mirror no longer has: refresh once.
        log "apt-get install failed; refreshing package lists and retrying once"
        apt_update
        timeout 1200 apt-get install "${APT_OPTS[@]}" --no-install-recommends "${missing[@]}" </dev/null \
            || die "apt-get install ${missing[*]} failed"
    fi
fi

# ---------------------------------------------------------------- dockerd
DOCKERD=$(command -v dockerd || true)
[ -n "$DOCKERD" ] || die "dockerd not found after installing docker.io"
[ -x /usr/bin/docker ] || die "/usr/bin/docker (Debian's client) not found"

docker_answers() { timeout 10 /usr/bin/docker info >/dev/null 2>&1; }

# Is a dockerd process alive: the one started here, or the one in its pid file?
started_pid=""
dockerd_alive() {
    if [ -n "$started_pid" ] && kill -0 "$started_pid" 2>/dev/null; then return 0; fi
    local pid
    pid=$(cat /var/run/docker.pid 2>/dev/null || true)
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ]
}

if docker_answers; then
    log "dockerd already answering"
else
    if dockerd_alive; then
        log "a dockerd process ($(cat /var/run/docker.pid)) exists but does not answer yet; waiting for it"
    else
        log "starting dockerd in the background (log: $DOCKERD_LOG)"
        mkdir -p "$(dirname "$DOCKERD_LOG")"
        printf '\n==== %s: started by %s\n' "$(date -Is)" "$0" >>"$DOCKERD_LOG"
        setsid nohup "$DOCKERD" >>"$DOCKERD_LOG" 2>&1 </dev/null &
        started_pid=$!
        disown || true
    fi
    t0=$SECONDS
    until docker_answers; do
        if [ $((SECONDS - t0)) -ge "$DOCKER_WAIT_SECONDS" ]; then
            log "last lines of $DOCKERD_LOG:"
            tail -n 30 "$DOCKERD_LOG" >&2 || true
            die "dockerd did not answer 'docker info' within ${DOCKER_WAIT_SECONDS}s"
        fi
        if ! dockerd_alive; then
            sleep 1  # it may just have replaced the pid file
            if ! dockerd_alive && ! docker_answers; then
                log "last lines of $DOCKERD_LOG:"
                tail -n 30 "$DOCKERD_LOG" >&2 || true
                die "dockerd exited during startup (log: $DOCKERD_LOG)"
            fi
        fi
        sleep 0.5
    done
    log "dockerd answers after $((SECONDS - t0))s"
fi

# ---------------------------------------------------------------- clients
# /usr/local/bin/docker (a newer client) may shadow Debian's /usr/bin/docker:
# every client found must negotiate an API version with this daemon.
server_version=$(timeout 20 /usr/bin/docker version --format '{{.Server.Version}} (API {{.Server.APIVersion}}, storage '"$(timeout 20 /usr/bin/docker info --format '{{.Driver}}' 2>/dev/null || echo '?')"')' 2>/dev/null) \
    || die "Debian's /usr/bin/docker cannot query the daemon"
log "daemon: $server_version"
seen=()
for client in $(type -ap docker) /usr/bin/docker /usr/local/bin/docker; do
    [ -x "$client" ] || continue
    real=$(readlink -f "$client")
    case " ${seen[*]-} " in *" $real "*) continue ;; esac
    seen+=("$real")
    if ! out=$(timeout 20 "$client" version --format '{{.Client.Version}} {{.Client.APIVersion}} -> {{.Server.Version}}' 2>&1); then
        die "docker client $client cannot talk to the daemon: $out
(hint: an old daemon with a new client may need DOCKER_API_VERSION set to the daemon's API version)"
    fi
    log "client $client: $out"
done
log "host ready"
