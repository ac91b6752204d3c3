import type { Next } from 'koa';
import type { Logger } from 'pino';
import { ApiError, MethodNotAllowedError, NotFoundError } from '../api/errors.js';
import type { AppContext } from './app-state.js';

/**
 * Maps every error to HTTP in one place: an ApiError writes its own status, headers and body;
 * anything else is a 500 with a generic body (the cause goes to the log, never to the caller).
 * Unknown routes get the same JSON shape as every other error.
 */
export function errorHandler(logger: Logger) {
  return async function errorHandlerMiddleware(ctx: AppContext, next: Next): Promise<void> {
    try {
      await next();
      if (ctx.status === 404 && ctx.body === undefined) throw new NotFoundError();
      // The router's bare 405 (a known path, another method) gets the same JSON shape.
      if (ctx.status === 405 && ctx.body === undefined) throw new MethodNotAllowedError(allowedMethods(ctx.response.get('allow')));
    } catch (error) {
      const apiError = error instanceof ApiError ? error : undefined;
      if (!apiError) logger.error({ requestId: ctx.state.requestId, err: error }, 'unhandled error');
      const status = apiError?.status ?? clientErrorStatus(error) ?? 500;
      ctx.status = status;
      ctx.set(apiError?.headers() ?? {});
      ctx.body = apiError?.body() ?? {
        error: status === 500 ? 'internal_error' : 'bad_request',
        message: status === 500 ? 'Internal server error.' : 'The request is malformed.',
      };
    }
  };
}

/** Koa's own 4xx errors (a malformed body, say) stay 4xx: a caller's mistake is never a 5xx. */
function clientErrorStatus(error: unknown): number | undefined {
  const status = typeof error === 'object' && error !== null && 'status' in error ? error.status : undefined;
  return typeof status === 'number' && status >= 400 && status < 500 ? status : undefined;
}

/** The router's `Allow` header as a list. */
function allowedMethods(allow: string): string[] {
  return allow.split(/\s*,\s*/).filter(Boolean);
}
