import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { Registry } from 'prom-client';
import { CrossInstanceLocks, LOCK_NAMESPACE, lockSettings, type KeyLock } from './cross-instance-lock.js';
import { CacheDiagnostics, describe, hint } from './diagnostics.js';
import { serialise } from './entry-codec.js';
import { CacheClosedError, CacheConfigError, CacheKeyError } from './errors.js';
import { InvalidationBus } from './invalidation-bus.js';
import { estimateBytes, L1, type L1Record } from './l1.js';
import { L2Entries, l2Envelope, type Found } from './l2-entries.js';
import type { L2Store } from './l2-store.js';
import { CacheMetrics, type CreateTrigger, type RefreshResult } from './metrics.js';
import { FlightGroup, type FlightState } from './single-flight.js';
import type { CacheEntry, CacheSource, GetOrCreateOptions, InvalidationHealth, TieredCache, TieredCacheOptions } from './types.js';

const CLOSE_WAIT_MS = 2_000;

type Result<V> = { entry: CacheEntry<V>; source: CacheSource };
type Create<V> = () => Promise<CacheEntry<V>>;

/** L2 and what the cache builds on it: its entries, the cross-instance lock, the invalidation bus. */
interface Shared<V> {
  store: L2Store;
  entries: L2Entries<V>;
  locks: CrossInstanceLocks;
  bus: InvalidationBus;
}

export function createTieredCache<V>(options: TieredCacheOptions): TieredCache<V> {
  return new TwoLevelCache<V>(options);
}

/**
 * The read path: L1 → L2 → create(), one flight per key in the process and, with L2, one
 * create() across the instances. How values sit in L2 (l2-entries.ts), the lock
 * (cross-instance-lock.ts) and the invalidation messages (invalidation-bus.ts) have their own
 * modules; this file decides when each is used.
 */
class TwoLevelCache<V> implements TieredCache<V> {
  private readonly l1: L1<V>;
  private readonly l2: Shared<V> | undefined;
  private readonly log: Logger;
  private readonly now: () => number;
  private readonly metrics: CacheMetrics;
  private readonly lockWaitMs: number;
  private readonly loads = new FlightGroup<Result<V>>();
  private readonly forced = new FlightGroup<Result<V>>();
  private readonly refreshes = new FlightGroup<void>();
  /** Aborted by close(): ends lock waits and subscription retries. */
  private readonly closing = new AbortController();
  /**
   * Until L2 first connects, within l2StartupWaitMs of construction: a miss waits for it instead
   * of creating without L2 (a restarted instance is warm), and health() says `connecting`.
   * Resolves true when connected, false when the wait ran out; then it is gone for good.
   */
  private startup: Promise<boolean> | undefined;
  private readonly startupWaitMs: number;

  constructor(options: TieredCacheOptions) {
    const l1MaxBytes = options.l1MaxBytes;
    if (!Number.isFinite(l1MaxBytes) || l1MaxBytes < 0) throw new CacheConfigError('l1MaxBytes must be a number >= 0 (0 disables L1)');
    const locking = lockSettings(options);
    if (typeof options.keyPrefix !== 'string') throw new CacheConfigError('keyPrefix must be a string');
    const prefix = options.keyPrefix;
    this.lockWaitMs = locking.waitMs;
    const startupWaitMs = options.l2StartupWaitMs ?? 0;
    if (!(Number.isFinite(startupWaitMs) && startupWaitMs >= 0)) throw new CacheConfigError('l2StartupWaitMs must be a number >= 0');
    this.startupWaitMs = startupWaitMs;
    this.log = options.logger;
    this.now = options.now ?? Date.now;
    // Checked before anything registers metrics or subscribes.
    const setup = options.l2 ? { store: options.l2, envelope: l2Envelope(options.encryption, this.log) } : undefined;

    this.l1 = new L1<V>({ maxBytes: l1MaxBytes, now: this.now, onRemove: (reason) => this.metrics.l1Removed(reason) });
    this.metrics = new CacheMetrics(options.registry ?? new Registry(), {
      l1Entries: () => this.l1.entries,
      l1Bytes: () => this.l1.bytes,
      l1MaxBytes,
      l2: () => {
        if (!setup) return undefined;
        const health = setup.store.health();
        return { up: health.status === 'up', breaker: health.breaker ?? 'closed' };
      },
      invalidations: () => this.l2?.bus.status(),
    });

    if (setup) {
      const { store, envelope } = setup;
      const diagnostics = new CacheDiagnostics(this.log, this.metrics);
      const closing = this.closing.signal;
      const onRemote = (key: string) => {
        this.dropLocal(key);
        this.metrics.invalidated('remote');
      };
      this.l2 = {
        store,
        entries: new L2Entries<V>(store, { prefix, envelope, now: this.now, metrics: this.metrics, diagnostics }),
        locks: new CrossInstanceLocks(store, { prefix, settings: locking, closing, diagnostics }),
        bus: new InvalidationBus(store, {
          prefix,
          closing,
          log: this.log,
          diagnostics,
          onRemote,
          onResync: () => this.dropAllLocal(),
          ...(options.invalidationDelayMs !== undefined ? { delayMs: options.invalidationDelayMs } : {}),
        }),
      };
      this.startup = this.firstConnection(store);
    }
    // The app announces L1-only mode itself (once, with the settings to change it).
    this.log[setup ? 'info' : 'debug'](
      { l1MaxBytes, l2: setup ? 'on' : 'off', encryption: setup ? (setup.envelope.encrypted ? 'aes-256-gcm' : 'off') : 'n/a' },
      setup ? 'cache: L1 + L2' : 'cache: L1 only (no L2 configured)',
    );
  }

