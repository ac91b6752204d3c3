import { createHash, timingSafeEqual } from 'node:crypto';
import type { Context } from 'koa';
import type { Registry } from 'prom-client';
import { InvalidTokenError, MissingCredentialsError } from '../errors.js';

/**
 * GET /metrics: the app's registry in Prometheus text format. With METRICS_TOKEN set, only a
 * scraper presenting `Authorization: Bearer <METRICS_TOKEN>` gets it (compared in constant time).
 */
export function metricsRoute(registry: Registry, token: string | undefined) {
  const expected = token === undefined ? undefined : digest(token);
  return async function metrics(ctx: Context): Promise<void> {
    if (expected) {
      const presented = /^bearer +(\S+)$/i.exec(ctx.get('authorization'))?.[1];
      if (presented === undefined) throw new MissingCredentialsError('metrics');
      if (!timingSafeEqual(digest(presented), expected)) throw new InvalidTokenError('The metrics token is not valid.');
    }
    ctx.type = registry.contentType;
    ctx.body = await registry.metrics();
  };
}

function digest(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}
