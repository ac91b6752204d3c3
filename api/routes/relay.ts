import type { Context } from 'koa';
import type { AppContext } from '../../middleware/app-state.js';
import { ApiError, BadGatewayError, ClientClosedRequestError, GatewayTimeoutError } from '../errors.js';
import { errorCode } from '../error-code.js';
import { SAFE_ID } from '../../middleware/request-context.js';
import { traceHeaders } from '../../middleware/trace-context.js';
import type { DownstreamResponse } from '../downstream/client.js';
import { rewriteODataLinks, type LinkRewrite } from '../downstream/odata-links.js';

/** Aborted when the caller goes away before its response is complete: cancels the upstream call. */
export function disconnectSignal(ctx: Context): AbortSignal {
  const controller = new AbortController();
  // The response's `close`, not the request's: a request emits `close` once its body has been read.
  ctx.res.once('close', () => {
    if (!ctx.res.writableFinished) controller.abort();
  });
  return controller.signal;
}

/** The caller's trace context as headers for the downstream, when it sent a valid one. */
export function callerTraceHeaders(ctx: AppContext): { traceHeaders?: Record<string, string> } {
  const { traceContext } = ctx.state;
  return traceContext ? { traceHeaders: traceHeaders(traceContext) } : {};
}

/** The `client-request-id` for the downstream: the caller's when it sent a sane one, else our request id. */
export function clientRequestId(ctx: AppContext): string {
  const offered = ctx.get('client-request-id');
  return SAFE_ID.test(offered) ? offered : ctx.state.requestId;
}

const EMPTY_STATUSES = new Set([204, 205, 304]);

/**
 * Writes a downstream response as the caller's: status, headers (already cleaned by the client)
 * and the body, streamed. With `rewrite`, a 2xx JSON body has its links rewritten on the way,
 * and so has a `Location` to the downstream.
 */
export async function relayDownstreamResponse(ctx: AppContext, response: DownstreamResponse, rewrite?: LinkRewrite): Promise<void> {
  const { logFields } = ctx.state;
  const { 'content-length': length, 'content-type': type, ...headers } = response.headers;
  logFields.downstreamStatus = response.status;
  if (typeof headers['request-id'] === 'string') logFields.downstreamRequestId = headers['request-id'];
  if (response.retries > 0) logFields.downstreamRetries = response.retries;
  // A redirect to the downstream itself points back through us; one elsewhere is the caller's to follow.
  const location = headers['location'];
  if (rewrite && typeof location === 'string') headers['location'] = rewrite(location) ?? location;
  ctx.status = response.status;
  ctx.set(headers);
  if (EMPTY_STATUSES.has(response.status)) {
    await response.body.dump();
    ctx.body = null;
    return;
  }
  if (typeof type === 'string') ctx.set('content-type', type);
  const encoded = typeof headers['content-encoding'] === 'string' && headers['content-encoding'] !== 'identity';
  if (rewrite && response.status < 300 && !encoded && typeof type === 'string' && /^application\/(?:[\w.+-]*\+)?json\b/i.test(type)) {
    ctx.body = await rewriteODataLinks(response.body, rewrite).catch((error: unknown) => {
      throw bodyError(error, ctx);
    });
  } else {
    // When the caller has gone, koa destroys the stream without piping it, and an undici body
    // destroyed before its end emits 'error': unheard, that would crash the process.
    response.body.on('error', () => undefined);
    ctx.body = response.body;
    if (typeof length === 'string') ctx.set('content-length', length);
  }
  // Koa labels an untyped stream application/octet-stream; the caller gets what the downstream sent.
  if (typeof type !== 'string') ctx.remove('content-type');
}

/** A body that failed before its headers were sent: the caller still gets a proper answer. */
function bodyError(error: unknown, ctx: Context): ApiError {
  if (error instanceof ApiError) return error;
  if (ctx.res.destroyed || !ctx.res.writable) return new ClientClosedRequestError();
  if (errorCode(error) === 'UND_ERR_BODY_TIMEOUT') return new GatewayTimeoutError();
  return new BadGatewayError('The downstream API broke off its answer.');
}
