/**
 * Entra's Retry-After across the fleet (issue 13, item 1): two instances of the real service
 * (createApp, msal-node, ioredis) on one real redis-server, against the emulator. The proof is
 * always the emulator's count of token requests.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { expect } from 'chai';
import type { Redis } from 'ioredis';
import { manualClock } from '../support/clock.js';
import { useEmulator, useRedis, useServices } from '../support/fixtures.js';
import { metric } from '../support/metrics.js';
import type { TestService } from '../support/service.js';
import { bearer } from '../support/tokens.js';
import { until } from '../support/wait.js';

const KEYS = `k1:${randomBytes(32).toString('base64')}`;

interface Readiness {
  status: string;
  checks: { cacheL2: string };
  throttled?: true;
  throttleRetryAfterSeconds?: number;
  throttleScope?: 'fleet' | 'instance';
}

describe('fleet-wide Entra throttling (issue 13)', function () {
  this.timeout(30_000);
  // Any GUID oid is a user of the home tenant: every test can bring users nobody has seen.
  const emulator = useEmulator({ syntheticUsers: true });
  const redis = useRedis();
  const apis = useServices(emulator);
  // One clock for both instances (as NTP gives a fleet): a window ends when the test moves it.
  const clock = manualClock();
  let admin: Redis;

  before(() => {
    admin = redis.client();
  });
  beforeEach(async () => {
    clock.reset();
    emulator.reset();
    emulator.resetCounters();
    await redis.restart(); // an empty Redis, up, whatever the last test did to it
  });

  const newUser = (): string => emulator.mint({ extraClaims: { oid: randomUUID() } });
  const me = (api: TestService, token: string) => api.request.get('/api/me').set(bearer(token));
  const tokenRequests = (): number => emulator.requests().filter((entry) => entry.server === 'entra' && entry.path.endsWith('/token')).length;
  const readiness = async (api: TestService): Promise<{ status: number; body: Readiness }> => {
    const response = await api.request.get('/readyz');
    return { status: response.status, body: response.body as Readiness };
  };

  /** The throttle keys in Redis, by SCAN (never KEYS). */
  async function throttleKeys(): Promise<string[]> {
    const keys: string[] = [];
    let cursor = '0';
    do {
      const [next, batch] = await admin.scan(cursor, 'MATCH', 'obo:throttle:*', 'COUNT', 1000);
      cursor = next;
      keys.push(...batch);
    } while (cursor !== '0');
    return keys.sort();
  }

  async function instance(env: Record<string, string> = {}): Promise<TestService> {
    const api = await apis.start(
      // A roomy command timeout: a busy machine must not look like a Redis brown-out.
      { REDIS_URL: redis.url, CACHE_ENCRYPTION_KEYS: KEYS, CACHE_L2_TIMEOUT_MS: '1000', LOG_LEVEL: 'info', ...env },
      { now: clock.now },
    );
    await until('L2 up', async () => (await readiness(api)).body.checks.cacheL2 === 'up');
    return api;
  }

  it('after instance A is told Retry-After: 20, a new user on instance B gets 503 (Retry-After ≤ 20) with no token request; cached tokens are served on both', async () => {
    const a = await instance();
    const b = await instance();
    const cached = newUser();
    await me(a, cached).expect(200);
    await me(b, cached).expect(200); // from L2: now in both L1s
    expect(emulator.counters.token).to.equal(1);

    emulator.faults.injectToken({ status: 429, retryAfter: 20 });
    const told = await me(a, newUser()).expect(503);
    expect(told.headers['retry-after']).to.equal('20');
    expect(emulator.counters.token).to.equal(2);

    const requestsBefore = tokenRequests();
    const refused = await me(b, newUser()).expect(503);
    expect((refused.body as { error?: string }).error).to.equal('temporarily_unavailable');
    expect(Number(refused.headers['retry-after'])).to.be.within(1, 20);
    expect(emulator.counters.token, 'B asked Entra nothing').to.equal(2);
    expect(tokenRequests()).to.equal(requestsBefore);
    // A second new user on B: refused from B's own copy of the window.
    await me(b, newUser()).expect(503);
    expect(emulator.counters.token).to.equal(2);

    // Cached tokens keep being served on both, and an L1 hit costs no Redis read.
    await admin.config('RESETSTAT');
    await me(a, cached).expect(200);
    await me(b, cached).expect(200);
    expect(await admin.info('commandstats'), 'Redis GETs on the cache-hit path').not.to.match(/cmdstat_get:/);
    expect(emulator.counters.token).to.equal(2);

    // Both instances say so on /readyz (still ready: cached tokens are served) and in a gauge.
    for (const api of [a, b]) {
      const { status, body } = await readiness(api);
      expect(status).to.equal(200);
      expect(body).to.include({ status: 'ready', throttled: true, throttleScope: 'fleet' });
      expect(body.throttleRetryAfterSeconds).to.be.within(1, 20);
      expect(await metric(api, 'obo_token_throttle_remaining_seconds')).to.be.within(1, 20);
    }

    // In Redis: keyed by a hash of tenant and scopes (no user, nothing readable), expiring with the window.
    const keys = await throttleKeys();
    expect(keys).to.have.length(2);
    expect(keys).to.include('obo:throttle:fleet');
    const windowKey = keys.find((key) => key !== 'obo:throttle:fleet') ?? '';
    expect(windowKey).to.match(/^obo:throttle:[A-Za-z0-9_-]{43}$/);
    expect(windowKey).not.to.include(emulator.tenant.id);
    const ttl = await admin.pttl(windowKey);
    expect(ttl).to.be.within(1, 20_000);
    expect(await admin.get(windowKey)).to.match(/^\d+ 20000$/);

    // Never longer than the window Entra gave: past it, B exchanges again.
    clock.advance(20_500);
    await me(b, newUser()).expect(200);
    expect(emulator.counters.token).to.equal(3);
    const after = await readiness(b);
    expect(after.body.throttled).to.equal(undefined);
    expect(await metric(b, 'obo_token_throttle_remaining_seconds')).to.equal(0);
  });

  it('with Redis down, each instance backs off on its own: A refuses inside its window, B still asks Entra', async () => {
    const a = await instance();
    const b = await instance();
    await redis.kill();
    await until('both instances to see Redis down', async () => {
      const states = await Promise.all([a, b].map(async (api) => (await readiness(api)).body.checks.cacheL2));
      return states.every((state) => state === 'degraded');
    });

    emulator.faults.injectToken({ status: 429, retryAfter: 20 });
    const told = await me(a, newUser()).expect(503);
    expect(told.headers['retry-after']).to.equal('20');
    expect(emulator.counters.token).to.equal(1);
    // A's own window holds, without Redis.
    const refused = await me(a, newUser()).expect(503);
    expect(Number(refused.headers['retry-after'])).to.be.within(1, 20);
    expect(emulator.counters.token).to.equal(1);
    const { body } = await readiness(a);
    expect(body).to.include({ status: 'degraded', throttled: true, throttleScope: 'instance' });

    // B was never told and cannot read Redis: it asks Entra (today's per-instance backoff).
    await me(b, newUser()).expect(200);
    expect(emulator.counters.token).to.equal(2);
    expect((await readiness(b)).body.throttled).to.equal(undefined);
    expect(a.logs.join('\n')).to.include('throttle window not shared (Redis unavailable)');
  });

  it('a window written while Redis was down is not in Redis; one written after Redis is back reaches the other instance', async () => {
    const a = await instance();
    const b = await instance();
    await redis.kill();
    await until('A to see Redis down', async () => (await readiness(a)).body.checks.cacheL2 === 'degraded');
    emulator.faults.injectToken({ status: 503, retryAfter: 5 });
    await me(a, newUser()).expect(503);

    await redis.restart();
    await until('both instances to see Redis up', async () => {
      const states = await Promise.all([a, b].map(async (api) => (await readiness(api)).body.checks.cacheL2));
      return states.every((state) => state === 'up');
    });
    expect(await throttleKeys()).to.deep.equal([]);
    // Past A's local window; Entra throttles again, and this time the fleet hears of it.
    clock.advance(5_500);
    emulator.faults.injectToken({ status: 503, retryAfter: 7 });
    const told = await me(a, newUser()).expect(503);
    expect(told.headers['retry-after']).to.equal('7');
    const before = emulator.counters.token;
    const refused = await me(b, newUser()).expect(503);
    expect(Number(refused.headers['retry-after'])).to.be.within(1, 7);
    expect(emulator.counters.token).to.equal(before);
  });
});
