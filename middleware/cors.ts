import koaCors from '@koa/cors';
import type { Context, Middleware } from 'koa';

/** Response headers browser code may read: the claims challenge, throttling, our request id. */
const EXPOSED = ['WWW-Authenticate', 'Retry-After', 'x-request-id', 'request-id', 'client-request-id'];
/** Request headers an SPA may send. */
const ALLOWED = [
  'Authorization',
  'Content-Type',
  'Accept',
  'x-request-id',
  'x-ms-client-request-id',
  'client-request-id',
  'traceparent',
  'tracestate',
];

/**
 * CORS for browser SPAs calling with bearer tokens (never cookies, so no credentials mode).
 * Only the exact origins configured get CORS headers; others get none and the browser blocks
 * them. A preflight from an allowed origin is answered here, before any authentication.
 */
export function cors(allowedOrigins: string[]): Middleware {
  const allowed = new Set(allowedOrigins);
  return koaCors({
    origin: (ctx: Context) => {
      const origin = ctx.get('origin');
      return allowed.has(origin) ? origin : '';
    },
    allowMethods: ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'],
    allowHeaders: ALLOWED,
    exposeHeaders: EXPOSED,
    maxAge: 600,
    credentials: false,
  });
}
