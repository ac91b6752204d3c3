import { randomBytes, randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { createServer, request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import { InMemorySpanExporter, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { expect } from 'chai';
import { Registry } from 'prom-client';
import { ConfigError, loadConfig, type Environment } from '../../api/config/load-config.js';
import { useEmulator, useRecordingProxy, useRedis, useServices } from '../support/fixtures.js';
import { at } from '../support/json.js';
import { sample } from '../support/metrics.js';
import type { RedisServer } from '../support/redis.js';
import type { TestService } from '../support/service.js';
import { bearer } from '../support/tokens.js';
import { until } from '../support/wait.js';
import { parseChallenge } from '../support/www-authenticate.js';

const TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736';
const CALLER_SPAN_ID = '00f067aa0ba902b7';
const TRACEPARENT = `00-${TRACE_ID}-${CALLER_SPAN_ID}-01`;

interface LogLine {
  level: number;
  msg: string;
  [field: string]: unknown;
}

function logLines(api: TestService): LogLine[] {
  return api.logs.map((line) => JSON.parse(line) as LogLine);
}

function requestLines(api: TestService): LogLine[] {
  return logLines(api).filter((line) => line.msg === 'request');
}

describe('production readiness', () => {
  const emulator = useEmulator();
  // Each test starts the services it needs, with its own settings; they are closed after it.
  const services = useServices(emulator);
  const service = (env: Environment = {}, deps: Parameters<typeof services.start>[1] = {}) => services.start(env, deps);
  afterEach(() => {
    emulator.faults.clear();
    emulator.reset();
  });

  describe('request logs', () => {
    it('writes one line per request: method, route, status, duration, ids, tenant, user reference, cache level, exchange time', async () => {
      const api = await service({ LOG_LEVEL: 'info' });
      const token = emulator.mint({ user: 'alice' });
      const first = await api.request.get('/api/me').set(bearer(token)).expect(200);
      await api.request.get('/api/me').set(bearer(token)).expect(200);
      await api.request.get('/nope').expect(404);

      const lines = requestLines(api);
      expect(lines).to.have.length(3);
      const [exchanged, cached, missing] = lines as [LogLine, LogLine, LogLine];
      expect(exchanged).to.include({ method: 'GET', route: '/api/me', path: '/api/me', status: 200, cache: 'exchange' });
      expect(exchanged['requestId']).to.equal(first.headers['x-request-id']);
      expect(exchanged['tenantId']).to.equal(emulator.users.alice.tid);
      expect(exchanged['user']).to.match(/^[0-9a-f]{16}$/);
      expect(exchanged['exchangeMs']).to.be.a('number').greaterThan(0);
      expect(exchanged['durationMs'])
        .to.be.a('number')
        .at.least(exchanged['exchangeMs'] as number);
      expect(cached).to.include({ status: 200, cache: 'l1', user: exchanged['user'] });
      expect(cached).not.to.have.property('exchangeMs');
      expect(missing).to.include({ method: 'GET', path: '/nope', status: 404 });
      expect(missing).not.to.have.property('route');
      // The user reference is not the oid, and the oid appears in no line at all.
      for (const line of api.logs) expect(line).not.to.include(emulator.users.alice.oid);
    });

    it('logs the raw oid only with LOG_USER_IDS=on', async () => {
      const api = await service({ LOG_LEVEL: 'info', LOG_USER_IDS: 'on' });
      await api.request
        .get('/api/me')
        .set(bearer(emulator.mint({ user: 'bob' })))
        .expect(200);
      const [line] = requestLines(api);
      expect(line).to.include({ userId: emulator.users.bob.oid, tenantId: emulator.users.bob.tid });
      expect(line).not.to.have.property('user');
    });

    it('logs the cache level and exchange time of a failed exchange too', async () => {
      const api = await service({ LOG_LEVEL: 'info' });
      emulator.setUser('alice', { mfaRequired: true });
      await api.request
        .get('/api/me')
        .set(bearer(emulator.mint({ user: 'alice' })))
        .expect(401);
      const [line] = requestLines(api);
      expect(line).to.include({ status: 401, cache: 'exchange' });
      expect(line?.['exchangeMs']).to.be.a('number');
    });

    it('redacts Authorization and cookies wherever a logged object carries them', async () => {
      const api = await service({ LOG_LEVEL: 'info' });
      const secret = `secret-${randomUUID()}`;
      api.service.logger.info(
        {
          req: { headers: { authorization: `Bearer ${secret}`, cookie: `session=${secret}` } },
          headers: { authorization: secret, cookie: secret, 'set-cookie': secret },
          upstream: { authorization: secret, cookie: secret, headers: { authorization: secret } },
          authorization: secret,
          cookie: secret,
        },
        'carrying secrets',
      );
      const line = api.logs.find((text) => text.includes('carrying secrets')) ?? '';
      expect(line).to.include('[redacted]');
      expect(line).not.to.include(secret);
    });

    it('honours LOG_LEVEL', async () => {
      const api = await service({ LOG_LEVEL: 'warn' });
      await api.request.get('/healthz').expect(200);
      await api.request.get('/nope').expect(404);
      expect(requestLines(api)).to.deep.equal([]);
      expect(logLines(api).every((line) => line.level >= 40)).to.equal(true);
    });

    it("takes the caller's request id (x-request-id, then x-ms-client-request-id), replaces unsafe ones, and returns it", async () => {
      const api = await service();
      const own = await api.request.get('/healthz').set('x-request-id', 'order-42.retry:1').expect(200);
      expect(own.headers['x-request-id']).to.equal('order-42.retry:1');

      const correlation = randomUUID();
      emulator.resetCounters();
      const viaMs = await api.request.get('/api/me').set(bearer(emulator.mint())).set('x-ms-client-request-id', correlation).expect(200);
      expect(viaMs.headers['x-request-id']).to.equal(correlation);
      const graphCall = emulator.requests().find((entry) => entry.server === 'graph');
      expect(graphCall?.clientRequestId, 'the id Graph received').to.equal(correlation);

      const unsafe = await api.request.get('/healthz').set('x-request-id', 'has spaces and "quotes"').expect(200);
      expect(unsafe.headers['x-request-id']).to.match(/^[0-9a-f-]{36}$/);
      const generated = await api.request.get('/healthz').expect(200);
      expect(generated.headers['x-request-id'])
        .to.match(/^[0-9a-f-]{36}$/)
        .and.not.equal(unsafe.headers['x-request-id']);
    });

    describe('trace context with tracing off', () => {
      const proxy = useRecordingProxy(() => emulator.graphBaseUrl, { each: true });

      it('passes a valid traceparent and tracestate to Graph unchanged, and logs the trace id', async () => {
        const api = await service({ GRAPH_BASE_URL: proxy.url, LOG_LEVEL: 'info' });
        await api.request.get('/api/me').set(bearer(emulator.mint())).set({ traceparent: TRACEPARENT, tracestate: 'vendor=abc' }).expect(200);
        expect(proxy.requests).to.have.length(1);
        expect(proxy.requests[0]?.headers['traceparent']).to.equal(TRACEPARENT);
        expect(proxy.requests[0]?.headers['tracestate']).to.equal('vendor=abc');
        expect(requestLines(api)[0]).to.include({ traceId: TRACE_ID });
      });

      it('forwards no trace context when the caller sent none or an invalid one', async () => {
        const api = await service({ GRAPH_BASE_URL: proxy.url });
        const token = emulator.mint();
        await api.request.get('/api/me').set(bearer(token)).expect(200);
        await api.request
          .get('/api/me')
          .set(bearer(token))
          .set('traceparent', `00-${'0'.repeat(32)}-${CALLER_SPAN_ID}-01`)
          .expect(200);
        await api.request.get('/api/me').set(bearer(token)).set('traceparent', 'ff-not-a-trace').expect(200);
        expect(proxy.requests).to.have.length(3);
        for (const recorded of proxy.requests) expect(recorded.headers).not.to.have.property('traceparent');
      });

      it('through the proxy too: a valid trace context unchanged, an invalid one never, whatever the caller sent', async () => {
        const api = await service({ GRAPH_BASE_URL: proxy.url });
        const token = emulator.mint();
        await api.request.get('/api/graph/v1.0/me').set(bearer(token)).set({ traceparent: TRACEPARENT, tracestate: 'vendor=abc' }).expect(200);
        await api.request.get('/api/graph/v1.0/me').set(bearer(token)).set({ traceparent: 'ff-not-a-trace', tracestate: 'vendor=abc' }).expect(200);
        expect(proxy.requests).to.have.length(2);
        expect(proxy.requests[0]?.headers).to.include({ traceparent: TRACEPARENT, tracestate: 'vendor=abc' });
        expect(proxy.requests[1]?.headers).not.to.have.any.keys('traceparent', 'tracestate');
      });
    });
  });

  describe('metrics', () => {
    it('serves HTTP, cache, exchange, Graph and Node process metrics from its own registry', async () => {
      const api = await service();
      const token = emulator.mint({ user: 'alice' });
      await api.request.get('/api/me').set(bearer(token)).expect(200);
      await api.request.get('/api/me').set(bearer(token)).expect(200);
      await api.request.get('/no/such/path').expect(404);
      const text = (await api.request.get('/metrics').expect(200)).text;

      expect(sample(text, 'http_requests_total', { method: 'GET', route: '/api/me', status: '200' })).to.equal(2);
      expect(sample(text, 'http_request_duration_seconds_count', { method: 'GET', route: '/api/me', status: '200' })).to.equal(2);
      expect(sample(text, 'http_requests_total', { method: 'GET', route: 'unmatched', status: '404' })).to.equal(1);
      expect(sample(text, 'obo_cache_hits_total', { level: 'l1' })).to.equal(1);
      expect(sample(text, 'obo_cache_misses_total')).to.equal(1);
      expect(sample(text, 'obo_exchanges_total', { outcome: 'ok' })).to.equal(1);
      expect(sample(text, 'obo_downstream_requests_total', { downstream: 'graph', method: 'GET', status: '200' })).to.equal(2);
      expect(sample(text, 'obo_downstream_latency_seconds_count', { downstream: 'graph', method: 'GET', status: '200' })).to.equal(2);
      expect(sample(text, 'process_cpu_user_seconds_total')).to.be.a('number');
      expect(sample(text, 'nodejs_heap_size_used_bytes')).to.be.greaterThan(0);
      expect(sample(text, 'nodejs_eventloop_lag_seconds')).to.be.a('number');
    });

    it('keeps each service on its own registry', async () => {
      const registry = new Registry();
      const api = await service({}, { registry });
      await api.request.get('/healthz').expect(200);
      const other = await service();
      expect(sample(await registry.metrics(), 'http_requests_total', { route: '/healthz' })).to.equal(1);
      expect(sample((await other.request.get('/metrics')).text, 'http_requests_total', { route: '/healthz' })).to.equal(undefined);
    });

    it("counts failed exchanges by Entra's error and AADSTS code, and Graph answers by status", async () => {
      const api = await service();
      emulator.setUser('alice', { mfaRequired: true });
      await api.request
        .get('/api/me')
        .set(bearer(emulator.mint({ user: 'alice' })))
        .expect(401);
      emulator.faults.injectGraph({ path: '/v1.0/me', status: 403, code: 'Authorization_RequestDenied', times: 1 });
      await api.request
        .get('/api/me')
        .set(bearer(emulator.mint({ user: 'bob' })))
        .expect(403);
      const text = (await api.request.get('/metrics').expect(200)).text;
      // Entra answers "MFA required" with invalid_grant and AADSTS50076.
      expect(sample(text, 'obo_exchanges_total', { outcome: 'error', error: 'invalid_grant', aadsts: '50076' })).to.equal(1);
      expect(sample(text, 'obo_downstream_requests_total', { downstream: 'graph', status: '403' })).to.equal(1);
    });

    it('wants METRICS_TOKEN as a bearer token when it is set', async () => {
      const metricsToken = randomBytes(24).toString('base64url');
      const api = await service({ METRICS_TOKEN: metricsToken });
      const missing = await api.request.get('/metrics').expect(401);
      expect(parseChallenge(missing.headers['www-authenticate']).scheme).to.equal('Bearer');
      await api.request
        .get('/metrics')
        .set(bearer(`${metricsToken}x`))
        .expect(401);
      await api.request.get('/metrics').set(bearer(emulator.mint())).expect(401);
      const allowed = await api.request.get('/metrics').set(bearer(metricsToken)).expect(200);
      expect(allowed.text).to.include('http_requests_total');
    });
  });

  describe('tracing', () => {
    const proxy = useRecordingProxy(() => emulator.graphBaseUrl, { each: true });

    function byName(spans: ReadableSpan[], name: string): ReadableSpan {
      const found = spans.filter((span) => span.name === name);
      expect(found, `spans named "${name}"`).to.have.length(1);
      return found[0] as ReadableSpan;
    }
    const parentOf = (span: ReadableSpan) => span.parentSpanContext?.spanId;
    const idOf = (span: ReadableSpan) => span.spanContext().spanId;

    it('records validation, cache lookup, exchange and Graph call spans under the request span, continuing the caller’s trace', async () => {
      const exporter = new InMemorySpanExporter();
      const api = await service({ GRAPH_BASE_URL: proxy.url, OTEL_TRACES_SAMPLER: 'parentbased_always_on' }, { traceExporter: exporter });
      const token = emulator.mint({ user: 'alice' });
      await api.request.get('/api/me').set(bearer(token)).set('traceparent', TRACEPARENT).expect(200);

      const spans = exporter.getFinishedSpans();
      const server = byName(spans, 'GET /api/me');
      const validation = byName(spans, 'validate access token');
      const lookup = byName(spans, 'token cache lookup');
      const exchange = byName(spans, 'OBO exchange');
      const graph = byName(spans, 'GET graph');
      for (const span of spans) expect(span.spanContext().traceId, span.name).to.equal(TRACE_ID);
      expect(parentOf(server)).to.equal(CALLER_SPAN_ID);
      expect(parentOf(validation)).to.equal(idOf(server));
      expect(parentOf(lookup)).to.equal(idOf(server));
      expect(parentOf(exchange)).to.equal(idOf(lookup));
      expect(parentOf(graph)).to.equal(idOf(server));
      expect(lookup.attributes['obo.cache.source']).to.equal('created');
      expect(server.attributes['http.route']).to.equal('/api/me');
      expect(server.attributes['http.response.status_code']).to.equal(200);
      expect(graph.attributes['http.response.status_code']).to.equal(200);
      // Graph got our span as its parent, not the caller's.
      expect(proxy.requests[0]?.headers['traceparent']).to.equal(`00-${TRACE_ID}-${idOf(graph)}-01`);

      exporter.reset();
      await api.request.get('/api/me').set(bearer(token)).expect(200);
      const again = exporter.getFinishedSpans();
      expect(again.map((span) => span.name).sort()).to.deep.equal(['GET /api/me', 'GET graph', 'token cache lookup', 'validate access token']);
      const newTrace = byName(again, 'GET /api/me');
      expect(newTrace.spanContext().traceId, 'a new trace without a traceparent').not.to.equal(TRACE_ID);
      expect(parentOf(newTrace)).to.equal(undefined);
      expect(byName(again, 'token cache lookup').attributes['obo.cache.source']).to.equal('l1');
    });

    it('exports spans over OTLP/HTTP to OTEL_EXPORTER_OTLP_ENDPOINT, flushed when the service closes', async () => {
      const received: { path: string; body: string }[] = [];
      const collector = createServer((req, res) => {
        let body = '';
        req.on('data', (chunk: Buffer) => (body += chunk.toString('utf8')));
        req.on('end', () => {
          received.push({ path: req.url ?? '', body });
          res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
        });
      });
      collector.listen(0, '127.0.0.1');
      await once(collector, 'listening');
      try {
        const endpoint = `http://127.0.0.1:${(collector.address() as AddressInfo).port}`;
        const api = await service({ OTEL_EXPORTER_OTLP_ENDPOINT: endpoint, OTEL_SERVICE_NAME: 'obo-under-test', OTEL_TRACES_SAMPLER: 'always_on' });
        await api.request.get('/api/me').set(bearer(emulator.mint())).set('traceparent', TRACEPARENT).expect(200);
        await services.close(api); // flushes the exporter
        expect(received.map((request) => request.path)).to.include('/v1/traces');
        const exported = received.map((request) => request.body).join('\n');
        expect(exported).to.include('obo-under-test');
        expect(exported).to.include('OBO exchange');
        expect(exported).to.include(TRACE_ID);
      } finally {
        collector.close();
      }
    });

    it('marks a failed exchange and a refused token on their spans with the stable error code', async () => {
      const exporter = new InMemorySpanExporter();
      const api = await service({ OTEL_TRACES_SAMPLER: 'always_on' }, { traceExporter: exporter });
      emulator.setUser('alice', { mfaRequired: true });
      await api.request
        .get('/api/me')
        .set(bearer(emulator.mint({ user: 'alice' })))
        .expect(401);
      await api.request
        .get('/api/me')
        .set(bearer(emulator.mint({ aud: 'api://someone-else' })))
        .expect(401);
      const spans = exporter.getFinishedSpans();
      const exchange = byName(spans, 'OBO exchange');
      expect(exchange.status.code).to.equal(2); // ERROR
      expect(exchange.attributes['error.type']).to.equal('insufficient_claims');
      const validations = spans.filter((span) => span.name === 'validate access token');
      expect(validations.map((span) => span.attributes['error.type'])).to.deep.equal([undefined, 'invalid_token']);
    });
  });

  describe('CORS', () => {
    const SPA = 'https://spa.example.com';

    it('answers an allowed origin’s preflight without authentication', async () => {
      const api = await service({ CORS_ALLOWED_ORIGINS: `${SPA}, https://other.example.com` });
      emulator.resetCounters();
      const preflight = await api.request
        .options('/api/me')
        .set({ origin: SPA, 'access-control-request-method': 'GET', 'access-control-request-headers': 'authorization' })
        .expect(204);
      expect(preflight.headers['access-control-allow-origin']).to.equal(SPA);
      expect(preflight.headers['access-control-allow-headers']).to.match(/authorization/i);
      expect(preflight.headers['access-control-allow-methods']).to.include('GET');
      expect(preflight.headers['access-control-max-age']).to.equal('600');
      expect(preflight.headers).not.to.have.property('access-control-allow-credentials');
      expect(preflight.headers).not.to.have.property('www-authenticate');
      expect(emulator.counters.token + emulator.counters.graph).to.equal(0);
    });

    it('lets an allowed origin read WWW-Authenticate, Retry-After and x-request-id', async () => {
      const api = await service({ CORS_ALLOWED_ORIGINS: SPA });
      const denied = await api.request.get('/api/me').set('origin', SPA).expect(401);
      expect(denied.headers['access-control-allow-origin']).to.equal(SPA);
      const exposed = String(denied.headers['access-control-expose-headers']).toLowerCase().split(',');
      expect(exposed).to.include.members(['www-authenticate', 'retry-after', 'x-request-id']);
      expect(denied.headers['vary']).to.match(/origin/i);
    });

    it('gives other origins, and every origin by default, no CORS headers', async () => {
      const configured = await service({ CORS_ALLOWED_ORIGINS: SPA });
      const byDefault = await service();
      for (const api of [configured, byDefault]) {
        for (const origin of ['https://evil.example.com', `${SPA}.evil.example.com`, 'null']) {
          const preflight = await api.request.options('/api/me').set({ origin, 'access-control-request-method': 'GET' });
          expect(preflight.headers, origin).not.to.have.property('access-control-allow-origin');
          const get = await api.request.get('/healthz').set('origin', origin).expect(200);
          expect(get.headers, origin).not.to.have.property('access-control-allow-origin');
        }
      }
      const allowedByDefault = await byDefault.request.get('/healthz').set('origin', SPA).expect(200);
      expect(allowedByDefault.headers).not.to.have.property('access-control-allow-origin');
    });
  });

  describe('hardening', () => {
    const EXPECTED_HEADERS = {
      'x-content-type-options': 'nosniff',
      'x-frame-options': 'DENY',
      'referrer-policy': 'no-referrer',
      'cache-control': 'no-store',
    };

    it('sets security headers on every response: success, errors, preflights and 429s', async () => {
      // Counted per IP: the four requests before the 413 (preflights and refused bodies are not).
      const api = await service({ CORS_ALLOWED_ORIGINS: 'https://spa.example.com', RATE_LIMIT_IP_PER_MINUTE: '4', REQUEST_BODY_MAX_BYTES: '1024' });
      const responses = [
        await api.request.get('/').expect(200),
        await api.request.get('/api/me').set(bearer(emulator.mint())).expect(200),
        await api.request.get('/api/me').expect(401),
        await api.request.get('/nope').expect(404),
        await api.request.options('/api/me').set({ origin: 'https://spa.example.com', 'access-control-request-method': 'GET' }).expect(204),
        await api.request.post('/api/me').set('content-type', 'text/plain').send('x'.repeat(2048)).expect(413),
        await api.request.get('/').expect(429),
      ];
      for (const [index, response] of responses.entries()) {
        const { 'cache-control': cacheControl, ...others } = EXPECTED_HEADERS;
        expect(response.headers, `${response.status}`).to.include(others);
        // Graph's answer is relayed with Graph's own Cache-Control; everything of ours is no-store.
        if (index === 1) expect(response.headers['cache-control']).to.be.a('string');
        else expect(response.headers['cache-control']).to.equal(cacheControl);
        expect(response.headers['content-security-policy']).to.include("default-src 'none'");
        expect(response.headers['strict-transport-security']).to.match(/^max-age=\d+/);
      }
    });

    it('serves only a short JSON description on /', async () => {
      const api = await service();
      const root = await api.request.get('/').expect(200).expect('content-type', /json/);
      expect(root.body).to.have.keys(['name', 'description', 'openapi']);
      expect(root.text.length).to.be.lessThan(300);
      await api.request.get('/index.html').expect(404);
    });

    it('refuses request bodies over REQUEST_BODY_MAX_BYTES (413) and bodies without a length (411), before authentication', async () => {
      const api = await service({ REQUEST_BODY_MAX_BYTES: '1024' });
      emulator.resetCounters();
      const tooLarge = await api.request
        .post('/api/me')
        .set('content-type', 'application/json')
        .send(JSON.stringify({ pad: 'x'.repeat(2000) }));
      expect(tooLarge.status).to.equal(413);
      expect(at(tooLarge.body, 'error')).to.equal('payload_too_large');
      const chunked = await chunkedPost(api.baseUrl, '/api/me', 'hello');
      expect(chunked.status).to.equal(411);
      expect(at(JSON.parse(chunked.body), 'error')).to.equal('length_required');
      const small = await api.request.post('/api/me').set('content-type', 'application/json').send('{}');
      expect(small.status, 'a small body goes on to authentication').to.equal(401);
      expect(emulator.counters.token).to.equal(0);
    });

    it('limits each client address with RATE_LIMIT_IP_PER_MINUTE: 429 with Retry-After, probes exempt', async () => {
      const api = await service({ RATE_LIMIT_IP_PER_MINUTE: '3' });
      for (let i = 0; i < 3; i++) await api.request.get('/').expect(200);
      const limited = await api.request.get('/').expect(429);
      expect(limited.body).to.deep.equal({ error: 'rate_limited', message: 'Too many requests; retry after the time in the Retry-After header.' });
      const retryAfter = Number(limited.headers['retry-after']);
      expect(retryAfter).to.be.within(1, 60);
      await api.request.get('/api/me').set(bearer(emulator.mint())).expect(429);
      for (let i = 0; i < 5; i++) {
        await api.request.get('/healthz').expect(200);
        await api.request.get('/readyz').expect(200);
      }
    });

    it('counts clients behind a trusted proxy separately with TRUST_PROXY_HOPS, and only then', async () => {
      const trusting = await service({ RATE_LIMIT_IP_PER_MINUTE: '2', TRUST_PROXY_HOPS: '1' });
      const hit = (api: TestService, client: string) => api.request.get('/').set('x-forwarded-for', `203.0.113.9, ${client}`);
      for (const client of ['198.51.100.1', '198.51.100.2']) {
        expect((await hit(trusting, client)).status).to.equal(200);
        expect((await hit(trusting, client)).status).to.equal(200);
      }
      expect((await hit(trusting, '198.51.100.1')).status).to.equal(429);
      // App Service forwards address:port; another port is the same client.
      expect((await hit(trusting, '198.51.100.2:51234')).status).to.equal(429);
      expect((await hit(trusting, '[2001:db8::7]:443')).status).to.equal(200);

      const untrusting = await service({ RATE_LIMIT_IP_PER_MINUTE: '2' });
      expect((await hit(untrusting, '198.51.100.1')).status).to.equal(200);
      expect((await hit(untrusting, '198.51.100.2')).status).to.equal(200);
      expect((await hit(untrusting, '198.51.100.3')).status, 'everyone shares the proxy’s address').to.equal(429);
      expect(untrusting.logs.some((line) => line.includes('TRUST_PROXY_HOPS is 0'))).to.equal(true);
    });

    it('limits each user with RATE_LIMIT_PER_MINUTE, whatever token they use', async () => {
      const api = await service({ RATE_LIMIT_PER_MINUTE: '2', RATE_LIMIT_IP_PER_MINUTE: '0' });
      await api.request
        .get('/api/me')
        .set(bearer(emulator.mint({ user: 'alice' })))
        .expect(200);
      await api.request
        .get('/api/me')
        .set(bearer(emulator.mint({ user: 'alice' })))
        .expect(200);
      const limited = await api.request
        .get('/api/me')
        .set(bearer(emulator.mint({ user: 'alice' })))
        .expect(429);
      expect(Number(limited.headers['retry-after'])).to.be.within(1, 60);
      await api.request
        .get('/api/me')
        .set(bearer(emulator.mint({ user: 'bob' })))
        .expect(200);
    });

    describe('with Redis', () => {
      const redis = useRedis();

      it('shares the counts between instances', async () => {
        const env = {
          REDIS_URL: redis.url,
          CACHE_ENCRYPTION_KEYS: `k1:${randomBytes(32).toString('base64')}`,
          CACHE_KEY_PREFIX: `rl-${randomUUID()}:`,
          RATE_LIMIT_PER_MINUTE: '3',
          RATE_LIMIT_IP_PER_MINUTE: '0',
        };
        const first = await service(env);
        const second = await service(env);
        const me = (api: TestService) => api.request.get('/api/me').set(bearer(emulator.mint({ user: 'alice' })));
        await waitForRedisConnections(redis, 'obo-cache', 4); // each instance: the cache's and the limiter's
        expect((await me(first)).status).to.equal(200);
        expect((await me(second)).status).to.equal(200);
        expect((await me(first)).status).to.equal(200);
        expect((await me(second)).status, 'the fourth request, counted across both instances').to.equal(429);
        const keys = await redis.client().keys(`${env.CACHE_KEY_PREFIX}rl:*`);
        expect(keys.length).to.be.greaterThan(0);
        for (const key of keys) expect(key).not.to.include(emulator.users.alice.oid);
      });
    });
  });

  describe('configuration of the production settings', () => {
    const base: Environment = { AZURE_TENANT_ID: '72f988bf-86f1-41af-91ab-2d7cd011db47', AZURE_CLIENT_ID: 'client', AZURE_CLIENT_SECRET: 's' };

    function problems(env: Environment): string[] {
      try {
        loadConfig({ ...base, ...env });
      } catch (error) {
        if (error instanceof ConfigError) return error.problems;
        throw error;
      }
      return [];
    }

    it('has safe defaults', () => {
      const config = loadConfig(base);
      expect(config.http).to.deep.equal({ corsAllowedOrigins: [], requestBodyMaxBytes: 1024 * 1024, trustProxyHops: 0 });
      expect(config.rateLimit).to.deep.equal({ perUser: 0, perIp: 0 });
      expect(loadConfig({ ...base, RATE_LIMIT_PER_MINUTE: '120' }).rateLimit).to.deep.equal({ perUser: 120, perIp: 120 });
      expect(config.observability).to.deep.equal({
        logUserIds: false,
        serviceName: 'obo-middle-tier',
        sampler: { name: 'traceidratio', ratio: 0.1 },
      });
      expect(config.shutdownTimeoutMs).to.equal(10_000);
    });

    it('reads every production variable', () => {
      const config = loadConfig({
        ...base,
        CORS_ALLOWED_ORIGINS: 'https://a.example.com, http://localhost:5173',
        REQUEST_BODY_MAX_BYTES: '2048',
        TRUST_PROXY_HOPS: '2',
        RATE_LIMIT_PER_MINUTE: '0',
        RATE_LIMIT_IP_PER_MINUTE: '100',
        LOG_USER_IDS: 'on',
        METRICS_TOKEN: 'a-long-enough-metrics-token',
        OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318/',
        OTEL_SERVICE_NAME: 'obo-eu',
        OTEL_TRACES_SAMPLER: 'ParentBased_TraceIdRatio',
        OTEL_TRACES_SAMPLER_ARG: '0.25',
        SHUTDOWN_TIMEOUT_MS: '25000',
      });
      expect(config.http).to.deep.equal({
        corsAllowedOrigins: ['https://a.example.com', 'http://localhost:5173'],
        requestBodyMaxBytes: 2048,
        trustProxyHops: 2,
      });
      expect(config.rateLimit).to.deep.equal({ perUser: 0, perIp: 100 });
      expect(config.observability).to.deep.equal({
        logUserIds: true,
        metricsToken: 'a-long-enough-metrics-token',
        otlpEndpoint: 'http://collector:4318',
        serviceName: 'obo-eu',
        sampler: { name: 'parentbased_traceidratio', ratio: 0.25 },
      });
      expect(config.shutdownTimeoutMs).to.equal(25_000);
    });

    it('names each bad value, and never echoes the metrics token', () => {
      const found = problems({
        CORS_ALLOWED_ORIGINS: '*, https://a.example.com/app',
        METRICS_TOKEN: 'short-secret',
        OTEL_EXPORTER_OTLP_ENDPOINT: 'collector:4318',
        RATE_LIMIT_PER_MINUTE: '-1',
        RATE_LIMIT_IP_PER_MINUTE: 'many',
        REQUEST_BODY_MAX_BYTES: '0',
        TRUST_PROXY_HOPS: '11',
        LOG_USER_IDS: 'yes',
        SHUTDOWN_TIMEOUT_MS: '1h',
      });
      const named = found.map((problem) => problem.split(':')[0]);
      expect(named.filter((name) => name === 'CORS_ALLOWED_ORIGINS')).to.have.length(2);
      expect(named).to.include.members([
        'METRICS_TOKEN',
        'OTEL_EXPORTER_OTLP_ENDPOINT',
        'RATE_LIMIT_PER_MINUTE',
        'RATE_LIMIT_IP_PER_MINUTE',
        'REQUEST_BODY_MAX_BYTES',
        'TRUST_PROXY_HOPS',
        'LOG_USER_IDS',
        'SHUTDOWN_TIMEOUT_MS',
      ]);
      expect(found.join('\n')).not.to.include('short-secret');
    });
  });
});

/** A POST whose body is sent chunked (no Content-Length), which supertest cannot do. */
function chunkedPost(baseUrl: string, path: string, body: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(new URL(path, baseUrl), { method: 'POST', headers: { 'content-type': 'text/plain' } }, (res) => {
      let text = '';
      res.on('data', (chunk: Buffer) => (text += chunk.toString('utf8')));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    req.on('error', reject);
    req.write(body);
    req.end();
  });
}

/** Waits until `count` connections named `name` are up (until then the limiters count in memory). */
async function waitForRedisConnections(redis: RedisServer, name: string, count: number): Promise<void> {
  const client = redis.client();
  await until(
    `${count} Redis connections named ${name}`,
    async () => {
      const list = String(await client.client('LIST'));
      return list.split('\n').filter((line) => line.includes(` name=${name} `)).length >= count;
    },
    4_000,
  );
}
