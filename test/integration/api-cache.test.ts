/**
 * The token cache seen from HTTP (issue 3): the real service (createApp, msal-node, jose,
 * ioredis) against the emulator and a real redis-server / Redis Cluster. The proof is always
 * the emulator's count of token endpoint calls.
 */
import { createHash, randomBytes } from 'node:crypto';
import { expect } from 'chai';
import type { Redis } from 'ioredis';
import type { Environment } from '../../api/config/load-config.js';
import { startEmulator, type Emulator, type UserName } from '../emulator/index.js';
import { useEmulator, useRedis, useServices } from '../support/fixtures.js';
import { families, metric, metricsText, sample } from '../support/metrics.js';
import { startRedisCluster, type RedisCluster } from '../support/redis-cluster.js';
import type { TestService } from '../support/service.js';
import { until } from '../support/wait.js';

const OLD_KEY = `old:${randomBytes(32).toString('base64')}`;
const NEW_KEY = `new:${randomBytes(32).toString('base64')}`;
/** Users of the API's own tenant (carol belongs to another tenant: a single-tenant API refuses her). */
const USERS: UserName[] = ['alice', 'bob'];
/** Cache entries: the prefix, the SHA-256 (base64url) of the caller's token, the scope set. Not locks, not other users of Redis. */
const ENTRY_KEYS = /^obo:[A-Za-z0-9_-]{43}:/;

/** GET /api/me over a real HTTP connection; the body is read so the socket is reused. */
async function me(api: TestService, token: string): Promise<{ status: number; id?: string }> {
  const response = await fetch(`${api.baseUrl}/api/me`, { headers: { authorization: `Bearer ${token}` } });
  const body = (await response.json().catch(() => undefined)) as { id?: string } | undefined;
  return { status: response.status, ...(body?.id ? { id: body.id } : {}) };
}

interface Readiness {
  status: number;
  body: { status: string; checks: { cacheL2: string; cacheL2Detail?: string; invalidations?: string; invalidationsLastSyncSeconds?: number } };
}

async function readiness(api: TestService): Promise<Readiness> {
  const response = await fetch(`${api.baseUrl}/readyz`);
  return { status: response.status, body: (await response.json()) as Readiness['body'] };
}

/** Every key in the Redis, by SCAN (never KEYS). */
async function scanKeys(redis: Redis): Promise<string[]> {
  const keys: string[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await redis.scan(cursor, 'COUNT', 1000);
    cursor = next;
    keys.push(...batch);
  } while (cursor !== '0');
  return keys;
}

async function entryKeys(redis: Redis): Promise<string[]> {
  return (await scanKeys(redis)).filter((key) => ENTRY_KEYS.test(key));
}

/** The cache entry of one caller's token. */
async function entryKeyOf(redis: Redis, token: string): Promise<string> {
  const prefix = `obo:${createHash('sha256').update(token).digest('base64url')}:`;
  const keys = (await scanKeys(redis)).filter((key) => key.startsWith(prefix));
  expect(keys, 'cache entries of the token').to.have.length(1);
  return keys[0] ?? '';
}

/** The key id in an envelope v1 header: 0x01 | kidLength | kid | … */
function envelopeKid(value: Buffer): string {
  expect(value[0], 'envelope version').to.equal(1);
  return value.subarray(2, 2 + (value[1] ?? 0)).toString('utf8');
}

