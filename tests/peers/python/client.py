#!/usr/bin/env python3
"""Line-oriented MCP client driver for vmcp tests, on the official Python SDK (`mcp` 2.x).

    client.py --url http://127.0.0.1:PORT/mcp [--header "Name: value"]... [--timeout-ms 30000]

Reads one JSON command per line on stdin and writes exactly one JSON result line per command on
stdout: {"ok": true, "result": ...} or {"ok": false, "error": "...", "status": <HTTP status|null>}.
See tests/peers/README.md for the commands. Logs go to stderr.

`initialize` uses the low-level `ClientSession` (always the `initialize` handshake); `connect`
uses the SDK's high-level `Client` in its default mode (`mode="auto"`: it probes
`server/discover` and speaks the stateless 2026-07-28 revision when the server offers it, else
falls back to `initialize`). Both run over the SDK's `streamable_http_client`, with an httpx2
client of our own (the SDK's documented way to set headers). Two things the SDK makes hard are
handled through that client:

* Header changes (`set_header`, e.g. a refreshed token): the httpx2 client's default headers are
  mutable and merged into every request the transport makes, so the next request carries the new
  value while the transport keeps its Mcp-Session-Id.
* Surviving a dead server: in mcp 2.3.0 a connection error on a POST (e.g. ConnectError) escapes
  the transport's task group and tears the whole `streamable_http_client` context down, taking the
  session with it. `_SurvivingTransport` turns such errors into a synthetic 503 response, which the
  SDK resolves as a JSON-RPC error for that one request only; the driver reports the real cause.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

import anyio
import httpx2
from mcp.client.client import Client
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp import types
from mcp.types import Implementation

SYNTHETIC_HEADER = "x-peer-driver-transport-error"
SYNTHETIC_STATUS = 503


class _SurvivingTransport(httpx2.AsyncBaseTransport):
    """Wraps the real httpx2 transport; a transport-level failure becomes a synthetic 503."""

    def __init__(self, driver: Driver) -> None:
        self._inner = httpx2.AsyncHTTPTransport()
        self._driver = driver

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        try:
            response = await self._inner.handle_async_request(request)
        except httpx2.TransportError as exc:
            message = f"{type(exc).__name__}: {exc}"
            self._driver.note_transport_error(request.method, message)
            return httpx2.Response(
                SYNTHETIC_STATUS, headers={SYNTHETIC_HEADER: "1"}, content=message.encode(), request=request
            )
        self._driver.note_response(request.method, response.status_code, response.headers)
        if request.method == "POST":
            self._driver.note_post(request, response)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


class CommandError(Exception):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Driver:
    def __init__(self, url: str, headers: dict[str, str], timeout_s: float) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.http = httpx2.AsyncClient(
            headers=headers,
            timeout=httpx2.Timeout(30.0, read=300.0),  # the SDK's defaults (create_mcp_http_client)
            transport=_SurvivingTransport(self),
            trust_env=False,
        )
        self.session: ClientSession | None = None
        # The high-level `Client` after `connect` (None after `initialize`).
        self.client: Client | None = None
        # Every POST of this connection: {"method" (JSON-RPC), "mcpMethod" (header), "status"}.
        self.posts: list[dict[str, Any]] = []
        self.session_id: str | None = None
        self.sampling_reply: str | None = None
        self.elicit_reply: dict[str, Any] | None = None
        self.asked: list[dict[str, Any]] = []
        self._close: anyio.Event | None = None
        self._closed: anyio.Event | None = None
        self._conn_error: str | None = None
        # Per-command bookkeeping (commands run one at a time).
        self.post_error_status: int | None = None
        self.transport_error: str | None = None
        self.delete_status: int | None = None
        # Status of the standalone GET stream the SDK opens after `initialized` (None: none yet).
        self.get_status: int | None = None
        self._get_seen = anyio.Event()
        # Server notifications received and not yet consumed by wait_notification.
        self.notifications: list[dict[str, Any]] = []
        self.all_notifications: list[str] = []
        self._notified = anyio.Event()

    # -- bookkeeping hooks -------------------------------------------------------------------
    def note_response(self, method: str, status: int, headers: httpx2.Headers) -> None:
        if method == "POST":
            if headers.get("mcp-session-id"):
                self.session_id = headers["mcp-session-id"]
            if status >= 400:
                self.post_error_status = status
        elif method == "DELETE":
            self.delete_status = status
        elif method == "GET":
            self.get_status = status
            self._get_seen.set()

    def note_post(self, request: httpx2.Request, response: httpx2.Response) -> None:
        try:
            method = json.loads(request.content).get("method")
        except (ValueError, AttributeError, TypeError):
            method = None
        self.posts.append(
            {"method": method, "mcpMethod": request.headers.get("mcp-method"), "status": response.status_code}
        )

    def note_transport_error(self, method: str, message: str) -> None:
        if method == "POST":
            self.transport_error = message
        elif method == "DELETE":
            self.transport_error = message
            self.delete_status = None

    async def on_message(self, message: Any) -> None:
        if isinstance(message, Exception):
            print(f"[client] transport exception: {message!r}", file=sys.stderr)
            return
        method = getattr(message, "method", None)
        if method == "notifications/progress":
            return  # delivered to the call's progress callback (the TS Client does not surface these either)
        params = getattr(message, "params", None)
        entry = {
            "method": method,
            "params": params.model_dump(by_alias=True, mode="json", exclude_none=True) if params is not None else None,
        }
        self.notifications.append(entry)
        self.all_notifications.append(str(method))
        self._notified.set()

    # -- connection ----------------------------------------------------------------------------
    async def _run_connection(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        close = anyio.Event()
        closed = anyio.Event()
        self._close, self._closed = close, closed
        try:
            # terminate_on_close=True: closing the connection is how the SDK sends DELETE.
            async with streamable_http_client(self.url, http_client=self.http, terminate_on_close=True) as (r, w):
                async with ClientSession(
                    r,
                    w,
                    message_handler=self.on_message,
                    client_info=Implementation(name="vmcp-peer-python-client", version="1.0.0"),
                    **self._callbacks(),
                ) as session:
                    self.session = session
                    task_status.started()
                    await close.wait()
        except Exception as exc:  # noqa: BLE001 - reported on the next command
            self._conn_error = f"connection ended: {exc!r}"
            print(f"[client] {self._conn_error}", file=sys.stderr)
        finally:
            self.session = None
            closed.set()

    async def _run_client(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        """The high-level `Client` in its default mode (the SDK's `mode="auto"`)."""
        close = anyio.Event()
        closed = anyio.Event()
        self._close, self._closed = close, closed
        started = False
        try:
            transport = streamable_http_client(self.url, http_client=self.http, terminate_on_close=True)
            async with Client(
                transport,
                message_handler=self.on_message,
                client_info=Implementation(name="vmcp-peer-python-client", version="1.0.0"),
            ) as client:
                self.client = client
                self.session = client.session
                started = True
                task_status.started()
                await close.wait()
        except Exception as exc:  # noqa: BLE001 - reported on the next command
            if not started:
                raise
            self._conn_error = f"connection ended: {exc!r}"
            print(f"[client] {self._conn_error}", file=sys.stderr)
        finally:
            self.client = None
            self.session = None
            closed.set()

    def _callbacks(self) -> dict[str, Any]:
        """Sampling / elicitation handlers when `initialize` asked for them (the client then
        declares those capabilities); each records the request it got in `self.asked`."""
        out: dict[str, Any] = {}
        if self.sampling_reply is not None:
            reply = self.sampling_reply

            async def on_sampling(context: Any, params: types.CreateMessageRequestParams) -> Any:
                self.asked.append({"method": "sampling/createMessage", "params": params.model_dump(by_alias=True, mode="json", exclude_none=True)})
                return types.CreateMessageResult(
                    role="assistant", content=types.TextContent(type="text", text=reply), model="peer-model"
                )

            out["sampling_callback"] = on_sampling
        if self.elicit_reply is not None:
            answer = self.elicit_reply

            async def on_elicit(context: Any, params: types.ElicitRequestParams) -> Any:
                self.asked.append({"method": "elicitation/create", "params": params.model_dump(by_alias=True, mode="json", exclude_none=True)})
                return types.ElicitResult(action=answer.get("action", "accept"), content=answer.get("content"))

            out["elicitation_callback"] = on_elicit
        return out

    async def connect(self, tg: anyio.abc.TaskGroup) -> None:
        await self.disconnect()
        self.session_id = None
        self.posts = []
        self._conn_error = None
        await tg.start(self._run_connection)

    async def disconnect(self) -> None:
        if self._close is not None and self._closed is not None:
            self._close.set()
            with anyio.move_on_after(10):
                await self._closed.wait()
        self._close = self._closed = None
        self.session = None

    def need_session(self) -> ClientSession:
        if self.session is None:
            raise CommandError(self._conn_error or "not connected: send initialize first")
        return self.session

    def api(self) -> Any:
        """What MCP calls go through: the `Client` after `connect`, else the `ClientSession`."""
        if self.client is not None:
            return self.client
        return self.need_session()

    # -- commands ------------------------------------------------------------------------------
    async def run(self, cmd: dict[str, Any], tg: anyio.abc.TaskGroup) -> Any:
        op = cmd.get("op")
        handler: Callable[..., Any] | None = getattr(self, f"op_{op}", None) if isinstance(op, str) else None
        if handler is None:
            raise CommandError(f"unknown op: {json.dumps(op)}")
        self.post_error_status = None
        self.transport_error = None
        if op in ("initialize", "connect"):
            return await handler(cmd, tg)
        return await handler(cmd)

    async def op_initialize(self, cmd: dict[str, Any], tg: anyio.abc.TaskGroup) -> Any:
        # {"sampling_reply": TEXT} / {"elicit_reply": {"action": ..., "content": {...}}} make the
        # client declare sampling / elicitation and answer with these.
        self.sampling_reply = cmd.get("sampling_reply")
        self.elicit_reply = cmd.get("elicit_reply")
        await self.connect(tg)
        self.get_status = None
        self._get_seen = anyio.Event()
        try:
            result = await self.need_session().initialize()
        except BaseException as exc:
            await self.disconnect()
            self._conn_error = f"not connected: initialize failed ({self.transport_error or exc})"
            raise
        # The SDK opens the GET stream in the background once `initialized` is sent; wait (briefly)
        # for its response so a notification sent right after this command is not lost.
        with anyio.move_on_after(float(cmd.get("get_stream_wait_ms", 2000)) / 1000):
            await self._get_seen.wait()
        out = result.model_dump(by_alias=True, mode="json", exclude_none=True)
        out["sessionId"] = self.session_id
        out["getStreamStatus"] = self.get_status
        return out

    async def op_connect(self, cmd: dict[str, Any], tg: anyio.abc.TaskGroup) -> Any:
        """Connects with the SDK's `Client` in its default mode; reports what it negotiated and
        the POSTs it took (the `server/discover` probe, or the fallback `initialize`)."""
        await self.disconnect()
        self.session_id = None
        self._conn_error = None
        self.posts = []
        try:
            await tg.start(self._run_client)
        except BaseException as exc:
            self._conn_error = f"not connected: connect failed ({self.transport_error or exc})"
            raise
        client = self.client
        if client is None:
            raise CommandError(self._conn_error or "not connected")
        info = client.server_info
        return {
            "protocolVersion": client.protocol_version,
            "serverInfo": info.model_dump(by_alias=True, mode="json", exclude_none=True) if info else None,
            "capabilities": client.server_capabilities.model_dump(by_alias=True, mode="json", exclude_none=True),
            "sessionId": self.session_id,
            "posts": list(self.posts),
        }

    async def op_posts(self, cmd: dict[str, Any]) -> Any:
        """The POSTs of this connection so far."""
        return list(self.posts)

    async def op_asked(self, cmd: dict[str, Any]) -> Any:
        """The sampling / elicitation requests this client was asked so far."""
        return self.asked

    async def op_session_id(self, cmd: dict[str, Any]) -> Any:
        return {"sessionId": self.session_id}

    async def op_list_tools(self, cmd: dict[str, Any]) -> Any:
        result = await self.api().list_tools()
        return [{"name": t.name, "description": t.description} for t in result.tools]

    async def op_call_tool(self, cmd: dict[str, Any]) -> Any:
        result = await self.api().call_tool(cmd["name"], cmd.get("arguments") or {})
        return _tool_result(result)

    async def op_call_tool_progress(self, cmd: dict[str, Any]) -> Any:
        progress: list[dict[str, Any]] = []

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            progress.append({"progress": _num(value), "total": _num(total), "message": message})

        result = await self.api().call_tool(
            cmd["name"], cmd.get("arguments") or {}, progress_callback=on_progress
        )
        out = _tool_result(result)
        out["progress"] = progress
        return out

    async def op_list_resources(self, cmd: dict[str, Any]) -> Any:
        result = await self.api().list_resources()
        return [r.model_dump(by_alias=True, mode="json", exclude_none=True) for r in result.resources]

    async def op_read_resource(self, cmd: dict[str, Any]) -> Any:
        result = await self.api().read_resource(cmd["uri"])
        contents = [c.model_dump(by_alias=True, mode="json", exclude_none=True) for c in result.contents]
        return {"contents": contents, "text": "\n".join(c["text"] for c in contents if "text" in c)}

    async def op_list_prompts(self, cmd: dict[str, Any]) -> Any:
        result = await self.api().list_prompts()
        return [p.model_dump(by_alias=True, mode="json", exclude_none=True) for p in result.prompts]

    async def op_get_prompt(self, cmd: dict[str, Any]) -> Any:
        result = await self.api().get_prompt(cmd["name"], cmd.get("arguments") or {})
        messages = []
        for m in result.messages:
            content = m.content.model_dump(by_alias=True, mode="json", exclude_none=True)
            messages.append({"role": m.role, "text": content.get("text"), "content": content})
        return {"description": result.description, "messages": messages}

    async def op_wait_notification(self, cmd: dict[str, Any]) -> Any:
        method = cmd.get("method", "notifications/tools/list_changed")
        timeout_s = float(cmd.get("timeout_ms", 5000)) / 1000
        with anyio.move_on_after(timeout_s):
            while True:
                matched = [n for n in self.notifications if n["method"] == method]
                if matched:
                    self.notifications = [n for n in self.notifications if n["method"] != method]
                    return {"method": method, "count": len(matched), "params": matched[0]["params"]}
                self._notified = anyio.Event()
                await self._notified.wait()
        raise CommandError(f"timeout waiting for {method}")

    async def op_notifications(self, cmd: dict[str, Any]) -> Any:
        return {"received": list(self.all_notifications)}

    async def op_set_header(self, cmd: dict[str, Any]) -> Any:
        name, value = cmd["name"], cmd.get("value")
        if value is None:
            self.http.headers.pop(name, None)
        else:
            self.http.headers[name] = value
        return {"name": name, "value": value}

    async def op_terminate(self, cmd: dict[str, Any]) -> Any:
        if self.session is None:
            raise CommandError(self._conn_error or "not connected")
        session_id = self.session_id
        self.delete_status = None
        await self.disconnect()  # leaving streamable_http_client sends DELETE (terminate_on_close)
        status = self.delete_status
        self._conn_error = "session terminated: send initialize to start a new one"
        if status is None:
            raise CommandError(self.transport_error or "no DELETE was sent")
        if not (200 <= status < 300 or status == 405):
            raise CommandError(f"DELETE answered {status}", status)
        return {"sessionId": session_id, "status": status}

    async def op_exit(self, cmd: dict[str, Any]) -> Any:
        return {}


def _num(value: float | None) -> float | int | None:
    """1.0 -> 1, so the JSON matches the TS driver's."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _tool_result(result: Any) -> dict[str, Any]:
    texts = [c.text for c in result.content if getattr(c, "type", None) == "text"]
    return {"isError": bool(result.is_error), "text": "\n".join(texts)}


def _write(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _parse_headers(values: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition(":")
        if not sep:
            raise SystemExit(f"bad --header {item!r}: expected 'Name: value'")
        headers[name.strip()] = value.strip()
    return headers


async def amain(args: argparse.Namespace) -> None:
    driver = Driver(args.url, _parse_headers(args.header), args.timeout_ms / 1000)
    async with driver.http, anyio.create_task_group() as tg:
        while True:
            line = await anyio.to_thread.run_sync(sys.stdin.readline)
            if not line:
                break
            line = line.strip()
            if not line:
                continue
            try:
                cmd = json.loads(line)
                if not isinstance(cmd, dict):
                    raise ValueError("command must be a JSON object")
            except ValueError as exc:
                _write({"ok": False, "error": f"bad command: {exc}", "status": None})
                continue
            reply: dict[str, Any]
            try:
                # Optional per-command "timeout_ms" (for wait_notification: how long to wait).
                backstop = float(cmd["timeout_ms"]) / 1000 if "timeout_ms" in cmd else driver.timeout_s
                if cmd.get("op") == "wait_notification":
                    backstop = float(cmd.get("timeout_ms", 5000)) / 1000 + 1
                with anyio.fail_after(backstop):
                    result = await driver.run(cmd, tg)
                reply = {"ok": True, "result": result}
            except TimeoutError:
                reply = {"ok": False, "error": "timeout", "status": driver.post_error_status}
            except CommandError as exc:
                reply = {"ok": False, "error": str(exc), "status": exc.status}
            except MCPError as exc:
                message = str(exc)
                status = driver.post_error_status
                if driver.transport_error is not None:
                    message, status = driver.transport_error, None
                reply = {"ok": False, "error": message, "status": status, "code": exc.code}
            except Exception as exc:  # noqa: BLE001 - one bad command must not end the driver
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "status": driver.post_error_status}
            if "id" in cmd:
                reply["id"] = cmd["id"]
            _write(reply)
            if cmd.get("op") == "exit":
                break
        with anyio.move_on_after(5):
            await driver.disconnect()
        tg.cancel_scope.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--header", action="append", default=[], help='"Name: value" (repeatable)')
    parser.add_argument("--timeout-ms", type=float, default=30000, help="per-command timeout")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    anyio.run(amain, args)


if __name__ == "__main__":
    main()
