/**
 * The two-tier cache: L1 (in-process, bounded in bytes) in front of an optional shared L2
 * (Redis, encrypted), with single-flight creation and cross-instance invalidation. It caches
 * values, whatever they are: it knows nothing of HTTP, tokens or msal.
 */
export { createTieredCache } from './tiered-cache.js';
export type { CacheEntry, CacheSource, TieredCache, TieredCacheOptions } from './types.js';
export type { RedisCredentialSource } from './redis-credentials.js';
export { parseEncryptionKeys, createEnvelope, type EncryptionKey } from './envelope.js';
export { createRedisConnection, createRedisStore } from './redis-store.js';
export { CircuitBreaker } from './breaker.js';
export type { L2Store, BreakerState } from './l2-store.js';
export { EncryptionKeyError, CacheKeyError, CacheClosedError, CacheEntryError, EnvelopeError } from './errors.js';
