#!/usr/bin/env node
// HTTP-only (no browser) sign-in client for keyway's integration tests.
//
//   node signin.mjs --url http://127.0.0.1:GWPORT/some/page [--login alice] [--password x]
//                   [--cookie-file F] [--max-steps 40] [--timeout-ms 15000]
//
// Starting at --url (the gateway), follows redirects by hand and submits the provider's
// pages as a browser would: the devInteractions login form (login + password), the consent
// form, the end_session "do you want to sign out" form (logout=yes) and auto-submitting
// form_post pages. It stops at the first non-redirect response that is not such a provider
// form, and prints ONE JSON line:
//   {"status":N,"url":"...","body":"<first 10000 chars>","cookies":{"name":"value",...},
//    "steps":[{"method","url","status","location"},...]}
// (+ "error":"..." when something failed). `cookies` are the jar's cookies for the
// gateway's host:port. Exit status 0 when the final response came from the gateway's origin,
// 1 otherwise.
//
// Without --login, a login form is not filled in: the run stops there (exit 1). That is how
// a test checks that a session reused through --cookie-file needs no new sign-in.
//
// The cookie jar is keyed by host:port (unlike a browser, which shares cookies between
// ports of one host), honours Path, Max-Age and Expires, and ignores Domain.

import * as fs from 'node:fs';
import * as http from 'node:http';
import { parseArgs } from 'node:util';

const { values: argv } = parseArgs({
  options: {
    url: { type: 'string' },
    login: { type: 'string' },
    password: { type: 'string', default: 'pw' },
    'cookie-file': { type: 'string' },
    'max-steps': { type: 'string', default: '40' },
    'timeout-ms': { type: 'string', default: '15000' },
    // The gateway's origin, when --url is elsewhere (a provider URL): stop at its first answer.
    gateway: { type: 'string' },
  },
  strict: true,
});

if (!argv.url) {
  process.stderr.write('usage: node signin.mjs --url URL [--login NAME] [--password PW] [--cookie-file F]\n');
  process.exit(2);
}

const BODY_LIMIT = 10000;
const maxSteps = Number(argv['max-steps']);
const deadline = Date.now() + Number(argv['timeout-ms']);

// ---------------------------------------------------------------------------
// cookie jar: { "host:port": [{name, value, path, expires (ms epoch or null), ...}] }
// ---------------------------------------------------------------------------

let jar = {};
if (argv['cookie-file'] && fs.existsSync(argv['cookie-file'])) {
  const text = fs.readFileSync(argv['cookie-file'], 'utf8');
  if (text.trim() !== '') jar = JSON.parse(text); // an empty file is an empty jar
}

const now = () => Date.now();
const alive = (c) => c.expires === null || c.expires === undefined || c.expires > now();

function defaultPath(url) {
  // RFC 6265 5.1.4: the request path up to, not including, its last '/'
  const p = url.pathname;
  if (!p.startsWith('/') || p.lastIndexOf('/') === 0) return '/';
  return p.slice(0, p.lastIndexOf('/'));
}

function pathMatches(cookiePath, requestPath) {
  if (requestPath === cookiePath) return true;
  if (!requestPath.startsWith(cookiePath)) return false;
  return cookiePath.endsWith('/') || requestPath[cookiePath.length] === '/';
}

