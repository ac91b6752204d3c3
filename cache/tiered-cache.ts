import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { Registry } from 'prom-client';
import { CrossInstanceLocks, LOCK_NAMESPACE, lockSettings, type KeyLock } from './cross-instance-lock.js';
import { CacheDiagnostics, describe, hint } from './diagnostics.js';
import { serialise } from './entry-codec.js';
import { CacheClosedError, CacheConfigError, CacheKeyError } from './errors.js';
import { InvalidationBus } from './invalidation-bus.js';
import { InvalidationMarkers, MARKER_NAMESPACE } from './invalidation-markers.js';
import { estimateBytes, L1, type Created, type L1Record } from './l1.js';
import { L2Entries, l2Envelope, type Found } from './l2-entries.js';
import type { L2Store } from './l2-store.js';
import { CacheMetrics, type CreateTrigger, type RefreshResult } from './metrics.js';
import { FlightGroup, type FlightState } from './single-flight.js';
import type { CacheEntry, CacheSource, GetOrCreateOptions, InvalidationHealth, TieredCache, TieredCacheOptions } from './types.js';

const CLOSE_WAIT_MS = 2_000;
/** Entries created while L2 was unreachable, remembered for their write-back (the oldest go first beyond this). */
const MAX_WRITE_BACKS = 10_000;
/** Write-backs in flight at once. */
const WRITE_BACK_BATCH = 100;
/** How long a re-check of an entry awaiting its write-back waits for invalidations to be confirmed flowing. */
const WRITE_BACK_SYNC_WAIT_MS = 2_000;

type Result<V> = { entry: CacheEntry<V>; source: CacheSource };
type Create<V> = () => Promise<CacheEntry<V>>;

/** L2 and what the cache builds on it: its entries, the cross-instance lock, the invalidation bus and its markers. */
interface Shared<V> {
  store: L2Store;
  entries: L2Entries<V>;
  locks: CrossInstanceLocks;
  bus: InvalidationBus;
  markers: InvalidationMarkers;
}

