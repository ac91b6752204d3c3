import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { useEmulator, useService } from '../support/fixtures.js';

/** Debian's `chromium` package; no browser is downloaded. `.ci/run` installs it when missing. */
const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/**
 * The whole SPA: a page whose script calls the API with a bearer token, as an MSAL.js app does,
 * and reports what browser code can see of the answer (only CORS-exposed headers are visible).
 */
const SPA_PAGE = `<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>SPA</title></head>
<body>
<script>
  window.callApi = async function (url, token) {
    try {
      const response = await fetch(url, { headers: token ? { Authorization: 'Bearer ' + token } : {} });
      const challenge = response.headers.get('WWW-Authenticate');
      const encodedClaims = challenge && /claims="([^"]+)"/.exec(challenge);
      return {
        reached: true,
        status: response.status,
        body: await response.json(),
        requestId: response.headers.get('x-request-id'),
        wwwAuthenticate: challenge,
        claims: encodedClaims ? JSON.parse(atob(encodedClaims[1])) : null,
      };
    } catch (error) {
      return { reached: false, error: String(error) };
    }
  };
</script>
</body>
</html>`;

interface ApiCall {
  reached: boolean;
  status?: number;
  body?: { id?: string; error?: string };
  requestId?: string | null;
  wwwAuthenticate?: string | null;
  claims?: { access_token?: Record<string, unknown> } | null;
  error?: string;
}

async function serveSpa(): Promise<{ server: Server; port: number }> {
  const server = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(SPA_PAGE);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as AddressInfo).port };
}

describe('a browser SPA on another origin (headless Chromium)', function () {
  this.timeout(60_000);
  let spa: { server: Server; port: number } | undefined;
  let userDataDir: string;
  let browser: BrowserContext;
  let page: Page;
  let spaOrigin: string;

  before(function () {
    if (!existsSync(CHROMIUM)) {
      if (process.env['CI']) throw new Error(`${CHROMIUM} is missing: .ci/run installs Debian's chromium package`);
      process.stderr.write(`  skipping the browser tests: ${CHROMIUM} is missing (apt-get install -y chromium); in CI this fails\n`);
      this.skip();
    }
  });
  const emulator = useEmulator();
  before(async () => {
    spa = await serveSpa();
    // localhost vs 127.0.0.1 and another port: a different origin from the API's.
    spaOrigin = `http://localhost:${spa.port}`;
  });
  const api = useService(emulator, () => ({ CORS_ALLOWED_ORIGINS: spaOrigin }));
  before(async () => {
    userDataDir = await mkdtemp(join(tmpdir(), 'obo-chromium-'));
    browser = await chromium.launchPersistentContext(userDataDir, { executablePath: CHROMIUM, headless: true, args: CHROMIUM_FLAGS });
    page = browser.pages()[0] ?? (await browser.newPage());
  });
  after(async () => {
    await browser?.close();
    if (userDataDir) await rm(userDataDir, { recursive: true, force: true });
    spa?.server.closeAllConnections();
    spa?.server.close();
  });

  /** Runs the page's callApi (in the browser: `globalThis` is the page's window). */
  const call = (url: string, token?: string) =>
    page.evaluate(([u, t]) => (globalThis as unknown as { callApi: (u: string, t?: string) => Promise<ApiCall> }).callApi(u, t), [
      url,
      token,
    ] as const);

  it('calls the API with a bearer token through a CORS preflight', async () => {
    await page.goto(`${spaOrigin}/`);
    emulator.resetCounters();
    const result = await call(`${api.baseUrl}/api/me`, emulator.mint({ user: 'alice' }));
    expect(result).to.include({ reached: true, status: 200 });
    expect(result.body?.id).to.equal(emulator.users.alice.oid);
    expect(result.requestId, 'x-request-id is readable').to.match(/^[0-9a-f-]{36}$/);
    // The Authorization header made the browser ask first; the preflight was answered without a token.
    const lines = api.logs.map((line) => JSON.parse(line) as { msg: string; method?: string; status?: number });
    const preflight = lines.find((line) => line.msg === 'request' && line.method === 'OPTIONS');
    expect(preflight?.status).to.equal(204);
    expect(emulator.counters.token).to.equal(1);
  });

  it("reads a 401 claims challenge's WWW-Authenticate header (MFA required)", async () => {
    await page.goto(`${spaOrigin}/`);
    emulator.setUser('alice', { mfaRequired: true });
    try {
      const result = await call(`${api.baseUrl}/api/me`, emulator.mint({ user: 'alice' }));
      expect(result).to.include({ reached: true, status: 401 });
      expect(result.body?.error).to.equal('insufficient_claims');
      expect(result.wwwAuthenticate)
        .to.match(/^Bearer /)
        .and.include('error="insufficient_claims"');
      // What MSAL.js needs to ask the user for MFA: the decoded claims request.
      expect(result.claims?.access_token).to.be.an('object');
    } finally {
      emulator.setUser('alice', { mfaRequired: false });
    }
  });

  it('is blocked by the browser from an origin that is not allowed, before any token leaves it', async () => {
    await page.goto(`http://127.0.0.1:${spa?.port ?? 0}/`);
    emulator.resetCounters();
    const result = await call(`${api.baseUrl}/api/me`, emulator.mint({ user: 'alice' }));
    expect(result.reached).to.equal(false);
    expect(result.error).to.match(/TypeError/);
    expect(emulator.counters.token + emulator.counters.graph).to.equal(0);
  });
});
