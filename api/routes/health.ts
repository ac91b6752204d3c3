import type { Context } from 'koa';
import type { TieredCache } from '../../cache/index.js';
import type { OpenIdMetadataSource } from '../../middleware/bearer/openid-metadata.js';

/** GET /healthz: the process is alive. Never depends on anything outside it. */
export function livenessRoute() {
  return function liveness(ctx: Context): void {
    ctx.body = { status: 'ok' };
  };
}

/**
 * GET /readyz: 200 once the authority's metadata has loaded (tokens can be validated);
 * 503 before. A degraded Redis is reported but does not make the instance unready: the
 * service keeps answering from L1 and the exchange.
 */
export function readinessRoute(metadata: OpenIdMetadataSource, cache: TieredCache<unknown>) {
  return async function readiness(ctx: Context): Promise<void> {
    const metadataReady = await metadata.get().then(
      () => true,
      () => false,
    );
    const cacheHealth = cache.health();
    ctx.status = metadataReady ? 200 : 503;
    ctx.body = {
      status: metadataReady ? (cacheHealth.l2 === 'degraded' ? 'degraded' : 'ready') : 'unavailable',
      checks: {
        authorityMetadata: metadataReady ? 'up' : 'down',
        cacheL1: 'up',
        cacheL2: cacheHealth.l2,
        ...(cacheHealth.detail ? { cacheL2Detail: cacheHealth.detail } : {}),
      },
    };
  };
}
