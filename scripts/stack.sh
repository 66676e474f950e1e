#!/usr/bin/env bash
# Local stack for tests and the demo: Debian's dockerd (embedded BuildKit) and a CNCF distribution
# registry on 127.0.0.1. No images are pulled, nothing is downloaded. Idempotent: `up` reuses what runs.
set -euo pipefail

STACK_DIR="${STREAMABLE_STACK_DIR:-/var/lib/streamable-stack}"
DOCKER_SOCK="${STREAMABLE_DOCKER_SOCK:-$STACK_DIR/docker.sock}"
REGISTRY_ADDR="${STREAMABLE_REGISTRY_ADDR:-127.0.0.1:5055}"
DOCKER_BIN="${STREAMABLE_DOCKER_BIN:-/usr/bin/docker}"

log() { printf '[stack] %s\n' "$*" >&2; }

install_packages() {
  local missing=()
  command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
  [ -x /usr/bin/docker ] || missing+=(docker.io)
  command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
  command -v htpasswd >/dev/null 2>&1 || missing+=(apache2-utils)
  command -v git >/dev/null 2>&1 || missing+=(git)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  command -v make >/dev/null 2>&1 || missing+=(make)
  # startup recorder: strace traces the sandbox, unshare/losetup/mount isolate it, mkfs.ext4 makes its rootfs
  command -v strace >/dev/null 2>&1 || missing+=(strace)
  command -v unshare >/dev/null 2>&1 || missing+=(util-linux)
  command -v losetup >/dev/null 2>&1 || missing+=(mount)
  command -v mkfs.ext4 >/dev/null 2>&1 || missing+=(e2fsprogs)
  # tests: a dynamically linked C program (with its loader) for the recorder
  command -v gcc >/dev/null 2>&1 || missing+=(gcc)
  [ -e /usr/include/stdio.h ] || missing+=(libc6-dev)
  # the local base image needs a *static* busybox (Debian's `busybox` package is dynamically linked)
  if [ ! -x /bin/busybox ] || ldd /bin/busybox >/dev/null 2>&1; then missing+=(busybox-static); fi
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]} (Debian packages)"
    export DEBIAN_FRONTEND=noninteractive
    # Do not let the packages start their system services (a system dockerd would change iptables and
    # add docker0; docker-registry.service would listen on all interfaces): this stack runs its own.
    local policy=/usr/sbin/policy-rc.d created_policy=""
    if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; created_policy=1; fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || { [ -n "$created_policy" ] && rm -f "$policy"; return 1; }
    [ -n "$created_policy" ] && rm -f "$policy"
  fi
  return 0
}

docker_ok() { "$DOCKER_BIN" -H "unix://$DOCKER_SOCK" version >/dev/null 2>&1; }
registry_ok() { curl -fsS -o /dev/null "http://$REGISTRY_ADDR/v2/" 2>/dev/null; }

wait_for() {
  local what="$1" check="$2" logfile="$3" i
  for i in $(seq 1 120); do
    if "$check"; then log "$what is up"; return 0; fi
    sleep 0.5
  done
  log "$what did not become healthy in 60 s; last log lines from $logfile:"
  tail -n 30 "$logfile" >&2 || true
  return 1
}

start_dockerd() {
  if docker_ok; then log "dockerd already running at unix://$DOCKER_SOCK"; return 0; fi
  mkdir -p "$STACK_DIR/docker-root" "$STACK_DIR/docker-exec"
  rm -f "$DOCKER_SOCK" "$STACK_DIR/dockerd.pid"
  log "starting dockerd (data root $STACK_DIR/docker-root)"
  # --iptables=false --bridge=none: no host networking changes; builds run with --network=none.
  setsid dockerd \
    --host "unix://$DOCKER_SOCK" \
    --data-root "$STACK_DIR/docker-root" \
    --exec-root "$STACK_DIR/docker-exec" \
    --pidfile "$STACK_DIR/dockerd.pid" \
    --iptables=false --ip6tables=false --bridge=none --ip-forward=false --ip-masq=false \
    --insecure-registry "$REGISTRY_ADDR" \
    --containerd-namespace streamable --containerd-plugins-namespace streamable-plugins \
    >"$STACK_DIR/dockerd.log" 2>&1 < /dev/null &
  wait_for dockerd docker_ok "$STACK_DIR/dockerd.log"
}

start_registry() {
  if registry_ok; then log "registry already running at http://$REGISTRY_ADDR"; return 0; fi
  mkdir -p "$STACK_DIR/registry-data"
  cat >"$STACK_DIR/registry.yml" <<YML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $STACK_DIR/registry-data
  delete:
    enabled: true
http:
  addr: $REGISTRY_ADDR
YML
  log "starting registry on $REGISTRY_ADDR"
  setsid docker-registry serve "$STACK_DIR/registry.yml" >"$STACK_DIR/registry.log" 2>&1 < /dev/null &
  echo $! >"$STACK_DIR/registry.pid"
  wait_for registry registry_ok "$STACK_DIR/registry.log"
}

stop_pidfile() {
  local name="$1" pidfile="$2" i
  [ -f "$pidfile" ] || return 0
  local pid; pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping $name (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for i in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

BASE_IMAGE="${STREAMABLE_BASE_IMAGE:-streamable/busybox:local}"

ensure_base_image() {
  # A tiny local base image with a shell (Debian's static busybox), so Dockerfiles can RUN offline.
  if "$DOCKER_BIN" -H "unix://$DOCKER_SOCK" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then return 0; fi
  log "creating local base image $BASE_IMAGE from /bin/busybox (no pull)"
  local root; root=$(mktemp -d)
  mkdir -p "$root/bin" "$root/tmp" "$root/etc" "$root/usr/bin"
  cp /bin/busybox "$root/bin/busybox"
  local applet
  for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
  chmod 1777 "$root/tmp"
  tar -C "$root" --numeric-owner --owner=0 --group=0 --mtime=2020-01-01 -cf "$root.tar" .
  "$DOCKER_BIN" -H "unix://$DOCKER_SOCK" import --change 'CMD ["/bin/sh"]' "$root.tar" "$BASE_IMAGE" >/dev/null
  rm -rf "$root" "$root.tar"
}

env_file() {
  mkdir -p "$STACK_DIR"
  cat >"$STACK_DIR/env" <<ENV
export DOCKER_HOST=unix://$DOCKER_SOCK
export STREAMABLE_DOCKER_BIN=$DOCKER_BIN
export STREAMABLE_REGISTRY=$REGISTRY_ADDR
ENV
}

case "${1:-up}" in
  install) install_packages ;;
  up) install_packages; start_dockerd; start_registry; ensure_base_image; env_file
      log "ready: DOCKER_HOST=unix://$DOCKER_SOCK registry=http://$REGISTRY_ADDR (env in $STACK_DIR/env)" ;;
  down) stop_pidfile registry "$STACK_DIR/registry.pid"; stop_pidfile dockerd "$STACK_DIR/dockerd.pid" ;;
  status) docker_ok && echo "dockerd: up" || echo "dockerd: down"
          registry_ok && echo "registry: up ($REGISTRY_ADDR)" || echo "registry: down" ;;
  *) echo "usage: $0 install|up|down|status" >&2; exit 2 ;;
esac
