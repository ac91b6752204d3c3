import type { Context, Next } from 'koa';
import { LengthRequiredError, PayloadTooLargeError } from '../api/errors.js';

/**
 * Refuses a request body over `maxBytes` before anything reads it. A body must declare its
 * length: Node then guarantees the body is exactly that long, so no later reader can be handed
 * more. A chunked body (no Content-Length) gets 411.
 */
export function bodyLimit(maxBytes: number) {
  return async function bodyLimitMiddleware(ctx: Context, next: Next): Promise<void> {
    const length = ctx.get('content-length');
    if (length === '' && ctx.get('transfer-encoding') !== '') throw new LengthRequiredError();
    if (length !== '' && Number(length) > maxBytes) throw new PayloadTooLargeError(maxBytes);
    await next();
  };
}
