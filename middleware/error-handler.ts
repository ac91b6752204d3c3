import type { Context, Next } from 'koa';
import type { Logger } from 'pino';
import { ApiError, MethodNotAllowedError, NotFoundError } from '../api/errors.js';

/**
 * Maps every error to HTTP in one place: an ApiError writes its own status, headers and body;
 * anything else is a 500 with a generic body (the cause goes to the log, never to the caller).
 * Unknown routes get the same JSON shape as every other error.
 */
export function errorHandler(logger: Logger) {
  return async function errorHandlerMiddleware(ctx: Context, next: Next): Promise<void> {
    try {
      await next();
      if (ctx.status === 404 && ctx.body === undefined) throw new NotFoundError();
      // The router's bare 405 (a known path, another method) gets the same JSON shape.
      if (ctx.status === 405 && ctx.body === undefined) throw new MethodNotAllowedError(ctx.response.get('allow').split(/\s*,\s*/).filter(Boolean));
    } catch (error) {
      const apiError = error instanceof ApiError ? error : undefined;
      if (!apiError) ((ctx.state as { log?: Logger }).log ?? logger).error({ err: error }, 'unhandled error');
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
  const status = (error as { status?: unknown } | null)?.status;
  return typeof status === 'number' && status >= 400 && status < 500 ? status : undefined;
}
