import { LRUCache } from 'lru-cache';
import type { CacheEntry, CacheSource, TieredCache } from '../../cache/index.js';
import type { AuthenticatedCaller } from '../../middleware/bearer/validator.js';
import type { Exchange, ExchangedToken } from './exchange.js';
import type { Span } from '@opentelemetry/api';
import { createTracing, type Tracing } from '../observability/tracing.js';

/** What the cache holds for one (assertion, scope set): the downstream token and its expiry. */
export interface CachedToken {
  accessToken: string;
  expiresOn: number;
}

interface DownstreamToken {
  accessToken: string;
  /** Where it came from: l1, l2, created (an exchange), joined (another request's exchange). */
  source: CacheSource;
}

interface AcquireOptions {
  /**
   * Skip the cached entry and replace it (after a downstream 401), unless a forced refresh of
   * this partition did not help within FUTILE_REFRESH_WINDOW_MS (see refreshDidNotHelp).
   */
  forceRefresh?: boolean;
  /** A claims challenge to satisfy: always a fresh exchange. */
  claims?: string;
  correlationId?: string;
  /** How the token was served is written here too: the request's log fields (see TokenUseRecord). */
  record?: TokenUseRecord;
}

/**
 * Where a request notes how its downstream token was served: the request's log fields, handed
 * down explicitly (no AsyncLocalStorage: it would cost every await of every request).
 */
export interface TokenUseRecord {
  token?: 'user' | 'app';
  cache?: TokenUse['cache'];
  exchangeMs?: number;
}

/** Writes one acquisition's use into the request's record. */
export function recordTokenUse(record: TokenUseRecord | undefined, token: 'user' | 'app', use: TokenUse): void {
  if (!record) return;
  record.token = token;
  record.cache = use.cache;
  if (use.exchangeMs !== undefined) record.exchangeMs = use.exchangeMs;
}

/** How one acquisition was served, for the request's log line. */
export interface TokenUse {
  /** l1 / l2: from the cache; exchange: this request exchanged; joined: it shared another's exchange. */
  cache: 'l1' | 'l2' | 'exchange' | 'joined';
  /** Time this request spent in its own exchange, ms. */
  exchangeMs?: number;
}

export interface TokenProviderOptions {
  now?: () => number;
  /** Spans for the cache lookup and, inside it, the exchange. */
  tracing?: Tracing;
  /** Told how each acquisition was served (also when it failed): the app-wide metric. */
  onTokenUse?: (use: TokenUse) => void;
}

export interface TokenProvider {
  acquire(caller: AuthenticatedCaller, scopes: string[], options?: AcquireOptions): Promise<DownstreamToken>;
  invalidate(caller: AuthenticatedCaller, scopes: string[]): Promise<void>;
  /**
   * The downstream rejected the token a forced refresh just gave: for FUTILE_REFRESH_WINDOW_MS,
   * `forceRefresh` on this partition serves the cached token instead of exchanging again.
   */
  refreshDidNotHelp(caller: AuthenticatedCaller, scopes: string[]): void;
}

/** A cached token is dropped this long before it expires, so a downstream call never carries a dying one. */
const EXPIRY_MARGIN_MS = 60_000;
/** Refresh ahead in the last five minutes (msal-node treats tokens as expired from then on). */
const REFRESH_WINDOW_MS = 5 * 60_000;
/**
 * How long a partition whose forced refresh did not help (the downstream kept answering 401)
 * is not force-refreshed again. A downstream path that answers 401 for its own reasons would
 * otherwise cost Entra an exchange per request, and once Entra throttles, its Retry-After
 * blocks exchanges for every user of the tenant.
 */
export const FUTILE_REFRESH_WINDOW_MS = 5 * 60_000;
/** Partitions remembered at once (least recently marked go first); about 100 bytes each. */
const MAX_FUTILE_REFRESHES = 10_000;

/**
 * Validated caller in, downstream access token out: the cache in front of the exchange.
 * The partition is the SHA-256 of the caller's token, so one user's tokens are never served to
 * another, and a new token (after a claims challenge, say) starts a new partition.
 */
