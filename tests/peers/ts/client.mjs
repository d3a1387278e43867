#!/usr/bin/env node
// Line-oriented MCP client driver for vmcp tests, on the official TypeScript MCP SDK
// (`Client` + `StreamableHTTPClientTransport`). Same protocol as tests/peers/python/client.py;
// see tests/peers/README.md.
//
//   node client.mjs --url http://127.0.0.1:PORT/mcp [--header "Name: value"]... [--timeout-ms 30000]
//
// One JSON command per stdin line -> exactly one JSON result line on stdout:
// {"ok":true,"result":...} or {"ok":false,"error":"...","status":<HTTP status|null>}. Logs: stderr.
//
// Headers: the transport's supported `fetch` option is a wrapper that applies the current header
// map to every request (POST, the GET stream, DELETE), so `set_header` (e.g. a refreshed token)
// takes effect on the next request while the transport keeps its Mcp-Session-Id. The wrapper
// also records HTTP statuses so a failed command can report one. A failed request (connection
// refused, 404, ...) only rejects that request's promise; the Client stays usable.
import readline from 'node:readline';
import { parseArgs } from 'node:util';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { CreateMessageRequestSchema, ElicitRequestSchema } from '@modelcontextprotocol/sdk/types.js';

const { values: args } = parseArgs({
    options: {
        url: { type: 'string' },
        header: { type: 'string', multiple: true, default: [] },
        'timeout-ms': { type: 'string', default: '30000' }
    }
});
if (!args.url) {
    process.stderr.write('usage: client.mjs --url URL [--header "Name: value"]... [--timeout-ms MS]\n');
    process.exit(2);
}
const TIMEOUT_MS = Number(args['timeout-ms']);
const log = (...parts) => process.stderr.write(`[client] ${parts.join(' ')}\n`);
process.on('unhandledRejection', err => log('unhandled rejection:', err?.stack || String(err)));

const headers = new Map(); // lower-cased name -> [name as given, value]
for (const h of args.header) {
    const i = h.indexOf(':');
    if (i < 0) {
        process.stderr.write(`bad --header ${JSON.stringify(h)}: expected "Name: value"\n`);
        process.exit(2);
    }
    headers.set(h.slice(0, i).trim().toLowerCase(), [h.slice(0, i).trim(), h.slice(i + 1).trim()]);
}

// Per-command bookkeeping (commands run one at a time).
let postErrorStatus = null;
let deleteStatus = null;
let transportError = null;
// Status of the standalone GET stream the SDK opens after `initialized` got its 202 (null: none yet).
let getStatus = null;
let onGetSeen = null;

async function wrappedFetch(url, init = {}) {
    const h = new Headers(init.headers);
    for (const [name, value] of headers.values()) h.set(name, value);
    const method = (init.method || 'GET').toUpperCase();
    let response;
    try {
        response = await fetch(url, { ...init, headers: h });
    } catch (err) {
        if (method !== 'GET') transportError = `${err?.message || err}${err?.cause ? `: ${err.cause.message || err.cause}` : ''}`;
        throw err;
    }
    if (method === 'POST' && response.status >= 400) postErrorStatus = response.status;
    if (method === 'DELETE') deleteStatus = response.status;
    if (method === 'GET') {
        getStatus = response.status;
        if (onGetSeen) onGetSeen();
    }
    return response;
}

let client = null;
let transport = null;
let connError = null;
const asked = []; // sampling / elicitation requests this client was asked
let notifications = []; // not yet consumed by wait_notification
const allNotifications = [];
let notify = null;

function onNotification(n) {
    notifications.push({ method: n.method, params: n.params ?? null });
    allNotifications.push(n.method);
    if (notify) notify();
}

class CommandError extends Error {
    constructor(message, status = null) {
        super(message);
        this.status = status;
    }
}

function needClient() {
    if (!client) throw new CommandError(connError || 'not connected: send initialize first');
    return client;
}

