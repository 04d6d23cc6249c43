#!/usr/bin/env bash
# Bring up a local Docker engine in swarm mode with the offline test image fastflow-busybox:latest.
#
# Idempotent; run as root. Steps (each skipped when already done):
#   1. apt-get install docker.io busybox-static (after apt-get update) when dockerd/busybox are missing
#   2. start dockerd in the background (log: $FASTFLOW_DOCKERD_LOG, default /tmp/fastflow-dockerd.log)
#      and wait (bounded) until `docker info` answers
#   3. `docker swarm init --advertise-addr 127.0.0.1` when the engine is not in a swarm
#   4. `docker import` a rootfs holding the static busybox and its applet links as
#      fastflow-busybox:latest (no registry is needed: nothing is pulled)
# Exits non-zero with a message saying which step failed.
set -u
set -o pipefail

LOG=${FASTFLOW_DOCKERD_LOG:-/tmp/fastflow-dockerd.log}
WAIT=${FASTFLOW_DOCKERD_WAIT:-60}
IMAGE=fastflow-busybox:latest

die() { echo "docker-up: $*" >&2; exit 1; }
say() { echo "docker-up: $*" >&2; }

if [ "$(id -u)" != 0 ]; then
    docker info >/dev/null 2>&1 || die "not root and the engine does not answer; run me as root"
fi

# 1. packages
need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
BUSYBOX=""
for b in /bin/busybox /usr/bin/busybox; do
    if [ -x "$b" ] && file -L "$b" 2>/dev/null | grep -q 'statically linked'; then BUSYBOX=$b; break; fi
done
[ -n "$BUSYBOX" ] || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    timeout 300 apt-get update -qq >/dev/null || die "apt-get update failed"
    timeout 600 apt-get install -y -qq "${need[@]}" >/dev/null || die "apt-get install ${need[*]} failed"
    for b in /bin/busybox /usr/bin/busybox; do [ -x "$b" ] && BUSYBOX=$b && break; done
fi
[ -n "$BUSYBOX" ] || die "no static busybox found after install"

# 2. engine
if ! docker info >/dev/null 2>&1; then
    say "starting dockerd (log: $LOG)"
    if ! pgrep -x dockerd >/dev/null 2>&1; then
        nohup dockerd >"$LOG" 2>&1 </dev/null &
    fi
    ok=0
    for _ in $(seq 1 "$WAIT"); do
        if docker info >/dev/null 2>&1; then ok=1; break; fi
        sleep 1
    done
    [ $ok = 1 ] || { tail -n 20 "$LOG" >&2 2>/dev/null; die "dockerd did not answer within ${WAIT}s (see $LOG)"; }
fi

# 3. swarm
state=$(docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null)
if [ "$state" != "active" ]; then
    say "initialising swarm (state was '$state')"
    docker swarm init --advertise-addr 127.0.0.1 >/dev/null || die "docker swarm init failed"
fi

# 4. image
if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
    say "building $IMAGE from $BUSYBOX"
    root=$(mktemp -d) || die "mktemp failed"
    trap 'rm -rf "$root"' EXIT
    mkdir -p "$root/bin" "$root/tmp" "$root/etc" "$root/proc" "$root/sys" "$root/dev" "$root/www"
    cp "$BUSYBOX" "$root/bin/busybox"
    for applet in $("$BUSYBOX" --list); do
        [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
    done
    echo 'root:x:0:0:root:/:/bin/sh' >"$root/etc/passwd"
    echo 'root:x:0:' >"$root/etc/group"
    tar -C "$root" -c . | docker import \
        -c 'ENV PATH=/bin' -c 'CMD ["/bin/sh"]' - "$IMAGE" >/dev/null \
        || die "docker import of $IMAGE failed"
fi
say "engine ready: swarm active, $IMAGE present"
