import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { Registry } from 'prom-client';
import { createEnvelope, type Envelope } from './envelope.js';
import { CacheClosedError, CacheConfigError, CacheKeyError, EnvelopeError, type L2Op } from './errors.js';
import { deserialise, isRecord, serialise } from './entry-codec.js';
import { estimateBytes, L1 } from './l1.js';
import type { L2Store } from './l2-store.js';
import { CacheMetrics, type CreateTrigger } from './metrics.js';
import { FlightGroup, type FlightState } from './single-flight.js';
import type { CacheEntry, CacheSource, GetOrCreateOptions, TieredCache, TieredCacheOptions } from './types.js';

export const CACHE_DEFAULTS = {
  l1MaxBytes: 64 * 1024 * 1024,
  keyPrefix: 'obo:',
  lockTtlMs: 10_000,
  lockWaitMs: 3_000,
} as const;

/** Cache keys may not start with this: `${prefix}lock:${key}` is the lock of `key`. */
const LOCK_NAMESPACE = 'lock:';
const CLOSE_WAIT_MS = 2_000;

type Result<V> = { entry: CacheEntry<V>; source: CacheSource };
type Found<V> = { entry: CacheEntry<V>; bytes: number };
type L2Read<V> = Found<V> | 'miss' | 'unavailable';
type LockResult = 'acquired' | 'held' | 'unavailable';

export function createTieredCache<V>(options: TieredCacheOptions): TieredCache<V> {
  return new TwoLevelCache<V>(options);
}

class TwoLevelCache<V> implements TieredCache<V> {
  private readonly l1: L1<V>;
  private readonly l2: L2Store | undefined;
  private readonly envelope: Envelope | undefined;
  private readonly prefix: string;
  private readonly channel: string;
  private readonly lockTtlMs: number;
  private readonly lockWaitMs: number;
  private readonly log: Logger;
  private readonly now: () => number;
  private readonly metrics: CacheMetrics;
  /** Tags our own invalidation messages so we can ignore their echo. */
  private readonly instanceId = randomUUID();
  private readonly loads = new FlightGroup<Result<V>>();
  private readonly forced = new FlightGroup<Result<V>>();
  private readonly refreshes = new FlightGroup<void>();
  /** Fire-and-forget work (lock releases) that close() waits for. */
  private readonly background = new Set<Promise<unknown>>();
  private readonly subscription: Promise<void>;
  private unsubscribe: (() => Promise<void>) | undefined;
  private subscribed = false;
  private closed = false;
  private readonly lastWarned = new Map<string, number>();

  constructor(options: TieredCacheOptions) {
    const l1MaxBytes = options.l1MaxBytes;
    if (!Number.isFinite(l1MaxBytes) || l1MaxBytes < 0) throw new CacheConfigError('l1MaxBytes must be a number >= 0 (0 disables L1)');
    this.lockTtlMs = options.lockTtlMs ?? CACHE_DEFAULTS.lockTtlMs;
    this.lockWaitMs = options.lockWaitMs ?? CACHE_DEFAULTS.lockWaitMs;
    if (!(this.lockTtlMs > 0)) throw new CacheConfigError('lockTtlMs must be > 0');
    if (!(this.lockWaitMs >= 0)) throw new CacheConfigError('lockWaitMs must be >= 0');
    if (typeof options.keyPrefix !== 'string') throw new CacheConfigError('keyPrefix must be a string');
    this.prefix = options.keyPrefix;
    this.channel = `${this.prefix}invalidate`;
    this.log = options.logger;
    this.now = options.now ?? Date.now;
    this.l2 = options.l2;

    if (this.l2) {
      const encryption = options.encryption;
      if (encryption === undefined || (encryption !== 'off' && encryption.length === 0)) {
        throw new CacheConfigError(
          'L2 (Redis) is configured but no encryption key is: set CACHE_ENCRYPTION_KEYS="kid:base64key" (32-byte keys), or CACHE_ENCRYPTION=off explicitly',
        );
      }
      this.envelope = createEnvelope(encryption);
      if (encryption === 'off') this.log.warn('cache: L2 values are stored UNENCRYPTED (encryption explicitly off)');
    }

    const l1Removed = (reason: 'capacity' | 'expired') => this.metrics.l1Removed(reason);
    this.l1 = new L1<V>({ maxBytes: l1MaxBytes, now: this.now, onRemove: l1Removed });
    this.metrics = new CacheMetrics(options.registry ?? new Registry(), {
      l1Entries: () => this.l1.entries,
      l1Bytes: () => this.l1.bytes,
      l1MaxBytes,
      l2: () => {
        if (!this.l2) return undefined;
        const health = this.l2.health();
        return { up: health.status === 'up', breaker: health.breaker ?? 'closed' };
      },
    });

    this.subscription = this.l2 ? this.subscribe(this.l2) : Promise.resolve();
    // The app announces L1-only mode itself (once, with the settings to change it).
    this.log[this.l2 ? 'info' : 'debug'](
      { l1MaxBytes, l2: this.l2 ? 'on' : 'off', encryption: this.envelope ? (this.envelope.encrypted ? 'aes-256-gcm' : 'off') : 'n/a' },
      this.l2 ? 'cache: L1 + L2' : 'cache: L1 only (no L2 configured)',
    );
  }

