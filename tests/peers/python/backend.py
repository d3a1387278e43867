#!/usr/bin/env python3
"""Test backend for vmcp built on the official Python MCP SDK (`mcp` 2.x, `MCPServer`).

Behaves exactly like tests/peers/ts/backend.mjs; see tests/peers/README.md.

    backend.py --port N --name NAME [--transport streamable-http|sse|stdio]
               [--auth-log FILE] [--startup-delay-ms MS]

Prints `READY <port>` on stdout once it accepts connections; everything else goes to stderr.
Streamable HTTP is served at /mcp (stateful: the SDK issues an Mcp-Session-Id), the legacy
HTTP+SSE transport at GET /sse with messages POSTed to /messages/?session_id=...

The SDK's DNS-rebinding protection is left at its default for a 127.0.0.1 bind:
Host must be `127.0.0.1:<port>`, `localhost:<port>` or `[::1]:<port>` (a port is required,
any port matches), otherwise 421; Origin must be absent or `http://127.0.0.1:<port>`,
`http://localhost:<port>`, `http://[::1]:<port>`, otherwise 403.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from typing import Annotated, Any

import anyio
import uvicorn
from mcp.server import NotificationOptions
from mcp.server.mcpserver import Context, MCPServer
from mcp.types import CallToolResult, SamplingMessage, TextContent
from mcp.server.streamable_http import EventMessage, EventStore
from pydantic import BaseModel, Field


class MemoryEventStore(EventStore):
    """Events kept in memory so a closed SSE stream can be resumed with Last-Event-ID."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, Any]] = []  # (event id, stream id, message)

    async def store_event(self, stream_id: str, message: Any) -> str:
        event_id = f"{stream_id}:{len(self.events)}"
        self.events.append((event_id, stream_id, message))
        return event_id

    async def replay_events_after(self, last_event_id: str, send_callback: Any) -> str | None:
        ids = [e[0] for e in self.events]
        if last_event_id not in ids:
            return None
        stream_id = self.events[ids.index(last_event_id)][1]
        for event_id, sid, message in self.events[ids.index(last_event_id) + 1 :]:
            if sid == stream_id and message is not None:
                await send_callback(EventMessage(message, event_id))
        return stream_id


class Answer(BaseModel):
    """What `ask_user` asks the user for (elicitation)."""

    name: str

VERSION = "1.0.0"


class AuthLogMiddleware:
    """ASGI wrapper that appends one JSON line per HTTP request to a file.

    The POST body is read here (to find the JSON-RPC method) and replayed to the app unchanged.
    """

    def __init__(self, app: Any, path: str | None, backend: str, transport: str) -> None:
        self.app = app
        self.path = path
        self.backend = backend
        self.transport = transport

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not self.path:
            await self.app(scope, receive, send)
            return
        headers: dict[str, str] = {}
        for raw_key, raw_value in scope.get("headers", []):
            key = raw_key.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            headers[key] = f"{headers[key]}, {value}" if key in headers else value

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

        rpc_method, rpc_id = _rpc_method(body)
        query = scope.get("query_string", b"").decode("latin-1")
        entry = {
            "backend": self.backend,
            "transport": self.transport,
            "time": time.time(),
            "http_method": scope["method"],
            "path": scope["path"] + (f"?{query}" if query else ""),
            "method": rpc_method,
            "id": rpc_id,
            "authorization": headers.get("authorization"),
            "session_id": headers.get("mcp-session-id"),
            "headers": headers,
        }
        with open(self.path, "a", encoding="utf-8") as log:
            log.write(json.dumps(entry) + "\n")

        async def replay() -> dict[str, Any]:
            if buffered:
                return buffered.pop(0)
            return await receive()

        await self.app(scope, replay, send)


def _rpc_method(body: bytes) -> tuple[Any, Any]:
    """JSON-RPC method and id of a POST body (first element of a batch); (None, None) if none."""
    if not body:
        return None, None
    try:
        data = json.loads(body)
    except ValueError:
        return None, None
    if isinstance(data, list):
        data = data[0] if data else None
    if not isinstance(data, dict):
        return None, None
    return data.get("method"), data.get("id")


