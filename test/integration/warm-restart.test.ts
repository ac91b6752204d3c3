/**
 * A restarted instance is warm from its first request (issue 13, item 4): the real service
 * (createApp twice, msal-node, ioredis) on one real redis-server, against the emulator. A fresh
 * instance whose Redis connection is not ready yet waits for it (bounded) instead of exchanging
 * for users whose tokens are already in Redis, and /readyz keeps it out of rotation meanwhile,
 * but never for longer than CACHE_L2_STARTUP_WAIT_MS.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { expect } from 'chai';
import { useEmulator, useRedis, useServices } from '../support/fixtures.js';
import { startHoldingTcpProxy, type HoldingTcpProxy } from '../support/holding-tcp-proxy.js';
import { metric } from '../support/metrics.js';
import { freePort } from '../support/redis.js';
import type { TestService } from '../support/service.js';
import { until } from '../support/wait.js';

const KEYS = `k1:${randomBytes(32).toString('base64')}`;

interface Readiness {
  status: number;
  body: { status: string; checks: { cacheL2: string; cacheL2Detail?: string } };
}

/** Through the contract-checked agent: a 503 `connecting` is held to openapi.yaml too. */
async function readiness(api: TestService): Promise<Readiness> {
  const response = await api.request.get('/readyz');
  return { status: response.status, body: response.body as Readiness['body'] };
}

/** GET /api/me over a real connection (the load loop's requests), its status. */
async function me(api: TestService, token: string): Promise<number> {
  const response = await fetch(`${api.baseUrl}/api/me`, { headers: { authorization: `Bearer ${token}` } });
  await response.arrayBuffer();
  return response.status;
}

/** The status, or 0 when the request failed without one (a connection error). */
const meOrError = (api: TestService, token: string): Promise<number> => me(api, token).catch(() => 0);

