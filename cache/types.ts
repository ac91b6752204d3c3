import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { EncryptionKey } from './envelope.js';
import type { L2Store } from './l2-store.js';

/** What the cache stores. Times are epoch milliseconds; `value` must be JSON-serialisable. */
export interface CacheEntry<V> {
  value: V;
  expiresAt: number;
  /** Past this (and before expiresAt) the entry is still served while one background create() replaces it. */
  refreshAt?: number;
}

/** Where getOrCreate's answer came from. `joined` = another caller's (or instance's) in-flight result. */
export type CacheSource = 'l1' | 'l2' | 'created' | 'joined';

export interface GetOrCreateOptions {
  /** Skip the L1 and L2 reads and create a new entry (still single-flight within the process). */
  forceRefresh?: boolean;
}

export interface TieredCache<V> {
  /**
   * L1 -> L2 -> create(). Single-flight per key: in-process (one promise per key) and, with
   * L2, cross-process via a short Redis lock (SET NX PX + compare-and-delete release); waiters
   * poll L2 within a bounded wait and make their own create() when it runs out. If the entry
   * is past refreshAt (but before expiresAt) it is returned AND a background create() runs
   * once per key (errors swallowed + logged, the old entry keeps being served). forceRefresh
   * skips L1/L2 reads (still single-flight) and tells the other instances to drop their L1
   * copy. Rejects only with create()'s own error (or CacheKeyError / CacheClosedError /
   * CacheEntryError); an L2 failure never fails it.
   */
  getOrCreate(
    key: string,
    create: () => Promise<CacheEntry<V>>,
    options?: GetOrCreateOptions,
  ): Promise<{ entry: CacheEntry<V>; source: CacheSource }>;
  /** Remove from L1 and L2 and tell the other instances (Redis pub/sub) to drop their L1 copy. */
  invalidate(key: string): Promise<void>;
  /**
   * For /readyz: 'disabled' when L1-only, 'connecting' until L2 first connects (within l2StartupWaitMs),
   * 'up', or 'degraded' (breaker open / disconnected) with a reason.
   */
  health(): { l2: 'disabled' | 'connecting' | 'up' | 'degraded'; detail?: string };
  /** For /readyz and metrics: with L2, whether invalidations are confirmed flowing; undefined when L1-only. */
  invalidations(): InvalidationHealth | undefined;
  /**
   * Resolves true once L2 is connected and the invalidation subscription is active (at once
   * when L1-only), false if that has not happened within timeoutMs. Never rejects. For
   * start-up logs and tests; getOrCreate does not need it.
   */
  ready(timeoutMs?: number): Promise<boolean>;
  /** Waits (bounded) for background refreshes and L2 writes, then closes the L2 store. */
  close(): Promise<void>;
}

/** With L2: whether invalidations are confirmed flowing (else L1 hits are re-checked against L2). */
export interface InvalidationHealth {
  flowing: boolean;
  /** Seconds since the subscriber was last confirmed connected and delivering; absent = never yet. */
  lastSyncAgeSeconds?: number;
}

export interface TieredCacheOptions {
  /** L1 byte budget (CACHE_L1_MAX_BYTES; its default lives in api/config/); 0 disables L1 (the bench uses that to measure the L2 path). */
  l1MaxBytes: number;
  /** Absent = L1-only (the embedded default for one instance). The cache owns it and closes it. */
  l2?: L2Store;
  /** Required (non-empty) when l2 is given, unless 'off'; the first key encrypts, all decrypt. */
  encryption?: EncryptionKey[] | 'off';
  /** L2 key = prefix + key (CACHE_KEY_PREFIX; its default lives in api/config/). */
  keyPrefix: string;
  /** Lifetime of the cross-process create() lock. Default 10000 ms. */
  lockTtlMs?: number;
  /** How long a caller waits for another instance's create() before making its own. Default 3000 ms. */
  lockWaitMs?: number;
  /**
   * How long after construction a miss waits for L2's first connection rather than creating
   * without L2 (health() says `connecting` meanwhile). Default 0: no wait.
   */
  l2StartupWaitMs?: number;
  /**
   * The bound on how long an invalidation published by another instance can go unseen here,
   * even across a subscriber disconnection (cache/README.md, "No lost invalidations"). Default 5000 ms.
   */
  invalidationDelayMs?: number;
  /**
   * Peer fill: an entry this instance creates is also sent (in its L2 envelope, over the
   * invalidation bus's connection) to the other instances, which put it in their L1 if it fits
   * without evicting, so a user's token is in every L1 before an outage of L2 (cache/README.md,
   * "Peer fill"). One PUBLISH per create. Default true (CACHE_PEER_FILL).
   */
  peerFill?: boolean;
  /** Never logs values or full keys (only a short key prefix). */
  logger: Logger;
  /** Per-app registry for the obo_cache_* metrics (one cache per registry). A private one when absent. */
  registry?: Registry;
  /** Wall clock for expiry decisions; for tests. Default Date.now. */
  now?: () => number;
}
