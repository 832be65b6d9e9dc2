#!/usr/bin/env node
// A real OpenID Provider for keyway's integration tests, built on `oidc-provider` 9.
//
//   node provider.mjs --port N [--config FILE.json] [--down-file PATH] [--exit-with-stdin]
//
// Listens on 127.0.0.1 only. When ready it prints exactly one JSON line on stdout:
//   {"ready":true,"issuer":"http://127.0.0.1:PORT","port":PORT}
// and then runs until SIGTERM / SIGINT (or stdin EOF with --exit-with-stdin).
// Every request is logged to stderr as `METHOD /path STATUS Nms` (query strings are
// never logged). See README.md for the config file format.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as querystring from 'node:querystring';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

const log = (msg) => process.stderr.write(`[idp] ${msg}\n`);

// ---------------------------------------------------------------------------
// command line and config file
// ---------------------------------------------------------------------------

const { values: argv } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    config: { type: 'string' },
    'down-file': { type: 'string' },
    'exit-with-stdin': { type: 'boolean', default: false },
  },
  strict: true,
});

const port = Number(argv.port);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  log(`invalid --port ${argv.port}`);
  process.exit(2);
}
const config = argv.config ? JSON.parse(fs.readFileSync(argv.config, 'utf8')) : {};
const downFile = argv['down-file'];

const DEFAULT_CLIENT = {
  client_id: 'keyway',
  client_secret: 'keyway-client-secret-0123456789abcdef',
  // Placeholders: any http://127.0.0.1:<port>/... or http://localhost:<port>/... URL is
  // accepted at run time (see loopbackRedirects below), so the gateway's ephemeral port
  // does not have to be known in advance.
  redirect_uris: ['http://127.0.0.1/callback', 'http://localhost/callback'],
  post_logout_redirect_uris: ['http://127.0.0.1/', 'http://localhost/'],
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  token_endpoint_auth_method: 'client_secret_basic',
  // sid in ID tokens and logout tokens, so a relying party can match a back-channel logout
  // to one session.
  backchannel_logout_session_required: true,
};

const TTL_DEFAULTS = {
  AccessToken: 3600,
  IdToken: 3600,
  RefreshToken: 86400,
  AuthorizationCode: 60,
  Session: 14 * 86400,
  Grant: 14 * 86400,
  Interaction: 3600,
};
const TTL_ALIASES = {
  access: 'AccessToken',
  id: 'IdToken',
  refresh: 'RefreshToken',
  code: 'AuthorizationCode',
  session: 'Session',
  grant: 'Grant',
  interaction: 'Interaction',
};
const ttl = { ...TTL_DEFAULTS };
for (const [key, value] of Object.entries(config.ttl ?? {})) {
  const name = TTL_ALIASES[key] ?? key;
  if (!(name in TTL_DEFAULTS) || !Number.isInteger(value) || value <= 0) {
    log(`invalid ttl entry ${key}: ${value}`);
    process.exit(2);
  }
  ttl[name] = value;
}

const algs = config.algs ?? ['RS256'];
const SUPPORTED_ALGS = ['RS256', 'PS256', 'ES256', 'EdDSA', 'Ed25519'];
for (const alg of algs) {
  if (!SUPPORTED_ALGS.includes(alg)) {
    log(`unsupported alg ${alg}; supported: ${SUPPORTED_ALGS.join(', ')}`);
    process.exit(2);
  }
}

// Optional per-login settings: {"users": {"alice": {"password": "pw", "email": "...",
// "name": "...", "groups": [...], "claims": {...extra claims...}}}}
const users = config.users ?? {};

// ---------------------------------------------------------------------------
// signing keys
// ---------------------------------------------------------------------------
//
// Without `keySeed` a fresh key is generated at every start, so restarting the provider
// rotates its JWKS. With `keySeed` (a string, or an array of strings) the keys are derived
// deterministically from the seed(s): the same seed gives the same key (and kid) after a
// restart, a different seed gives a different key. With an array, every seed's key is
// published in the JWKS and the FIRST one signs (an "old key still published" rotation).
// `jwks` ({"keys":[private JWKs]}) bypasses all of this.

const b64u = (buf) => Buffer.from(buf).toString('base64url');

function bigToB64u(n) {
  let hex = n.toString(16);
  if (hex.length % 2) hex = `0${hex}`;
  return b64u(Buffer.from(hex, 'hex'));
}

