#!/usr/bin/env bash
# Run the vmcp gateway locally in front of the two example backends (what `make run` does).
#
#   scripts/run-local.sh        # Ctrl-C stops everything
#
# Builds (debug) `vmcp-example-backends` and `vmcp-gateway`, then starts
#   weather backend   http://127.0.0.1:4501/mcp   (log: .cache/run-local/weather.log)
#   notes backend     http://127.0.0.1:4502/mcp   (log: .cache/run-local/notes.log)
#   gateway           http://127.0.0.1:4483/mcp   (examples/local/gateway.yaml; logs to this terminal)
# waits until each one is ready, prints how to try it, and on Ctrl-C / SIGTERM (or when any of
# them exits) stops all three. The ports are fixed because examples/local/gateway.yaml names them.
# Options (environment): CARGO (default cargo), RUN_LOCAL_READY_TIMEOUT (seconds to wait for each
# process to become ready, default 60), RUN_LOCAL_STOP_TIMEOUT (seconds to wait for a graceful
# stop before SIGKILL, default 10).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
CARGO=${CARGO:-cargo}
READY_TIMEOUT=${RUN_LOCAL_READY_TIMEOUT:-60}
STOP_TIMEOUT=${RUN_LOCAL_STOP_TIMEOUT:-10}
CONFIG=examples/local/gateway.yaml
GATEWAY_ADDR=127.0.0.1:4483
WEATHER_PORT=4501
NOTES_PORT=4502
LOG_DIR=$ROOT/.cache/run-local
BIN_DIR=$ROOT/target/debug

say() { printf '[run] %s\n' "$*"; }
die() {
	printf '[run] error: %s\n' "$*" >&2
	exit 1
}

# name -> pid of every process this script started, in start order.
declare -A PIDS=()
ORDER=()
STOPPING=0

stop_all() {
	local status=$?
	trap - INT TERM EXIT
	((STOPPING)) && return
	STOPPING=1
	local name pid i
	# Stop in reverse start order: the gateway first, then the backends.
	for ((i = ${#ORDER[@]} - 1; i >= 0; i--)); do
		name=${ORDER[i]}
		pid=${PIDS[$name]}
		if kill -0 "$pid" 2>/dev/null; then
			say "stopping $name (pid $pid)"
			kill -TERM "$pid" 2>/dev/null || true
		fi
	done
	# Give them a few seconds to shut down gracefully, then force.
	for _ in $(seq $((STOP_TIMEOUT * 10))); do
		local alive=0
		for name in "${ORDER[@]}"; do
			kill -0 "${PIDS[$name]}" 2>/dev/null && alive=1
		done
		((alive)) || break
		sleep 0.1
	done
	for name in "${ORDER[@]}"; do
		pid=${PIDS[$name]}
		if kill -0 "$pid" 2>/dev/null; then
			say "$name (pid $pid) did not stop in ${STOP_TIMEOUT}s; killing it"
			kill -KILL "$pid" 2>/dev/null || true
		fi
		wait "$pid" 2>/dev/null || true
	done
	((${#ORDER[@]})) && say "stopped"
	exit "$status"
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# True when something accepts TCP connections on 127.0.0.1:$1.
port_in_use() {
	timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

check_port_free() {
	local port=$1 what=$2
	if port_in_use "$port"; then
		local owner=""
		command -v ss >/dev/null && owner=$(ss -ltnpH "sport = :$port" 2>/dev/null | head -n1)
		die "port $port (for $what) is already taken${owner:+: $owner}. Stop whatever is listening there (an earlier run?) and try again."
	fi
}

# Fail when the process $1 (named $2) has exited; show the end of its log file $3 if given.
check_alive() {
	local pid=$1 name=$2 log=${3:-}
	if ! kill -0 "$pid" 2>/dev/null; then
		local rc=0
		wait "$pid" 2>/dev/null || rc=$?
		say "$name exited (status $rc) before it was ready${log:+; last lines of ${log#"$ROOT"/}:}" >&2
		[[ -z $log ]] || tail -n 20 "$log" >&2 || true
		exit 1
	fi
}

start_backend() {
	local kind=$1 port=$2
	local out=$LOG_DIR/$kind.out log=$LOG_DIR/$kind.log
	: >"$out"
	: >"$log"
	"$BIN_DIR/vmcp-example-backend" --kind "$kind" --port "$port" >"$out" 2>"$log" &
	PIDS[$kind]=$!
	ORDER+=("$kind")
	say "started $kind backend (pid ${PIDS[$kind]}), waiting for READY"
	local deadline=$((SECONDS + READY_TIMEOUT))
	until grep -q "^READY $port\$" "$out"; do
		check_alive "${PIDS[$kind]}" "$kind backend" "$log"
		((SECONDS < deadline)) || die "$kind backend not ready after ${READY_TIMEOUT}s (log: $log)"
		sleep 0.1
	done
	say "$kind backend ready at http://127.0.0.1:$port/mcp (log: ${log#"$ROOT"/})"
}

start_gateway() {
	"$BIN_DIR/vmcp-gateway" --config "$CONFIG" &
	PIDS[gateway]=$!
	ORDER+=(gateway)
	say "started gateway (pid ${PIDS[gateway]}), waiting for http://$GATEWAY_ADDR/healthz"
	local deadline=$((SECONDS + READY_TIMEOUT))
	until curl -sf -o /dev/null --max-time 1 "http://$GATEWAY_ADDR/healthz"; do
		check_alive "${PIDS[gateway]}" gateway
		((SECONDS < deadline)) || die "gateway not healthy after ${READY_TIMEOUT}s"
		sleep 0.2
	done
	say "gateway ready"
}

command -v curl >/dev/null || die "curl is required"
[[ -f $CONFIG ]] || die "$CONFIG not found"
check_port_free "$WEATHER_PORT" "weather backend"
check_port_free "$NOTES_PORT" "notes backend"
check_port_free "${GATEWAY_ADDR##*:}" gateway

say "building vmcp-example-backends and vmcp-gateway (debug)"
"$CARGO" build -p vmcp-example-backends -p vmcp-gateway || die "cargo build failed"

mkdir -p "$LOG_DIR"
start_backend weather "$WEATHER_PORT"
start_backend notes "$NOTES_PORT"
start_gateway

cat <<EOF
[run] ================================================================================
[run] vmcp gateway: http://$GATEWAY_ADDR/mcp  (backends: weather :$WEATHER_PORT, notes :$NOTES_PORT)
[run] try it (prints the Mcp-Session-Id header to use on the next requests):
  curl -si http://$GATEWAY_ADDR/mcp -H 'Accept: application/json, text/event-stream' -H 'Content-Type: application/json' -d '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"curl","version":"0"}}}'
[run] or: npx @modelcontextprotocol/inspector  (transport "Streamable HTTP", URL http://$GATEWAY_ADDR/mcp)
[run] Ctrl-C stops the gateway and both backends.
[run] ================================================================================
EOF

# Run until Ctrl-C / SIGTERM (the traps exit, which stops everything) or until one child exits.
set +e
wait -n "${PIDS[@]}"
rc=$?
set -e
for name in "${ORDER[@]}"; do
	if ! kill -0 "${PIDS[$name]}" 2>/dev/null; then
		say "$name exited unexpectedly (status $rc); stopping the rest"
		break
	fi
done
exit 1
