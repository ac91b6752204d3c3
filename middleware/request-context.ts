import { randomUUID } from 'node:crypto';
import type { AsyncLocalStorage } from 'node:async_hooks';
import type { Context, Next } from 'koa';
import type { Logger } from 'pino';
import type { AuthState } from './authenticate.js';
import { matchedRoute } from './matched-route.js';
import { parseTraceContext, type TraceContext } from '../api/observability/trace-context.js';
import { userReference } from './bearer/user-reference.js';

export interface RequestState {
  /** The caller's id when it sent a sane one, else a new UUID; returned in `x-request-id`. */
  requestId: string;
  /** The caller's W3C trace context, when it sent a valid `traceparent`. */
  traceContext?: TraceContext;
  log: Logger;
  /** Filled in by later layers (token source, exchange time, trace id), logged once at the end. */
  logFields: Record<string, unknown>;
}

export interface RequestContextOptions {
  /** LOG_USER_IDS=on: log the raw `oid`; otherwise only a pseudonymous reference to the user. */
  logUserIds: boolean;
  /** Keys the user reference (the API's client id). */
  userReferenceKey: string;
  /** Layers below koa find the current request's state here (to add log fields). */
  scope?: AsyncLocalStorage<RequestState>;
}

/** A caller-supplied id is kept only when it is short and plain (it ends up in our logs). */
export const SAFE_ID = /^[A-Za-z0-9._:-]{1,128}$/;
/** Where callers put their request id, in order of preference. */
const REQUEST_ID_HEADERS = ['x-request-id', 'x-ms-client-request-id', 'client-request-id'];

/**
 * Gives every request an id, a child logger carrying it, the caller's trace context, and one
 * log line when it ends: method, route, status, duration, tenant, a user reference, and what
 * later layers added (cache level, exchange time). The path is logged without its query string
 * (a query can carry a token); headers are never logged.
 */
export function requestContext(logger: Logger, options: RequestContextOptions) {
  return async function requestContextMiddleware(ctx: Context, next: Next): Promise<void> {
    const started = process.hrtime.bigint();
    const offered = REQUEST_ID_HEADERS.map((name) => ctx.get(name)).find((value) => SAFE_ID.test(value));
    const requestId = offered ?? randomUUID();
    const traceContext = parseTraceContext(ctx.get('traceparent'), ctx.get('tracestate'));
    const state = ctx.state as RequestState;
    state.requestId = requestId;
    if (traceContext) state.traceContext = traceContext;
    state.log = logger.child({ requestId });
    state.logFields = traceContext ? { traceId: traceContext.traceId } : {};
    ctx.set('x-request-id', requestId);
    try {
      await (options.scope ? options.scope.run(state, next) : next());
    } finally {
      const durationMs = Number(process.hrtime.bigint() - started) / 1e6;
      const route = matchedRoute(ctx);
      const line = {
        method: ctx.method,
        ...(route ? { route } : {}),
        path: ctx.path,
        status: ctx.status,
        durationMs: Math.round(durationMs * 100) / 100,
        ...caller(ctx, options),
        ...state.logFields,
      };
      if (ctx.status >= 500) state.log.error(line, 'request');
      else state.log.info(line, 'request');
    }
  };
}

/** Who called, as far as the log may say. */
function caller(ctx: Context, options: RequestContextOptions): Record<string, string> {
  const auth = (ctx.state as Partial<AuthState>).auth;
  if (!auth) return {};
  return options.logUserIds
    ? { tenantId: auth.tenantId, userId: auth.objectId }
    : { tenantId: auth.tenantId, user: userReference(options.userReferenceKey, auth.tenantId, auth.objectId) };
}