  getOrCreate(key: string, create: () => Promise<CacheEntry<V>>, options?: GetOrCreateOptions): Promise<Result<V>> {
    if (this.closed) return Promise.reject(new CacheClosedError());
    const invalid = checkKey(key);
    if (invalid) return Promise.reject(invalid);
    if (options?.forceRefresh) return this.forcedLoad(key, create);

    const record = this.l1.get(key);
    if (record) {
      this.metrics.l1Hit.inc();
      const refreshAt = record.entry.refreshAt;
      if (refreshAt !== undefined && this.now() >= refreshAt) this.maybeRefresh(key, create, record);
      return Promise.resolve({ entry: record.entry, source: 'l1' });
    }
    const inFlight = this.loads.get(key);
    if (inFlight) return this.join(inFlight);
    return this.loads.start(key, (state) => this.load(key, create, state));
  }

  async invalidate(key: string): Promise<void> {
    const invalid = checkKey(key);
    if (invalid) throw invalid;
    this.dropLocal(key);
    this.metrics.invalidated('local');
    const l2 = this.l2;
    if (!l2 || this.closed) return;
    await this.l2Call('del', () => l2.del(this.prefix + key));
    await this.publishInvalidation(l2, key);
  }

  health(): { l2: 'disabled' | 'up' | 'degraded'; detail?: string } {
    if (!this.l2) return { l2: 'disabled' };
    if (this.closed) return { l2: 'degraded', detail: 'cache closed' };
    const health = this.l2.health();
    if (health.status !== 'up') return { l2: 'degraded', detail: health.detail ?? 'L2 degraded' };
    if (!this.subscribed) return { l2: 'degraded', detail: 'invalidation subscription not active yet' };
    return { l2: 'up' };
  }

  async ready(timeoutMs = 5_000): Promise<boolean> {
    const l2 = this.l2;
    if (!l2) return true;
    const both = Promise.all([l2.ready(), this.subscription]).then(() => this.subscribed);
    return race(both, timeoutMs, false);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const pending = [...this.background, ...this.refreshes.pending()];
    await race(Promise.allSettled(pending), CLOSE_WAIT_MS, undefined);
    if (this.unsubscribe) await race(this.unsubscribe().catch(() => undefined), CLOSE_WAIT_MS, undefined);
    await this.l2?.close();
    this.metrics.unregister();
  }

  // --- the read path -------------------------------------------------------------------

  private async join(inFlight: Promise<Result<V>>): Promise<Result<V>> {
    this.metrics.joinProcess.inc();
    const { entry } = await inFlight;
    return { entry, source: 'joined' };
  }

  /** One flight per key: L2, then (cross-process single-flight) create(). */
  private async load(key: string, create: () => Promise<CacheEntry<V>>, state: FlightState): Promise<Result<V>> {
    const l2 = this.l2;
    if (l2) {
      const found = await this.readL2(l2, key);
      if (typeof found === 'object') {
        this.metrics.l2Hit.inc();
        this.adopt(key, found, state, create);
        return { entry: found.entry, source: 'l2' };
      }
      this.metrics.miss.inc();
      return this.createShared(l2, key, create, state, 'miss', found === 'unavailable');
    }
    this.metrics.miss.inc();
    return this.createAndStore(key, create, state, 'miss');
  }

