/**
 * The reference: what a user writes in ten lines with Koa, @koa/router and jose. It verifies
 * every token (RS256, issuer, audience), checks the scope, then answers 204. Every ratio the
 * bench prints is against this. Configured by bench/run.ts through BENCH_JWKS_URL,
 * BENCH_ISSUER, BENCH_AUDIENCE and BENCH_SCOPE.
 */
import Router from '@koa/router';
import { createRemoteJWKSet, jwtVerify } from 'jose';
import Koa from 'koa';
import { serveForBench } from './server-harness.js';

const env = (name: string): string => process.env[name] ?? '';
const jwks = createRemoteJWKSet(new URL(env('BENCH_JWKS_URL')));
const router = new Router();
router.get('/token', async (ctx) => {
  const token = /^Bearer (.+)$/.exec(ctx.get('authorization'))?.[1];
  if (!token) return void (ctx.status = 401);
  try {
    const { payload } = await jwtVerify(token, jwks, { issuer: env('BENCH_ISSUER'), audience: env('BENCH_AUDIENCE'), algorithms: ['RS256'] });
    ctx.status = typeof payload['scp'] === 'string' && payload['scp'].split(' ').includes(env('BENCH_SCOPE')) ? 204 : 403;
  } catch {
    ctx.status = 401;
  }
});
const app = new Koa().use(router.routes());
await serveForBench(app.callback());
