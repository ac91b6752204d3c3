/** The tiered cache on a real 3-master Redis Cluster started on loopback. */
import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import { Cluster, Redis } from 'ioredis';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { createRedisStore, createTieredCache, parseEncryptionKeys, type CacheEntry, type TieredCache } from '../../cache/index.js';
import { registryMetric } from '../support/metrics.js';
import { startRedisCluster, type RedisCluster } from '../support/redis-cluster.js';
import { partitionKey } from '../support/tokens.js';
import { sleep, until } from '../support/wait.js';

interface Token {
  accessToken: string;
}

const KEYS = parseEncryptionKeys(`k1:${randomBytes(32).toString('base64')}`);

describe('cache: L2 on a real Redis Cluster (3 masters)', function () {
  this.timeout(30_000);
  let cluster: RedisCluster;
  let admin: Cluster;
  let caches: Array<{ cache: TieredCache<Token>; registry: Registry }> = [];
  let creates = 0;

  before(async () => {
    cluster = await startRedisCluster();
    admin = new Cluster(cluster.nodes.map((node) => ({ host: node.split(':')[0], port: Number(node.split(':')[1]) })));
    await new Promise<void>((resolve) => admin.once('ready', () => resolve()));
  });

  after(async () => {
    admin?.disconnect();
    await cluster?.stop();
  });

  beforeEach(() => {
    creates = 0;
  });

  afterEach(async () => {
    await Promise.all(caches.map((c) => c.cache.close()));
    caches = [];
  });

  async function instance(): Promise<{ cache: TieredCache<Token>; registry: Registry }> {
    const logger = pino({ level: 'silent' });
    const registry = new Registry();
    const l2 = createRedisStore({ clusterNodes: cluster.nodes, commandTimeoutMs: 500, logger });
    const cache = createTieredCache<Token>({ l1MaxBytes: 1024 * 1024, l2, encryption: KEYS, keyPrefix: 'obo:', logger, registry });
    caches.push({ cache, registry });
    expect(await cache.ready(10_000)).to.equal(true);
    return { cache, registry };
  }

  const creator =
    (delayMs = 0) =>
    async (): Promise<CacheEntry<Token>> => {
      const n = ++creates;
      if (delayMs) await sleep(delayMs);
      return { value: { accessToken: `eyJ.cluster-${n}` }, expiresAt: Date.now() + 60_000 };
    };

  it('shares entries across instances, with keys spread over every master and TTLs set', async () => {
    const [a, b] = [await instance(), await instance()];
    expect(a.cache.health()).to.deep.equal({ l2: 'up' });
    const keys = Array.from({ length: 30 }, (_, i) => partitionKey(i));
    for (const key of keys) expect((await a.cache.getOrCreate(key, creator())).source).to.equal('created');
    for (const key of keys) expect((await b.cache.getOrCreate(key, creator())).source).to.equal('l2');
    expect(creates).to.equal(30);
    for (const key of keys) expect(await admin.pttl(`obo:${key}`)).to.be.within(50_000, 60_000);
    const perNode = await Promise.all(
      cluster.nodes.map(async (node) => {
        const [host, port] = node.split(':');
        const direct = new Redis({ host, port: Number(port) });
        try {
          return await direct.dbsize();
        } finally {
          direct.disconnect();
        }
      }),
    );
    expect(perNode.every((count) => count > 0)).to.equal(true);
  });

  it('invalidation over pub/sub reaches the other instance', async () => {
    const [a, b] = [await instance(), await instance()];
    const key = partitionKey(100);
    await a.cache.getOrCreate(key, creator());
    expect((await b.cache.getOrCreate(key, creator())).source).to.equal('l2');
    await a.cache.invalidate(key);
    await until(
      'B to hear the invalidation',
      async () => (await registryMetric(b.registry, 'obo_cache_invalidations_total', { origin: 'remote' })) === 1,
    );
    expect(await admin.exists(`obo:${key}`)).to.equal(0);
    expect((await b.cache.getOrCreate(key, creator())).source).to.equal('created');
  });

  it('single-flight across instances: 25 + 25 concurrent callers cause one create()', async () => {
    const [a, b] = [await instance(), await instance()];
    const key = partitionKey(200);
    const slow = creator(150);
    const results = await Promise.all([
      ...Array.from({ length: 25 }, () => a.cache.getOrCreate(key, slow)),
      ...Array.from({ length: 25 }, () => b.cache.getOrCreate(key, slow)),
    ]);
    expect(creates).to.equal(1);
    expect(new Set(results.map((r) => r.entry.value.accessToken)).size).to.equal(1);
  });
});