def build_server(backend: str) -> MCPServer:
    mcp = MCPServer(name=backend, version=VERSION, log_level="WARNING")

    # MCPServer advertises `listChanged: false` for tools/resources/prompts unless the low-level
    # initialization options say otherwise, and offers no public knob for it (its HTTP apps call
    # `create_initialization_options()` without arguments). The TypeScript McpServer advertises
    # `listChanged: true` for all three, and this backend does send tools/list_changed, so make
    # the Python peer say the same.
    lowlevel = mcp._lowlevel_server  # noqa: SLF001 - no public accessor in mcp 2.3.0
    original_options = lowlevel.create_initialization_options

    def create_initialization_options(notification_options=None, *args: Any, **kwargs: Any):
        options = notification_options or NotificationOptions(
            prompts_changed=True, resources_changed=True, tools_changed=True
        )
        return original_options(options, *args, **kwargs)

    lowlevel.create_initialization_options = create_initialization_options  # type: ignore[method-assign]

    # Live sessions (key: Mcp-Session-Id header, or the legacy transport's session_id query
    # parameter), so tools/list_changed reaches every connected client, like the TS peer.
    sessions: dict[str, Any] = {}

    async def track_sessions(ctx: Any, call_next: Any) -> Any:
        key = _session_key(ctx.request)
        if key is not None:
            sessions[key] = ctx.session
        return await call_next(ctx)

    mcp.middleware.append(track_sessions)

    @mcp.tool(description="Echo the text back, prefixed with the backend name.", structured_output=False)
    def echo(text: str) -> str:
        return f"{backend}:echo:{text}"

    @mcp.tool(description="Search (present on every backend: a deliberate name conflict).", structured_output=False)
    def search(query: str) -> str:
        return f"{backend}:search:{query}"

    @mcp.tool(description="Return the Authorization header this backend received, or 'none'.", structured_output=False)
    def whoami(ctx: Context) -> str:
        headers = ctx.headers
        value = headers.get("authorization") if headers is not None else None
        return value if value else "none"

    @mcp.tool(
        description="Send `steps` progress notifications, delay_ms apart, then finish.", structured_output=False
    )
    async def slow(steps: int, delay_ms: int, ctx: Context) -> str:
        for i in range(1, steps + 1):
            # A no-op when the request carried no progressToken.
            await ctx.report_progress(i, steps)
            # Sleep after each step, the last one too: the TS Client drops a progress notification
            # that reaches it in the same read as the response (see tests/peers/README.md).
            await anyio.sleep(delay_ms / 1000)
        return f"{backend}:slow:done"

    @mcp.tool(
        description="Register a new no-argument tool and send notifications/tools/list_changed.",
        structured_output=False,
    )
    async def add_tool(name: str, ctx: Context) -> str:
        new_name = name
        if all(tool.name != new_name for tool in await mcp.list_tools()):

            def dynamic() -> str:
                return f"{backend}:{new_name}"

            mcp.add_tool(
                dynamic, name=new_name, description=f"Tool added at run time on {backend}.", structured_output=False
            )
        caller = _session_key(ctx.request_context.request)
        if caller is not None:
            sessions[caller] = ctx.session
        for key, session in list(sessions.items()):
            try:
                with anyio.fail_after(2):
                    await session.send_tool_list_changed()
            except Exception as exc:  # noqa: BLE001 - a gone session must not fail the call
                print(f"[{backend}] list_changed to session {key} failed: {exc!r}", file=sys.stderr)
                sessions.pop(key, None)
        return "added"

    @mcp.tool(description="Always fails with a tool error.", structured_output=False)
    def fail() -> CallToolResult:
        # Raising ToolError would be reported as "Error executing tool fail: <message>";
        # a returned CallToolResult passes through unchanged, so the text is exactly "<NAME>:fail".
        return CallToolResult(content=[TextContent(type="text", text=f"{backend}:fail")], is_error=True)

    @mcp.tool(description="Ask the client's model (sampling/createMessage) and return its text.", structured_output=False)
    async def ask_model(prompt: str, ctx: Context, standalone: bool = False) -> str:
        # standalone: asked on the session's GET stream instead of this call's stream.
        result = await ctx.session.create_message(
            [SamplingMessage(role="user", content=TextContent(type="text", text=prompt))],
            max_tokens=64,
            related_request_id=None if standalone else ctx.request_id,
        )
        content = result.content
        text = getattr(content, "text", None) or str(content)
        return f"{backend}:model:{text}"

    @mcp.tool(description="Ask the user for a name (elicitation/create) and return the outcome.", structured_output=False)
    async def ask_user(question: str, ctx: Context) -> str:
        result = await ctx.elicit(question, schema=Answer)
        name = result.data.name if getattr(result, "data", None) is not None else "-"
        return f"{backend}:user:{result.action}:{name}"

    @mcp.tool(
        description="Close this call's SSE stream, then answer on the resumed stream (needs --resumable).",
        structured_output=False,
    )
    async def polled(delay_ms: int, ctx: Context) -> str:
        await ctx.close_sse_stream()
        await anyio.sleep(delay_ms / 1000)
        return f"{backend}:polled"

    @mcp.tool(
        description="Echo the region; its argument is mirrored in the Mcp-Param-Region header (2026-07-28).",
        structured_output=False,
    )
    def regional(region: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Region"})]) -> str:
        return f"{backend}:regional:{region}"

    @mcp.tool(name=f"{backend}_only", description=f"A tool only {backend} has.", structured_output=False)
    def only() -> str:
        return f"{backend}:only"

    @mcp.resource(
        f"info://{backend}", name="info", description=f"Information about {backend}.", mime_type="text/plain"
    )
    def info() -> str:
        return f"{backend} info"

    # A template with two variables in one path segment (the shape that made the gateway's
    # old URI-template matcher quadratic).
    @mcp.resource(
        "db://{table}.{column}", name="cell", description=f"A cell of {backend}'s database.", mime_type="text/plain"
    )
    def cell(table: str, column: str) -> str:
        return f"{backend}:db:{table}.{column}"

    @mcp.prompt(name="greet", description="Greet someone.")
    def greet(who: str) -> str:
        return f"Hello {who} from {backend}"

    return mcp


def _session_key(request: Any) -> str | None:
    if request is None:
        # stdio: one process, one session.
        return "stdio"
    headers = getattr(request, "headers", None)
    if headers is not None and headers.get("mcp-session-id"):
        return str(headers.get("mcp-session-id"))
    query = getattr(request, "query_params", None)
    if query is not None and query.get("session_id"):
        return str(query.get("session_id"))
    return None


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--name", required=True)
    parser.add_argument("--transport", choices=["streamable-http", "sse", "stdio"], default="streamable-http")
    parser.add_argument("--auth-log", default=None)
    parser.add_argument("--resumable", action="store_true", help="keep SSE events for Last-Event-ID resumption")
    parser.add_argument(
        "--startup-delay-ms", type=int, default=int(os.environ.get("PEER_STARTUP_DELAY_MS", "0") or 0)
    )
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    mcp = build_server(args.name)
    if args.transport == "stdio":
        # stdio: MCP messages on stdin/stdout (for the gateway's `bridge` mode); no READY line.
        await mcp.run_stdio_async()
        return
    if args.transport == "sse":
        app = mcp.sse_app(sse_path="/sse", message_path="/messages/", host="127.0.0.1")
    else:
        resumable = {"event_store": MemoryEventStore(), "retry_interval": 200} if args.resumable else {}
        app = mcp.streamable_http_app(streamable_http_path="/mcp", host="127.0.0.1", **resumable)
    app = AuthLogMiddleware(app, args.auth_log, args.name, args.transport)

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
    args = parse_args(sys.argv[1:])
    try:
        anyio.run(serve, args)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
