import type { EnvReader } from './env-reader.js';
import { shown } from './shown.js';

const MIB = 1024 * 1024;

interface HttpConfig {
  /** Exact origins (`https://app.example.com`) browsers may call from; empty = no CORS. */
  corsAllowedOrigins: string[];
  requestBodyMaxBytes: number;
  /** Proxies in front of us whose `X-Forwarded-For` entries are trusted; 0 = the socket's address. */
  trustProxyHops: number;
}

/** Requests per minute; 0 = no limit. */
interface RateLimitConfig {
  perUser: number;
  perIp: number;
}

/** OTEL_TRACES_SAMPLER values we support (the standard ones that need no remote service). */
const TRACE_SAMPLERS = [
  'always_on',
  'always_off',
  'traceidratio',
  'parentbased_always_on',
  'parentbased_always_off',
  'parentbased_traceidratio',
] as const;

export interface TraceSamplerConfig {
  name: (typeof TRACE_SAMPLERS)[number];
  /** OTEL_TRACES_SAMPLER_ARG: the share of traces kept by the `…traceidratio` samplers. */
  ratio: number;
}

/**
 * Our own ratio decides, whatever a caller's `traceparent` says: a parent-based sampler would let
 * every caller choose to have its requests exported. The caller's flag counts only under a
 * `parentbased_*` sampler, chosen explicitly.
 */
export const DEFAULT_TRACE_SAMPLER: TraceSamplerConfig = { name: 'traceidratio', ratio: 0.1 };

interface ObservabilityConfig {
  /** LOG_USER_IDS=on: the caller's raw `oid` in logs; off: a pseudonymous reference only. */
  logUserIds: boolean;
  /** When set, GET /metrics wants `Authorization: Bearer <it>`. */
  metricsToken?: string;
  /** OTLP/HTTP base URL (traces go to `<it>/v1/traces`); tracing is off without it. */
  otlpEndpoint?: string;
  serviceName: string;
  sampler: TraceSamplerConfig;
}

export interface OperationsConfig {
  http: HttpConfig;
  rateLimit: RateLimitConfig;
  observability: ObservabilityConfig;
  /** On SIGTERM, how long the server keeps serving with /readyz at 503, so load balancers take it out first. */
  shutdownDrainMs: number;
  /** On SIGTERM, how long in-flight requests may take before the process exits anyway. */
  shutdownTimeoutMs: number;
}

/** What running in production needs: HTTP hardening, rate limits, observability, shutdown. */
export function readOperationsConfig(read: EnvReader): OperationsConfig {
  const corsAllowedOrigins = read.list('CORS_ALLOWED_ORIGINS') ?? [];
  for (const origin of corsAllowedOrigins) {
    const parsed = URL.canParse(origin) ? new URL(origin) : undefined;
    if (!parsed || !['https:', 'http:'].includes(parsed.protocol) || parsed.origin !== origin) {
      read.problem('CORS_ALLOWED_ORIGINS', `expected exact origins like https://app.example.com (no path, no wildcard), got "${shown(origin)}"`);
    }
  }
  const metricsToken = read.optional('METRICS_TOKEN');
  // A token is a secret: say what is wrong with it, never what it is.
  if (metricsToken !== undefined && metricsToken.length < 16) read.problem('METRICS_TOKEN', 'expected at least 16 characters');
  // Off unless asked for: a limit the operator did not choose would cap a whole office behind one
  // address (or every caller behind a proxy without TRUST_PROXY_HOPS) without anyone noticing.
  const perUser = read.integer('RATE_LIMIT_PER_MINUTE', 0, 0, 1_000_000);
  const otlpEndpoint = read.optionalUrl('OTEL_EXPORTER_OTLP_ENDPOINT', ['https:', 'http:']);
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
      sampler: {
        name: read.oneOf('OTEL_TRACES_SAMPLER', DEFAULT_TRACE_SAMPLER.name, TRACE_SAMPLERS),
        // Read for every sampler, so a bad value is reported even where it would not count.
        ratio: read.ratio('OTEL_TRACES_SAMPLER_ARG', DEFAULT_TRACE_SAMPLER.ratio),
      },
    },
    // 5 s: two failed readiness probes at a 2 s period, plus the time to act on them.
    shutdownDrainMs: read.integer('SHUTDOWN_DRAIN_MS', 5_000, 0, 600_000),
    shutdownTimeoutMs: read.integer('SHUTDOWN_TIMEOUT_MS', 10_000, 0, 600_000),
  };
}