function modInv(a, m) {
  // extended Euclid
  let [oldR, r] = [a % m, m];
  let [oldS, s] = [1n, 0n];
  while (r !== 0n) {
    const q = oldR / r;
    [oldR, r] = [r, oldR - q * r];
    [oldS, s] = [s, oldS - q * s];
  }
  if (oldR !== 1n) throw new Error('not invertible');
  return ((oldS % m) + m) % m;
}

// A deterministic byte stream: HMAC-SHA256(seed, label || counter) blocks.
function drbg(seed, label) {
  let counter = 0;
  return (length) => {
    const out = [];
    let have = 0;
    while (have < length) {
      const block = crypto.createHmac('sha256', String(seed)).update(`${label}:${counter++}`).digest();
      out.push(block);
      have += block.length;
    }
    return Buffer.concat(out).subarray(0, length);
  };
}

function seededPrime(bytes, bits) {
  const buf = bytes(bits / 8);
  buf[0] |= 0xc0; // top two bits set: p*q has exactly 2*bits bits
  buf[buf.length - 1] |= 1;
  let candidate = BigInt(`0x${buf.toString('hex')}`);
  for (;;) {
    if ((candidate - 1n) % 65537n !== 0n && crypto.checkPrimeSync(candidate, { checks: 40 })) {
      return candidate;
    }
    candidate += 2n;
  }
}

function rsaJwk(seed) {
  if (seed === undefined) {
    return crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
  }
  const bytes = drbg(seed, 'rsa-2048');
  const e = 65537n;
  const p = seededPrime(bytes, 1024);
  let q;
  do { q = seededPrime(bytes, 1024); } while (q === p);
  const n = p * q;
  const d = modInv(e, (p - 1n) * (q - 1n));
  return {
    kty: 'RSA',
    n: bigToB64u(n),
    e: bigToB64u(e),
    d: bigToB64u(d),
    p: bigToB64u(p),
    q: bigToB64u(q),
    dp: bigToB64u(d % (p - 1n)),
    dq: bigToB64u(d % (q - 1n)),
    qi: bigToB64u(modInv(q, p)),
  };
}

function ecJwk(seed) {
  if (seed === undefined) {
    return crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
  }
  // P-256 group order; a 32-byte scalar in [1, n-1] is a valid private key
  const order = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;
  const bytes = drbg(seed, 'ec-p256');
  let dBig;
  do { dBig = BigInt(`0x${bytes(32).toString('hex')}`); } while (dBig === 0n || dBig >= order);
  const dBuf = Buffer.from(dBig.toString(16).padStart(64, '0'), 'hex');
  const ecdh = crypto.createECDH('prime256v1');
  ecdh.setPrivateKey(dBuf);
  const pub = ecdh.getPublicKey(); // 0x04 || x || y
  return {
    kty: 'EC', crv: 'P-256', d: b64u(dBuf), x: b64u(pub.subarray(1, 33)), y: b64u(pub.subarray(33, 65)),
  };
}

function okpJwk(seed) {
  if (seed === undefined) {
    return crypto.generateKeyPairSync('ed25519').privateKey.export({ format: 'jwk' });
  }
  // PKCS#8 wrapper for a raw 32-byte Ed25519 seed
  const der = Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), drbg(seed, 'ed25519')(32)]);
  return crypto.createPrivateKey({ key: der, format: 'der', type: 'pkcs8' }).export({ format: 'jwk' });
}

// RFC 7638 thumbprint, used as a stable kid
function thumbprint(jwk) {
  const members = {
    RSA: ['e', 'kty', 'n'], EC: ['crv', 'kty', 'x', 'y'], OKP: ['crv', 'kty', 'x'],
  }[jwk.kty];
  const canonical = JSON.stringify(Object.fromEntries(members.map((m) => [m, jwk[m]])));
  return crypto.createHash('sha256').update(canonical).digest('base64url');
}

function buildJwks() {
  if (config.jwks) return config.jwks;
  const seeds = config.keySeed === undefined ? [undefined] : [config.keySeed].flat();
  const kinds = new Set(algs.map((alg) => (/^(RS|PS)/.test(alg) ? 'RSA' : alg === 'ES256' ? 'EC' : 'OKP')));
  // The kind of the first alg goes first: oidc-provider signs with the first usable key.
  const order = [...kinds];
  const keys = [];
  for (const seed of seeds) {
    for (const kind of order) {
      const jwk = { RSA: rsaJwk, EC: ecJwk, OKP: okpJwk }[kind](seed);
      // round-trip through node's key parser: a broken derived key fails here, not at sign time
      crypto.createPrivateKey({ key: jwk, format: 'jwk' });
      jwk.kid = thumbprint(jwk);
      jwk.use = 'sig';
      keys.push(jwk);
    }
  }
  return { keys };
}

