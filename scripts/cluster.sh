#!/usr/bin/env bash
# `make cluster`: a real single-node Kubernetes on this machine, in the foreground.
#
#   scripts/cluster.sh              # Ctrl-C (or SIGTERM) stops everything and removes its state
#   # in another shell: paste the printed `export` lines, then kubectl / helm as usual
#
# What runs (every binary pinned in scripts/k8s-versions.env; Kubernetes components and CoreDNS
# built once by `scripts/k8s-bin.sh --node` into .cache/k8s/<version>/bin):
#   etcd, kube-apiserver (Node,RBAC authorization, NodeRestriction and ServiceAccount admission),
#   kube-controller-manager (service-account tokens, root CA ConfigMaps, GC, Deployments, ...),
#   kube-scheduler, kubelet (cgroupfs driver; this host's cgroup v1 needs failCgroupV1: false),
#   kube-proxy (iptables mode), CoreDNS (a host process answering on <node IP>:53, the
#   kubelet's clusterDNS), containerd 1.6 + runc (Debian packages; installed when missing)
#   and the CNI plugins bridge + host-local + portmap + loopback (Debian
#   containernetworking-plugins) on the bridge `vmcp0`, pod subnet 10.244.0.0/24.
# Images: nothing is pulled from a registry. The sandbox ("pause") image is built here from
# Kubernetes' own pause.c (scripts/cluster-images.sh, cached in .cache/cluster/), and the vmcp
# images from `make images` are imported into containerd (`podman save` | `ctr import`).
# Load more images into a running cluster with `scripts/cluster-images.sh load IMAGE...`.
#
# State: one temp folder T (/tmp/vmcp-cluster.XXXXXX) holds certificates, kubeconfigs, etcd,
# containerd's root/state/socket, kubelet's root dir, pod logs, CNI IPAM and every log
# (T/logs/*.log). T/env is a shell file with KUBECONFIG, PATH, CONTAINERD_ADDRESS, NODE_IP, ...
# On exit (Ctrl-C, SIGTERM, a component dying, or with CLUSTER_STOP_ON_EOF=1 when stdin reaches
# EOF, which a test harness uses to tie the cluster to its own life) scripts/cluster-clean.sh
# deletes every pod, stops every process, runs `kube-proxy --cleanup`, removes the remaining
# KUBE-*/CNI-* iptables chains, the bridge, the pods' network namespaces, kubelet cgroups and
# mounts under T, restores the two sysctls it changed, and deletes T.
#
# One cluster per machine (iptables chains and the bridge are global): a second start waits for
# the first (flock /run/lock/vmcp-cluster.lock). Needs root.
#
# Environment: CLUSTER_NODE_IP (default: the source address of the default route),
#   CLUSTER_READY_TIMEOUT (seconds, default 300), CLUSTER_IMAGES ("none" to skip `make images`;
#   default: build them and load them), CLUSTER_STOP_ON_EOF=1 (see above),
#   CLUSTER_RUNC (the OCI runtime binary; default: runc on PATH).
# Stdout: the `export` lines, then a line `ready` once the node is Ready and DNS answers.
set -euo pipefail
exec 3<&0 # the caller's stdin, for CLUSTER_STOP_ON_EOF (background jobs get /dev/null as stdin)

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd -P)
# shellcheck source=k8s-versions.env
source "$SCRIPT_DIR/k8s-versions.env"
# shellcheck source=lib/k8s-test-env.sh
source "$SCRIPT_DIR/lib/k8s-test-env.sh"

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { printf '[cluster] ERROR: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || die "make cluster needs root (containerd, kubelet, iptables, mounts)"

NODE_NAME=vmcp-node
POD_CIDR=10.244.0.0/24
SERVICE_CIDR=10.96.0.0/16
API_SERVICE_IP=10.96.0.1
BRIDGE=vmcp0

# --- packages (Debian) --------------------------------------------------------------------------
apt_install() {
  log "installing $* (Debian packages)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >&2 ||
    { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >&2; } ||
    die "cannot install $*"
}
command -v containerd >/dev/null || apt_install containerd
command -v runc >/dev/null || apt_install runc
command -v conntrack >/dev/null || apt_install conntrack
[[ -x /usr/lib/cni/bridge ]] || apt_install containernetworking-plugins
command -v openssl >/dev/null || apt_install openssl
# The pause and Redis images are built with buildah and exported with podman
# (scripts/cluster-images.sh), before `make images` (which installs them too) runs.
command -v buildah >/dev/null || apt_install buildah
command -v podman >/dev/null || apt_install podman
have=$(containerd --version | awk '{print $3}')
[[ $have == "$CONTAINERD_SERIES".* ]] ||
  log "warning: containerd $have installed; this script is tested with the $CONTAINERD_SERIES series"

# --- one cluster per machine ------------------------------------------------------------------
mkdir -p /run/lock
exec 8>/run/lock/vmcp-cluster.lock
if ! flock -n 8; then
  log "another vmcp cluster runs on this machine; waiting for it to stop…"
  flock 8
fi

# --- binaries -------------------------------------------------------------------------------------
BIN=$(env -u KUBEBUILDER_ASSETS "$SCRIPT_DIR/k8s-bin.sh" --node | tail -1) || die "scripts/k8s-bin.sh --node failed"

T=$(mktemp -d /tmp/vmcp-cluster.XXXXXX)
export KTE_PORTS_FILE=$T/ports # kte_free_port never hands out a port twice
chmod 755 "$T"
mkdir -p "$T/logs" "$T/pki" "$T/cni/net.d" "$T/cni/ipam" "$T/containerd" "$T/kubelet" "$T/pod-logs"
# Record what existed before us, so that cleanup removes only what this cluster made.
ls /var/run/netns 2>/dev/null | sed 's/^/netns /' >"$T/before" || true
for s in net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables; do
  echo "sysctl $s $(sysctl -n "$s")" >>"$T/before"
done
PIDS="$T/pids"
: >"$PIDS"

cleanup() {
  local rc=$?
  set +e
  trap - INT TERM EXIT
  log "stopping (exit status $rc)…"
  "$SCRIPT_DIR/cluster-clean.sh" "$T" >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start <name> <cmd...>: run in the background, log to T/logs/<name>.log, record the pid.
start() {
  local name=$1
  shift
  "$@" >"$T/logs/$name.log" 2>&1 3<&- &
  echo "$! $name" >>"$PIDS"
  log "$name started (pid $!, log $T/logs/$name.log)"
}
alive() { # fails naming the first recorded process that exited
  local pid name
  while read -r pid name; do
    kill -0 "$pid" 2>/dev/null || { echo "$name"; return 1; }
  done <"$PIDS"
}
wait_for() { # wait_for <what> <timeout-s> <cmd...>
  local what=$1 timeout=$2 t0=$SECONDS dead
  shift 2
  until "$@" >/dev/null 2>&1; do
    if ! dead=$(alive); then
      tail -n 30 "$T/logs/$dead.log" >&2
      die "$dead exited while waiting for $what (log above: $T/logs/$dead.log)"
    fi
    ((SECONDS - t0 < timeout)) || die "$what not reached after ${timeout}s"
    sleep 0.5
  done
  log "$what after $((SECONDS - t0))s"
}

T0=$SECONDS
NODE_IP=${CLUSTER_NODE_IP:-$(ip -4 route get 1.1.1.1 | sed -n 's/.* src \([0-9.]*\).*/\1/p')}
[[ -n $NODE_IP ]] || die "no node IP (no default route?); set CLUSTER_NODE_IP"
TIMEOUT=${CLUSTER_READY_TIMEOUT:-300}

# --- PKI: one CA signs every certificate --------------------------------------------------------
pki() {
  local d=$T/pki
  openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout "$d/ca.key" -out "$d/ca.crt" -days 3650 -subj "/CN=vmcp-cluster-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
  # cert <file> <subject> <extendedKeyUsage> [subjectAltName]
  cert() {
    local f=$1 subj=$2 eku=$3 san=${4:-}
    openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
      -keyout "$d/$f.key" -out "$d/$f.csr" -subj "$subj"
    {
      echo "basicConstraints=critical,CA:FALSE"
      echo "keyUsage=critical,digitalSignature,keyEncipherment"
      echo "extendedKeyUsage=$eku"
      [[ -z $san ]] || echo "subjectAltName=$san"
    } >"$d/$f.ext"
    openssl x509 -req -in "$d/$f.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
      -out "$d/$f.crt" -days 365 -extfile "$d/$f.ext"
    rm -f "$d/$f.csr" "$d/$f.ext"
  }
  cert apiserver "/CN=kube-apiserver" serverAuth \
    "IP:127.0.0.1,IP:$NODE_IP,IP:$API_SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
  cert admin "/O=system:masters/CN=admin" clientAuth
  cert controller-manager "/CN=system:kube-controller-manager" clientAuth
  cert scheduler "/CN=system:kube-scheduler" clientAuth
  cert proxy "/CN=system:kube-proxy" clientAuth
  cert kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" clientAuth
  cert kubelet-serving "/CN=$NODE_NAME" serverAuth "IP:$NODE_IP,IP:127.0.0.1,DNS:$NODE_NAME"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$d/sa.key"
  openssl pkey -in "$d/sa.key" -pubout -out "$d/sa.pub"
}
pki >"$T/logs/openssl.log" 2>&1 || { cat "$T/logs/openssl.log" >&2; die "step 'pki' failed"; }

API_PORT=$(kte_free_port)
API_URL="https://$NODE_IP:$API_PORT"
kubeconfig() { # kubeconfig <file> <cert-name>
  local b64
  b64() { base64 -w0 <"$T/pki/$1"; }
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: vmcp-cluster
  cluster:
    server: $API_URL
    certificate-authority-data: $(b64 ca.crt)
users:
- name: $2
  user:
    client-certificate-data: $(b64 "$2.crt")
    client-key-data: $(b64 "$2.key")
contexts:
- name: vmcp-cluster
  context: {cluster: vmcp-cluster, user: $2, namespace: default}
current-context: vmcp-cluster
EOF
}
for c in admin controller-manager scheduler proxy kubelet; do kubeconfig "$T/$c.kubeconfig" "$c"; done
export KUBECONFIG=$T/admin.kubeconfig
KUBECTL=("$BIN/kubectl" --kubeconfig "$KUBECONFIG")

# --- host settings -----------------------------------------------------------------------------------
sysctl -qw net.ipv4.ip_forward=1
sysctl -qw net.bridge.bridge-nf-call-iptables=1 ||
  log "warning: net.bridge.bridge-nf-call-iptables unavailable (no br_netfilter); pod -> Service -> pod on the bridge may fail"
for c in /sys/fs/cgroup/*/; do
  [[ $c == */unified/ ]] && continue
  [[ -f $c/cgroup.procs ]] && mkdir -p "$c/vmcp-cluster"
