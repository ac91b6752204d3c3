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
import { createRedisStore, createTieredCache, parseEncryptionKeys, type CacheEntry, type L2Store, type TieredCache } from '../../cache/index.js';
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

/**
 * Two instances' worth of fixtures: a real redis-server for the describe block, and per test a
 * forwarder that can cut A's subscriber, a fresh key prefix and the instances made (closed after).
 */
function useGapFixture(tag: string) {
  let redis: RedisServer | undefined;
  let cutter: SubscriberCuttingProxy | undefined;
  const open: Instance[] = [];
  let prefix = '';
  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    await redis?.stop();
  });
  beforeEach(async () => {
    cutter = await startSubscriberCuttingProxy(started(redis).port);
    prefix = `${tag}-${randomBytes(4).toString('hex')}:`;
  });
  afterEach(async () => {
    await Promise.all(open.splice(0).map((instance) => instance.cache.close()));
    await cutter?.close();
  });
  return {
    get redis(): RedisServer {
      return started(redis);
    },
    get cutter(): SubscriberCuttingProxy {
      return started(cutter);
    },
    /** This test's key prefix. */
    get prefix(): string {
      return prefix;
    },
    instance(url: string): Instance {
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
    },
  };
}

function started<T>(value: T | undefined): T {
  if (value === undefined) throw new Error('the fixture is used before its hooks ran');
  return value;
}

describe('cache: no lost invalidations (a subscriber that missed messages)', function () {
  this.timeout(30_000);
  const fx = useGapFixture('gap');
  const instance = (url: string) => fx.instance(url);

  const entry = (value: string): CacheEntry<string> => ({ value, expiresAt: Date.now() + 60_000 });
  const create = (who: Instance, value: string) => () => {
    who.creates += 1;
    return Promise.resolve(entry(value));
  };

  /** A holds `old` in L1, and B has seen it too; both confirmed flowing. */
  async function twoInstancesSharing(key: string): Promise<{ a: Instance; b: Instance }> {
    const a = instance(fx.cutter.url);
    const b = instance(fx.redis.url);
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

    fx.cutter.cutSubscribers();
    await until('A to try to resubscribe (and be refused)', () => fx.cutter.refusedSubscribers > 0);
    await b.cache.invalidate('user-1');
    expect((await b.cache.getOrCreate('user-1', create(b, 'new'))).source).to.equal('created');
    // A's commands still work, only its subscriber is gone: readiness says so.
    expect(a.cache.invalidations()?.flowing).to.equal(false);
    expect(a.cache.health().l2).to.equal('degraded');

    fx.cutter.restoreSubscribers();
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
    fx.cutter.freezeSubscribers();
    await b.cache.invalidate('user-2');
    await b.cache.getOrCreate('user-2', create(b, 'new'));

    // No connection event tells A anything; its trust lapses when heartbeats stop coming back.
    await until('A to stop trusting L1', () => a.cache.invalidations()?.flowing === false, DELAY_MS + 5_000);
    const during = await a.cache.getOrCreate('user-2', create(a, 'must not be needed'));
    expect(during.entry.value).to.equal('new');
    expect(during.source).to.equal('l2');
    expect(await counter(a.registry, 'obo_cache_l1_rechecks_total')).to.be.greaterThan(0);
    expect(a.cache.invalidations()?.lastSyncAgeSeconds).to.be.greaterThan(DELAY_MS / 1000 - 0.5);

    fx.cutter.thawSubscribers();
    await until('A to trust L1 again', () => a.cache.invalidations()?.flowing === true, 10_000);
    // The held-back invalidation arrived late and dropped the copy A re-read: harmless, one more L2 read.
    expect((await a.cache.getOrCreate('user-2', create(a, 'unused'))).entry.value).to.equal('new');
    expect((await a.cache.getOrCreate('user-2', create(a, 'unused'))).source).to.equal('l1');
    expect(a.creates).to.equal(1);
  });

  it('with Redis unreachable altogether, A keeps serving L1 (as in any outage) instead of creating', async () => {
    const { a } = await twoInstancesSharing('user-3');
    fx.cutter.cutAll();
    await until('A to stop trusting L1', () => a.cache.invalidations()?.flowing === false, DELAY_MS + 5_000);
    await sleep(50);
    const served = await a.cache.getOrCreate('user-3', create(a, 'must not be needed'));
    expect(served).to.deep.include({ source: 'l1' });
    expect(served.entry.value).to.equal('old');
    expect(a.creates).to.equal(1);
  });
});

/**
 * A heartbeat that comes back after a later one (Redis Cluster: relayed by another node, or held
 * by a paused node) is late, not lost: no resync (which would drop all of L1), but no trust past
 * it either, until it comes. One that never comes while later ones do is lost: a resync. A store
 * of our own delivers the pub/sub messages, so the test decides their order.
 */
