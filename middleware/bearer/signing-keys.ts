import { KeyObject, type webcrypto } from 'node:crypto';
import { createRemoteJWKSet, errors, jwksCache, type JWK, type JWSHeaderParameters, type RemoteJWKSet } from 'jose';
import { InvalidTokenError, ServiceUnavailableError } from '../../api/errors.js';

export interface SigningKeys {
  /**
   * The RSA public key for the token's header, as jose's remote key set selects it (`kid`, key
   * type, `alg`, `use`), refetching at most once per cooldown; keys under 2048 bits are refused.
   */
  keyFor(header: JWSHeaderParameters): Promise<KeyObject>;
  /** The published JWK for a `kid` (to read its `issuer`), from the set last fetched. */
  published(kid: string): (JWK & { issuer?: unknown }) | undefined;
  /** Whether the set last fetched still lists `kid`: a key that left it is retired (or compromised). */
  isPublished(kid: string): boolean;
  /** Starts the background refresh when it is due; cheap enough for every request. */
  refreshIfDue(): void;
}

export interface SigningKeysOptions {
  /** Minimum time between refetches caused by unknown `kid`s (a burst of forged kids costs one fetch). */
  cooldownMs: number;
  /** Background refresh period, so retired keys drop out. Default 1 h. */
  refreshIntervalMs?: number;
  timeoutMs?: number;
  now?: () => number;
}

/** What jose writes after each successful fetch (its `jwksCache` option): we only read it. */
interface FetchedSet {
  jwks?: { keys?: (JWK & { issuer?: unknown })[] };
  uat?: number;
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
  // jose replaces `fetched.jwks` with each set it fetches (whoever triggered the fetch).
  const fetched: FetchedSet = {};
  const remote: RemoteJWKSet = createRemoteJWKSet(new URL(jwksUri), {
    cooldownDuration: options.cooldownMs,
    cacheMaxAge: Number.POSITIVE_INFINITY,
    timeoutDuration: options.timeoutMs ?? 5_000,
    // Starts empty, so jose fetches; the type wants either a full entry or nothing in it.
    [jwksCache]: fetched as Record<string, never>,
  });
  let refreshedAt = now();
  // The node:crypto form of each key jose imported (jose keeps its CryptoKey per published JWK).
  const keyObjects = new WeakMap<webcrypto.CryptoKey, KeyObject>();
  function keyObjectOf(cryptoKey: webcrypto.CryptoKey): KeyObject {
    let key = keyObjects.get(cryptoKey);
    if (!key) {
      key = KeyObject.from(cryptoKey);
      // As jose requires of RS256 keys.
      if ((key.asymmetricKeyDetails?.modulusLength ?? 0) < 2048)
        throw new InvalidTokenError('The access token was signed with a key too short to trust.');
      keyObjects.set(cryptoKey, key);
    }
    return key;
  }
  // The last fetched set by kid, rebuilt only when jose has fetched a new one (a reference check).
  const publishedByKid = new Map<string, JWK & { issuer?: unknown }>();
  let indexed: FetchedSet['jwks'];
  function publishedKeys(): Map<string, JWK & { issuer?: unknown }> {
    if (fetched.jwks !== indexed) {
      indexed = fetched.jwks;
      publishedByKid.clear();
      for (const key of indexed?.keys ?? []) if (typeof key.kid === 'string') publishedByKid.set(key.kid, key);
    }
    return publishedByKid;
  }
  // After a failed fetch, unknown kids fail fast for a while instead of each refetching.
  let failedAt = Number.NEGATIVE_INFINITY;
  const failureBackoffMs = Math.min(options.cooldownMs, 5_000);

  function refreshIfDue(): void {
    if (now() - refreshedAt > refreshIntervalMs && !remote.reloading) {
      refreshedAt = now();
      remote.reload().catch(() => {}); // the keys we hold keep working meanwhile
    }
  }

  return {
    async keyFor(header) {
      refreshIfDue();
      const retryInMs = failedAt + failureBackoffMs - now();
      if (retryInMs > 0 && (header.kid === undefined || !publishedKeys().has(header.kid))) {
        throw unavailable(retryInMs / 1000);
      }
      try {
        return keyObjectOf(await remote(header));
      } catch (error) {
        if (error instanceof InvalidTokenError) throw error;
        if (error instanceof errors.JWKSNoMatchingKey || error instanceof errors.JWKSMultipleMatchingKeys) {
          throw new InvalidTokenError('The access token was not signed by a published key.');
        }
        failedAt = now();
        throw unavailable(failureBackoffMs / 1000);
      }
    },
    published: (kid) => publishedKeys().get(kid),
    isPublished: (kid) => publishedKeys().has(kid),
    refreshIfDue,
  };
}

function unavailable(retryAfterSeconds: number): ServiceUnavailableError {
  return new ServiceUnavailableError('The signing keys are unavailable; try again shortly.', retryAfterSeconds);
}