// ---------------------------------------------------------------------------
// accounts
// ---------------------------------------------------------------------------
//
// The devInteractions login form accepts any login. The typed login becomes the account id
// (and `sub`); a login containing '@' is used as the email and its local part as `sub`. That
// mapping happens in the login submit handler below, so the account id (also used as `sub`
// of back-channel logout tokens) always equals the ID token's `sub`.

const emailFor = new Map(); // sub -> email typed at login

function accountClaims(sub) {
  const user = users[sub] ?? {};
  const groups = user.groups ?? (sub === 'admin' ? ['admin', 'users'] : ['users']);
  return {
    sub,
    email: user.email ?? emailFor.get(sub) ?? `${sub}@example.com`,
    email_verified: true,
    name: user.name ?? sub,
    preferred_username: sub,
    groups: [...groups],
    realm_access: { roles: [...groups] },
    ...(user.claims ?? {}),
  };
}

async function findAccount(_ctx, id) {
  return {
    accountId: id,
    async claims() { return accountClaims(id); },
  };
}

// ---------------------------------------------------------------------------
// loopback redirect relaxation (client metadata extensions)
// ---------------------------------------------------------------------------
//
// oidc-provider's supported extension point (see its "redirect_uri wildcards" recipe):
// declare extra client metadata with `extraClientMetadata`, then override
// `provider.Client.prototype.redirectUriAllowed` / `postLogoutRedirectUriAllowed`.
//
//   test_loopback_redirects (boolean, default true): also accept any
//       http://127.0.0.1:<port>/... or http://localhost:<port>/... redirect_uri and
//       post_logout_redirect_uri.
//   test_backchannel_logout_path (string "/..."): the back-channel logout URI is this path
//       on the origin of the redirect_uri most recently used by the client. A config
//       `backchannel_logout_uri` starting with '/' is turned into this property.

const EXTRA_METADATA = ['test_loopback_redirects', 'test_backchannel_logout_path'];

function isLoopbackHttp(value) {
  const url = URL.parse(value);
  return !!url && url.protocol === 'http:' && (url.hostname === '127.0.0.1' || url.hostname === 'localhost')
    && !url.username && !url.password && !url.hash;
}

function prepareClient(metadata) {
  const client = { ...metadata };
  if (typeof client.backchannel_logout_uri === 'string' && client.backchannel_logout_uri.startsWith('/')) {
    client.test_backchannel_logout_path = client.backchannel_logout_uri;
    delete client.backchannel_logout_uri;
  }
  return client;
}

const clients = (config.clients ?? [DEFAULT_CLIENT]).map(prepareClient);

// ---------------------------------------------------------------------------
// pages (no external resources: the default ones @import web fonts)
// ---------------------------------------------------------------------------

const htmlEscape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const page = (title, body) => `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>${htmlEscape(title)}</title></head>
<body>${body}</body></html>`;

// `logoutPrompt: false` (default): the end_session confirmation page submits itself with
// logout=yes (sign out of every client, as most IdPs do with a valid id_token_hint).
// `logoutPrompt: true`: the page waits for a click on "Yes, sign me out" / "No".
const logoutPrompt = config.logoutPrompt === true;

async function logoutSource(ctx, form) {
  const auto = logoutPrompt ? '' : '<script>document.getElementById("op.logoutForm").requestSubmit(document.getElementById("op.logoutYes"))</script>';
  ctx.body = page('Logout Request', `
<h1>Do you want to sign-out from ${htmlEscape(ctx.host)}?</h1>
${form}
<button id="op.logoutYes" autofocus type="submit" form="op.logoutForm" value="yes" name="logout">Yes, sign me out</button>
<button id="op.logoutNo" type="submit" form="op.logoutForm">No, stay signed in</button>
${auto}`);
}

async function postLogoutSuccessSource(ctx) {
  const display = ctx.oidc.client?.clientName || ctx.oidc.client?.clientId;
  ctx.body = page('Sign-out Success', `<h1>Sign-out Success</h1><p>Your sign-out${display ? ` with ${htmlEscape(display)}` : ''} was successful.</p>`);
}

async function renderError(ctx, out) {
  ctx.type = 'html';
  ctx.body = page('oops! something went wrong', `<h1>oops! something went wrong</h1>
${Object.entries(out).map(([k, v]) => `<pre><strong>${htmlEscape(k)}</strong>: ${htmlEscape(v)}</pre>`).join('\n')}`);
}