describe('a restarted instance is warm from its first request (issue 13)', function () {
  this.timeout(30_000);
  const emulator = useEmulator({ syntheticUsers: true });
  const redis = useRedis();
  const apis = useServices(emulator);
  let proxy: HoldingTcpProxy | undefined;
  beforeEach(() => emulator.resetCounters());
  afterEach(async () => {
    await proxy?.close();
    proxy = undefined;
  });

  const start = (env: Record<string, string>) => apis.start({ CACHE_ENCRYPTION_KEYS: KEYS, CACHE_L2_TIMEOUT_MS: '1000', LOG_LEVEL: 'info', ...env });

  it('rolling restart under load with 20 cached users: exchanges stay at 20; /readyz is 503 until L2 is connected', async () => {
    const users = Array.from({ length: 20 }, () => emulator.mint({ extraClaims: { oid: randomUUID() } }));
    const old = await start({ REDIS_URL: redis.url });
    await until('the old instance to be ready', async () => (await readiness(old)).status === 200);
    for (const token of users) expect(await me(old, token)).to.equal(200);
    expect(emulator.counters.token).to.equal(20);

    // Load: every user, round and round, against whichever instance is current.
    let current = old;
    let inFlight = old;
    let running = true;
    const statuses = new Map<number, number>();
    const load = (async () => {
      while (running) {
        inFlight = current;
        const target = inFlight;
        for (const status of await Promise.all(users.map((token) => meOrError(target, token)))) statuses.set(status, (statuses.get(status) ?? 0) + 1);
      }
    })();
    await until('load on the old instance', () => (statuses.get(200) ?? 0) >= 40);

    // The new instance reaches Redis slowly: its connections are held until the test lets go.
    proxy = await startHoldingTcpProxy({ backendPort: redis.port });
    // A roomy wait: on a loaded machine, validating the first round of tokens takes a while.
    const fresh = await start({ REDIS_URL: proxy.url, CACHE_L2_STARTUP_WAIT_MS: '20000' });
    const early = await readiness(fresh);
    expect(early.status, '/readyz before L2 is connected').to.equal(503);
    expect(early.body.checks.cacheL2).to.equal('connecting');
    // The worst case: traffic reaches it at once, before /readyz said yes. The old one goes away
    // once its last requests are answered (as a balancer drains it).
    current = fresh;
    await until('the load to move to the new instance', () => inFlight === fresh);
    await apis.close(old);
    // Every user's request has reached the token cache of the new instance before its Redis answers.
    await until(
      '20 callers validated by the new instance',
      async () => ((await metric(fresh, 'obo_token_validation_cache_entries')) ?? 0) >= 20,
      10_000,
    );
    expect((await readiness(fresh)).status, '/readyz while L2 is still not connected').to.equal(503);
    proxy.release();
    await until('the new instance to be ready', async () => (await readiness(fresh)).status === 200, 10_000);
    const servedBefore = statuses.get(200) ?? 0;
    await until('more load on the new instance', () => (statuses.get(200) ?? 0) >= servedBefore + 40, 10_000);
    running = false;
    await load;

    expect([...statuses.keys()], 'statuses under load').to.deep.equal([200]);
    expect(emulator.counters.token, 'exchanges across the restart').to.equal(20);
    expect(await metric(fresh, 'obo_cache_l2_startup_waits_total', { result: 'connected' }), 'misses that waited for L2').to.equal(20);
    expect(await metric(fresh, 'obo_cache_l2_startup_waits_total', { result: 'timed_out' })).to.equal(0);
    // At least one per user (an L1 copy taken before the invalidation subscription is up may be re-read).
    expect(await metric(fresh, 'obo_cache_hits_total', { level: 'l2' })).to.be.at.least(20);
    const ready = (await readiness(fresh)).body;
    expect(ready.status).to.equal('ready');
    expect(ready.checks).to.include({ authorityMetadata: 'up', cacheL1: 'up', cacheL2: 'up' });
  });

  it('Redis unreachable at start: /readyz is 503, then ready-but-degraded after CACHE_L2_STARTUP_WAIT_MS; a request meanwhile waits, then exchanges', async () => {
    const nowhere = `redis://127.0.0.1:${await freePort()}`;
    const api = await start({ REDIS_URL: nowhere, CACHE_L2_STARTUP_WAIT_MS: '800' });
    const early = await readiness(api);
    expect(early.status).to.equal(503);
    expect(early.body).to.deep.include({ status: 'unavailable' });
    expect(early.body.checks).to.include({ cacheL2: 'connecting', authorityMetadata: 'up' });

    expect(await me(api, emulator.mint({ extraClaims: { oid: randomUUID() } }))).to.equal(200);
    expect(emulator.counters.token).to.equal(1);
    expect(await metric(api, 'obo_cache_l2_startup_waits_total', { result: 'timed_out' })).to.equal(1);
    // Never stuck out of rotation.
    await until('ready-but-degraded', async () => (await readiness(api)).status === 200, 5_000);
    const later = await readiness(api);
    expect(later.body.status).to.equal('degraded');
    expect(later.body.checks.cacheL2).to.equal('degraded');
    expect(later.body.checks.cacheL2Detail).to.be.a('string').and.not.include('127.0.0.1');
    expect(api.logs.join('\n')).to.include('L2 not connected within the start-up wait');
    // Past the wait, misses no longer wait.
    expect(await me(api, emulator.mint({ extraClaims: { oid: randomUUID() } }))).to.equal(200);
    expect(await metric(api, 'obo_cache_l2_startup_waits_total', { result: 'timed_out' })).to.equal(1);
  });

  it('CACHE_L2_STARTUP_WAIT_MS=0: no wait, ready (degraded) at once, as before', async () => {
    const nowhere = `redis://127.0.0.1:${await freePort()}`;
    const api = await start({ REDIS_URL: nowhere, CACHE_L2_STARTUP_WAIT_MS: '0' });
    const first = await readiness(api);
    expect(first.status).to.equal(200);
    expect(first.body.status).to.equal('degraded');
    expect(await me(api, emulator.mint({ extraClaims: { oid: randomUUID() } }))).to.equal(200);
    expect(await metric(api, 'obo_cache_l2_startup_waits_total', { result: 'timed_out' })).to.equal(0);
  });
});
