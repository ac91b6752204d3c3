import { randomBytes, randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { expect } from 'chai';
import { decodeJwt } from 'jose';
import { Agent } from 'undici';
import { ConfigError, loadConfig, type Environment } from '../../api/config/load-config.js';
import { createAppTokens } from '../../api/token/app-tokens.js';
import { createClientCredentialsGrant } from '../../api/token/exchange.js';
import { manualClock } from '../support/clock.js';
import { useEmulator, useRedis, useServices } from '../support/fixtures.js';
import { captureLogger } from '../support/logger.js';
import { metricsText, sample } from '../support/metrics.js';
import { startRecordingDownstream, type RecordingDownstream } from '../support/recording-downstream.js';
import type { TestService } from '../support/service.js';
import { bearer } from '../support/tokens.js';
import { until } from '../support/wait.js';

const ENCRYPTION_KEY = `k1:${randomBytes(32).toString('base64')}`;

interface LogLine {
  msg: string;
  [field: string]: unknown;
}
const requestLines = (api: TestService): LogLine[] => api.logs.map((line) => JSON.parse(line) as LogLine).filter((line) => line.msg === 'request');

describe('downstreams called as the app: "token": "app" (issue 12.3)', function () {
  this.timeout(60_000);
  // Synthetic users: any GUID oid is a user, so a test can be 100 of them.
  const emulator = useEmulator({ syntheticUsers: true });
  const redis = useRedis();
  const services = useServices(emulator);
  let downstream: RecordingDownstream;
  before(async () => {
    downstream = await startRecordingDownstream(() => ({ name: 'report' }));
  });
  after(() => downstream.close());
  beforeEach(() => {
    emulator.reset();
    downstream.received.length = 0;
  });

  const appScope = () => `${emulator.otherApi.appIdUri}/.default`;
  const environment = (entry: Record<string, unknown> = {}): Environment => ({
    DOWNSTREAM_APIS: JSON.stringify({
      reports: { baseUrl: downstream.url, scopes: [appScope()], allowedPaths: ['/reports/**'], token: 'app', ...entry },
    }),
  });
  const user = () => emulator.mint({ extraClaims: { oid: randomUUID() } });
  const report = (api: TestService, token = user()) => api.request.get('/api/downstream/reports/reports/daily').set(bearer(token));
  const authorization = (index: number) => downstream.received[index]?.headers.authorization ?? '';
  const clientCredentialsRequests = () => emulator.requests().filter((r) => r.grantType === 'client_credentials').length;

  it("sends the API's own app token (idtyp app), never the caller's token; the log line and metrics say token=app", async () => {
    const api = await services.start(environment());
    const token = user();
    const response = await report(api, token).expect(200);
    expect(response.body).to.deep.equal({ name: 'report' });
    const sent = authorization(0);
    expect(sent)
      .to.match(/^Bearer /)
      .and.not.include(token);
    const claims = decodeJwt(sent.slice('Bearer '.length));
    expect(claims).to.include({ idtyp: 'app', appid: emulator.api.clientId, aud: emulator.otherApi.appIdUri, tid: emulator.tenant.id });
    expect(claims).not.to.have.property('scp');
    expect(emulator.counters.token, 'no OBO exchange').to.equal(1);
    expect(clientCredentialsRequests()).to.equal(1);
    expect(requestLines(api).at(-1)).to.include({ token: 'app', cache: 'exchange', downstream: 'reports' });

    await report(api).expect(200);
    expect(requestLines(api).at(-1)).to.include({ token: 'app', cache: 'l1' });
    // Graph is still called on behalf of the user.
    await api.request.get('/api/me').set(bearer(emulator.mint())).expect(200);
    expect(requestLines(api).at(-1)).to.include({ token: 'user', cache: 'exchange' });
    const metrics = await metricsText(api);
    expect(sample(metrics, 'downstream_token_acquisitions_total', { token: 'app', cache: 'exchange' })).to.equal(1);
    expect(sample(metrics, 'downstream_token_acquisitions_total', { token: 'app', cache: 'l1' })).to.equal(1);
    expect(sample(metrics, 'downstream_token_acquisitions_total', { token: 'user', cache: 'exchange' })).to.equal(1);
  });

  it('100 users at once cause one client-credentials request', async () => {
    const api = await services.start(environment());
    const responses = await Promise.all(Array.from({ length: 100 }, () => report(api)));
    expect(responses.map((r) => r.status).filter((status) => status !== 200)).to.deep.equal([]);
    expect(emulator.counters.token).to.equal(1);
    expect(emulator.counters.clientCredentials).to.equal(1);
    expect(new Set(downstream.received.map((r) => r.headers.authorization)).size, 'one token for all').to.equal(1);
  });

  it('the caller must still be authenticated: no token, no grant and no downstream call', async () => {
    const api = await services.start(environment());
    await api.request.get('/api/downstream/reports/reports/daily').expect(401);
    await report(api, emulator.mint({ scp: 'User.Read' })).expect(403);
    expect(emulator.counters.token).to.equal(0);
    expect(downstream.received).to.have.length(0);
  });

  it("honours Entra's Retry-After on the grant: 503 with Retry-After, no new grant inside the window", async () => {
    const clock = manualClock();
    const api = await services.start(environment(), { now: clock.now });
    emulator.faults.injectToken({ status: 429, retryAfter: 20 });
    const throttled = await report(api).expect(503);
    expect(throttled.headers['retry-after']).to.equal('20');
    expect(emulator.counters.token).to.equal(1);
    clock.advance(5_000);
    const again = await report(api).expect(503);
    expect(Number(again.headers['retry-after'])).to.be.within(1, 15);
    expect(emulator.counters.token, 'no grant inside the window').to.equal(1);
    clock.advance(15_500);
    await report(api).expect(200);
    expect(emulator.counters.token).to.equal(2);
    expect(downstream.received).to.have.length(1);
  });

  it('refreshes ahead of expiry, once, while the cached token keeps being served', async () => {
    const clock = manualClock();
    emulator.setAppTokenLifetime(600);
    const api = await services.start(environment(), { now: clock.now });
    await report(api).expect(200);
    const first = authorization(0);
    // Past half its lifetime: served from L1, and one background refresh.
    clock.advance(320_000);
    await Promise.all([report(api).expect(200), report(api).expect(200)]);
    await until('the background refresh', () => emulator.counters.clientCredentials === 2);
    expect([authorization(1), authorization(2)]).to.deep.equal([first, first]);
    await report(api).expect(200);
    expect(authorization(3)).not.to.equal(first);
    expect(emulator.counters.clientCredentials).to.equal(2);
  });

  it('is shared through L2: a second instance serves it from Redis, under a key apart from every user partition', async () => {
    const env = { ...environment(), REDIS_URL: redis.url, CACHE_ENCRYPTION_KEYS: ENCRYPTION_KEY, CACHE_L2_TIMEOUT_MS: '1000' };
    const a = await services.start(env);
    const b = await services.start(env);
    for (const api of [a, b]) await until('L2 connected', async () => (await api.request.get('/readyz')).status === 200);
    await report(a).expect(200);
    await report(b).expect(200);
    expect(emulator.counters.clientCredentials).to.equal(1);
    expect(requestLines(b).at(-1)).to.include({ token: 'app', cache: 'l2' });
    const keys = await redis.client().keys('*app-token:*');
    expect(keys).to.have.length(1);
    expect(keys[0]).to.include(emulator.api.clientId);
  });

  it('a downstream 401 gets one fresh app token; when that is refused too, 502 and no grant per request after', async () => {
    let unauthorized = 1;
    const server = createServer((req, res) => {
      const status = unauthorized > 0 ? 401 : 200;
      unauthorized -= 1;
      res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify({ status, authorization: req.headers.authorization }));
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      const api = await services.start(environment({ baseUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}` }));
      const fresh = await report(api).expect(200);
      expect(emulator.counters.clientCredentials, 'the 401 was answered with a new app token').to.equal(2);
      unauthorized = 1_000;
      await report(api).expect(502);
      expect(emulator.counters.clientCredentials).to.equal(3);
      for (let i = 0; i < 5; i += 1) await report(api).expect(502);
      expect(emulator.counters.clientCredentials, 'one forced refresh per window, whoever calls').to.equal(3);
      expect(fresh.body).to.have.property('status', 200);
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('without a cache given, app tokens stay in the process (for the token that authenticates to Redis itself)', async () => {
    const { logger } = captureLogger();
    const dispatcher = new Agent();
    try {
      const grant = createClientCredentialsGrant({
        authorityHost: emulator.authorityHost,
        clientId: emulator.api.clientId,
        credential: { kind: 'secret', secret: emulator.api.clientSecret },
        tenantId: emulator.tenant.id,
        timeoutMs: 5_000,
        dispatcher,
        logger,
      });
      const tokens = createAppTokens(grant, { clientId: emulator.api.clientId, logger });
      const scopes = ['https://redis.azure.com/.default'];
      const results = await Promise.all(Array.from({ length: 10 }, () => tokens.acquire(scopes)));
      expect(emulator.counters.clientCredentials).to.equal(1);
      const [token] = results;
      expect(decodeJwt(token?.accessToken ?? '')).to.include({ aud: 'https://redis.azure.com', idtyp: 'app' });
      expect(token?.expiresOn).to.be.above(Date.now() + 3_000_000);
      expect((await tokens.acquire(scopes)).source).to.equal('l1');
      expect(emulator.counters.clientCredentials).to.equal(1);
      await tokens.close();
    } finally {
      await dispatcher.close();
    }
  });
});

describe('DOWNSTREAM_APIS "token" (issue 12.3)', () => {
  const base: Environment = {
    AZURE_TENANT_ID: '72f988bf-86f1-41af-91ab-2d7cd011db47',
    AZURE_CLIENT_ID: '6e74172b-be56-4843-9ff4-e66a39bb12e3',
    AZURE_CLIENT_SECRET: 's',
  };
  const entry = (fields: Record<string, unknown>) =>
    JSON.stringify({ reports: { baseUrl: 'https://reports.example', allowedPaths: ['/**'], ...fields } });
  const problemsOf = (env: Environment): string[] => {
    try {
      loadConfig({ ...base, ...env });
    } catch (error) {
      expect(error).to.be.instanceOf(ConfigError);
      return (error as ConfigError).problems;
    }
    expect.fail('expected a ConfigError');
  };

  it('is user by default (absent), and app takes exactly one <resource>/.default scope', () => {
    const user = loadConfig({ ...base, DOWNSTREAM_APIS: entry({ scopes: ['api://reports/Reports.Read'] }) });
    expect(user.downstreams['reports']).not.to.have.property('token');
    const app = loadConfig({ ...base, DOWNSTREAM_APIS: entry({ scopes: ['api://reports/.default'], token: 'app' }) });
    expect(app.downstreams['reports']?.token).to.equal('app');
    expect(problemsOf({ DOWNSTREAM_APIS: entry({ scopes: ['api://reports/Reports.Read'], token: 'app' }) })).to.deep.equal([
      'DOWNSTREAM_APIS: "reports".scopes: an app token ("token": "app") is for one resource: expected exactly one scope "<resource>/.default"',
    ]);
    expect(problemsOf({ DOWNSTREAM_APIS: entry({ scopes: ['api://a/.default', 'api://b/.default'], token: 'app' }) })[0]).to.match(
      /exactly one scope/,
    );
    expect(problemsOf({ DOWNSTREAM_APIS: entry({ scopes: ['api://a/.default'], token: 'robot' }) })[0]).to.match(
      /^DOWNSTREAM_APIS: "reports".token: expected "user"/,
    );
  });

  it('needs a home tenant: app tokens cannot come from organizations or common', () => {
    expect(problemsOf({ AZURE_TENANT_ID: 'organizations', DOWNSTREAM_APIS: entry({ scopes: ['api://a/.default'], token: 'app' }) })).to.deep.equal([
      'DOWNSTREAM_APIS: "reports".token: app tokens come from the API\'s home tenant: set AZURE_TENANT_ID to a tenant id or domain, not organizations',
    ]);
  });
});
