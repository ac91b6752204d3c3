/**
 * Issue 13.2, no lost invalidations: two cache instances on one real redis-server. Instance A
 * reaches Redis through a forwarder that can take its subscriber away (or freeze it) while its
 * commands keep working; B invalidates a key meanwhile. A must not serve its old L1 entry past
 * the bound (invalidationDelayMs), whether its subscriber reconnects or stays silent.
 */
import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { createRedisStore, createTieredCache, parseEncryptionKeys, type CacheEntry, type TieredCache } from '../../cache/index.js';
import { startRedis, type RedisServer } from '../support/redis.js';
import { startSubscriberCuttingProxy, type SubscriberCuttingProxy } from '../support/subscriber-cutting-proxy.js';
import { sleep, until } from '../support/wait.js';

const KEYS = parseEncryptionKeys(`k1:${randomBytes(32).toString('base64')}`);
const DELAY_MS = 1_500;

interface Instance {
  cache: TieredCache<string>;
  registry: Registry;
  creates: number;
}

async function counter(registry: Registry, name: string): Promise<number> {
  const metric = await registry.getSingleMetric(name)?.get();
  return metric?.values[0]?.value ?? 0;
}

describe('cache: no lost invalidations (a subscriber that missed messages)', function () {
  this.timeout(30_000);
  let redis: RedisServer;
  let cutter: SubscriberCuttingProxy;
  const open: Instance[] = [];
  let prefix = '';

  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    await redis?.stop();
  });
  beforeEach(async () => {
    cutter = await startSubscriberCuttingProxy(redis.port);
    prefix = `gap-${randomBytes(4).toString('hex')}:`;
  });
  afterEach(async () => {
    await Promise.all(open.splice(0).map((instance) => instance.cache.close()));
    await cutter.close();
  });

  function instance(url: string): Instance {
    const registry = new Registry();
    const logger = pino({ level: 'silent' });
    const cache = createTieredCache<string>({
      l1MaxBytes: 1024 * 1024,
      l2: createRedisStore({ url, commandTimeoutMs: 500, logger, maxReconnectDelayMs: 100 }),
      encryption: KEYS,
      keyPrefix: prefix,
      invalidationDelayMs: DELAY_MS,
      logger,
      registry,
    });
    const made: Instance = { cache, registry, creates: 0 };
    open.push(made);
    return made;
  }

  const entry = (value: string): CacheEntry<string> => ({ value, expiresAt: Date.now() + 60_000 });
  const create = (who: Instance, value: string) => async () => {
    who.creates += 1;
    return entry(value);
  };

  /** A holds `old` in L1, and B has seen it too; both confirmed flowing. */
  async function twoInstancesSharing(key: string): Promise<{ a: Instance; b: Instance }> {
    const a = instance(cutter.url);
    const b = instance(redis.url);
    expect(await a.cache.ready(10_000)).to.equal(true);
    expect(await b.cache.ready(10_000)).to.equal(true);
    expect((await a.cache.getOrCreate(key, create(a, 'old'))).source).to.equal('created');
    expect((await b.cache.getOrCreate(key, create(b, 'unused'))).source).to.equal('l2');
    const hit = await a.cache.getOrCreate(key, create(a, 'unused'));
    expect(hit).to.deep.include({ source: 'l1' });
    return { a, b };
  }

  it('a subscriber dropped (and kept from reconnecting) while B invalidates: after it is back, A serves the new entry, not its L1 copy', async () => {
    const { a, b } = await twoInstancesSharing('user-1');
    const resyncsBefore = await counter(a.registry, 'obo_cache_invalidation_resyncs_total');

    cutter.cutSubscribers();
    await until('A to try to resubscribe (and be refused)', () => cutter.refusedSubscribers > 0);
    await b.cache.invalidate('user-1');
    expect((await b.cache.getOrCreate('user-1', create(b, 'new'))).source).to.equal('created');
    // A's commands still work, only its subscriber is gone: readiness says so.
    expect(a.cache.invalidations()?.flowing).to.equal(false);
    expect(a.cache.health().l2).to.equal('degraded');

    cutter.restoreSubscribers();
    await until('A to confirm invalidations flowing again', () => a.cache.invalidations()?.flowing === true, 10_000);
    const after = await a.cache.getOrCreate('user-1', create(a, 'must not be needed'));
    expect(after.entry.value).to.equal('new');
    expect(after.source).to.equal('l2');
    expect(a.creates).to.equal(1); // the old entry's; the new one came from L2
    expect(await counter(a.registry, 'obo_cache_invalidation_resyncs_total')).to.be.greaterThan(resyncsBefore);
    // Trusted again: the next read is an L1 hit.
    expect((await a.cache.getOrCreate('user-1', create(a, 'unused'))).source).to.equal('l1');
  });

  it('a subscriber that stays connected but silent: past the bound, A re-checks L2 and serves the new entry', async () => {
    const { a, b } = await twoInstancesSharing('user-2');
    cutter.freezeSubscribers();
    await b.cache.invalidate('user-2');
    await b.cache.getOrCreate('user-2', create(b, 'new'));

    // No connection event tells A anything; its trust lapses when heartbeats stop coming back.
    await until('A to stop trusting L1', () => a.cache.invalidations()?.flowing === false, DELAY_MS + 5_000);
    const during = await a.cache.getOrCreate('user-2', create(a, 'must not be needed'));
    expect(during.entry.value).to.equal('new');
    expect(during.source).to.equal('l2');
    expect(await counter(a.registry, 'obo_cache_l1_rechecks_total')).to.be.greaterThan(0);
    expect(a.cache.invalidations()?.lastSyncAgeSeconds).to.be.greaterThan(DELAY_MS / 1000 - 0.5);

    cutter.thawSubscribers();
    await until('A to trust L1 again', () => a.cache.invalidations()?.flowing === true, 10_000);
    // The held-back invalidation arrived late and dropped the copy A re-read: harmless, one more L2 read.
    expect((await a.cache.getOrCreate('user-2', create(a, 'unused'))).entry.value).to.equal('new');
    expect((await a.cache.getOrCreate('user-2', create(a, 'unused'))).source).to.equal('l1');
    expect(a.creates).to.equal(1);
  });

  it('with Redis unreachable altogether, A keeps serving L1 (as in any outage) instead of creating', async () => {
    const { a } = await twoInstancesSharing('user-3');
    cutter.cutAll();
    await until('A to stop trusting L1', () => a.cache.invalidations()?.flowing === false, DELAY_MS + 5_000);
    await sleep(50);
    const served = await a.cache.getOrCreate('user-3', create(a, 'must not be needed'));
    expect(served).to.deep.include({ source: 'l1' });
    expect(served.entry.value).to.equal('old');
    expect(a.creates).to.equal(1);
  });
});
