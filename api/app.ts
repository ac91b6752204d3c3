import type { RequestListener } from 'node:http';
import Router from '@koa/router';
import Koa, { type Next } from 'koa';
import type { SpanExporter } from '@opentelemetry/sdk-trace-base';
import type { DestinationStream, Logger } from 'pino';
import { Registry, collectDefaultMetrics } from 'prom-client';
import { Agent } from 'undici';
import { createRedisStore, createTieredCache, type TieredCache } from '../cache/index.js';
import type { AppContext, AppContextExtension, AppMiddleware, AppState } from '../middleware/app-state.js';
import { createAccessTokenValidator } from '../middleware/bearer/validator.js';
import { authenticate } from '../middleware/authenticate.js';
import { requestBody } from '../middleware/request-body.js';
import { cors } from '../middleware/cors.js';
import { errorHandler } from '../middleware/error-handler.js';
import { httpMetrics } from '../middleware/http-metrics.js';
import { createOpenIdMetadataSource } from '../middleware/bearer/openid-metadata.js';
import { clientAddressKey, rateLimit, userKey } from '../middleware/rate-limit.js';
import { requestContext } from '../middleware/request-context.js';
import { requestSpan } from '../middleware/request-span.js';
import { securityHeaders } from '../middleware/security-headers.js';
import { validHost } from '../middleware/valid-host.js';
import type { Config } from './config/load-config.js';
import { createDownstreamClient } from './downstream/client.js';
import { createDownstreamMetrics, observeDownstreams } from './downstream/observer.js';
import { createAppTokens, createTokenUseMetric } from './token/app-tokens.js';
import { createRedisEntraCredentials } from './token/redis-credentials.js';
import { createCredentialSource } from './token/credential-source.js';
import { createClientCredentialsGrant, createExchange } from './token/exchange.js';
import { createExchangeOutcomes } from './token/exchange-outcomes.js';
import { createLocalThrottleWindows, createSharedThrottleWindows, registerThrottleGauge } from './token/throttle-windows.js';
import { createLogger } from './observability/logger.js';
import { createRateLimiters } from './rate-limiters.js';
import { docsAssetRoute, docsPageRoute } from './routes/docs.js';
import { livenessRoute, readinessRoute } from './routes/health.js';
import { meRoute } from './routes/me.js';
import { metricsRoute } from './routes/metrics.js';
import { loadOpenApiDocument, openApiRoute } from './routes/openapi.js';
import { serviceDescriptionRoute } from './routes/service-description.js';
import { proxyRoute } from './routes/proxy.js';
import { PROXY_PREFIX } from './routes/proxy-prefix.js';
import { createTokenProvider, type CachedToken, type TokenProvider } from './token/token-provider.js';
import { createTracing } from './observability/tracing.js';

export interface AppDependencies {
  /** Where log lines go (default stdout). The redaction rules apply whatever the destination. */
  logDestination?: DestinationStream;
  registry?: Registry;
  /** Turns tracing on with this exporter (tests), whatever OTEL_EXPORTER_OTLP_ENDPOINT says. */
  traceExporter?: SpanExporter;
  now?: () => number;
  /** True once the process drains before stopping (main.ts, on SIGTERM): /readyz then answers 503. */
  draining?: () => boolean;
}

/** One assembled service. Build as many as you like: nothing is shared between them. */
export interface Service {
  app: Koa<AppState, AppContextExtension>;
  /** Add routes here (the benchmark does); `/api` routes are authenticated by `authenticate`. */
  router: Router<AppState, AppContextExtension>;
  authenticate: AppMiddleware;
  tokens: TokenProvider;
  logger: Logger;
  registry: Registry;
  callback(): RequestListener;
  /** Stops the cache, Redis connections, pools and the trace exporter. Does not close an HTTP server: the caller owns it. */
  close(): Promise<void>;
}

/** Runs `middleware` for requests whose path starts with `prefix`; the rest pass by. */
function underPath(prefix: string, middleware: (ctx: AppContext, next: Next) => Promise<void>): AppMiddleware {
  return (ctx, next): Promise<unknown> => (ctx.path.startsWith(prefix) ? middleware(ctx, next) : next());
}

/**
 * The whole service from a configuration object. Read top to bottom, it is the path every
 * request takes: request id and log line → trace span → HTTP metrics → security headers →
 * CORS → error mapping → request body → per-IP limit → (for /api) host check → authenticate →
 * per-user limit → route → token provider → cache → exchange → downstream. Every middleware and
 * route sees the same typed `ctx.state` (AppState, middleware/app-state.ts).
 */