describe('cache: late heartbeats are waited for, lost ones resync', function () {
  this.timeout(15_000);
  const DELAY = 500;

  /** An L2Store with no values and in-process pub/sub; `hold` keeps matching messages back until `release()`. */
  function orderedStore() {
    const listeners = new Map<string, (message: string) => void>();
    const held: [string, string][] = [];
    const interruptions: (() => void)[] = [];
    const control = { hold: (_channel: string, _message: string): boolean => false };
    const deliver = (channel: string, message: string) => setImmediate(() => listeners.get(channel)?.(message));
    const store: L2Store = {
      get: () => Promise.resolve(null),
      set: () => Promise.resolve(),
      del: () => Promise.resolve(),
      tryLock: () => Promise.resolve(true),
      unlock: () => Promise.resolve(),
      publish: (channel, message) => {
        if (control.hold(channel, message)) held.push([channel, message]);
        else deliver(channel, message);
        return Promise.resolve();
      },
      subscribe: (channel, listener, onInterrupted) => {
        listeners.set(channel, listener);
        if (onInterrupted) interruptions.push(onInterrupted);
        return Promise.resolve(() => {
          listeners.delete(channel);
          return Promise.resolve();
        });
      },
      ready: () => Promise.resolve(),
      health: () => ({ status: 'up' }),
      close: () => Promise.resolve(),
    };
    const release = () => {
      for (const [channel, message] of held.splice(0)) deliver(channel, message);
    };
    /** The subscriber connection dropped (and is back at once): what the Redis store reports. */
    const dropSubscriber = () => {
      for (const interrupted of interruptions) interrupted();
    };
    return { store, control, release, dropSubscriber };
  }

  async function started(store: L2Store, delayMs = DELAY): Promise<{ cache: TieredCache<string>; registry: Registry }> {
    const registry = new Registry();
    const logger = pino({ level: 'silent' });
    const cache = createTieredCache<string>({
      l1MaxBytes: 1024 * 1024,
      l2: store,
      encryption: KEYS,
      keyPrefix: 'late:',
      invalidationDelayMs: delayMs,
      logger,
      registry,
    });
    expect(await cache.ready(5_000)).to.equal(true);
    await until('flowing', () => cache.invalidations()?.flowing === true);
    return { cache, registry };
  }
  /** Holds back the next heartbeat only. */
  const holdNextHeartbeat = (control: { hold: (channel: string, message: string) => boolean }) => {
    let taken = false;
    control.hold = (channel) => {
      if (taken || !channel.includes(':heartbeat:')) return false;
      taken = true;
      return true;
    };
  };

  it('a heartbeat delivered after a later one: trust lapses meanwhile, and it is back without a resync when the late one comes', async () => {
    const { store, control, release } = orderedStore();
    const { cache, registry } = await started(store);
    const resyncs = await counter(registry, 'obo_cache_invalidation_resyncs_total');
    holdNextHeartbeat(control);
    await until('trust to lapse behind the missing heartbeat', () => cache.invalidations()?.flowing === false, 3 * DELAY);
    expect(await counter(registry, 'obo_cache_invalidation_resyncs_total')).to.equal(resyncs);
    release();
    await until('flowing again', () => cache.invalidations()?.flowing === true);
    expect(await counter(registry, 'obo_cache_invalidation_resyncs_total'), 'no resync: nothing was lost').to.equal(resyncs);
    await cache.close();
  });

  it('after the subscriber dropped, a heartbeat that can never come (published before it re-subscribed) does not hold trust back', async () => {
    // A long bound, so that waiting for the missing beat (2 x the bound) and not waiting differ by seconds.
    const delayMs = 3_000;
    const { store, control, dropSubscriber } = orderedStore();
    const { cache, registry } = await started(store, delayMs);
    const resyncs = await counter(registry, 'obo_cache_invalidation_resyncs_total');
    dropSubscriber();
    holdNextHeartbeat(control); // never released
    expect(cache.invalidations()?.flowing).to.equal(false);
    // The next echoed beat ends the gap (a resync covers whatever the missing one could prove):
    // heartbeats go every delayMs / 5, so well within the bound, not after 2 x delayMs.
    await until('flowing again', () => cache.invalidations()?.flowing === true, delayMs);
    expect(await counter(registry, 'obo_cache_invalidation_resyncs_total')).to.equal(resyncs + 1);
    await cache.close();
  });

  it('a heartbeat that never comes while later ones do: lost, and the next echo resyncs', async () => {
    const { store, control } = orderedStore();
    const { cache, registry } = await started(store);
    const resyncs = await counter(registry, 'obo_cache_invalidation_resyncs_total');
    holdNextHeartbeat(control);
    await until('a resync', async () => (await counter(registry, 'obo_cache_invalidation_resyncs_total')) === resyncs + 1, 4 * DELAY + 2_000);
    await until('flowing again', () => cache.invalidations()?.flowing === true);
    await cache.close();
  });
});

/**
 * Entries an instance created itself during a gap survive its resync unless their key's
 * invalidation marker (`<prefix>inv:<key>`, written with every invalidation before its PUBLISH)
 * says another instance invalidated it since (cache/README.md, "Entries created during a gap").
 */
