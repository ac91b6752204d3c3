import type { Context, Next } from 'koa';

/**
 * Headers for a JSON API that nothing should render, frame, sniff or cache. Set before the rest
 * of the chain runs, so error responses carry them too; a route that serves a page (API docs)
 * may relax the Content-Security-Policy for itself.
 */
const SECURITY_HEADERS: Record<string, string> = {
  'content-security-policy': "default-src 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  'strict-transport-security': 'max-age=31536000; includeSubDomains',
  'cross-origin-opener-policy': 'same-origin',
  // Answers carry a user's data: no shared or browser cache may keep them. A proxied answer
  // too: api/downstream/headers.ts drops the downstream's cache and security headers, ours win.
  'cache-control': 'no-store',
};

export function securityHeaders() {
  return function securityHeadersMiddleware(ctx: Context, next: Next): Promise<void> {
    ctx.set(SECURITY_HEADERS);
    return next();
  };
}