async function disconnect() {
    if (client) {
        const c = client;
        client = null;
        transport = null;
        await c.close().catch(err => log('close failed:', err?.message || err));
    }
}

function toolResult(result) {
    const texts = (result.content || []).filter(c => c.type === 'text').map(c => c.text);
    return { isError: Boolean(result.isError), text: texts.join('\n') };
}

// Optional per-command "timeout_ms" (for wait_notification: how long to wait).
const reqOpts = cmd => ({ timeout: Number(cmd?.timeout_ms ?? TIMEOUT_MS) });

const ops = {
    async initialize(cmd) {
        await disconnect();
        connError = null;
        const t = new StreamableHTTPClientTransport(new URL(args.url), { fetch: wrappedFetch });
        // {"sampling_reply": TEXT} / {"elicit_reply": {"action", "content"}} make the client
        // declare sampling / elicitation and answer with these.
        const capabilities = {};
        if (cmd.sampling_reply !== undefined) capabilities.sampling = {};
        if (cmd.elicit_reply !== undefined) capabilities.elicitation = {};
        const c = new Client({ name: 'vmcp-peer-ts-client', version: '1.0.0' }, { capabilities });
        if (cmd.sampling_reply !== undefined) {
            c.setRequestHandler(CreateMessageRequestSchema, async req => {
                asked.push({ method: req.method, params: req.params });
                return { role: 'assistant', content: { type: 'text', text: cmd.sampling_reply }, model: 'peer-model' };
            });
        }
        if (cmd.elicit_reply !== undefined) {
            c.setRequestHandler(ElicitRequestSchema, async req => {
                asked.push({ method: req.method, params: req.params });
                return { action: cmd.elicit_reply.action ?? 'accept', content: cmd.elicit_reply.content };
            });
        }
        c.fallbackNotificationHandler = async n => onNotification(n);
        c.onerror = err => log('transport error:', err?.message || err);
        getStatus = null;
        const getSeen = new Promise(resolve => { onGetSeen = resolve; });
        await c.connect(t, reqOpts(cmd)); // on failure the SDK closes the client itself
        client = c;
        transport = t;
        // The SDK opens the GET stream in the background; wait (briefly) for its response so a
        // notification sent right after this command is not lost.
        await Promise.race([getSeen, new Promise(resolve => setTimeout(resolve, Number(cmd.get_stream_wait_ms ?? 2000)))]);
        onGetSeen = null;
        return {
            protocolVersion: t.protocolVersion,
            capabilities: c.getServerCapabilities(),
            serverInfo: c.getServerVersion(),
            instructions: c.getInstructions(),
            sessionId: t.sessionId,
            getStreamStatus: getStatus
        };
    },
    async asked() {
        return asked;
    },
    async session_id() {
        return { sessionId: transport?.sessionId ?? null };
    },
    async list_tools(cmd) {
        const r = await needClient().listTools(undefined, reqOpts(cmd));
        return r.tools.map(t => ({ name: t.name, description: t.description }));
    },
    async call_tool(cmd) {
        const r = await needClient().callTool({ name: cmd.name, arguments: cmd.arguments || {} }, undefined, reqOpts(cmd));
        return toolResult(r);
    },
    async call_tool_progress(cmd) {
        const progress = [];
        const r = await needClient().callTool({ name: cmd.name, arguments: cmd.arguments || {} }, undefined, {
            ...reqOpts(cmd),
            onprogress: p => progress.push({ progress: p.progress, total: p.total ?? null, message: p.message ?? null })
        });
        return { ...toolResult(r), progress };
    },
    async list_resources(cmd) {
        return (await needClient().listResources(undefined, reqOpts(cmd))).resources;
    },
    async read_resource(cmd) {
        const r = await needClient().readResource({ uri: cmd.uri }, reqOpts(cmd));
        return { contents: r.contents, text: r.contents.filter(c => 'text' in c).map(c => c.text).join('\n') };
    },
    async list_prompts(cmd) {
        return (await needClient().listPrompts(undefined, reqOpts(cmd))).prompts;
    },
    async get_prompt(cmd) {
        const r = await needClient().getPrompt({ name: cmd.name, arguments: cmd.arguments || {} }, reqOpts(cmd));
        return {
            description: r.description ?? null,
            messages: r.messages.map(m => ({ role: m.role, text: m.content?.text ?? null, content: m.content }))
        };
    },
    async wait_notification(cmd) {
        const method = cmd.method || 'notifications/tools/list_changed';
        const deadline = Date.now() + Number(cmd.timeout_ms ?? 5000);
        for (;;) {
            const matched = notifications.filter(n => n.method === method);
            if (matched.length) {
                notifications = notifications.filter(n => n.method !== method);
                return { method, count: matched.length, params: matched[0].params };
            }
            const left = deadline - Date.now();
            if (left <= 0) throw new CommandError(`timeout waiting for ${method}`);
            await new Promise(resolve => {
                const timer = setTimeout(resolve, left);
                notify = () => { clearTimeout(timer); resolve(); };
            });
            notify = null;
        }
    },
    async notifications() {
        return { received: [...allNotifications] };
    },
    async set_header(cmd) {
        if (cmd.value === null || cmd.value === undefined) headers.delete(String(cmd.name).toLowerCase());
        else headers.set(String(cmd.name).toLowerCase(), [cmd.name, cmd.value]);
        return { name: cmd.name, value: cmd.value ?? null };
    },
    async terminate() {
        needClient();
        const sessionId = transport.sessionId ?? null;
        deleteStatus = null;
        try {
            await transport.terminateSession(); // sends DELETE; the SDK accepts 2xx and 405
        } catch (err) {
            throw new CommandError(deleteStatus !== null ? `DELETE answered ${deleteStatus}` : (transportError || String(err?.message || err)), deleteStatus);
        }
        await disconnect();
        connError = 'session terminated: send initialize to start a new one';
        return { sessionId, status: deleteStatus };
    },
    async exit() {
        return {};
    }
};

