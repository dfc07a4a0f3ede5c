#!/usr/bin/env bash
# Build the local Docker images that vh-orch's tests and demo use, without
# pulling anything from a registry:
#   vh-orch/busybox:test        FROM scratch + Debian's static busybox (applets linked in /bin)
#   vh-orch/example-python:3.11 Debian bookworm minbase + python3 + valohai-utils
# An image that already exists is skipped unless --force is given.
#
# Usage: scripts/build-images.sh [--force] [--refresh-rootfs]
#   --force           rebuild the images even if they exist
#   --refresh-rootfs  also re-run debootstrap instead of reusing the cached rootfs
# Environment:
#   VH_ORCH_IMAGE_CACHE   cache folder for the debootstrap rootfs (default /var/cache/vh-orch)
#   VH_ORCH_DEBIAN_MIRROR Debian mirror for debootstrap (default: read from apt's sources)
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE_DIR=${VH_ORCH_IMAGE_CACHE:-/var/cache/vh-orch}
PIP=${VH_ORCH_PIP:-$REPO_ROOT/.venv/bin/pip}
BUSYBOX_IMAGE=vh-orch/busybox:test
PYTHON_IMAGE=vh-orch/example-python:3.11
SUITE=bookworm
INCLUDE=python3,ca-certificates
IMAGE_PATH_ENV='ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'

FORCE=0
REFRESH_ROOTFS=0
for arg in "$@"; do
    case "$arg" in
        --force) FORCE=1 ;;
        --refresh-rootfs) REFRESH_ROOTFS=1; FORCE=1 ;;
        -h|--help) sed -n '2,16p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "build-images: unknown argument: $arg (try --help)" >&2; exit 2 ;;
    esac
done

log() { printf '[build-images] %s\n' "$*" >&2; }
die() { printf '[build-images] ERROR: %s\n' "$*" >&2; exit 1; }

command -v docker >/dev/null || die "docker not found: run scripts/setup-host.sh first"
timeout 20 docker info >/dev/null 2>&1 || die "docker daemon does not answer: run scripts/setup-host.sh first"

mkdir -p "$CACHE_DIR"
# One build at a time per cache folder (a second caller waits, bounded).
exec 9>"$CACHE_DIR/.lock"
flock -w 1800 9 || die "another build-images.sh holds $CACHE_DIR/.lock for more than 30 min"

WORK=$(mktemp -d "$CACHE_DIR/work.XXXXXX")
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT

TIMES=()
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

# docker run that never pulls and never hangs.
run_image() { timeout 120 docker run --rm --pull never --network none "$@"; }

# ------------------------------------------------------------ busybox image
build_busybox() {
    local bb=/bin/busybox root="$WORK/busybox-root"
    [ -x "$bb" ] || die "$bb not found: install busybox-static (scripts/setup-host.sh)"
    file_out=$(LC_ALL=C file -b "$bb" 2>/dev/null || true)
    case "$file_out" in *dynamically*) die "$bb is dynamically linked: install busybox-static" ;; esac
    mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/root" "$root/proc" "$root/sys" "$root/dev"
    chmod 1777 "$root/tmp"
    cp "$bb" "$root/bin/busybox"
    # The equivalent of `busybox --install -s /bin` inside the image: every
    # applet as /bin/NAME -> /bin/busybox. (Running --install on the host would
    # link to the host's resolved path, /usr/bin/busybox on a merged-/usr system.)
    local applet n=0
    while read -r applet; do
        [ -n "$applet" ] && [ "$applet" != busybox ] || continue
        ln -sfn /bin/busybox "$root/bin/$applet"
        n=$((n + 1))
    done < <("$bb" --list)
    [ "$n" -gt 100 ] || die "'$bb --list' listed only $n applets"
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
    tar -C "$root" --numeric-owner --owner=0 --group=0 -c . \
        | docker import \
            --change "$IMAGE_PATH_ENV" \
            --change 'CMD ["sh"]' \
            --change 'LABEL org.vh-orch.image=busybox' \
            - "$BUSYBOX_IMAGE" >/dev/null
    out=$(run_image "$BUSYBOX_IMAGE" sh -c 'echo ok; sleep 0; cat /dev/null') \
        || die "$BUSYBOX_IMAGE was built but does not run 'sh -c echo ok'"
    [ "$out" = ok ] || die "$BUSYBOX_IMAGE printed '$out' instead of 'ok'"
}

