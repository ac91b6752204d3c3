import type { Context, Next } from 'koa';
import { Counter, Histogram, type Registry } from 'prom-client';
import { matchedRoute } from './matched-route.js';

type Labels = 'method' | 'route' | 'status';

/**
 * `http_requests_total` and `http_request_duration_seconds` by method, route and status. The
 * route is the matched pattern, or `unmatched` (404s, preflights, requests refused before
 * routing), so a scan of random paths cannot grow the label set.
 */
export function httpMetrics(registry: Registry) {
  const registers = [registry];
  const labelNames = ['method', 'route', 'status'] as const;
  const name = 'http_requests_total';
  if (registry.getSingleMetric(name)) throw new Error(`this registry already holds ${name}: give each app its own registry`);
  const requests = new Counter<Labels>({ name, help: 'HTTP requests answered, by method, route and status', labelNames, registers });
  const duration = new Histogram<Labels>({
    name: 'http_request_duration_seconds',
    help: 'Time to answer an HTTP request (until the response body is handed to Node), by method, route and status',
    labelNames,
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers,
  });

  return async function httpMetricsMiddleware(ctx: Context, next: Next): Promise<void> {
    const started = performance.now();
    try {
      await next();
    } finally {
      const labels = { method: ctx.method, route: matchedRoute(ctx) ?? 'unmatched', status: String(ctx.status) };
      requests.inc(labels);
      duration.observe(labels, (performance.now() - started) / 1000);
    }
  };
}
