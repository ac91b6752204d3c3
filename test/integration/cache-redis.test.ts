/** The tiered cache against a real redis-server: L2, encryption, cross-instance single-flight and invalidation. */
import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import type { Redis } from 'ioredis';
import { Registry } from 'prom-client';
import {
  createRedisStore,
  createTieredCache,
  parseEncryptionKeys,
  type CacheEntry,
  type EncryptionKey,
  type L2Store,
  type TieredCache,
  type TieredCacheOptions,
} from '../../cache/index.js';
import { captureLogger } from '../support/logger.js';
import { registryMetric } from '../support/metrics.js';
import { startRedis, type RedisServer } from '../support/redis.js';
import { partitionKey } from '../support/tokens.js';
import { sleep, until } from '../support/wait.js';

interface Token {
  accessToken: string;
}

const OLD_KEYS = `old:${randomBytes(32).toString('base64')}`;
const NEW_KEYS = `new:${randomBytes(32).toString('base64')}`;

/** A JWT-shaped token: what must never appear in Redis or in a log line. */
function jwt(n: number): string {
  const part = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${part({ alg: 'RS256', typ: 'JWT' })}.${part({ sub: `user-${n}`, scp: 'User.Read' })}.${randomBytes(64).toString('base64url')}`;
}

/** `store` with some of its operations replaced. */
function delegate(store: L2Store, replaced: Partial<L2Store>): L2Store {
  return {
    get: (key) => store.get(key),
    set: (key, value, ttlMs) => store.set(key, value, ttlMs),
    del: (key) => store.del(key),
    tryLock: (key, owner, ttlMs) => store.tryLock(key, owner, ttlMs),
    unlock: (key, owner) => store.unlock(key, owner),
    publish: (channel, message) => store.publish(channel, message),
    subscribe: (channel, listener) => store.subscribe(channel, listener),
    ready: () => store.ready(),
    health: () => store.health(),
    close: () => store.close(),
    ...replaced,
  };
}

interface Instance {
  cache: TieredCache<Token>;
  registry: Registry;
  lines: string[];
}

describe('cache: L2 on a real redis-server', function () {
  let redis: RedisServer;
  let admin: Redis;
  let instances: Instance[] = [];
  let creates = 0;

  before(async () => {
    redis = await startRedis();
    admin = redis.client();
  });

  after(async () => {
    await redis?.stop();
  });

  beforeEach(async () => {
    creates = 0;
    await admin.flushall();
  });

  afterEach(async () => {
    await Promise.all(instances.map((i) => i.cache.close()));
    instances = [];
  });

  /** One "API instance": its own store, registry and logger, sharing the test's Redis. */
  async function instance(
    options: Partial<TieredCacheOptions> & {
      keys?: string;
      url?: string;
      store?: Partial<Parameters<typeof createRedisStore>[0]>;
      waitReady?: boolean;
      /** Wraps the real store, to interleave another instance's work with this one's calls. */
      wrap?: (store: L2Store) => L2Store;
    } = {},
  ): Promise<Instance> {
    const { logger, lines } = captureLogger();
    const registry = new Registry();
    const store: L2Store = createRedisStore({
      url: options.url ?? redis.url,
      commandTimeoutMs: 200,
      breaker: { failureThreshold: 5, openMs: 200 },
      logger,
      ...options.store,
    });
    const l2 = options.wrap ? options.wrap(store) : store;
    const encryption: EncryptionKey[] | 'off' = options.encryption ?? parseEncryptionKeys(options.keys ?? OLD_KEYS);
    const cache = createTieredCache<Token>({ l1MaxBytes: 1024 * 1024, keyPrefix: 'obo:', logger, registry, ...options, l2, encryption });
    const created = { cache, registry, lines };
    instances.push(created);
    if (options.waitReady !== false) expect(await cache.ready(5_000)).to.equal(true);
    return created;
  }

  const creator =
    (ttlMs = 60_000, delayMs = 0, extra: Partial<CacheEntry<Token>> = {}) =>
    async (): Promise<CacheEntry<Token>> => {
      const n = ++creates;
      if (delayMs) await sleep(delayMs);
      return { value: { accessToken: jwt(n) }, expiresAt: Date.now() + ttlMs, ...extra };
    };

  async function commandCalls(): Promise<Record<string, number>> {
    const info = await admin.info('commandstats');
    const calls: Record<string, number> = {};
    for (const match of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) calls[match[1] ?? ''] = Number(match[2]);
    return calls;
  }

  it('an L1 hit makes no Redis call at all (INFO commandstats)', async () => {
    const { cache, registry } = await instance();
    const key = partitionKey(1);
    await cache.getOrCreate(key, creator());
    await sleep(20); // let the lock release land
    await admin.config('RESETSTAT');
    for (let i = 0; i < 1_000; i++) expect((await cache.getOrCreate(key, creator())).source).to.equal('l1');
    const calls = Object.entries(await commandCalls()).filter(([name]) => !/^(info|config)\b/.test(name));
    expect(calls).to.deep.equal([]);
    expect(await registryMetric(registry, 'obo_cache_hits_total', { level: 'l1' })).to.equal(1_000);
  });

  it('an L2 hit fills L1: a new instance (empty L1) causes no new create()', async () => {
    const a = await instance();
    const key = partitionKey(2);
    const created = await a.cache.getOrCreate(key, creator());
    const b = await instance();
    const fromL2 = await b.cache.getOrCreate(key, creator());
    expect(fromL2.source).to.equal('l2');
    expect(fromL2.entry).to.deep.equal(created.entry);
    expect((await b.cache.getOrCreate(key, creator())).source).to.equal('l1');
    expect(creates).to.equal(1);
    expect(await registryMetric(b.registry, 'obo_cache_hits_total', { level: 'l2' })).to.equal(1);
    expect(await registryMetric(b.registry, 'obo_cache_hits_total', { level: 'l1' })).to.equal(1);
  });

  it("Redis TTL is the entry's remaining lifetime: entries leave Redis when they expire", async () => {
    const { cache } = await instance();
    const key = partitionKey(3);
    await cache.getOrCreate(key, creator(1_200));
    const ttl = await admin.pttl(`obo:${key}`);
    expect(ttl).to.be.within(900, 1_200);
    await until('the lock to be released', async () => (await admin.keys('obo:lock:*')).length === 0, 1_000);
    await sleep(1_250);
    expect(await admin.exists(`obo:${key}`)).to.equal(0);
    expect(await admin.dbsize()).to.equal(0);
  });

  it('stores ciphertext only: no JWT text in any Redis value, the key id in the envelope', async () => {
    const { cache } = await instance();
    const tokens: string[] = [];
    for (let i = 0; i < 5; i++) tokens.push((await cache.getOrCreate(partitionKey(i), creator())).entry.value.accessToken);
    await sleep(20);
    const keys = await admin.keys('*');
    expect(keys).to.have.length(5);
    for (const key of keys) {
      expect(key).to.match(/^obo:[A-Za-z0-9_-]{43}:user\.read$/);
      const raw = (await admin.getBuffer(key)) as Buffer;
      const text = raw.toString('latin1');
      expect(text).not.to.contain('eyJ');
      expect(text).not.to.contain('accessToken');
      for (const token of tokens) expect(text).not.to.contain(token.slice(40, 80));
      expect(raw[0]).to.equal(1);
      expect(raw.subarray(2, 2 + (raw[1] ?? 0)).toString()).to.equal('old');
      // Every key is volatile, so maxmemory + a volatile-* policy can cap the cache.
      expect(await admin.pttl(key)).to.be.greaterThan(0);
    }
  });

  it('a tampered value is a miss: counted, logged without content, never returned nor thrown', async () => {
    const a = await instance();
    const key = partitionKey(4);
    const original = await a.cache.getOrCreate(key, creator());
    const raw = (await admin.getBuffer(`obo:${key}`)) as Buffer;
    raw[raw.length - 30] = (raw[raw.length - 30] ?? 0) ^ 0xff;
    await admin.set(`obo:${key}`, raw, 'KEEPTTL');
    const b = await instance();
    const result = await b.cache.getOrCreate(key, creator());
    expect(result.source).to.equal('created');
    expect(result.entry.value.accessToken).not.to.equal(original.entry.value.accessToken);
    expect(await registryMetric(b.registry, 'obo_cache_decrypt_failures_total', { reason: 'auth_failed' })).to.equal(1);
    const logs = b.lines.join('\n');
    expect(logs).to.contain('did not open');
    expect(logs).not.to.contain(key);
    expect(logs).not.to.contain('eyJ');
    expect(logs).not.to.contain(raw.toString('base64').slice(0, 20));
  });

  it('a value copied under another key does not decrypt (the L2 key is the AAD)', async () => {
    const a = await instance();
    const [source, target] = [partitionKey(5), partitionKey(6)];
    await a.cache.getOrCreate(source, creator());
    await admin.set(`obo:${target}`, (await admin.getBuffer(`obo:${source}`)) as Buffer, 'PX', 60_000);
    const b = await instance();
    expect((await b.cache.getOrCreate(target, creator())).source).to.equal('created');
    expect(await registryMetric(b.registry, 'obo_cache_decrypt_failures_total', { reason: 'auth_failed' })).to.equal(1);
  });

  it('garbage, plaintext and unknown-kid values are misses, by reason', async () => {
    const writerNew = await instance({ keys: NEW_KEYS });
    const unknownKid = partitionKey(7);
    await writerNew.cache.getOrCreate(unknownKid, creator());
    const garbage = partitionKey(8);
    await admin.set(`obo:${garbage}`, 'not an envelope', 'PX', 60_000);
    const plaintext = partitionKey(9);
    await admin.set(
      `obo:${plaintext}`,
      Buffer.concat([Buffer.of(0), Buffer.from(JSON.stringify({ v: { accessToken: 'eyJinjected' }, e: Date.now() + 60_000 }))]),
      'PX',
      60_000,
    );

    const reader = await instance({ keys: OLD_KEYS });
    for (const key of [unknownKid, garbage, plaintext]) {
      const result = await reader.cache.getOrCreate(key, creator());
      expect(result.source).to.equal('created');
      expect(result.entry.value.accessToken).not.to.equal('eyJinjected');
    }
    expect(await registryMetric(reader.registry, 'obo_cache_decrypt_failures_total', { reason: 'unknown_kid' })).to.equal(1);
    expect(await registryMetric(reader.registry, 'obo_cache_decrypt_failures_total', { reason: 'malformed' })).to.equal(1);
    expect(await registryMetric(reader.registry, 'obo_cache_decrypt_failures_total', { reason: 'plaintext_refused' })).to.equal(1);
  });

  it('key rotation: a cache with [new, old] reads values written with [old] and writes with new', async () => {
    const before = await instance({ keys: OLD_KEYS });
    const key = partitionKey(10);
    const written = await before.cache.getOrCreate(key, creator());
    const rotated = await instance({ keys: `${NEW_KEYS},${OLD_KEYS}` });
    const read = await rotated.cache.getOrCreate(key, creator());
    expect(read.source).to.equal('l2');
    expect(read.entry).to.deep.equal(written.entry);
    const fresh = partitionKey(11);
    await rotated.cache.getOrCreate(fresh, creator());
    const raw = (await admin.getBuffer(`obo:${fresh}`)) as Buffer;
    expect(raw.subarray(2, 2 + (raw[1] ?? 0)).toString()).to.equal('new');
  });

  it('single-flight across two instances: 50 + 50 concurrent callers cause one create()', async () => {
    const [a, b] = [await instance(), await instance()];
    const key = partitionKey(12);
    const slow = creator(60_000, 200);
    const results = await Promise.all([
      ...Array.from({ length: 50 }, () => a.cache.getOrCreate(key, slow)),
      ...Array.from({ length: 50 }, () => b.cache.getOrCreate(key, slow)),
    ]);
    expect(creates).to.equal(1);
    expect(new Set(results.map((r) => r.entry.value.accessToken)).size).to.equal(1);
    expect(results.filter((r) => r.source === 'created')).to.have.length(1);
    expect(results.filter((r) => r.source === 'joined')).to.have.length(99);
    const cluster =
      (await registryMetric(a.registry, 'obo_cache_joins_total', { scope: 'cluster' })) +
      (await registryMetric(b.registry, 'obo_cache_joins_total', { scope: 'cluster' }));
    expect(cluster).to.equal(1);
  });

  it('a waiter whose lock wait runs out makes its own create()', async () => {
    const a = await instance();
    const b = await instance({ lockWaitMs: 300 });
    const key = partitionKey(13);
    // A's create() hangs far longer than B is willing to wait.
    const hanging = a.cache.getOrCreate(key, creator(60_000, 700));
    await sleep(30);
    const started = Date.now();
    const result = await b.cache.getOrCreate(key, creator());
    const elapsed = Date.now() - started;
    expect(result.source).to.equal('created');
    expect(elapsed).to.be.within(280, 650);
    expect(await registryMetric(b.registry, 'obo_cache_lock_wait_timeouts_total')).to.equal(1);
    expect((await hanging).source).to.equal('created');
    expect(creates).to.equal(2);
  });

  it("when the lock holder's create() fails, a waiter takes over without waiting out lockWaitMs", async () => {
    const a = await instance();
    const b = await instance({ lockWaitMs: 3_000 });
    const key = partitionKey(14);
    const failing = a.cache.getOrCreate(key, async () => {
      creates++;
      await sleep(100);
      throw new Error('invalid_grant');
    });
    await sleep(20);
    const started = Date.now();
    const result = await b.cache.getOrCreate(key, creator());
    expect(result.source).to.equal('created');
    expect(Date.now() - started).to.be.below(1_000);
    expect(await failing.catch((e: Error) => e.message)).to.equal('invalid_grant');
  });

  it('a holder that wrote and released between our L2 miss and our lock is adopted: the re-check under the lock', async () => {
    const writer = await instance();
    const key = partitionKey(20);
    let written: CacheEntry<Token> | undefined;
    // Right after the reader's first GET (a real miss), the writer creates, writes and releases.
    let writerTurn: (() => Promise<void>) | undefined = async () => {
      written = (await writer.cache.getOrCreate(key, creator())).entry;
      await until('the lock to be released', async () => (await admin.keys('obo:lock:*')).length === 0, 1_000);
    };
    const reader = await instance({
      wrap: (store) =>
        delegate(store, {
          get: async (fullKey) => {
            const value = await store.get(fullKey);
            const turn = writerTurn;
            writerTurn = undefined;
            if (turn) await turn();
            return value;
          },
        }),
    });
    const result = await reader.cache.getOrCreate(key, creator());
    expect(result.source).to.equal('joined');
    expect(result.entry).to.deep.equal(written);
    expect(creates).to.equal(1);
    expect(await registryMetric(reader.registry, 'obo_cache_misses_total')).to.equal(1);
    expect(await registryMetric(reader.registry, 'obo_cache_joins_total', { scope: 'cluster' })).to.equal(1);
    expect((await reader.cache.getOrCreate(key, creator())).source).to.equal('l1');
  });

  it('refresh-ahead leaves the work to another instance that holds the lock', async () => {
    let clock = Date.now();
    const a = await instance({ now: () => clock });
    const key = partitionKey(21);
    const first = await a.cache.getOrCreate(key, creator(60_000, 0, { refreshAt: clock + 1_000 }));
    await until('the lock to be released', async () => (await admin.keys('obo:lock:*')).length === 0, 1_000);
    // Another instance is refreshing this key.
    await admin.set(`obo:lock:${key}`, 'another-instance', 'PX', 10_000);
    clock += 1_000;
    expect((await a.cache.getOrCreate(key, creator())).entry).to.deep.equal(first.entry);
    await until('the refresh to give way', async () => (await registryMetric(a.registry, 'obo_cache_refreshes_total', { result: 'skipped' })) === 1);
    expect(creates).to.equal(1);
    expect(await registryMetric(a.registry, 'obo_cache_creates_total', { trigger: 'refresh', result: 'ok' })).to.equal(0);
    expect(await admin.get(`obo:lock:${key}`)).to.equal('another-instance');
  });

  it("invalidate() on A removes the L2 value and drops B's L1 copy through pub/sub", async () => {
    const [a, b] = [await instance(), await instance()];
    const key = partitionKey(15);
    await a.cache.getOrCreate(key, creator());
    expect((await b.cache.getOrCreate(key, creator())).source).to.equal('l2');
    expect((await b.cache.getOrCreate(key, creator())).source).to.equal('l1');
    await a.cache.invalidate(key);
    expect(await admin.exists(`obo:${key}`)).to.equal(0);
    await until(
      'B to hear the invalidation',
      async () => (await registryMetric(b.registry, 'obo_cache_invalidations_total', { origin: 'remote' })) === 1,
    );
    expect((await b.cache.getOrCreate(key, creator())).source).to.equal('created');
    // A ignores the echo of its own message.
    expect(await registryMetric(a.registry, 'obo_cache_invalidations_total', { origin: 'remote' })).to.equal(0);
    expect(await registryMetric(a.registry, 'obo_cache_invalidations_total', { origin: 'local' })).to.equal(1);
  });

  it('forceRefresh on A replaces the entry everywhere: B drops its L1 copy and reads the new one from L2', async () => {
    const [a, b] = [await instance(), await instance()];
    const key = partitionKey(16);
    await a.cache.getOrCreate(key, creator());
    await b.cache.getOrCreate(key, creator());
    const renewed = await a.cache.getOrCreate(key, creator(), { forceRefresh: true });
    expect(renewed.source).to.equal('created');
    await until('B to drop its copy', async () => (await registryMetric(b.registry, 'obo_cache_invalidations_total', { origin: 'remote' })) === 1);
    const seen = await b.cache.getOrCreate(key, creator());
    expect(seen.source).to.equal('l2');
    expect(seen.entry.value.accessToken).to.equal(renewed.entry.value.accessToken);
    expect(creates).to.equal(2);
  });

  it('refresh-ahead across instances: B adopts the entry A refreshed instead of creating again', async () => {
    const [a, b] = [await instance(), await instance()];
    const key = partitionKey(17);
    const first = await a.cache.getOrCreate(key, creator(60_000, 0, { refreshAt: Date.now() + 150 }));
    await b.cache.getOrCreate(key, creator());
    await sleep(200);
    const refreshed = creator(60_000, 0, { refreshAt: Date.now() + 60_000 });
    expect((await a.cache.getOrCreate(key, refreshed)).entry).to.deep.equal(first.entry);
    await until('A to refresh', async () => (await registryMetric(a.registry, 'obo_cache_refreshes_total', { result: 'ok' })) === 1);
    expect((await b.cache.getOrCreate(key, refreshed)).entry).to.deep.equal(first.entry);
    await until('B to adopt', async () => (await registryMetric(b.registry, 'obo_cache_refreshes_total', { result: 'adopted' })) === 1);
    const now = await b.cache.getOrCreate(key, refreshed);
    expect(now.source).to.equal('l1');
    expect(now.entry.value.accessToken).not.to.equal(first.entry.value.accessToken);
    expect(creates).to.equal(2);
  });

  it('reports health up once connected and subscribed', async () => {
    const { cache, registry } = await instance();
    expect(cache.health()).to.deep.equal({ l2: 'up' });
    expect(await registryMetric(registry, 'obo_cache_l2_up')).to.equal(1);
    expect(await registryMetric(registry, 'obo_cache_l2_breaker_state')).to.equal(0);
  });

  it('refuses an L2 without encryption keys unless encryption is explicitly off', async () => {
    const { logger, lines } = captureLogger();
    const store = () => createRedisStore({ url: redis.url, commandTimeoutMs: 100, logger });
    for (const encryption of [undefined, []]) {
      const l2 = store();
      expect(() => createTieredCache({ l1MaxBytes: 0, keyPrefix: 'obo:', logger, l2, encryption }))
        .to.throw()
        .with.property('code', 'CACHE_CONFIG_INVALID');
      await l2.close();
    }
    const off = await instance({ encryption: 'off' });
    const key = partitionKey(18);
    await off.cache.getOrCreate(key, creator());
    expect(((await admin.getBuffer(`obo:${key}`)) as Buffer)[0]).to.equal(0);
    expect(off.lines.join('\n')).to.contain('UNENCRYPTED');
    expect(lines.join('\n')).not.to.contain(redis.url);
  });

  it('rejects bad store options with typed errors that carry no credentials', () => {
    const { logger } = captureLogger();
    const attempts: Array<Parameters<typeof createRedisStore>[0]> = [
      { commandTimeoutMs: 100, logger },
      { url: 'redis://127.0.0.1:1', clusterNodes: ['127.0.0.1:2'], commandTimeoutMs: 100, logger },
      { url: 'http://user:hunter2@host:6379', commandTimeoutMs: 100, logger },
      { clusterNodes: ['127.0.0.1:7000', 'nonsense'], commandTimeoutMs: 100, logger },
      { url: redis.url, commandTimeoutMs: 0, logger },
    ];
    for (const options of attempts) {
      let error: unknown;
      try {
        createRedisStore(options);
      } catch (err) {
        error = err;
      }
      expect(error).to.have.property('code', 'CACHE_CONFIG_INVALID');
      expect((error as Error).message).not.to.contain('hunter2');
    }
  });

  it('works with an ACL user and password in a redis:// URL', async () => {
    const secured = await startRedis({ password: 'default-secret', user: { name: 'obo-app', password: 'p@ss:w/rd' } });
    try {
      expect(secured.url).to.match(/^redis:\/\/obo-app:p%40ss%3Aw%2Frd@127\.0\.0\.1:\d+$/);
      const a = await instance({ url: secured.url });
      const key = partitionKey(19);
      await a.cache.getOrCreate(key, creator());
      const b = await instance({ url: secured.url });
      expect((await b.cache.getOrCreate(key, creator())).source).to.equal('l2');
      const lines = [...a.lines, ...b.lines].join('\n');
      expect(lines).not.to.contain('p@ss');
      expect(lines).not.to.contain('p%40ss');
    } finally {
      await Promise.all(instances.map((i) => i.cache.close()));
      instances = [];
      await secured.stop();
    }
  });

  it('warns about a noeviction Redis, and a full one (OOM on write) never fails a call', async () => {
    const full = await startRedis({ args: ['--maxmemory', '2mb', '--maxmemory-policy', 'noeviction'] });
    try {
      const a = await instance({ url: full.url });
      await until('the memory policy check', () => a.lines.some((line) => line.includes('noeviction')), 2_000);
      const big = 'x'.repeat(16 * 1024);
      for (let i = 0; i < 300; i++) {
        const result = await a.cache.getOrCreate(partitionKey(500 + i), () =>
          Promise.resolve({ value: { accessToken: big }, expiresAt: Date.now() + 60_000 }),
        );
        expect(result.source).to.equal('created');
      }
      expect(await registryMetric(a.registry, 'obo_cache_l2_errors_total', { op: 'set', kind: 'error' })).to.be.greaterThan(0);
    } finally {
      await Promise.all(instances.map((i) => i.cache.close()));
      instances = [];
      await full.stop();
    }
  });

  describe('when Redis fails', () => {
    it('Redis killed mid-run: zero failed calls; restarted: L2 writes, hits and invalidations resume by themselves', async () => {
      const a = await instance();
      const keys = Array.from({ length: 20 }, (_, i) => partitionKey(100 + i));
      let running = true;
      let calls = 0;
      const failures: unknown[] = [];
      const worker = async () => {
        while (running) {
          const key = keys[Math.floor(Math.random() * keys.length)] as string;
          try {
            await a.cache.getOrCreate(key, creator(60_000, 2));
            if (Math.random() < 0.05) await a.cache.invalidate(key);
            calls++;
          } catch (err) {
            failures.push(err);
          }
          await sleep(1);
        }
      };
      const workers = Array.from({ length: 8 }, worker);
      await sleep(200);
      await redis.kill();
      await sleep(300);
      const during = a.cache.health();
      expect(during.l2).to.equal('degraded');
      expect(during.detail).to.match(/disconnected|breaker/);
      await redis.restart();
      await until('L2 to come back', () => a.cache.health().l2 === 'up', 8_000);
      await sleep(100);
      running = false;
      await Promise.all(workers);
      expect(failures).to.deep.equal([]);
      expect(calls).to.be.greaterThan(100);
      const skipped = await registryMetric(a.registry, 'obo_cache_l2_skipped_total', { op: 'get', reason: 'disconnected' });
      const errors = await registryMetric(a.registry, 'obo_cache_l2_errors_total', { op: 'get', kind: 'error' });
      expect(skipped + errors).to.be.greaterThan(0);

      // Writes resume: a new entry lands in the (empty, restarted) Redis...
      const key = partitionKey(200);
      await a.cache.getOrCreate(key, creator());
      expect(await admin.exists(`obo:${key}`)).to.equal(1);
      // ...hits resume: another instance reads it from L2...
      const b = await instance();
      expect((await b.cache.getOrCreate(key, creator())).source).to.equal('l2');
      // ...and A's subscription is back: it hears B's invalidation.
      await b.cache.invalidate(key);
      await until('A to hear B', async () => (await registryMetric(a.registry, 'obo_cache_invalidations_total', { origin: 'remote' })) === 1);
    });

    it('brown-out (Redis stops answering): calls stay bounded by the command timeout, the breaker opens and skips Redis, then closes', async () => {
      const a = await instance({ store: { commandTimeoutMs: 100, breaker: { failureThreshold: 3, openMs: 300 } } });
      const warm = partitionKey(300);
      await a.cache.getOrCreate(warm, creator());
      // The lock release runs in the background: let it land, or the pause turns it into a
      // timeout that counts towards the breaker before the misses below.
      await sleep(100);
      redis.pause();
      try {
        let started = performance.now();
        expect((await a.cache.getOrCreate(warm, creator())).source).to.equal('l1');
        expect(performance.now() - started).to.be.below(50); // far below the 100 ms timeout: Redis not involved
        // Each miss pays at most one command timeout (no write after a failed read) until the breaker opens.
        for (let i = 0; i < 3; i++) {
          started = performance.now();
          expect((await a.cache.getOrCreate(partitionKey(301 + i), creator())).source).to.equal('created');
          expect(performance.now() - started).to.be.within(95, 250);
        }
        expect(a.cache.health().l2).to.equal('degraded');
        expect(a.cache.health().detail).to.contain('circuit breaker open');
        expect(await registryMetric(a.registry, 'obo_cache_l2_breaker_state')).to.equal(2);
        // With the breaker open, Redis is skipped entirely.
        started = performance.now();
        expect((await a.cache.getOrCreate(partitionKey(305), creator())).source).to.equal('created');
        expect(performance.now() - started).to.be.below(50);
        expect(await registryMetric(a.registry, 'obo_cache_l2_errors_total', { op: 'get', kind: 'timeout' })).to.equal(3);
        expect(await registryMetric(a.registry, 'obo_cache_l2_skipped_total', { op: 'get', reason: 'breaker_open' })).to.equal(1);
        expect(a.lines.join('\n')).to.contain('circuit breaker opened');
      } finally {
        redis.resume();
      }
      await sleep(350);
      // The next call is the half-open probe; it succeeds and closes the breaker.
      const key = partitionKey(310);
      expect((await a.cache.getOrCreate(key, creator())).source).to.equal('created');
      expect(a.cache.health()).to.deep.equal({ l2: 'up' });
      expect(await admin.exists(`obo:${key}`)).to.equal(1);
      expect(await registryMetric(a.registry, 'obo_cache_l2_breaker_state')).to.equal(0);
    });

    it('a cache started while Redis is down serves L1 + create() and takes L2 up once Redis starts', async () => {
      await redis.kill();
      let a: Instance;
      try {
        a = await instance({ waitReady: false });
        expect(await a.cache.ready(200)).to.equal(false);
        expect(a.cache.health().l2).to.equal('degraded');
        const key = partitionKey(400);
        expect((await a.cache.getOrCreate(key, creator())).source).to.equal('created');
        expect((await a.cache.getOrCreate(key, creator())).source).to.equal('l1');
      } finally {
        await redis.restart();
      }
      expect(await a.cache.ready(8_000)).to.equal(true);
      expect(a.cache.health()).to.deep.equal({ l2: 'up' });
      const fresh = partitionKey(401);
      await a.cache.getOrCreate(fresh, creator());
      expect(await admin.exists(`obo:${fresh}`)).to.equal(1);
    });
  });
});
