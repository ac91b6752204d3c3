import { once } from 'node:events';
import { createServer, request as httpRequest, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { expect } from 'chai';
import { startEmulator, type Emulator } from '../emulator/index.js';
import { rawSocket } from '../support/raw-http.js';
import { startService, type TestService } from '../support/service.js';
import type { Context } from 'koa';
import { FUTILE_REFRESH_WINDOW_MS } from '../../api/token/token-provider.js';
import { isForwardableRequestHeader, responseHeadersForCaller } from '../../api/downstream/headers.js';
import { securityHeaders } from '../../middleware/security-headers.js';

interface RawAnswer {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/** A request whose path is sent exactly as written (no normalisation), with a reply timeout. */
function raw(baseUrl: string, path: string, headers: Record<string, string> = {}): Promise<RawAnswer> {
  const { hostname, port } = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ hostname, port, path, headers, timeout: 3000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('timeout', () => req.destroy(new Error(`no answer to ${path} within 3 s`)));
    req.on('error', reject);
    req.end();
  });
}

/** Issue 10, items 2, 3, 4, 6, 7 and 8, each reproduced against the assembled service. */
describe('security review findings (issue 10)', () => {
  let emulator: Emulator;
  let api: TestService;
  let clockOffsetMs = 0;
  /** A downstream that records what it receives and answers with headers of its own. */
  let echo: Server;
  let echoed: IncomingHttpHeaders[] = [];

  before(async () => {
    emulator = await startEmulator();
    echo = createServer((req, res) => {
      echoed.push(req.headers);
      res.writeHead(200, {
        'content-type': 'application/json',
        etag: '"v1"',
        'content-security-policy': 'default-src *',
        'content-security-policy-report-only': "default-src 'none'; report-uri https://downstream.example/csp",
        'x-frame-options': 'ALLOWALL',
        'x-content-type-options': 'none',
        'referrer-policy': 'unsafe-url',
        'cross-origin-opener-policy': 'unsafe-none',
        'strict-transport-security': 'max-age=0',
        'cache-control': 'public, max-age=86400',
      });
      res.end('{"ok":true}');
    });
    echo.listen(0, '127.0.0.1');
    await once(echo, 'listening');
    const echoBase = `http://127.0.0.1:${(echo.address() as AddressInfo).port}/echo`;
    api = await startService(
      emulator,
      {
        TRUST_PROXY_HOPS: '1',
        DOWNSTREAM_APIS: JSON.stringify({
          echo: { baseUrl: echoBase, scopes: ['https://graph.microsoft.com/User.Read'], allowedPaths: ['/**'] },
        }),
      },
      { now: () => Date.now() + clockOffsetMs },
    );
  });
  after(async () => {
    await api?.close();
    await emulator?.close();
    echo?.close();
  });
  beforeEach(() => {
    emulator.reset();
    emulator.resetCounters();
    echoed = [];
  });

  const bearer = (token = emulator.mint()) => ({ authorization: `Bearer ${token}` });

  it('10.2 method and URL override headers never reach the downstream; ordinary ones do', async () => {
    const overrides = {
      'x-http-method-override': 'DELETE',
      'x-http-method': 'DELETE',
      'x-method-override': 'DELETE',
      'x-original-url': '/users/victim',
      'x-rewrite-url': '/users/victim',
    };
    const response = await api.request
      .get('/api/downstream/echo/v1.0/me/messages')
      .set(bearer())
      .set(overrides)
      .set('X-HTTP-Method-Override', 'PATCH') // any spelling
      .set('prefer', 'return=minimal')
      .expect(200);
    expect(response.body).to.deep.equal({ ok: true });
    expect(echoed).to.have.length(1);
    const received = echoed[0] ?? {};
    for (const name of Object.keys(overrides)) expect(received, name).not.to.have.property(name);
    expect(received['prefer']).to.equal('return=minimal');
    // The same rule, for the headers of $batch items.
    for (const name of [...Object.keys(overrides), 'X-HTTP-Method-Override', 'X-Original-URL'])
      expect(isForwardableRequestHeader(name), name).to.equal(false);
    expect(isForwardableRequestHeader('Prefer')).to.equal(true);
  });

  it('10.3 the router and the authentication gate agree on what /api is: no token is 401 or 404, never 200 or 5xx', async () => {
    const paths = [
      '/API/me',
      '/Api/me',
      '/Api/graph/v1.0/me',
      '/API/GRAPH/v1.0/me',
      '/%61pi/me',
      '/%41PI/me',
      '/api/me/',
      '/API/me/',
      '/Api/graph/v1.0/me/',
      '/api/Me',
      '/api',
    ];
    for (const path of paths) {
      const { status, body } = await raw(api.baseUrl, path);
      expect([401, 404], `${path}: ${status} ${body}`).to.include(status);
      expect(JSON.parse(body)).to.have.property('error');
    }
    expect(api.logs.filter((line) => line.includes('unhandled error'))).to.deep.equal([]);
    expect(emulator.counters.token).to.equal(0);
  });

  it('10.4 a downstream that keeps answering 401: one forced refresh per window, not one or two exchanges per request', async () => {
    const token = emulator.mint();
    emulator.faults.injectGraph({ path: '/v1.0/me', status: 401, code: 'InvalidAuthenticationToken', times: 'always' });
    for (let i = 0; i < 12; i += 1) {
      const response = await api.request.get('/api/graph/v1.0/me').set(bearer(token)).expect(502);
      expect((response.body as { error?: string }).error).to.equal('bad_gateway');
    }
    expect(emulator.counters.token, 'the first exchange and one forced refresh').to.equal(2);
    // Another partition (another token of the same user) is not held back by this one.
    await api.request.get('/api/graph/v1.0/me').set(bearer(emulator.mint())).expect(502);
    expect(emulator.counters.token).to.equal(4);
    // Once the window has passed, one more forced refresh is tried; then quiet again.
    clockOffsetMs += FUTILE_REFRESH_WINDOW_MS + 1000;
    try {
      for (let i = 0; i < 3; i += 1) await api.request.get('/api/graph/v1.0/me').set(bearer(token)).expect(502);
      expect(emulator.counters.token).to.equal(5);
      // When the downstream recovers, the token kept in the cache works again without an exchange.
      emulator.faults.clear();
      await api.request.get('/api/graph/v1.0/me').set(bearer(token)).expect(200);
      expect(emulator.counters.token).to.equal(5);
    } finally {
      clockOffsetMs = 0;
    }
  });

  it('10.6 an invalid Host (or trusted X-Forwarded-Host) on /api is a 400 in our JSON shape, before authentication, with no stack logged', async () => {
    const requests = [
      'GET /api/me HTTP/1.1\r\nHost: exa mple.com\r\nConnection: close\r\n\r\n',
      'GET /api/me HTTP/1.1\r\nHost: [::1\r\nConnection: close\r\n\r\n',
      'GET /api/graph/v1.0/me HTTP/1.1\r\nHost: a:b:c\r\nConnection: close\r\n\r\n',
      'GET /api/me HTTP/1.1\r\nHost: %zz\r\nConnection: close\r\n\r\n',
      'GET /api/me HTTP/1.1\r\nHost: a/b\r\nConnection: close\r\n\r\n',
      'GET /api/me HTTP/1.1\r\nHost: x:99999\r\nConnection: close\r\n\r\n',
      'GET /api/me HTTP/1.0\r\nConnection: close\r\n\r\n',
      `GET /api/me HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-Host: exa mple.com\r\nConnection: close\r\n\r\n`,
      `GET /api/me HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-Host: [::1, localhost\r\nConnection: close\r\n\r\n`,
    ];
    const logsBefore = api.logs.length;
    for (const bytes of requests) {
      const { status, body } = await rawSocket(api.baseUrl, bytes);
      expect(status, bytes).to.equal(400);
      expect(JSON.parse(body), bytes).to.deep.equal({ error: 'invalid_host', message: 'The Host header is not a valid host.' });
    }
    const logs = api.logs.slice(logsBefore);
    expect(logs.filter((line) => /unhandled error|"stack"|TypeError/.test(line))).to.deep.equal([]);
    // Valid hosts still work.
    const ok = await rawSocket(api.baseUrl, `GET /healthz HTTP/1.1\r\nHost: [::1]:8080\r\nConnection: close\r\n\r\n`);
    expect(ok.status).to.equal(200);
    const unauthenticated = await rawSocket(api.baseUrl, 'GET /api/me HTTP/1.1\r\nHost: api.example.com:443\r\nConnection: close\r\n\r\n');
    expect(unauthenticated.status).to.equal(401);
  });

  it('10.7 /docs/<name of an Object.prototype member> is a 404, not a hang', async () => {
    for (const name of ['constructor', 'toString', 'hasOwnProperty', 'valueOf', '__proto__', '__defineGetter__']) {
      const { status, body } = await raw(api.baseUrl, `/docs/${name}`);
      expect(status, name).to.equal(404);
      expect(JSON.parse(body)).to.deep.include({ error: 'not_found' });
    }
    await api.request.get('/docs/swagger-ui.css').expect(200);
  });

  it("10.8 the downstream's headers never replace our security headers", async () => {
    const response = await api.request.get('/api/downstream/echo/v1.0/me').set(bearer()).expect(200);
    expect(response.headers['etag'], 'other headers still pass').to.equal('"v1"');
    expect(response.headers['content-security-policy']).to.equal("default-src 'none'; frame-ancestors 'none'");
    expect(response.headers['content-security-policy-report-only']).to.equal(undefined);
    expect(response.headers['x-frame-options']).to.equal('DENY');
    expect(response.headers['x-content-type-options']).to.equal('nosniff');
    expect(response.headers['referrer-policy']).to.equal('no-referrer');
    expect(response.headers['cross-origin-opener-policy']).to.equal('same-origin');
    expect(response.headers['strict-transport-security']).to.equal('max-age=31536000; includeSubDomains');
    expect(response.headers['cache-control']).to.equal('no-store');
  });

  it('10.8 every header middleware/security-headers.ts sets is one the downstream cannot send', async () => {
    const ours: Record<string, string> = {};
    const ctx = { set: (headers: Record<string, string>) => Object.assign(ours, headers) } as unknown as Context;
    await securityHeaders()(ctx, () => Promise.resolve());
    expect(Object.keys(ours)).to.include.members(['content-security-policy', 'x-frame-options', 'cache-control']);
    const fromDownstream = Object.fromEntries(Object.keys(ours).map((name) => [name.toUpperCase(), 'downstream']));
    expect(responseHeadersForCaller({ ...fromDownstream, etag: '"v1"' })).to.deep.equal({ etag: '"v1"' });
  });
});
