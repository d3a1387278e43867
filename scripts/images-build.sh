#!/usr/bin/env bash
# `make images`: build the vmcp images on this machine without any registry, tagged with the
# chart's appVersion (charts/vmcp-operator/Chart.yaml):
#   $VMCP_IMAGE_REGISTRY/vmcp-gateway:<appVersion>, .../vmcp-operator, .../vmcp-example-backend
# (registry default ghcr.io/vmcp-dev, the names the chart and the operator use).
#
# The images come from the Dockerfile's own targets with BINARIES=prebuilt: the static (musl)
# binaries are built here with cargo and the base files with scripts/image-rootfs.sh, into
# .cache/images/context; the Dockerfile's `build` stage (which pulls rust:alpine) is skipped.
# An image whose label vmcp.dev/context-digest matches the context is not rebuilt.
#
# `images-build.sh --test-bases` also makes localhost/vmcp-test-debian:bookworm, a glibc Debian
# image (mmdebstrap, cached as .cache/images/debian-bookworm.tar) that tests/tests/images.rs
# runs a stdio MCP server in. Installs podman, buildah, musl-tools, mmdebstrap and the Rust musl
# target when missing. Progress on stderr; stdout gets one line per image name.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CACHE="$ROOT/.cache/images"
CONTEXT="$CACHE/context"
REGISTRY="${VMCP_IMAGE_REGISTRY:-ghcr.io/vmcp-dev}"
ARCH="$(uname -m)"
TARGET="$ARCH-unknown-linux-musl"
DEBIAN_IMAGE=localhost/vmcp-test-debian:bookworm

log() { printf 'images-build: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9

apt_install() {
    log "installing $* (Debian packages)"
    local sudo=()
    [[ "$(id -u)" = 0 ]] || sudo=(sudo -n)
    "${sudo[@]}" apt-get install -y -q "$@" >&2 ||
        { "${sudo[@]}" apt-get update -q >&2 && "${sudo[@]}" apt-get install -y -q "$@" >&2; } ||
        die "cannot install $*"
}
need() { # need COMMAND PACKAGE
    command -v "$1" >/dev/null || apt_install "$2"
}

VERSION="$(sed -n 's/^appVersion:[[:space:]]*"\{0,1\}\([^"]*\)"\{0,1\}[[:space:]]*$/\1/p' charts/vmcp-operator/Chart.yaml)"
[[ -n "$VERSION" ]] || die "no appVersion in charts/vmcp-operator/Chart.yaml"

need buildah buildah
need podman podman
need musl-gcc musl-tools # ring's C and assembly parts for the musl target
rustup target list --installed 2>/dev/null | grep -qx "$TARGET" || {
    log "adding the Rust target $TARGET"
    rustup target add "$TARGET" >&2
}

log "building static binaries ($TARGET, release)"
cargo build -q --release --locked --target "$TARGET" \
    -p vmcp-gateway -p vmcp-operator -p vmcp-example-backends >&2
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/$TARGET/release"

rm -rf "$CONTEXT.new"
mkdir -p "$CONTEXT.new/bin"
for b in vmcp-gateway vmcp-operator vmcp-example-backend; do
    # A dynamic executable has a program interpreter (the libc loader); ours must not.
    if readelf -l "$BIN/$b" | grep -q 'program interpreter'; then
        die "$BIN/$b is not statically linked"
    fi
    cp "$BIN/$b" "$CONTEXT.new/bin/$b"
done
sh scripts/image-rootfs.sh "$CONTEXT.new/rootfs"
rm -rf "$CONTEXT"
mv "$CONTEXT.new" "$CONTEXT"
DIGEST="$( { (cd "$CONTEXT" && find . -print0 | sort -z | xargs -0 stat -c '%n %a' \
    && find . -type f -print0 | sort -z | xargs -0 sha256sum); sha256sum Dockerfile; } |
    sha256sum | cut -c1-16)"
REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)"

for target in gateway operator example-backend; do
    image="$REGISTRY/vmcp-$target:$VERSION"
    have="$(podman image inspect --format '{{index .Labels "vmcp.dev/context-digest"}}' "$image" 2>/dev/null || true)"
    if [[ "$have" = "$DIGEST" ]]; then
        log "$image is up to date"
    else
        log "building $image"
        buildah build -q --layers --pull=never --target "$target" \
            --build-arg BINARIES=prebuilt --build-arg VERSION="$VERSION" \
            --build-arg REVISION="$REVISION" --label "vmcp.dev/context-digest=$DIGEST" \
            -t "$image" -f Dockerfile . >/dev/null
    fi
    echo "$image"
done

if [[ "${1:-}" = --test-bases ]]; then
    if ! podman image exists "$DEBIAN_IMAGE"; then
        if [[ ! -f "$CACHE/debian-bookworm.tar" ]]; then
            need mmdebstrap mmdebstrap
            log "making a Debian bookworm rootfs with mmdebstrap (once; cached)"
            mmdebstrap --quiet --variant=essential --format=tar bookworm \
                "$CACHE/debian-bookworm.tar.partial" >&2
            mv "$CACHE/debian-bookworm.tar.partial" "$CACHE/debian-bookworm.tar"
        fi
        podman import -q "$CACHE/debian-bookworm.tar" "$DEBIAN_IMAGE" >/dev/null
    fi
    echo "$DEBIAN_IMAGE"
fi
