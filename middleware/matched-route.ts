import type { Context } from 'koa';

/**
 * The route pattern @koa/router matched (`/api/me`), for labels and logs: bounded, unlike the
 * path. Undefined when no route matched (404s, preflights, requests refused before routing).
 */
export function matchedRoute(ctx: Context): string | undefined {
  const route = (ctx as Context & { _matchedRoute?: unknown })._matchedRoute;
  return typeof route === 'string' ? route : undefined;
}
