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

  // The labelled children, made once per (method, route, status): prom-client would otherwise
  // hash a label object twice per request. Bounded as the label set is: Node's parser admits a
  // fixed list of methods, routes are patterns, statuses are three digits.
  const children = new Map<string, { requests: Counter.Internal; duration: Histogram.Internal<Labels> }>();
  function childrenOf(method: string, route: string, status: number) {
    const key = `${method} ${status} ${route}`;
    let child = children.get(key);
    if (!child) {
      const labels = { method, route, status: String(status) };
      children.set(key, (child = { requests: requests.labels(labels), duration: duration.labels(labels) }));
    }
    return child;
  }

  return async function httpMetricsMiddleware(ctx: Context, next: Next): Promise<void> {
    const started = performance.now();
    try {
      await next();
    } finally {
      const child = childrenOf(ctx.method, matchedRoute(ctx) ?? 'unmatched', ctx.status);
      child.requests.inc();
      child.duration.observe((performance.now() - started) / 1000);
    }
  };
}
