import { createRemoteJWKSet, errors, type JWK, type JWSHeaderParameters, type RemoteJWKSet } from 'jose';
import { InvalidTokenError, ServiceUnavailableError } from '../../api/errors.js';

export interface SigningKeys {
  /** jose key resolver: the key for the token's `kid`, refetching at most once per cooldown. */
  resolve(header: JWSHeaderParameters): ReturnType<RemoteJWKSet>;
  /** The published JWK for a `kid` (to read its `issuer`), from the set last fetched. */
  published(kid: string): (JWK & { issuer?: unknown }) | undefined;
}

export interface SigningKeysOptions {
  /** Minimum time between refetches caused by unknown `kid`s (a burst of forged kids costs one fetch). */
  cooldownMs: number;
  /** Background refresh period, so retired keys drop out. Default 1 h. */
  refreshIntervalMs?: number;
  timeoutMs?: number;
  now?: () => number;
}

/**
 * The JWKS behind jose's remote key set, with two changes of policy:
 * - a key once fetched stays usable while the JWKS endpoint is down (jose would drop the whole
 *   set after `cacheMaxAge` and fail every token); refreshes happen in the background instead;
 * - a failure to fetch is an infrastructure problem (503), never an invalid token (401).
 */
export function createSigningKeys(jwksUri: string, options: SigningKeysOptions): SigningKeys {
  const now = options.now ?? Date.now;
  const refreshIntervalMs = options.refreshIntervalMs ?? 3_600_000;
  const remote: RemoteJWKSet = createRemoteJWKSet(new URL(jwksUri), {
    cooldownDuration: options.cooldownMs,
    cacheMaxAge: Number.POSITIVE_INFINITY,
    timeoutDuration: options.timeoutMs ?? 5_000,
  });
  let refreshedAt = now();
  // Keys seen in the published set, by kid (only read after jose verified a signature with the kid).
  const publishedByKid = new Map<string, JWK & { issuer?: unknown }>();
  function published(kid: string): (JWK & { issuer?: unknown }) | undefined {
    // jose's jwks() deep-clones the whole set on every call: look it up again only for a new kid.
    if (!publishedByKid.has(kid)) {
      for (const key of remote.jwks()?.keys ?? []) if (key.kid) publishedByKid.set(key.kid, key);
    }
    return publishedByKid.get(kid);
  }
  // After a failed fetch, unknown kids fail fast for a while instead of each refetching.
  let failedAt = Number.NEGATIVE_INFINITY;
  const failureBackoffMs = Math.min(options.cooldownMs, 5_000);

  return {
    async resolve(header) {
      if (now() - refreshedAt > refreshIntervalMs && !remote.reloading) {
        refreshedAt = now();
        remote.reload().catch(() => {}); // the keys we hold keep working meanwhile
      }
      const retryInMs = failedAt + failureBackoffMs - now();
      if (retryInMs > 0 && (header.kid === undefined || !published(header.kid))) {
        throw unavailable(retryInMs / 1000);
      }
      try {
        return await remote(header);
      } catch (error) {
        if (error instanceof errors.JWKSNoMatchingKey || error instanceof errors.JWKSMultipleMatchingKeys) {
          throw new InvalidTokenError('The access token was not signed by a published key.');
        }
        failedAt = now();
        throw unavailable(failureBackoffMs / 1000);
      }
    },
    published,
  };
}

function unavailable(retryAfterSeconds: number): ServiceUnavailableError {
  return new ServiceUnavailableError('The signing keys are unavailable; try again shortly.', retryAfterSeconds);
}