  /**
   * create() once across the instances that share L2: take the key's lock, or wait (bounded)
   * for the holder's result to appear in L2. A waiter whose wait runs out creates on its own.
   */
  private async createShared(
    l2: L2Store,
    key: string,
    create: () => Promise<CacheEntry<V>>,
    state: FlightState,
    trigger: CreateTrigger,
    l2Down: boolean,
  ): Promise<Result<V>> {
    // L2 just failed us: skip the lock and the write rather than pay another timeout.
    if (l2Down) return this.createAndStore(key, create, state, trigger, { writeL2: false });
    const owner = randomUUID();
    let lock = await this.tryLock(l2, key, owner);
    if (lock === 'held') {
      const waited = await this.waitForHolder(l2, key, owner);
      if (typeof waited === 'object') {
        this.metrics.joinCluster.inc();
        this.adopt(key, waited, state, create);
        return { entry: waited.entry, source: 'joined' };
      }
      if (waited === 'timeout') {
        this.metrics.lockWaitTimeout.inc();
        this.log.debug({ key: hint(key), waitedMs: this.lockWaitMs }, 'cache: lock wait ran out; creating without the lock');
      }
      // After a timeout the holder is merely slow: create without the lock but still write L2.
      lock = waited === 'timeout' ? 'held' : waited;
    }
    if (lock === 'acquired') {
      // Double-check: a holder may have written and released between our read and our lock.
      const found = await this.readL2(l2, key, true);
      if (typeof found === 'object') {
        this.releaseLock(l2, key, owner);
        this.metrics.joinCluster.inc();
        this.adopt(key, found, state, create);
        return { entry: found.entry, source: 'joined' };
      }
    }
    return this.createAndStore(key, create, state, trigger, {
      lock: lock === 'acquired' ? { l2, owner } : undefined,
      writeL2: lock !== 'unavailable',
    });
  }

  /** Polls L2 for the holder's result; takes the lock itself if the holder let go without one. */
  private async waitForHolder(l2: L2Store, key: string, owner: string): Promise<Found<V> | 'acquired' | 'timeout' | 'unavailable'> {
    const deadline = performance.now() + this.lockWaitMs;
    let delay = 10;
    for (;;) {
      const remaining = deadline - performance.now();
      if (remaining <= 0 || this.closed) return 'timeout';
      await sleep(Math.min(delay, remaining));
      delay = Math.min(delay * 1.5, 100);
      const found = await this.readL2(l2, key, true);
      if (typeof found === 'object') return found;
      if (found === 'unavailable') return 'unavailable';
      const lock = await this.tryLock(l2, key, owner);
      if (lock !== 'held') return lock;
    }
  }

  private async forcedLoad(key: string, create: () => Promise<CacheEntry<V>>): Promise<Result<V>> {
    const inFlight = this.forced.get(key);
    if (inFlight) return this.join(inFlight);
    return this.forced.start(key, async (state) => {
      const result = await this.createAndStore(key, create, state, 'force', { supersede: true });
      // The other instances drop their L1 copy and read the new entry from L2.
      if (this.l2 && !state.stale) await this.publishInvalidation(this.l2, key);
      return result;
    });
  }

  /** Runs create(), then fills L1 and (bounded) L2, unless the key was invalidated meanwhile. */
  private async createAndStore(
    key: string,
    create: () => Promise<CacheEntry<V>>,
    state: FlightState,
    trigger: CreateTrigger,
    how: { lock?: { l2: L2Store; owner: string } | undefined; supersede?: boolean; writeL2?: boolean } = {},
  ): Promise<Result<V>> {
    const lock = how.lock;
    const started = performance.now();
    let entry: CacheEntry<V>;
    let json: string;
    try {
      entry = await create();
      json = serialise(entry);
    } catch (err) {
      this.metrics.created(trigger, false, (performance.now() - started) / 1000);
      if (lock) this.releaseLock(lock.l2, key, lock.owner);
      throw err;
    }
    this.metrics.created(trigger, true, (performance.now() - started) / 1000);
    if (how.supersede) {
      // Older loads or refreshes still in flight must not overwrite this entry.
      this.loads.markStale(key);
      this.refreshes.markStale(key);
    }
    await this.store(key, entry, json, state, how.writeL2 ?? true);
    if (lock) this.releaseLock(lock.l2, key, lock.owner);
    return { entry, source: 'created' };
  }

