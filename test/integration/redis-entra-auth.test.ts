/**
 * Issue 12.1, REDIS_AUTH=entra: the real service (msal-node, ioredis) authenticates to Redis
 * with its own Entra token for https://redis.azure.com, through a RESP proxy that behaves as
 * Azure Cache for Redis does (test/support/entra-redis-proxy.ts): AUTH <oid> <token> checked
 * against the emulator's keys, NOAUTH before it, and a connection closed when its token expires.
 * The emulator's app tokens live a few seconds here, so a test spans several of them.
 */
import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import { servicePrincipalId } from '../emulator/client-credentials.js';
import { useEmulator, useRedis, useServices } from '../support/fixtures.js';
import { startEntraRedisProxy, type EntraRedisProxy } from '../support/entra-redis-proxy.js';
import { metric } from '../support/metrics.js';
import type { TestService } from '../support/service.js';
import { sleep, until } from '../support/wait.js';

const KEYS = `k1:${randomBytes(32).toString('base64')}`;
/** Seconds an app token (the one for Redis) lives in these tests. */
const LIFETIME_S = 12;

interface Readiness {
  status: string;
  checks: { cacheL2: string; cacheL2Detail?: string; invalidations?: string; invalidationsLastSyncSeconds?: number };
}

async function readiness(api: TestService): Promise<{ status: number; body: Readiness }> {
  const response = await fetch(`${api.baseUrl}/readyz`);
  return { status: response.status, body: (await response.json()) as Readiness };
}

async function me(api: TestService, token: string): Promise<number> {
  const response = await fetch(`${api.baseUrl}/api/me`, { headers: { authorization: `Bearer ${token}` } });
  await response.arrayBuffer();
  return response.status;
}

