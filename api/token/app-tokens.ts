import type { Logger } from 'pino';
import { Counter, type Registry } from 'prom-client';
import { createTieredCache, type CacheEntry, type CacheSource, type TieredCache } from '../../cache/index.js';
import type { Tracing } from '../observability/tracing.js';
import type { ClientCredentialsGrant, ExchangedToken } from './exchange.js';
import { normaliseScopes, recordTokenUse, type CachedToken, type TokenProvider, type TokenUse, type TokenUseRecord } from './token-provider.js';

/** An app token and when it expires (epoch ms). */
interface AppToken {
  accessToken: string;
  expiresOn: number;
}

/**
 * The API's own app token for `scopes` (one `<resource>/.default`), cached and refreshed ahead:
 * what the downstreams with `"token": "app"` and Redis's Entra authentication ask.
 */
type AcquireAppToken = (
  scopes: string[],
  options?: { forceRefresh?: boolean; record?: TokenUseRecord },
) => Promise<AppToken & { source: CacheSource }>;

export interface AppTokens {
  acquire: AcquireAppToken;
  /** The same tokens as a downstream client's token provider: the caller (already authenticated) is not part of the key. */
  provider: TokenProvider;
  /** Closes the cache, if this module made its own. */
  close(): Promise<void>;
}

export interface AppTokensOptions {
  /** The API's client id: part of the key, so two apps sharing one L2 never share tokens. */
  clientId: string;
  logger: Logger;
  /**
   * The app's cache (L1, and L2 when Redis is configured). Absent: a private in-process cache,
   * for tokens that must not be stored in Redis (the token that authenticates to Redis itself).
   */
  cache?: TieredCache<CachedToken>;
  tracing?: Tracing;
  /** Told how each acquisition was served, as the user token provider's `onTokenUse`. */
  onTokenUse?: (use: TokenUse) => void;
  now?: () => number;
}

/** Cache keys of app tokens. User partitions are `<sha-256 hex>:…`, which can never start like this. */
const KEY_PREFIX = 'app-token:';
/** Dropped this long (or a tenth of its lifetime, if less) before it expires. */
const EXPIRY_MARGIN_MS = 60_000;
/** Refreshed ahead in its last five minutes, or past half its lifetime, whichever is later. */
const REFRESH_WINDOW_MS = 5 * 60_000;
/** A forced refresh that did not help (the downstream still answered 401) is not repeated for this long. */
const FUTILE_REFRESH_WINDOW_MS = 5 * 60_000;
/** Room in the private cache: a few tokens. */
const PRIVATE_CACHE_BYTES = 1024 * 1024;

/**
 * App tokens (client credentials) in front of `grant`: one per scope set for every user of the
 * instance (and of the fleet, through L2), single-flighted by the cache, refreshed ahead.
 */
export function createAppTokens(grant: ClientCredentialsGrant, options: AppTokensOptions): AppTokens {
  const now = options.now ?? Date.now;
  const cache = options.cache ?? createTieredCache<CachedToken>({ l1MaxBytes: PRIVATE_CACHE_BYTES, keyPrefix: '', logger: options.logger, now });
  const futile = new Map<string, number>();
  const keyOf = (scopes: string[]) => `${KEY_PREFIX}${options.clientId}:${normaliseScopes(scopes)}`;

  function toEntry(token: ExchangedToken): CacheEntry<CachedToken> {
    const issuedAt = now();
    const lifetime = token.expiresOn - issuedAt;
    const expiresAt = token.expiresOn - Math.min(EXPIRY_MARGIN_MS, lifetime / 10);
    const refreshAt = Math.max(token.refreshOn ?? token.expiresOn - REFRESH_WINDOW_MS, issuedAt + lifetime / 2);
    return { value: { accessToken: token.accessToken, expiresOn: token.expiresOn }, expiresAt, refreshAt: Math.min(refreshAt, expiresAt) };
  }

  const acquire: AcquireAppToken = async (scopes, acquireOptions = {}) => {
    const report = (use: TokenUse) => {
      options.onTokenUse?.(use);
      recordTokenUse(acquireOptions.record, 'app', use);
    };
    let requested = false;
    const create = async () => {
      requested = true;
      const token = options.tracing ? await options.tracing.span('app token request', () => grant(scopes)) : await grant(scopes);
      return toEntry(token);
    };
    try {
      const { entry, source } = await cache.getOrCreate(keyOf(scopes), create, { forceRefresh: acquireOptions.forceRefresh === true });
      report({ cache: source === 'created' ? 'exchange' : source });
      return { accessToken: entry.value.accessToken, expiresOn: entry.value.expiresOn, source };
    } catch (error) {
      report({ cache: requested ? 'exchange' : 'joined' });
      throw error;
    }
  };

  function refreshIsFutile(key: string): boolean {
    const markedAt = futile.get(key);
    if (markedAt === undefined) return false;
    if (now() - markedAt < FUTILE_REFRESH_WINDOW_MS) return true;
    futile.delete(key);
    return false;
  }

  return {
    acquire,
    provider: {
      async acquire(_caller, scopes, acquireOptions = {}) {
        // A claims challenge on an app token: a fresh token is all the client-credentials grant can offer.
        const wantsFresh = acquireOptions.forceRefresh === true || acquireOptions.claims !== undefined;
        const { accessToken, source } = await acquire(scopes, {
          forceRefresh: wantsFresh && !refreshIsFutile(keyOf(scopes)),
          ...(acquireOptions.record ? { record: acquireOptions.record } : {}),
        });
        return { accessToken, source };
      },
      invalidate: (_caller, scopes) => cache.invalidate(keyOf(scopes)),
      refreshDidNotHelp(_caller, scopes) {
        futile.set(keyOf(scopes), now());
      },
    },
    close: () => (options.cache ? Promise.resolve() : cache.close()),
  };
}

/**
 * `downstream_token_acquisitions_total{token, cache}`: every token a downstream call was given,
 * by kind (`user`: OBO for the caller, `app`: the API's own) and how it was served.
 */
export function createTokenUseMetric(registry: Registry): (token: 'user' | 'app', use: TokenUse) => void {
  const name = 'downstream_token_acquisitions_total';
  if (registry.getSingleMetric(name)) throw new Error(`this registry already holds ${name}: give each app its own registry`);
  const counter = new Counter({
    name,
    help: 'Tokens acquired for downstream calls, by kind (user: on behalf of the caller, app: the API itself) and how they were served',
    labelNames: ['token', 'cache'] as const,
    registers: [registry],
  });
  // One child per (token, cache): eight at most, made once instead of a label hash per call.
  const children = new Map<string, Counter.Internal>();
  return (token, use) => {
    const key = `${token} ${use.cache}`;
    let child = children.get(key);
    if (!child) children.set(key, (child = counter.labels({ token, cache: use.cache })));
    child.inc();
  };
}
