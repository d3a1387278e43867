#!/usr/bin/env node
// Test backend for vmcp built on the official TypeScript MCP SDK (@modelcontextprotocol/sdk 1.x).
// Behaves exactly like tests/peers/python/backend.py; see tests/peers/README.md.
//
//   node backend.mjs --port N --name NAME [--transport streamable-http|sse]
//                    [--auth-log FILE] [--startup-delay-ms MS]
//
// Prints `READY <port>` on stdout once listening; everything else goes to stderr.
// Streamable HTTP at /mcp (stateful: one McpServer + StreamableHTTPServerTransport per
// Mcp-Session-Id); the legacy HTTP+SSE transport at GET /sse with messages POSTed to
// /messages?sessionId=...
//
// Host check: the SDK's own `localhostHostValidation()` (what `createMcpExpressApp()` applies for
// a 127.0.0.1 bind): the Host's hostname must be 127.0.0.1, localhost or [::1] (any port, or
// none), otherwise 403 with a JSON-RPC error. Origin is not checked (SDK default).
import fs from 'node:fs';
import http from 'node:http';
import { randomUUID } from 'node:crypto';
import { parseArgs } from 'node:util';

import { McpServer, ResourceTemplate } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { SSEServerTransport } from '@modelcontextprotocol/sdk/server/sse.js';
import { localhostHostValidation } from '@modelcontextprotocol/sdk/server/middleware/hostHeaderValidation.js';
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';
import { z } from 'zod';

const VERSION = '1.0.0';

const { values: args } = parseArgs({
    options: {
        port: { type: 'string' },
        name: { type: 'string' },
        transport: { type: 'string', default: 'streamable-http' },
        'auth-log': { type: 'string' },
        'startup-delay-ms': { type: 'string', default: process.env.PEER_STARTUP_DELAY_MS || '0' }
    }
});
if (args.port === undefined || !args.name || !['streamable-http', 'sse'].includes(args.transport)) {
    process.stderr.write('usage: backend.mjs --port N --name NAME [--transport streamable-http|sse] ' +
        '[--auth-log FILE] [--startup-delay-ms MS]\n');
    process.exit(2);
}
const NAME = args.name;
const log = (...parts) => process.stderr.write(`[${NAME}] ${parts.join(' ')}\n`);

// A notification to a session that went away rejects a promise nobody awaits (McpServer sends
// list_changed fire-and-forget); log it instead of letting Node exit.
process.on('unhandledRejection', err => log('unhandled rejection:', err?.stack || String(err)));

// Tools added at run time are backend-wide: every live session's McpServer gets them (and so
// every connected client gets notifications/tools/list_changed), and new sessions start with them.
const dynamicTools = new Set();
const liveServers = new Set();

function text(t, isError = false) {
    const result = { content: [{ type: 'text', text: t }] };
    if (isError) result.isError = true;
    return result;
}

function registerDynamicTool(server, toolName) {
    server.registerTool(toolName, { description: `Tool added at run time on ${NAME}.` },
        async () => text(`${NAME}:${toolName}`));
}

const BASE_TOOLS = ['echo', 'search', 'whoami', 'slow', 'add_tool', 'fail', 'ask_model', 'ask_user', `${NAME}_only`];

