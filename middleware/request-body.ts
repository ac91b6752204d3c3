import type { IncomingMessage } from 'node:http';
import type { Next, ParameterizedContext } from 'koa';
import getRawBody from 'raw-body';
import { ClientClosedRequestError, LengthRequiredError, PayloadTooLargeError } from '../api/errors.js';

export interface RequestBodyState {
  /**
   * The whole request body, read from the stream on the first call and the same Buffer on every
   * later one: a body can be read only once, so every layer that needs it asks here.
   */
  readBody(): Promise<Buffer>;
}

/**
 * The one reader of request bodies, and the one limit (`REQUEST_BODY_MAX_BYTES`). A body must
 * declare its length (a chunked one gets 411), and a declared length over the limit is a 413
 * before anything else runs. Reading counts the bytes actually received, against the limit and
 * the declared length (raw-body).
 */
export function requestBody(maxBytes: number) {
  return function requestBodyMiddleware(ctx: ParameterizedContext<RequestBodyState>, next: Next): Promise<void> {
    const length = ctx.get('content-length');
    if (length === '' && ctx.get('transfer-encoding') !== '') return Promise.reject(new LengthRequiredError());
    if (length !== '' && Number(length) > maxBytes) return Promise.reject(new PayloadTooLargeError(maxBytes));
    let body: Promise<Buffer> | undefined;
    ctx.state.readBody = () => (body ??= readWhole(ctx.req, length, maxBytes));
    return next();
  };
}

async function readWhole(req: IncomingMessage, length: string, maxBytes: number): Promise<Buffer> {
  try {
    return await getRawBody(req, { length: length === '' ? null : length, limit: maxBytes });
  } catch (error) {
    const type = (error as { type?: unknown }).type;
    if (type === 'entity.too.large') throw new PayloadTooLargeError(maxBytes);
    // Fewer bytes than announced: the caller broke off its request.
    if (type === 'request.aborted' || type === 'request.size.invalid') throw new ClientClosedRequestError();
    throw error;
  }
}