// ---------------------------------------------------------------------------
// HTTP server: bind first (port 0 is ephemeral and the issuer needs the real port)
// ---------------------------------------------------------------------------

let handler = null; // the provider's request listener, set once it is constructed

const server = http.createServer((req, res) => {
  const started = process.hrtime.bigint();
  res.on('finish', () => {
    const ms = Number((process.hrtime.bigint() - started) / 1000000n);
    log(`${req.method} ${req.url.split('?')[0]} ${res.statusCode} ${ms}ms`);
  });
  if ((downFile && fs.existsSync(downFile)) || !handler) {
    res.writeHead(503, { 'content-type': 'application/json', 'retry-after': '1', connection: 'close' });
    res.end(JSON.stringify({ error: 'temporarily_unavailable', error_description: 'the provider is down' }));
    return;
  }
  handler(req, res);
});

async function listen() {
  // A previous instance on the same port may still be exiting: retry briefly.
  // (node sets SO_REUSEADDR, so TIME_WAIT connections never block the bind.)
  const deadline = Date.now() + 10000;
  for (;;) {
    try {
      await new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen({ host: '127.0.0.1', port }, () => { server.off('error', reject); resolve(); });
      });
      return server.address().port;
    } catch (err) {
      if (err.code !== 'EADDRINUSE' || port === 0 || Date.now() > deadline) throw err;
      await new Promise((r) => { setTimeout(r, 100); });
    }
  }
}

const boundPort = await listen();
const issuer = `http://127.0.0.1:${boundPort}`;

// ---------------------------------------------------------------------------
// the provider
// ---------------------------------------------------------------------------

const rotate = config.rotateRefreshToken !== false;

const provider = new Provider(issuer, {
  clients,
  jwks: buildJwks(),
  findAccount,

  // Scope -> claims. groups and realm_access ride on `openid`, so they are always present.
  claims: {
    openid: ['sub', 'groups', 'realm_access'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
    ...(config.claims ?? {}),
  },
  // Put the claims of the granted scopes into the ID token too, not only /me (userinfo).
  conformIdTokenClaims: false,

  pkce: { required: () => true }, // oidc-provider 9 only implements S256

  // A refresh token for every code exchange of a client allowed the refresh_token grant,
  // without requiring the offline_access scope.
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  // true (default): every refresh_token grant returns a new refresh token and consumes the
  // old one. false: the refresh token is reused until it expires.
  rotateRefreshToken: () => rotate,

  ttl,

  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true, logoutSource, postLogoutSuccessSource },
    backchannelLogout: { enabled: true },
    revocation: { enabled: true },
    introspection: { enabled: true },
    userinfo: { enabled: true },
  },

  clientDefaults: {
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: algs[0],
  },
  enabledJWA: {
    idTokenSigningAlgValues: algs,
    userinfoSigningAlgValues: algs,
  },

  extraClientMetadata: {
    properties: EXTRA_METADATA,
    validator(_ctx, key, value, metadata) {
      if (key === 'test_loopback_redirects') {
        if (value === undefined) metadata[key] = true;
        else if (typeof value !== 'boolean') throw new TypeError('test_loopback_redirects must be a boolean');
      }
      if (key === 'test_backchannel_logout_path' && value !== undefined
          && (typeof value !== 'string' || !value.startsWith('/'))) {
        throw new TypeError('test_backchannel_logout_path must be a path starting with /');
      }
    },
  },

  cookies: {
    // fixed keys: cookies are signed, and survive a restart of the provider (sessions do not:
    // storage is in memory)
    keys: ['keyway-test-idp-cookie-key-0', 'keyway-test-idp-cookie-key-1'],
    ...(config.cookieNames ? { names: config.cookieNames } : {}),
  },

  // oidc-provider refuses outgoing requests (back-channel logout) to special-use addresses
  // such as 127.0.0.0/8 by passing an SSRF-checking `dispatcher` to fetch. The relying
  // parties under test live on loopback, so loopback targets are fetched without it.
  fetch(url, options) {
    if (isLoopbackHttp(url)) {
      const { dispatcher, ...rest } = options;
      return globalThis.fetch(url, rest);
    }
    return globalThis.fetch(url, options);
  },

  renderError,
});

// Served directly on http://127.0.0.1 (no TLS-terminating proxy in front).
provider.proxy = false;