  private async store(key: string, entry: CacheEntry<V>, json: string, state: FlightState, writeL2: boolean): Promise<void> {
    const ttl = entry.expiresAt - this.now();
    if (state.stale || !(ttl > 0)) return;
    this.l1.set(key, entry, estimateBytes(key, json.length));
    const l2 = this.l2;
    const envelope = this.envelope;
    if (!l2 || !envelope || !writeL2 || this.closed) return;
    const fullKey = this.prefix + key;
    const sealed = envelope.seal(json, fullKey);
    await this.l2Call('set', () => l2.set(fullKey, sealed, ttl));
  }

  /** Puts an entry read from L2 into L1 and, if it is past refreshAt, starts its refresh. */
  private adopt(key: string, found: Found<V>, state: FlightState, create: () => Promise<CacheEntry<V>>): void {
    if (!state.stale) this.l1.set(key, found.entry, found.bytes);
    const refreshAt = found.entry.refreshAt;
    if (refreshAt !== undefined && this.now() >= refreshAt) this.maybeRefresh(key, create, undefined);
  }

  // --- refresh-ahead -------------------------------------------------------------------

  private maybeRefresh(key: string, create: () => Promise<CacheEntry<V>>, record: { retryRefreshAt?: number } | undefined): void {
    if (this.closed || this.refreshes.get(key)) return;
    if (record?.retryRefreshAt !== undefined && this.now() < record.retryRefreshAt) return;
    this.refreshes.start(key, (state) => this.refresh(key, create, state, record));
  }

  /** Never rejects: a failed refresh leaves the old entry in place and retries later. */
  private async refresh(
    key: string,
    create: () => Promise<CacheEntry<V>>,
    state: FlightState,
    record: { retryRefreshAt?: number } | undefined,
  ): Promise<void> {
    try {
      const l2 = this.l2;
      if (!l2) {
        await this.createAndStore(key, create, state, 'refresh');
        this.metrics.refreshed('ok');
        return;
      }
      // Another instance may already have refreshed it.
      const found = await this.readL2(l2, key);
      if (typeof found === 'object' && this.isFresh(found.entry)) {
        if (!state.stale) this.l1.set(key, found.entry, found.bytes);
        this.metrics.refreshed('adopted');
        return;
      }
      const owner = randomUUID();
      const lock = found === 'unavailable' ? 'unavailable' : await this.tryLock(l2, key, owner);
      if (lock === 'held') {
        this.metrics.refreshed('skipped');
        return;
      }
      if (lock === 'acquired') {
        const again = await this.readL2(l2, key, true);
        if (typeof again === 'object' && this.isFresh(again.entry)) {
          this.releaseLock(l2, key, owner);
          if (!state.stale) this.l1.set(key, again.entry, again.bytes);
          this.metrics.refreshed('adopted');
          return;
        }
      }
      await this.createAndStore(key, create, state, 'refresh', {
        lock: lock === 'acquired' ? { l2, owner } : undefined,
        writeL2: lock !== 'unavailable',
      });
      this.metrics.refreshed('ok');
    } catch (err) {
      this.metrics.refreshed('error');
      if (record) record.retryRefreshAt = this.now() + 1_000;
      this.log.warn({ key: hint(key), error: describe(err) }, 'cache: background refresh failed; still serving the cached entry');
    }
  }

  private isFresh(entry: CacheEntry<V>): boolean {
    const now = this.now();
    return entry.expiresAt > now && (entry.refreshAt === undefined || entry.refreshAt > now);
  }

  // --- L2 helpers (none of them throws) --------------------------------------------------

  /** `recheck`: a second read in the same flight; a bad value was already counted and logged. */
  private async readL2(l2: L2Store, key: string, recheck = false): Promise<L2Read<V>> {
    const fullKey = this.prefix + key;
    let raw: Buffer | null;
    try {
      raw = await l2.get(fullKey);
    } catch (err) {
      this.l2Failed('get', err);
      return 'unavailable';
    }
    if (raw === null || !this.envelope) return 'miss';
    let text: string;
    let entry: CacheEntry<V> | undefined;
    try {
      text = this.envelope.open(raw, fullKey);
      entry = deserialise<V>(text);
    } catch (err) {
      if (recheck) return 'miss';
      const reason = err instanceof EnvelopeError ? err.reason : 'malformed';
      this.metrics.decryptFailed(reason);
      this.warnRateLimited(`decrypt:${reason}`, { key: hint(key), reason }, 'cache: L2 value did not open; treated as a miss');
      return 'miss';
    }
    if (entry.expiresAt <= this.now()) return 'miss';
    return { entry, bytes: estimateBytes(key, text.length) };
  }

