#!/usr/bin/env bash
# Run a throwaway Kubernetes API server (etcd + kube-apiserver only) in the foreground.
#
#   scripts/dev-cluster.sh            # Ctrl-C stops both processes and deletes all data
#   # in another shell: paste the two printed `export` lines, then kubectl / helm as usual
#
# Prints `export KUBECONFIG=<repo>/.cache/dev-cluster/kubeconfig` and
# `export PATH=<bin dir>:$PATH`. Logs: .cache/dev-cluster/{etcd,kube-apiserver}.log.
# Options (environment): DEV_CLUSTER_PORT=<apiserver port> (default: a free port),
#                        DEV_CLUSTER_READY_TIMEOUT=<seconds> (default 120),
#                        DEV_CLUSTER_APISERVER_ARGS="--flag=value ..." (extra kube-apiserver
#                        flags, split on spaces; e.g. "--watch-cache=false --v=2").
#
# ================================ what the setup consists of =================================
# (The functions live in scripts/lib/k8s-test-env.sh; a Rust test harness does the same.)
# There is no scheduler, controller manager or kubelet: objects are stored and validated,
# nothing reconciles them (no pods for Deployments, no namespace GC, no token controller).
#
# Files, all in one temp dir T (deleted on exit):
#   T/pki/ca.key, ca.crt     self-signed client CA, ECDSA P-256:
#       openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
#         -keyout ca.key -out ca.crt -days 3650 -subj /CN=vmcp-test-client-ca \
#         -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
#   T/pki/admin.key, admin.crt  client cert, subject O=system:masters, CN=admin
#       (CN = user name, O = group; system:masters bypasses RBAC):
#       openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
#         -keyout admin.key -out admin.csr -subj /O=system:masters/CN=admin
#       openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
#         -out admin.crt -days 365 -extfile <(basicConstraints=critical,CA:FALSE,
#         keyUsage=critical,digitalSignature, extendedKeyUsage=clientAuth; one per line)
#   T/pki/sa.key, sa.pub     service-account token key pair (any RSA or ECDSA key):
#       openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out sa.key
#       openssl pkey -in sa.key -pubout -out sa.pub
#   T/serving/               --cert-dir: kube-apiserver writes apiserver.crt/apiserver.key
#       there at startup (self-signed; apiserver.crt = leaf cert followed by the CA that
#       signed it; SANs include 127.0.0.1 and localhost). The kubeconfig trusts that CA.
#   T/etcd/                  etcd data dir
#
# etcd (client port C, peer port P, both free on 127.0.0.1):
#   etcd --name=kte --data-dir=T/etcd \
#     --listen-client-urls=http://127.0.0.1:C --advertise-client-urls=http://127.0.0.1:C \
#     --listen-peer-urls=http://127.0.0.1:P --initial-advertise-peer-urls=http://127.0.0.1:P \
#     --initial-cluster=kte=http://127.0.0.1:P --unsafe-no-fsync=true --log-level=warn
#
# kube-apiserver (secure port S free on 127.0.0.1; it retries etcd, so both can start at once):
#   kube-apiserver --etcd-servers=http://127.0.0.1:C \
#     --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port=S \
#     --cert-dir=T/serving --client-ca-file=T/pki/ca.crt \
#     --service-account-key-file=T/pki/sa.pub --service-account-signing-key-file=T/pki/sa.key \
#     --service-account-issuer=https://kubernetes.default.svc.cluster.local \
#     --service-cluster-ip-range=10.0.0.0/24 --authorization-mode=RBAC \
#     --disable-admission-plugins=ServiceAccount
#
# Ready: GET https://127.0.0.1:S/readyz with the admin client cert answers 200 "ok"
#   (anonymous GETs are refused until RBAC bootstrap policy exists; poll every ~200 ms).
# kubeconfig (certificate data embedded, base64 of the PEM files):
#   clusters[vmcp-dev].cluster: server https://127.0.0.1:S,
#       certificate-authority-data = last certificate of T/serving/apiserver.crt
#   users[admin].user: client-certificate-data = admin.crt, client-key-data = admin.key
#   contexts[vmcp-dev] = {cluster: vmcp-dev, user: admin, namespace: default}
# ==============================================================================================
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd -P)
# shellcheck source=lib/k8s-test-env.sh
source "$SCRIPT_DIR/lib/k8s-test-env.sh"