# ------------------------------------------------------------ Debian mirror
# The first http(s)/file URI in apt's configuration serving "$SUITE main":
# /etc/apt/sources.list, then /etc/apt/sources.list.d/*.list (one-line format)
# and *.sources (deb822), in apt's order.
find_mirror() {
    local f
    {
        [ -f /etc/apt/sources.list ] && echo /etc/apt/sources.list
        for f in /etc/apt/sources.list.d/*; do
            case "$f" in *.list|*.sources) [ -f "$f" ] && echo "$f" ;; esac
        done | LC_ALL=C sort
    } | while read -r f; do
        case "$f" in
            *.sources)
                # deb822: paragraphs separated by blank lines; '#' comments;
                # continuation lines start with whitespace.
                awk -v suite="$SUITE" '
                    function flush() {
                        if (types ~ /(^| )deb( |$)/ && suites ~ ("(^| )" suite "( |$)") \
                            && comps ~ /(^| )main( |$)/ && tolower(enabled) != "no") {
                            n = split(uris, u, " ")
                            for (i = 1; i <= n; i++) print u[i]
                        }
                        types = uris = suites = comps = key = ""; enabled = "yes"
                    }
                    BEGIN { enabled = "yes" }
                    /^#/ { next }
                    /^[ \t]*$/ { flush(); next }
                    /^[ \t]/ { val = $0; gsub(/^[ \t]+|[ \t]+$/, "", val); add(key, val); next }
                    {
                        key = tolower(substr($0, 1, index($0, ":") - 1))
                        val = substr($0, index($0, ":") + 1); gsub(/^[ \t]+|[ \t]+$/, "", val)
                        add(key, val)
                    }
                    function add(k, v) {
                        if (k == "types") types = types " " v
                        else if (k == "uris") uris = uris " " v
                        else if (k == "suites") suites = suites " " v
                        else if (k == "components") comps = comps " " v
                        else if (k == "enabled") enabled = v
                    }
                    END { flush() }
                ' "$f"
                ;;
            *)
                awk -v suite="$SUITE" '
                    { sub(/#.*/, ""); gsub(/\[[^]]*\]/, "") }
                    $1 == "deb" && $3 == suite {
                        for (i = 4; i <= NF; i++) if ($i == "main") { print $2; next }
                    }
                ' "$f"
                ;;
        esac
    done | grep -E '^(https?|file):' | head -n 1 || true
}

