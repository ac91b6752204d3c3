import type { Next } from 'koa';
import type { Logger } from 'pino';
import { RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible';
import type { AppContext } from './app-state.js';
import { TooManyRequestsError } from '../api/errors.js';

/**
 * Counts each request against a limiter under the key `keyOf` gives (none = not counted) and
 * answers 429 with `Retry-After` once the key is over its limit for the current window.
 * A limiter that fails (its store down, no insurance left) lets the request through: a rate
 * limit protects the service, it must not be what takes it down.
 */
export function rateLimit(limiter: RateLimiterAbstract, keyOf: (ctx: AppContext) => string | undefined) {
  return async function rateLimitMiddleware(ctx: AppContext, next: Next): Promise<void> {
    const key = keyOf(ctx);
    if (key !== undefined) {
      const limited = await limiter.consume(key).then(
        () => undefined,
        (rejection: unknown) => (rejection instanceof RateLimiterRes ? rejection : undefined),
      );
      if (limited) throw new TooManyRequestsError(limited.msBeforeNext / 1000);
    }
    await next();
  };
}

/**
 * The per-IP key: the client's address (koa's `ctx.ip`, which honours TRUST_PROXY_HOPS); the
 * probe paths are not counted. Says once when requests arrive through a proxy we do not trust,
 * because then every client shares the proxy's address and its limit.
 */
export function clientAddressKey(exemptPaths: string[], logger: Logger) {
  let warned = false;
  return (ctx: AppContext): string | undefined => {
    if (exemptPaths.includes(ctx.path)) return undefined;
    if (!warned && !ctx.app.proxy && ctx.get('x-forwarded-for') !== '') {
      warned = true;
      logger.warn('requests come through a proxy (X-Forwarded-For) but TRUST_PROXY_HOPS is 0: per-IP limits count the proxy, not the clients');
    }
    return withoutPort(ctx.ip);
  };
}

/** Some proxies (App Service's front ends) forward `address:port`: the port must not split a client's budget. */
function withoutPort(address: string): string {
  return /^(\d{1,3}(?:\.\d{1,3}){3}):\d+$/.exec(address)?.[1] ?? /^\[([0-9a-f:.]+)\](?::\d+)?$/i.exec(address)?.[1] ?? address;
}

/** The per-user key: the pseudonymous user reference (one budget per user, whatever the token). */
export function userKey(ctx: AppContext): string | undefined {
  return ctx.state.auth?.userReference;
}
