import type { Logger } from 'pino';
import { CircuitBreaker, type BreakerOptions } from './breaker.js';
import { L2CommandError, L2Error, L2TimeoutError, L2UnavailableError, type L2Op } from './errors.js';
import type { L2Health, L2Store } from './l2-store.js';

export interface ResilienceOptions {
  /** Upper bound on every operation, whatever the store does inside. */
  commandTimeoutMs: number;
  breaker?: BreakerOptions;
  logger: Logger;
  /** Monotonic clock for the breaker; for tests. */
  clock?: () => number;
}

/**
 * Wraps any L2Store so that every operation settles within commandTimeoutMs and a store that
 * keeps failing is skipped entirely (circuit breaker) until a probe succeeds. Failures are
 * re-thrown as L2Error subclasses (timeout / unavailable / command failed) so the cache can
 * count them by kind.
 */
export function withResilience(store: L2Store, options: ResilienceOptions): L2Store {
  return new ResilientStore(store, options);
}

class ResilientStore implements L2Store {
  private readonly inner: L2Store;
  private readonly timeoutMs: number;
  private readonly breaker: CircuitBreaker;

  constructor(inner: L2Store, options: ResilienceOptions) {
    this.inner = inner;
    this.timeoutMs = options.commandTimeoutMs;
    const log = options.logger;
    this.breaker = new CircuitBreaker(
      options.breaker,
      (from, to) => {
        if (to === 'open') log.warn({ from, to, failures: this.breaker.consecutiveFailures }, 'L2 circuit breaker opened: skipping L2');
        else log.info({ from, to }, `L2 circuit breaker ${to}`);
      },
      options.clock,
    );
  }

  get(key: string): Promise<Buffer | null> {
    return this.run('get', () => this.inner.get(key));
  }

  getMany(keys: string[]): Promise<(Buffer | null)[]> {
    const inner = this.inner;
    return this.run('get', () => (inner.getMany ? inner.getMany(keys) : Promise.all(keys.map((key) => inner.get(key)))));
  }

  set(key: string, value: Buffer, ttlMs: number): Promise<void> {
    return this.run('set', () => this.inner.set(key, value, ttlMs));
  }

  del(key: string): Promise<void> {
    return this.run('del', () => this.inner.del(key));
  }

  tryLock(key: string, owner: string, ttlMs: number): Promise<boolean> {
    return this.run('lock', () => this.inner.tryLock(key, owner, ttlMs));
  }

  unlock(key: string, owner: string): Promise<void> {
    return this.run('unlock', () => this.inner.unlock(key, owner));
  }

  publish(channel: string, message: string): Promise<void> {
    return this.run('publish', () => this.inner.publish(channel, message));
  }

  /** Not bounded: a subscription legitimately waits for the store to come back. */
  subscribe(channel: string, listener: (message: string) => void, onInterrupted?: () => void): Promise<() => Promise<void>> {
    return this.inner.subscribe(channel, listener, onInterrupted);
  }

  ready(): Promise<void> {
    return this.inner.ready();
  }

  health(): L2Health {
    const inner = this.inner.health();
    const breaker = this.breaker.state;
    if (breaker === 'closed') return { ...inner, breaker };
    const detail =
      breaker === 'open' ? `circuit breaker open (next probe in ${Math.ceil(this.breaker.msUntilProbe)} ms)` : 'circuit breaker half-open (probing)';
    return { status: 'degraded', breaker, detail: inner.detail ? `${detail}; ${inner.detail}` : detail };
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  private run<T>(op: L2Op, fn: () => Promise<T>): Promise<T> {
    if (!this.breaker.allow()) return Promise.reject(new L2UnavailableError(op, 'breaker_open', 'circuit breaker open'));
    return new Promise<T>((resolve, reject) => {
      let settled = false;
      const timer = setTimeout(() => {
        settled = true;
        this.breaker.failure();
        reject(new L2TimeoutError(op, this.timeoutMs));
      }, this.timeoutMs);
      // A store that throws instead of rejecting is handled the same way.
      const pending = (async () => fn())();
      pending.then(
        (value) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          this.breaker.success();
          resolve(value);
        },
        (err: unknown) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          const classified = classify(op, err, this.timeoutMs);
          if (classified instanceof L2UnavailableError) this.breaker.abandon();
          else this.breaker.failure();
          reject(classified);
        },
      );
    });
  }
}

function classify(op: L2Op, err: unknown, timeoutMs: number): L2Error {
  if (err instanceof L2Error) return err;
  // ioredis' own commandTimeout fires with this message; count it as a timeout.
  if (err instanceof Error && err.message === 'Command timed out') return new L2TimeoutError(op, timeoutMs, { cause: err });
  return new L2CommandError(op, err);
}