describe('API + token cache on a real Redis (issue 3)', function () {
  this.timeout(20_000);
  const emulator = useEmulator();
  const redis = useRedis();
  let admin: Redis;
  // The API instances of the current test: closed after it.
  const apis = useServices(emulator);

  before(() => {
    admin = redis.client();
  });

  beforeEach(async () => {
    await admin.flushall();
    emulator.resetCounters();
  });

  const exchanges = () => emulator.counters.token;
  const mint = (user: UserName = 'alice', on: Emulator = emulator) => on.mint({ user });
  /** A token per call, each a partition of its own: "many users" for the cache. */
  const mintMany = (count: number) =>
    Array.from({ length: count }, (_, i) => {
      const user = USERS[i % USERS.length] as UserName;
      return { user, token: mint(user) };
    });

  /** One API instance (its own process state: L1, registry, connections) on the shared Redis, once L2 is up. */
  async function startApi(env: Environment = {}, on: Emulator = emulator): Promise<TestService> {
    // A roomy command timeout: a busy CI machine must not turn into a Redis brown-out.
    const api = await apis.start({ REDIS_URL: redis.url, CACHE_ENCRYPTION_KEYS: OLD_KEY, CACHE_L2_TIMEOUT_MS: '1000', ...env }, {}, on);
    await untilL2(api, 'up');
    return api;
  }

  /** An API process going away: closed now, not again after the test. */
  const closeApi = (api: TestService): Promise<void> => apis.close(api);

  async function untilL2(api: TestService, state: 'up' | 'degraded', timeoutMs = 5_000): Promise<void> {
    await until(`cacheL2: ${state}`, async () => (await readiness(api)).body.checks.cacheL2 === state, timeoutMs);
  }

  async function expectServed(api: TestService, token: string, user: UserName): Promise<void> {
    expect(await me(api, token)).to.deep.equal({ status: 200, id: emulator.users[user].oid });
  }

  it('after an API restart (new instance, empty L1, same Redis) the same tokens cause no new exchange', async () => {
    const callers = mintMany(3);
    const first = await startApi();
    for (const { user, token } of callers) await expectServed(first, token, user);
    expect(exchanges()).to.equal(3);
    await closeApi(first);

    const restarted = await startApi();
    for (const { user, token } of callers) await expectServed(restarted, token, user);
    expect(exchanges(), 'token endpoint calls').to.equal(3);
    expect(await metric(restarted, 'obo_cache_hits_total', { level: 'l2' })).to.equal(3);
  });

  it('two instances share one Redis: a user served by A, then by B, causes one exchange', async () => {
    const [a, b] = await Promise.all([startApi(), startApi()]);
    const alice = mint('alice');
    const bob = mint('bob');
    await expectServed(a, alice, 'alice');
    await expectServed(b, alice, 'alice');
    await expectServed(b, bob, 'bob');
    await expectServed(a, bob, 'bob');
    expect(exchanges(), 'token endpoint calls').to.equal(2);
    expect(await metric(b, 'obo_cache_hits_total', { level: 'l2' })).to.equal(1);
    expect(await metric(a, 'obo_cache_hits_total', { level: 'l2' })).to.equal(1);
  });

  describe('50 concurrent first requests for one user cause one exchange', () => {
    it('within one instance', async () => {
      const api = await startApi();
      const token = mint('bob');
      const answers = await Promise.all(Array.from({ length: 50 }, () => me(api, token)));
      expect(answers.filter((a) => a.status === 200 && a.id === emulator.users.bob.oid)).to.have.length(50);
      expect(exchanges(), 'token endpoint calls').to.equal(1);
    });

    it('across two instances (25 + 25, interleaved)', async () => {
      const [a, b] = await Promise.all([startApi(), startApi()]);
      const token = mint('bob');
      const answers = await Promise.all(Array.from({ length: 50 }, (_, i) => me(i % 2 === 0 ? a : b, token)));
      expect(answers.filter((x) => x.status === 200 && x.id === emulator.users.bob.oid)).to.have.length(50);
      expect(exchanges(), 'token endpoint calls').to.equal(1);
      // B (or A) waited for the other's exchange through the Redis lock.
      const clusterJoins = async (api: TestService) => (await metric(api, 'obo_cache_joins_total', { scope: 'cluster' })) ?? 0;
      expect((await clusterJoins(a)) + (await clusterJoins(b))).to.be.at.least(1);
    });
  });

  describe('when Redis fails', () => {
    afterEach(async () => {
      // Whatever happened in the test, the next one gets a running Redis.
      if (!(await admin.ping().catch(() => undefined))) await redis.restart();
    });

    it('Redis killed mid-run (SIGKILL): zero failed requests; restarted: L2 writes and hits resume', async function () {
      this.timeout(40_000); // a few seconds on an idle machine; much more on a CI box running other work
      const api = await startApi();
      const seen = mintMany(30);
      const statuses: number[] = [];
      let stop = false;
      let n = 0;
      // A stream of requests for many users: every other one a new caller (L2 read, lock, exchange, L2 write).
      const worker = async () => {
        while (!stop) {
          const i = n++;
          const user = USERS[Math.floor(i / 2) % USERS.length] as UserName;
          const caller = i % 2 === 0 ? { user, token: mint(user) } : seen[Math.floor(i / 2) % seen.length];
          if (!caller) continue;
          const answer = await me(api, caller.token);
          statuses.push(answer.id === emulator.users[caller.user].oid ? answer.status : -answer.status);
        }
      };
      const stream = Promise.all(Array.from({ length: 8 }, worker));
      try {
        await until('some traffic', () => statuses.length >= 30, 15_000);
        const beforeKill = statuses.length;
        await redis.kill();
        await until('traffic while Redis is down', () => statuses.length >= beforeKill + 40, 15_000);
        await untilL2(api, 'degraded');
        await redis.restart();
        // ioredis reconnects with a backoff of at most 2 s.
        await untilL2(api, 'up', 10_000);
        const afterRestart = statuses.length;
        await until('traffic after the restart', () => statuses.length >= afterRestart + 20, 15_000);
      } finally {
        stop = true;
        await stream;
      }
      expect(statuses.length).to.be.at.least(90);
      expect(
        statuses.filter((s) => s !== 200),
        'failed requests',
      ).to.deep.equal([]);
      const text = await metricsText(api);
      const l2Failures = ['get', 'set', 'lock'].reduce(
        (sum, op) =>
          sum +
          (sample(text, 'obo_cache_l2_errors_total', { op, kind: 'error' }) ?? 0) +
          (sample(text, 'obo_cache_l2_errors_total', { op, kind: 'timeout' }) ?? 0) +
          (sample(text, 'obo_cache_l2_skipped_total', { op }) ?? 0),
        0,
      );
      expect(l2Failures, 'L2 operations that failed while Redis was down').to.be.greaterThan(0);
      // A crash is not a brown-out: the commands it cut off count as skipped (disconnected), not
      // as failures that open the breaker and keep L2 off for seconds after Redis is back.
      const commandErrors = ['get', 'set', 'del', 'lock', 'unlock', 'publish'].reduce(
        (sum, op) => sum + (sample(text, 'obo_cache_l2_errors_total', { op, kind: 'error' }) ?? 0),
        0,
      );
      expect(commandErrors, 'L2 command errors').to.equal(0);
      expect(
        api.logs.filter((line) => line.includes('breaker opened')),
        'breaker openings',
      ).to.deep.equal([]);

      // L2 writes resume: what A exchanges now, a new instance (empty L1) serves from Redis.
      const fresh = mintMany(3);
      const before = exchanges();
      for (const { user, token } of fresh) await expectServed(api, token, user);
      expect(exchanges()).to.equal(before + 3);
      expect(await entryKeys(admin)).to.have.length.at.least(3);
      const other = await startApi();
      for (const { user, token } of fresh) await expectServed(other, token, user);
      // L2 reads resume on A too: what the new instance exchanges, A serves from Redis.
      const late = mint('bob');
      await expectServed(other, late, 'bob');
      const hitsBefore = (await metric(api, 'obo_cache_hits_total', { level: 'l2' })) ?? 0;
      await expectServed(api, late, 'bob');
      expect(exchanges(), 'token endpoint calls').to.equal(before + 4);
      expect(await metric(other, 'obo_cache_hits_total', { level: 'l2' })).to.equal(3);
      expect(await metric(api, 'obo_cache_hits_total', { level: 'l2' })).to.equal(hitsBefore + 1);
    });

    it('/readyz: cacheL2 up with Redis, degraded (still 200) while it is down; /healthz stays 200', async () => {
      const api = await startApi();
      const up = await readiness(api);
      expect(up.status).to.equal(200);
      const { invalidations, invalidationsLastSyncSeconds, ...checks } = up.body.checks;
      expect({ ...up.body, checks }).to.deep.equal({ status: 'ready', checks: { authorityMetadata: 'up', cacheL1: 'up', cacheL2: 'up' } });
      // Invalidations between instances arrive over Redis too (their own tests are in cache-*.test.ts).
      expect(invalidations).to.be.oneOf(['flowing', 'interrupted']);
      if (invalidationsLastSyncSeconds !== undefined) expect(invalidationsLastSyncSeconds).to.be.a('number').and.at.least(0);
      await redis.kill();
      await untilL2(api, 'degraded');
      const down = await readiness(api);
      expect(down.status).to.equal(200);
      expect(down.body.status).to.equal('degraded');
      expect(down.body.checks.cacheL2Detail).to.be.a('string').and.not.include(redis.url);
      expect((await fetch(`${api.baseUrl}/healthz`)).status).to.equal(200);
      // Still serving, from the exchange.
      await expectServed(api, mint('alice'), 'alice');
      await redis.restart();
      await untilL2(api, 'up');
      expect((await readiness(api)).body.status).to.equal('ready');
      expect((await fetch(`${api.baseUrl}/healthz`)).status).to.equal(200);
    });
  });

  describe('encryption at rest', () => {
    it('Redis values are ciphertext: no JWT text (eyJ) in any key or value', async () => {
      const api = await startApi();
      for (const { user, token } of mintMany(3)) await expectServed(api, token, user);
      const keys = await entryKeys(admin);
      expect(keys).to.have.length(3);
      for (const key of await scanKeys(admin)) {
        expect(key).not.to.include('eyJ');
        const value = await admin.getBuffer(key);
        expect(value?.toString('latin1')).not.to.include('eyJ');
      }
      for (const key of keys) expect(envelopeKid((await admin.getBuffer(key)) ?? Buffer.alloc(0))).to.equal('old');

      // The scan does find a token when there is one: the same path with encryption off.
      await admin.flushall();
      const plain = await startApi({ CACHE_ENCRYPTION_KEYS: '', CACHE_ENCRYPTION: 'off' });
      const bob = mint('bob');
      await expectServed(plain, bob, 'bob');
      expect((await admin.getBuffer(await entryKeyOf(admin, bob)))?.toString('latin1')).to.include('eyJ');
    });

    it('a tampered value is a miss: a new exchange, no 5xx, counted as a decrypt failure', async () => {
      const token = mint('alice');
      const a = await startApi();
      await expectServed(a, token, 'alice');
      const key = await entryKeyOf(admin, token);
      const value = (await admin.getBuffer(key)) ?? Buffer.alloc(0);
      value[value.length - 20] = (value[value.length - 20] ?? 0) ^ 0x01;
      expect(await admin.set(key, value, 'KEEPTTL')).to.equal('OK');

      const b = await startApi();
      await expectServed(b, token, 'alice');
      expect(exchanges(), 'token endpoint calls').to.equal(2);
      expect(await metric(b, 'obo_cache_decrypt_failures_total', { reason: 'auth_failed' })).to.equal(1);
      expect((await metric(b, 'obo_cache_hits_total', { level: 'l2' })) ?? 0).to.equal(0);
      // The miss wrote a good value back: a third instance reads it.
      const c = await startApi();
      await expectServed(c, token, 'alice');
      expect(exchanges()).to.equal(2);
    });

    it('rotating keys (CACHE_ENCRYPTION_KEYS=new,old) keeps old entries readable; new entries use the new key', async () => {
      const alice = mint('alice');
      const bob = mint('bob');
      const old = await startApi({ CACHE_ENCRYPTION_KEYS: OLD_KEY });
      await expectServed(old, alice, 'alice');

      const rotated = await startApi({ CACHE_ENCRYPTION_KEYS: `${NEW_KEY},${OLD_KEY}` });
      await expectServed(rotated, alice, 'alice');
      expect(exchanges(), 'token endpoint calls').to.equal(1);
      await expectServed(rotated, bob, 'bob');
      expect(exchanges()).to.equal(2);
      const kidOf = async (token: string) => envelopeKid((await admin.getBuffer(await entryKeyOf(admin, token))) ?? Buffer.alloc(0));
      expect(await kidOf(alice)).to.equal('old');
      expect(await kidOf(bob)).to.equal('new');

      // Without the old key the old entry does not open (so the check above can fail); the new one does.
      const newOnly = await startApi({ CACHE_ENCRYPTION_KEYS: NEW_KEY });
      await expectServed(newOnly, bob, 'bob');
      expect(exchanges()).to.equal(2);
      await expectServed(newOnly, alice, 'alice');
      expect(exchanges()).to.equal(3);
      expect(await metric(newOnly, 'obo_cache_decrypt_failures_total', { reason: 'unknown_kid' })).to.equal(1);
    });
  });

  it('entries leave Redis when their tokens expire (Redis TTL = remaining lifetime)', async () => {
    // Graph tokens living 62 s; the token provider drops them 60 s before expiry: about 2 s in the cache.
    const shortLived = await startEmulator({ accessTokenLifetimeSeconds: 62 });
    try {
      const api = await startApi({}, shortLived);
      const token = mint('alice', shortLived);
      expect(await me(api, token)).to.deep.equal({ status: 200, id: shortLived.users.alice.oid });
      expect(shortLived.counters.token).to.equal(1);
      const key = await entryKeyOf(admin, token);
      const ttl = await admin.pttl(key);
      expect(ttl).to.be.within(1, 2_500);
      await until('the entry to leave Redis', async () => (await admin.exists(key)) === 0, ttl + 1_000);
      // Gone from L1 as well: the next request exchanges again.
      expect(await me(api, token)).to.deep.equal({ status: 200, id: shortLived.users.alice.oid });
      expect(shortLived.counters.token).to.equal(2);
      const again = await admin.pttl(key);
      expect(again).to.be.within(1, 2_500);
    } finally {
      for (const api of apis.running) await apis.close(api);
      await shortLived.close();
    }
  });

  it('without REDIS_URL or REDIS_CLUSTER_NODES the service says once at start-up that it runs L1 only', async () => {
    const l1Only = await apis.start({});
    const announcements = (api: TestService) =>
      api.logs.map((line) => JSON.parse(line) as { level: number; msg: string }).filter((line) => line.level >= 30 && /L1 only/i.test(line.msg));
    expect(announcements(l1Only)).to.have.length(1);
    expect(announcements(l1Only)[0]?.msg).to.match(/REDIS_URL/);
    expect((await readiness(l1Only)).body.checks.cacheL2).to.equal('disabled');
    const token = mint('alice');
    await expectServed(l1Only, token, 'alice');
    await expectServed(l1Only, token, 'alice');
    expect(exchanges()).to.equal(1);
    expect(await scanKeys(admin)).to.deep.equal([]);

    const withRedis = await startApi();
    expect(announcements(withRedis)).to.deep.equal([]);
  });

  it('GET /metrics exposes the cache metrics and the exchange latency histogram', async () => {
    const [a, b] = await Promise.all([startApi(), startApi()]);
    const alice = mint('alice');
    await expectServed(a, alice, 'alice'); // miss → exchange
    await expectServed(a, alice, 'alice'); // L1 hit
    await expectServed(b, alice, 'alice'); // L2 hit
    const bob = mint('bob');
    await Promise.all(Array.from({ length: 10 }, () => expectServed(a, bob, 'bob'))); // one exchange, the rest join or hit L1
    expect(exchanges()).to.equal(2);

    const response = await fetch(`${a.baseUrl}/metrics`);
    expect(response.headers.get('content-type')).to.match(/^text\/plain/);
    const text = await response.text();
    const types = families(text);
    const expected: Record<string, string> = {
      obo_cache_hits_total: 'counter',
      obo_cache_misses_total: 'counter',
      obo_cache_joins_total: 'counter',
      obo_cache_l1_evictions_total: 'counter',
      obo_cache_l1_entries: 'gauge',
      obo_cache_l1_bytes: 'gauge',
      obo_cache_l2_errors_total: 'counter',
      obo_cache_l2_breaker_state: 'gauge',
      obo_cache_decrypt_failures_total: 'counter',
      obo_cache_create_duration_seconds: 'histogram',
      obo_exchange_duration_seconds: 'histogram',
    };
    for (const [name, type] of Object.entries(expected)) expect(types.get(name), name).to.equal(type);

    expect(sample(text, 'obo_cache_misses_total')).to.equal(2);
    const l1Hits = sample(text, 'obo_cache_hits_total', { level: 'l1' }) ?? 0;
    const joins = sample(text, 'obo_cache_joins_total', { scope: 'process' }) ?? 0;
    expect(joins, 'process joins').to.be.at.least(1);
    expect(l1Hits + joins, 'L1 hits + joins').to.equal(1 + 9);
    // Series exist from the start (at 0), so rate() and alerts see their first increment.
    expect(sample(text, 'obo_cache_hits_total', { level: 'l2' })).to.equal(0);
    expect(sample(text, 'obo_cache_joins_total', { scope: 'cluster' })).to.equal(0);
    expect(sample(text, 'obo_cache_decrypt_failures_total', { reason: 'auth_failed' })).to.equal(0);
    expect(sample(text, 'obo_cache_l1_entries')).to.equal(2);
    expect(sample(text, 'obo_cache_l1_bytes')).to.be.greaterThan(0);
    expect(sample(text, 'obo_cache_l1_evictions_total', { reason: 'capacity' })).to.equal(0);
    expect(sample(text, 'obo_cache_l2_errors_total', { op: 'get', kind: 'timeout' })).to.equal(0);
    expect(sample(text, 'obo_cache_l2_errors_total', { op: 'set', kind: 'error' })).to.equal(0);
    expect(sample(text, 'obo_cache_l2_breaker_state')).to.equal(0);
    expect(sample(text, 'obo_exchange_duration_seconds_count', { result: 'ok' })).to.equal(2);
    expect(sample(text, 'obo_exchange_duration_seconds_sum', { result: 'ok' })).to.be.greaterThan(0);
    expect(sample(text, 'obo_exchange_duration_seconds_bucket', { result: 'ok', le: '+Inf' })).to.equal(2);
    expect(sample(text, 'obo_cache_create_duration_seconds_count', { trigger: 'miss' })).to.equal(2);

    expect(await metric(b, 'obo_cache_hits_total', { level: 'l2' })).to.equal(1);
    expect(await metric(b, 'obo_exchange_duration_seconds_count', { result: 'ok' })).to.equal(undefined);
  });
});