done

# --- etcd + kube-apiserver ---------------------------------------------------------------------------
ETCD_PORT=$(kte_free_port)
ETCD_PEER=$(kte_free_port)
kte_etcd_args "$T/etcd" "$ETCD_PORT" "$ETCD_PEER"
start etcd "$BIN/etcd" "${KTE_ETCD_ARGS[@]}"
start kube-apiserver "$BIN/kube-apiserver" \
  --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
  --bind-address=0.0.0.0 --advertise-address="$NODE_IP" --secure-port="$API_PORT" \
  --tls-cert-file="$T/pki/apiserver.crt" --tls-private-key-file="$T/pki/apiserver.key" \
  --client-ca-file="$T/pki/ca.crt" \
  --kubelet-client-certificate="$T/pki/apiserver-kubelet-client.crt" \
  --kubelet-client-key="$T/pki/apiserver-kubelet-client.key" \
  --kubelet-preferred-address-types=InternalIP \
  --service-account-key-file="$T/pki/sa.pub" --service-account-signing-key-file="$T/pki/sa.key" \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-cluster-ip-range="$SERVICE_CIDR" \
  --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
  --allow-privileged=true --profiling=false
wait_for "kube-apiserver /readyz" "$TIMEOUT" \
  curl -sf --cacert "$T/pki/ca.crt" --cert "$T/pki/admin.crt" --key "$T/pki/admin.key" "$API_URL/readyz"