function storeCookies(url, setCookies) {
  const key = url.host;
  let list = (jar[key] ?? []).filter(alive);
  for (const header of setCookies) {
    const [pair, ...attrs] = header.split(';');
    const eq = pair.indexOf('=');
    if (eq <= 0) continue;
    const cookie = {
      name: pair.slice(0, eq).trim(),
      value: pair.slice(eq + 1).trim(),
      path: defaultPath(url),
      expires: null,
      httpOnly: false,
      secure: false,
      sameSite: null,
    };
    let maxAge;
    for (const attr of attrs) {
      const i = attr.indexOf('=');
      const name = (i === -1 ? attr : attr.slice(0, i)).trim().toLowerCase();
      const value = i === -1 ? '' : attr.slice(i + 1).trim();
      if (name === 'path' && value.startsWith('/')) cookie.path = value;
      else if (name === 'max-age' && /^-?\d+$/.test(value)) maxAge = Number(value);
      else if (name === 'expires') {
        const t = Date.parse(value);
        if (!Number.isNaN(t)) cookie.expires = t;
      } else if (name === 'httponly') cookie.httpOnly = true;
      else if (name === 'secure') cookie.secure = true;
      else if (name === 'samesite') cookie.sameSite = value;
    }
    if (maxAge !== undefined) cookie.expires = maxAge <= 0 ? 0 : now() + maxAge * 1000; // Max-Age wins
    list = list.filter((c) => !(c.name === cookie.name && c.path === cookie.path));
    if (alive(cookie)) list.push(cookie);
  }
  jar[key] = list;
}

function cookieHeader(url) {
  const list = (jar[url.host] ?? []).filter((c) => alive(c) && pathMatches(c.path, url.pathname));
  list.sort((a, b) => b.path.length - a.path.length); // RFC 6265: longer paths first
  return list.map((c) => `${c.name}=${c.value}`).join('; ');
}

// ---------------------------------------------------------------------------
// minimal HTML form parsing (the provider's pages are simple and machine-generated)
// ---------------------------------------------------------------------------

const decodeEntities = (s) => s
  .replace(/&#x([0-9a-f]+);/gi, (_, h) => String.fromCodePoint(parseInt(h, 16)))
  .replace(/&#(\d+);/g, (_, d) => String.fromCodePoint(Number(d)))
  .replace(/&quot;/g, '"').replace(/&apos;/g, "'").replace(/&lt;/g, '<').replace(/&gt;/g, '>')
  .replace(/&amp;/g, '&');

function attributes(tag) {
  const attrs = {};
  const re = /([^\s=/>]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+)))?/g;
  const inner = tag.replace(/^<\s*[a-z]+/i, '').replace(/\/?>$/, '');
  for (const m of inner.matchAll(re)) {
    attrs[m[1].toLowerCase()] = decodeEntities(m[2] ?? m[3] ?? m[4] ?? '');
  }
  return attrs;
}

function parseForms(html, pageUrl) {
  const forms = [];
  for (const m of html.matchAll(/<form\b[^>]*>([\s\S]*?)<\/form>/gi)) {
    const attrs = attributes(m[0].match(/<form\b[^>]*>/i)[0]);
    const inputs = [...m[1].matchAll(/<input\b[^>]*>/gi)].map((i) => attributes(i[0]));
    forms.push({
      id: attrs.id,
      method: (attrs.method ?? 'get').toUpperCase(),
      action: new URL(attrs.action ?? pageUrl.href, pageUrl).href,
      inputs,
    });
  }
  return forms;
}

// Decide what a person would submit on a provider page; null when it is not such a page.
function formSubmission(html, pageUrl) {
  for (const form of parseForms(html, pageUrl)) {
    const fields = new URLSearchParams();
    for (const input of form.inputs) {
      if (input.name && (input.type ?? 'text') === 'hidden') fields.append(input.name, input.value ?? '');
    }
    const names = new Set(form.inputs.map((i) => i.name));
    if (names.has('login') && form.inputs.some((i) => i.type === 'password')) {
      if (argv.login === undefined) return { kind: 'login-required' };
      fields.set('login', argv.login);
      const pw = form.inputs.find((i) => i.type === 'password');
      fields.set(pw.name, argv.password);
      return { kind: 'login', form, fields };
    }
    if (fields.get('prompt') === 'consent') return { kind: 'consent', form, fields };
    if (form.id === 'op.logoutForm') {
      fields.set('logout', 'yes'); // the "Yes, sign me out" button
      return { kind: 'logout', form, fields };
    }
    // an auto-submitting page (form_post response mode, end_session without a session)
    if (/<script\b[^>]*>[\s\S]*\.submit\(/i.test(html) && form.method === 'POST') {
      return { kind: 'autosubmit', form, fields };
    }
  }
  return null;
}

// ---------------------------------------------------------------------------
// the walk
// ---------------------------------------------------------------------------

const start = new URL(argv.url);
const gateway = argv.gateway ? new URL(argv.gateway).origin : start.origin;
const steps = [];
let final = { status: 0, url: start.href, body: '' };
let error;

// One request over node:http rather than fetch: fetch (undici) always says
// `Sec-Fetch-Mode: cors`, which a gateway rightly reads as a script's call, not a navigation.
// The answer mimics the parts of a fetch Response this script uses.
function send(url, method, headers, body, timeoutMs) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers, timeout: timeoutMs }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        const setCookie = res.headers['set-cookie'] ?? [];
        resolve({
          status: res.statusCode,
          headers: {
            get: (name) => {
              const v = res.headers[name.toLowerCase()];
              return Array.isArray(v) ? v.join(', ') : (v ?? null);
            },
            getSetCookie: () => setCookie,
          },
          text: async () => text,
          arrayBuffer: async () => Buffer.from(text),
        });
      });
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

