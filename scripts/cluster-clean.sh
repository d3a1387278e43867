#!/usr/bin/env bash
# Stop a `make cluster` (scripts/cluster.sh) and remove everything it made on this machine.
#
#   scripts/cluster-clean.sh T      # T = the cluster's state folder (/tmp/vmcp-cluster.XXXXXX)
#
# cluster.sh runs this on exit; run it by hand after the script itself was SIGKILLed. Order:
# controller-manager and scheduler stop (nothing recreates pods), every pod is force-deleted and
# kubelet tears the sandboxes down (CNI DEL: veth, IPAM, iptables of the bridge plugin), then
# kubelet, kube-proxy, CoreDNS; containerd's remaining tasks and containers are killed and
# deleted, then containerd, kube-apiserver and etcd stop; leftover processes whose command line
# names T (containerd shims) are killed. Then: `kube-proxy --cleanup`, remaining KUBE-*/CNI-*
# iptables chains, network namespaces that did not exist before the cluster (T/before), the
# bridge vmcp0, mounts under T, the kubelet cgroups (/sys/fs/cgroup/*/vmcp-cluster), the
# sysctls to their old values, and T.
set -uo pipefail

T=${1:?usage: cluster-clean.sh <state dir>}
[[ -d $T && $T == /tmp/vmcp-cluster.* ]] || { echo "[cluster-clean] not a cluster state dir: $T" >&2; exit 1; }
log() { printf '[cluster-clean] %s\n' "$*" >&2; }
PIDS="$T/pids"
BIN=$(sed -n 's/^export PATH=\(.*\):\$PATH$/\1/p' "$T/env" 2>/dev/null)
[[ -n $BIN ]] || BIN=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)/.cache/k8s/$(
  source "$(dirname "${BASH_SOURCE[0]}")/k8s-versions.env"; echo "$K8S_VERSION")/bin
CTR=(ctr --address "$T/containerd/containerd.sock" -n k8s.io)

pid_of() { awk -v n="$1" '$2 == n { print $1 }' "$PIDS" 2>/dev/null | tail -1; }
stop() { # stop <name>: SIGTERM, SIGKILL after 10 s
  local pid i
  pid=$(pid_of "$1")
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
  kill "$pid" 2>/dev/null
  for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  log "$1 did not stop in 10 s; SIGKILL"
  kill -9 "$pid" 2>/dev/null
  sleep 0.2
}
running_tasks() { "${CTR[@]}" tasks ls 2>/dev/null | awk 'NR > 1 && $3 == "RUNNING"' | wc -l; }

stop kube-controller-manager
stop kube-scheduler
api=$(pid_of kube-apiserver)
kubelet=$(pid_of kubelet)
if [[ -n $api && -n $kubelet ]] && kill -0 "$api" 2>/dev/null && kill -0 "$kubelet" 2>/dev/null; then
  log "deleting every pod; kubelet tears the sandboxes down"
  timeout 30 "$BIN/kubectl" --kubeconfig "$T/admin.kubeconfig" delete pods --all -A \
    --force --grace-period=0 --wait=false >/dev/null 2>&1
  for ((i = 0; i < 60; i++)); do
    [[ $(running_tasks) == 0 ]] && break
    sleep 0.5
  done
fi
stop kubelet
stop kube-proxy
stop coredns
if [[ -S $T/containerd/containerd.sock ]]; then
  # What kubelet did not stop: kill the tasks, then remove sandboxes the CRI way is no longer
  # possible (kubelet is gone), so remove the containers; their netns go below.
  for id in $("${CTR[@]}" tasks ls -q 2>/dev/null); do "${CTR[@]}" tasks kill -s SIGKILL "$id" >/dev/null 2>&1; done
  sleep 0.5
  for id in $("${CTR[@]}" tasks ls -q 2>/dev/null); do "${CTR[@]}" tasks delete -f "$id" >/dev/null 2>&1; done
  for id in $("${CTR[@]}" containers ls -q 2>/dev/null); do "${CTR[@]}" containers delete "$id" >/dev/null 2>&1; done
fi
stop containerd
stop kube-apiserver
stop etcd
# Whatever still names T on its command line (containerd shims, a stray runc).
for p in /proc/[0-9]*; do
  [[ ${p#/proc/} == "$$" ]] && continue
  if { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null | grep -qF -- "$T/"; then
    log "killing leftover $(tr '\0' ' ' <"$p/cmdline" | cut -c1-100) (pid ${p#/proc/})"
    kill -9 "${p#/proc/}" 2>/dev/null
  fi
done

# iptables: kube-proxy's own cleanup, then any KUBE-*/CNI-* chain left (kubelet, CNI plugins).
mkdir -p "$T/logs"
if [[ -x $BIN/kube-proxy ]]; then
  "$BIN/kube-proxy" --cleanup --config="$T/kube-proxy.yaml" >"$T/logs/kube-proxy-cleanup.log" 2>&1 ||
    "$BIN/kube-proxy" --cleanup >>"$T/logs/kube-proxy-cleanup.log" 2>&1
fi
for table in filter nat mangle; do
  chains=$(iptables -t "$table" -S 2>/dev/null | awk '$1 == "-N" && ($2 ~ /^KUBE-/ || $2 ~ /^CNI-/) { print $2 }')
  [[ -n $chains ]] || continue
  # Rules jumping to those chains (from built-in or other chains), then the chains themselves.
  iptables -t "$table" -S | awk '$1 == "-A"' | while read -r line; do
    for c in $chains; do
      if [[ " $line " == *" -j $c "* ]]; then
        # `iptables -S` quotes like a shell (comments hold spaces and quotes): eval it back.
        eval "iptables -t $table -D ${line#-A }" 2>/dev/null
        break
      fi
    done
  done
  for c in $chains; do iptables -t "$table" -F "$c" 2>/dev/null; done
  for c in $chains; do iptables -t "$table" -X "$c" 2>/dev/null; done
done

# Network namespaces the CRI made (/var/run/netns/cni-*), not those that existed before.
for ns in $(ls /var/run/netns 2>/dev/null); do
  grep -qx "netns $ns" "$T/before" 2>/dev/null && continue
  [[ $ns == cni-* ]] || continue
  ip netns delete "$ns" 2>/dev/null || { umount "/var/run/netns/$ns" 2>/dev/null; rm -f "/var/run/netns/$ns"; }
done
ip link del vmcp0 2>/dev/null

# Mounts under T (deepest first), cgroups, sysctls, then T.
awk -v t="$T/" 'index($5, t) == 1 { print $5 }' /proc/self/mountinfo | sort -r | while read -r m; do
  umount -l "$m" 2>/dev/null
done
for c in /sys/fs/cgroup/*/vmcp-cluster; do
  [[ -d $c ]] && find "$c" -depth -type d -exec rmdir {} + 2>/dev/null
done
while read -r kind key value; do
  [[ $kind == sysctl ]] && sysctl -qw "$key=$value" 2>/dev/null
done <"$T/before"
[[ $(readlink /tmp/vmcp-cluster.env 2>/dev/null) == "$T/env" ]] && rm -f /tmp/vmcp-cluster.env
rm -rf "$T" 2>/dev/null || { sleep 1; rm -rf "$T"; }
[[ -e $T ]] && log "could not remove $T completely" || log "removed $T"