# --- controller-manager, scheduler ----------------------------------------------------------------
start kube-controller-manager "$BIN/kube-controller-manager" \
  --kubeconfig="$T/controller-manager.kubeconfig" \
  --authentication-kubeconfig="$T/controller-manager.kubeconfig" \
  --authorization-kubeconfig="$T/controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port="$(kte_free_port)" \
  --service-account-private-key-file="$T/pki/sa.key" --root-ca-file="$T/pki/ca.crt" \
  --use-service-account-credentials=true --leader-elect=false \
  --service-cluster-ip-range="$SERVICE_CIDR" --cluster-name=vmcp-cluster \
  --node-monitor-grace-period=20s
start kube-scheduler "$BIN/kube-scheduler" \
  --kubeconfig="$T/scheduler.kubeconfig" \
  --authentication-kubeconfig="$T/scheduler.kubeconfig" \
  --authorization-kubeconfig="$T/scheduler.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port="$(kte_free_port)" --leader-elect=false

# --- containerd ------------------------------------------------------------------------------------------
CTRD=$T/containerd
CONTAINERD_ADDRESS=$CTRD/containerd.sock
PAUSE_IMAGE=$("$SCRIPT_DIR/cluster-images.sh" pause-name)
RESTRICT_OOM=false
if ! sh -c 'echo -1 >/proc/self/oom_score_adj' 2>/dev/null; then
  RESTRICT_OOM=true
  log "no CAP_SYS_RESOURCE here (cannot lower oom_score_adj): containerd restrict_oom_score_adj = true"