function errorReply(err) {
    if (err instanceof CommandError) return { ok: false, error: err.message, status: err.status };
    let status = postErrorStatus;
    // StreamableHTTPError carries the HTTP status in `code`; McpError carries a JSON-RPC code.
    if (err?.constructor?.name === 'StreamableHTTPError' && typeof err.code === 'number' && err.code > 0) status = err.code;
    let error = err?.message || String(err);
    if (transportError) {
        error = `${error} (${transportError})`;
        status = null;
    }
    const reply = { ok: false, error, status };
    if (err?.constructor?.name === 'McpError') reply.code = err.code;
    return reply;
}

function write(obj) {
    process.stdout.write(JSON.stringify(obj) + '\n');
}

const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const raw of rl) {
    const line = raw.trim();
    if (!line) continue;
    let cmd;
    try {
        cmd = JSON.parse(line);
        if (cmd === null || typeof cmd !== 'object' || Array.isArray(cmd)) throw new Error('command must be a JSON object');
    } catch (err) {
        write({ ok: false, error: `bad command: ${err.message}`, status: null });
        continue;
    }
    postErrorStatus = null;
    transportError = null;
    let reply;
    const op = ops[cmd.op];
    if (typeof cmd.op !== 'string' || !Object.hasOwn(ops, cmd.op)) {
        reply = { ok: false, error: `unknown op: ${JSON.stringify(cmd.op)}`, status: null };
    } else {
        try {
            reply = { ok: true, result: await op(cmd) };
        } catch (err) {
            reply = errorReply(err);
        }
    }
    if ('id' in cmd) reply.id = cmd.id;
    write(reply);
    if (cmd.op === 'exit') break;
}
await disconnect();
process.exit(0);
