#!/usr/bin/env node
// Headless-chromium scenario driver for keyway's integration tests (playwright-core with
// Debian's /usr/bin/chromium; no browser is ever downloaded).
//
//   node browser.mjs SCENARIO.json        or        node browser.mjs < SCENARIO.json
//
// A scenario is {"steps": [...], "timeoutMs": 15000, "ignoreHttpsErrors": false}; the steps
// run in order in one fresh browser context. Prints ONE JSON line:
//   {"ok":true|false,"results":[{"step":i,"action":"goto",...},...],"error":"..."|null}
// Exit status 0 when every step ran, 1 otherwise. The browser is always closed.
// See README.md for the step types and what each records.

import * as fs from 'node:fs';

import { chromium } from 'playwright-core';

const TEXT_LIMIT = 5000;

const readStdin = async () => {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
};

const source = process.argv[2] && process.argv[2] !== '-'
  ? fs.readFileSync(process.argv[2], 'utf8')
  : await readStdin();

const results = [];
let browser;
let finished = false;

function finish(ok, error) {
  if (finished) return;
  finished = true;
  process.stdout.write(`${JSON.stringify({ ok, results, error: error ?? null })}\n`);
}

async function closeBrowser() {
  if (!browser) return;
  const b = browser;
  browser = undefined;
  await Promise.race([b.close().catch(() => {}), new Promise((r) => { setTimeout(r, 5000).unref(); })]);
}

let scenario;
try {
  scenario = JSON.parse(source);
  if (!Array.isArray(scenario.steps)) throw new Error('scenario.steps must be an array');
} catch (err) {
  finish(false, `bad scenario: ${err.message}`);
  process.exit(1);
}

const timeoutMs = scenario.timeoutMs ?? 15000;

// Hard stop: however a step hangs, report, close the browser and exit.
const watchdogMs = timeoutMs * (scenario.steps.length + 1) + 10000;
setTimeout(async () => {
  finish(false, `scenario timed out after ${watchdogMs}ms`);
  await closeBrowser();
  process.exit(1);
}, watchdogMs).unref();

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, async () => {
    finish(false, `killed by ${signal}`);
    await closeBrowser();
    process.exit(1);
  });
}

const sleep = (ms) => new Promise((r) => { setTimeout(r, ms); });

// ---------------------------------------------------------------------------

