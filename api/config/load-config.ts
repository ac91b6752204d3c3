import { X509Certificate, createPrivateKey } from 'node:crypto';
import { accessSync, constants, readFileSync } from 'node:fs';
import { parseEnv } from 'node:util';
import { parseEncryptionKeys, type EncryptionKey } from '../../cache/index.js';
import { PROXY_METHODS, parseDownstreamApis } from './downstream-apis.js';
import { pathPatternProblem } from '../downstream/path-allow-list.js';

/**
 * The whole service configuration: one typed object, produced once at start-up from the
 * environment. Nothing else in the service reads `process.env`.
 */
export interface Config {
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
  /** Minimum time between JWKS refetches triggered by unknown `kid`s. */
  jwksCooldownMs: number;
  /** Timeout of one call to the token endpoint (msal-node's own fetch has none). */
  exchangeTimeoutMs: number;
  /** Microsoft Graph: also `downstreams.graph`. */
  graph: DownstreamConfig;
  /** Every proxied downstream by name (`/api/downstream/<name>/…`): Graph plus DOWNSTREAM_APIS. */
  downstreams: Record<string, DownstreamConfig>;
  /** Origin (and path prefix) callers reach us at, for rewritten `@odata.nextLink`s; default: the request's. */
  publicBaseUrl?: string;
  cache: CacheConfig;
  http: HttpConfig;
  rateLimit: RateLimitConfig;
  observability: ObservabilityConfig;
  /** On SIGTERM, how long in-flight requests may take before the process exits anyway. */
  shutdownTimeoutMs: number;
}

export interface HttpConfig {
  /** Exact origins (`https://app.example.com`) browsers may call from; empty = no CORS. */
  corsAllowedOrigins: string[];
  requestBodyMaxBytes: number;
  /** Proxies in front of us whose `X-Forwarded-For` entries are trusted; 0 = the socket's address. */
  trustProxyHops: number;
}

/** Requests per minute; 0 = no limit. */
export interface RateLimitConfig {
  perUser: number;
  perIp: number;
}

export interface ObservabilityConfig {
  /** LOG_USER_IDS=on: the caller's raw `oid` in logs; off: a pseudonymous reference only. */
  logUserIds: boolean;
  /** When set, GET /metrics wants `Authorization: Bearer <it>`. */
  metricsToken?: string;
  /** OTLP/HTTP base URL (traces go to `<it>/v1/traces`); tracing is off without it. */
  otlpEndpoint?: string;
  serviceName: string;
}

export interface TenantConfig {
  /** As configured: a GUID, a domain, `organizations` or `common`. */
  id: string;
  /** `organizations` or `common`: the issuer is a `{tenantid}` template checked against `tid`. */
  multiTenant: boolean;
}

export type ClientCredential =
  | { kind: 'secret'; secret: string }
  | { kind: 'certificate'; privateKeyPem: string; certificatePem: string; thumbprintSha256: string }
  | { kind: 'federated'; tokenFile: string };

export interface DownstreamConfig {
  name: string;
  baseUrl: string;
  scopes: string[];
  /** Time to the response headers, and the longest pause inside a body. */
  timeoutMs: number;
  /** Path patterns (see api/path-allow-list.ts); anything else is refused before any exchange. */
  allowedPaths: string[];
  /** Upper-case methods the proxy forwards (a JSON batch is a POST of its own). */
  allowedMethods: string[];
  /** Whether `POST /<version>/$batch` is a Graph JSON batch (each inner request checked). */
  batch: boolean;
  /** Retries of an idempotent request answered 429/503 with `Retry-After`. */
  maxRetries: number;
  /** Longest total wait for those retries; a longer `Retry-After` goes to the caller instead. */
  maxRetryWaitMs: number;
}

export interface CacheConfig {
  l1MaxBytes: number;
  keyPrefix: string;
  redis?: { url: string } | RedisClusterConfig;
  l2TimeoutMs: number;
  /** `off` only when CACHE_ENCRYPTION=off was set explicitly. */
  encryption: EncryptionKey[] | 'off';
}

