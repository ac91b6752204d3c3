import type { CacheEntry, CacheSource, TieredCache } from '../cache/index.js';
import type { AuthenticatedCaller } from '../middleware/access-token.js';
import type { Exchange, ExchangedToken } from './exchange.js';

/** What the cache holds for one (assertion, scope set): the downstream token and its expiry. */
export interface CachedToken {
  accessToken: string;
  expiresOn: number;
}

export interface DownstreamToken {
  accessToken: string;
  /** Where it came from: l1, l2, created (an exchange), joined (another request's exchange). */
  source: CacheSource;
}

export interface AcquireOptions {
  /** Skip the cached entry and replace it (after a downstream 401). */
  forceRefresh?: boolean;
  /** A claims challenge to satisfy: always a fresh exchange. */
  claims?: string;
  correlationId?: string;
}

export interface TokenProvider {
  acquire(caller: AuthenticatedCaller, scopes: string[], options?: AcquireOptions): Promise<DownstreamToken>;
  invalidate(caller: AuthenticatedCaller, scopes: string[]): Promise<void>;
}

/** A cached token is dropped this long before it expires, so a downstream call never carries a dying one. */
const EXPIRY_MARGIN_MS = 60_000;
/** Refresh ahead in the last five minutes (msal-node treats tokens as expired from then on). */
const REFRESH_WINDOW_MS = 5 * 60_000;

/**
 * Validated caller in, downstream access token out: the cache in front of the exchange.
 * The partition is the SHA-256 of the caller's token, so one user's tokens are never served to
 * another, and a new token (after a claims challenge, say) starts a new partition.
 */
export function createTokenProvider(
  cache: TieredCache<CachedToken>,
  exchange: Exchange,
  now: () => number = Date.now,
): TokenProvider {
  function cacheKey(caller: AuthenticatedCaller, scopes: string[]): string {
    return `${caller.tokenHash}:${normaliseScopes(scopes)}`;
  }

  function toEntry(caller: AuthenticatedCaller, token: ExchangedToken): CacheEntry<CachedToken> {
    const issuedAt = now();
    // Nobody can present the assertion after it expires, so its partition need not outlive it.
    const expiresAt = Math.min(token.expiresOn - EXPIRY_MARGIN_MS, caller.expiresAt);
    const refreshAt = Math.max(token.refreshOn ?? token.expiresOn - REFRESH_WINDOW_MS, issuedAt + (expiresAt - issuedAt) / 2);
    return { value: { accessToken: token.accessToken, expiresOn: token.expiresOn }, expiresAt, refreshAt };
  }

  return {
    async acquire(caller, scopes, options = {}) {
      const create = async () =>
        toEntry(
          caller,
          await exchange({
            assertion: caller.token,
            scopes,
            tenantId: caller.tenantId,
            ...(options.claims ? { claims: options.claims } : {}),
            ...(options.correlationId ? { correlationId: options.correlationId } : {}),
          }),
        );
      const forceRefresh = options.forceRefresh === true || options.claims !== undefined;
      const { entry, source } = await cache.getOrCreate(cacheKey(caller, scopes), create, { forceRefresh });
      return { accessToken: entry.value.accessToken, source };
    },
    invalidate(caller, scopes) {
      return cache.invalidate(cacheKey(caller, scopes));
    },
  };
}

/** Scope sets compare as sets: order and case do not make a new partition. */
function normaliseScopes(scopes: string[]): string {
  return [...new Set(scopes.map((scope) => scope.toLowerCase()))].sort().join(' ');
}
