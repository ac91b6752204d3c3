/**
 * One API instance for the benchmark, in its own process so its RSS and CPU are its own.
 * It is the production service (createApp from the environment) plus bench-only routes:
 *
 *   GET /bench/ceiling  validates the token, then 204: the most any authenticated route can do
 *   GET /bench/token    validates, acquires the Graph token through the full cache path, then 204
 *   GET /bench/acquire-cost?n=N  times N sequential acquisitions of the caller's Graph token
 *   GET /bench/stats    this process's memory and CPU time, and the cache counters (no auth;
 *                       `?gc` collects garbage first)
 *
 * Started by bench/run.ts with fork(); it reports `{ port }` over IPC once listening, and exits
 * when its parent goes away.
 */
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createApp } from '../api/app.js';
import { loadConfig } from '../api/config/load-config.js';
import type { AuthState } from '../middleware/authenticate.js';

export interface InstanceStats {
  rssBytes: number;
  /** V8's heap: what live objects (and not yet collected garbage) use, and what it holds from the OS. */
  heapUsedBytes: number;
  heapTotalBytes: number;
  /** User + system CPU time since the process started, microseconds. */
  cpuMicros: number;
  l1Bytes: number;
  l1Entries: number;
  /** Cumulative cache counters: hits by level, joins of another caller's flight, misses, L2 failures. */
  cache: { l1Hits: number; l2Hits: number; joins: number; misses: number; l2Errors: number };
}

/** Sequential acquisitions of one caller's token, timed in this process. */
export interface AcquireCost {
  count: number;
  p50Micros: number;
  meanMicros: number;
}

const config = loadConfig(process.env);
const service = createApp(config);

service.router.get('/bench/ceiling', service.authenticate, (ctx) => {
  ctx.status = 204;
});
service.router.get('/bench/token', service.authenticate, async (ctx) => {
  await service.tokens.acquire((ctx.state as AuthState).auth, config.graph.scopes);
  ctx.status = 204;
});
service.router.get('/bench/acquire-cost', service.authenticate, async (ctx) => {
  const caller = (ctx.state as AuthState).auth;
  const count = Math.min(Math.max(Number(ctx.query['n']) || 1_000, 2), 100_000);
  // The first one may exchange (a new token) or fill L1; the rest are what is timed.
  await service.tokens.acquire(caller, config.graph.scopes);
  const micros = new Float64Array(count);
  for (let i = 0; i < count; i++) {
    const started = performance.now();
    await service.tokens.acquire(caller, config.graph.scopes);
    micros[i] = (performance.now() - started) * 1000;
  }
  micros.sort();
  const cost: AcquireCost = { count, p50Micros: micros[count >> 1] ?? 0, meanMicros: micros.reduce((sum, m) => sum + m, 0) / count };
  ctx.body = cost;
});
service.router.get('/bench/stats', async (ctx) => {
  // `?gc`: a full collection first (run.ts starts us with --expose-gc), to tell live memory from garbage.
  if (ctx.query['gc'] !== undefined) (globalThis as { gc?: () => void }).gc?.();
  const metrics = await service.registry.getMetricsAsJSON();
  /** The sum of a metric's values, or of those whose label `level` is `level`. */
  const value = (name: string, level?: string): number =>
    (metrics.find((m) => m.name === name)?.values ?? [])
      .filter((v) => level === undefined || v.labels['level'] === level)
      .reduce((sum, v) => sum + v.value, 0);
  const cpu = process.cpuUsage();
  const memory = process.memoryUsage();
  const stats: InstanceStats = {
    rssBytes: memory.rss,
    heapUsedBytes: memory.heapUsed,
    heapTotalBytes: memory.heapTotal,
    cpuMicros: cpu.user + cpu.system,
    l1Bytes: value('obo_cache_l1_bytes'),
    l1Entries: value('obo_cache_l1_entries'),
    cache: {
      l1Hits: value('obo_cache_hits_total', 'l1'),
      l2Hits: value('obo_cache_hits_total', 'l2'),
      joins: value('obo_cache_joins_total'),
      misses: value('obo_cache_misses_total'),
      l2Errors: value('obo_cache_l2_errors_total'),
    },
  };
  ctx.body = stats;
});

const server = createServer(service.callback());
server.keepAliveTimeout = 65_000;
server.listen(0, '127.0.0.1');
await once(server, 'listening');
process.send?.({ port: (server.address() as AddressInfo).port });

// The parent stops us with a `stop` message, or simply by going away.
async function stop(): Promise<void> {
  server.closeAllConnections();
  server.close();
  await service.close();
  process.exit(0);
}
process.on('message', (message) => {
  if (message === 'stop') void stop();
});
process.on('disconnect', () => void stop());
