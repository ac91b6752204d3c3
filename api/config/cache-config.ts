import { parseEncryptionKeys, type EncryptionKey } from '../../cache/index.js';
import type { EnvReader } from './env-reader.js';
import { readRedis, type RedisConfig } from './redis.js';

const MIB = 1024 * 1024;

export interface CacheConfig {
  l1MaxBytes: number;
  keyPrefix: string;
  redis?: RedisConfig;
  l2TimeoutMs: number;
  /** After start, how long /readyz stays 503 and a cache miss waits for Redis's first connection. */
  l2StartupWaitMs: number;
  /** Peer fill (CACHE_PEER_FILL): an instance's new entries also go to the other instances' L1. */
  peerFill: boolean;
  /** `off` only when CACHE_ENCRYPTION=off was set explicitly. */
  encryption: EncryptionKey[] | 'off';
}

/** The token cache: L1 budget, Redis (L2) and the keys that encrypt what goes into it. */
export function readCacheConfig(read: EnvReader): CacheConfig {
  const redis = readRedis(read);
  const encryptionSwitch = read.oneOf('CACHE_ENCRYPTION', 'on', ['on', 'off']);
  const keysText = read.optional('CACHE_ENCRYPTION_KEYS');
  let encryption: EncryptionKey[] | 'off' = [];
  if (keysText !== undefined) {
    try {
      encryption = parseEncryptionKeys(keysText);
    } catch (error) {
      // Its messages name elements by position and key id, never a key.
      read.problem('CACHE_ENCRYPTION_KEYS', error instanceof Error ? error.message : 'invalid');
    }
  }
  if (encryptionSwitch === 'off') {
    encryption = 'off';
  } else if (redis && keysText === undefined) {
    read.problem(
      'CACHE_ENCRYPTION_KEYS',
      'required when Redis is configured: "kid:base64-of-32-bytes[,kid2:…]" (or set CACHE_ENCRYPTION=off explicitly)',
    );
  }

  return {
    l1MaxBytes: read.integer('CACHE_L1_MAX_BYTES', 64 * MIB, 0, 64 * 1024 * MIB),
    keyPrefix: read.optional('CACHE_KEY_PREFIX') ?? 'obo:',
    ...(redis ? { redis } : {}),
    l2TimeoutMs: read.integer('CACHE_L2_TIMEOUT_MS', 100, 1, 60_000),
    l2StartupWaitMs: read.integer('CACHE_L2_STARTUP_WAIT_MS', 3_000, 0, 60_000),
    peerFill: read.oneOf('CACHE_PEER_FILL', 'on', ['on', 'off']) === 'on',
    encryption,
  };
}
