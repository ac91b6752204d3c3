import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { createServer as createHttpsServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import {
  BatchRequestContent,
  BatchResponseContent,
  Client,
  type BatchResponseBody,
  GraphError,
  PageIterator,
  type PageCollection,
} from '@microsoft/microsoft-graph-client';
import { expect } from 'chai';
import { ensureCertificates } from '../emulator/certs.js';
import { startEmulator, type Emulator } from '../emulator/index.js';
import { startService, type TestService } from '../support/service.js';

type Json = Record<string, unknown>;

/**
 * The Microsoft Graph JavaScript SDK as a caller uses it, pointed at this API instead of Graph.
 * The SDK attaches its token only to https hosts it knows, so the service sits behind a TLS front
 * (as an ingress would be) and PUBLIC_BASE_URL names that front.
 */
describe('the Graph JS SDK (@microsoft/microsoft-graph-client) against /api/graph', () => {
  let emulator: Emulator;
  let api: TestService;
  let front: Server;
  let baseUrl: string;
  const frontRequests: string[] = [];

  before(async () => {
    emulator = await startEmulator();
    const { certPath, keyPath } = await ensureCertificates();
    let target = '';
    // The ingress: TLS in front, plain HTTP to the service, the request passed on as it came.
    front = createHttpsServer({ cert: await readFile(certPath), key: await readFile(keyPath) }, (req, res) => {
      frontRequests.push(`${req.method ?? ''} ${req.url ?? ''}`);
      const upstream = httpRequest(`${target}${req.url ?? ''}`, { method: req.method, headers: req.headers }, (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      });
      upstream.on('error', () => res.writeHead(502).end());
      req.pipe(upstream);
    });
    front.listen(0, '127.0.0.1');
    await once(front, 'listening');
    const publicBaseUrl = `https://localhost:${(front.address() as AddressInfo).port}`;
    api = await startService(emulator, { PUBLIC_BASE_URL: publicBaseUrl });
    target = api.baseUrl;
    baseUrl = `${publicBaseUrl}/api/graph`;
  });
  after(async () => {
    front?.closeAllConnections();
    front?.close();
    await api?.close();
    await emulator?.close();
  });
  beforeEach(() => {
    emulator.reset();
    frontRequests.length = 0;
  });

  /** What a caller writes: its own token for this API, our URL as Graph's, our host as a custom one. */
  const client = (token = emulator.mint()) =>
    Client.initWithMiddleware({ baseUrl, customHosts: new Set(['localhost']), authProvider: { getAccessToken: () => Promise.resolve(token) } });

  it('Client.init: a GET with $select, the token attached by the SDK', async () => {
    const token = emulator.mint();
    const sdk = Client.init({ baseUrl, customHosts: new Set(['localhost']), authProvider: (done) => done(null, token) });
    const me = (await sdk.api('/me').select('displayName').get()) as Json;
    expect(me['displayName']).to.equal(emulator.users.alice.name);
    expect(frontRequests).to.deep.equal(['GET /api/graph/v1.0/me?$select=displayName']);
    expect(emulator.counters.token, 'one OBO exchange').to.equal(1);
  });

  it('PageIterator: follows the rewritten @odata.nextLinks through the front to the last page', async () => {
    const sdk = client();
    const first = (await sdk.api('/me/messages').get()) as PageCollection;
    const ids: string[] = [];
    const iterator = new PageIterator(sdk, first, (message: Json) => {
      ids.push(String(message['id']));
      return true;
    });
    await iterator.iterate();
    expect(iterator.isComplete()).to.equal(true);
    expect(ids).to.have.length(25);
    expect(new Set(ids).size).to.equal(25);
    expect(frontRequests, 'every page through the front').to.have.length(3);
    expect(frontRequests.every((line) => line.startsWith('GET /api/graph/v1.0/me/messages'))).to.equal(true);
    expect(emulator.counters.graph).to.equal(3);
  });

  it('BatchRequestContent: absolute request URLs become /api/graph/v1.0/… inner urls, run as Graph urls', async () => {
    const sdk = client();
    const batch = new BatchRequestContent([
      { id: '1', request: new Request(`${baseUrl}/v1.0/me?$select=displayName`, { method: 'GET' }) },
      { id: '2', request: new Request(`${baseUrl}/v1.0/me/memberOf`, { method: 'GET' }), dependsOn: ['1'] },
    ]);
    const content = await batch.getContent();
    expect(content.requests.map((r) => r.url)).to.deep.equal(['/api/graph/v1.0/me?$select=displayName', '/api/graph/v1.0/me/memberOf']);
    const answer = new BatchResponseContent((await sdk.api('/$batch').post(content)) as BatchResponseBody);
    const me = answer.getResponseById('1');
    expect(me.status).to.equal(200);
    expect(((await me.json()) as Json)['displayName']).to.equal(emulator.users.alice.name);
    expect(answer.getResponseById('2').status).to.equal(200);
    expect(emulator.counters.graph, 'one batch call').to.equal(1);
  });

  it('BatchRequestContent with a request outside the allow-list: refused before Graph, a GraphError 403', async () => {
    const batch = new BatchRequestContent([{ id: '1', request: new Request(`${baseUrl}/v1.0/users`, { method: 'GET' }) }]);
    const error = await client()
      .api('/$batch')
      .post(await batch.getContent())
      .then(
        () => undefined,
        (thrown: unknown) => thrown,
      );
    expect(error).to.be.instanceOf(GraphError);
    expect((error as GraphError).statusCode).to.equal(403);
    expect(emulator.counters.graph).to.equal(0);
    expect(emulator.counters.token).to.equal(0);
  });
});
