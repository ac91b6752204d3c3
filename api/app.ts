import { AsyncLocalStorage } from 'node:async_hooks';
import type { RequestListener } from 'node:http';
import Router from '@koa/router';
import Koa, { type Middleware } from 'koa';
import type { SpanExporter } from '@opentelemetry/sdk-trace-base';
import type { DestinationStream, Logger } from 'pino';
import { Registry, collectDefaultMetrics } from 'prom-client';
import { Agent } from 'undici';
import { createRedisStore, createTieredCache, type TieredCache } from '../cache/index.js';
import { createAccessTokenValidator } from '../middleware/bearer/validator.js';
import { authenticate } from '../middleware/authenticate.js';
import { bodyLimit } from '../middleware/body-limit.js';
import { cors } from '../middleware/cors.js';
import { errorHandler } from '../middleware/error-handler.js';
import { httpMetrics } from '../middleware/http-metrics.js';
import { createOpenIdMetadataSource } from '../middleware/bearer/openid-metadata.js';
import { clientAddressKey, rateLimit, userKey } from '../middleware/rate-limit.js';
import { requestContext, type RequestState } from '../middleware/request-context.js';
import { requestSpan } from '../middleware/request-span.js';
import { securityHeaders } from '../middleware/security-headers.js';
import type { Config } from './config/load-config.js';
import { createDownstreamClient } from './downstream/client.js';
import { createDownstreamMetrics, observeDownstreams } from './downstream/observer.js';
import { createExchange } from './token/exchange.js';
import { createExchangeOutcomes } from './token/exchange-outcomes.js';
import { createLogger } from './observability/logger.js';
import { createRateLimiters } from './rate-limiters.js';
import { docsAssetRoute, docsPageRoute } from './routes/docs.js';
import { livenessRoute, readinessRoute } from './routes/health.js';
import { meRoute } from './routes/me.js';
import { metricsRoute } from './routes/metrics.js';
import { loadOpenApiDocument, openApiRoute } from './routes/openapi.js';
import { serviceDescriptionRoute } from './routes/service-description.js';
import { PROXY_ROUTES, proxyRoute } from './routes/proxy.js';
import { createTokenProvider, type CachedToken, type TokenProvider } from './token/token-provider.js';
import { createTracing } from './observability/tracing.js';

export interface AppDependencies {
  /** Where log lines go (default stdout). The redaction rules apply whatever the destination. */
  logDestination?: DestinationStream;
  registry?: Registry;
  /** Turns tracing on with this exporter (tests), whatever OTEL_EXPORTER_OTLP_ENDPOINT says. */
  traceExporter?: SpanExporter;
  now?: () => number;
}

/** One assembled service. Build as many as you like: nothing is shared between them. */
export interface Service {
  app: Koa;
  /** Add routes here (the benchmark does); `/api` routes are authenticated by `authenticate`. */
  router: Router;
  authenticate: Middleware;
  tokens: TokenProvider;
  logger: Logger;
  registry: Registry;
  callback(): RequestListener;
  /** Stops the cache, Redis connections, pools and the trace exporter. Does not close an HTTP server: the caller owns it. */
  close(): Promise<void>;
}

/** Runs `middleware` for requests whose path starts with `prefix`; the rest pass by. */
function underPath(prefix: string, middleware: Middleware): Middleware {
  return (ctx, next) => (ctx.path.startsWith(prefix) ? middleware(ctx, next) : next());
}

/**
 * The whole service from a configuration object. Read top to bottom, it is the path every
 * request takes: request id and log line → trace span → HTTP metrics → security headers →
 * CORS → error mapping → body limit → per-IP limit → (for /api) authenticate → per-user limit
 * → route → token provider → cache → exchange → downstream.
 */
