/**
 * The floor: the reference (bench/reference-server.ts) with a map of verified tokens in front
 * of jose, keyed by the SHA-256 of the whole token, so a token seen before skips the RSA check
 * (its `exp` is still checked). Unbounded and never evicted: the physical limit of a caching
 * validator on this stack, not something to deploy.
 */
import { createHash } from 'node:crypto';
import Router from '@koa/router';
import { createRemoteJWKSet, jwtVerify, type JWTPayload } from 'jose';
import Koa from 'koa';
import { serveForBench } from './server-harness.js';

const env = (name: string): string => process.env[name] ?? '';
const jwks = createRemoteJWKSet(new URL(env('BENCH_JWKS_URL')));
const verified = new Map<string, JWTPayload>();
const router = new Router();
router.get('/token', async (ctx) => {
  const token = /^Bearer (.+)$/.exec(ctx.get('authorization'))?.[1];
  if (!token) return void (ctx.status = 401);
  const key = createHash('sha256').update(token).digest('base64');
  let payload = verified.get(key);
  if (!payload || (payload.exp ?? 0) * 1000 <= Date.now()) {
    try {
      ({ payload } = await jwtVerify(token, jwks, { issuer: env('BENCH_ISSUER'), audience: env('BENCH_AUDIENCE'), algorithms: ['RS256'] }));
      verified.set(key, payload);
    } catch {
      return void (ctx.status = 401);
    }
  }
  ctx.status = typeof payload['scp'] === 'string' && payload['scp'].split(' ').includes(env('BENCH_SCOPE')) ? 204 : 403;
});
const app = new Koa().use(router.routes());
await serveForBench(app.callback(), { counters: () => ({ verifiedTokens: verified.size }) });
