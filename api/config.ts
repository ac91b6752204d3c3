import { X509Certificate, createPrivateKey } from 'node:crypto';
import { accessSync, constants, readFileSync } from 'node:fs';
import { parseEnv } from 'node:util';
import { parseEncryptionKeys, type EncryptionKey } from '../cache/index.js';

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
  graph: DownstreamConfig;
  cache: CacheConfig;
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
  baseUrl: string;
  scopes: string[];
  timeoutMs: number;
}

export interface CacheConfig {
  l1MaxBytes: number;
  keyPrefix: string;
  redis?: { url: string } | { clusterNodes: string[] };
  l2TimeoutMs: number;
  /** `off` only when CACHE_ENCRYPTION=off was set explicitly. */
  encryption: EncryptionKey[] | 'off';
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

  const graph: DownstreamConfig = {
    baseUrl: read.url('GRAPH_BASE_URL', 'https://graph.microsoft.com', ['https:', 'http:']),
    scopes: read.list('GRAPH_SCOPES', /[\s,]+/) ?? ['https://graph.microsoft.com/.default'],
    timeoutMs: read.integer('GRAPH_TIMEOUT_MS', 30_000, 1, 600_000),
  };

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
    cache: readCacheConfig(read),
  };
  read.finish();
  return config;
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
    for (const node of clusterNodes) {
      if (!/^[^\s:]+:\d{1,5}$/.test(node)) read.problem('REDIS_CLUSTER_NODES', `expected host:port entries, got "${node}"`);
    }
    redis = { clusterNodes };
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
