import { LRUCache } from 'lru-cache';
import { Counter, Gauge, type Registry } from 'prom-client';

/**
 * Tokens that passed full validation, by the SHA-256 of the whole token (base64url), so a token
 * seen before skips parsing and the RSA check. Bounded in bytes (least recently used out first).
 * It only stores: what may be served from it (expiry, scopes, tenants, a retired key) is the
 * validator's to check again on every hit.
 */
export interface VerifiedTokenCache<V> {
  get(tokenHash: string): V | undefined;
  /** `bytes`: the entry's accounted heap cost, see `verifiedTokenBytes`. */
  set(tokenHash: string, value: V, bytes: number): void;
  delete(tokenHash: string): void;
  /** Accounted bytes in use (never above the budget). */
  readonly bytes: number;
  readonly entries: number;
}

export interface VerifiedTokenCacheOptions {
  /** TOKEN_VALIDATION_CACHE_MAX_BYTES; 0 = no cache. */
  maxBytes: number;
  /** Where `obo_token_validation_cache_*` go (the app's registry). */
  registry?: Registry;
}

/**
 * The default budget: about 30,000 typical Entra tokens at about 1.7 KB accounted each, more than
 * the users the default L1 budget (64 MiB) holds.
 */
export const DEFAULT_VERIFIED_TOKEN_CACHE_BYTES = 48 * 1024 * 1024;

/**
 * Accounted size of one entry, on the high side of its heap cost so that the budget also bounds
 * RSS: the parsed claims (a little more than their JSON) and a fixed part for the caller object,
 * its strings, the key and lru-cache's bookkeeping. The token itself is not kept (the request
 * that presents it carries it). Measured on Node 20 with 5,000 validated tokens of 634-byte
 * claims, each token a fresh string as from a socket: 1,551 bytes of heap each, accounted here
 * as 1,658.
 */
export function verifiedTokenBytes(claimsJsonLength: number): number {
  return claimsJsonLength + 1024;
}

/** undefined when `maxBytes` is 0 (TOKEN_VALIDATION_CACHE_MAX_BYTES=0: every token is verified). */
export function createVerifiedTokenCache<V extends object>(options: VerifiedTokenCacheOptions): VerifiedTokenCache<V> | undefined {
  if (options.maxBytes <= 0) return undefined;
  const lru = new LRUCache<string, V>({ maxSize: options.maxBytes });
  const lookups = options.registry ? lookupCounter(options.registry) : undefined;
  const hit = lookups?.labels({ result: 'hit' });
  const miss = lookups?.labels({ result: 'miss' });
  const cache: VerifiedTokenCache<V> = {
    get(tokenHash) {
      const value = lru.get(tokenHash);
      (value === undefined ? miss : hit)?.inc();
      return value;
    },
    set(tokenHash, value, bytes) {
      lru.set(tokenHash, value, { size: bytes });
    },
    delete(tokenHash) {
      lru.delete(tokenHash);
    },
    get bytes() {
      return lru.calculatedSize;
    },
    get entries() {
      return lru.size;
    },
  };
  if (options.registry) registerGauges(options.registry, cache, options.maxBytes);
  return cache;
}

/** Shared when two apps are built on one registry (their counts add up). */
function lookupCounter(registry: Registry): Counter<'result'> {
  const name = 'obo_token_validation_cache_lookups_total';
  const existing = registry.getSingleMetric(name);
  if (existing instanceof Counter) return existing;
  return new Counter({
    name,
    help: 'Verified-token cache lookups, one per token presented: hit (no parse, no signature check) or miss',
    labelNames: ['result'] as const,
    registers: [registry],
  });
}

/** Read at scrape time. With two apps on one registry, the first one's cache is the one shown. */
function registerGauges(registry: Registry, cache: VerifiedTokenCache<object>, maxBytes: number): void {
  if (registry.getSingleMetric('obo_token_validation_cache_bytes')) return;
  const registers = [registry];
  new Gauge({
    name: 'obo_token_validation_cache_bytes',
    help: 'Accounted bytes held by the verified-token cache',
    registers,
    collect() {
      this.set(cache.bytes);
    },
  });
  new Gauge({
    name: 'obo_token_validation_cache_entries',
    help: 'Tokens held by the verified-token cache',
    registers,
    collect() {
      this.set(cache.entries);
    },
  });
  new Gauge({ name: 'obo_token_validation_cache_max_bytes', help: 'Byte budget of the verified-token cache', registers }).set(maxBytes);
}
