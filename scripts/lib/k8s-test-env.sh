# shellcheck shell=bash
# Reusable pieces of an envtest-style Kubernetes API server (etcd + kube-apiserver, nothing
# else), sourced by scripts/dev-cluster.sh. Written as small, independent functions so that a
# Rust test harness can port them one by one; see the comment block at the top of
# scripts/dev-cluster.sh for the resulting files and flags.
#
# Requirements: bash, openssl (1.1.1+/3.x), curl, base64; ss (iproute2) is optional.
# All functions print errors to stderr and return non-zero on failure.

# kte_free_port: print a TCP port that no socket on this host uses right now.
# Ports come from 10000 up to below both the kernel's ephemeral range
# (net.ipv4.ip_local_port_range) and Kubernetes' NodePort range (30000-32767). Ports that other
# processes get by binding port 0 or by connecting out come from the ephemeral range, so they
# cannot take a port picked here between this check and the server's bind (that race made
# kube-apiserver fail with "bind: address already in use" while tests ran in parallel).
# Ports handed out are remembered in $KTE_PORTS_FILE when it is set (the caller's `$(...)`
# subshells cannot update a variable), otherwise in $KTE_USED_PORTS, so no port is given twice.
# (A Rust harness binds 127.0.0.1:0 and reads the port instead.)
kte_free_port() {
  local p i lo=32768 span used
  read -r lo _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || lo=32768
  ((lo > 12000)) || lo=32768
  ((lo <= 30000)) || lo=30000 # nor Kubernetes' NodePort range (30000-32767)
  span=$((lo - 10000))
  for ((i = 0; i < 200; i++)); do
    p=$((10000 + (RANDOM * 32768 + RANDOM) % span))
    if command -v ss >/dev/null 2>&1; then
      [[ -z $(ss -Hatn "sport = :$p" 2>/dev/null) ]] || continue
    elif (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      continue
    fi
    used=${KTE_USED_PORTS:-}
    [[ -n ${KTE_PORTS_FILE:-} && -f $KTE_PORTS_FILE ]] && used="$used $(<"$KTE_PORTS_FILE")"
    [[ " $used " == *" $p "* ]] && continue
    KTE_USED_PORTS="${KTE_USED_PORTS:-} $p"
    [[ -n ${KTE_PORTS_FILE:-} ]] && echo "$p" >>"$KTE_PORTS_FILE"
    echo "$p"
    return 0
  done
  echo "kte_free_port: no free port found" >&2
  return 1
}

# kte_gen_pki <dir>: the credentials kube-apiserver needs besides its serving cert.
#   ca.key, ca.crt       self-signed client CA (ECDSA P-256), -> --client-ca-file
#   admin.key, admin.crt client cert signed by ca: CN=admin (user name), O=system:masters
#                        (group: superuser, bypasses RBAC) -> kubeconfig user
#   sa.key, sa.pub       service-account token key pair (ECDSA P-256, ES256 tokens)
#                        -> --service-account-signing-key-file / --service-account-key-file
kte_gen_pki() {
  local d=$1 ext
  mkdir -p "$d" && chmod 700 "$d" || return 1
  ext="$d/admin.ext"
  {
    openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
      -keyout "$d/ca.key" -out "$d/ca.crt" -days 3650 -subj "/CN=vmcp-test-client-ca" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" &&
      openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
        -keyout "$d/admin.key" -out "$d/admin.csr" -subj "/O=system:masters/CN=admin" &&
      printf '%s\n' "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature" "extendedKeyUsage=clientAuth" >"$ext" &&
      openssl x509 -req -in "$d/admin.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" \
        -CAcreateserial -out "$d/admin.crt" -days 365 -extfile "$ext" &&
      openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$d/sa.key" &&
      openssl pkey -in "$d/sa.key" -pubout -out "$d/sa.pub"
  } >"$d/openssl.log" 2>&1 || {
    echo "kte_gen_pki: openssl failed:" >&2
    cat "$d/openssl.log" >&2
    return 1
  }
  rm -f "$d/admin.csr" "$d/ca.srl" "$ext"
}

# kte_etcd_args <data-dir> <client-port> <peer-port>: sets array KTE_ETCD_ARGS.
kte_etcd_args() {
  local data=$1 cport=$2 pport=$3
  KTE_ETCD_ARGS=(
    --name=kte
    --data-dir="$data"
    --listen-client-urls="http://127.0.0.1:$cport"
    --advertise-client-urls="http://127.0.0.1:$cport"
    --listen-peer-urls="http://127.0.0.1:$pport"
    --initial-advertise-peer-urls="http://127.0.0.1:$pport"
    --initial-cluster="kte=http://127.0.0.1:$pport"
    --unsafe-no-fsync=true # throwaway data: skip fsync (much faster on slow disks)
    --log-level=warn
  )
}

# kte_apiserver_args <etcd-url> <secure-port> <cert-dir> <pki-dir>: sets array KTE_APISERVER_ARGS.
kte_apiserver_args() {
  local etcd=$1 port=$2 certdir=$3 pki=$4
  KTE_APISERVER_ARGS=(
    --etcd-servers="$etcd"
    --bind-address=127.0.0.1
    --advertise-address=127.0.0.1
    --secure-port="$port"
    --cert-dir="$certdir" # writes self-signed apiserver.crt/.key here
    --client-ca-file="$pki/ca.crt"
    --service-account-key-file="$pki/sa.pub"
    --service-account-signing-key-file="$pki/sa.key"
    --service-account-issuer=https://kubernetes.default.svc.cluster.local
    --service-cluster-ip-range=10.0.0.0/24
    --authorization-mode=RBAC
    --disable-admission-plugins=ServiceAccount
  )
}

# kte_serving_ca <cert-dir>: print the CA that signed the self-signed serving cert. Current
# kube-apiserver writes apiserver.crt as "leaf + its self-signed CA"; the last certificate is
# the CA (if the file holds a single certificate, that one is printed).
kte_serving_ca() {
  local f="$1/apiserver.crt"
  awk '/-----BEGIN CERTIFICATE-----/ { buf = "" } { buf = buf $0 "\n" } END { printf "%s", buf }' "$f"
}

# kte_write_kubeconfig <out> <server-url> <ca-pem-file> <pki-dir>: self-contained kubeconfig
# (certificate data embedded) for user "admin" (group system:masters).
kte_write_kubeconfig() {
  local out=$1 server=$2 ca=$3 pki=$4 b64
  b64() { base64 <"$1" | tr -d '\n'; }
  mkdir -p "$(dirname "$out")" || return 1
  (
    umask 077
    cat >"$out.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: vmcp-dev
  cluster:
    server: $server
    certificate-authority-data: $(b64 "$ca")
users:
- name: admin
  user:
    client-certificate-data: $(b64 "$pki/admin.crt")
    client-key-data: $(b64 "$pki/admin.key")
contexts:
- name: vmcp-dev
  context:
    cluster: vmcp-dev
    user: admin
    namespace: default
current-context: vmcp-dev
preferences: {}
EOF
  ) && mv -f "$out.tmp" "$out"
}

# kte_wait_ready <https-url> <pki-dir> <timeout-seconds> [pid...]: poll <url>/readyz with the
# admin client cert (anonymous requests get 401/403 until RBAC bootstrap finishes) until it
# answers 200 "ok". Fails early if one of the pids dies. Sets KTE_READY_SECS.
kte_wait_ready() {
  local url=$1 pki=$2 timeout=$3 t0 pid code
  shift 3
  t0=$(date +%s%N)
  while :; do
    for pid in "$@"; do
      kill -0 "$pid" 2>/dev/null || {
        echo "kte_wait_ready: process $pid exited" >&2
        return 1
      }
    done
    code=$(curl -sk -o /dev/null -w '%{http_code}' --max-time 2 \
      --cert "$pki/admin.crt" --key "$pki/admin.key" "$url/readyz" 2>/dev/null) || true
    if [[ $code == 200 ]]; then
      KTE_READY_SECS=$(awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
      return 0
    fi
    if (($(date +%s%N) - t0 > timeout * 1000000000)); then
      echo "kte_wait_ready: $url/readyz not ok after ${timeout}s (last HTTP code: ${code:-none})" >&2
      curl -sk --max-time 2 --cert "$pki/admin.crt" --key "$pki/admin.key" "$url/readyz?verbose" >&2 || true
      return 1
    fi
    sleep 0.2
  done
}
