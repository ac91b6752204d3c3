import { readCacheConfig, type CacheConfig } from './cache-config.js';
import { readCredential, type ClientCredential } from './credential.js';
import type { DownstreamConfig } from './downstream-schema.js';
import { readDownstreams } from './downstreams.js';
import { EnvReader, type Environment } from './env-reader.js';
import { shown } from './shown.js';
import { readOperationsConfig, type OperationsConfig } from './operations.js';

export { ConfigError, type Environment } from './env-reader.js';
export { environmentWithDotenv } from './dotenv.js';
export type { ClientCredential } from './credential.js';
export type { DownstreamConfig } from './downstream-schema.js';
export { DEFAULT_TRACE_SAMPLER, type TraceSamplerConfig } from './operations.js';

/**
 * The whole service configuration: one typed object, produced once at start-up from the
 * environment. Nothing else in the service reads `process.env`.
 */
export interface Config extends OperationsConfig {
  port: number;
  logLevel: string;
  tenant: TenantConfig;
  clientId: string;
  credential: ClientCredential;
  /** `AZURE_AUTHORITY_HOST` without a trailing slash; both validation and the exchange follow it. */
  authorityHost: string;
  audiences: string[];
  requiredScopes: string[];
  /** Empty = every tenant the issuer check lets through. */
  allowedTenants: string[];
  /** Clock skew for `exp`/`nbf`/`iat`, seconds. */
  clockSkewSeconds: number;
  /** Minimum time between JWKS refetches triggered by unknown `kid`s (at least 1 s). */
  jwksCooldownMs: number;
  /** Byte budget of the verified-token cache (SHA-256 of a token → its validated caller); 0 = off. */
  tokenValidationCacheMaxBytes: number;
  /** Timeout of one call to the token endpoint (msal-node's own fetch has none). */
  exchangeTimeoutMs: number;
  /** Microsoft Graph: also `downstreams.graph`. */
  graph: DownstreamConfig;
  /** Every proxied downstream by name (`/api/downstream/<name>/…`): Graph plus DOWNSTREAM_APIS. */
  downstreams: Record<string, DownstreamConfig>;
  /** Origin (and path prefix) callers reach us at, for rewritten `@odata.nextLink`s; default: the request's. */
  publicBaseUrl?: string;
  cache: CacheConfig;
}

interface TenantConfig {
  /** As configured: a GUID, a domain, `organizations` or `common`. */
  id: string;
  /** `organizations` or `common`: the issuer is a `{tenantid}` template checked against `tid`. */
  multiTenant: boolean;
}

const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const TENANT =
  /^(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+|organizations|common)$/i;
const MIB = 1024 * 1024;

/** Builds the configuration, or throws one ConfigError naming every bad variable. */
export function loadConfig(env: Environment): Config {
  const read = new EnvReader(env);

  const tenantId = read.required('AZURE_TENANT_ID', 'a tenant GUID, a domain, "organizations" or "common"', TENANT);
  const clientId = read.required('AZURE_CLIENT_ID', "the API's application (client) id", /^\S+$/);
  const credential = readCredential(read);
  const authorityHost = read.url('AZURE_AUTHORITY_HOST', 'https://login.microsoftonline.com', ['https:']);
  const audiences = read.list('API_AUDIENCES') ?? (clientId ? [clientId, `api://${clientId}`] : []);
  const requiredScopes = read.list('API_REQUIRED_SCOPES') ?? ['access_as_user'];
  const allowedTenants = read.list('API_ALLOWED_TENANTS') ?? [];
  for (const tenant of allowedTenants) {
    if (!GUID.test(tenant)) read.problem('API_ALLOWED_TENANTS', `expected tenant GUIDs, got "${shown(tenant)}"`);
  }
  if (requiredScopes.length === 0) read.problem('API_REQUIRED_SCOPES', 'expected at least one scope');
  if (audiences.length === 0) read.problem('API_AUDIENCES', 'expected at least one audience');
  const publicBaseUrl = read.optionalUrl('PUBLIC_BASE_URL', ['https:', 'http:']);

  const config: Config = {
    port: read.integer('PORT', 3000, 0, 65_535),
    logLevel: read.oneOf('LOG_LEVEL', 'info', ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']),
    tenant: { id: tenantId, multiTenant: /^(organizations|common)$/i.test(tenantId) },
    clientId,
    credential: credential ?? { kind: 'secret', secret: '' },
    authorityHost,
    audiences,
    requiredScopes,
    allowedTenants: allowedTenants.map((t) => t.toLowerCase()),
    clockSkewSeconds: read.integer('CLOCK_SKEW_SECONDS', 300, 0, 300),
    jwksCooldownMs: read.integer('JWKS_COOLDOWN_MS', 30_000, 1_000, 3_600_000, 'below 1 s, every token naming an unknown kid would be a JWKS fetch'),
    tokenValidationCacheMaxBytes: read.integer('TOKEN_VALIDATION_CACHE_MAX_BYTES', 48 * MIB, 0, 1024 * MIB),
    exchangeTimeoutMs: read.integer('EXCHANGE_TIMEOUT_MS', 10_000, 100, 120_000),
    ...readDownstreams(read),
    ...(publicBaseUrl ? { publicBaseUrl } : {}),
    cache: readCacheConfig(read),
    ...readOperationsConfig(read),
  };
  read.finish();
  return config;
}
