import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { RateLimiterMemory, RateLimiterRedis, type RateLimiterAbstract } from 'rate-limiter-flexible';
import { createRedisConnection, type RedisCredentialSource } from '../cache/index.js';
import type { Config } from './config/load-config.js';

export interface RateLimiters {
  /** Absent when the limit is 0 (off). */
  perUser?: RateLimiterAbstract;
  perIp?: RateLimiterAbstract;
  /** Quits the Redis connection, if there is one. */
  close(): Promise<void>;
}

const WINDOW_SECONDS = 60;

/**
 * The per-user and per-IP limiters (fixed one-minute windows). With Redis configured, every
 * instance counts in the same Redis, on a connection of its own; while Redis is unreachable each
 * instance falls back to counting in memory, so a Redis outage never refuses or fails requests.
 * Without Redis the counts are per instance.
 */
export function createRateLimiters(config: Config, logger: Logger, redisCredentials?: RedisCredentialSource): RateLimiters {
  const limits = { user: config.rateLimit.perUser, ip: config.rateLimit.perIp };
  const redisConfig = config.cache.redis;
  const needsStore = limits.user > 0 || limits.ip > 0;
  const redis =
    redisConfig && needsStore
      ? createRedisConnection({
          ...redisConfig,
          commandTimeoutMs: config.cache.l2TimeoutMs,
          logger,
          ...(redisCredentials ? { credentials: redisCredentials } : {}),
        })
      : undefined;
  if (redis) {
    let lastWarned = 0;
    redis.on('error', (error: Error) => {
      if (Date.now() - lastWarned < 30_000) return;
      lastWarned = Date.now();
      logger.warn({ error: error.message }, 'rate limiter: Redis unreachable; counting in memory meanwhile');
    });
  }

  function limiter(scope: 'user' | 'ip'): RateLimiterAbstract | undefined {
    const points = limits[scope];
    if (points === 0) return undefined;
    const keyPrefix = `${config.cache.keyPrefix}rl:${scope}`;
    const inMemory = new RateLimiterMemory({ points, duration: WINDOW_SECONDS, keyPrefix });
    if (!redis) return inMemory;
    return new RateLimiterRedis({
      storeClient: redis,
      points,
      duration: WINDOW_SECONDS,
      keyPrefix,
      rejectIfRedisNotReady: true,
      insuranceLimiter: inMemory,
    });
  }

  const perUser = limiter('user');
  const perIp = limiter('ip');
  return {
    ...(perUser ? { perUser } : {}),
    ...(perIp ? { perIp } : {}),
    async close() {
      if (!redis) return;
      if (redis.status === 'ready') await Promise.race([redis.quit().catch(() => undefined), sleep(500, undefined, { ref: false })]);
      redis.disconnect();
    },
  };
}
