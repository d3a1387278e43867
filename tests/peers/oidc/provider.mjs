#!/usr/bin/env node
// Test-only OpenID provider for vmcp integration tests (built on the `oidc-provider` package).
//
//   node tests/peers/oidc/provider.mjs --port 0 [--host 127.0.0.1] [--issuer URL]
//        [--config FILE] [--access-ttl S] [--exchange-ttl S] [--keep-old-keys]
//        [--default-audience ID] [--log]
//
// --issuer may contain `{port}` (replaced by the bound port) and a path, e.g.
// http://127.0.0.1:{port}/realms/vmcp; the provider is then served under that path.
//
// stdout carries exactly one line, `READY <port>`, once the server listens; everything else
// (oidc-provider notices, request logs) goes to stderr. See README.md beside this file.
//
// NOT for production: the password grant, the /test/* endpoints and the in-memory state exist
// only so tests can mint tokens and provoke failures without a browser.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';

// Keep stdout clean for the READY line: oidc-provider prints notices with console.info/log.
console.log = console.error;
console.info = console.error;

const { default: Provider, errors } = await import('oidc-provider');
const { jwtVerify, createLocalJWKSet, errors: joseErrors } = await import('jose');

const TE_GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';
const AT_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
const JWT_TYPE = 'urn:ietf:params:oauth:token-type:jwt';