  getOrCreate(key: string, create: Create<V>, options?: GetOrCreateOptions): Promise<Result<V>> {
    if (this.closed) return Promise.reject(new CacheClosedError());
    const invalid = checkKey(key);
    if (invalid) return Promise.reject(invalid);
    if (options?.forceRefresh) return this.forcedLoad(key, create);

    const record = this.l1.get(key);
    // Invalidations not confirmed flowing lately (cache/README.md): re-check the L1 entry against L2.
    const trusted = !this.l2 || this.l2.bus.trusted();
    if (record && trusted) {
      this.metrics.l1Hit.inc();
      const refreshAt = record.entry.refreshAt;
      if (refreshAt !== undefined && this.now() >= refreshAt) this.maybeRefresh(key, create, record);
      return Promise.resolve({ entry: record.entry, source: 'l1' });
    }
    const inFlight = this.loads.get(key);
    if (inFlight) return this.join(inFlight);
    if (record) this.metrics.l1Rechecked.inc();
    return this.loads.start(key, (state) => this.load(key, create, state, record));
  }

  async invalidate(key: string): Promise<void> {
    const invalid = checkKey(key);
    if (invalid) throw invalid;
    this.dropLocal(key);
    this.metrics.invalidated('local');
    const l2 = this.l2;
    if (!l2 || this.closed) return;
    await l2.entries.delete(key);
    await l2.bus.publish(key);
  }

  health(): { l2: 'disabled' | 'connecting' | 'up' | 'degraded'; detail?: string } {
    const l2 = this.l2;
    if (!l2) return { l2: 'disabled' };
    if (this.closed) return { l2: 'degraded', detail: 'cache closed' };
    const health = l2.store.health();
    if (health.status !== 'up' && this.startup) {
      return { l2: 'connecting', detail: `waiting up to ${this.startupWaitMs} ms from start for the first L2 connection` };
    }
    if (health.status !== 'up') return { l2: 'degraded', detail: health.detail ?? 'L2 degraded' };
    if (!l2.bus.active) return { l2: 'degraded', detail: 'invalidation subscription not active yet' };
    if (!l2.bus.trusted()) return { l2: 'degraded', detail: `invalidations not confirmed within ${l2.bus.delayMs} ms; L1 hits re-checked against L2` };
    return { l2: 'up' };
  }

  invalidations(): InvalidationHealth | undefined {
    if (!this.l2) return undefined;
    const { flowing, lastSyncAgeMs } = this.l2.bus.status();
    return { flowing, ...(lastSyncAgeMs !== undefined ? { lastSyncAgeSeconds: Math.round(lastSyncAgeMs / 100) / 10 } : {}) };
  }

  async ready(timeoutMs = 5_000): Promise<boolean> {
    const l2 = this.l2;
    if (!l2) return true;
    const both = Promise.all([l2.store.ready(), l2.bus.started]).then(() => l2.bus.active);
    return within(both, timeoutMs, false);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closing.abort();
    const l2 = this.l2;
    const pending = [...(l2?.locks.pendingReleases() ?? []), ...this.refreshes.pending()];
    await within(Promise.allSettled(pending), CLOSE_WAIT_MS, undefined);
    if (l2) {
      await within(l2.bus.close(), CLOSE_WAIT_MS, undefined);
      await l2.store.close();
    }
    this.metrics.unregister();
  }

  private get closed(): boolean {
    return this.closing.signal.aborted;
  }

  /** See `startup`. Undefined when there is nothing to wait for (no wait configured). */
  private firstConnection(store: L2Store): Promise<boolean> | undefined {
    if (this.startupWaitMs === 0) return undefined;
    const waitMs = this.startupWaitMs;
    const timer = new AbortController();
    const gaveUp = sleep(waitMs, false, { ref: false, signal: AbortSignal.any([timer.signal, this.closing.signal]) }).catch(() => false);
    return Promise.race([store.ready().then(() => true), gaveUp]).then((connected) => {
      timer.abort();
      this.startup = undefined;
      if (!connected && !this.closed) this.log.warn({ waitMs }, 'cache: L2 not connected within the start-up wait; serving without it until it is');
      return connected;
    });
  }

