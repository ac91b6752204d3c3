/**
 * The service under test, in its own process: createApp from the environment with its
 * production defaults (info logs, which bench/run.ts sends to /dev/null; metrics; security
 * headers; request ids) plus one route:
 *
 *   GET /bench/token   validates the token, acquires the Graph token through the cache
 *                      (service.tokens.acquire), then 204
 *
 * GET /api/me and everything else are the service's own. Measured over IPC by
 * bench/server-harness.ts; the counters are the cache's answers, from its metrics.
 */
import { createApp } from '../api/app.js';
import { loadConfig } from '../api/config/load-config.js';
import { authenticatedCaller } from '../middleware/app-state.js';
import { serveForBench } from './server-harness.js';

const config = loadConfig(process.env);
const service = createApp(config);

service.router.get('/bench/token', service.authenticate, async (ctx) => {
  // As the service's own routes call it: the token's source goes into the request's log line.
  await service.tokens.acquire(authenticatedCaller(ctx), config.graph.scopes, { record: ctx.state.logFields });
  ctx.status = 204;
});

/** Cumulative cache counters (hits by level, joins of another caller's flight, misses, L2 failures), verified-token cache lookups, sizes. */
async function counters(): Promise<Record<string, number>> {
  const metrics = await service.registry.getMetricsAsJSON();
  /** The sum of a metric's values, or of those whose `level` or `result` label is `label`. */
  const value = (name: string, label?: string): number =>
    (metrics.find((m) => m.name === name)?.values ?? [])
      .filter((v) => label === undefined || v.labels['level'] === label || v.labels['result'] === label)
      .reduce((sum, v) => sum + v.value, 0);
  return {
    l1Hits: value('obo_cache_hits_total', 'l1'),
    l2Hits: value('obo_cache_hits_total', 'l2'),
    joins: value('obo_cache_joins_total'),
    misses: value('obo_cache_misses_total'),
    l2Errors: value('obo_cache_l2_errors_total'),
    tokenCacheHits: value('obo_token_validation_cache_lookups_total', 'hit'),
    tokenCacheMisses: value('obo_token_validation_cache_lookups_total', 'miss'),
    l1Bytes: value('obo_cache_l1_bytes'),
    l1Entries: value('obo_cache_l1_entries'),
    tokenCacheMaxBytes: value('obo_token_validation_cache_max_bytes'),
    tokenCacheEntries: value('obo_token_validation_cache_entries'),
  };
}

await serveForBench(service.callback(), { counters, close: () => service.close() });
