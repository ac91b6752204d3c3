import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { CacheDiagnostics } from './diagnostics.js';
import { CacheConfigError } from './errors.js';
import type { L2Store } from './l2-store.js';

/** Cache keys may not start with this: `${prefix}lock:${key}` is the lock of `key`. */
export const LOCK_NAMESPACE = 'lock:';

const DEFAULT_TTL_MS = 10_000;
const DEFAULT_WAIT_MS = 3_000;

/** `acquired` by us, `held` by another owner, or `unavailable` (L2 failed; not taken). */
export type LockStatus = 'acquired' | 'held' | 'unavailable';

export interface LockSettings {
  ttlMs: number;
  waitMs: number;
}

/** Validates `lockTtlMs` / `lockWaitMs` of the cache options and applies the defaults. */
export function lockSettings(options: { lockTtlMs?: number | undefined; lockWaitMs?: number | undefined }): LockSettings {
  const ttlMs = options.lockTtlMs ?? DEFAULT_TTL_MS;
  const waitMs = options.lockWaitMs ?? DEFAULT_WAIT_MS;
  if (!(ttlMs > 0)) throw new CacheConfigError('lockTtlMs must be > 0');
  if (!(waitMs >= 0)) throw new CacheConfigError('lockWaitMs must be >= 0');
  return { ttlMs, waitMs };
}

interface LockContext {
  l2: L2Store;
  prefix: string;
  settings: LockSettings;
  closing: AbortSignal;
  diagnostics: CacheDiagnostics;
  /** Releases still under way (they run in the background); close() waits for them. */
  releases: Set<Promise<void>>;
}

/**
 * The cross-instance create() lock: `SET <prefix>lock:<key> <owner> NX PX ttl`, released by
 * compare-and-delete. It saves work (one create() across the instances instead of one each);
 * nothing depends on it for correctness: a lock that is lost, expires or cannot be taken costs
 * a duplicate create(), nothing more. Nothing here throws; L2 failures go to the diagnostics.
 */
export class CrossInstanceLocks {
  private readonly context: LockContext;

  constructor(l2: L2Store, options: { prefix: string; settings: LockSettings; closing: AbortSignal; diagnostics: CacheDiagnostics }) {
    this.context = { l2, ...options, releases: new Set() };
  }

  /**
   * Tries to take the key's lock for a new owner. `l2Down`: L2 just failed the caller, so the
   * lock is not even tried (status `unavailable`) rather than pay another timeout.
   */
  async take(key: string, l2Down: boolean): Promise<KeyLock> {
    const lock = new KeyLock(this.context, key);
    if (!l2Down) await lock.tryTake();
    return lock;
  }

  /** For a bounded wait at close. */
  pendingReleases(): Promise<void>[] {
    return [...this.context.releases];
  }
}

/** One owner's attempt at one key's lock. */
export class KeyLock {
  readonly key: string;
  private readonly context: LockContext;
  private readonly owner = randomUUID();
  private current: LockStatus = 'unavailable';
  private released = false;

  constructor(context: LockContext, key: string) {
    this.context = context;
    this.key = key;
  }

  get status(): LockStatus {
    return this.current;
  }

  /** SET NX PX: takes the lock unless another owner holds it. */
  async tryTake(): Promise<LockStatus> {
    const { l2, settings, diagnostics } = this.context;
    try {
      this.current = (await l2.tryLock(this.name(), this.owner, settings.ttlMs)) ? 'acquired' : 'held';
    } catch (err) {
      diagnostics.l2Failed('lock', err);
      this.current = 'unavailable';
    }
    return this.current;
  }

  /**
   * While another owner holds the lock: polls `poll` (10 ms growing to 100 ms) for the holder's
   * result, for up to the lock wait, and takes the lock itself if the holder let go without
   * one. Resolves to the result, or `timeout` (the status stays `held`: the holder is merely
   * slow), or the new status: `acquired`, or `unavailable` when L2 failed meanwhile.
   */
  async waitForHolder<T extends object>(poll: () => Promise<T | 'miss' | 'unavailable'>): Promise<T | 'timeout' | 'acquired' | 'unavailable'> {
    const deadline = performance.now() + this.context.settings.waitMs;
    let delay = 10;
    for (;;) {
      const remaining = deadline - performance.now();
      if (remaining <= 0 || this.context.closing.aborted) return 'timeout';
      await sleep(Math.min(delay, remaining));
      delay = Math.min(delay * 1.5, 100);
      const found = await poll();
      if (typeof found === 'object') return found;
      if (found === 'unavailable') {
        this.current = 'unavailable';
        return 'unavailable';
      }
      const status = await this.tryTake();
      if (status !== 'held') return status;
    }
  }

  /** Releases the lock, in the background, if we took it; a no-op otherwise. */
  release(): void {
    if (this.current !== 'acquired' || this.released) return;
    this.released = true;
    const { l2, diagnostics, releases } = this.context;
    const done = diagnostics.l2Call('unlock', () => l2.unlock(this.name(), this.owner));
    releases.add(done);
    void done.then(() => releases.delete(done));
  }

  private name(): string {
    return `${this.context.prefix}${LOCK_NAMESPACE}${this.key}`;
  }
}