  // --- the read path -------------------------------------------------------------------

  private async join(inFlight: Promise<Result<V>>): Promise<Result<V>> {
    this.metrics.joinProcess.inc();
    const { entry } = await inFlight;
    return { entry, source: 'joined' };
  }

  /** One flight per key: L2, then create() once across the instances that share it. */
  private async load(key: string, create: Create<V>, state: FlightState, unconfirmed?: L1Record<V>): Promise<Result<V>> {
    const l2 = this.l2;
    if (!l2) {
      this.metrics.miss.inc();
      return this.createAndStore(key, create, state, 'miss');
    }
    // Just started: the entry is likely in L2 already, so wait (bounded) for the connection.
    const startup = this.startup;
    if (startup) this.metrics.l2StartupWaited((await startup) ? 'connected' : 'timed_out');
    const found = await l2.entries.read(key);
    if (typeof found === 'object') {
      this.metrics.l2Hit.inc();
      this.adopt(key, found, state, create);
      return { entry: found.entry, source: 'l2' };
    }
    if (unconfirmed) {
      // L2 unreachable: no invalidation can be published either, so L1 serves as in any outage.
      if (found === 'unavailable') {
        this.metrics.l1Hit.inc();
        return { entry: unconfirmed.entry, source: 'l1' };
      }
      this.l1.delete(key); // gone from L2: invalidated (or never written there)
    }
    this.metrics.miss.inc();
    const lock = await l2.locks.take(key, found === 'unavailable');
    if (lock.status === 'held') {
      // Another instance is creating it: wait (bounded) for its result to appear in L2.
      const waited = await lock.waitForHolder(() => l2.entries.read(key, true));
      if (typeof waited === 'object') return this.joinedCluster(key, waited, state, create);
      if (waited === 'timeout') {
        this.metrics.lockWaitTimeout.inc();
        this.log.debug({ key: hint(key), waitedMs: this.lockWaitMs }, 'cache: lock wait ran out; creating without the lock');
      }
    }
    const outcome = await this.createUnderLock(l2, lock, create, state, 'miss', () => true);
    return 'created' in outcome ? outcome.created : this.joinedCluster(key, outcome.adopted, state, create);
  }

  private joinedCluster(key: string, found: Found<V>, state: FlightState, create: Create<V>): Result<V> {
    this.metrics.joinCluster.inc();
    this.adopt(key, found, state, create);
    return { entry: found.entry, source: 'joined' };
  }

  /**
   * The end of every shared create() (a miss and a refresh). Holding the key's lock, re-check L2
   * first: a holder may have written and released between our read and our lock. Create when L2
   * still has nothing `usable`. Without the lock it creates all the same: after a lock wait that
   * ran out the holder is merely slow (and L2 is still written); when L2 failed it is not written.
   */
  private async createUnderLock(
    l2: Shared<V>,
    lock: KeyLock,
    create: Create<V>,
    state: FlightState,
    trigger: 'miss' | 'refresh',
    usable: (entry: CacheEntry<V>) => boolean,
  ): Promise<{ created: Result<V> } | { adopted: Found<V> }> {
    if (lock.status === 'acquired') {
      const found = await l2.entries.read(lock.key, true);
      if (typeof found === 'object' && usable(found.entry)) {
        lock.release();
        return { adopted: found };
      }
    }
    return { created: await this.createAndStore(lock.key, create, state, trigger, { lock }) };
  }

  private async forcedLoad(key: string, create: Create<V>): Promise<Result<V>> {
    const inFlight = this.forced.get(key);
    if (inFlight) return this.join(inFlight);
    return this.forced.start(key, async (state) => {
      const result = await this.createAndStore(key, create, state, 'force', { supersede: true });
      // The other instances drop their L1 copy and read the new entry from L2.
      if (this.l2 && !state.stale) await this.l2.bus.publish(key);
      return result;
    });
  }

  /**
   * Runs create(), then fills L1 and (bounded) L2, unless the key was invalidated meanwhile;
   * releases `lock` once done. `supersede`: loads and refreshes still in flight must not
   * overwrite the result.
   */
  private async createAndStore(
    key: string,
    create: Create<V>,
    state: FlightState,
    trigger: CreateTrigger,
    how: { lock?: KeyLock; supersede?: boolean } = {},
  ): Promise<Result<V>> {
    const lock = how.lock;
    // L2 already failed this flight (reading, or taking the lock): do not pay another timeout writing.
    const writeL2 = lock?.status !== 'unavailable';
    const started = performance.now();
    let entry: CacheEntry<V>;
    let json: string;
    try {
      entry = await create();
      json = serialise(entry);
    } catch (err) {
      this.metrics.created(trigger, false, (performance.now() - started) / 1000);
      lock?.release();
      throw err;
    }
    this.metrics.created(trigger, true, (performance.now() - started) / 1000);
    if (how.supersede) {
      this.loads.markStale(key);
      this.refreshes.markStale(key);
    }
    await this.store(key, entry, json, state, writeL2);
    lock?.release();
    return { entry, source: 'created' };
  }