/** A resync's check of the entries this instance created during the gap, held out of L1 until their markers answer. */
interface ResyncCheck<V> {
  /** Still candidates: an invalidation received meanwhile removes its key. */
  records: Map<string, L1Record<V>>;
  /** Those that were awaiting their write-back. */
  writeBacks: Map<string, CacheEntry<V>>;
  /** performance.now() of the resync's heartbeat echo: the kept entries are current as of then. */
  at: number;
  done: Promise<void>;
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
  /**
   * Entries created while L2 was unreachable (so only in our L1): written to L2 once
   * invalidations are confirmed flowing again without a gap. Dropped with their L1 copy.
   */
  private readonly writeBacks = new Map<string, CacheEntry<V>>();
  private writingBack = false;
  /** The last resync's marker check, while it runs (see `resync`). */
  private checking: ResyncCheck<V> | undefined;

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
      // Peer fill needs an L1 to fill.
      const peerFill = (options.peerFill ?? true) && l1MaxBytes > 0;
      this.l2 = {
        store,
        entries: new L2Entries<V>(store, { prefix, envelope, now: this.now, metrics: this.metrics, diagnostics }),
        locks: new CrossInstanceLocks(store, { prefix, settings: locking, closing, diagnostics }),
        markers: new InvalidationMarkers(store, { prefix, diagnostics }),
        bus: new InvalidationBus(store, {
          prefix,
          closing,
          log: this.log,
          diagnostics,
          onRemote,
          onResync: () => this.resync(),
          onSynced: () => void this.writeBack(),
          ...(peerFill ? { onFill: (key: string, sealed: Buffer, blocked: boolean) => this.peerFilled(key, sealed, blocked) } : {}),
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
    await this.announceInvalidation(l2, key, () => l2.entries.delete(key));
  }

  /**
   * Tells the fleet `key` was invalidated here: fills of older entries are not taken, the marker
   * (written with `alongside`, the L2 delete when there is one) before the PUBLISH, so an
   * instance that misses the message finds the marker at its resync.
   */
  private async announceInvalidation(l2: Shared<V>, key: string, alongside?: () => Promise<unknown>): Promise<void> {
    l2.bus.noteInvalidated(key);
    await Promise.all([l2.markers.write(key, this.now()), alongside?.()]);
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
    if (!l2.bus.trusted())
      return { l2: 'degraded', detail: `invalidations not confirmed within ${l2.bus.delayMs} ms; L1 hits re-checked against L2` };
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
    // Held out of L1 by a resync while its marker is read: wait for the answer (one round trip).
    const checking = this.checking;
    if (checking?.records.has(key)) {
      await checking.done;
      const kept = this.l1.peek(key);
      if (kept && !state.stale && !state.resynced) {
        this.metrics.l1Hit.inc();
        return { entry: kept.entry, source: 'l1' };
      }
    }
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
      // Created while L2 was unreachable, so never in L2: its absence there says nothing. Once
      // deliveries are confirmed (every invalidation executed before then has arrived and would
      // have dropped it), it is served, and its write-back runs.
      if (
        this.writeBacks.get(key) === unconfirmed.entry &&
        (await l2.bus.nextSync(WRITE_BACK_SYNC_WAIT_MS)) &&
        this.l1.peek(key)?.entry === unconfirmed.entry
      ) {
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
      // The other instances drop their L1 copy and read the new entry from L2 (fills of older ones are not taken).
      if (this.l2 && !state.stale) await this.announceInvalidation(this.l2, key);
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
    const created: Created = { wallMs: this.now(), monoMs: started };
    let entry: CacheEntry<V>;
    let json: string;
    let createdAt: number;
    try {
      entry = await create();
      createdAt = performance.now();
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
    await this.store(key, entry, json, state, { writeL2, createdAt, created, fill: !how.supersede });
    lock?.release();
    return { entry, source: 'created' };
  }

  /**
   * L1, then (bounded) L2 and a peer fill. When L2 cannot take it, the entry waits for its
   * write-back. `fill`: forced entries are not sent (their invalidation follows; peers read L2).
   */
  private async store(
    key: string,
    entry: CacheEntry<V>,
    json: string,
    state: FlightState,
    how: { writeL2: boolean; createdAt: number; created: Created; fill: boolean },
  ): Promise<void> {
    if (state.stale || !(entry.expiresAt > this.now())) return;
    const l2 = this.l2;
    // Created across a resync: an invalidation it missed may have come after the create() started.
    if (state.resynced && !(l2 && (await this.notInvalidatedSince(l2, key, how.created)) && !state.stale)) return;
    const ttl = entry.expiresAt - this.now();
    if (!(ttl > 0)) return;
    this.l1.set(key, entry, estimateBytes(key, json.length), how.created);
    if (!l2 || this.closed) return;
    const sealed = l2.entries.seal(key, json);
    if (!how.writeL2 || !(await l2.entries.write(key, sealed, ttl))) {
      this.holdForWriteBack(key, entry);
      return;
    }
    // A fill sent late could arrive after an invalidation that superseded it (cache/README.md, "Peer fill").
    if (how.fill && l2.bus.fills && !state.stale && !this.closed && performance.now() - how.createdAt <= l2.bus.fillMaxAgeMs)
      void l2.bus.publishFill(key, sealed);
  }

  // --- peer fill and write-back ----------------------------------------------------------

  /** Another instance created `key`'s entry: into L1, unless ours is as new or it does not fit without evicting. */
  private peerFilled(key: string, sealed: Buffer, blocked: boolean): void {
    const l2 = this.l2;
    if (!l2 || this.closed) return;
    if (blocked) return this.metrics.peerFilled('blocked');
    const found = checkKey(key) ? 'miss' : l2.entries.open(key, sealed);
    if (found === 'miss') return this.metrics.peerFilled('unusable');
    const current = this.l1.peek(key);
    if (current && current.entry.expiresAt >= found.entry.expiresAt) return this.metrics.peerFilled('kept_newer');
    if (!this.l1.hasRoomFor(key, found.bytes)) return this.metrics.peerFilled('no_room');
    this.l1.set(key, found.entry, found.bytes);
    this.metrics.peerFilled('applied');
  }

  private holdForWriteBack(key: string, entry: CacheEntry<V>): void {
    if (this.closed || this.l1.peek(key)?.entry !== entry) return;
    this.writeBacks.delete(key); // re-inserted last: the oldest is first in line to go
    this.writeBacks.set(key, entry);
    if (this.writeBacks.size > MAX_WRITE_BACKS) {
      const oldest = this.writeBacks.keys().next().value;
      if (oldest !== undefined) this.writeBacks.delete(oldest);
    }
  }

  /**
   * After a heartbeat echo (invalidations flowing, no gap left): the entries created while L2 was
   * unreachable go to L2, so the other instances find them there. One the L1 no longer holds as
   * it was is not written; one dropped (invalidated) while its write was in flight is deleted again.
   */
  private async writeBack(currentAt?: number): Promise<void> {
    const l2 = this.l2;
    if (!l2 || this.writingBack || this.writeBacks.size === 0 || this.closed) return;
    this.writingBack = true;
    try {
      // Every invalidation Redis executed before the echo that started this has been seen (or, for
      // entries kept at a resync, `currentAt`, its marker was): the entries are current as of then,
      // so they are sent to the peers too, within the fills' age bound.
      const since = currentAt ?? performance.now();
      const pending = [...this.writeBacks];
      for (let i = 0; i < pending.length && l2.bus.trusted() && !this.closed; i += WRITE_BACK_BATCH) {
        await Promise.all(pending.slice(i, i + WRITE_BACK_BATCH).map(([key, entry]) => this.writeBackOne(l2, key, entry, since)));
      }
    } finally {
      this.writingBack = false;
    }
  }

  private async writeBackOne(l2: Shared<V>, key: string, entry: CacheEntry<V>, since: number): Promise<void> {
    if (this.writeBacks.get(key) !== entry) return;
    const ttl = entry.expiresAt - this.now();
    if (this.l1.peek(key)?.entry !== entry || !(ttl > 0)) {
      this.writeBacks.delete(key);
      return this.metrics.wroteBack('superseded');
    }
    const sealed = l2.entries.seal(key, serialise(entry));
    if (!(await l2.entries.write(key, sealed, ttl))) return this.metrics.wroteBack('error');
    this.metrics.wroteBack('ok');
    if (this.writeBacks.get(key) === entry) {
      this.writeBacks.delete(key);
      if (l2.bus.fills && !this.closed && performance.now() - since <= l2.bus.fillMaxAgeMs) void l2.bus.publishFill(key, sealed);
    } else if (this.l1.peek(key)?.entry !== entry) await l2.entries.delete(key); // dropped meanwhile: do not leave it in L2
  }

  /** Puts an entry read from L2 into L1 and, if it is past refreshAt, starts its refresh. */
  private adopt(key: string, found: Found<V>, state: FlightState, create: Create<V>): void {
    if (!state.stale && !state.resynced) this.l1.set(key, found.entry, found.bytes);
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
   * After invalidations may have been missed: drops L1, and keeps loads and refreshes in flight
   * from caching what they read from L2 (maybe before the gap); what their own create() makes is
   * checked against its marker when it finishes (`store`). Forced creates read nothing. The entries
   * this instance created itself since its last confirmed delivery are held out of L1 and put back
   * (with their write-backs) if their keys' invalidation markers show no invalidation since their
   * creation (cache/README.md, "Entries created during a gap"). L2 read or peer-filled ones are not:
   * they may have been invalidated after they were read.
   */
  private resync(): void {
    const l2 = this.l2;
    const now = performance.now();
    const since = l2?.bus.lastSyncMonoMs ?? Number.NEGATIVE_INFINITY;
    const candidates = l2
      ? this.l1.createdSince(since).filter(([, record]) => record.created && InvalidationMarkers.checkable(now - record.created.monoMs))
      : [];
    const writeBacks = new Map<string, CacheEntry<V>>();
    for (const [key, record] of candidates) if (this.writeBacks.get(key) === record.entry) writeBacks.set(key, record.entry);
    this.l1.clear();
    this.writeBacks.clear();
    this.loads.markAllResynced();
    this.refreshes.markAllResynced();
    this.metrics.resynced.inc();
    this.checking = undefined;
    if (!l2 || candidates.length === 0 || this.closed) return;
    const check: ResyncCheck<V> = { records: new Map(candidates), writeBacks, at: now, done: Promise.resolve() };
    this.checking = check;
    check.done = this.keepNotInvalidated(l2, check);
  }

  /** Whether `key`'s marker shows no invalidation since `created` (see `resync`); false when it cannot tell. */
  private async notInvalidatedSince(l2: Shared<V>, key: string, created: Created): Promise<boolean> {
    if (!InvalidationMarkers.checkable(performance.now() - created.monoMs)) return false;
    return (await l2.markers.notInvalidated([{ key, createdWallMs: created.wallMs }])).has(key);
  }

  private async keepNotInvalidated(l2: Shared<V>, check: ResyncCheck<V>): Promise<void> {
    const asked = [...check.records].flatMap(([key, record]) => (record.created ? [{ key, createdWallMs: record.created.wallMs }] : []));
    const kept = await l2.markers.notInvalidated(asked);
    // A later resync replaced this check (and dropped its candidates).
    if (this.checking !== check) return;
    this.checking = undefined;
    if (this.closed) return;
    let keptCount = 0;
    for (const [key, record] of check.records) {
      // Not if invalidated meanwhile (gone from `records`), or if L1 holds something newer by now.
      if (!kept.has(key) || this.l1.peek(key)) continue;
      this.l1.set(key, record.entry, record.bytes, record.created);
      keptCount += 1;
      if (check.writeBacks.get(key) === record.entry) this.holdForWriteBack(key, record.entry);
    }
    this.metrics.resyncChecked.inc({ result: 'kept' }, keptCount);
    this.metrics.resyncChecked.inc({ result: 'dropped' }, asked.length - keptCount);
    if (keptCount > 0) {
      const counts = { kept: keptCount, dropped: asked.length - keptCount };
      this.log.info(counts, 'cache: kept the entries created here during the gap that no invalidation marker refers to');
    }
    void this.writeBack(check.at);
  }

  /** Drops the L1 copy and keeps anything in flight for the key from caching its result. */
  private dropLocal(key: string): void {
    this.l1.delete(key);
    this.writeBacks.delete(key);
    this.checking?.records.delete(key);
    this.loads.markStale(key);
    this.forced.markStale(key);
    this.refreshes.markStale(key);
  }
}

function checkKey(key: string): CacheKeyError | undefined {
  if (typeof key !== 'string' || key.length === 0) return new CacheKeyError('cache key must be a non-empty string');
  if (key.startsWith(LOCK_NAMESPACE)) return new CacheKeyError(`cache keys may not start with "${LOCK_NAMESPACE}" (reserved for locks)`);
  if (key.startsWith(MARKER_NAMESPACE))
    return new CacheKeyError(`cache keys may not start with "${MARKER_NAMESPACE}" (reserved for invalidation markers)`);
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
