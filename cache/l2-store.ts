/**
 * The seam between the tiered cache and a shared store. Redis implements it
 * (redis-store.ts); anybody who wants Postgres or Cosmos behind the cache writes one class
 * implementing this interface and wraps it with `withResilience` (resilient-store.ts) to get
 * command timeouts and a circuit breaker.
 *
 * Contract for implementers:
 * - Keys arrive complete (the cache has already applied its prefix); values are opaque bytes.
 * - Every operation either resolves or rejects promptly; the cache never lets a rejection
 *   reach its callers, it degrades to L1 + create() instead.
 * - Reject with `L2UnavailableError('disconnected')` when the store knows it cannot serve
 *   (not connected): it costs nothing and does not count against the circuit breaker.
 * - The store owns its connections; `close()` releases them.
 */
export interface L2Store {
  /** The stored bytes, or null when absent or expired. */
  get(key: string): Promise<Buffer | null>;
  /**
   * Optional: the values of several keys in one round trip (MGET), in order, null where absent.
   * Without it, the cache sends the GETs at once.
   */
  getMany?(keys: string[]): Promise<(Buffer | null)[]>;
  /** Store bytes that expire by themselves after ttlMs (> 0). */
  set(key: string, value: Buffer, ttlMs: number): Promise<void>;
  del(key: string): Promise<void>;
  /** Take `key` as a lock for `owner` if nobody holds it; the lock expires after ttlMs. */
  tryLock(key: string, owner: string, ttlMs: number): Promise<boolean>;
  /** Release the lock only if `owner` still holds it (compare-and-delete). */
  unlock(key: string, owner: string): Promise<void>;
  /** Broadcast to every subscriber of the channel, this process included. */
  publish(channel: string, message: string): Promise<void>;
  /**
   * Deliver every later message of the channel to `listener`, across reconnects. Resolves
   * once the subscription is active (which may be never while the store is down; callers
   * should not await it on a request path). Returns the function that unsubscribes.
   * `onInterrupted` is called whenever messages may have been lost (the subscription's
   * connection dropped). All subscriptions of one store share one connection, so messages of
   * all its channels arrive in the order the store accepted them (the invalidation bus relies
   * on it: see cache/README.md).
   */
  subscribe(channel: string, listener: (message: string) => void, onInterrupted?: () => void): Promise<() => Promise<void>>;
  /** Resolves once the store can serve commands. May stay pending while it is down. */
  ready(): Promise<void>;
  /** Synchronous, cheap: safe to call on every /readyz and every metrics scrape. */
  health(): L2Health;
  close(): Promise<void>;
}

export type BreakerState = 'closed' | 'open' | 'half-open';

export interface L2Health {
  status: 'up' | 'degraded';
  /** Present when the store is wrapped with a circuit breaker. */
  breaker?: BreakerState;
  /** Why it is degraded; never contains credentials. */
  detail?: string;
}
