import type { Context, Next } from 'koa';
import { InvalidHostError } from '../api/errors.js';

/** RFC 9110 §7.2 `uri-host [ ":" port ]`, as far as DNS names and IP literals go. */
const HOST = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(\d{1,5}))?$/;

/**
 * Refuses a request whose host (the `Host` header, or the `X-Forwarded-Host` of a trusted proxy)
 * is not a host: Koa's `ctx.URL` is empty then, and the request could not be answered.
 */
export function validHost() {
  return async function validHostMiddleware(ctx: Context, next: Next): Promise<void> {
    const match = HOST.exec(ctx.host);
    if (!match || Number(match[1] ?? 0) > 65_535 || !(ctx.URL instanceof URL)) throw new InvalidHostError();
    await next();
  };
}
