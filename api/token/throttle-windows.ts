import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import { Gauge, type Registry } from 'prom-client';
import type { L2Store } from '../../cache/index.js';

/**
 * Entra's throttling windows: when the token endpoint answers 429/503 with `Retry-After`, no
 * exchange for the same tenant and scope set is tried until the window has passed. Keyed by
 * tenant and scopes, never by user: Entra throttles an app in a tenant, not one of its users.
 */
export interface ThrottleWindows {
  /** Milliseconds left in the window for `key`, or 0 when exchanges may go ahead. Never rejects. */
  remainingMs(key: string): Promise<number>;
  /** Opens (or extends) the window for `key` for `durationMs`; settles once it is recorded (bounded). Never rejects. */
  open(key: string, durationMs: number): Promise<void>;
  /** The longest window in force that this instance can see, for /readyz and metrics. Never rejects. */
  status(): Promise<ThrottleStatus>;
}

interface ThrottleStatus {
  /** 0 when no window is open. */
  remainingMs: number;
  /** `fleet`: windows in Redis count too (any instance's); `instance`: only this instance's own. */
  scope: 'fleet' | 'instance';
}

/** Scopes sorted: the same set is the same window, whatever order a caller named them in. */
export function throttleKey(tenantId: string, scopes: readonly string[]): string {
  return `${tenantId} ${[...new Set(scopes)].sort().join(' ')}`;
}

/** The windows this instance was told about itself. */
export function createLocalThrottleWindows(now: () => number = Date.now): ThrottleWindows {
  const until = new Map<string, number>();
  const left = (key: string): number => {
    const ms = (until.get(key) ?? 0) - now();
    if (ms <= 0) until.delete(key);
    return Math.max(0, ms);
  };
  return {
    remainingMs: (key) => Promise.resolve(left(key)),
    open(key, durationMs) {
      until.set(key, Math.max(until.get(key) ?? 0, now() + durationMs));
      return Promise.resolve();
    },
    status() {
      let longest = 0;
      for (const key of until.keys()) longest = Math.max(longest, left(key));
      return Promise.resolve({ remainingMs: longest, scope: 'instance' });
    },
  };
}

export interface SharedThrottleOptions {
  /** The cache's L2 store: every call is already bounded by the command timeout and the breaker. */
  store: L2Store;
  /** CACHE_KEY_PREFIX: windows live at `<prefix>throttle:<SHA-256 of the key>`. */
  keyPrefix: string;
  logger: Logger;
  now?: () => number;
}

/**
 * Never trust a window from Redis longer than this (the exchange caps Entra's Retry-After at the
 * same 300 s): a bad value must not stop exchanges across the fleet for hours.
 */
const MAX_SHARED_WINDOW_MS = 300_000;

/**
 * Windows shared by every instance on one Redis, so that when Entra throttles one of them the
 * others stop calling too (each further call would extend the throttling).
 *
 * - `open` records the window locally, then in Redis at `<prefix>throttle:<hash>` with a TTL of
 *   the window (the key is a SHA-256 of tenant and scope set: no user, nothing readable), and
 *   lengthens `<prefix>throttle:fleet`, the longest window of the fleet, for /readyz.
 * - `remainingMs` answers from the local window when there is one, else reads Redis once; a
 *   window found there is kept locally, so the rest of it costs no Redis call. It runs before an
 *   exchange only: a cache hit never gets here.
 * - Redis absent, down or slow (bounded by the store's command timeout): the local windows only,
 *   as a single instance has them.
 *
 * A window is stored as its end and its length; an instance reads `min(end − now, length)`, so a
 * clock that runs behind another instance's cannot make the window longer than Entra said.
 */
export function createSharedThrottleWindows(options: SharedThrottleOptions): ThrottleWindows {
  const now = options.now ?? Date.now;
  const { store, logger } = options;
  const local = createLocalThrottleWindows(now);
  const fleetKey = `${options.keyPrefix}throttle:fleet`;
  const windowKey = (key: string): string => `${options.keyPrefix}throttle:${createHash('sha256').update(key).digest('base64url')}`;

  /** Milliseconds left in a stored window (0 when absent, over or malformed); undefined when Redis did not answer. */
  async function readWindow(redisKey: string): Promise<number | undefined> {
    let stored: Buffer | null;
    try {
      stored = await store.get(redisKey);
    } catch (error) {
      logger.debug({ error: message(error) }, 'throttle window: Redis not readable; local windows only');
      return undefined;
    }
    const [end, length] = (stored?.toString('latin1') ?? '').split(' ').map(Number);
    if (!(end !== undefined && length !== undefined && Number.isFinite(end) && Number.isFinite(length))) return 0;
    return Math.max(0, Math.min(end - now(), length, MAX_SHARED_WINDOW_MS));
  }

  async function writeWindow(redisKey: string, durationMs: number): Promise<void> {
    await store.set(redisKey, Buffer.from(`${now() + durationMs} ${durationMs}`, 'latin1'), durationMs);
  }

  return {
    async remainingMs(key) {
      const known = await local.remainingMs(key);
      if (known > 0) return known;
      const shared = (await readWindow(windowKey(key))) ?? 0;
      if (shared > 0) await local.open(key, shared);
      return shared;
    },
    async open(key, durationMs) {
      await local.open(key, durationMs);
      const results = await Promise.allSettled([
        writeWindow(windowKey(key), durationMs),
        // Only ever lengthened: another key's longer window stays the fleet's answer.
        readWindow(fleetKey).then((fleet) => (fleet === undefined || fleet < durationMs ? writeWindow(fleetKey, durationMs) : undefined)),
      ]);
      const failed = results.find((result) => result.status === 'rejected');
      if (failed) {
        logger.warn({ error: message(failed.reason) }, 'throttle window not shared (Redis unavailable): only this instance backs off');
      }
    },
    async status() {
      const [own, fleet] = await Promise.all([local.status(), readWindow(fleetKey)]);
      if (fleet === undefined) return own;
      return { remainingMs: Math.max(own.remainingMs, fleet), scope: 'fleet' };
    },
  };
}

/**
 * `obo_token_throttle_remaining_seconds`: the longest Entra throttling window in force, read at
 * scrape time (with Redis: the fleet's, one bounded GET per scrape).
 */
export function registerThrottleGauge(registry: Registry, windows: ThrottleWindows): void {
  const name = 'obo_token_throttle_remaining_seconds';
  if (registry.getSingleMetric(name)) throw new Error(`this registry already holds ${name}: give each app its own registry`);
  new Gauge({
    name,
    help: "Seconds left in the longest Entra throttling window (Retry-After) in force; 0 = none. With Redis, any instance's window counts",
    registers: [registry],
    async collect() {
      this.set(Math.ceil((await windows.status()).remainingMs / 1000));
    },
  });
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