export function createApp(config: Config, deps: AppDependencies = {}): Service {
  const now = deps.now ?? Date.now;
  const logger = createLogger(config.logLevel, deps.logDestination);
  const registry = deps.registry ?? new Registry();
  collectDefaultMetrics({ register: registry });
  const { otlpEndpoint, serviceName, sampler } = config.observability;
  const tracing = createTracing({
    serviceName,
    sampler,
    ...(deps.traceExporter ? { exporter: deps.traceExporter } : otlpEndpoint ? { otlpEndpoint } : {}),
  });
  // One pool for the token endpoint and the downstreams: keep-alive, bounded per origin. Calls
  // to a downstream are traced, timed and counted here, whatever route makes them.
  const downstreamOrigins = new Map(Object.values(config.downstreams).map((d) => [new URL(d.baseUrl).origin, d.name]));
  const dispatcher = new Agent({ connections: 128, keepAliveTimeout: 30_000, connect: { timeout: 5_000 } }).compose(
    observeDownstreams(downstreamOrigins, tracing, createDownstreamMetrics(registry)),
  );

  const metadata = createOpenIdMetadataSource({ authorityHost: config.authorityHost, tenant: config.tenant.id, now });
  const validate = createAccessTokenValidator({
    metadata,
    multiTenant: config.tenant.multiTenant,
    workAndSchoolOnly: config.tenant.id.toLowerCase() === 'organizations',
    audiences: config.audiences,
    requiredScopes: config.requiredScopes,
    allowedTenants: config.allowedTenants,
    clockSkewSeconds: config.clockSkewSeconds,
    jwksCooldownMs: config.jwksCooldownMs,
    // Every instance sharing the cache keys computes the same user references (per-user rate limits in Redis).
    ...(config.cache.encryption !== 'off' && config.cache.encryption[0] ? { userReferenceSecret: config.cache.encryption[0].key } : {}),
    cacheMaxBytes: config.tokenValidationCacheMaxBytes,
    registry,
    now,
  });
  // One credential source for every request to the token endpoint: it follows a rotated
  // certificate file and, during a rotation, which of the two configured credentials Entra takes.
  const credentials = createCredentialSource(config.credential, { logger, now });
  // The API's own client-credentials grant; Redis's token and app-token downstreams each get one.
  const appGrant = (extra: Pick<Parameters<typeof createClientCredentialsGrant>[0], 'registry' | 'throttle'> = {}) =>
    createClientCredentialsGrant({
      authorityHost: config.authorityHost,
      clientId: config.clientId,
      credential: credentials,
      tenantId: config.tenant.id,
      timeoutMs: config.exchangeTimeoutMs,
      dispatcher,
      logger,
      now,
      ...extra,
    });
  const redis = config.cache.redis;
  // REDIS_AUTH=entra: every Redis connection authenticates with the API's own token for Redis
  // (its own grant, with this instance's Retry-After windows: the shared ones live in that Redis).
  const redisEntra = redis?.auth === 'entra' ? createRedisEntraCredentials(appGrant(), { clientId: config.clientId, logger, now }) : undefined;
  const redisConnection = redis
    ? { ...redis, commandTimeoutMs: config.cache.l2TimeoutMs, logger, ...(redisEntra ? { credentials: redisEntra.source } : {}) }
    : undefined;
  // The cache owns (and closes) the store; Entra's throttling windows share it and its bounds.
  const l2 = redisConnection ? createRedisStore(redisConnection) : undefined;
  const cache: TieredCache<CachedToken> = createTieredCache<CachedToken>({
    l1MaxBytes: config.cache.l1MaxBytes,
    ...(l2 ? { l2, encryption: config.cache.encryption, l2StartupWaitMs: config.cache.l2StartupWaitMs, peerFill: config.cache.peerFill } : {}),
    keyPrefix: config.cache.keyPrefix,
    logger,
    registry,
    now,
  });
  // With Redis, a Retry-After that Entra gave one instance holds back every instance.
  const throttle = l2 ? createSharedThrottleWindows({ store: l2, keyPrefix: config.cache.keyPrefix, logger, now }) : createLocalThrottleWindows(now);
  registerThrottleGauge(registry, throttle);
  if (!redis) logger.info('cache: L1 only (in-process); set REDIS_URL or REDIS_CLUSTER_NODES to share tokens across instances');

  const exchange = createExchange({
    authorityHost: config.authorityHost,
    clientId: config.clientId,
    credential: credentials,
    timeoutMs: config.exchangeTimeoutMs,
    dispatcher,
    logger,
    registry,
    outcomes: createExchangeOutcomes(registry),
    throttle,
    now,
  });
  const tokens = createTokenProvider(cache, exchange, {
    now,
    tracing,
    onTokenUse: (use) => tokenUses('user', use),
  });
  // The metric here; the request's log line gets the same through each acquisition's `record`.
  const tokenUses = createTokenUseMetric(registry);
  // The API's own tokens (`"token": "app"` downstreams): one per scope set for all callers, in the same cache.
  const appTokens = createAppTokens(appGrant({ registry, throttle }), {
    clientId: config.clientId,
    cache,
    logger,
    tracing,
    onTokenUse: (use) => tokenUses('app', use),
    now,
  });
  const limiters = createRateLimiters(config, logger, redisEntra?.source);
  // One client per downstream, all on the one pooled dispatcher; /api/me and /api/graph share Graph's.
  const graph = createDownstreamClient(config.graph, tokens, dispatcher);
  const downstreams = [
    graph,
    ...Object.values(config.downstreams)
      .filter((downstream) => downstream !== config.graph)
      .map((downstream) => createDownstreamClient(downstream, downstream.token === 'app' ? appTokens.provider : tokens, dispatcher)),
  ];
  const realm = `api://${config.clientId}`;
  const authenticateCaller = authenticate(
    tracing.enabled ? (token) => tracing.span('validate access token', () => validate(token)) : validate,
    realm,
  );
  const openApiDocument = loadOpenApiDocument();

  // Case-sensitive, as the gate below is: `/API/me` must not reach a route the gate did not guard.
  const router = new Router<AppState, AppContextExtension>({ sensitive: true });
  router.get('/', serviceDescriptionRoute());
  router.get('/healthz', livenessRoute());
  router.get('/readyz', readinessRoute(metadata, cache, throttle, deps.draining));
  router.get('/openapi.json', openApiRoute(openApiDocument));
  router.get('/metrics', metricsRoute(registry, config.observability.metricsToken));
  // Everything under /api/ needs a valid token (see below); routes only say what they do.
  router.get('/api/me', meRoute(graph));
  const proxy = proxyRoute(downstreams, config.publicBaseUrl ? { publicBaseUrl: config.publicBaseUrl } : {});
  router.all(PROXY_PREFIX, proxy);
  router.get('/docs', docsPageRoute());
  router.get('/docs/:file', docsAssetRoute());

  // With TRUST_PROXY_HOPS, ctx.ip is the client as the outermost trusted proxy saw it. No
  // asyncLocalStorage: what the layers below report reaches the request explicitly, since in
  // Node 20 an active AsyncLocalStorage taxes every promise of every request (README, "Benchmark").
  const app = new Koa<AppState, AppContextExtension>({
    proxy: config.http.trustProxyHops > 0,
    maxIpsCount: config.http.trustProxyHops,
  });
  app.use(requestContext(logger, { logUserIds: config.observability.logUserIds }));
  // The server span; tracing off, there is none to make (and no wrapper to pay for).
  if (tracing.enabled) app.use(requestSpan(tracing));
  app.use(httpMetrics(registry));
  app.use(securityHeaders());
  // Preflights end here, before anything asks for a token.
  app.use(cors(config.http.corsAllowedOrigins));
  app.use(errorHandler(logger));
  // The one reader of request bodies and the one limit; nothing reads a body before this.
  app.use(requestBody(config.http.requestBodyMaxBytes));
  if (limiters.perIp) app.use(rateLimit(limiters.perIp, clientAddressKey(['/healthz', '/readyz'], logger)));
  // Before routing, so an unauthenticated caller learns nothing about which /api routes exist.
  app.use(underPath('/api/', validHost()));
  app.use(underPath('/api/', authenticateCaller));
  if (limiters.perUser) app.use(underPath('/api/', rateLimit(limiters.perUser, userKey)));
  app.use(router.routes());
  app.use(router.allowedMethods());

  metadata.get().catch(() => logger.warn('authority metadata not reachable yet; /readyz stays 503 until it is'));

  return {
    app,
    router,
    authenticate: authenticateCaller,
    tokens,
    logger,
    registry,
    callback: () => app.callback(),
    async close() {
      await Promise.all([appTokens.close(), cache.close(), limiters.close()]);
      await redisEntra?.close();
      await dispatcher.close();
      await tracing.close();
    },
  };
}