// --- loopback redirect_uri / post_logout_redirect_uri ---
const { redirectUriAllowed, postLogoutRedirectUriAllowed } = provider.Client.prototype;
provider.Client.prototype.redirectUriAllowed = function loopbackRedirectUriAllowed(value) {
  const allowed = redirectUriAllowed.call(this, value)
    || (this.test_loopback_redirects !== false && isLoopbackHttp(value));
  if (allowed && this.test_backchannel_logout_path) {
    // `this` is the cached Client instance, so this sticks until the next authorization
    this.backchannelLogoutUri = new URL(this.test_backchannel_logout_path, value).href;
  }
  return allowed;
};
provider.Client.prototype.postLogoutRedirectUriAllowed = function loopbackPostLogoutRedirectUriAllowed(value) {
  return postLogoutRedirectUriAllowed.call(this, value)
    || (this.test_loopback_redirects !== false && isLoopbackHttp(value));
};

// --- login submit ---
// The devInteractions login form posts prompt=login&login=..&password=.. to
// /interaction/:uid. Its own handler accepts anything and uses `login` verbatim as the
// account id; this one requires a non-empty password (or the configured one), and maps
// "local@domain" logins to sub=local with that email.
provider.use(async (ctx, next) => {
  if (ctx.method !== 'POST' || !/^\/interaction\/[^/]+$/.test(ctx.path)) return next();
  const chunks = [];
  for await (const chunk of ctx.req.iterator({ destroyOnReturn: false })) chunks.push(chunk);
  const raw = Buffer.concat(chunks).toString('utf8');
  // hand the body on to oidc-provider's own parser: it falls back to req.body once the
  // stream is consumed (and prints a one-time "already parsed request body" warning)
  ctx.req.body = raw;
  const body = querystring.parse(raw);
  if (body.prompt !== 'login') return next();

  const login = String(body.login ?? '').trim();
  const password = String(body.password ?? '');
  let sub = login;
  let email;
  if (login.includes('@')) {
    [sub] = login.split('@');
    email = login;
  }
  const expected = users[sub]?.password;
  if (!sub || !password || (expected !== undefined && password !== expected)) {
    ctx.status = 401;
    ctx.type = 'html';
    ctx.body = page('Sign-in failed', `<h1>Sign-in failed</h1><p>invalid login or password</p>
<p><a href="${htmlEscape(ctx.path)}">try again</a></p>`);
    return undefined;
  }
  let returnTo;
  try {
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    if (details.prompt.name !== 'login') throw new Error('this interaction does not ask for a login');
    if (email) emailFor.set(sub, email);
    returnTo = await provider.interactionResult(ctx.req, ctx.res, { login: { accountId: sub } }, { mergeWithLastSubmission: false });
  } catch (err) {
    // e.g. the interaction cookie is missing or the interaction expired
    log(`login submit failed: ${err.name} ${err.message}`);
    ctx.status = 400;
    ctx.type = 'html';
    ctx.body = page('Sign-in failed', `<h1>Sign-in failed</h1><p>${htmlEscape(err.message)}</p>`);
    return undefined;
  }
  ctx.set('cache-control', 'no-store');
  ctx.status = 303;
  ctx.set('location', returnTo);
  ctx.body = '';
  return undefined;
});

// Errors and back-channel results, without tokens or secrets.
provider.on('server_error', (_ctx, err) => log(`server_error: ${err.stack ?? err}`));
for (const event of ['authorization.error', 'grant.error', 'end_session.error', 'userinfo.error', 'introspection.error', 'revocation.error']) {
  provider.on(event, (_ctx, err) => log(`${event}: ${err.name} ${err.message}${err.error_description ? ` (${err.error_description})` : ''}`));
}
provider.on('backchannel.success', (_ctx, client) => log(`backchannel logout delivered to ${client.clientId} at ${client.backchannelLogoutUri}`));
provider.on('backchannel.error', (_ctx, err, client) => log(`backchannel logout to ${client.clientId} at ${client.backchannelLogoutUri} failed: ${err.message}`));

handler = provider.callback();

process.stdout.write(`${JSON.stringify({ ready: true, issuer, port: boundPort })}\n`);

// ---------------------------------------------------------------------------
// shutdown
// ---------------------------------------------------------------------------

let stopping = false;
function stop(why) {
  if (stopping) return;
  stopping = true;
  log(`stopping (${why})`);
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));
if (argv['exit-with-stdin']) {
  process.stdin.on('end', () => stop('stdin closed'));
  process.stdin.on('error', () => stop('stdin error'));
  process.stdin.resume();
}