  private async store(key: string, entry: CacheEntry<V>, json: string, state: FlightState, writeL2: boolean): Promise<void> {
    const ttl = entry.expiresAt - this.now();
    if (state.stale || !(ttl > 0)) return;
    this.l1.set(key, entry, estimateBytes(key, json.length));
    if (!this.l2 || !writeL2 || this.closed) return;
    await this.l2.entries.write(key, json, ttl);
  }

  /** Puts an entry read from L2 into L1 and, if it is past refreshAt, starts its refresh. */
  private adopt(key: string, found: Found<V>, state: FlightState, create: Create<V>): void {
    if (!state.stale) this.l1.set(key, found.entry, found.bytes);
    const refreshAt = found.entry.refreshAt;
    if (refreshAt !== undefined && this.now() >= refreshAt) this.maybeRefresh(key, create, undefined);
  }

  // --- refresh-ahead -------------------------------------------------------------------

  private maybeRefresh(key: string, create: Create<V>, record: L1Record<V> | undefined): void {
    if (this.closed || this.refreshes.get(key)) return;
    if (record?.retryRefreshAt !== undefined && this.now() < record.retryRefreshAt) return;
    void this.refreshes.start(key, (state) => this.refresh(key, create, state, record));
  }

  /** Never rejects: a failed refresh leaves the old entry in place and retries later. */
  private async refresh(key: string, create: Create<V>, state: FlightState, record: L1Record<V> | undefined): Promise<void> {
    try {
      this.metrics.refreshed(await this.refreshShared(key, create, state));
    } catch (err) {
      this.metrics.refreshed('error');
      if (record) record.retryRefreshAt = this.now() + 1_000;
      this.log.warn({ key: hint(key), error: describe(err) }, 'cache: background refresh failed; still serving the cached entry');
    }
  }

  private async refreshShared(key: string, create: Create<V>, state: FlightState): Promise<Exclude<RefreshResult, 'error'>> {
    const l2 = this.l2;
    if (!l2) {
      await this.createAndStore(key, create, state, 'refresh');
      return 'ok';
    }
    const fresh = (entry: CacheEntry<V>) => this.isFresh(entry);
    // Another instance may already have refreshed it...
    const found = await l2.entries.read(key);
    if (typeof found === 'object' && fresh(found.entry)) {
      this.adopt(key, found, state, create);
      return 'adopted';
    }
    // ...or be refreshing it now: leave it the work.
    const lock = await l2.locks.take(key, found === 'unavailable');
    if (lock.status === 'held') return 'skipped';
    const outcome = await this.createUnderLock(l2, lock, create, state, 'refresh', fresh);
    if ('created' in outcome) return 'ok';
    this.adopt(key, outcome.adopted, state, create);
    return 'adopted';
  }

  private isFresh(entry: CacheEntry<V>): boolean {
    const now = this.now();
    return entry.expiresAt > now && (entry.refreshAt === undefined || entry.refreshAt > now);
  }

  /**
   * After invalidations may have been missed: drops all of L1, and keeps loads and refreshes in
   * flight (they may have read L2 before the gap) from caching. Forced creates read nothing.
   */
  private dropAllLocal(): void {
    this.l1.clear();
    this.loads.markAllStale();
    this.refreshes.markAllStale();
    this.metrics.resynced.inc();
  }

  /** Drops the L1 copy and keeps anything in flight for the key from caching its result. */
  private dropLocal(key: string): void {
    this.l1.delete(key);
    this.loads.markStale(key);
    this.forced.markStale(key);
    this.refreshes.markStale(key);
  }
}

function checkKey(key: string): CacheKeyError | undefined {
  if (typeof key !== 'string' || key.length === 0) return new CacheKeyError('cache key must be a non-empty string');
  if (key.startsWith(LOCK_NAMESPACE)) return new CacheKeyError(`cache keys may not start with "${LOCK_NAMESPACE}" (reserved for locks)`);
  return undefined;
}

/** `promise`, or `fallback` once `ms` have passed. */
async function within<T, F>(promise: Promise<T>, ms: number, fallback: F): Promise<T | F> {
  const timer = new AbortController();
  try {
    return await Promise.race([promise, sleep(ms, fallback, { signal: timer.signal })]);
  } finally {
    timer.abort();
  }
}
