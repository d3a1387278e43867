#!/usr/bin/env bash
# Images for `make cluster` (scripts/cluster.sh), without any registry.
#
#   scripts/cluster-images.sh pause-name        # prints the sandbox image name
#   scripts/cluster-images.sh load-pause        # builds (once, cached) and imports it
#   scripts/cluster-images.sh load IMAGE...     # podman images -> the cluster's containerd
#   scripts/cluster-images.sh redis             # builds (once) a Redis image, prints its name
#
# The pause image is FROM scratch with one static binary compiled from pause.c of the pinned
# k8s.io/kubernetes module (build/pause/linux/pause.c, the same source and gcc flags as
# Kubernetes' build/pause/Makefile), cached as .cache/cluster/pause-<PAUSE_VERSION>.tar.
# The Redis image (for tests that run Redis as a pod) is FROM scratch with this machine's
# Debian redis-server and the shared libraries it loads (ldd), tagged
# localhost/vmcp/redis:<redis-server version>; it runs as UID 999 with `--save ''`.
# `load` saves podman images as one docker archive and runs `ctr -n k8s.io images import`.
# The containerd socket comes from CONTAINERD_ADDRESS, else from /tmp/vmcp-cluster.env (written
# by a running cluster).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd -P)
# shellcheck source=k8s-versions.env
source "$SCRIPT_DIR/k8s-versions.env"
CACHE="$ROOT/.cache/cluster"
PAUSE_IMAGE="localhost/vmcp/pause:$PAUSE_VERSION"
PAUSE_TAR="$CACHE/pause-$PAUSE_VERSION-$K8S_VERSION.tar"

log() { printf '[cluster-images] %s\n' "$*" >&2; }
die() { printf '[cluster-images] ERROR: %s\n' "$*" >&2; exit 1; }

address() {
  if [[ -z ${CONTAINERD_ADDRESS:-} && -f /tmp/vmcp-cluster.env ]]; then
    # shellcheck disable=SC1091
    source /tmp/vmcp-cluster.env
  fi
  [[ -n ${CONTAINERD_ADDRESS:-} ]] || die "no CONTAINERD_ADDRESS and no running cluster (/tmp/vmcp-cluster.env)"
  echo "$CONTAINERD_ADDRESS"
}

build_pause() {
  [[ -f $PAUSE_TAR ]] && return 0
  mkdir -p "$CACHE"
  local go src work
  go=$(command -v go || echo /usr/local/go/bin/go)
  src=$(cd "$ROOT" && GOFLAGS=-mod=mod GOTOOLCHAIN=local "$go" mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')/build/pause/linux/pause.c
  [[ -f $src ]] || die "no pause.c at $src"
  command -v gcc >/dev/null || die "gcc is needed to build the pause binary"
  work=$(mktemp -d)
  gcc -Os -Wall -Werror -static -DVERSION="v$PAUSE_VERSION-vmcp" -o "$work/pause" "$src" ||
    die "gcc failed for $src"
  cat >"$work/Containerfile" <<'CF'
FROM scratch
COPY pause /pause
USER 65535:65535
ENTRYPOINT ["/pause"]
CF
  log "building $PAUSE_IMAGE from $src"
  buildah build -q --pull=never -t "$PAUSE_IMAGE" -f "$work/Containerfile" "$work" >/dev/null
  podman save -q --format docker-archive -o "$PAUSE_TAR.tmp" "$PAUSE_IMAGE"
  mv "$PAUSE_TAR.tmp" "$PAUSE_TAR"
  rm -rf "$work"
}

build_redis() {
  local exe version image work lib
  exe=$(command -v redis-server) || die "redis-server is not installed (apt-get install redis-server)"
  version=$("$exe" --version | sed -n 's/.* v=\([0-9.]*\).*/\1/p')
  image="localhost/vmcp/redis:$version"
  if ! podman image exists "$image"; then
    work=$(mktemp -d)
    mkdir -p "$work/root/usr/bin" "$work/root/data" "$work/root/etc"
    cp "$exe" "$work/root/usr/bin/redis-server"
    for lib in $(ldd "$exe" | awk '/=>/ { print $3 } /^[[:space:]]*\// { print $1 }'); do
      mkdir -p "$work/root$(dirname "$lib")"
      cp -L "$lib" "$work/root$lib"
    done
    echo "redis:x:999:999::/data:/usr/sbin/nologin" >"$work/root/etc/passwd"
    echo "redis:x:999:" >"$work/root/etc/group"
    chmod 1777 "$work/root/data"
    cat >"$work/Containerfile" <<'CF'
FROM scratch
COPY root/ /
USER 999:999
WORKDIR /data
EXPOSE 6379
ENTRYPOINT ["/usr/bin/redis-server"]
CMD ["--save", "", "--appendonly", "no", "--protected-mode", "no"]
CF
    log "building $image from $exe"
    buildah build -q --pull=never -t "$image" -f "$work/Containerfile" "$work" >/dev/null ||
      die "buildah build $image failed"
    rm -rf "$work"
  fi
  echo "$image"
}

import() { # import <tar>
  ctr --address "$(address)" -n k8s.io images import "$1" >&2 || die "ctr images import $1 failed"
}

case ${1:-} in
  pause-name) echo "$PAUSE_IMAGE" ;;
  load-pause)
    mkdir -p "$CACHE"
    exec 9>"$CACHE/.pause.lock"
    flock 9
    build_pause
    import "$PAUSE_TAR"
    ;;
  load)
    shift
    (($#)) || die "load: no images named"
    tar=$(mktemp /tmp/vmcp-cluster-images.XXXXXX.tar)
    trap 'rm -f "$tar"' EXIT
    log "loading $* into containerd"
    podman save -q -m --format docker-archive -o "$tar.new" "$@" || die "podman save $* failed"
    mv "$tar.new" "$tar"
    import "$tar"
    ;;
  redis) build_redis ;;
  *) die "usage: $0 pause-name | load-pause | load IMAGE... | redis" ;;
esac
