import type { Context } from 'koa';
import type { AuthState } from '../../middleware/authenticate.js';
import { ForbiddenError, InvalidBatchError, MethodNotAllowedError, NotFoundError } from '../errors.js';
import type { RequestState } from '../../middleware/request-context.js';
import type { DownstreamClient } from '../downstream/client.js';
import { checkGraphBatch } from '../downstream/graph-batch.js';
import { proxyLinkRewrite } from '../downstream/odata-links.js';
import { compileAllowList, type PathAllowList } from '../downstream/path-allow-list.js';
import { parseProxyPath } from '../downstream/proxy-path.js';
import { clientRequestId, disconnectSignal, readRequestBody, relayDownstreamResponse } from './relay.js';

/** Graph's simple-upload limit; larger request bodies get a 413. */
const MAX_REQUEST_BODY_BYTES = 4 * 1024 * 1024;
const BODY_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);
/** `/api/graph` is Graph; `/api/downstream/<name>` any configured downstream (Graph included). */
const PREFIX = /^\/api\/(?:graph|downstream\/([^/]+))(?=\/)/;
/** Where the proxy routes are mounted (for the router): a prefix and a path, at least `/`. */
export const PROXY_ROUTES = [/^\/api\/graph\//, /^\/api\/downstream\/[^/]+\//];

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

  return async function proxy(ctx: Context): Promise<void> {
    const state = ctx.state as AuthState & RequestState;
    const prefix = PREFIX.exec(ctx.path);
    const target = prefix ? proxies.get(prefix[1] ?? 'graph') : undefined;
    if (!prefix || !target) throw new NotFoundError();
    const { client, allowed } = target;
    const { config } = client;
    const path = parseProxyPath(ctx.path.slice(prefix[0].length));
    const method = ctx.method;
    const [version, batchSegment] = path.segments;

    let body: Buffer | undefined;
    if (config.batch && path.segments.length === 2 && batchSegment === '$batch' && version !== undefined) {
      if (method !== 'POST') throw new MethodNotAllowedError(['POST']);
      if (!ctx.is('json')) throw new InvalidBatchError('A batch is sent as application/json.');
      body = await readRequestBody(ctx.req, MAX_REQUEST_BODY_BYTES);
      checkGraphBatch(body, { version, allowed, allowedMethods: config.allowedMethods });
    } else {
      if (!allowed(path.decoded)) throw new ForbiddenError('This path is not allowed through this API.');
      if (!config.allowedMethods.includes(method)) throw new MethodNotAllowedError(config.allowedMethods);
      if (BODY_METHODS.has(method)) body = await readRequestBody(ctx.req, MAX_REQUEST_BODY_BYTES);
    }

    state.logFields['downstream'] = config.name;
    const response = await client.send(state.auth, {
      method,
      pathAndQuery: `${path.raw}${ctx.querystring ? `?${ctx.querystring}` : ''}`,
      headers: ctx.req.headers,
      ...(body !== undefined ? { body } : {}),
      requestId: clientRequestId(ctx),
      signal: disconnectSignal(ctx),
    });
    // Koa 3's ctx.origin is the Origin request header; this is where the caller reached us.
    const proxyBaseUrl = `${options.publicBaseUrl ?? `${ctx.protocol}://${ctx.host}`}${prefix[0]}`;
    await relayDownstreamResponse(ctx, response, proxyLinkRewrite(config.baseUrl, response.url, proxyBaseUrl));
  };
}
