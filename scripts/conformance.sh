#!/usr/bin/env bash
# Runs the official MCP conformance suite's server scenarios (pinned CLI, tests/peers/conformance)
# twice: directly against the suite's reference test server ("everything server"), and through a
# vmcp gateway whose only backend is that server. Prints "N of M passed" for both and the names
# of the failing scenarios. Exit status 1 if a scenario fails through the gateway but passes
# directly (the gateway broke something the backend does right), else 0.
#
# Usage: scripts/conformance.sh [CLI options, e.g. --scenario tools-call-sampling]
# Env:   VMCP_GATEWAY_BIN   gateway binary to use (default: cargo build -p vmcp-gateway, debug)
#        CONFORMANCE_SUITE  the CLI's --suite (default: all = every server scenario, also pending)
#        CONFORMANCE_KEEP=1 keep the work folder (results, logs) and print its path
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SUITE="${CONFORMANCE_SUITE:-all}"
log() { printf 'conformance: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }

DIR="$("$ROOT/scripts/conformance-install.sh")"
NODE="$DIR/node"
if [[ -n "${VMCP_GATEWAY_BIN:-}" ]]; then
    GATEWAY="$VMCP_GATEWAY_BIN"
else
    (cd "$ROOT" && "${CARGO:-cargo}" build -q -p vmcp-gateway --bin vmcp-gateway)
    GATEWAY="${CARGO_TARGET_DIR:-$ROOT/target}/debug/vmcp-gateway"
fi
[[ -x "$GATEWAY" ]] || die "no gateway binary at $GATEWAY"

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -- "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [[ "${CONFORMANCE_KEEP:-0}" == 1 ]]; then log "results and logs kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

free_port() {
    "$NODE" -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}
# Waits until something accepts connections on 127.0.0.1:$1 (process $2 must stay alive).
wait_port() {
    for _ in $(seq 1 300); do
        kill -0 "$2" 2>/dev/null || return 1
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    return 1
}

SERVER_PORT="$(free_port)"
# tsx as an import hook: one process (its CLI would start a second one).
PORT="$SERVER_PORT" "$NODE" --import "file://$DIR/node_modules/tsx/dist/esm/index.mjs" \
    "$DIR/everything-server.ts" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
PIDS+=("$SERVER_PID")
wait_port "$SERVER_PORT" "$SERVER_PID" || { cat "$WORK/server.log" >&2; die "the everything server did not start"; }

GATEWAY_PORT="$(free_port)"
cat >"$WORK/gateway.yaml" <<EOF
listen: 127.0.0.1:$GATEWAY_PORT
backends:
  - name: everything
    url: http://localhost:$SERVER_PORT/mcp
    timeout: 10s
# One backend: its names are exposed unchanged (no prefix), as the suite expects.
aggregation:
  conflictResolution: priority
  priorityOrder: [everything]
EOF
RUST_LOG="${RUST_LOG:-info}" "$GATEWAY" --config "$WORK/gateway.yaml" >"$WORK/gateway.log" 2>&1 &
GATEWAY_PID=$!
PIDS+=("$GATEWAY_PID")
wait_port "$GATEWAY_PORT" "$GATEWAY_PID" || { cat "$WORK/gateway.log" >&2; die "the gateway did not start"; }

# Runs the suite against $2 (label $1); leaves the summary in $WORK/$1.txt.
run_suite() {
    log "running the $SUITE server scenarios $1 ($2)"
    "$NODE" "$DIR/cli.js" server --url "$2" --suite "$SUITE" -o "$WORK/$1" "${@:3}" >"$WORK/$1.txt" 2>&1 || true
    grep -qE '^Total: ' "$WORK/$1.txt" || { cat "$WORK/$1.txt" >&2; die "the suite did not finish ($1)"; }
}
passed() { grep -E '^✓ ' "$WORK/$1.txt" | sed -E 's/^✓ ([^:]+):.*/\1/' || true; }
failed() { grep -E '^✗ ' "$WORK/$1.txt" | sed -E 's/^✗ ([^:]+):.*/\1/' || true; }
report() {
    local p f
    p="$(passed "$1" | grep -c . || true)"
    f="$(failed "$1" | grep -c . || true)"
    printf '%-8s %d of %d passed' "$1:" "$p" "$((p + f))"
    if ((f > 0)); then printf '; failing: %s' "$(failed "$1" | tr '\n' ' ' | sed 's/ $//')"; fi
    printf '\n'
}

run_suite direct "http://localhost:$SERVER_PORT/mcp" "$@"
run_suite gateway "http://127.0.0.1:$GATEWAY_PORT/mcp" "$@"

VERSION="$("$NODE" -p 'require(process.argv[1]).version' "$DIR/node_modules/@modelcontextprotocol/conformance/package.json")"
echo "MCP conformance suite $VERSION, server scenarios (--suite $SUITE):"
report direct
report gateway
regressions="$(comm -12 <(failed gateway | sort) <(passed direct | sort))"
if [[ -n "$regressions" ]]; then
    echo "fail through the gateway but pass directly: $(echo "$regressions" | tr '\n' ' ' | sed 's/ $//')"
    exit 1
fi