describe('API + token cache on a real Redis Cluster (REDIS_CLUSTER_NODES, with a password)', function () {
  this.timeout(30_000);
  const password = randomBytes(12).toString('hex');
  const emulator = useEmulator();
  let cluster: RedisCluster;
  const apis = useServices(emulator);

  before(async () => {
    cluster = await startRedisCluster({ password });
  });

  after(async () => {
    await cluster?.stop();
  });

  async function startClusterApi(): Promise<TestService> {
    // One URL entry carries the password for the whole cluster; the other seeds are plain.
    const [first, ...rest] = cluster.nodes;
    const api = await apis.start({
      REDIS_CLUSTER_NODES: [`redis://:${password}@${first}`, ...rest].join(','),
      CACHE_ENCRYPTION_KEYS: OLD_KEY,
      CACHE_L2_TIMEOUT_MS: '1000',
    });
    // Without the password from the configuration the store never becomes ready (NOAUTH).
    await until('cacheL2: up', async () => (await readiness(api)).body.checks.cacheL2 === 'up', 10_000);
    return api;
  }

  it('instances share tokens through the cluster: users served by A then by B, and 25 + 25 concurrent requests, cause one exchange each', async () => {
    const a = await startClusterApi();
    const b = await startClusterApi();
    const callers = (['alice', 'bob', 'alice'] as const).map((user) => ({ user, token: emulator.mint({ user }) }));
    for (const { user, token } of callers) expect(await me(a, token)).to.deep.equal({ status: 200, id: emulator.users[user].oid });
    for (const { user, token } of callers) expect(await me(b, token)).to.deep.equal({ status: 200, id: emulator.users[user].oid });
    expect(emulator.counters.token, 'token endpoint calls').to.equal(3);
    expect(await metric(b, 'obo_cache_hits_total', { level: 'l2' })).to.equal(3);

    const token = emulator.mint({ user: 'bob' });
    const answers = await Promise.all(Array.from({ length: 50 }, (_, i) => me(i % 2 === 0 ? a : b, token)));
    expect(answers.filter((x) => x.status === 200)).to.have.length(50);
    expect(emulator.counters.token, 'token endpoint calls').to.equal(4);
    const leak = (await metricsText(a)) + (await metricsText(b));
    expect(leak).not.to.include(password);
    for (const api of apis.running) expect(api.logs.join('\n')).not.to.include(password);
  });
});
