#!/usr/bin/env python3
"""Test backend for vmcp built on an OLD official Python MCP SDK (`mcp` 1.12.4, `FastMCP`).

It stands for the backends still deployed on 1.x SDKs: they negotiate protocol revision
2025-06-18 at most and answer 400 to a request whose `MCP-Protocol-Version` they do not support
(e.g. 2025-11-25). See tests/peers/README.md.

    backend.py --port N --name NAME [--transport streamable-http] [--auth-log FILE]
               [--startup-delay-ms MS]

Streamable HTTP at /mcp, stateful (the SDK issues an Mcp-Session-Id; unknown id -> 404).
Prints `READY <port>` on stdout once it accepts connections; everything else goes to stderr.
Tool `echo(text)` -> `NAME:echo:<text>`. `--auth-log FILE`: one JSON line per HTTP request
received (also rejected ones): {"backend","time","http_method","path","method" (JSON-RPC method
or null),"id","protocol_version" (MCP-Protocol-Version or null),"session_id" (Mcp-Session-Id or
null),"authorization","headers"}. The flags are those of tests/peers/python/backend.py, so the
same harness starts either.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from typing import Any

import anyio
import uvicorn
from mcp.server.fastmcp import FastMCP


class RequestLog:
    """ASGI wrapper appending one JSON line per HTTP request; the POST body is replayed."""

    def __init__(self, app: Any, path: str | None, backend: str) -> None:
        self.app = app
        self.path = path
        self.backend = backend

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not self.path:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        buffered: list[dict[str, Any]] = []
        body = b""
        if scope["method"] == "POST":
            while True:
                message = await receive()
                buffered.append(message)
                if message["type"] != "http.request":
                    break
                body += message.get("body", b"")
                if not message.get("more_body", False):
                    break
        rpc: Any = None
        try:
            rpc = json.loads(body) if body else None
        except ValueError:
            pass
        if isinstance(rpc, list):
            rpc = rpc[0] if rpc else None
        if not isinstance(rpc, dict):
            rpc = {}
        entry = {
            "backend": self.backend,
            "time": time.time(),
            "http_method": scope["method"],
            "path": scope["path"],
            "method": rpc.get("method"),
            "id": rpc.get("id"),
            "protocol_version": headers.get("mcp-protocol-version"),
            "session_id": headers.get("mcp-session-id"),
            "authorization": headers.get("authorization"),
            "headers": headers,
        }
        with open(self.path, "a", encoding="utf-8") as log:
            log.write(json.dumps(entry) + "\n")

        async def replay() -> dict[str, Any]:
            if buffered:
                return buffered.pop(0)
            return await receive()

        await self.app(scope, replay, send)


def build_server(name: str) -> FastMCP:
    mcp = FastMCP(name=name, log_level="WARNING", streamable_http_path="/mcp")

    @mcp.tool(description="Echoes text, prefixed with the backend name.")
    def echo(text: str) -> str:
        return f"{name}:echo:{text}"

    return mcp


async def serve(args: argparse.Namespace) -> None:
    app = RequestLog(build_server(args.name).streamable_http_app(), args.auth_log, args.name)
    if args.startup_delay_ms > 0:
        await anyio.sleep(args.startup_delay_ms / 1000)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_config=None, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: server.serve(sockets=[sock]))
        while not server.started:
            if server.should_exit:
                return
            await anyio.sleep(0.01)
        sys.stdout.write(f"READY {port}\n")
        sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--name", required=True)
    parser.add_argument("--transport", choices=["streamable-http"], default="streamable-http")
    parser.add_argument("--auth-log", default=None)
    parser.add_argument("--startup-delay-ms", type=int, default=0)
    try:
        anyio.run(serve, parser.parse_args(sys.argv[1:]))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