export function createApp(config: Config, deps: AppDependencies = {}): Service {
  const now = deps.now ?? Date.now;
  const logger = createLogger(config.logLevel, deps.logDestination);
  const registry = deps.registry ?? new Registry();
  collectDefaultMetrics({ register: registry });
  const { otlpEndpoint, serviceName } = config.observability;
  const tracing = createTracing({ serviceName, ...(deps.traceExporter ? { exporter: deps.traceExporter } : otlpEndpoint ? { otlpEndpoint } : {}) });
  // The request being served, for the layers below koa (the token provider adds to its log line).
  const requests = new AsyncLocalStorage<RequestState>();
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
    audiences: config.audiences,
    requiredScopes: config.requiredScopes,
    allowedTenants: config.allowedTenants,
    clockSkewSeconds: config.clockSkewSeconds,
    jwksCooldownMs: config.jwksCooldownMs,
    now,
  });
  const redis = config.cache.redis;
  const cache: TieredCache<CachedToken> = createTieredCache<CachedToken>({
    l1MaxBytes: config.cache.l1MaxBytes,
    ...(redis
      ? { l2: createRedisStore({ ...redis, commandTimeoutMs: config.cache.l2TimeoutMs, logger }), encryption: config.cache.encryption }
      : {}),
    keyPrefix: config.cache.keyPrefix,
    logger,
    registry,
    now,
  });
  if (!redis) logger.info('cache: L1 only (in-process); set REDIS_URL or REDIS_CLUSTER_NODES to share tokens across instances');

  const exchange = createExchange({
    authorityHost: config.authorityHost,
    clientId: config.clientId,
    credential: config.credential,
    timeoutMs: config.exchangeTimeoutMs,
    dispatcher,
    logger,
    registry,
    outcomes: createExchangeOutcomes(registry),
    now,
  });
  const tokens = createTokenProvider(cache, exchange, {
    now,
    tracing,
    onTokenUse: (use) => Object.assign(requests.getStore()?.logFields ?? {}, use),
  });
  const limiters = createRateLimiters(config, logger);
  // One client per downstream, all on the one pooled dispatcher; /api/me and /api/graph share Graph's.
  const graph = createDownstreamClient(config.graph, tokens, dispatcher);
  const downstreams = [
    graph,
    ...Object.values(config.downstreams)
      .filter((downstream) => downstream !== config.graph)
      .map((downstream) => createDownstreamClient(downstream, tokens, dispatcher)),
  ];
  const realm = `api://${config.clientId}`;
  const authenticateCaller = authenticate((token) => tracing.span('validate access token', () => validate(token)), realm);
  const openApiDocument = loadOpenApiDocument();

  const router = new Router();
  router.get('/', serviceDescriptionRoute());
  router.get('/healthz', livenessRoute());
  router.get('/readyz', readinessRoute(metadata, cache));
  router.get('/openapi.json', openApiRoute(openApiDocument));
  router.get('/metrics', metricsRoute(registry, config.observability.metricsToken));
  // Everything under /api/ needs a valid token (see below); routes only say what they do.
  router.get('/api/me', meRoute(graph));
  const proxy = proxyRoute(downstreams, config.publicBaseUrl ? { publicBaseUrl: config.publicBaseUrl } : {});
  for (const path of PROXY_ROUTES) router.all(path, proxy);
  router.get('/docs', docsPageRoute());
  router.get('/docs/:file', docsAssetRoute());

  // With TRUST_PROXY_HOPS, ctx.ip is the client as the outermost trusted proxy saw it.
  const app = new Koa({ proxy: config.http.trustProxyHops > 0, maxIpsCount: config.http.trustProxyHops });
  app.use(requestContext(logger, { logUserIds: config.observability.logUserIds, userReferenceKey: config.clientId, scope: requests }));
  app.use(requestSpan(tracing));
  app.use(httpMetrics(registry));
  app.use(securityHeaders());
  // Preflights end here, before anything asks for a token.
  app.use(cors(config.http.corsAllowedOrigins));
  app.use(errorHandler(logger));
  app.use(bodyLimit(config.http.requestBodyMaxBytes));
  if (limiters.perIp) app.use(rateLimit(limiters.perIp, clientAddressKey(['/healthz', '/readyz'], logger)));
  // Before routing, so an unauthenticated caller learns nothing about which /api routes exist.
  app.use(underPath('/api/', authenticateCaller));
  if (limiters.perUser) app.use(underPath('/api/', rateLimit(limiters.perUser, userKey(config.clientId))));
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
      await Promise.all([cache.close(), limiters.close()]);
      await dispatcher.close();
      await tracing.close();
    },
  };
}