# ------------------------------------------------------------ python image
build_python() {
    local key rootfs mirror t0 root="$WORK/python-root"
    key="$SUITE-minbase-${INCLUDE//,/-}"
    rootfs="$CACHE_DIR/$key"
    [ -x "$PIP" ] || die "$PIP not found: create the venv first (scripts/test.sh does)"

    if [ "$REFRESH_ROOTFS" -eq 1 ] && [ -d "$rootfs" ]; then
        log "--refresh-rootfs: removing cached $rootfs"
        rm -rf "$rootfs"
    fi
    if [ -f "$rootfs/.vh-orch-complete" ]; then
        log "reusing cached debootstrap rootfs $rootfs"
    else
        command -v debootstrap >/dev/null || die "debootstrap not found: run scripts/setup-host.sh"
        mirror=${VH_ORCH_DEBIAN_MIRROR:-$(find_mirror)}
        [ -n "$mirror" ] || die "no Debian mirror serving '$SUITE main' found in /etc/apt/sources.list{,.d/*.list,.d/*.sources}; set VH_ORCH_DEBIAN_MIRROR"
        log "debootstrap --variant=minbase --include=$INCLUDE $SUITE from $mirror (cached in $rootfs)"
        rm -rf "$rootfs.partial"
        t0=$(now)
        if ! timeout 1800 debootstrap --variant=minbase --include="$INCLUDE" \
                "$SUITE" "$rootfs.partial" "$mirror" >"$WORK/debootstrap.log" 2>&1 </dev/null; then
            tail -n 30 "$WORK/debootstrap.log" >&2
            [ -f "$rootfs.partial/debootstrap/debootstrap.log" ] && tail -n 30 "$rootfs.partial/debootstrap/debootstrap.log" >&2
            rm -rf "$rootfs.partial"
            die "debootstrap failed (see above)"
        fi
        # Slim it: downloaded .debs and package lists are not needed in the image.
        rm -rf "$rootfs.partial"/var/cache/apt/archives/*.deb "$rootfs.partial"/var/cache/apt/*.bin \
               "$rootfs.partial"/var/lib/apt/lists/* 2>/dev/null || true
        echo "$SUITE $INCLUDE $(date -Is)" >"$rootfs.partial/.vh-orch-complete"
        mv "$rootfs.partial" "$rootfs"
        TIMES+=("debootstrap rootfs: $(elapsed "$t0")s")
    fi

    log "copying the rootfs and installing valohai-utils into it (pip --target, on the host)"
    cp -a "$rootfs" "$root"
    rm -f "$root/.vh-orch-complete"
    local site="$root/usr/lib/python3/dist-packages"
    local py_host py_image
    py_host=$("${PIP%/pip}/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    py_image=$(readlink "$root/usr/bin/python3" || true)
    [ "$py_image" = "python$py_host" ] \
        || die "host venv Python is $py_host but the image has /usr/bin/python3 -> $py_image: wheels would not match"
    if ! PIP_DISABLE_PIP_VERSION_CHECK=1 timeout 900 "$PIP" install -q --no-input --target "$site" --no-compile \
            valohai-utils </dev/null >"$WORK/pip.log" 2>&1; then
        tail -n 40 "$WORK/pip.log" >&2
        die "pip install --target $site valohai-utils failed (see above)"
    fi
    # Console scripts land in $site/bin with the host venv's interpreter: move
    # them to /usr/local/bin and point them at the image's python3.
    if [ -d "$site/bin" ]; then
        mkdir -p "$root/usr/local/bin"
        for s in "$site"/bin/*; do
            [ -f "$s" ] || continue
            sed -i '1s|^#!.*python.*$|#!/usr/bin/python3|' "$s"
            mv -f "$s" "$root/usr/local/bin/"
        done
        rm -rf "$site/bin"
    fi
    mkdir -p "$root/usr/local/bin"
    ln -sfn /usr/bin/python3 "$root/usr/local/bin/python"
    tar -C "$root" --numeric-owner \
        --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' --exclude='./tmp/*' --exclude='./run/*' \
        -c . \
        | docker import \
            --change "$IMAGE_PATH_ENV" \
            --change 'CMD ["python3"]' \
            --change 'LABEL org.vh-orch.image=example-python' \
            - "$PYTHON_IMAGE" >/dev/null
    out=$(run_image "$PYTHON_IMAGE" python3 -c "import valohai; print('ok')") \
        || die "$PYTHON_IMAGE was built but 'import valohai' fails in it"
    [ "$out" = ok ] || die "$PYTHON_IMAGE printed '$out' instead of 'ok'"
    out=$(run_image "$PYTHON_IMAGE" python -c "import sys; print(sys.version_info[0])") \
        || die "'python' does not run in $PYTHON_IMAGE"
    [ "$out" = 3 ] || die "'python' in $PYTHON_IMAGE is not Python 3 (printed '$out')"
}

build() {
    local name=$1 fn=$2 t0
    t0=$(now)
    if [ "$FORCE" -eq 0 ] && image_exists "$name"; then
        TIMES+=("$name: exists, skipped ($(elapsed "$t0")s)")
        return
    fi
    local old_id new_id
    old_id=$(docker image inspect --format '{{.Id}}' "$name" 2>/dev/null || true)
    log "building $name"
    "$fn"
    new_id=$(docker image inspect --format '{{.Id}}' "$name")
    # Drop the image the rebuild replaced (kept if a container still uses it).
    if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ]; then
        docker rmi "$old_id" >/dev/null 2>&1 || true
    fi
    TIMES+=("$name: built in $(elapsed "$t0")s")
}

T_ALL=$(now)
build "$BUSYBOX_IMAGE" build_busybox
build "$PYTHON_IMAGE" build_python
for t in "${TIMES[@]}"; do log "$t"; done
log "total $(elapsed "$T_ALL")s"
