#!/usr/bin/env bash
# Ensure the Kubernetes test binaries exist and print their folder.
#
#   dir=$(scripts/k8s-bin.sh | tail -1)     # -> <repo>/.cache/k8s/<K8S_VERSION>/bin
#   "$dir/kube-apiserver" --version
#
# Provides: etcd, kube-apiserver, kubectl, helm (versions: scripts/k8s-versions.env).
# With --node (used by scripts/cluster.sh) also the node and control-plane components of a
# real single-node cluster: kubelet, kube-scheduler, kube-controller-manager, kube-proxy (same
# k8s.io/kubernetes module and version as kube-apiserver) and coredns (github.com/coredns/coredns).
#
# * If KUBEBUILDER_ASSETS names a folder with executable etcd, kube-apiserver and kubectl
#   (controller-runtime envtest convention), those are used. If it also has helm, that
#   folder is printed as is; otherwise helm is built and a folder of symlinks
#   (.cache/k8s/assets/bin) holding all four is printed.
# * Otherwise each binary is built once from its official Go module with the machine's Go
#   toolchain (GOTOOLCHAIN=local, CGO_ENABLED=0, -trimpath -ldflags "-s -w") into
#   .cache/k8s/<K8S_VERSION>/bin. A binary whose stamp (.cache/k8s/<K8S_VERSION>/stamps/<name>)
#   matches the pinned version is not rebuilt, so the script is idempotent and fast (~1 s) once
#   built. The first build takes minutes on 2 cores and fills the Go module cache (~/go/pkg/mod).
#   Throwaway build modules live in .cache/k8s/build/<name>-<version>/:
#     kubernetes-<v>: requires k8s.io/kubernetes <v> and replaces every staging module it
#                     requires at v0.0.0 (=> ./staging/src/...) with the published tag
#                     v0.<minor>.<patch>; the list is read from that version's go.mod.
#                     Builds k8s.io/kubernetes/cmd/kube-apiserver and .../cmd/kubectl.
#     etcd-<v>:       tiny main calling go.etcd.io/etcd/server/v3/etcdmain.Main(os.Args).
#     coredns-<v>:    requires github.com/coredns/coredns (no replace lines) and builds its
#                     root package (the coredns main with the default plugin set).
#     helm-<v>:       requires helm.sh/helm/v3 (its go.mod has no replace lines) and builds
#                     helm.sh/helm/v3/cmd/helm.
#   Build logs: .cache/k8s/logs/. A lock (flock) serialises concurrent callers.
#
# Progress goes to stderr; on success the LAST line on stdout is the absolute bin folder.
# Environment: GO (go binary; default `go` on PATH, else /usr/local/go/bin/go),
#              KUBEBUILDER_ASSETS, and the version variables of k8s-versions.env.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd -P)
# shellcheck source=k8s-versions.env
source "$SCRIPT_DIR/k8s-versions.env"

CACHE="$ROOT/.cache/k8s"
VDIR="$CACHE/$K8S_VERSION"
BIN="$VDIR/bin"
STAMPS="$VDIR/stamps"
BUILD="$CACHE/build"
LOGS="$CACHE/logs"
T_START=$SECONDS

