/** The tiered cache without L2: L1 semantics, single-flight, refresh-ahead, metrics. */
import { expect } from 'chai';
import { pino } from 'pino';
import { Registry, register as globalRegistry } from 'prom-client';
import { CacheClosedError, CacheEntryError, CacheKeyError, createTieredCache, type CacheEntry, type TieredCache } from '../../cache/index.js';

interface Token {
  accessToken: string;
}

function captureLogger() {
  const lines: string[] = [];
  const logger = pino({ level: 'debug' }, { write: (line: string) => void lines.push(line) });
  return { logger, lines };
}

async function metric(registry: Registry, name: string, labels: Record<string, string> = {}): Promise<number> {
  const found = await registry.getSingleMetric(name)?.get();
  const value = found?.values.find((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l));
  return value?.value ?? 0;
}

const tick = () => new Promise((resolve) => setImmediate(resolve));
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('cache: L1 only', () => {
  let clock: number;
  let registry: Registry;
  let log: ReturnType<typeof captureLogger>;
  let cache: TieredCache<Token>;
  let creates: number;

  const make = (l1MaxBytes = 1024 * 1024) =>
    createTieredCache<Token>({ l1MaxBytes, keyPrefix: 'obo:', logger: log.logger, registry, now: () => clock });

  /** A create() that counts its calls and yields a fresh token living `ttlMs`. */
  const creator =
    (ttlMs = 60_000, extra: Partial<CacheEntry<Token>> = {}, delayMs = 0) =>
    async (): Promise<CacheEntry<Token>> => {
      creates++;
      const n = creates;
      if (delayMs) await sleep(delayMs);
      return { value: { accessToken: `eyJtoken-${n}` }, expiresAt: clock + ttlMs, ...extra };
    };

  beforeEach(() => {
    clock = Date.now();
    registry = new Registry();
    log = captureLogger();
    creates = 0;
    cache = make();
  });

  afterEach(() => cache.close());

  it('creates on a miss, then answers from L1 with the same parsed object', async () => {
    const first = await cache.getOrCreate('k', creator());
    const second = await cache.getOrCreate('k', creator());
    expect(first.source).to.equal('created');
    expect(second.source).to.equal('l1');
    expect(second.entry).to.equal(first.entry);
    expect(creates).to.equal(1);
    expect(await metric(registry, 'obo_cache_hits_total', { level: 'l1' })).to.equal(1);
    expect(await metric(registry, 'obo_cache_misses_total')).to.equal(1);
    expect(await metric(registry, 'obo_cache_creates_total', { trigger: 'miss', result: 'ok' })).to.equal(1);
  });

  it('single-flight: 50 concurrent callers for one key cause one create()', async () => {
    const results = await Promise.all(Array.from({ length: 50 }, () => cache.getOrCreate('k', creator(60_000, {}, 30))));
    expect(creates).to.equal(1);
    expect(results.filter((r) => r.source === 'created')).to.have.length(1);
    expect(results.filter((r) => r.source === 'joined')).to.have.length(49);
    expect(new Set(results.map((r) => r.entry.value.accessToken)).size).to.equal(1);
    expect(await metric(registry, 'obo_cache_joins_total', { scope: 'process' })).to.equal(49);
  });

  it('different keys do not share a flight', async () => {
    await Promise.all(['a', 'b', 'c'].map((key) => cache.getOrCreate(key, creator(60_000, {}, 10))));
    expect(creates).to.equal(3);
  });

  it('a failing create() rejects every joiner with its error and caches nothing', async () => {
    const failing = async (): Promise<CacheEntry<Token>> => {
      creates++;
      await sleep(10);
      throw new Error('exchange failed');
    };
    const results = await Promise.allSettled(Array.from({ length: 10 }, () => cache.getOrCreate('k', failing)));
    expect(creates).to.equal(1);
    for (const r of results) expect(r.status === 'rejected' && (r.reason as Error).message).to.equal('exchange failed');
    expect((await cache.getOrCreate('k', creator())).source).to.equal('created');
    expect(await metric(registry, 'obo_cache_creates_total', { trigger: 'miss', result: 'error' })).to.equal(1);
  });

  it('expires entries at expiresAt and does not cache an already expired entry', async () => {
    await cache.getOrCreate('k', creator(1_000));
    clock += 999;
    expect((await cache.getOrCreate('k', creator())).source).to.equal('l1');
    clock += 1;
    expect((await cache.getOrCreate('k', creator(-5))).source).to.equal('created');
    expect((await cache.getOrCreate('k', creator())).source).to.equal('created');
    expect(creates).to.equal(3);
  });

  it('refresh-ahead: past refreshAt it serves the old entry and refreshes once in the background', async () => {
    await cache.getOrCreate('k', creator(60_000, { refreshAt: clock + 30_000 }));
    clock += 30_000;
    const slowRefresh = creator(60_000, {}, 20);
    const during = await Promise.all(Array.from({ length: 20 }, () => cache.getOrCreate('k', slowRefresh)));
    expect(during.every((r) => r.source === 'l1' && r.entry.value.accessToken === 'eyJtoken-1')).to.equal(true);
    await sleep(40);
    expect(creates).to.equal(2);
    const after = await cache.getOrCreate('k', creator());
    expect(after).to.deep.include({ source: 'l1' });
    expect(after.entry.value.accessToken).to.equal('eyJtoken-2');
    expect(await metric(registry, 'obo_cache_refreshes_total', { result: 'ok' })).to.equal(1);
    expect(await metric(registry, 'obo_cache_creates_total', { trigger: 'refresh', result: 'ok' })).to.equal(1);
  });

  it('a failed refresh is swallowed and logged without content; the old entry keeps being served', async () => {
    await cache.getOrCreate('secret-key-123456', creator(60_000, { refreshAt: clock + 1 }));
    clock += 10;
    const failing = (): Promise<CacheEntry<Token>> => {
      creates++;
      return Promise.reject(new Error('entra is down'));
    };
    const served = await cache.getOrCreate('secret-key-123456', failing);
    expect(served.entry.value.accessToken).to.equal('eyJtoken-1');
    await tick();
    expect(await metric(registry, 'obo_cache_refreshes_total', { result: 'error' })).to.equal(1);
    // Retries wait a moment instead of hammering create() on every hit.
    await cache.getOrCreate('secret-key-123456', failing);
    await tick();
    expect(creates).to.equal(2);
    clock += 1_000;
    await cache.getOrCreate('secret-key-123456', failing);
    await tick();
    expect(creates).to.equal(3);
    const text = log.lines.join('\n');
    expect(text).to.contain('background refresh failed');
    expect(text).not.to.contain('secret-key-123456');
    expect(text).not.to.contain('eyJtoken');
  });

  it('forceRefresh skips L1, is single-flight among forced callers, and replaces the L1 entry', async () => {
    await cache.getOrCreate('k', creator());
    const forced = await Promise.all(Array.from({ length: 5 }, () => cache.getOrCreate('k', creator(60_000, {}, 10), { forceRefresh: true })));
    expect(creates).to.equal(2);
    expect(forced.map((r) => r.source).sort()).to.deep.equal(['created', 'joined', 'joined', 'joined', 'joined']);
    const next = await cache.getOrCreate('k', creator());
    expect(next.source).to.equal('l1');
    expect(next.entry.value.accessToken).to.equal('eyJtoken-2');
    expect(await metric(registry, 'obo_cache_creates_total', { trigger: 'force', result: 'ok' })).to.equal(1);
  });

  it('a forced result is not overwritten by an older load still in flight', async () => {
    let release: () => void = () => {};
    const slow = async (): Promise<CacheEntry<Token>> => {
      await new Promise<void>((resolve) => (release = resolve));
      return { value: { accessToken: 'eyJold' }, expiresAt: clock + 60_000 };
    };
    const pending = cache.getOrCreate('k', slow);
    await tick();
    await cache.getOrCreate('k', () => Promise.resolve({ value: { accessToken: 'eyJnew' }, expiresAt: clock + 60_000 }), { forceRefresh: true });
    release();
    expect((await pending).entry.value.accessToken).to.equal('eyJold');
    expect((await cache.getOrCreate('k', creator())).entry.value.accessToken).to.equal('eyJnew');
  });

  it('invalidate() drops the L1 entry, and a load in flight does not put it back', async () => {
    await cache.getOrCreate('k', creator());
    await cache.invalidate('k');
    let release: () => void = () => {};
    const slow = async (): Promise<CacheEntry<Token>> => {
      await new Promise<void>((resolve) => (release = resolve));
      return { value: { accessToken: 'eyJstale' }, expiresAt: clock + 60_000 };
    };
    const pending = cache.getOrCreate('k', slow);
    await tick();
    await cache.invalidate('k');
    release();
    expect((await pending).source).to.equal('created');
    expect((await cache.getOrCreate('k', creator())).source).to.equal('created');
    expect(await metric(registry, 'obo_cache_invalidations_total', { origin: 'local' })).to.equal(2);
  });

  it('is bounded in bytes: evicts least recently used entries and counts the evictions', async () => {
    await cache.close();
    cache = make(20_000);
    const big = 'x'.repeat(1_000);
    for (let i = 0; i < 100; i++) {
      await cache.getOrCreate(`key-${i}`, () => Promise.resolve({ value: { accessToken: big }, expiresAt: clock + 60_000 }));
    }
    const bytes = await metric(registry, 'obo_cache_l1_bytes');
    const entries = await metric(registry, 'obo_cache_l1_entries');
    expect(bytes).to.be.at.most(20_000).and.greaterThan(15_000);
    expect(entries).to.be.within(5, 10);
    expect(await metric(registry, 'obo_cache_l1_evictions_total', { reason: 'capacity' })).to.equal(100 - entries);
    expect((await cache.getOrCreate('key-99', creator())).source).to.equal('l1');
    expect((await cache.getOrCreate('key-0', creator())).source).to.equal('created');
  });

  it('l1MaxBytes 0 disables L1 (every call creates) but keeps single-flight', async () => {
    await cache.close();
    cache = make(0);
    await cache.getOrCreate('k', creator());
    expect((await cache.getOrCreate('k', creator())).source).to.equal('created');
    await Promise.all(Array.from({ length: 10 }, () => cache.getOrCreate('k', creator(60_000, {}, 10))));
    expect(creates).to.equal(3);
  });

  it('rejects bad keys, bad entries and use after close with typed errors', async () => {
    for (const key of ['', 'lock:abc']) {
      const err = await cache.getOrCreate(key, creator()).catch((e: unknown) => e);
      expect(err).to.be.instanceOf(CacheKeyError).and.have.property('code', 'CACHE_KEY_INVALID');
    }
    const bad = () => Promise.resolve({ value: { accessToken: 'x' }, expiresAt: Number.NaN });
    expect(await cache.getOrCreate('k', bad).catch((e: unknown) => e))
      .to.be.instanceOf(CacheEntryError)
      .and.have.property('code', 'CACHE_ENTRY_INVALID');
    await cache.close();
    expect(await cache.getOrCreate('k', creator()).catch((e: unknown) => e))
      .to.be.instanceOf(CacheClosedError)
      .and.have.property('code', 'CACHE_CLOSED');
  });

  it('reports L2 disabled, is ready at once, and says so once in the log', async () => {
    expect(cache.health()).to.deep.equal({ l2: 'disabled' });
    expect(await cache.ready()).to.equal(true);
    expect(log.lines.filter((line) => line.includes('L1 only'))).to.have.length(1);
  });

  it('registers every obo_cache_* metric on the given registry and none on the global one', async () => {
    const names = (await registry.getMetricsAsJSON()).map((m) => m.name).sort();
    expect(names).to.include.members([
      'obo_cache_hits_total',
      'obo_cache_misses_total',
      'obo_cache_joins_total',
      'obo_cache_creates_total',
      'obo_cache_create_duration_seconds',
      'obo_cache_lock_wait_timeouts_total',
      'obo_cache_l1_evictions_total',
      'obo_cache_l1_entries',
      'obo_cache_l1_bytes',
      'obo_cache_l1_max_bytes',
      'obo_cache_l2_errors_total',
      'obo_cache_l2_skipped_total',
      'obo_cache_l2_breaker_state',
      'obo_cache_l2_up',
      'obo_cache_decrypt_failures_total',
      'obo_cache_refreshes_total',
      'obo_cache_invalidations_total',
    ]);
    expect(names.every((name) => name.startsWith('obo_cache_'))).to.equal(true);
    expect((await globalRegistry.getMetricsAsJSON()).some((m) => m.name.startsWith('obo_cache_'))).to.equal(false);
    expect(await metric(registry, 'obo_cache_l2_breaker_state')).to.equal(-1);
    // A second cache on the same registry is refused rather than silently sharing counters.
    expect(() => make())
      .to.throw()
      .with.property('code', 'CACHE_CONFIG_INVALID');
  });
});