describe('Redis with Entra ID authentication (REDIS_AUTH=entra), through an Azure-like proxy', function () {
  this.timeout(120_000);
  const emulator = useEmulator();
  const redis = useRedis();
  const apis = useServices(emulator);
  let proxy: EntraRedisProxy;

  before(async () => {
    const tenant = emulator.tenant.id;
    proxy = await startEntraRedisProxy({
      backendPort: redis.port,
      jwksUrl: `${emulator.authorityHost}/${tenant}/discovery/v2.0/keys`,
      issuers: [`https://sts.windows.net/${tenant}/`],
    });
  });
  after(async () => {
    await proxy?.close();
  });
  beforeEach(() => {
    emulator.faults.clear();
    emulator.setAppTokenLifetime(LIFETIME_S);
  });
  afterEach(() => {
    emulator.faults.clear();
    emulator.setAppTokenLifetime(3599);
  });

  // A generous command timeout: on a loaded test machine a 100 ms one costs L2 reads (and exchanges) that have nothing to do with authentication.
  const env = (more: Record<string, string> = {}) => ({
    REDIS_URL: proxy.url,
    REDIS_AUTH: 'entra',
    CACHE_ENCRYPTION_KEYS: KEYS,
    CACHE_L2_TIMEOUT_MS: '1000',
    LOG_LEVEL: 'info',
    ...more,
  });
  const stats = () => ({ ...proxy.stats });
  /** Token endpoint requests that were not for Redis's token (OBO exchanges). */
  const exchanges = () => emulator.counters.token - emulator.counters.clientCredentials;

  async function started(api: TestService): Promise<void> {
    await until(
      'L2 up and invalidations flowing',
      async () => {
        const { body } = await readiness(api);
        return body.checks.cacheL2 === 'up' && body.checks.invalidations === 'flowing';
      },
      15_000,
    );
  }

  it('authenticates every connection as the service principal, and refuses a password in the URL', async () => {
    const before = stats();
    const api = await apis.start(env({ RATE_LIMIT_PER_MINUTE: '100000' }));
    await started(api);
    const alice = emulator.mint({ user: 'alice' });
    expect(await me(api, alice)).to.equal(200);
    expect(await me(api, alice)).to.equal(200);
    const after = stats();
    // Commands, subscriber, rate limiter: each one AUTHed as the service principal's oid, none refused.
    expect(after.authAccepted - before.authAccepted).to.be.at.least(3);
    expect(after.authRefused - before.authRefused).to.equal(0);
    expect(after.unauthenticated - before.unauthenticated).to.equal(0);
    expect(new Set(proxy.users)).to.deep.equal(new Set([servicePrincipalId(emulator.api.clientId, emulator.tenant.id)]));
    expect(await metric(api, 'obo_cache_l2_errors_total', { op: 'set', kind: 'error' })).to.equal(0);

    // An access key left in the URL is a configuration error, named without the key.
    let refused: unknown;
    try {
      await apis.start(env({ REDIS_URL: `redis://:an-access-key@127.0.0.1:${proxy.port}` }));
    } catch (error) {
      refused = error;
    }
    expect(String(refused)).to.contain('REDIS_URL').and.contain('REDIS_AUTH=entra').and.not.contain('an-access-key');
  });

  it('across two token lifetimes under steady load: no request fails, L2 hits continue, re-AUTHs accepted, no connection outlives its token', async () => {
    const before = stats();
    const grantsBefore = emulator.counters.clientCredentials;
    // L1 off: every request reads L2, so a lapse in Redis authentication would show at once.
    const api = await apis.start(env({ CACHE_L1_MAX_BYTES: '0' }));
    await started(api);
    const users = [emulator.mint({ user: 'alice' }), emulator.mint({ user: 'bob' })];
    for (const token of users) expect(await me(api, token)).to.equal(200);
    const exchangesBefore = exchanges();

    const statuses: number[] = [];
    const l2HitsPerPhase: number[] = [];
    const phases = 6;
    for (let phase = 0; phase < phases; phase++) {
      const hitsBefore = (await metric(api, 'obo_cache_hits_total', { level: 'l2' })) ?? 0;
      const phaseEnds = Date.now() + (2 * LIFETIME_S * 1000) / phases + 500;
      while (Date.now() < phaseEnds) {
        statuses.push(...(await Promise.all(users.map((token) => me(api, token)))));
        await sleep(50);
      }
      l2HitsPerPhase.push(((await metric(api, 'obo_cache_hits_total', { level: 'l2' })) ?? 0) - hitsBefore);
    }

    expect(
      statuses.filter((status) => status !== 200),
      'failed requests',
    ).to.deep.equal([]);
    expect(
      l2HitsPerPhase.every((hits) => hits > 0),
      `L2 hits per phase: ${l2HitsPerPhase.join(', ')}`,
    ).to.equal(true);
    expect(exchanges() - exchangesBefore, 'OBO exchanges during the load').to.equal(0);
    const after = stats();
    expect(emulator.counters.clientCredentials - grantsBefore, 'Redis tokens fetched').to.be.at.least(2);
    expect(after.unauthenticated - before.unauthenticated, 'NOAUTH answers').to.equal(0);
    expect(after.authRefused - before.authRefused, 'AUTH refused').to.equal(0);
    expect(after.closedExpired - before.closedExpired, 'connections closed with an expired token').to.equal(0);
    // Live connections re-AUTHed (the command connection) or were replaced (the subscriber).
    expect(after.authAccepted - before.authAccepted).to.be.at.least(4);
    expect((await readiness(api)).body.checks).to.deep.include({ cacheL2: 'up', invalidations: 'flowing' });
    expect(
      api.logs.filter((line) => /eyJ[A-Za-z0-9_-]{10,}\./.test(line)),
      'tokens in the log',
    ).to.deep.equal([]);
  });

  it('after the proxy drops every connection, the service reconnects with a fresh token', async () => {
    const api = await apis.start(env({ CACHE_L1_MAX_BYTES: '0' }));
    await started(api);
    const alice = emulator.mint({ user: 'alice' });
    expect(await me(api, alice)).to.equal(200);
    // Past the first token's lifetime, so reconnecting with it would be refused.
    await sleep(LIFETIME_S * 1000 + 500);
    const before = stats();
    proxy.dropAll();
    await until(
      'L2 reconnected',
      async () => (await readiness(api)).body.checks.cacheL2 === 'up' && stats().authAccepted - before.authAccepted >= 2,
      10_000,
    );
    const hitsBefore = (await metric(api, 'obo_cache_hits_total', { level: 'l2' })) ?? 0;
    expect(await me(api, alice)).to.equal(200);
    expect(((await metric(api, 'obo_cache_hits_total', { level: 'l2' })) ?? 0) - hitsBefore).to.equal(1);
    const after = stats();
    expect(after.authRefused - before.authRefused, 'AUTH refused (a stale token)').to.equal(0);
    expect(after.unauthenticated - before.unauthenticated).to.equal(0);
    await until('invalidations flowing again', async () => (await readiness(api)).body.checks.invalidations === 'flowing', 10_000);
  });

  it('with the grant failing: cached tokens are still served, /readyz names the cause, and L2 comes back when Entra does', async () => {
    const api = await apis.start(env());
    await started(api);
    const alice = emulator.mint({ user: 'alice' });
    expect(await me(api, alice)).to.equal(200);

    // Entra refuses every request from now on; the Redis token expires and Azure drops the connections.
    emulator.faults.injectToken({ status: 503, retryAfter: 1, times: 'always' });
    // Degraded first as any lost connection is; the cause is named once the token refresh has failed too.
    await until(
      'L2 degraded for want of a token',
      async () => {
        const { checks } = (await readiness(api)).body;
        return checks.cacheL2 === 'degraded' && /Entra token for Redis/.test(String(checks.cacheL2Detail));
      },
      (LIFETIME_S + 10) * 1000,
    );
    const { status, body } = await readiness(api);
    expect(status, 'still ready: L1 and the exchange serve').to.equal(200);
    expect(body.status).to.equal('degraded');
    expect(body.checks.cacheL2Detail).to.match(/Entra token for Redis/);
    expect(body.checks.cacheL2Detail).to.not.match(/eyJ/);
    expect(api.logs.some((line) => line.includes('could not get an Entra token for Redis'))).to.equal(true);
    for (let i = 0; i < 5; i++) expect(await me(api, alice), 'served from L1').to.equal(200);

    emulator.faults.clear();
    await until('L2 up again', async () => (await readiness(api)).body.checks.cacheL2 === 'up', 40_000);
    expect(await me(api, alice)).to.equal(200);
  });
});