  private async tryLock(l2: L2Store, key: string, owner: string): Promise<LockResult> {
    try {
      return (await l2.tryLock(`${this.prefix}${LOCK_NAMESPACE}${key}`, owner, this.lockTtlMs)) ? 'acquired' : 'held';
    } catch (err) {
      this.l2Failed('lock', err);
      return 'unavailable';
    }
  }

  private releaseLock(l2: L2Store, key: string, owner: string): void {
    const done = this.l2Call('unlock', () => l2.unlock(`${this.prefix}${LOCK_NAMESPACE}${key}`, owner));
    this.background.add(done);
    void done.then(() => this.background.delete(done));
  }

  private async publishInvalidation(l2: L2Store, key: string): Promise<void> {
    await this.l2Call('publish', () => l2.publish(this.channel, JSON.stringify({ o: this.instanceId, k: key })));
  }

  private async l2Call(op: L2Op, fn: () => Promise<void>): Promise<void> {
    try {
      await fn();
    } catch (err) {
      this.l2Failed(op, err);
    }
  }

  private l2Failed(op: L2Op, err: unknown): void {
    this.metrics.l2Failed(op, err);
    this.warnRateLimited(`l2:${op}`, { op, error: describe(err) }, 'cache: L2 operation failed; continuing without it');
  }

  // --- invalidation over pub/sub ---------------------------------------------------------

  /** Subscribes to invalidations, retrying with a bounded backoff until it works or the cache closes. */
  private async subscribe(l2: L2Store): Promise<void> {
    for (let attempt = 0; !this.closed; attempt++) {
      try {
        const unsubscribe = await l2.subscribe(this.channel, (message) => this.onInvalidation(message));
        this.unsubscribe = unsubscribe;
        this.subscribed = true;
        if (this.closed) await unsubscribe().catch(() => undefined);
        return;
      } catch (err) {
        if (attempt === 0) this.log.warn({ error: describe(err) }, 'cache: could not subscribe to invalidations yet; retrying');
        await sleep(Math.min(250 * 2 ** attempt, 5_000), true);
      }
    }
  }

  private onInvalidation(message: string): void {
    let parsed: unknown;
    try {
      parsed = JSON.parse(message);
    } catch {
      parsed = undefined;
    }
    if (!isRecord(parsed) || typeof parsed.o !== 'string' || typeof parsed.k !== 'string') {
      this.warnRateLimited('invalidation:malformed', {}, 'cache: ignored a malformed invalidation message');
      return;
    }
    if (parsed.o === this.instanceId) return;
    this.dropLocal(parsed.k);
    this.metrics.invalidated('remote');
  }

  /** Drops the L1 copy and keeps anything in flight for the key from caching its result. */
  private dropLocal(key: string): void {
    this.l1.delete(key);
    this.loads.markStale(key);
    this.forced.markStale(key);
    this.refreshes.markStale(key);
  }

  private warnRateLimited(category: string, fields: Record<string, unknown>, message: string): void {
    const now = Date.now();
    const last = this.lastWarned.get(category);
    if (last !== undefined && now - last < 10_000) return;
    this.lastWarned.set(category, now);
    this.log.warn(fields, message);
  }
}

function checkKey(key: string): CacheKeyError | undefined {
  if (typeof key !== 'string' || key.length === 0) return new CacheKeyError('cache key must be a non-empty string');
  if (key.startsWith(LOCK_NAMESPACE)) return new CacheKeyError(`cache keys may not start with "${LOCK_NAMESPACE}" (reserved for locks)`);
  return undefined;
}

/** Logs identify a key by its first characters only. */
function hint(key: string): string {
  return key.length > 8 ? `${key.slice(0, 8)}…` : key;
}

function describe(err: unknown): string {
  if (err instanceof Error) return 'code' in err && typeof err.code === 'string' ? `${err.code}: ${err.message}` : err.message;
  return String(err);
}

function sleep(ms: number, unref = false): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    if (unref) timer.unref();
  });
}

function race<T, F>(promise: Promise<T>, ms: number, fallback: F): Promise<T | F> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<F>((resolve) => {
    timer = setTimeout(() => resolve(fallback), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
