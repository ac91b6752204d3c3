import { once } from 'node:events';
import { createHash } from 'node:crypto';
import { createServer, request as httpRequest, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { expect } from 'chai';
import { makePhoto } from '../emulator/graph-resources.js';
import { useEmulator, useService, useServices } from '../support/fixtures.js';
import { at, list } from '../support/json.js';
import type { TestService } from '../support/service.js';
import { bearer } from '../support/tokens.js';
import { sleep, until } from '../support/wait.js';

type Json = Record<string, unknown>;

interface RawAnswer {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/** A request whose path is sent exactly as written (supertest and fetch normalise `..`). */
function raw(baseUrl: string, path: string, headers: Record<string, string> = {}, method = 'GET'): Promise<RawAnswer> {
  const { hostname, port } = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ hostname, port, path, method, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** The path and query of a link that points at the service under test. */
function local(link: string, api: TestService): string {
  expect(link.startsWith(`${api.baseUrl}/`), link).to.equal(true);
  return link.slice(api.baseUrl.length);
}

describe('the Graph proxy (/api/graph, /api/downstream) against the emulator', () => {
  const emulator = useEmulator();
  /** A downstream that is not Graph: streams slowly, redirects, sends cookies (DOWNSTREAM_APIS "files"). */
  let files: Server;
  let filesBase: string;
  let releaseBody: (() => void) | undefined;
  let filesRequests: { path: string; headers: IncomingHttpHeaders; closedEarly: boolean }[] = [];

  before(async () => {
    files = createServer((req, res) => {
      const record = { path: req.url ?? '', headers: req.headers, closedEarly: false };
      filesRequests.push(record);
      res.on('close', () => {
        record.closedEarly = !res.writableFinished;
      });
      if (req.url?.startsWith('/files/slow')) {
        // The first half now, the rest only when the test says so.
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(2 * 65536) });
        res.write(Buffer.alloc(65536, 1));
        releaseBody = () => res.end(Buffer.alloc(65536, 2));
        return;
      }
      if (req.url?.startsWith('/files/page')) {
        res.writeHead(200, { 'content-type': 'application/json', 'set-cookie': 'files-session=secret' });
        res.end(JSON.stringify({ value: [1, 2], '@odata.nextLink': `${filesBase}/files/page?$skiptoken=2` }));
        return;
      }
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { code: 'NotFound', message: 'No such file.' } }));
    });
    files.listen(0, '127.0.0.1');
    await once(files, 'listening');
    filesBase = `http://127.0.0.1:${(files.address() as AddressInfo).port}`;
  });
  const api = useService(emulator, () => ({
    DOWNSTREAM_APIS: JSON.stringify({
      graphUser: { baseUrl: emulator.graphBaseUrl, scopes: ['https://graph.microsoft.com/User.Read'], allowedPaths: ['/v1.0/me'] },
      files: { baseUrl: `${filesBase}/files`, scopes: ['https://graph.microsoft.com/User.Read'], allowedPaths: ['/**'] },
    }),
  }));
  const services = useServices(emulator);
  after(() => {
    releaseBody?.();
    files?.closeAllConnections();
    files?.close();
  });
  beforeEach(() => {
    emulator.reset();
    filesRequests = [];
  });

  /** The Authorization header of a caller (alice, with a fresh token unless given one). */
  const caller = (token = emulator.mint()) => bearer(token);
  const graphRequests = () => emulator.requests().filter((entry) => entry.server === 'graph');

  describe('paging', () => {
    it('pages through /v1.0/me/messages by following rewritten @odata.nextLinks, with one exchange', async () => {
      const headers = caller();
      const pages: number[] = [];
      const ids = new Set<string>();
      let next: string | undefined = '/api/graph/v1.0/me/messages';
      while (next) {
        const response = await api.request.get(next).set(headers).expect(200);
        expect(response.headers['content-type']).to.match(/^application\/json;odata\.metadata=minimal/);
        const body = response.body as Json;
        const value = body['value'] as Json[];
        pages.push(value.length);
        for (const message of value) ids.add(String(message['id']));
        const link = body['@odata.nextLink'] as string | undefined;
        if (link) expect(link).to.match(new RegExp(`^${api.baseUrl}/api/graph/v1\\.0/me/messages\\?.*\\$skiptoken=`));
        next = link ? local(link, api) : undefined;
      }
      expect(pages).to.deep.equal([10, 10, 5]);
      expect(ids.size).to.equal(25);
      expect(emulator.counters.token, 'one exchange, then the cache').to.equal(1);
      expect(emulator.counters.graph).to.equal(3);
    });

    it('keeps the query of the link ($top) and pages /v1.0/me/memberOf', async () => {
      const headers = caller();
      const pages: number[] = [];
      let next: string | undefined = '/api/graph/v1.0/me/memberOf?$top=3';
      while (next) {
        const body = (await api.request.get(next).set(headers).expect(200)).body as Json;
        pages.push((body['value'] as unknown[]).length);
        const link = body['@odata.nextLink'] as string | undefined;
        if (link) expect(link).to.include('$top=3');
        next = link ? local(link, api) : undefined;
      }
      expect(pages).to.deep.equal([3, 3, 2]);
    });

    // docs/bad-input-checklist.md #59
    it('a next-page link pointing off the Graph host is never followed: 502', async () => {
      emulator.faults.injectGraph({ path: '/v1.0/me/messages', nextLink: 'https://evil.example/v1.0/me/messages?$skiptoken=x' });
      const response = await api.request.get('/api/graph/v1.0/me/messages').set(caller()).expect(502);
      expect(response.body).to.deep.include({ error: 'bad_gateway' });
      expect(JSON.stringify(response.body)).not.to.include('evil.example');
      expect(graphRequests().map((entry) => entry.path)).to.deep.equal(['/v1.0/me/messages']);
    });

    it('rewrites links of a named downstream under its own prefix, and a path prefix in its baseUrl', async () => {
      const response = await api.request.get('/api/downstream/files/page').set(caller()).expect(200);
      expect(response.body).to.deep.equal({ value: [1, 2], '@odata.nextLink': `${api.baseUrl}/api/downstream/files/page?$skiptoken=2` });
      expect(filesRequests.map((entry) => entry.path)).to.deep.equal(['/files/page']);
    });
  });

  describe('$batch', () => {
    const post = (requests: unknown[], headers = caller()) =>
      api.request.post('/api/graph/v1.0/$batch').set(headers).set('content-type', 'application/json').send({ requests });

    it('forwards a batch: per-request statuses, 424 from dependsOn, a per-item 429, links rewritten inside', async () => {
      emulator.faults.injectGraph({ path: '/v1.0/me/messages', status: 429, retryAfter: 2.5 });
      const response = await post([
        { id: '1', method: 'GET', url: '/me?$select=displayName' },
        { id: '2', method: 'GET', url: '/me/messages?$top=1' },
        { id: '3', method: 'GET', url: '/me', dependsOn: ['2'] },
        { id: '4', method: 'GET', url: 'me/memberOf?$top=2' },
      ]).expect(200);
      const byId = new Map(list(at(response.body, 'responses')).map((item) => [at(item, 'id'), item]));
      expect(byId.get('1')).to.deep.include({ status: 200 });
      expect(at(byId.get('1'), 'body', 'displayName')).to.equal(emulator.users.alice.name);
      expect(byId.get('2')).to.deep.include({ status: 429 });
      expect(at(byId.get('2'), 'headers', 'Retry-After')).to.equal('2.5');
      expect(byId.get('3')).to.deep.include({ status: 424 });
      expect(at(byId.get('4'), 'body', '@odata.nextLink')).to.match(new RegExp(`^${api.baseUrl}/api/graph/v1\\.0/me/memberOf\\?`));
      expect(emulator.counters.graph, 'a POST is not retried').to.equal(1);
    });

    // docs/bad-input-checklist.md #60
    it('more than 20 requests: 400 before Entra ID or Graph is called', async () => {
      const requests = Array.from({ length: 21 }, (_, i) => ({ id: String(i + 1), method: 'GET', url: '/me' }));
      const response = await post(requests).expect(400);
      expect(at(response.body, 'error')).to.equal('invalid_batch');
      expect(emulator.counters.token).to.equal(0);
      expect(emulator.counters.graph).to.equal(0);
      await post(requests.slice(0, 20)).expect(200);
    });

    it('refuses duplicate ids, unknown dependsOn, inner URLs off the allow-list or with traversal, other methods', async () => {
      const me = { method: 'GET', url: '/me' };
      const cases: [unknown[], number, string][] = [
        [
          [
            { id: '1', ...me },
            { id: '1', ...me },
          ],
          400,
          'invalid_batch',
        ],
        [[{ id: '1', ...me, dependsOn: ['9'] }], 400, 'invalid_batch'],
        [[{ id: '1', method: 'GET', url: '/users' }], 403, 'forbidden'],
        [
          [
            { id: '1', ...me },
            { id: '2', method: 'GET', url: '/me/../users' },
          ],
          400,
          'invalid_path',
        ],
        [[{ id: '1', method: 'GET', url: 'https://evil.example/v1.0/me' }], 400, 'invalid_path'],
        [[{ id: '1', method: 'GET', url: '//evil.example/me' }], 400, 'invalid_path'],
        [[{ id: '1', method: 'PATCH', url: '/me', body: { jobTitle: 'x' } }], 403, 'forbidden'],
        [[{ id: '1', ...me, headers: { Authorization: 'Bearer stolen' } }], 400, 'invalid_batch'],
        [[], 400, 'invalid_batch'],
      ];
      for (const [requests, status, error] of cases) {
        const response = await post(requests).expect(status);
        expect(at(response.body, 'error'), JSON.stringify(requests)).to.equal(error);
      }
      await api.request.get('/api/graph/v1.0/$batch').set(caller()).expect(405);
      expect(emulator.counters.token).to.equal(0);
      expect(emulator.counters.graph).to.equal(0);
    });
  });

  describe("Graph's answers, passed through", () => {
    it("403 and 404 keep Graph's status and error body", async () => {
      emulator.setUser('bob', { consentedScopes: ['User.Read'] });
      const denied = await api.request
        .get('/api/graph/v1.0/me/messages')
        .set(caller(emulator.mint({ user: 'bob' })))
        .expect(403);
      expect(at(denied.body, 'error', 'code')).to.equal('ErrorAccessDenied');
      expect(denied.headers['request-id']).to.be.a('string');
      const missing = await api.request.get('/api/graph/v1.0/me/messages/AAMkNoSuchMessage').set(caller()).expect(404);
      expect(at(missing.body, 'error', 'code')).to.equal('ErrorItemNotFound');
      expect(at(missing.body, 'error', 'innerError')).to.include.keys('request-id', 'client-request-id');
    });

    // docs/bad-input-checklist.md #58 (this test and the next two)
    it('429 with a fractional Retry-After is retried after waiting; a persistent 429 comes back with its Retry-After', async () => {
      const headers = caller();
      emulator.faults.injectGraph({ path: '/v1.0/me', status: 429, retryAfter: 0.25 });
      const started = Date.now();
      await api.request.get('/api/graph/v1.0/me').set(headers).expect(200);
      expect(Date.now() - started).to.be.at.least(240);
      expect(emulator.counters.graph).to.equal(2);

      emulator.resetCounters();
      emulator.faults.injectGraph({ path: '/v1.0/me', status: 429, retryAfter: 0.1, times: 'always' });
      const throttled = await api.request.get('/api/graph/v1.0/me').set(headers).expect(429);
      expect(throttled.headers['retry-after']).to.equal('0.1');
      expect(at(throttled.body, 'error', 'code')).to.equal('TooManyRequests');
      expect(emulator.counters.graph, 'the call and GRAPH_MAX_RETRIES=2 retries').to.equal(3);
      expect(emulator.counters.token).to.equal(0);
    });

    it('a Retry-After beyond the wait budget, or none at all, goes straight to the caller', async () => {
      const headers = caller();
      emulator.faults.injectGraph({ path: '/v1.0/me', status: 429, retryAfter: 30, times: 'always' });
      const started = Date.now();
      const late = await api.request.get('/api/graph/v1.0/me').set(headers).expect(429);
      expect(late.headers['retry-after']).to.equal('30');
      expect(Date.now() - started).to.be.below(1000);
      expect(emulator.counters.graph).to.equal(1);
      emulator.faults.clear();
      emulator.faults.injectGraph({ path: '/v1.0/me', status: 503, times: 'always' });
      await api.request.get('/api/graph/v1.0/me').set(headers).expect(503);
      expect(emulator.counters.graph).to.equal(2);
    });

    it('503 with Retry-After (also as an HTTP date) is retried; /api/me uses the same client', async () => {
      const headers = caller();
      emulator.faults.injectGraph({ path: '/v1.0/me', status: 503, retryAfter: 0.05, times: 2 });
      await api.request.get('/api/graph/v1.0/me').set(headers).expect(200);
      expect(emulator.counters.graph).to.equal(3);
      emulator.resetCounters();
      emulator.faults.injectGraph({ path: '/v1.0/me', status: 503, retryAfter: new Date(Date.now() + 1000).toUTCString() });
      await api.request.get('/api/me').set(headers).expect(200);
      expect(emulator.counters.graph).to.equal(2);
      emulator.resetCounters();
      emulator.faults.injectGraph({ path: '/v1.0/me', status: 503, retryAfter: 0.05, times: 'always' });
      const unavailable = await api.request.get('/api/me').set(headers).expect(503);
      expect(at(unavailable.body, 'error', 'code')).to.equal('serviceNotAvailable');
      expect(unavailable.headers['retry-after']).to.equal('0.05');
      expect(emulator.counters.graph).to.equal(3);
    });

    it('a CAE claims challenge from Graph: exchanged again with the claims, then answered', async () => {
      const claims = '{"access_token":{"nbf":{"essential":true,"value":"1700000000"}}}';
      const headers = caller();
      await api.request.get('/api/graph/v1.0/me/messages?$top=1').set(headers).expect(200);
      emulator.faults.injectGraph({ path: '/v1.0/me/messages', caeClaims: claims });
      await api.request.get('/api/graph/v1.0/me/messages?$top=1').set(headers).expect(200);
      expect(emulator.counters.token).to.equal(2);
      const exchange = emulator
        .requests()
        .filter((entry) => entry.server === 'entra' && entry.path.endsWith('/token'))
        .at(-1);
      expect(exchange?.formParams).to.include('claims');
    });

    it('streams a large body: the ~2 MiB photo arrives intact with its length', async () => {
      const response = await raw(api.baseUrl, '/api/graph/v1.0/me/photo/$value', caller());
      expect(response.status).to.equal(200);
      expect(response.headers['content-type']).to.equal('image/jpeg');
      expect(response.headers['content-length']).to.equal(String(2 * 1024 * 1024));
      const digest = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');
      expect(digest(response.body)).to.equal(digest(makePhoto()));
    });

    it('streams: the first bytes reach the caller while the downstream is still sending', async () => {
      const { hostname, port } = new URL(api.baseUrl);
      const firstChunk = await new Promise<{ status: number; length: string | undefined; bytes: number; rest: Promise<number> }>(
        (resolve, reject) => {
          const req = httpRequest({ hostname, port, path: '/api/downstream/files/slow', headers: caller() }, (res) => {
            let received = 0;
            const rest = new Promise<number>((done) => res.on('end', () => done(received)));
            res.on('data', (chunk: Buffer) => {
              received += chunk.length;
              if (received >= 65536) resolve({ status: res.statusCode ?? 0, length: res.headers['content-length'], bytes: received, rest });
            });
          });
          req.on('error', reject);
          req.end();
        },
      );
      expect(firstChunk.status).to.equal(200);
      expect(firstChunk.length).to.equal(String(2 * 65536));
      expect(firstChunk.bytes).to.equal(65536);
      releaseBody?.();
      expect(await firstChunk.rest).to.equal(2 * 65536);
    });

    it('a caller that goes away cancels the upstream request', async () => {
      emulator.faults.injectGraph({ path: '/v1.0/me/messages', delayMs: 1500 });
      const { hostname, port } = new URL(api.baseUrl);
      const req = httpRequest({ hostname, port, path: '/api/graph/v1.0/me/messages', headers: caller() });
      req.on('error', () => undefined);
      req.end();
      await sleep(300);
      req.destroy();
      await until('the emulator to see the call end', () => graphRequests().some((entry) => entry.path === '/v1.0/me/messages'), 1_000, 25);
      const upstream = graphRequests().find((entry) => entry.path === '/v1.0/me/messages');
      expect(upstream, 'the emulator saw the call end').to.not.equal(undefined);
      expect(upstream?.status, 'closed before Graph answered').to.equal(0);
      expect(upstream?.durationMs).to.be.below(1400);
      const logged = () => api.logs.some((line) => line.includes('"path":"/api/graph/v1.0/me/messages"') && line.includes('"status":499'));
      await until('the 499 log line', logged, 1_000, 25);
      expect(logged(), 'logged as 499 (client closed request)').to.equal(true);
    });

    it('does not follow redirects; a Location on Graph points back through this API', async () => {
      emulator.faults.injectGraph({
        path: '/v1.0/me/photo',
        status: 302,
        headers: { Location: `${emulator.graphBaseUrl}/v1.0/me/photo/$value?size=small` },
      });
      const local302 = await raw(api.baseUrl, '/api/graph/v1.0/me/photo', caller());
      expect(local302.status).to.equal(302);
      expect(local302.headers.location).to.equal(`${api.baseUrl}/api/graph/v1.0/me/photo/$value?size=small`);
      emulator.faults.injectGraph({ path: '/v1.0/me/photo', status: 302, headers: { Location: 'https://evil.example/photo' } });
      const remote302 = await raw(api.baseUrl, '/api/graph/v1.0/me/photo', caller());
      expect(remote302.status).to.equal(302);
      expect(remote302.headers.location).to.equal('https://evil.example/photo');
      expect(graphRequests().map((entry) => entry.path)).to.deep.equal(['/v1.0/me/photo', '/v1.0/me/photo']);
    });
  });

  describe('timeouts', () => {
    const impatient = useService(emulator, { GRAPH_TIMEOUT_MS: '300' });

    it('a Graph that answers later than GRAPH_TIMEOUT_MS: 504 in about that time', async () => {
      emulator.faults.injectGraph({ path: '/v1.0/me', delayMs: 2000 });
      const started = Date.now();
      const response = await impatient.request.get('/api/graph/v1.0/me').set(caller()).expect(504);
      expect(Date.now() - started).to.be.within(250, 1500);
      expect(at(response.body, 'error')).to.equal('gateway_timeout');
    });
  });

  describe('safety: nothing but allow-listed Graph paths, never anywhere else', () => {
    it('refuses traversal in every spelling with 400, before any exchange or Graph call', async () => {
      const attempts = [
        '/api/graph/v1.0/me/../users',
        '/api/graph/v1.0/me/./messages',
        '/api/graph/v1.0/me/%2e%2e/users',
        '/api/graph/v1.0/me/.%2E/users',
        '/api/graph/v1.0/me/%2e%2e%2fusers',
        '/api/graph/v1.0/me%2fmessages',
        '/api/graph/v1.0/me%2Fmessages',
        '/api/graph/v1.0/me%5c..%5cusers',
        '/api/graph/v1.0/me\\..\\users',
        '/api/graph//evil.example/v1.0/me',
        '/api/graph/v1.0//me',
        '/api/graph/https://evil.example/v1.0/me',
        '/api/graph/https:%2F%2Fevil.example/v1.0/me',
        '/api/graph/https:evil.example/v1.0/me',
        '/api/graph/v1.0/me/%252e%252e/users',
        '/api/graph/v1.0/me/messages%00',
        '/api/graph/v1.0/me/%E0%A4%A',
        '/api/downstream/files/..%2f..%2fetc/passwd',
      ];
      const headers = caller();
      for (const path of attempts) {
        const response = await raw(api.baseUrl, path, headers);
        expect(response.status, path).to.equal(400);
        expect(at(JSON.parse(response.body.toString()), 'error'), path).to.equal('invalid_path');
      }
      expect(emulator.counters.token).to.equal(0);
      expect(emulator.counters.graph).to.equal(0);
      expect(filesRequests).to.deep.equal([]);
    });

    it('refuses paths off the allow-list with 403 and no exchange; allow-listed ones pass', async () => {
      const headers = caller();
      for (const path of [
        '/api/graph/v1.0/users',
        `/api/graph/v1.0/users/${emulator.users.bob.oid}`,
        '/api/graph/beta/users',
        '/api/graph/v1.0',
        '/api/graph/',
        '/api/graph/v1.0/meeting',
      ]) {
        const response = await api.request.get(path).set(headers).expect(403);
        expect(at(response.body, 'error'), path).to.equal('forbidden');
      }
      expect(emulator.counters.token, 'no exchange for a refused path').to.equal(0);
      expect(emulator.counters.graph).to.equal(0);
      await api.request.get('/api/graph/v1.0/me').set(headers).expect(200);
      await api.request.get('/api/graph/beta/me').set(headers).expect(200);
      await api.request.get('/api/downstream/graph/v1.0/me').set(headers).expect(200);
    });

    it('refuses other methods with 405 and Allow, before any exchange; GRAPH_ALLOWED_METHODS widens that', async () => {
      const headers = caller();
      const refused = await api.request.delete('/api/graph/v1.0/me').set(headers).expect(405);
      expect(refused.headers['allow']).to.equal('GET');
      expect(at(refused.body, 'error')).to.equal('method_not_allowed');
      await api.request.post('/api/graph/v1.0/me/messages').set(headers).send({ subject: 'x' }).expect(405);
      expect(emulator.counters.token).to.equal(0);

      const writer = await services.start({ GRAPH_ALLOWED_METHODS: 'GET,POST' });
      // Forwarded: Graph's own 405 for a POST to /me comes back in Graph's shape.
      const graphSays = await writer.request.post('/api/graph/v1.0/me').set(headers).send({ displayName: 'x' }).expect(405);
      expect(at(graphSays.body, 'error', 'code')).to.equal('Request_BadRequest');
      expect(graphRequests().at(-1)).to.deep.include({ method: 'POST', path: '/v1.0/me' });
    });

    it("caller → Graph: reserved and hop-by-hop headers stay here; the caller's client-request-id goes on", async () => {
      await api.request
        .get('/api/graph/v1.0/me/messages?$top=1')
        .set(caller())
        .set('cookie', 'session=caller-cookie')
        .set('x-forwarded-for', '203.0.113.9')
        .set('proxy-authorization', 'Basic c2VjcmV0')
        .set('origin', 'https://spa.example')
        .set('connection', 'keep-alive, x-hop')
        .set('x-hop', 'only for the next hop')
        .set('prefer', 'outlook.body-content-type="text"')
        .set('consistencylevel', 'eventual')
        .set('client-request-id', 'caller-id-123')
        .expect(200)
        .expect('client-request-id', 'caller-id-123');
      const seen = graphRequests().at(-1);
      expect(seen?.clientRequestId).to.equal('caller-id-123');
      expect(seen?.headers).to.include.members(['authorization', 'prefer', 'consistencylevel', 'client-request-id']);
      for (const name of ['cookie', 'x-forwarded-for', 'proxy-authorization', 'origin', 'x-hop', 'x-request-id']) {
        expect(seen?.headers, name).not.to.include(name);
      }
      // Graph accepted the Authorization: it was our Graph token, not the caller's token for this API.
      expect(emulator.counters.token).to.equal(1);

      const ours = await api.request.get('/api/graph/v1.0/me').set(caller()).expect(200);
      expect(graphRequests().at(-1)?.clientRequestId, 'without one, our request id').to.equal(ours.headers['x-request-id']);
      expect(ours.headers['client-request-id']).to.equal(ours.headers['x-request-id']);
    });

    it('Graph → caller: Set-Cookie, challenges and hop-by-hop headers stay here; request ids come back', async () => {
      emulator.faults.injectGraph({
        path: '/v1.0/me',
        headers: { 'Set-Cookie': 'graph-session=secret; Secure', 'X-Hop': 'x', Connection: 'X-Hop', 'X-Ms-Throttle-Limit-Percentage': '0.8' },
      });
      const response = await api.request.get('/api/graph/v1.0/me').set(caller()).expect(200);
      expect(response.headers).not.to.have.property('set-cookie');
      expect(response.headers).not.to.have.property('x-hop');
      expect(response.headers['request-id']).to.equal(graphRequests().at(-1)?.requestId);
      expect(response.headers['client-request-id']).to.be.a('string');
      expect(response.headers['x-ms-throttle-limit-percentage']).to.equal('0.8');
      expect(response.headers['odata-version']).to.equal('4.0');
      const fromFiles = await api.request.get('/api/downstream/files/page').set(caller()).expect(200);
      expect(fromFiles.headers).not.to.have.property('set-cookie');
    });
  });

  describe('DOWNSTREAM_APIS', () => {
    it('a named downstream has its own scopes, token cache partition and allow-list', async () => {
      const headers = caller();
      await api.request.get('/api/downstream/graphUser/v1.0/me').set(headers).expect(200);
      expect(emulator.counters.token).to.equal(1);
      const scope = emulator.requests().find((entry) => entry.server === 'entra' && entry.path.endsWith('/token'))?.scope ?? '';
      expect(scope.split(' ')).to.include('https://graph.microsoft.com/User.Read').and.not.include('https://graph.microsoft.com/.default');
      await api.request.get('/api/graph/v1.0/me').set(headers).expect(200);
      expect(emulator.counters.token, 'Graph has its own scopes: another partition').to.equal(2);
      await api.request.get('/api/downstream/graphUser/v1.0/me').set(headers).expect(200);
      await api.request.get('/api/graph/v1.0/me').set(headers).expect(200);
      expect(emulator.counters.token, 'both cached').to.equal(2);

      const refused = await api.request.get('/api/downstream/graphUser/v1.0/me/messages').set(headers).expect(403);
      expect(at(refused.body, 'error')).to.equal('forbidden');
      const unknown = await api.request.get('/api/downstream/nope/v1.0/me').set(headers).expect(404);
      expect(at(unknown.body, 'error')).to.equal('not_found');
      expect(emulator.counters.token).to.equal(2);
    });

    it('passes a downstream 404 through and never sends the caller a Graph token', async () => {
      const response = await api.request.get('/api/downstream/files/nothing-here').set(caller()).expect(404);
      expect(at(response.body, 'error', 'code')).to.equal('NotFound');
      expect(filesRequests[0]?.headers.authorization).to.match(/^Bearer /);
      expect(JSON.stringify(response.body)).not.to.include(String(filesRequests[0]?.headers.authorization).slice(7, 40));
    });
  });
});
