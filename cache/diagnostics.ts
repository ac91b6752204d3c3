import type { Logger } from 'pino';
import type { L2Op } from './errors.js';
import type { CacheMetrics } from './metrics.js';

const WARN_INTERVAL_MS = 10_000;

/**
 * How the cache reports what it survives: L2 failures (counted, logged, never thrown), values
 * that do not open, malformed messages. Each kind of warning is logged at most every 10 s, so
 * a failing Redis cannot flood the log.
 */
export class CacheDiagnostics {
  private readonly log: Logger;
  private readonly metrics: CacheMetrics;
  private readonly lastWarned = new Map<string, number>();

  constructor(log: Logger, metrics: CacheMetrics) {
    this.log = log;
    this.metrics = metrics;
  }

  warn(category: string, fields: Record<string, unknown>, message: string): void {
    const now = Date.now();
    const last = this.lastWarned.get(category);
    if (last !== undefined && now - last < WARN_INTERVAL_MS) return;
    this.lastWarned.set(category, now);
    this.log.warn(fields, message);
  }

  l2Failed(op: L2Op, err: unknown): void {
    this.metrics.l2Failed(op, err);
    this.warn(`l2:${op}`, { op, error: describe(err) }, 'cache: L2 operation failed; continuing without it');
  }

  /** Runs an L2 call the cache can do without: a failure is counted and logged, never thrown. */
  async l2Call(op: L2Op, fn: () => Promise<void>): Promise<void> {
    try {
      await fn();
    } catch (err) {
      this.l2Failed(op, err);
    }
  }
}

/** Logs identify a key by its first characters only. */
export function hint(key: string): string {
  return key.length > 8 ? `${key.slice(0, 8)}…` : key;
}

export function describe(err: unknown): string {
  if (err instanceof Error) return 'code' in err && typeof err.code === 'string' ? `${err.code}: ${err.message}` : err.message;
  return String(err);
}