async function run() {
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-quic'],
  });
  const context = await browser.newContext({ ignoreHTTPSErrors: !!scenario.ignoreHttpsErrors });
  context.setDefaultTimeout(timeoutMs);
  context.setDefaultNavigationTimeout(timeoutMs);
  const page = await context.newPage();

  // Main-frame navigation bookkeeping: the last document's status, and whether a navigation
  // is still in flight (redirect chains, auto-submitting forms, JS redirects).
  let lastStatus = null;
  let navigations = 0;
  const inflight = new Set();
  const isMainNav = (r) => r.isNavigationRequest() && r.frame() === page.mainFrame();
  page.on('request', (r) => {
    if (!isMainNav(r)) return;
    if (r.redirectedFrom()) inflight.delete(r.redirectedFrom());
    inflight.add(r);
  });
  page.on('requestfinished', (r) => inflight.delete(r));
  page.on('requestfailed', (r) => inflight.delete(r));
  page.on('response', (r) => {
    if (isMainNav(r.request()) && !(r.status() >= 300 && r.status() < 400)) lastStatus = r.status();
  });
  page.on('framenavigated', (f) => { if (f === page.mainFrame()) navigations += 1; });

  // Wait until the page is loaded and no main-frame navigation happened for `quietMs`.
  async function settle(quietMs = 300) {
    const end = Date.now() + timeoutMs;
    let seen = -1;
    while (Date.now() < end) {
      await page.waitForLoadState('load', { timeout: Math.max(1, end - Date.now()) }).catch(() => {});
      if (inflight.size === 0 && seen === navigations) return;
      seen = inflight.size === 0 ? navigations : -1;
      await sleep(quietMs);
    }
  }

  async function pageState() {
    let text = '';
    let title = '';
    try {
      title = await page.title();
      text = await page.evaluate(() => (document.body ? document.body.innerText : ''));
    } catch (err) {
      text = `<unavailable: ${err.message}>`;
    }
    return {
      url: page.url(), status: lastStatus, title, text: text.slice(0, TEXT_LIMIT),
    };
  }

  const isLoginPage = async () => (await page.$('form input[name="login"]')) !== null
    && (await page.$('form input[type="password"]')) !== null;
  const isConsentPage = async () => (await page.$('form input[name="prompt"][value="consent"]')) !== null;

  async function login({ login: name, password = 'pw' }) {
    await settle();
    const opOrigin = new URL(page.url()).origin;
    const out = { loginForm: false, consentForm: false };
    if (await isLoginPage()) {
      out.loginForm = true;
      await page.fill('input[name="login"]', String(name));
      await page.fill('input[type="password"]', String(password));
      await page.click('form button[type="submit"]');
      await settle();
    }
    if (new URL(page.url()).origin === opOrigin && await isConsentPage()) {
      out.consentForm = true;
      await page.click('form button[type="submit"]');
      await settle();
    }
    if (out.loginForm || out.consentForm) {
      // wait for the redirect back to the relying party
      const end = Date.now() + timeoutMs;
      while (new URL(page.url()).origin === opOrigin && Date.now() < end) {
        await sleep(100);
        await settle();
      }
      if (new URL(page.url()).origin === opOrigin) {
        const state = await pageState();
        throw Object.assign(new Error(`still on the provider after login: ${state.url} (${state.title})`), { state });
      }
    }
    return out;
  }

  async function pageFetch({
    url, method = 'GET', headers = {}, body, credentials = 'same-origin', redirect = 'follow',
  }) {
    return page.evaluate(async (args) => {
      try {
        const r = await fetch(args.url, {
          method: args.method, headers: args.headers, body: args.body, credentials: args.credentials, redirect: args.redirect,
        });
        const text = await r.text();
        return {
          status: r.status, contentType: r.headers.get('content-type'), body: text.slice(0, args.limit), redirected: r.redirected, url: r.url, type: r.type,
        };
      } catch (err) {
        return { error: String(err && err.message ? err.message : err) };
      }
    }, {
      url, method, headers, body, credentials, redirect, limit: TEXT_LIMIT,
    });
  }

  async function pageWebSocket({
    url, send, protocols, timeoutMs: wsTimeout = 5000,
  }) {
    return page.evaluate((args) => new Promise((resolve) => {
      const out = { opened: false };
      let ws;
      try {
        ws = args.protocols ? new WebSocket(args.url, args.protocols) : new WebSocket(args.url);
      } catch (err) {
        resolve({ ...out, error: String(err.message ?? err) });
        return;
      }
      const timer = setTimeout(() => {
        out.timedOut = true;
        try { ws.close(); } catch { /* already closed */ }
        resolve(out);
      }, args.timeout);
      ws.onopen = () => {
        out.opened = true;
        out.protocol = ws.protocol;
        if (args.send !== undefined && args.send !== null) ws.send(args.send);
      };
      ws.onerror = () => { out.error = true; };
      ws.onmessage = (e) => {
        out.message = typeof e.data === 'string' ? e.data.slice(0, args.limit) : '[binary]';
        clearTimeout(timer);
        ws.onclose = null;
        ws.close(1000);
        resolve(out);
      };
      ws.onclose = (e) => {
        out.closeCode = e.code;
        out.closeReason = e.reason;
        out.wasClean = e.wasClean;
        clearTimeout(timer);
        resolve(out);
      };
    }), {
      url, send, protocols, timeout: wsTimeout, limit: TEXT_LIMIT,
    });
  }

  for (const [index, step] of scenario.steps.entries()) {
    const action = Object.keys(step).find((k) => k !== 'timeoutMs');
    const result = { step: index, action };
    results.push(result);
    try {
      switch (action) {
        case 'goto': {
          try {
            await page.goto(step.goto, { waitUntil: 'load' });
          } catch (err) {
            // an auto-submitting page (e.g. end_session) starts the next navigation early
            if (!/interrupted by another navigation/i.test(err.message)) throw err;
          }
          await settle();
          Object.assign(result, await pageState());
          break;
        }
        case 'login':
          Object.assign(result, await login(step.login), await pageState());
          break;
        case 'fetch':
          Object.assign(result, await pageFetch(typeof step.fetch === 'string' ? { url: step.fetch } : step.fetch));
          break;
        case 'request': {
          // a request from outside the browser (no cookies, no page): e.g. a refusal the open page must show
          const r = await fetch(step.request, { redirect: 'manual' });
          result.status = r.status;
          break;
        }
        case 'websocket':
          Object.assign(result, await pageWebSocket(step.websocket));
          break;
        case 'cookies':
          // never the values: only their length
          result.cookies = (await context.cookies()).map((c) => ({
            name: c.name,
            domain: c.domain,
            path: c.path,
            httpOnly: c.httpOnly,
            sameSite: c.sameSite,
            secure: c.secure,
            expires: c.expires,
            valueLength: c.value.length,
          }));
          break;
        case 'screenshot':
          await page.screenshot({ path: step.screenshot, fullPage: true });
          result.path = step.screenshot;
          break;
        case 'click':
          await page.click(step.click);
          await settle();
          Object.assign(result, await pageState());
          break;
        case 'fill':
          await page.fill(step.fill.selector, String(step.fill.value));
          break;
        case 'waitForText':
          await page.waitForFunction(
            (t) => !!document.body && document.body.innerText.includes(t),
            step.waitForText,
            { timeout: step.timeoutMs ?? timeoutMs },
          );
          Object.assign(result, await pageState());
          break;
        case 'waitForUrl': {
          // substring of the page URL to wait for
          const end = Date.now() + (step.timeoutMs ?? timeoutMs);
          while (!page.url().includes(step.waitForUrl)) {
            if (Date.now() > end) throw new Error(`url never contained ${step.waitForUrl}; now ${page.url()}`);
            await sleep(100);
          }
          await settle();
          Object.assign(result, await pageState());
          break;
        }
        case 'evaluate':
          result.result = await page.evaluate(step.evaluate);
          break;
        default:
          throw new Error(`unknown step ${JSON.stringify(step)}`);
      }
    } catch (err) {
      result.error = err.message.split('\n')[0];
      if (err.state) Object.assign(result, err.state);
      else Object.assign(result, await pageState().catch(() => ({})));
      throw new Error(`step ${index} (${action}) failed: ${result.error}`);
    }
  }
}

let exitCode = 0;
try {
  await run();
  finish(true);
} catch (err) {
  finish(false, err.message.split('\n')[0]);
  exitCode = 1;
} finally {
  await closeBrowser();
}
process.exit(exitCode);