// ---------------------------------------------------------------------------------------------
// CLI
// ---------------------------------------------------------------------------------------------
function usage(msg) {
  if (msg) process.stderr.write(`provider.mjs: ${msg}\n`);
  process.stderr.write(`usage: node provider.mjs [--port N] [--host H] [--issuer URL] [--config FILE]
    [--access-ttl SECONDS] [--exchange-ttl SECONDS] [--keep-old-keys] [--default-audience ID] [--log]\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const opts = {
    port: 0,
    host: '127.0.0.1',
    issuer: undefined,
    config: undefined,
    accessTtl: undefined,
    exchangeTtl: undefined,
    keepOldKeys: undefined,
    defaultAudience: undefined,
    log: false,
  };
  const positiveInt = (name, v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) usage(`${name} needs a non-negative integer, got ${v}`);
    return n;
  };
  for (let i = 0; i < argv.length; i += 1) {
    let arg = argv[i];
    let value;
    const eq = arg.indexOf('=');
    if (arg.startsWith('--') && eq !== -1) {
      value = arg.slice(eq + 1);
      arg = arg.slice(0, eq);
    }
    const next = () => {
      if (value !== undefined) return value;
      i += 1;
      if (i >= argv.length) usage(`${arg} needs a value`);
      return argv[i];
    };
    switch (arg) {
      case '--port': opts.port = positiveInt('--port', next()); break;
      case '--host': opts.host = next(); break;
      case '--issuer': opts.issuer = next(); break;
      case '--config': opts.config = next(); break;
      case '--access-ttl': opts.accessTtl = positiveInt('--access-ttl', next()); break;
      case '--exchange-ttl': opts.exchangeTtl = positiveInt('--exchange-ttl', next()); break;
      case '--keep-old-keys': opts.keepOldKeys = true; break;
      case '--default-audience': opts.defaultAudience = next(); break;
      case '--log': opts.log = true; break;
      case '-h': case '--help': usage();
      // falls through (usage exits)
      default: usage(`unknown argument ${arg}`);
    }
  }
  return opts;
}

const opts = parseArgs(process.argv.slice(2));

// ---------------------------------------------------------------------------------------------
// Test data (overridable with --config FILE, a JSON object with any of these keys)
// ---------------------------------------------------------------------------------------------
const defaults = {
  // Access token lifetime (seconds) for the password grant, and for exchanged tokens.
  accessTtl: 300,
  exchangeTtl: undefined, // undefined -> accessTtl
  // `aud` of password-grant tokens when the request has neither `audience` nor `resource`.
  defaultAudience: 'vmcp-gateway',
  // Rotation default: drop the old key from the JWKS (old-kid tokens then fail verification).
  keepOldKeys: false,
  users: {
    alice: {
      password: 'alice-pw',
      sub: 'alice-sub',
      claims: {
        preferred_username: 'alice', name: 'Alice Tester', email: 'alice@example.test', email_verified: true,
      },
    },
    bob: {
      password: 'bob-pw',
      sub: 'bob-sub',
      claims: {
        preferred_username: 'bob', name: 'Bob Tester', email: 'bob@example.test', email_verified: true,
      },
    },
  },
  // oidc-provider client metadata.
  clients: [
    {
      client_id: 'vmcp-cli',
      token_endpoint_auth_method: 'none',
      grant_types: ['password'],
      response_types: [],
      redirect_uris: [],
    },
    {
      // A client registered with client_secret_basic also accepts client_secret_post
      // (oidc-provider treats the two secret methods as interchangeable).
      client_id: 'vmcp-gateway',
      client_secret: 'gateway-secret',
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: [TE_GRANT, 'client_credentials'],
      response_types: [],
      redirect_uris: [],
    },
    ...['backend-a', 'backend-b', 'backend-c'].map((id) => ({
      client_id: id,
      client_secret: `${id}-secret`,
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
    })),
  ],
  // Which `audience` values each client may obtain by token exchange. backend-c exists but is
  // deliberately not allowed (same layout as the Keycloak fixture realm).
  exchangePolicy: {
    'vmcp-gateway': ['backend-a', 'backend-b'],
  },
  // Extra audiences (besides client ids) that the password grant may target.
  audiences: [],
  // Scopes granted to password-grant tokens when the request has no `scope`.
  defaultScope: 'openid profile email',
};

let fileConfig = {};
if (opts.config) {
  try {
    fileConfig = JSON.parse(fs.readFileSync(opts.config, 'utf8'));
  } catch (err) {
    usage(`cannot read --config ${opts.config}: ${err.message}`);
  }
}
// Merge rules: `users` and `exchangePolicy` merge per key; `clients` merge per client_id
// (a file entry replaces the default client with the same id); other keys replace.
const cfg = {
  ...defaults,
  ...fileConfig,
  users: { ...defaults.users, ...fileConfig.users },
  exchangePolicy: { ...defaults.exchangePolicy, ...fileConfig.exchangePolicy },
  clients: [
    ...defaults.clients.filter((c) => !(fileConfig.clients || []).some((f) => f.client_id === c.client_id)),
    ...(fileConfig.clients || []),
  ],
};
for (const [key, flag] of [['accessTtl', 'accessTtl'], ['exchangeTtl', 'exchangeTtl'],
  ['keepOldKeys', 'keepOldKeys'], ['defaultAudience', 'defaultAudience']]) {
  if (opts[flag] !== undefined) cfg[key] = opts[flag];
}
if (cfg.exchangeTtl === undefined) cfg.exchangeTtl = cfg.accessTtl;

const usersByName = new Map(Object.entries(cfg.users));
const usersBySub = new Map([...usersByName.values()].map((u) => [u.sub, u]));
const knownAudiences = () => new Set([
  ...cfg.clients.map((c) => c.client_id),
  ...Object.values(cfg.exchangePolicy).flat(),
  ...cfg.audiences,
]);

const log = (...args) => { if (opts.log) console.error('[oidc-peer]', ...args); };

// ---------------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------------
function newSigningKey() {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  // RFC 7638 thumbprint as kid, plus a random suffix so two runs never collide.
  const thumb = crypto.createHash('sha256')
    .update(JSON.stringify({ e: jwk.e, kty: 'RSA', n: jwk.n })).digest('base64url');
  return {
    ...jwk, kid: `${thumb.slice(0, 16)}-${crypto.randomBytes(3).toString('hex')}`, alg: 'RS256', use: 'sig',
  };
}
const publicPart = ({
  kty, n, e, kid, alg, use,
}) => ({
  kty, n, e, kid, alg, use,
});

const keys = { current: newSigningKey(), retained: [] };

// ---------------------------------------------------------------------------------------------
// Failure injection for exchanges (POST /test/fail-exchange)
// ---------------------------------------------------------------------------------------------
// audience ('*' = any) -> { error, error_description, status, times (undefined = until cleared) }
const exchangeFailures = new Map();

function takeForcedFailure(audience) {
  for (const key of [audience, '*']) {
    const f = exchangeFailures.get(key);
    if (!f) continue;
    if (f.times !== undefined) {
      f.times -= 1;
      if (f.times <= 0) exchangeFailures.delete(key);
    }
    return f;
  }
  return undefined;
}

function oauthError(error, description, status = 400) {
  const err = new errors.CustomOIDCProviderError(error, description);
  err.status = status;
  err.statusCode = status;
  err.expose = true; // keep error/error_description even for 5xx
  return err;
}

// ---------------------------------------------------------------------------------------------
// Provider (rebuilt on key rotation; all tokens are self-contained JWTs so nothing is lost)
// ---------------------------------------------------------------------------------------------
let issuer; // set once the port is known
// Extra JWT claims per token instance, returned by the extraTokenClaims hook (which is what
// oidc-provider merges into JWT access tokens; setting token.extra directly is overwritten).
const extraClaims = new WeakMap();
let provider;
let handler;

function resourceServerFor(prov, audience, ttl, scope) {
  return new prov.ResourceServer(audience, {
    audience,
    accessTokenFormat: 'jwt',
    accessTokenTTL: ttl,
    scope,
    jwt: { sign: { alg: 'RS256' } },
  });
}

function intersectScopes(requested, allowed) {
  const allowedSet = new Set((allowed || '').split(' ').filter(Boolean));
  return (requested || '').split(' ').filter(Boolean).filter((s) => allowedSet.has(s));
}

async function passwordGrant(ctx) {
  const prov = ctx.oidc.provider;
  const { client, params } = ctx.oidc;
  const {
    username, password, scope, audience, resource,
  } = params;
  if (!username || !password) {
    throw new errors.InvalidRequest('username and password are required');
  }
  const user = usersByName.get(username);
  if (!user || !crypto.timingSafeEqual(
    crypto.createHash('sha256').update(user.password).digest(),
    crypto.createHash('sha256').update(password).digest(),
  )) {
    throw oauthError('invalid_grant', 'invalid user credentials');
  }
  const aud = audience || resource || cfg.defaultAudience;
  if (!knownAudiences().has(aud)) {
    throw new errors.InvalidTarget(`unknown audience ${aud}`);
  }
  const grantedScope = scope || cfg.defaultScope;
  const token = new prov.AccessToken({
    accountId: user.sub,
    client,
    gty: 'password',
    scope: grantedScope,
  });
  token.resourceServer = resourceServerFor(prov, aud, cfg.accessTtl, grantedScope);
  token.scope = grantedScope;
  extraClaims.set(token, {
    azp: client.clientId,
    preferred_username: user.claims?.preferred_username ?? username,
  });
  const value = await token.save();
  log(`password grant: user=${username} client=${client.clientId} aud=${aud} kid=${keys.current.kid}`);
  ctx.body = {
    access_token: value,
    token_type: 'Bearer',
    expires_in: token.expiration,
    scope: grantedScope,
  };
}

async function tokenExchangeGrant(ctx) {
  const prov = ctx.oidc.provider;
  const { client, params } = ctx.oidc;
  const {
    subject_token: subjectToken,
    subject_token_type: subjectTokenType,
    requested_token_type: requestedTokenType,
    audience,
    resource,
    scope,
  } = params;

  if (!subjectToken) throw new errors.InvalidRequest('subject_token is required');
  if (!subjectTokenType) throw new errors.InvalidRequest('subject_token_type is required');
  if (subjectTokenType !== AT_TYPE && subjectTokenType !== JWT_TYPE) {
    throw new errors.InvalidRequest(`unsupported subject_token_type ${subjectTokenType}`);
  }
  if (requestedTokenType !== undefined && requestedTokenType !== AT_TYPE) {
    throw new errors.InvalidRequest(`unsupported requested_token_type ${requestedTokenType}`);
  }
  if (params.actor_token !== undefined) {
    throw new errors.InvalidRequest('actor_token is not supported');
  }
  if (audience !== undefined && resource !== undefined && audience !== resource) {
    throw new errors.InvalidTarget('audience and resource must name the same target');
  }
  const target = audience ?? resource;
  if (!target) throw new errors.InvalidTarget('audience (or resource) is required');

  // Verify the subject token against this provider's own keys.
  let payload;
  try {
    const jwks = createLocalJWKSet({
      keys: [keys.current, ...keys.retained].map(publicPart),
    });
    ({ payload } = await jwtVerify(subjectToken, jwks, {
      issuer,
      audience: client.clientId,
      algorithms: ['RS256'],
      typ: 'at+jwt',
      requiredClaims: ['sub', 'exp'],
    }));
  } catch (err) {
    let why;
    if (err instanceof joseErrors.JWTExpired) why = 'subject_token expired';
    else if (err instanceof joseErrors.JWTClaimValidationFailed && err.claim === 'aud') {
      why = `subject_token audience does not include ${client.clientId}`;
    } else if (err instanceof joseErrors.JWKSNoMatchingKey) why = 'subject_token signed with an unknown key';
    else if (err instanceof joseErrors.JWSSignatureVerificationFailed) why = 'subject_token signature invalid';
    else why = `subject_token invalid: ${err.message}`;
    log(`exchange rejected: client=${client.clientId} ${why}`);
    throw oauthError('invalid_grant', why);
  }

  const forced = takeForcedFailure(target);
  if (forced) {
    log(`exchange forced failure: aud=${target} error=${forced.error}`);
    throw oauthError(forced.error, forced.error_description, forced.status);
  }

  if (!knownAudiences().has(target)) {
    throw new errors.InvalidTarget(`unknown audience ${target}`);
  }
  const allowed = cfg.exchangePolicy[client.clientId] || [];
  if (!allowed.includes(target)) {
    throw new errors.InvalidTarget(`audience ${target} is not allowed for client ${client.clientId}`);
  }

  let grantedScope = payload.scope;
  if (scope !== undefined) {
    const wanted = scope.split(' ').filter(Boolean);
    const ok = intersectScopes(scope, payload.scope);
    if (ok.length !== wanted.length) {
      throw new errors.InvalidScope('requested scope exceeds the subject_token scope', scope);
    }
    grantedScope = ok.join(' ');
  }

  const token = new prov.AccessToken({
    accountId: payload.sub,
    client,
    gty: 'token-exchange',
    scope: grantedScope || undefined,
  });
  token.resourceServer = resourceServerFor(prov, target, cfg.exchangeTtl, grantedScope);
  token.scope = grantedScope || undefined;
  const act = { sub: client.clientId };
  if (payload.act) act.act = payload.act; // keep the delegation chain (RFC 8693 §4.1)
  extraClaims.set(token, {
    azp: client.clientId,
    act,
    ...(payload.preferred_username ? { preferred_username: payload.preferred_username } : {}),
  });
  const value = await token.save();
  log(`exchange: client=${client.clientId} sub=${payload.sub} aud=${target} kid=${keys.current.kid}`);
  ctx.body = {
    access_token: value,
    issued_token_type: AT_TYPE,
    token_type: 'Bearer',
    expires_in: token.expiration,
    ...(grantedScope ? { scope: grantedScope } : {}),
  };
}

function buildProvider() {
  const signingKeys = [keys.current, ...keys.retained]; // first key signs
  const prov = new Provider(issuer, {
    clients: cfg.clients,
    jwks: { keys: signingKeys },
    cookies: { keys: ['vmcp-test-only-cookie-key'] },
    extraTokenClaims: async (_ctx, token) => extraClaims.get(token),
    scopes: ['openid', 'profile', 'email', 'offline_access'],
    claims: {
      openid: ['sub'],
      profile: ['name', 'preferred_username'],
      email: ['email', 'email_verified'],
    },
    async findAccount(_ctx, sub) {
      const user = usersBySub.get(sub);
      if (!user) return undefined;
      return { accountId: sub, claims: async () => ({ sub, ...user.claims }) };
    },
    features: {
      devInteractions: { enabled: false },
      introspection: { enabled: false },
      revocation: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => undefined,
        useGrantedResource: async () => true,
        async getResourceServerInfo(_ctx, resourceIndicator) {
          if (!knownAudiences().has(resourceIndicator)) throw new errors.InvalidTarget();
          return {
            audience: resourceIndicator,
            accessTokenFormat: 'jwt',
            accessTokenTTL: cfg.accessTtl,
            scope: 'openid profile email',
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
    ttl: {
      AccessToken: (_ctx, token) => token.resourceServer?.accessTokenTTL ?? cfg.accessTtl,
      ClientCredentials: (_ctx, token) => token.resourceServer?.accessTokenTTL ?? cfg.accessTtl,
    },
  });
  prov.proxy = false;
  prov.registerGrantType('password', passwordGrant, ['username', 'password', 'scope', 'audience', 'resource']);
  prov.registerGrantType(TE_GRANT, tokenExchangeGrant, [
    'subject_token', 'subject_token_type', 'requested_token_type', 'audience', 'resource', 'scope',
    'actor_token', 'actor_token_type',
  ]);
  if (opts.log) {
    prov.on('server_error', (_ctx, err) => console.error('[oidc-peer] server_error', err));
    prov.on('grant.error', (_ctx, err) => console.error('[oidc-peer] grant.error', err.error, err.error_description || '', err.error_detail || ''));
  }
  return prov;
}

function install(prov) {
  provider = prov;
  handler = prov.callback();
}

// ---------------------------------------------------------------------------------------------
// HTTP server: /test/* hooks, everything else goes to oidc-provider (mounted at issuer's path)
// ---------------------------------------------------------------------------------------------
function sendJson(res, status, body) {
  const data = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'cache-control': 'no-store',
    'content-length': Buffer.byteLength(data),
  });
  res.end(data);
}

async function readJson(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const text = Buffer.concat(chunks).toString('utf8').trim();
  if (!text) return {};
  return JSON.parse(text);
}

async function testRoute(req, res, path) {
  let body;
  try {
    body = req.method === 'POST' ? await readJson(req) : {};
  } catch {
    return sendJson(res, 400, { error: 'invalid_request', error_description: 'body must be JSON' });
  }
  if (path === '/test/rotate-keys' && req.method === 'POST') {
    const keepOld = body.keep_old ?? body.keepOld ?? cfg.keepOldKeys;
    const previous = keys.current;
    keys.retained = keepOld ? [previous, ...keys.retained] : [];
    keys.current = newSigningKey();
    install(buildProvider());
    log(`rotated keys: ${previous.kid} -> ${keys.current.kid} (keep_old=${!!keepOld})`);
    return sendJson(res, 200, {
      kid: keys.current.kid,
      previous_kid: previous.kid,
      kept_old: !!keepOld,
      jwks_kids: [keys.current, ...keys.retained].map((k) => k.kid),
    });
  }
  if (path === '/test/fail-exchange') {
    if (req.method === 'DELETE' || (req.method === 'POST' && (body.clear || Object.keys(body).length === 0))) {
      exchangeFailures.clear();
    } else if (req.method === 'POST') {
      const aud = body.audience ?? '*';
      if (body.enabled === false) {
        exchangeFailures.delete(aud);
      } else {
        const times = body.times === undefined ? undefined : Number(body.times);
        if (times !== undefined && (!Number.isInteger(times) || times < 1)) {
          return sendJson(res, 400, { error: 'invalid_request', error_description: 'times must be a positive integer' });
        }
        exchangeFailures.set(aud, {
          error: body.error ?? 'invalid_target',
          error_description: body.error_description ?? `forced failure for audience ${aud} (test hook)`,
          status: Number(body.status ?? 400),
          times,
        });
      }
    } else if (req.method !== 'GET') {
      return sendJson(res, 405, { error: 'method_not_allowed' });
    }
    return sendJson(res, 200, { failures: Object.fromEntries(exchangeFailures) });
  }
  if (path === '/test/state' && req.method === 'GET') {
    return sendJson(res, 200, {
      issuer,
      kid: keys.current.kid,
      jwks_kids: [keys.current, ...keys.retained].map((k) => k.kid),
      access_ttl: cfg.accessTtl,
      exchange_ttl: cfg.exchangeTtl,
      failures: Object.fromEntries(exchangeFailures),
    });
  }
  return sendJson(res, 404, { error: 'not_found' });
}

let mountPath = '';
const server = http.createServer((req, res) => {
  const url = req.url || '/';
  const path = url.split('?')[0];
  if (path.startsWith('/test/')) {
    testRoute(req, res, path).catch((err) => {
      console.error('[oidc-peer] test route error', err);
      if (!res.headersSent) sendJson(res, 500, { error: 'server_error' });
    });
    return;
  }
  if (!handler) {
    sendJson(res, 503, { error: 'temporarily_unavailable' });
    return;
  }
  if (mountPath) {
    if (path !== mountPath && !path.startsWith(`${mountPath}/`)) {
      sendJson(res, 404, { error: 'not_found' });
      return;
    }
    // Same contract as mounting under express/koa-mount: originalUrl keeps the prefix.
    req.originalUrl = url;
    req.url = url.slice(mountPath.length) || '/';
  }
  handler(req, res);
});

server.on('error', (err) => {
  console.error(`[oidc-peer] server error: ${err.message}`);
  process.exit(1);
});

server.listen(opts.port, opts.host, () => {
  const { port } = server.address();
  const hostForUrl = opts.host.includes(':') ? `[${opts.host}]` : opts.host;
  // `{port}` in --issuer is replaced by the bound port (useful with --port 0).
  issuer = (opts.issuer ?? `http://${hostForUrl}:${port}`).replaceAll('{port}', String(port)).replace(/\/+$/, '');
  mountPath = new URL(issuer).pathname.replace(/\/+$/, '');
  install(buildProvider());
  console.error(`[oidc-peer] issuer ${issuer}, kid ${keys.current.kid}, access ttl ${cfg.accessTtl}s`);
  process.stdout.write(`READY ${port}\n`);
});

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    server.close();
    process.exit(0);
  });
}