fi
cat >"$CTRD/config.toml" <<EOF
version = 2
root = "$CTRD/root"
state = "$CTRD/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$CONTAINERD_ADDRESS"
[ttrpc]
  address = "$CTRD/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$CTRD/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # kubelet asks for oom_score_adj -998 (sandboxes) and -997 (Guaranteed pods); lowering it
  # needs CAP_SYS_RESOURCE, which this machine's root lacks (runc then fails with "can't get
  # final child's PID from pipe: EOF"). Clamp to containerd's own value instead.
  restrict_oom_score_adj = $RESTRICT_OOM
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "${CLUSTER_RUNC:-$(command -v runc)}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$T/cni/net.d"
EOF
cat >"$T/cni/net.d/10-vmcp.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "vmcp-pods",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "$POD_CIDR" }]],
        "routes": [{ "dst": "0.0.0.0/0" }],
        "dataDir": "$T/cni/ipam"
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
EOF
start containerd containerd --config "$CTRD/config.toml"
wait_for "containerd" 60 ctr --address "$CONTAINERD_ADDRESS" version

# Images: pause (built from Kubernetes' pause.c) and the vmcp images from `make images`.
export CONTAINERD_ADDRESS
"$SCRIPT_DIR/cluster-images.sh" load-pause || die "step 'load the pause image' failed"
if [[ ${CLUSTER_IMAGES:-} != none ]]; then
  images=$("$SCRIPT_DIR/images-build.sh") || die "step 'make images' failed"
  mapfile -t VMCP_IMAGES <<<"$images"
  "$SCRIPT_DIR/cluster-images.sh" load "${VMCP_IMAGES[@]}" || die "step 'load the vmcp images' failed"
fi