function createServer() {
    const server = new McpServer({ name: NAME, version: VERSION });

    server.registerTool('echo', {
        description: 'Echo the text back, prefixed with the backend name.',
        inputSchema: { text: z.string() }
    }, async ({ text: t }) => text(`${NAME}:echo:${t}`));

    server.registerTool('search', {
        description: 'Search (present on every backend: a deliberate name conflict).',
        inputSchema: { query: z.string() }
    }, async ({ query }) => text(`${NAME}:search:${query}`));

    server.registerTool('whoami', {
        description: "Return the Authorization header this backend received, or 'none'."
    }, async extra => text(extra.requestInfo?.headers?.authorization || 'none'));

    server.registerTool('slow', {
        description: 'Send `steps` progress notifications, delay_ms apart, then finish.',
        inputSchema: { steps: z.number().int(), delay_ms: z.number().int() }
    }, async ({ steps, delay_ms }, extra) => {
        const token = extra._meta?.progressToken;
        for (let i = 1; i <= steps; i++) {
            if (token !== undefined) {
                await extra.sendNotification({
                    method: 'notifications/progress',
                    params: { progressToken: token, progress: i, total: steps }
                });
            }
            // Sleep after each step, the last one too: the TS Client drops a progress notification
            // that reaches it in the same read as the response (see tests/peers/README.md).
            await new Promise(resolve => setTimeout(resolve, delay_ms));
        }
        return text(`${NAME}:slow:done`);
    });

    server.registerTool('add_tool', {
        description: 'Register a new no-argument tool and send notifications/tools/list_changed.',
        inputSchema: { name: z.string() }
    }, async ({ name }) => {
        if (!dynamicTools.has(name) && !BASE_TOOLS.includes(name)) {
            dynamicTools.add(name);
            // registerTool() itself sends tools/list_changed to each connected session.
            for (const s of liveServers) registerDynamicTool(s, name);
        } else {
            for (const s of liveServers) s.sendToolListChanged();
        }
        return text('added');
    });

    server.registerTool('fail', { description: 'Always fails with a tool error.' },
        async () => text(`${NAME}:fail`, true));

    server.registerTool('ask_model', {
        description: "Ask the client's model (sampling/createMessage) and return its text.",
        inputSchema: { prompt: z.string() }
    }, async ({ prompt }, extra) => {
        const r = await server.server.createMessage({
            messages: [{ role: 'user', content: { type: 'text', text: prompt } }],
            maxTokens: 64
        }, { relatedRequestId: extra.requestId });
        return text(`${NAME}:model:${r.content?.text ?? JSON.stringify(r.content)}`);
    });

    server.registerTool('ask_user', {
        description: 'Ask the user for a name (elicitation/create) and return the outcome.',
        inputSchema: { question: z.string() }
    }, async ({ question }, extra) => {
        const r = await server.server.elicitInput({
            message: question,
            requestedSchema: { type: 'object', properties: { name: { type: 'string' } }, required: ['name'] }
        }, { relatedRequestId: extra.requestId });
        return text(`${NAME}:user:${r.action}:${r.content?.name ?? '-'}`);
    });

    server.registerTool(`${NAME}_only`, { description: `A tool only ${NAME} has.` },
        async () => text(`${NAME}:only`));

    for (const toolName of dynamicTools) registerDynamicTool(server, toolName);

    server.registerResource('info', `info://${NAME}`, {
        description: `Information about ${NAME}.`,
        mimeType: 'text/plain'
    }, async uri => ({ contents: [{ uri: uri.href, mimeType: 'text/plain', text: `${NAME} info` }] }));

    // A template with two variables in one path segment (the shape that made the gateway's
    // old URI-template matcher quadratic).
    server.registerResource('cell', new ResourceTemplate('db://{table}.{column}', { list: undefined }), {
        description: `A cell of ${NAME}'s database.`,
        mimeType: 'text/plain'
    }, async (uri, { table, column }) => ({
        contents: [{ uri: uri.href, mimeType: 'text/plain', text: `${NAME}:db:${table}.${column}` }]
    }));

    server.registerPrompt('greet', {
        description: 'Greet someone.',
        argsSchema: { who: z.string() }
    }, ({ who }) => ({
        description: 'Greet someone.',
        messages: [{ role: 'user', content: { type: 'text', text: `Hello ${who} from ${NAME}` } }]
    }));

    return server;
}

// ---- HTTP plumbing --------------------------------------------------------------------------

function readBody(req) {
    return new Promise((resolve, reject) => {
        const chunks = [];
        req.on('data', c => chunks.push(c));
        req.on('end', () => resolve(Buffer.concat(chunks)));
        req.on('error', reject);
    });
}

function rpcMethod(parsed) {
    const first = Array.isArray(parsed) ? parsed[0] : parsed;
    if (first && typeof first === 'object') {
        return { method: first.method ?? null, id: first.id ?? null };
    }
    return { method: null, id: null };
}

function writeAuthLog(req, parsed) {
    if (!args['auth-log']) return;
    const headers = {};
    for (const [k, v] of Object.entries(req.headers)) {
        headers[k.toLowerCase()] = Array.isArray(v) ? v.join(', ') : v;
    }
    const { method, id } = rpcMethod(parsed);
    const entry = {
        backend: NAME,
        transport: args.transport,
        time: Date.now() / 1000,
        http_method: req.method,
        path: req.url,
        method,
        id,
        authorization: headers.authorization ?? null,
        session_id: headers['mcp-session-id'] ?? null,
        headers
    };
    fs.appendFileSync(args['auth-log'], JSON.stringify(entry) + '\n');
}

