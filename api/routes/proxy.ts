import { authenticatedCaller, type AppContext } from '../../middleware/app-state.js';
import { ForbiddenError, InvalidBatchError, MethodNotAllowedError, NotFoundError } from '../errors.js';
import type { DownstreamClient } from '../downstream/client.js';
import { checkGraphBatch, writeGraphBatch } from '../downstream/graph-batch.js';
import { proxyLinkRewrite } from '../downstream/odata-links.js';
import { compileAllowList, type PathAllowList } from '../downstream/path-allow-list.js';
import { parseProxyPath } from '../downstream/proxy-path.js';
import { PROXY_PREFIX } from './proxy-prefix.js';
import { callerTraceHeaders, clientRequestId, disconnectSignal, relayDownstreamResponse } from './relay.js';

const BODY_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

export interface ProxyRouteOptions {
  /** Origin (and path prefix) callers reach us at; default: the request's own origin. */
  publicBaseUrl?: string;
}

/**
 * `/api/graph/<path>` and `/api/downstream/<name>/<path>`: the caller's request, as the user, to
 * `<baseUrl>/<path>?<query>`. In order, before any token is acquired: the path is checked for
 * traversal (400), matched against the allow-list (403) and the method against the allowed ones
 * (405); a Graph `$batch` is checked item by item instead. Then the downstream client calls, and
 * the answer is relayed, links to the downstream rewritten to this API.
 */
export function proxyRoute(clients: DownstreamClient[], options: ProxyRouteOptions = {}) {
  const proxies = new Map<string, { client: DownstreamClient; allowed: PathAllowList }>(
    clients.map((client) => [client.config.name, { client, allowed: compileAllowList(client.config.allowedPaths) }]),
  );

  const publicBasePath = options.publicBaseUrl === undefined ? '' : new URL(options.publicBaseUrl).pathname.replace(/\/+$/, '');

  return async function proxy(ctx: AppContext): Promise<void> {
    const { state } = ctx;
    const prefix = PROXY_PREFIX.exec(ctx.path);
    const target = prefix ? proxies.get(prefix[1] ?? 'graph') : undefined;
    if (!prefix || !target) throw new NotFoundError();
    const { client, allowed } = target;
    const { config } = client;
    const path = parseProxyPath(ctx.path.slice(prefix[0].length));
    const method = ctx.method;
    const [version] = path.segments;
    let pathAndQuery = `${path.raw}${ctx.querystring ? `?${ctx.querystring}` : ''}`;
    let headers = ctx.req.headers;

    let body: Buffer | undefined;
    // Graph matches `$batch` in any case, so this does too; a batch anywhere else is not one we could check.
    const batchAt = config.batch ? path.segments.findIndex((segment) => segment.toLowerCase() === '$batch') : -1;
    if (batchAt >= 0) {
      if (batchAt !== 1 || path.segments.length !== 2 || version === undefined) throw new InvalidBatchError('A batch is POST /{version}/$batch.');
      if (method !== 'POST') throw new MethodNotAllowedError(['POST']);
      if (!ctx.is('json')) throw new InvalidBatchError('A batch is sent as application/json.');
      const batch = checkGraphBatch(await state.readBody(), {
        version,
        routePrefix: `${publicBasePath}${prefix[0]}`,
        allowed,
        allowedMethods: config.allowedMethods,
      });
      // What was checked is what is sent: our serialisation, never the caller's bytes.
      body = writeGraphBatch(batch);
      pathAndQuery = `/${encodeURIComponent(version)}/$batch${ctx.querystring ? `?${ctx.querystring}` : ''}`;
      headers = { ...headers, 'content-type': 'application/json' };
    } else {
      if (!allowed(path.decoded)) throw new ForbiddenError('This path is not allowed through this API.');
      if (!config.allowedMethods.includes(method)) throw new MethodNotAllowedError(config.allowedMethods);
      // Buffered, not streamed: the client may send it twice (a 401 answered with a new token, a retried 429/503).
      if (BODY_METHODS.has(method)) body = await state.readBody();
    }

    state.logFields.downstream = config.name;
    const response = await client.send(authenticatedCaller(ctx), {
      method,
      pathAndQuery,
      headers,
      ...(body !== undefined ? { body } : {}),
      requestId: clientRequestId(ctx),
      signal: disconnectSignal(ctx),
      record: ctx.state.logFields,
      ...callerTraceHeaders(ctx),
    });
    // Koa 3's ctx.origin is the Origin request header; this is where the caller reached us.
    const proxyBaseUrl = `${options.publicBaseUrl ?? `${ctx.protocol}://${ctx.host}`}${prefix[0]}`;
    await relayDownstreamResponse(ctx, response, proxyLinkRewrite(config.baseUrl, response.url, proxyBaseUrl));
  };
}
