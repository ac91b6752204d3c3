import { randomUUID } from 'node:crypto';
import type { Next } from 'koa';
import type { Logger } from 'pino';
import type { AppContext } from './app-state.js';
import { matchedRoute } from './matched-route.js';
import { incomingTraceContext } from './trace-context.js';

export interface RequestContextOptions {
  /** LOG_USER_IDS=on: log the raw `oid`; otherwise only a pseudonymous reference to the user. */
  logUserIds: boolean;
}

/** A caller-supplied id is kept only when it is short and plain (it ends up in our logs). */
export const SAFE_ID = /^[A-Za-z0-9._:-]{1,128}$/;
/** Where callers put their request id, in order of preference. */
const REQUEST_ID_HEADERS = ['x-request-id', 'x-ms-client-request-id', 'client-request-id'];

/**
 * Gives every request an id, the caller's trace context, and one log line when it ends: request
 * id, method, route, status, duration, tenant, a user reference, and what later layers added
 * (cache level, exchange time). The path is logged without its query string (a query can carry
 * a token); headers are never logged. (The app's logger, not a child per request: the line is
 * the same and a request pays for no logger of its own.)
 */
export function requestContext(logger: Logger, options: RequestContextOptions) {
  // The line is built here from named fields only (never headers, bodies or tokens), so it
  // skips the logger's redaction, which costs about 25 µs a line with wildcard paths (measured,
  // README "Benchmark"). Same destination and level as `logger`.
  const requestLog = logger.child({}, { redact: { paths: [] } });
  return async function requestContextMiddleware(ctx: AppContext, next: Next): Promise<void> {
    const started = process.hrtime.bigint();
    const requestId = offeredRequestId(ctx) ?? randomUUID();
    const traceContext = ctx.headers.traceparent === undefined ? undefined : incomingTraceContext(ctx.headers);
    const { state } = ctx;
    state.requestId = requestId;
    if (traceContext) state.traceContext = traceContext;
    state.logFields = traceContext ? { traceId: traceContext.traceId } : {};
    ctx.set('x-request-id', requestId);
    try {
      await next();
    } finally {
      const durationMs = Number(process.hrtime.bigint() - started) / 1e6;
      const route = matchedRoute(ctx);
      const line = {
        requestId,
        method: ctx.method,
        ...(route ? { route } : {}),
        path: ctx.path,
        status: ctx.status,
        durationMs: Math.round(durationMs * 100) / 100,
        ...caller(ctx, options),
        ...state.logFields,
      };
      if (ctx.status >= 500) requestLog.error(line, 'request');
      else requestLog.info(line, 'request');
    }
  };
}

/** The caller's request id, from the first header that holds a sane one. */
function offeredRequestId(ctx: AppContext): string | undefined {
  for (const name of REQUEST_ID_HEADERS) {
    const value = ctx.get(name);
    if (value !== '' && SAFE_ID.test(value)) return value;
  }
  return undefined;
}

/** Who called, as far as the log may say. */
function caller(ctx: AppContext, options: RequestContextOptions): Record<string, string> {
  const { auth } = ctx.state;
  if (!auth) return {};
  return options.logUserIds ? { tenantId: auth.tenantId, userId: auth.objectId } : { tenantId: auth.tenantId, user: auth.userReference };
}
