import { ServiceUnavailableError } from '../../api/errors.js';

/** What token validation needs from the authority's OpenID Connect metadata. */
export interface IssuerMetadata {
  /** v2.0 issuer; a `{tenantid}` template for `organizations`/`common`. */
  v2Issuer: string;
  /** v1.0 issuer (`https://sts.windows.net/{tid}/`); absent when the v1 document is unavailable. */
  v1Issuer?: string;
  jwksUri: string;
}

export interface OpenIdMetadataSource {
  /** The current metadata; loads it on first use. Throws ServiceUnavailableError while it cannot. */
  get(): Promise<IssuerMetadata>;
  /** True once a load has succeeded (for readiness). */
  loaded(): boolean;
}

export interface OpenIdMetadataOptions {
  authorityHost: string;
  tenant: string;
  /** Per request. Default 5 s. */
  timeoutMs?: number;
  /** Reload in the background after this long. Default 24 h, as Microsoft suggests. */
  refreshIntervalMs?: number;
  /** After a failed first load, requests fail fast for this long before trying again. Default 5 s. */
  retryDelayMs?: number;
  now?: () => number;
}

/**
 * Loads `{host}/{tenant}/v2.0/.well-known/openid-configuration` (required) and the v1 document
 * (optional: only v1 tokens need it). One load at a time; stale metadata keeps serving while a
 * refresh runs, so an authority outage never rejects tokens that were verifiable a moment ago.
 */
export function createOpenIdMetadataSource(options: OpenIdMetadataOptions): OpenIdMetadataSource {
  const now = options.now ?? Date.now;
  const timeoutMs = options.timeoutMs ?? 5_000;
  const refreshIntervalMs = options.refreshIntervalMs ?? 24 * 3_600_000;
  const retryDelayMs = options.retryDelayMs ?? 5_000;
  const base = `${options.authorityHost}/${encodeURIComponent(options.tenant)}`;

  let current: IssuerMetadata | undefined;
  let loadedAt = 0;
  let failedAt = Number.NEGATIVE_INFINITY;
  let pending: Promise<IssuerMetadata> | undefined;

  async function load(): Promise<IssuerMetadata> {
    const [v2, v1] = await Promise.all([
      fetchJson(`${base}/v2.0/.well-known/openid-configuration`, timeoutMs),
      fetchJson(`${base}/.well-known/openid-configuration`, timeoutMs).catch(() => undefined),
    ]);
    const v2Issuer = httpsUrl(v2['issuer']);
    const jwksUri = httpsUrl(v2['jwks_uri']);
    if (!v2Issuer || !jwksUri) throw new Error('metadata without an https issuer and jwks_uri');
    const v1Issuer = v1 ? httpsUrl(v1['issuer']) : undefined;
    return { v2Issuer, jwksUri, ...(v1Issuer ? { v1Issuer } : {}) };
  }

  function reload(): Promise<IssuerMetadata> {
    pending ??= load()
      .then((metadata) => {
        current = metadata;
        loadedAt = now();
        return metadata;
      })
      .catch((error: unknown) => {
        failedAt = now();
        throw error;
      })
      .finally(() => {
        pending = undefined;
      });
    return pending;
  }

  return {
    async get() {
      if (current) {
        if (now() - loadedAt > refreshIntervalMs && now() - failedAt > retryDelayMs) reload().catch(() => {});
        return current;
      }
      const waitMs = failedAt + retryDelayMs - now();
      if (waitMs > 0 && !pending) throw unavailable(waitMs / 1000);
      try {
        return await reload();
      } catch {
        throw unavailable(retryDelayMs / 1000);
      }
    },
    loaded: () => current !== undefined,
  };
}

function unavailable(retryAfterSeconds: number): ServiceUnavailableError {
  return new ServiceUnavailableError('The token issuer metadata is unavailable; try again shortly.', retryAfterSeconds);
}

async function fetchJson(url: string, timeoutMs: number): Promise<Record<string, unknown>> {
  const response = await fetch(url, { redirect: 'manual', signal: AbortSignal.timeout(timeoutMs) });
  if (response.status !== 200) throw new Error(`${url} answered ${response.status}`);
  const body: unknown = await response.json();
  if (typeof body !== 'object' || body === null) throw new Error(`${url} is not a JSON object`);
  return body as Record<string, unknown>;
}

function httpsUrl(value: unknown): string | undefined {
  return typeof value === 'string' && value.startsWith('https://') ? value : undefined;
}