# --- kubelet ----------------------------------------------------------------------------------------------
cat >"$T/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://$CONTAINERD_ADDRESS
# This host runs cgroup v1 (hybrid); kubelet refuses it unless told otherwise.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /vmcp-cluster
address: $NODE_IP
port: $(kte_free_port)
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $(kte_free_port)
tlsCertFile: $T/pki/kubelet-serving.crt
tlsPrivateKeyFile: $T/pki/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $T/pki/ca.crt}
authorization: {mode: AlwaysAllow}
clusterDomain: cluster.local
clusterDNS: [$NODE_IP]
resolvConf: /etc/resolv.conf
podLogsDirectory: $T/pod-logs
failSwapOn: false
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# Absolute thresholds: on a large disk shared with other work, a percentage evicts every pod
# while gigabytes are still free (seen: DiskPressure at 4.9 GB free = 1.9 % of 252 GB).
evictionHard: {memory.available: "100Mi", nodefs.available: "512Mi", imagefs.available: "512Mi", nodefs.inodesFree: "1%"}
rotateCertificates: false
serverTLSBootstrap: false
EOF
start kubelet "$BIN/kubelet" --config="$T/kubelet/config.yaml" --kubeconfig="$T/kubelet.kubeconfig" \
  --root-dir="$T/kubelet" --cert-dir="$T/kubelet/pki" \
  --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --v=1

# --- kube-proxy -------------------------------------------------------------------------------------------
cat >"$T/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $T/proxy.kubeconfig}
mode: iptables
clusterCIDR: $POD_CIDR
hostnameOverride: $NODE_NAME
healthzBindAddress: 127.0.0.1:$(kte_free_port)
metricsBindAddress: 127.0.0.1:$(kte_free_port)
conntrack: {maxPerCore: 0}
EOF
start kube-proxy "$BIN/kube-proxy" --config="$T/kube-proxy.yaml"

# --- CoreDNS (cluster DNS) ----------------------------------------------------------------------
DNS_READY_PORT=$(kte_free_port)
cat >"$T/Corefile" <<EOF
.:53 {
    bind $NODE_IP
    errors
    ready 127.0.0.1:$DNS_READY_PORT
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $T/admin.kubeconfig vmcp-cluster
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    forward . /etc/resolv.conf
    cache 30
}
EOF
start coredns "$BIN/coredns" -conf "$T/Corefile"

# --- ready: node Ready, default service account, DNS answers -------------------------------------
node_ready() {
  [[ $("${KUBECTL[@]}" get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}') == True ]]
}
wait_for "node $NODE_NAME Ready" "$TIMEOUT" node_ready
wait_for "default ServiceAccount" "$TIMEOUT" "${KUBECTL[@]}" get serviceaccount default -n default
# CoreDNS's ready plugin answers 200 once its kubernetes plugin has synced with the API.
wait_for "cluster DNS (CoreDNS ready)" 60 curl -sf "http://127.0.0.1:$DNS_READY_PORT/ready"

cat >"$T/env" <<EOF
export KUBECONFIG=$KUBECONFIG
export PATH=$BIN:\$PATH
export CONTAINERD_ADDRESS=$CONTAINERD_ADDRESS
export CONTAINERD_NAMESPACE=k8s.io
export VMCP_CLUSTER_DIR=$T
export VMCP_CLUSTER_NODE_IP=$NODE_IP
EOF
ln -sfn "$T/env" /tmp/vmcp-cluster.env
log "ready in $((SECONDS - T0))s: node $NODE_NAME ($NODE_IP), API $API_URL, state $T; Ctrl-C to stop"
cat "$T/env"
echo ready

# Foreground until Ctrl-C/TERM, a component exits, or (CLUSTER_STOP_ON_EOF=1) stdin closes.
set +e
if [[ ${CLUSTER_STOP_ON_EOF:-} == 1 ]]; then
  (cat <&3 >/dev/null; kill -TERM $$ 2>/dev/null) &
fi
while dead=$(alive); do sleep 1; done
log "$dead exited; last lines of $T/logs/$dead.log:"
tail -n 30 "$T/logs/$dead.log" >&2
exit 1