log() { printf '[dev-cluster] %s\n' "$*" >&2; }
die() { printf '[dev-cluster] ERROR: %s\n' "$*" >&2; exit 1; }

for tool in openssl curl base64; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' is required"
done

BIN=$("$SCRIPT_DIR/k8s-bin.sh" | tail -1) || die "scripts/k8s-bin.sh failed"
[[ -x $BIN/kube-apiserver && -x $BIN/etcd ]] || die "no etcd/kube-apiserver in '$BIN'"

STATE="$ROOT/.cache/dev-cluster"
KUBECONFIG_OUT="$STATE/kubeconfig"
mkdir -p "$STATE"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/vmcp-dev-cluster.XXXXXX")
export KTE_PORTS_FILE=$TMP/ports # kte_free_port never hands out a port twice
ETCD_PID=
API_PID=

# stop_pid <pid>: SIGTERM, then SIGKILL after 15 s.
stop_pid() {
  local pid=$1 i
  [[ -n $pid ]] || return 0
  kill "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 150; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  return 0
}
cleanup() {
  local rc=$?
  set +e
  trap - INT TERM EXIT
  stop_pid "$API_PID" # apiserver first, then its storage
  stop_pid "$ETCD_PID"
  rm -rf "$TMP"
  rm -f "$KUBECONFIG_OUT"
  log "stopped; removed $TMP and $KUBECONFIG_OUT"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

T0=$(date +%s%N)
kte_gen_pki "$TMP/pki" || die "step 'generate pki' failed"

ETCD_CLIENT_PORT=$(kte_free_port)
ETCD_PEER_PORT=$(kte_free_port)
API_PORT=${DEV_CLUSTER_PORT:-$(kte_free_port)}
ETCD_URL="http://127.0.0.1:$ETCD_CLIENT_PORT"
API_URL="https://127.0.0.1:$API_PORT"

kte_etcd_args "$TMP/etcd" "$ETCD_CLIENT_PORT" "$ETCD_PEER_PORT"
kte_apiserver_args "$ETCD_URL" "$API_PORT" "$TMP/serving" "$TMP/pki"
read -r -a EXTRA_ARGS <<<"${DEV_CLUSTER_APISERVER_ARGS:-}"
KTE_APISERVER_ARGS+=("${EXTRA_ARGS[@]}")

log "etcd on $ETCD_URL (log: $STATE/etcd.log)"
"$BIN/etcd" "${KTE_ETCD_ARGS[@]}" >"$STATE/etcd.log" 2>&1 &
ETCD_PID=$!
log "kube-apiserver on $API_URL (log: $STATE/kube-apiserver.log)"
"$BIN/kube-apiserver" "${KTE_APISERVER_ARGS[@]}" >"$STATE/kube-apiserver.log" 2>&1 &
API_PID=$!

if ! kte_wait_ready "$API_URL" "$TMP/pki" "${DEV_CLUSTER_READY_TIMEOUT:-120}" "$ETCD_PID" "$API_PID"; then
  tail -n 20 "$STATE/etcd.log" "$STATE/kube-apiserver.log" >&2 || true
  die "step 'wait for /readyz' failed"
fi

kte_serving_ca "$TMP/serving" >"$TMP/serving-ca.crt"
kte_write_kubeconfig "$KUBECONFIG_OUT" "$API_URL" "$TMP/serving-ca.crt" "$TMP/pki" ||
  die "step 'write kubeconfig' failed"
TOTAL=$(awk -v a="$T0" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
log "ready in ${TOTAL}s (processes started -> /readyz ok: ${KTE_READY_SECS}s; $(
  "$BIN/kube-apiserver" --version
)); Ctrl-C to stop"

echo "export KUBECONFIG=$KUBECONFIG_OUT"
echo "export PATH=$BIN:\$PATH"

# Foreground until Ctrl-C/TERM or until one of the two exits.
set +e
wait -n "$ETCD_PID" "$API_PID"
rc=$?
kill -0 "$ETCD_PID" 2>/dev/null || log "etcd exited (status $rc); see $STATE/etcd.log"
kill -0 "$API_PID" 2>/dev/null || log "kube-apiserver exited (status $rc); see $STATE/kube-apiserver.log"
exit 1
