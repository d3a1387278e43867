#!/usr/bin/env bash
# Install the official-SDK test peers (tests/peers/): a Python venv at .cache/peers/venv with the
# exact pins of tests/peers/python/requirements.txt, and tests/peers/ts/node_modules from
# package-lock.json (npm ci). Idempotent: a stamp keyed by the pin files and tool versions makes a
# repeat run a no-op. Progress goes to stderr; on success stdout gets exactly "peers ready".
#
# Env: PEERS_PYTHON (default python3, needs >= 3.10), PEERS_FORCE=1 to reinstall.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$ROOT/.cache/peers"
VENV="$CACHE/venv"
STAMP="$CACHE/stamp"
PY_DIR="$ROOT/tests/peers/python"
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
command -v "$PYTHON" >/dev/null || die "$PYTHON not found"
command -v npm >/dev/null || die "npm not found"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || die "$PYTHON is older than 3.10 (mcp 2.x needs >= 3.10)"

log "creating Python venv at ${VENV#"$ROOT"/} with $("$PYTHON" --version 2>&1)"
rm -rf "$VENV"
PIP_ARGS=(install --quiet --disable-pip-version-check --no-input -r "$PY_DIR/requirements.txt")
# A venv without its own pip is much faster to create; the base Python's pip (>= 22.3) can
# install into it with --python. Otherwise fall back to a venv with pip.
PYBIN="$("$PYTHON" -c 'import sys; print(sys.executable)')"
if "$PYBIN" -m pip --python "$PYBIN" --version >/dev/null 2>&1; then
    "$PYBIN" -m venv --without-pip "$VENV"
    log "pip install -r tests/peers/python/requirements.txt"
    "$PYBIN" -m pip --python "$VENV/bin/python" "${PIP_ARGS[@]}" 1>&2
else
    "$PYBIN" -m venv "$VENV"
    log "pip install -r tests/peers/python/requirements.txt"
    "$VENV/bin/python" -m pip "${PIP_ARGS[@]}" 1>&2
fi
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