async function walk() {
  let request = { method: 'GET', url: start, body: undefined, contentType: undefined };
  let lastForm = null;
  while (steps.length < maxSteps) {
    const remaining = deadline - Date.now();
    if (remaining <= 0) throw new Error('timed out');
    // What a browser sends on a top-level navigation.
    const headers = {
      accept: 'text/html,application/xhtml+xml,*/*;q=0.8',
      'sec-fetch-mode': 'navigate',
      'user-agent': 'keyway-signin/1',
    };
    const cookie = cookieHeader(request.url);
    if (cookie) headers.cookie = cookie;
    if (request.contentType) headers['content-type'] = request.contentType;
    if (request.origin) headers.origin = request.origin; // the page that held the form
    const response = await send(request.url, request.method, headers, request.body, remaining);
    storeCookies(request.url, response.headers.getSetCookie());
    const location = response.headers.get('location');
    steps.push({
      method: request.method, url: request.url.href, status: response.status, location: location ?? null,
    });

    if (response.status >= 300 && response.status < 400 && location) {
      await response.arrayBuffer();
      const next = new URL(location, request.url);
      const keep = (response.status === 307 || response.status === 308) && request.method === 'POST';
      request = keep ? { ...request, url: next } : { method: 'GET', url: next };
      continue;
    }

    const body = await response.text();
    final = { status: response.status, url: request.url.href, body };
    if (request.url.origin === gateway) return; // the gateway answered

    const submission = formSubmission(body, request.url);
    if (!submission) return;
    if (submission.kind === 'login-required') throw new Error('the provider asks for a login and no --login was given');
    // the same form again right after submitting it: the provider refused it
    const signature = `${submission.kind} ${submission.form.action}`;
    if (signature === lastForm) throw new Error(`the provider showed the ${submission.kind} form again`);
    lastForm = signature;
    const action = new URL(submission.form.action);
    if (submission.form.method === 'POST') {
      request = {
        method: 'POST',
        url: action,
        body: submission.fields.toString(),
        contentType: 'application/x-www-form-urlencoded',
        origin: request.url.origin,
      };
    } else {
      action.search = submission.fields.toString();
      request = { method: 'GET', url: action };
    }
  }
  throw new Error(`more than ${maxSteps} steps`);
}

try {
  await walk();
} catch (err) {
  error = err.message;
}

if (argv['cookie-file']) {
  for (const key of Object.keys(jar)) jar[key] = jar[key].filter(alive);
  fs.writeFileSync(argv['cookie-file'], `${JSON.stringify(jar, null, 2)}\n`);
}

const gatewayCookies = Object.fromEntries(
  (jar[start.host] ?? []).filter(alive).map((c) => [c.name, c.value]),
);
const out = {
  status: final.status,
  url: final.url,
  body: final.body.slice(0, BODY_LIMIT),
  cookies: gatewayCookies,
  steps,
};
if (error) out.error = error;
process.stdout.write(`${JSON.stringify(out)}\n`);
process.exit(!error && new URL(final.url).origin === gateway ? 0 : 1);
