import type { RequestListener } from 'node:http';
import Router from '@koa/router';
import Koa, { type Middleware } from 'koa';
import { pino, type DestinationStream, type Logger, type LoggerOptions } from 'pino';
import { Registry } from 'prom-client';
import { Agent } from 'undici';
import { createRedisStore, createTieredCache, type TieredCache } from '../cache/index.js';
import { createAccessTokenValidator } from '../middleware/access-token.js';
import { authenticate } from '../middleware/authenticate.js';
import { errorHandler } from '../middleware/error-handler.js';
import { createOpenIdMetadataSource } from '../middleware/openid-metadata.js';
import { requestContext } from '../middleware/request-context.js';
import type { Config } from './config.js';
import { createDownstreamClient } from './downstream-client.js';
import { createExchange } from './exchange.js';
import { livenessRoute, readinessRoute } from './routes/health.js';
import { meRoute } from './routes/me.js';
import { loadOpenApiDocument, openApiRoute } from './routes/openapi.js';
import { createTokenProvider, type CachedToken, type TokenProvider } from './token-provider.js';

export interface AppDependencies {
  /** Where log lines go (default stdout). The redaction rules apply whatever the destination. */
  logDestination?: DestinationStream;
  registry?: Registry;
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
  /** Stops the cache and the connection pools. Does not close an HTTP server: the caller owns it. */
  close(): Promise<void>;
}

/** Runs `middleware` for requests whose path starts with `prefix`; the rest pass by. */
function underPath(prefix: string, middleware: Middleware): Middleware {
  return (ctx, next) => (ctx.path.startsWith(prefix) ? middleware(ctx, next) : next());
}

/** Secrets that must never reach a log line, whatever an object carries. */
const REDACT = ['req.headers.authorization', 'req.headers.cookie', '*.authorization', '*.accessToken', '*.token', '*.assertion'];

/**
 * The whole service from a configuration object. Read top to bottom, it is the path every
 * request takes: request id and log line → error mapping → route → (for /api) authenticate →
 * token provider → cache → exchange → downstream.
 */
export function createApp(config: Config, deps: AppDependencies = {}): Service {
  const now = deps.now ?? Date.now;
  const logOptions: LoggerOptions = { level: config.logLevel, redact: REDACT };
  const logger = deps.logDestination ? pino(logOptions, deps.logDestination) : pino(logOptions);
  const registry = deps.registry ?? new Registry();
  // One pool for the token endpoint and the downstreams: keep-alive, bounded per origin.
  const dispatcher = new Agent({ connections: 128, keepAliveTimeout: 30_000, connect: { timeout: 5_000 } });

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
    now,
  });
  const tokens = createTokenProvider(cache, exchange, now);
  const graph = createDownstreamClient(config.graph, tokens, dispatcher);
  const realm = `api://${config.clientId}`;
  const authenticateCaller = authenticate(validate, realm);
  const openApiDocument = loadOpenApiDocument();

  const router = new Router();
  router.get('/healthz', livenessRoute());
  router.get('/readyz', readinessRoute(metadata, cache));
  router.get('/openapi.json', openApiRoute(openApiDocument));
  router.get('/metrics', async (ctx) => {
    ctx.type = registry.contentType;
    ctx.body = await registry.metrics();
  });
  // Everything under /api/ needs a valid token (see below); routes only say what they do.
  router.get('/api/me', meRoute(graph));

  const app = new Koa();
  app.use(requestContext(logger));
  app.use(errorHandler(logger));
  // Before routing, so an unauthenticated caller learns nothing about which /api routes exist.
  app.use(underPath('/api/', authenticateCaller));
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
      await cache.close();
      await dispatcher.close();
    },
  };
}
