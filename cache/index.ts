/**
 * The two-tier cache: L1 (in-process, bounded in bytes) in front of an optional shared L2
 * (Redis, encrypted), with single-flight creation and cross-instance invalidation. It caches
 * values, whatever they are: it knows nothing of HTTP, tokens or msal.
 */
export { createTieredCache, CACHE_DEFAULTS } from './tiered-cache.js';
export type { CacheEntry, CacheSource, GetOrCreateOptions, TieredCache, TieredCacheOptions } from './types.js';
export { parseEncryptionKeys, createEnvelope, type EncryptionKey, type Envelope } from './envelope.js';
export { createRedisConnection, createRedisStore, RedisStore, type RedisStoreOptions } from './redis-store.js';
export { withResilience, type ResilienceOptions } from './resilient-store.js';
export { CircuitBreaker, BREAKER_DEFAULTS, type BreakerOptions } from './breaker.js';
export type { L2Store, L2Health, BreakerState } from './l2-store.js';
export {
  CacheError,
  CacheConfigError,
  EncryptionKeyError,
  CacheKeyError,
  CacheClosedError,
  CacheEntryError,
  L2Error,
  L2TimeoutError,
  L2UnavailableError,
  L2CommandError,
  EnvelopeError,
  type CacheErrorCode,
  type L2Op,
} from './errors.js';
