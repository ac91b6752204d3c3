import type { Context } from 'koa';
import type { TieredCache } from '../../cache/index.js';
import type { OpenIdMetadataSource } from '../../middleware/bearer/openid-metadata.js';
import type { ThrottleWindows } from '../token/throttle-windows.js';

/** GET /healthz: the process is alive. Never depends on anything outside it, and stays 200 while draining. */
export function livenessRoute() {
  return function liveness(ctx: Context): void {
    ctx.body = { status: 'ok' };
  };
}

/**
 * GET /readyz: 200 once the authority's metadata has loaded (tokens can be validated) and the
 * cache's L2 has connected; 503 before. The wait for L2 is bounded (CACHE_L2_STARTUP_WAIT_MS):
 * past it, an instance whose Redis is down is ready but `degraded`, serving from L1 and the
 * exchange, so a Redis outage never takes the fleet out of rotation. An Entra throttling
 * window in force (seen by any instance, with Redis) is reported as `throttled`; it does not
 * make the instance unready, since cached tokens are still served. Once the process is
 * `draining` (a SIGTERM was received; it still serves for SHUTDOWN_DRAIN_MS) it is 503 whatever
 * the checks say, so load balancers stop sending before it stops accepting.
 */
export function readinessRoute(
  metadata: OpenIdMetadataSource,
  cache: TieredCache<unknown>,
  throttle: ThrottleWindows,
  draining: () => boolean = () => false,
) {
  return async function readiness(ctx: Context): Promise<void> {
    const [metadataReady, throttling] = await Promise.all([
      metadata.get().then(
        () => true,
        () => false,
      ),
      throttle.status(),
    ]);
    const cacheHealth = cache.health();
    const invalidations = cache.invalidations();
    const stopping = draining();
    const ready = !stopping && metadataReady && cacheHealth.l2 !== 'connecting';
    ctx.status = ready ? 200 : 503;
    ctx.body = {
      status: ready ? (cacheHealth.l2 === 'degraded' ? 'degraded' : 'ready') : 'unavailable',
      // Present only while draining, as `throttled` is: the checks below still say what they saw.
      ...(stopping ? { draining: true } : {}),
      checks: {
        authorityMetadata: metadataReady ? 'up' : 'down',
        cacheL1: 'up',
        cacheL2: cacheHealth.l2,
        ...(cacheHealth.detail ? { cacheL2Detail: cacheHealth.detail } : {}),
        // Whether other instances' invalidations are confirmed arriving (else L1 hits are re-checked against L2).
        invalidations: invalidations ? (invalidations.flowing ? 'flowing' : 'interrupted') : 'disabled',
        ...(invalidations?.lastSyncAgeSeconds !== undefined ? { invalidationsLastSyncSeconds: invalidations.lastSyncAgeSeconds } : {}),
      },
      // Present only while a window is open, so a probe that ignores it sees what it always saw.
      ...(throttling.remainingMs > 0
        ? { throttled: true, throttleRetryAfterSeconds: Math.ceil(throttling.remainingMs / 1000), throttleScope: throttling.scope }
        : {}),
    };
  };
}