describe('cache: entries created during a gap, kept at the resync unless invalidated since', function () {
  this.timeout(30_000);
  const fx = useGapFixture('kept');
  const instance = (url: string) => fx.instance(url);

  const create = (who: Instance, value: string) => () => {
    who.creates += 1;
    return Promise.resolve({ value, expiresAt: Date.now() + 60_000 });
  };
  async function bothReady(): Promise<{ a: Instance; b: Instance }> {
    const a = instance(fx.cutter.url);
    const b = instance(fx.redis.url);
    expect(await a.cache.ready(10_000)).to.equal(true);
    expect(await b.cache.ready(10_000)).to.equal(true);
    await until('both flowing', () => a.cache.invalidations()?.flowing === true && b.cache.invalidations()?.flowing === true, 10_000);
    return { a, b };
  }
  const resyncs = (who: Instance) => counter(who.registry, 'obo_cache_invalidation_resyncs_total');

  it('Redis unreachable for A while it exchanges for a new user: after the resync A serves it from L1, and writes it back to L2', async () => {
    const { a, b } = await bothReady();
    const before = await resyncs(a);
    fx.cutter.cutAll();
    await until('A to see the outage', () => a.cache.invalidations()?.flowing === false, DELAY_MS + 5_000);
    const made = await a.cache.getOrCreate('new-user', create(a, 'issued in the outage'));
    expect(made.source).to.equal('created');

    fx.cutter.restoreAll();
    await until('A to resync', async () => (await resyncs(a)) > before && a.cache.invalidations()?.flowing === true, 10_000);
    const after = await a.cache.getOrCreate('new-user', create(a, 'must not be needed'));
    expect(after).to.deep.include({ source: 'l1' });
    expect(after.entry.value).to.equal('issued in the outage');
    expect(a.creates, 'no second exchange').to.equal(1);
    expect(await counter(a.registry, 'obo_cache_resync_created_total')).to.equal(1);

    // The write-back put it in L2: B (which never had it) finds it without creating.
    const raw = fx.redis.client();
    await until('the write-back to reach L2', async () => (await raw.exists(`${fx.prefix}new-user`)) === 1, 5_000);
    const atB = await b.cache.getOrCreate('new-user', create(b, 'must not be needed'));
    expect(atB.entry.value).to.equal('issued in the outage');
    expect(b.creates).to.equal(0);
  });

  it('an exchange started in the outage and finished after the resync: cached, not thrown away', async () => {
    const { a } = await bothReady();
    const before = await resyncs(a);
    fx.cutter.cutAll();
    await until('A to see the outage', () => a.cache.invalidations()?.flowing === false, DELAY_MS + 5_000);
    let finish: (value: CacheEntry<string>) => void = () => undefined;
    const slow = () => {
      a.creates += 1;
      return new Promise<CacheEntry<string>>((resolve) => {
        finish = resolve;
      });
    };
    const pending = a.cache.getOrCreate('slow-user', slow);
    await until('the create() to start', () => a.creates === 1);
    fx.cutter.restoreAll();
    await until('A to resync', async () => (await resyncs(a)) > before && a.cache.invalidations()?.flowing === true, 10_000);
    finish({ value: 'finished after the resync', expiresAt: Date.now() + 60_000 });
    expect((await pending).source).to.equal('created');
    const after = await a.cache.getOrCreate('slow-user', create(a, 'must not be needed'));
    expect(after).to.deep.include({ source: 'l1' });
    expect(after.entry.value).to.equal('finished after the resync');
    expect(a.creates).to.equal(1);
  });

  it("A's subscriber cut while it creates two entries and B invalidates one: after the resync A keeps the other, and drops the invalidated one", async () => {
    const { a, b } = await bothReady();
    const before = await resyncs(a);
    fx.cutter.cutSubscribers();
    await until('A to try to resubscribe (and be refused)', () => fx.cutter.refusedSubscribers > 0);
    expect((await a.cache.getOrCreate('invalidated', create(a, 'old'))).source).to.equal('created');
    expect((await a.cache.getOrCreate('untouched', create(a, 'kept'))).source).to.equal('created');
    const invalidatedAt = Date.now();
    await b.cache.invalidate('invalidated');

    // The marker, next to the L2 delete: the invalidation's time, with a bounded TTL.
    const raw = fx.redis.client();
    const marker = Number(await raw.get(`${fx.prefix}inv:invalidated`));
    expect(marker).to.be.within(invalidatedAt - 1_000, Date.now() + 1_000);
    const ttl = await raw.pttl(`${fx.prefix}inv:invalidated`);
    expect(ttl).to.be.within(1, 60 * 60 * 1000);
    expect(await raw.exists(`${fx.prefix}invalidated`)).to.equal(0);

    fx.cutter.restoreSubscribers();
    await until('A to resync', async () => (await resyncs(a)) > before && a.cache.invalidations()?.flowing === true, 10_000);
    const untouched = await a.cache.getOrCreate('untouched', create(a, 'must not be needed'));
    expect(untouched).to.deep.include({ source: 'l1' });
    expect(untouched.entry.value).to.equal('kept');
    const invalidated = await a.cache.getOrCreate('invalidated', create(a, 'new'));
    expect(invalidated.entry.value, 'the invalidated entry is not served').to.equal('new');
    expect(invalidated.source).to.equal('created');
    expect(a.creates).to.equal(3);
  });
});
