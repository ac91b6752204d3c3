/**
 * A fleet through an outage of its Redis (issue 13, the soak's exchange bound): peer fill puts
 * an entry one instance created into the other instances' L1, and an entry created while Redis
 * was unreachable is written to Redis once it is back. First with two instances of the real
 * service on one real redis-server (the proof is the emulator's count of token requests), then
 * with two caches on it, for the rules that keep a fill from undoing an invalidation.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { expect } from 'chai';
import type { Redis } from 'ioredis';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { createRedisStore, createTieredCache, parseEncryptionKeys, type CacheEntry, type TieredCache } from '../../cache/index.js';
import { useEmulator, useRedis, useServices } from '../support/fixtures.js';
import { metric, registryMetric } from '../support/metrics.js';
import { startRedis, type RedisServer } from '../support/redis.js';
import type { TestService } from '../support/service.js';
import { bearer } from '../support/tokens.js';
import { sleep, until } from '../support/wait.js';

const KEYS = `k1:${randomBytes(32).toString('base64')}`;
const DELAY_MS = 1_500;

interface Readiness {
  checks: { cacheL2: string; invalidations?: string };
}

describe('fleet: peer fill and write-back through a Redis outage', function () {
  this.timeout(40_000);
  const emulator = useEmulator({ syntheticUsers: true });
  const redis = useRedis();
  const apis = useServices(emulator);

  beforeEach(async () => {
    redis.resume(); // whatever the last test left paused
    emulator.reset();
    emulator.resetCounters();
    await redis.restart();
  });
  afterEach(() => redis.resume());

  const newUser = (): string => emulator.mint({ extraClaims: { oid: randomUUID() } });
  const me = (api: TestService, token: string) => api.request.get('/api/me').set(bearer(token));
  const readiness = async (api: TestService): Promise<Readiness> => (await api.request.get('/readyz')).body as Readiness;

  async function instance(env: Record<string, string> = {}): Promise<TestService> {
    // A short command timeout: requests during the pause pay it (the breaker opens after 5).
    const api = await apis.start({ REDIS_URL: redis.url, CACHE_ENCRYPTION_KEYS: KEYS, CACHE_L2_TIMEOUT_MS: '200', LOG_LEVEL: 'info', ...env });
    await until('L2 up and invalidations flowing', async () => {
      const { checks } = await readiness(api);
      return checks.cacheL2 === 'up' && checks.invalidations === 'flowing';
    });
    await sleep(1_000); // fills are taken from 1 s after the first sync (twice their 500 ms age bound)
    return api;
  }

  const fills = (api: TestService, result: string) => metric(api, 'obo_cache_peer_fills_total', { result });

  it('A exchanges; with Redis paused (SIGSTOP), B answers from its L1 without a token request, also once it has stopped trusting L1', async () => {
    const a = await instance();
    const b = await instance();
    const user = newUser();
    await me(a, user).expect(200);
    expect(emulator.counters.token).to.equal(1);
    await until('B to take A’s fill', async () => (await fills(b, 'applied')) === 1);

    redis.pause();
    await me(b, user).expect(200);
    expect(emulator.counters.token, 'B asked Entra nothing').to.equal(1);

    // No heartbeat comes back: B stops trusting L1, re-checks against L2, cannot reach it, serves L1.
    await until('B to stop trusting L1', async () => (await readiness(b)).checks.invalidations === 'interrupted', 15_000);
    await me(b, user).expect(200);
    await me(a, user).expect(200);
    expect(emulator.counters.token, 'neither instance exchanged again').to.equal(1);
    expect(b.logs.filter((line) => line.includes('"cache":"exchange"'))).to.have.length(0);
  });

  it('with CACHE_PEER_FILL=off, the same request on B has to exchange (what peer fill saves)', async () => {
    const a = await instance({ CACHE_PEER_FILL: 'off' });
    const b = await instance({ CACHE_PEER_FILL: 'off' });
    const user = newUser();
    await me(a, user).expect(200);
    await sleep(200);
    expect(await fills(b, 'applied')).to.equal(0);
    redis.pause();
    await me(b, user).expect(200);
    expect(emulator.counters.token).to.equal(2);
  });

  it('an entry A created while Redis was paused is written to Redis once it is back, and sent to B: neither exchanges again', async () => {
    const a = await instance();
    const b = await instance();
    redis.pause();
    const user = newUser();
    await me(a, user).expect(200);
    expect(emulator.counters.token).to.equal(1);
    redis.resume();
    await until('A to write it back', async () => (await metric(a, 'obo_cache_l2_writebacks_total', { result: 'ok' })) === 1, 15_000);
    await until('B to take the fill that came with it', async () => (await fills(b, 'applied')) === 1);
    await me(b, user).expect(200);
    expect(emulator.counters.token, 'B did not exchange').to.equal(1);
    expect(await metric(b, 'obo_cache_hits_total', { level: 'l1' })).to.equal(1);
    // In Redis too, for an instance that was not there to take the fill.
    const [, keys] = await redis.client().scan('0', 'MATCH', 'obo:*', 'COUNT', 1000);
    expect(keys.filter((key) => !key.startsWith('obo:throttle') && !key.startsWith('obo:lock:'))).to.have.length(1);
  });
});

describe('cache: a peer fill never undoes an invalidation, and never evicts', function () {
  this.timeout(30_000);
  const keys = parseEncryptionKeys(KEYS);
  let server: RedisServer;
  let admin: Redis;
  let prefix = '';
  const open: TieredCache<string>[] = [];
  const listeners: Redis[] = [];

  before(async () => {
    server = await startRedis();
    admin = server.client();
  });
  after(async () => {
    await server?.stop();
  });
  beforeEach(() => {
    prefix = `fill-${randomBytes(4).toString('hex')}:`;
  });
  afterEach(async () => {
    await Promise.all(open.splice(0).map((cache) => cache.close()));
    for (const listener of listeners.splice(0)) listener.disconnect();
  });

  function cache(registry: Registry, l1MaxBytes = 1024 * 1024, commandTimeoutMs = 1_000): TieredCache<string> {
    const logger = pino({ level: 'silent' });
    const made = createTieredCache<string>({
      l1MaxBytes,
      // A breaker that does not open: L2 answers as soon as Redis does.
      l2: createRedisStore({ url: server.url, commandTimeoutMs, logger, breaker: { failureThreshold: 1_000 } }),
      encryption: keys,
      keyPrefix: prefix,
      invalidationDelayMs: DELAY_MS,
      logger,
      registry,
    });
    open.push(made);
    return made;
  }

  const entry = (value: string): CacheEntry<string> => ({ value, expiresAt: Date.now() + 60_000 });
  let creates = 0;
  const create = (value: string) => () => {
    creates += 1;
    return Promise.resolve(entry(value));
  };

  /** A and B on one Redis, both flowing; a third connection records the fill messages. */
  async function fleet(bMaxBytes?: number): Promise<{ a: TieredCache<string>; b: TieredCache<string>; bRegistry: Registry; fillsSent: string[] }> {
    const bRegistry = new Registry();
    const a = cache(new Registry());
    const b = cache(bRegistry, bMaxBytes);
    expect(await a.ready(10_000)).to.equal(true);
    expect(await b.ready(10_000)).to.equal(true);
    await sleep((2 * DELAY_MS) / 10); // no fills are taken this soon after start (a start counts as a gap)
    const fillsSent: string[] = [];
    const listener = admin.duplicate();
    listeners.push(listener);
    await listener.subscribe(`${prefix}fill`);
    listener.on('message', (_channel: string, message: string) => fillsSent.push(message));
    creates = 0;
    return { a, b, bRegistry, fillsSent };
  }

  const applied = (registry: Registry, result = 'applied') => registryMetric(registry, 'obo_cache_peer_fills_total', { result });

  it('B serves A’s new entry from L1 (no Redis read); A’s later invalidation still drops it', async () => {
    const { a, b, bRegistry, fillsSent } = await fleet();
    await a.getOrCreate('user-1', create('v1'));
    await until('B to apply the fill', async () => (await applied(bRegistry)) === 1);
    expect(fillsSent).to.have.length(1);
    expect(fillsSent[0], 'the fill carries the sealed envelope, not the value').not.to.include('v1');
    await admin.config('RESETSTAT');
    expect(await b.getOrCreate('user-1', create('unused'))).to.deep.include({ source: 'l1' });
    expect(await admin.info('commandstats')).not.to.match(/cmdstat_get:/);

    await a.invalidate('user-1');
    await until('B to drop it', async () => (await registryMetric(bRegistry, 'obo_cache_invalidations_total', { origin: 'remote' })) === 1);
    const after = await b.getOrCreate('user-1', create('v2'));
    expect(after).to.deep.include({ source: 'created' });
    expect(after.entry.value).to.equal('v2');
  });

  it('a fill delivered after an invalidation of its key (sent before it, delivered late) is not taken', async () => {
    const { a, b, bRegistry, fillsSent } = await fleet();
    await a.getOrCreate('user-2', create('old'));
    await until('the fill to be sent and taken', async () => fillsSent.length === 1 && (await applied(bRegistry)) === 1);
    await a.invalidate('user-2');
    await until('B to drop it', async () => (await registryMetric(bRegistry, 'obo_cache_invalidations_total', { origin: 'remote' })) === 1);
    // The old fill again, as if Redis had delivered it after the invalidation.
    await admin.publish(`${prefix}fill`, fillsSent[0] ?? '');
    await until('B to refuse it', async () => (await applied(bRegistry, 'blocked')) === 1);
    const served = await b.getOrCreate('user-2', create('new'));
    expect(served.entry.value).to.equal('new');
    expect(served.source).to.equal('created');
  });

  it('an entry created while Redis was paused, re-checked right after Redis is back (before its write-back): served once deliveries are confirmed, not created again', async () => {
    const registry = new Registry();
    const a = cache(registry, undefined, 200);
    expect(await a.ready(10_000)).to.equal(true);
    creates = 0;
    server.pause();
    try {
      expect((await a.getOrCreate('user-4', create('during'))).source).to.equal('created');
      await until('A to stop trusting L1', () => a.invalidations()?.flowing === false, 3 * DELAY_MS);
    } finally {
      server.resume();
    }
    // L2 answers again, and has nothing for the key: that is no invalidation.
    const served = await a.getOrCreate('user-4', create('again'));
    expect(served).to.deep.include({ source: 'l1' });
    expect(served.entry.value).to.equal('during');
    expect(creates).to.equal(1);
    await until('the write-back', async () => (await registryMetric(registry, 'obo_cache_l2_writebacks_total', { result: 'ok' })) === 1);
  });

  it('B’s own invalidation blocks a late fill too, and an L1 that is full is not evicted to take a fill', async () => {
    // Room for one of these small entries (about 310 accounted bytes each), not two.
    const { a, b, bRegistry, fillsSent } = await fleet(500);
    await b.getOrCreate('mine', create('kept'));
    await a.getOrCreate('theirs', create('not-taken'));
    await until('B to see the fill', async () => (await applied(bRegistry, 'no_room')) === 1);
    expect(await b.getOrCreate('mine', create('unused'))).to.deep.include({ source: 'l1' });

    await b.invalidate('mine');
    await admin.publish(`${prefix}fill`, fillsSent.find((m) => m.includes('"k":"theirs"'))?.replace('"k":"theirs"', '"k":"mine"') ?? '');
    // Whatever it carries (here: a value sealed for another key), it is not taken.
    await until('B to refuse it', async () => (await applied(bRegistry, 'blocked')) === 1);
    expect(creates).to.equal(2);
  });
});
