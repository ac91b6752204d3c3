import type { Context } from 'koa';

/**
 * The route pattern @koa/router matched (`/api/me`), for labels and logs: bounded, unlike the
 * path. Undefined when no route matched (404s, preflights, requests refused before routing).
 */
export function matchedRoute(ctx: Context): string | undefined {
  // Set by the router before the route runs; not in its types (koa's context is open to such fields).
  const route: unknown = ctx['_matchedRoute'];
  return typeof route === 'string' ? route : undefined;
}