export function createTokenProvider(cache: TieredCache<CachedToken>, exchange: Exchange, options: TokenProviderOptions = {}): TokenProvider {
  const now = options.now ?? Date.now;
  const tracing = options.tracing ?? createTracing({ serviceName: 'obo-middle-tier' });
  const onTokenUse = options.onTokenUse;
  // Per process: each instance forces at most one refresh per partition and window.
  const futileRefreshes = new LRUCache<string, number>({ max: MAX_FUTILE_REFRESHES });
  function refreshIsFutile(key: string): boolean {
    const markedAt = futileRefreshes.get(key);
    if (markedAt === undefined) return false;
    if (now() - markedAt < FUTILE_REFRESH_WINDOW_MS) return true;
    futileRefreshes.delete(key);
    return false;
  }
  // The scope lists are the configuration's own arrays: normalised once each, not per request.
  const normalised = new WeakMap<readonly string[], string>();
  function cacheKey(caller: AuthenticatedCaller, scopes: string[]): string {
    let scopeSet = normalised.get(scopes);
    if (scopeSet === undefined) normalised.set(scopes, (scopeSet = normaliseScopes(scopes)));
    return `${caller.tokenHash}:${scopeSet}`;
  }

  function toEntry(caller: AuthenticatedCaller, token: ExchangedToken): CacheEntry<CachedToken> {
    const issuedAt = now();
    // Nobody can present the assertion after it expires, so its partition need not outlive it.
    const expiresAt = Math.min(token.expiresOn - EXPIRY_MARGIN_MS, caller.expiresAt);
    const refreshAt = Math.max(token.refreshOn ?? token.expiresOn - REFRESH_WINDOW_MS, issuedAt + (expiresAt - issuedAt) / 2);
    return { value: { accessToken: token.accessToken, expiresOn: token.expiresOn }, expiresAt, refreshAt };
  }

  /** The exchange behind a cache miss, as a cache entry; `took` is told how long it ran (ms). */
  async function exchangeFor(
    caller: AuthenticatedCaller,
    scopes: string[],
    acquireOptions: AcquireOptions,
    took: (ms: number) => void,
  ): Promise<CacheEntry<CachedToken>> {
    const started = performance.now();
    try {
      const request = {
        assertion: caller.token,
        scopes,
        tenantId: caller.tenantId,
        ...(acquireOptions.claims ? { claims: acquireOptions.claims } : {}),
        ...(acquireOptions.correlationId ? { correlationId: acquireOptions.correlationId } : {}),
      };
      return toEntry(caller, await tracing.span('OBO exchange', () => exchange(request)));
    } finally {
      took(Math.round((performance.now() - started) * 100) / 100);
    }
  }

  /** One acquisition; `span` (tracing on) is the lookup's span. */
  async function lookup(caller: AuthenticatedCaller, scopes: string[], acquireOptions: AcquireOptions, span?: Span): Promise<DownstreamToken> {
    let exchangeMs: number | undefined;
    const key = cacheKey(caller, scopes);
    const forceRefresh = (acquireOptions.forceRefresh === true && !refreshIsFutile(key)) || acquireOptions.claims !== undefined;
    try {
      // On a hit these closures are allocated, never run: only a miss exchanges.
      const { entry, source } = await cache.getOrCreate(key, () => exchangeFor(caller, scopes, acquireOptions, (ms) => (exchangeMs = ms)), {
        forceRefresh,
      });
      span?.setAttribute('obo.cache.source', source);
      report(acquireOptions.record, { cache: source === 'created' ? 'exchange' : source, ...(exchangeMs !== undefined ? { exchangeMs } : {}) });
      return { accessToken: entry.value.accessToken, source };
    } catch (error) {
      report(acquireOptions.record, exchangeMs !== undefined ? { cache: 'exchange', exchangeMs } : { cache: 'joined' });
      throw error;
    }
  }
  function report(record: TokenUseRecord | undefined, use: TokenUse): void {
    onTokenUse?.(use);
    recordTokenUse(record, 'user', use);
  }

  return {
    // The lookup's span only when tracing is on: off, a hit pays for no wrapper.
    acquire: (caller, scopes, acquireOptions = {}) =>
      tracing.enabled
        ? tracing.span('token cache lookup', (span) => lookup(caller, scopes, acquireOptions, span))
        : lookup(caller, scopes, acquireOptions),
    invalidate(caller, scopes) {
      return cache.invalidate(cacheKey(caller, scopes));
    },
    refreshDidNotHelp(caller, scopes) {
      futileRefreshes.set(cacheKey(caller, scopes), now());
    },
  };
}

/** Scope sets compare as sets: order and case do not make a new partition. */
export function normaliseScopes(scopes: readonly string[]): string {
  return [...new Set(scopes.map((scope) => scope.toLowerCase()))].sort().join(' ');
}