log() { printf '[k8s-bin] %s\n' "$*" >&2; }
die() { printf '[k8s-bin] ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# Versions derived from the pins.
[[ $K8S_VERSION =~ ^v1\.([0-9]+)\.([0-9]+)$ ]] || die "K8S_VERSION must look like v1.N.M (got '$K8S_VERSION')"
K8S_MINOR=${BASH_REMATCH[1]}
STAGING_VERSION="v0.${BASH_REMATCH[1]}.${BASH_REMATCH[2]}"   # v1.36.3 -> v0.36.3
[[ $ETCD_VERSION =~ ^v3\.[0-9]+\.[0-9]+$ ]] || die "ETCD_VERSION must look like v3.N.M (got '$ETCD_VERSION')"
[[ $COREDNS_VERSION =~ ^v1\.[0-9]+\.[0-9]+$ ]] || die "COREDNS_VERSION must look like v1.N.M (got '$COREDNS_VERSION')"
[[ $HELM_VERSION =~ ^v3\.[0-9]+\.[0-9]+$ ]] || die "HELM_VERSION must look like v3.N.M (got '$HELM_VERSION')"

# Stamp text per binary: the module@version it was built from.
stamp_of() {
  case $1 in
    kube-apiserver | kubectl | kubelet | kube-scheduler | kube-controller-manager | kube-proxy)
      echo "$1 k8s.io/kubernetes@$K8S_VERSION" ;;
    coredns) echo "coredns github.com/coredns/coredns@$COREDNS_VERSION" ;;
    etcd) echo "etcd go.etcd.io/etcd/server/v3@$ETCD_VERSION" ;;
    helm) echo "helm helm.sh/helm/v3@$HELM_VERSION" ;;
  esac
}
is_built() { [[ -x $BIN/$1 && -f $STAMPS/$1 && "$(cat "$STAMPS/$1")" == "$(stamp_of "$1")" ]]; }

# Expected `--version` output fragment per binary.
version_check() { # name binary-path -> prints version line, fails on mismatch
  local name=$1 exe=$2 out want
  case $name in
    kube-apiserver | kubelet | kube-scheduler | kube-controller-manager | kube-proxy)
      out=$("$exe" --version 2>&1) || true; want="Kubernetes $K8S_VERSION" ;;
    coredns) out=$("$exe" -version 2>&1 | head -1) || true; want="CoreDNS-${COREDNS_VERSION#v}" ;;
    kubectl) out=$("$exe" version --client 2>&1 | head -1) || true; want="Client Version: $K8S_VERSION" ;;
    etcd) out=$("$exe" --version 2>&1 | head -1) || true; want="etcd Version: ${ETCD_VERSION#v}" ;;
    helm) out=$("$exe" version --short 2>&1) || true; want="$HELM_VERSION" ;;
  esac
  if [[ $out != *"$want"* ]]; then
    printf '%s\n' "$out"
    return 1
  fi
  printf '%s\n' "$out"
}

# ---------------------------------------------------------------------------------------------
# Go toolchain and environment.
find_go() {
  if [[ -n ${GO:-} ]]; then
    echo "$GO"
  elif command -v go >/dev/null 2>&1; then
    command -v go
  elif [[ -x /usr/local/go/bin/go ]]; then
    echo /usr/local/go/bin/go
  else
    return 1
  fi
}
setup_go() {
  [[ -n ${GO_READY:-} ]] && return 0
  GO=$(find_go) || die "step 'find go': no Go toolchain (set GO=/path/to/go or put go on PATH)"
  export GOTOOLCHAIN=local          # never download another toolchain
  export GOWORK=off                 # ignore any go.work above the cache folder
  export GOFLAGS="-mod=mod -buildvcs=false"  # let go fill go.mod/go.sum; no VCS stamping
  export CGO_ENABLED=0              # static, no C toolchain needed
  log "using $("$GO" version) ($GO); GOMODCACHE=$("$GO" env GOMODCACHE)"
  GO_READY=1
}

# run_step <step-name> <log-file> <cmd...>: run with a heartbeat every 30 s; on failure
# print the tail of the log and exit naming the step.
CHILD=
trap '[[ -n $CHILD ]] && kill "$CHILD" 2>/dev/null; exit 130' INT TERM
run_step() {
  local step=$1 logf=$2 t0=$SECONDS next=30 rc=0
  shift 2
  mkdir -p "$(dirname "$logf")"
  "$@" >"$logf" 2>&1 &
  CHILD=$!
  while kill -0 "$CHILD" 2>/dev/null; do
    sleep 1
    if ((SECONDS - t0 >= next)); then
      log "  ... $step still running ($((SECONDS - t0))s)"
      next=$((next + 30))
    fi
  done
  wait "$CHILD" || rc=$?
  CHILD=
  if ((rc != 0)); then
    printf '[k8s-bin] --- last lines of %s ---\n' "$logf" >&2
    tail -n 40 "$logf" >&2 || true
    die "step '$step' failed (exit $rc) after $((SECONDS - t0))s; full log: $logf"
  fi
  STEP_SECS=$((SECONDS - t0))
}

