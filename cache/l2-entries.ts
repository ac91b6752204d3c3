import type { Logger } from 'pino';
import { hint, type CacheDiagnostics } from './diagnostics.js';
import { deserialise } from './entry-codec.js';
import { createEnvelope, type EncryptionKey, type Envelope } from './envelope.js';
import { CacheConfigError, EnvelopeError } from './errors.js';
import { estimateBytes } from './l1.js';
import type { L2Store } from './l2-store.js';
import type { CacheMetrics } from './metrics.js';
import type { CacheEntry } from './types.js';

/** An entry read from L2, with its accounted L1 size. */
export interface Found<V> {
  entry: CacheEntry<V>;
  bytes: number;
}

/** `unavailable`: the read failed (counted and logged); a `miss` includes values that do not open. */
export type L2Read<V> = Found<V> | 'miss' | 'unavailable';

/** The envelope an L2 needs: encryption keys, or `'off'` said explicitly. */
export function l2Envelope(encryption: EncryptionKey[] | 'off' | undefined, log: Logger): Envelope {
  if (encryption === undefined || (encryption !== 'off' && encryption.length === 0)) {
    throw new CacheConfigError(
      'L2 (Redis) is configured but no encryption key is: set CACHE_ENCRYPTION_KEYS="kid:base64key" (32-byte keys), or CACHE_ENCRYPTION=off explicitly',
    );
  }
  if (encryption === 'off') log.warn('cache: L2 values are stored UNENCRYPTED (encryption explicitly off)');
  return createEnvelope(encryption);
}

/**
 * The cache's entries in L2: the value of `key` is `<prefix><key>`, sealed in the envelope (the
 * full L2 key is its AAD), with `PX` = the entry's remaining lifetime. None of these methods
 * throws: a failure is counted and logged, and the caller carries on without L2.
 */
export class L2Entries<V> {
  private readonly l2: L2Store;
  private readonly prefix: string;
  private readonly envelope: Envelope;
  private readonly now: () => number;
  private readonly metrics: CacheMetrics;
  private readonly diagnostics: CacheDiagnostics;

  constructor(l2: L2Store, options: { prefix: string; envelope: Envelope; now: () => number; metrics: CacheMetrics; diagnostics: CacheDiagnostics }) {
    this.l2 = l2;
    this.prefix = options.prefix;
    this.envelope = options.envelope;
    this.now = options.now;
    this.metrics = options.metrics;
    this.diagnostics = options.diagnostics;
  }

  /**
   * The live entry of `key`; expired or unopenable values are misses. `recheck`: a second read
   * in the same flight, whose bad value was already counted and logged by the first.
   */
  async read(key: string, recheck = false): Promise<L2Read<V>> {
    let raw: Buffer | null;
    try {
      raw = await this.l2.get(this.prefix + key);
    } catch (err) {
      this.diagnostics.l2Failed('get', err);
      return 'unavailable';
    }
    if (raw === null) return 'miss';
    return this.open(key, raw, recheck);
  }

  /**
   * Opens a sealed value of `key` (read from L2, or sent by another instance as a peer fill);
   * expired or unopenable values are misses. `recheck`: its failure was counted already.
   */
  open(key: string, raw: Buffer, recheck = false): Found<V> | 'miss' {
    const fullKey = this.prefix + key;
    let text: string;
    let entry: CacheEntry<V>;
    try {
      text = this.envelope.open(raw, fullKey);
      entry = deserialise<V>(text);
    } catch (err) {
      if (recheck) return 'miss';
      const reason = err instanceof EnvelopeError ? err.reason : 'malformed';
      this.metrics.decryptFailed(reason);
      this.diagnostics.warn(`decrypt:${reason}`, { key: hint(key), reason }, 'cache: L2 value did not open; treated as a miss');
      return 'miss';
    }
    if (entry.expiresAt <= this.now()) return 'miss';
    return { entry, bytes: estimateBytes(key, text.length) };
  }

  /** The envelope `key`'s value is stored in (and sent to peers in): `json` is the entry's serialised plaintext. */
  seal(key: string, json: string): Buffer {
    return this.envelope.seal(json, this.prefix + key);
  }

  /** `ttlMs` > 0. Whether the store took it (a failure is counted and logged). */
  async write(key: string, sealed: Buffer, ttlMs: number): Promise<boolean> {
    try {
      await this.l2.set(this.prefix + key, sealed, ttlMs);
      return true;
    } catch (err) {
      this.diagnostics.l2Failed('set', err);
      return false;
    }
  }

  async delete(key: string): Promise<void> {
    await this.diagnostics.l2Call('del', () => this.l2.del(this.prefix + key));
  }
}