function sendJsonError(res, status, code, message) {
    if (res.headersSent) return;
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ jsonrpc: '2.0', error: { code, message }, id: null }));
}

// Run the SDK's express-style host check against plain node:http objects.
const hostCheck = localhostHostValidation();
function hostAllowed(req, res) {
    let allowed = false;
    const shim = {
        status(code) {
            return { json(body) { res.writeHead(code, { 'content-type': 'application/json' }); res.end(JSON.stringify(body)); } };
        }
    };
    hostCheck(req, shim, () => { allowed = true; });
    return allowed;
}

const streamableTransports = new Map(); // Mcp-Session-Id -> StreamableHTTPServerTransport
const sseTransports = new Map(); // sessionId query parameter -> SSEServerTransport

async function handleStreamable(req, res, parsed) {
    const sid = req.headers['mcp-session-id'];
    let transport = sid ? streamableTransports.get(sid) : undefined;
    if (!transport) {
        if (sid) return sendJsonError(res, 404, -32001, 'Session not found');
        if (req.method !== 'POST' || !isInitializeRequest(parsed)) {
            return sendJsonError(res, 400, -32000, 'Bad Request: No valid session ID provided');
        }
        const server = createServer();
        transport = new StreamableHTTPServerTransport({
            sessionIdGenerator: () => randomUUID(),
            onsessioninitialized: id => { streamableTransports.set(id, transport); }
        });
        const t = transport;
        t.onclose = () => {
            if (t.sessionId) streamableTransports.delete(t.sessionId);
            liveServers.delete(server);
        };
        liveServers.add(server);
        await server.connect(t);
    }
    await transport.handleRequest(req, res, parsed);
}

async function handleSse(req, res, parsed, url) {
    if (req.method === 'GET' && url.pathname === '/sse') {
        const server = createServer();
        const transport = new SSEServerTransport('/messages', res);
        sseTransports.set(transport.sessionId, transport);
        transport.onclose = () => {
            sseTransports.delete(transport.sessionId);
            liveServers.delete(server);
        };
        liveServers.add(server);
        await server.connect(transport); // starts the stream and sends the `endpoint` event
        return;
    }
    if (req.method === 'POST' && url.pathname === '/messages') {
        const sid = url.searchParams.get('sessionId');
        if (!sid) return sendJsonError(res, 400, -32000, 'Missing sessionId');
        const transport = sseTransports.get(sid);
        if (!transport) return sendJsonError(res, 404, -32001, 'Could not find session');
        await transport.handlePostMessage(req, res, parsed);
        return;
    }
    sendJsonError(res, 404, -32601, 'Not found');
}

async function onRequest(req, res) {
    let parsed;
    if (req.method === 'POST') {
        const raw = await readBody(req);
        try {
            parsed = raw.length ? JSON.parse(raw.toString('utf8')) : undefined;
        } catch {
            parsed = undefined;
        }
        writeAuthLog(req, parsed);
        if (parsed === undefined) return sendJsonError(res, 400, -32700, 'Parse error');
    } else {
        writeAuthLog(req, undefined);
    }
    if (!hostAllowed(req, res)) return;
    const url = new URL(req.url, 'http://127.0.0.1');
    if (args.transport === 'sse') return handleSse(req, res, parsed, url);
    if (url.pathname !== '/mcp') return sendJsonError(res, 404, -32601, 'Not found');
    return handleStreamable(req, res, parsed);
}

const httpServer = http.createServer((req, res) => {
    onRequest(req, res).catch(err => {
        log('request failed:', err?.stack || String(err));
        sendJsonError(res, 500, -32603, 'Internal server error');
    });
});

const startupDelay = Number(args['startup-delay-ms']) || 0;
setTimeout(() => {
    httpServer.listen(Number(args.port), '127.0.0.1', () => {
        process.stdout.write(`READY ${httpServer.address().port}\n`);
    });
}, startupDelay);

for (const signal of ['SIGINT', 'SIGTERM']) {
    process.on(signal, () => {
        httpServer.closeAllConnections?.();
        process.exit(0);
    });
}