# Read a field ("Dir", "GoMod", ...) out of `go mod download -json` output.
json_field() { sed -n "s/^[[:space:]]*\"$1\": \"\(.*\)\",\{0,1\}$/\1/p" | head -1; }
# `go` line of a go.mod file.
go_line() { awk '$1 == "go" { print $2; exit }' "$1"; }

# ---------------------------------------------------------------------------------------------
# Throwaway build modules.
prepare_k8s_module() {
  local dir="$BUILD/kubernetes-$K8S_VERSION" json gomod goline mods m
  [[ -f $dir/.prepared ]] && { echo "$dir"; return 0; }
  mkdir -p "$dir"
  log "fetching k8s.io/kubernetes@$K8S_VERSION module (source zip, ~1 min the first time)"
  run_step "download k8s.io/kubernetes@$K8S_VERSION" "$LOGS/kubernetes-download.log" \
    bash -c 'cd "$1" && exec "$2" mod download -json "k8s.io/kubernetes@$3"' _ "$dir" "$GO" "$K8S_VERSION"
  json=$(cat "$LOGS/kubernetes-download.log")
  gomod=$(json_field GoMod <<<"$json")
  [[ -f $gomod ]] || die "step 'read k8s.io/kubernetes@$K8S_VERSION go.mod': not found in: $json"
  goline=$(go_line "$gomod")
  # Staging modules: replaced by ./staging/src/... in kubernetes' go.mod AND required by it.
  mods=$(awk '
    /^require[[:space:]]*\(/ { inreq = 1; next }
    inreq && /^\)/ { inreq = 0; next }
    inreq && NF >= 2 { req[$1] = 1 }
    /^require[[:space:]]+[^(]/ { req[$2] = 1 }
    {
      for (i = 1; i < NF; i++)
        if ($i == "=>" && $(i + 1) ~ /^\.\/staging\//) {
          m = $(i - 1); if (m ~ /^v[0-9]/) m = $(i - 2)
          if (m == "replace") continue
          stg[m] = 1
        }
    }
    END { for (m in stg) if (m in req) print m }' "$gomod" | sort)
  [[ -n $mods ]] || die "step 'derive staging modules': no './staging/' replace lines in $gomod"
  {
    echo "// Generated by scripts/k8s-bin.sh: throwaway module to build kube-apiserver and kubectl."
    echo "module vmcp.local/k8s-build"
    echo
    echo "go $goline"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    for m in $mods; do printf '\t%s => %s %s\n' "$m" "$m" "$STAGING_VERSION"; done
    echo ")"
  } >"$dir/go.mod"
  log "  wrote $dir/go.mod ($(wc -w <<<"$mods") staging modules -> $STAGING_VERSION, go $goline)"
  touch "$dir/.prepared"
  echo "$dir"
}

# prepare_module <name> <module> <version>: a throwaway module that requires <module>@<version>
# (no replace lines: those of a dependency are ignored, which is noted), in
# $BUILD/<name>-<version>; prints its folder.
prepare_module() {
  local name=$1 module=$2 version=$3 dir="$BUILD/$1-$3" gomod
  [[ -f $dir/.prepared ]] && { echo "$dir"; return 0; }
  mkdir -p "$dir"
  run_step "download $module@$version" "$LOGS/$name-download.log" \
    bash -c 'cd "$1" && exec "$2" mod download -json "$3@$4"' _ "$dir" "$GO" "$module" "$version"
  gomod=$(json_field GoMod <"$LOGS/$name-download.log")
  [[ -f $gomod ]] || die "step 'read $module@$version go.mod': not found"
  if grep -qE '^replace|=>' "$gomod"; then
    log "  note: $name $version go.mod has replace lines; they are ignored for a dependency:"
    grep -E '=>' "$gomod" >&2 || true
  fi
  cat >"$dir/go.mod" <<EOF
// Generated by scripts/k8s-bin.sh: throwaway module to build $name.
module vmcp.local/$name-build

go $(go_line "$gomod")

require $module $version
EOF
  touch "$dir/.prepared"
  echo "$dir"
}

prepare_etcd_module() {
  local dir
  dir=$(prepare_module etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION")
  [[ -f $dir/main.go ]] || cat >"$dir/main.go" <<'EOF'
// Generated by scripts/k8s-bin.sh: the etcd server entry point.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
  echo "$dir"
}

# ---------------------------------------------------------------------------------------------
# build_bin <name> <module-dir> <package> <ldflags>
build_bin() {
  local name=$1 dir=$2 pkg=$3 ldflags=$4 t0=$SECONDS dl
  if is_built "$name"; then
    return 0
  fi
  mkdir -p "$BIN" "$STAMPS"
  log "resolving modules for $name ($pkg)"
  # `go list -deps` downloads exactly the modules the build needs (no compiling), so module
  # download and compile times can be told apart. Package errors go to stdout (-e).
  run_step "resolve modules for $name" "$LOGS/$name-resolve.log" \
    bash -c 'cd "$1" && exec "$2" list -e -deps -f "{{with .Error}}{{.}}{{end}}" "$3" >"$4"' \
    _ "$dir" "$GO" "$pkg" "$LOGS/$name-resolve.errors"
  if grep -q . "$LOGS/$name-resolve.errors"; then
    grep . "$LOGS/$name-resolve.errors" | tail -n 20 >&2
    die "step 'resolve modules for $name' reported package errors: $LOGS/$name-resolve.errors"
  fi
  dl=$STEP_SECS
  log "building $name $(stamp_of "$name" | cut -d@ -f2) (first time takes minutes)… [modules resolved in ${dl}s]"
  run_step "go build $name" "$LOGS/$name-build.log" \
    bash -c 'cd "$1" && exec "$2" build -trimpath -ldflags "$3" -o "$4.tmp" "$5"' _ "$dir" "$GO" "$ldflags" "$BIN/$name" "$pkg"
  local v
  v=$(version_check "$name" "$BIN/$name.tmp") ||
    die "step 'version check $name': expected $(stamp_of "$name" | cut -d@ -f2), got: $v (binary left at $BIN/$name.tmp)"
  rm -f "$STAMPS/$name"
  mv -f "$BIN/$name.tmp" "$BIN/$name"
  stamp_of "$name" >"$STAMPS/$name"
  log "built $name in $((SECONDS - t0))s (modules ${dl}s, compile ${STEP_SECS}s, $(du -h "$BIN/$name" | cut -f1)): $v"
}

k8s_ldflags() {
  local date=$1 f="-s -w" p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    f+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$K8S_MINOR"
    f+=" -X $p.gitTreeState=archive -X $p.buildDate=$date"
  done
  echo "$f"
}

# Module publication time (from the proxy's .info) as a reproducible build date.
module_time() { # module-dir module@version
  (cd "$1" && "$GO" mod download -json "$2" 2>/dev/null) | json_field Time | head -1
}

build_k8s() {
  is_built kube-apiserver && is_built kubectl && return 0
  setup_go
  local dir date
  dir=$(prepare_k8s_module)
  date=$(module_time "$dir" "k8s.io/kubernetes@$K8S_VERSION")
  build_bin kube-apiserver "$dir" k8s.io/kubernetes/cmd/kube-apiserver "$(k8s_ldflags "${date:-unknown}")"
  build_bin kubectl "$dir" k8s.io/kubernetes/cmd/kubectl "$(k8s_ldflags "${date:-unknown}")"
}

build_etcd() {
  is_built etcd && return 0
  setup_go
  local dir
  dir=$(prepare_etcd_module)
  build_bin etcd "$dir" vmcp.local/etcd-build "-s -w"
}

# The node components (--node): same module and ldflags as kube-apiserver, plus coredns.
build_node() {
  local b missing=
  for b in kubelet kube-scheduler kube-controller-manager kube-proxy; do is_built "$b" || missing=1; done
  if [[ -n $missing ]]; then
    setup_go
    local dir date
    dir=$(prepare_k8s_module)
    date=$(module_time "$dir" "k8s.io/kubernetes@$K8S_VERSION")
    for b in kubelet kube-scheduler kube-controller-manager kube-proxy; do
      build_bin "$b" "$dir" "k8s.io/kubernetes/cmd/$b" "$(k8s_ldflags "${date:-unknown}")"
    done
  fi
  if ! is_built coredns; then
    setup_go
    local cdir
    cdir=$(prepare_module coredns github.com/coredns/coredns "$COREDNS_VERSION")
    build_bin coredns "$cdir" github.com/coredns/coredns \
      "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION"
  fi
}

build_helm() {
  is_built helm && return 0
  setup_go
  local dir date p f="-s -w"
  dir=$(prepare_module helm helm.sh/helm/v3 "$HELM_VERSION")
  date=$(module_time "$dir" "helm.sh/helm/v3@$HELM_VERSION")
  f+=" -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  # Default capabilities for `helm template`/`helm lint` without a cluster: our pinned
  # Kubernetes minor (helm's own Makefile uses its client-go minor instead).
  for p in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    f+=" -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$K8S_MINOR"
  done
  build_bin helm "$dir" helm.sh/helm/v3/cmd/helm "$f"
}

# ---------------------------------------------------------------------------------------------
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
if ! flock -n 9; then
  log "another k8s-bin.sh holds $CACHE/.lock; waiting…"
  flock 9
fi

have_assets() { local d=$1 b; for b in "${@:2}"; do [[ -x $d/$b && -f $d/$b ]] || return 1; done; }

if [[ -n ${KUBEBUILDER_ASSETS:-} ]]; then
  if have_assets "$KUBEBUILDER_ASSETS" etcd kube-apiserver kubectl; then
    ASSETS=$(cd "$KUBEBUILDER_ASSETS" && pwd -P)
    log "using KUBEBUILDER_ASSETS=$ASSETS: $("$ASSETS/kube-apiserver" --version 2>&1 | head -1)"
    out=$("$ASSETS/kube-apiserver" --version 2>&1 | head -1) || true
    [[ $out == *"Kubernetes $K8S_VERSION"* ]] || log "warning: pinned Kubernetes is $K8S_VERSION, KUBEBUILDER_ASSETS has '$out'"
    if have_assets "$ASSETS" helm; then
      echo "$ASSETS"
      exit 0
    fi
    log "KUBEBUILDER_ASSETS has no helm: adding ours (helm $HELM_VERSION, built if missing)"
    build_helm
    link="$CACHE/assets/bin"
    mkdir -p "$link"
    for b in etcd kube-apiserver kubectl; do ln -sfn "$ASSETS/$b" "$link/$b"; done
    ln -sfn "$BIN/helm" "$link/helm"
    log "bin dir (symlinks) ready in $((SECONDS - T_START))s"
    echo "$link"
    exit 0
  fi
  log "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS lacks an executable etcd/kube-apiserver/kubectl; using our own build"
fi

build_etcd
build_k8s
build_helm
ALL_BINS="etcd kube-apiserver kubectl helm"
if [[ ${1:-} == --node ]]; then
  build_node
  ALL_BINS+=" kubelet kube-scheduler kube-controller-manager kube-proxy coredns"
fi

# Final check of every binary (cheap) and a record of what is in the folder.
{
  for b in $ALL_BINS; do
    v=$(version_check "$b" "$BIN/$b") || die "step 'version check $b': got: $v (delete $BIN/$b to rebuild)"
    printf '%-15s %s\n' "$b" "$v"
  done
} >"$VDIR/versions.txt.tmp"
mv -f "$VDIR/versions.txt.tmp" "$VDIR/versions.txt"
sed 's/^/[k8s-bin]   /' "$VDIR/versions.txt" >&2
log "binaries ready in $((SECONDS - T_START))s: $BIN"
echo "$BIN"