/** One ACL user, password and TLS setting apply to every node of a cluster. */
export interface RedisClusterConfig {
  /** Seed nodes as `host:port` (IPv6 as `[addr]:port`). */
  clusterNodes: string[];
  username?: string;
  password?: string;
  tls?: boolean;
}

export type Environment = Readonly<Record<string, string | undefined>>;

/** Thrown when the environment does not describe a runnable service. Lists every problem. */
export class ConfigError extends Error {
  readonly code = 'ERR_CONFIG';
  constructor(readonly problems: string[]) {
    super(`Invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const TENANT = /^(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+|organizations|common)$/i;
const MIB = 1024 * 1024;

/**
 * Reads `.env` (when present) under the real environment: a variable set in the
 * environment wins over the file.
 */
export function environmentWithDotenv(env: Environment, dotenvPath = '.env'): Environment {
  let text: string;
  try {
    text = readFileSync(dotenvPath, 'utf8');
  } catch {
    return env;
  }
  return { ...parseEnv(text), ...env };
}

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
    if (!GUID.test(tenant)) read.problem('API_ALLOWED_TENANTS', `expected tenant GUIDs, got "${tenant}"`);
  }
  if (requiredScopes.length === 0) read.problem('API_REQUIRED_SCOPES', 'expected at least one scope');
  if (audiences.length === 0) read.problem('API_AUDIENCES', 'expected at least one audience');

  const graph = readGraphConfig(read);
  const publicBaseUrl = read.optional('PUBLIC_BASE_URL') === undefined ? undefined : read.url('PUBLIC_BASE_URL', '', ['https:', 'http:']);

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
    jwksCooldownMs: read.integer('JWKS_COOLDOWN_MS', 30_000, 0, 3_600_000),
    exchangeTimeoutMs: read.integer('EXCHANGE_TIMEOUT_MS', 10_000, 100, 120_000),
    graph,
    downstreams: readDownstreams(read, graph),
    ...(publicBaseUrl ? { publicBaseUrl } : {}),
    cache: readCacheConfig(read),
    ...readOperationsConfig(read),
  };
  read.finish();
  return config;
}

const DEFAULT_GRAPH_PATHS = ['/v1.0/me', '/v1.0/me/**', '/beta/me/**'];

function readGraphConfig(read: EnvReader): DownstreamConfig {
  const allowedPaths = read.list('GRAPH_ALLOWED_PATHS') ?? DEFAULT_GRAPH_PATHS;
  for (const pattern of allowedPaths) {
    const problem = pathPatternProblem(pattern);
    if (problem) read.problem('GRAPH_ALLOWED_PATHS', problem);
  }
  const allowedMethods = (read.list('GRAPH_ALLOWED_METHODS') ?? ['GET']).map((method) => method.toUpperCase());
  for (const method of allowedMethods) {
    if (!(PROXY_METHODS as readonly string[]).includes(method)) {
      read.problem('GRAPH_ALLOWED_METHODS', `expected methods from ${PROXY_METHODS.join(', ')}, got "${method}"`);
    }
  }
  return {
    name: 'graph',
    baseUrl: read.url('GRAPH_BASE_URL', 'https://graph.microsoft.com', ['https:', 'http:']),
    scopes: read.list('GRAPH_SCOPES', /[\s,]+/) ?? ['https://graph.microsoft.com/.default'],
    timeoutMs: read.integer('GRAPH_TIMEOUT_MS', 30_000, 1, 600_000),
    allowedPaths,
    allowedMethods,
    batch: true,
    maxRetries: read.integer('GRAPH_MAX_RETRIES', 2, 0, 10),
    maxRetryWaitMs: read.integer('GRAPH_MAX_RETRY_WAIT_MS', 10_000, 0, 300_000),
  };
}

/** DOWNSTREAM_APIS: inline JSON, or the path of a JSON file. Graph is always the entry `graph`. */
function readDownstreams(read: EnvReader, graph: DownstreamConfig): Record<string, DownstreamConfig> {
  const name = 'DOWNSTREAM_APIS';
  const value = read.optional(name);
  if (value === undefined) return { graph };
  let text = value;
  if (!/^[[{]/.test(value)) {
    try {
      text = readFileSync(value, 'utf8');
    } catch {
      read.problem(name, `expected inline JSON (starting with {) or a readable file; cannot read the file "${value}"`);
      return { graph };
    }
  }
  const others = parseDownstreamApis(text, graph, (message) => read.problem(name, message));
  return { graph, ...Object.fromEntries(others.map((downstream) => [downstream.name, downstream])) };
}

function readCredential(read: EnvReader): ClientCredential | undefined {
  const secret = read.optional('AZURE_CLIENT_SECRET');
  const certificatePath = read.optional('AZURE_CLIENT_CERTIFICATE_PATH');
  const tokenFile = read.optional('AZURE_FEDERATED_TOKEN_FILE');
  const given = [secret, certificatePath, tokenFile].filter((v) => v !== undefined).length;
  const names = 'AZURE_CLIENT_SECRET, AZURE_CLIENT_CERTIFICATE_PATH or AZURE_FEDERATED_TOKEN_FILE';
  if (given !== 1) {
    read.problem('AZURE_CLIENT_SECRET', `exactly one credential is required: set one of ${names} (${given} set)`);
    return undefined;
  }
  if (secret !== undefined) return { kind: 'secret', secret };
  if (tokenFile !== undefined) {
    try {
      accessSync(tokenFile, constants.R_OK);
    } catch {
      read.problem('AZURE_FEDERATED_TOKEN_FILE', `cannot read the file "${tokenFile}"`);
    }
    return { kind: 'federated', tokenFile };
  }
  return readCertificate(read, certificatePath ?? '');
}

function readCertificate(read: EnvReader, path: string): ClientCredential | undefined {
  const name = 'AZURE_CLIENT_CERTIFICATE_PATH';
  let pem: string;
  try {
    pem = readFileSync(path, 'utf8');
  } catch {
    read.problem(name, `cannot read the file "${path}"`);
    return undefined;
  }
  const certificatePem = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/)?.[0];
  const keyPem = pem.match(/-----BEGIN (?:RSA |EC |ENCRYPTED )?PRIVATE KEY-----[\s\S]+?-----END (?:RSA |EC |ENCRYPTED )?PRIVATE KEY-----/)?.[0];
  if (!certificatePem || !keyPem) {
    read.problem(name, 'expected a PEM file holding both the private key and the certificate');
    return undefined;
  }
  try {
    const password = read.optional('AZURE_CLIENT_CERTIFICATE_PASSWORD');
    const privateKey = createPrivateKey(password === undefined ? keyPem : { key: keyPem, passphrase: password });
    const certificate = new X509Certificate(certificatePem);
    if (!certificate.checkPrivateKey(privateKey)) {
      read.problem(name, 'the private key does not belong to the certificate');
      return undefined;
    }
    return {
      kind: 'certificate',
      // msal-node wants an unencrypted PKCS#8 PEM; with a SHA-256 thumbprint it signs PS256 + x5t#S256.
      privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
      certificatePem,
      thumbprintSha256: certificate.fingerprint256.replaceAll(':', ''),
    };
  } catch {
    read.problem(name, 'the PEM file does not parse (or AZURE_CLIENT_CERTIFICATE_PASSWORD is wrong)');
    return undefined;
  }
}

function readCacheConfig(read: EnvReader): CacheConfig {
  const url = read.optional('REDIS_URL');
  const clusterNodes = read.list('REDIS_CLUSTER_NODES');
  let redis: CacheConfig['redis'];
  if (url !== undefined && clusterNodes !== undefined) {
    read.problem('REDIS_CLUSTER_NODES', 'set either REDIS_URL or REDIS_CLUSTER_NODES, not both');
  } else if (url !== undefined) {
    const parsed = URL.canParse(url) ? new URL(url) : undefined;
    if (!parsed || !['redis:', 'rediss:'].includes(parsed.protocol) || !parsed.hostname) {
      // The URL may carry a password: never echo it.
      read.problem('REDIS_URL', 'expected redis://[user:password@]host[:port][/db] or rediss://…');
    }
    redis = { url };
  } else if (clusterNodes !== undefined) {
    redis = readClusterNodes(read, clusterNodes);
  }

  const encryptionSwitch = read.oneOf('CACHE_ENCRYPTION', 'on', ['on', 'off']);
  const keysText = read.optional('CACHE_ENCRYPTION_KEYS');
  let encryption: EncryptionKey[] | 'off' = [];
  if (keysText !== undefined) {
    try {
      encryption = parseEncryptionKeys(keysText);
    } catch (error) {
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
    encryption,
  };
}

type ClusterAccess = Omit<RedisClusterConfig, 'clusterNodes'>;

/**
 * REDIS_CLUSTER_NODES entries are `host:port`, `[ipv6]:port`, or `redis[s]://[user:password@]host[:port]`
 * for an ACL user, a password and TLS. Those apply to the whole cluster: URL entries must agree,
 * and plain entries share them. Problems name entries by position: an entry may hold a password.
 */
function readClusterNodes(read: EnvReader, entries: string[]): RedisClusterConfig {
  const nodes: string[] = [];
  let access: ClusterAccess | undefined;
  entries.forEach((entry, index) => {
    const parsed = parseClusterNode(entry);
    if (!parsed) {
      read.problem('REDIS_CLUSTER_NODES', `entry ${index + 1}: expected host:port, [ipv6]:port or redis[s]://[user:password@]host[:port]`);
      return;
    }
    nodes.push(parsed.node);
    if (!parsed.access) return;
    if (!access) access = parsed.access;
    else if (!sameAccess(access, parsed.access)) {
      read.problem('REDIS_CLUSTER_NODES', `entry ${index + 1}: every redis:// or rediss:// entry must give the same scheme, user and password`);
    }
  });
  return { clusterNodes: nodes, ...access };
}

function parseClusterNode(entry: string): { node: string; access?: ClusterAccess } | undefined {
  const plain = /^(\[[0-9a-f:.]+\]|[^\s:/@[\]]+):(\d{1,5})$/i.exec(entry);
  if (plain) return validPort(plain[2]) ? { node: entry } : undefined;
  const url = URL.canParse(entry) ? new URL(entry) : undefined;
  if (!url || !['redis:', 'rediss:'].includes(url.protocol) || !url.hostname || url.search || url.hash) return undefined;
  if (url.pathname !== '' && url.pathname !== '/') return undefined; // a cluster has database 0 only
  const port = url.port || '6379';
  if (!validPort(port)) return undefined;
  const username = decodeUrlPart(url.username);
  const password = decodeUrlPart(url.password);
  if (username === undefined || password === undefined) return undefined;
  const access: ClusterAccess = {
    ...(username ? { username } : {}),
    ...(password ? { password } : {}),
    ...(url.protocol === 'rediss:' ? { tls: true } : {}),
  };
  return { node: `${url.hostname}:${port}`, access };
}

function decodeUrlPart(text: string): string | undefined {
  try {
    return decodeURIComponent(text);
  } catch {
    return undefined;
  }
}

function validPort(text: string | undefined): boolean {
  const port = Number(text);
  return Number.isInteger(port) && port > 0 && port < 65_536;
}

function sameAccess(a: ClusterAccess, b: ClusterAccess): boolean {
  return a.username === b.username && a.password === b.password && a.tls === b.tls;
}

/** What running in production needs: HTTP hardening, rate limits, observability, shutdown. */
function readOperationsConfig(read: EnvReader): Pick<Config, 'http' | 'rateLimit' | 'observability' | 'shutdownTimeoutMs'> {
  const corsAllowedOrigins = read.list('CORS_ALLOWED_ORIGINS') ?? [];
  for (const origin of corsAllowedOrigins) {
    const parsed = URL.canParse(origin) ? new URL(origin) : undefined;
    if (!parsed || !['https:', 'http:'].includes(parsed.protocol) || parsed.origin !== origin) {
      read.problem('CORS_ALLOWED_ORIGINS', `expected exact origins like https://app.example.com (no path, no wildcard), got "${origin}"`);
    }
  }
  const metricsToken = read.optional('METRICS_TOKEN');
  // A token is a secret: say what is wrong with it, never what it is.
  if (metricsToken !== undefined && metricsToken.length < 16) read.problem('METRICS_TOKEN', 'expected at least 16 characters');
  // Off unless asked for: a limit the operator did not choose would cap a whole office behind one
  // address (or every caller behind a proxy without TRUST_PROXY_HOPS) without anyone noticing.
  const perUser = read.integer('RATE_LIMIT_PER_MINUTE', 0, 0, 1_000_000);
  const otlpEndpoint =
    read.optional('OTEL_EXPORTER_OTLP_ENDPOINT') === undefined ? undefined : read.url('OTEL_EXPORTER_OTLP_ENDPOINT', '', ['https:', 'http:']);
  return {
    http: {
      corsAllowedOrigins,
      requestBodyMaxBytes: read.integer('REQUEST_BODY_MAX_BYTES', MIB, 1, 100 * MIB),
      trustProxyHops: read.integer('TRUST_PROXY_HOPS', 0, 0, 10),
    },
    rateLimit: {
      perUser,
      perIp: read.integer('RATE_LIMIT_IP_PER_MINUTE', perUser, 0, 1_000_000),
    },
    observability: {
      logUserIds: read.oneOf('LOG_USER_IDS', 'off', ['on', 'off']) === 'on',
      ...(metricsToken !== undefined ? { metricsToken } : {}),
      ...(otlpEndpoint ? { otlpEndpoint } : {}),
      serviceName: read.optional('OTEL_SERVICE_NAME') ?? 'obo-middle-tier',
    },
    shutdownTimeoutMs: read.integer('SHUTDOWN_TIMEOUT_MS', 10_000, 0, 600_000),
  };
}

/** Collects problems instead of stopping at the first, so one start-up names them all. */
class EnvReader {
  private readonly problems: string[] = [];
  constructor(private readonly env: Environment) {}

  problem(name: string, message: string): void {
    this.problems.push(`${name}: ${message}`);
  }

  optional(name: string): string | undefined {
    const value = this.env[name]?.trim();
    return value === undefined || value === '' ? undefined : value;
  }

  required(name: string, expected: string, pattern: RegExp): string {
    const value = this.optional(name);
    if (value === undefined) this.problem(name, `required: ${expected}`);
    else if (!pattern.test(value)) this.problem(name, `expected ${expected}, got "${value}"`);
    return value ?? '';
  }

  list(name: string, separator: RegExp = /\s*,\s*/): string[] | undefined {
    const value = this.optional(name);
    return value === undefined ? undefined : value.split(separator).filter((item) => item !== '');
  }

  integer(name: string, fallback: number, min: number, max: number): number {
    const value = this.optional(name);
    if (value === undefined) return fallback;
    const parsed = /^\d+$/.test(value) ? Number(value) : Number.NaN;
    if (!Number.isSafeInteger(parsed) || parsed < min || parsed > max) {
      this.problem(name, `expected a whole number from ${min} to ${max}, got "${value}"`);
      return fallback;
    }
    return parsed;
  }

  oneOf<T extends string>(name: string, fallback: T, allowed: readonly T[]): T {
    const value = this.optional(name)?.toLowerCase();
    if (value === undefined) return fallback;
    if (!(allowed as readonly string[]).includes(value)) {
      this.problem(name, `expected one of ${allowed.join(', ')}, got "${value}"`);
      return fallback;
    }
    return value as T;
  }

  url(name: string, fallback: string, protocols: string[]): string {
    const value = this.optional(name) ?? fallback;
    const parsed = URL.canParse(value) ? new URL(value) : undefined;
    if (!parsed || !protocols.includes(parsed.protocol) || parsed.search || parsed.hash || parsed.username) {
      this.problem(name, `expected an ${protocols.join(' or ')} URL with no query, got "${value}"`);
      return fallback;
    }
    return parsed.href.replace(/\/+$/, '');
  }

  finish(): void {
    if (this.problems.length > 0) throw new ConfigError(this.problems);
  }
}
