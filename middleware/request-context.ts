import { randomUUID } from 'node:crypto';
import type { Context, Next } from 'koa';
import type { Logger } from 'pino';

export interface RequestState {
  requestId: string;
  log: Logger;
  /** Filled in by later layers, logged once at the end. */
  logFields: Record<string, unknown>;
}

/** A caller-supplied id is kept only when it is short and plain (it ends up in our logs). */
const SAFE_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * Gives every request an id (the caller's `x-request-id` or `client-request-id` when sane,
 * otherwise a new UUID), a child logger carrying it, and one log line when it ends.
 * The URL is logged without its query string: a query can carry a token.
 */
export function requestContext(logger: Logger) {
  return async function requestContextMiddleware(ctx: Context, next: Next): Promise<void> {
    const started = process.hrtime.bigint();
    const offered = ctx.get('x-request-id') || ctx.get('client-request-id');
    const requestId = SAFE_ID.test(offered) ? offered : randomUUID();
    const state = ctx.state as RequestState;
    state.requestId = requestId;
    state.log = logger.child({ requestId });
    state.logFields = {};
    ctx.set('x-request-id', requestId);
    try {
      await next();
    } finally {
      const durationMs = Number(process.hrtime.bigint() - started) / 1e6;
      const line = { method: ctx.method, path: ctx.path, status: ctx.status, durationMs: Math.round(durationMs * 100) / 100, ...state.logFields };
      if (ctx.status >= 500) state.log.error(line, 'request');
      else state.log.info(line, 'request');
    }
  };
}
