#!/usr/bin/env node
// Line-oriented MCP client driver for vmcp tests, on the official TypeScript MCP SDK v2
// (`@modelcontextprotocol/client`: `Client` + `StreamableHTTPClientTransport`). Same line
// protocol as tests/peers/python/client.py (see tests/peers/README.md), with the ops:
//   connect {"mode"?: "auto"}   no mode: the SDK's default (`versionNegotiation` unset, which
//                                is 'legacy': the initialize handshake); "auto": probe
//                                `server/discover`, stateless 2026-07-28 when offered
//   list_tools, call_tool, call_tool_progress, read_resource, list_prompts, get_prompt, posts,
//   exit
//
//   node client.mjs --url http://127.0.0.1:PORT/mcp [--header "Name: value"]... [--timeout-ms 30000]
import readline from 'node:readline';
import { parseArgs } from 'node:util';

import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';

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
const log = (...parts) => process.stderr.write(`[client-v2] ${parts.join(' ')}\n`);
process.on('unhandledRejection', err => log('unhandled rejection:', err?.stack || String(err)));

const headers = [];
for (const h of args.header) {
    const i = h.indexOf(':');
    if (i < 0) {
        process.stderr.write(`bad --header ${JSON.stringify(h)}: expected "Name: value"\n`);
        process.exit(2);
    }
    headers.push([h.slice(0, i).trim(), h.slice(i + 1).trim()]);
}

// Every POST of the current connection, and the last error status (per command).
let posts = [];
let postErrorStatus = null;

async function wrappedFetch(url, init = {}) {
    const h = new Headers(init.headers);
    for (const [name, value] of headers) h.set(name, value);
    const response = await fetch(url, { ...init, headers: h });
    if ((init.method || 'GET').toUpperCase() === 'POST') {
        let method = null;
        try {
            method = JSON.parse(typeof init.body === 'string' ? init.body : '')?.method ?? null;
        } catch {
            method = null;
        }
        posts.push({ method, mcpMethod: h.get('mcp-method'), status: response.status });
        if (response.status >= 400) postErrorStatus = response.status;
    }
    return response;
}

let client = null;

function need() {
    if (!client) throw new Error('not connected: send connect first');
    return client;
}

const toolResult = r => ({
    isError: Boolean(r.isError),
    text: (r.content || []).filter(c => c.type === 'text').map(c => c.text).join('\n')
});

const ops = {
    async connect(cmd) {
        if (client) await client.close().catch(() => {});
        client = null;
        posts = [];
        const options = cmd.mode ? { versionNegotiation: { mode: cmd.mode } } : {};
        const c = new Client({ name: 'vmcp-peer-ts-v2-client', version: '1.0.0' }, options);
        const transport = new StreamableHTTPClientTransport(new URL(args.url), { fetch: wrappedFetch });
        await c.connect(transport, { timeout: TIMEOUT_MS });
        client = c;
        return {
            protocolVersion: c.getNegotiatedProtocolVersion() ?? null,
            era: c.getProtocolEra() ?? null,
            serverInfo: c.getServerVersion() ?? null,
            capabilities: c.getServerCapabilities() ?? null,
            sessionId: transport.sessionId ?? null,
            posts: [...posts]
        };
    },
    async posts() {
        return [...posts];
    },
    async list_tools() {
        const r = await need().listTools(undefined, { timeout: TIMEOUT_MS });
        return r.tools.map(t => ({ name: t.name, description: t.description }));
    },
    async call_tool(cmd) {
        const r = await need().callTool({ name: cmd.name, arguments: cmd.arguments || {} }, { timeout: TIMEOUT_MS });
        return toolResult(r);
    },
    async call_tool_progress(cmd) {
        const progress = [];
        const r = await need().callTool(
            { name: cmd.name, arguments: cmd.arguments || {} },
            {
                timeout: TIMEOUT_MS,
                onprogress: p => progress.push({ progress: p.progress, total: p.total ?? null, message: p.message ?? null })
            }
        );
        return { ...toolResult(r), progress };
    },
    async read_resource(cmd) {
        const r = await need().readResource({ uri: cmd.uri }, { timeout: TIMEOUT_MS });
        return { contents: r.contents, text: r.contents.filter(c => 'text' in c).map(c => c.text).join('\n') };
    },
    async list_prompts() {
        return (await need().listPrompts(undefined, { timeout: TIMEOUT_MS })).prompts;
    },
    async get_prompt(cmd) {
        const r = await need().getPrompt({ name: cmd.name, arguments: cmd.arguments || {} }, { timeout: TIMEOUT_MS });
        return {
            description: r.description ?? null,
            messages: r.messages.map(m => ({ role: m.role, text: m.content?.text ?? null, content: m.content }))
        };
    },
    async exit() {
        return {};
    }
};

const write = obj => process.stdout.write(JSON.stringify(obj) + '\n');

const rl = readline.createInterface({ input: process.stdin, terminal: false });
for await (const line of rl) {
    if (!line.trim()) continue;
    let cmd;
    try {
        cmd = JSON.parse(line);
        if (typeof cmd !== 'object' || cmd === null) throw new Error('command must be a JSON object');
    } catch (e) {
        write({ ok: false, error: `bad command: ${e.message}`, status: null });
        continue;
    }
    postErrorStatus = null;
    let reply;
    const op = ops[cmd.op];
    if (!op) {
        reply = { ok: false, error: `unknown op: ${JSON.stringify(cmd.op)}`, status: null };
    } else {
        try {
            reply = { ok: true, result: await op(cmd) };
        } catch (e) {
            reply = { ok: false, error: String(e?.message || e), status: postErrorStatus };
            if (typeof e?.code === 'number') reply.code = e.code;
        }
    }
    if ('id' in cmd) reply.id = cmd.id;
    write(reply);
    if (cmd.op === 'exit') break;
}
if (client) await client.close().catch(() => {});
process.exit(0);
