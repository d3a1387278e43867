#!/usr/bin/env bash
# Install the official-SDK test peers (tests/peers/): a Python venv at .cache/peers/venv with the
# exact pins of tests/peers/python/requirements.txt, a second one at .cache/peers/venv-mcp1 with
# the old SDK of tests/peers/python-mcp1/requirements.txt, and tests/peers/ts/node_modules from
# package-lock.json (npm ci), and the TypeScript SDK v2 client of tests/peers/ts-v2 under
# .cache/peers/ts-v2-<key> (linked as its node_modules). Idempotent: stamps keyed by the pin files and tool versions make a
# repeat run a no-op (the old-SDK venv has its own stamp, so adding or changing it never
# reinstalls the others). Progress goes to stderr; on success stdout gets exactly "peers ready".
#
# Env: PEERS_PYTHON (default python3, needs >= 3.10), PEERS_FORCE=1 to reinstall.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$ROOT/.cache/peers"
VENV="$CACHE/venv"
STAMP="$CACHE/stamp"
PY_DIR="$ROOT/tests/peers/python"
VENV_MCP1="$CACHE/venv-mcp1"
STAMP_MCP1="$CACHE/stamp-mcp1"
PY_MCP1_DIR="$ROOT/tests/peers/python-mcp1"
TS_DIR="$ROOT/tests/peers/ts"
PYTHON="${PEERS_PYTHON:-python3}"

log() { printf 'peers-install: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v node >/dev/null || die "node not found"
mkdir -p "$CACHE"

# One installer at a time (parallel test binaries may all call this).
if command -v flock >/dev/null; then
    exec 9>"$CACHE/.lock"
    flock 9
fi

# The venv's own interpreter is asked (fast; a pyenv shim is not): a venv whose base Python went
# away fails here and so no longer matches.
key() {
    {
        # Contents only: the same pins in another checkout (path) are the same install.
        sha256sum <"$PY_DIR/requirements.txt"
        sha256sum <"$TS_DIR/package.json"
        if [[ -f "$TS_DIR/package-lock.json" ]]; then sha256sum <"$TS_DIR/package-lock.json"; fi
        echo "$PYTHON"
        "$VENV/bin/python" -c 'import sys; print(sys.version)' 2>/dev/null || echo "no venv"
        node --version
    } | sha256sum | cut -d' ' -f1
}

# Creates venv $1 with the exact pins of requirements file $2 (replacing what was there).
# A venv without its own pip is much faster to create; the base Python's pip (>= 22.3) can
# install into it with --python. Otherwise fall back to a venv with pip.
make_venv() {
    local venv="$1" req="$2"
    command -v "$PYTHON" >/dev/null || die "$PYTHON not found"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || die "$PYTHON is older than 3.10 (mcp needs >= 3.10)"
    log "creating Python venv at ${venv#"$ROOT"/} with $("$PYTHON" --version 2>&1)"
    rm -rf "$venv"
    local pip_args=(install --quiet --disable-pip-version-check --no-input -r "$req")
    local pybin
    pybin="$("$PYTHON" -c 'import sys; print(sys.executable)')"
    log "pip install -r ${req#"$ROOT"/}"
    if "$pybin" -m pip --python "$pybin" --version >/dev/null 2>&1; then
        "$pybin" -m venv --without-pip "$venv"
        "$pybin" -m pip --python "$venv/bin/python" "${pip_args[@]}" 1>&2
    else
        "$pybin" -m venv "$venv"
        "$venv/bin/python" -m pip "${pip_args[@]}" 1>&2
    fi
}

# The old-SDK venv (tests/peers/python-mcp1), under its own stamp.
key_mcp1() {
    {
        sha256sum <"$PY_MCP1_DIR/requirements.txt" # content only: worktrees may share .cache
        echo "$PYTHON"
        "$VENV_MCP1/bin/python" -c 'import sys; print(sys.version)' 2>/dev/null || echo "no venv"
    } | sha256sum | cut -d' ' -f1
}
if [[ "${PEERS_FORCE:-0}" == 1 || ! -f "$STAMP_MCP1" || "$(cat "$STAMP_MCP1")" != "$(key_mcp1)" ]]; then
    rm -f "$STAMP_MCP1"
    make_venv "$VENV_MCP1" "$PY_MCP1_DIR/requirements.txt"
    "$VENV_MCP1/bin/python" -c 'import mcp.server.fastmcp, mcp.server.streamable_http' \
        || die "the venv-mcp1 cannot import the mcp 1.x SDK"
    key_mcp1 >"$STAMP_MCP1"
fi

# The TypeScript SDK v2 client (tests/peers/ts-v2: `@modelcontextprotocol/client`, the first
# TypeScript SDK with MCP 2026-07-28), installed once per content key under .cache (so worktrees
# and checkouts with the same pins share it, and other pins never overwrite it) and linked in
# as tests/peers/ts-v2/node_modules.
TS2_DIR="$ROOT/tests/peers/ts-v2"
key_ts2() {
    { sha256sum <"$TS2_DIR/package.json"; sha256sum <"$TS2_DIR/package-lock.json"; node --version; } |
        sha256sum | cut -c1-16
}
TS2_HOME="$CACHE/ts-v2-$(key_ts2)"
if [[ "${PEERS_FORCE:-0}" == 1 || ! -f "$TS2_HOME/.installed" ]]; then
    command -v npm >/dev/null || die "npm not found"
    log "npm ci for tests/peers/ts-v2 into ${TS2_HOME#"$ROOT"/}"
    rm -rf "$TS2_HOME"
    mkdir -p "$TS2_HOME"
    cp "$TS2_DIR/package.json" "$TS2_DIR/package-lock.json" "$TS2_HOME/"
    (cd "$TS2_HOME" && npm ci --no-audit --no-fund --loglevel=error 1>&2)
    touch "$TS2_HOME/.installed"
fi
if [[ "$(readlink "$TS2_DIR/node_modules" 2>/dev/null)" != "$TS2_HOME/node_modules" ]]; then
    rm -rf "$TS2_DIR/node_modules"
    ln -s "$TS2_HOME/node_modules" "$TS2_DIR/node_modules"
fi
(cd "$TS2_DIR" && node -e "import('@modelcontextprotocol/client')") ||
    die "node cannot import @modelcontextprotocol/client (tests/peers/ts-v2)"

installed() {
    [[ -f "$STAMP" && "$(cat "$STAMP")" == "$(key)" ]] &&
        [[ -x "$VENV/bin/python" ]] &&
        [[ -f "$TS_DIR/node_modules/@modelcontextprotocol/sdk/package.json" ]]
}

if [[ "${PEERS_FORCE:-0}" != 1 ]] && installed; then
    log "already installed ($(basename "$VENV"), node_modules up to date)"
    echo "peers ready"
    exit 0
fi

rm -f "$STAMP"
command -v npm >/dev/null || die "npm not found"
make_venv "$VENV" "$PY_DIR/requirements.txt"
"$VENV/bin/python" -c 'import mcp.server.mcpserver, mcp.client.streamable_http' \
    || die "the venv cannot import the mcp SDK"

cd "$TS_DIR"
if [[ -f package-lock.json ]]; then
    log "npm ci in tests/peers/ts"
    npm ci --no-audit --no-fund --loglevel=error 1>&2
else
    log "npm install in tests/peers/ts (no package-lock.json yet: creating it)"
    npm install --no-audit --no-fund --loglevel=error 1>&2
fi
node -e "import('@modelcontextprotocol/sdk/server/mcp.js')" || die "node cannot import @modelcontextprotocol/sdk"

key >"$STAMP"
log "done"
echo "peers ready"
