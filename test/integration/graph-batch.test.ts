import { expect } from 'chai';
import { startEmulator, type Emulator } from '../emulator/index.js';
import { startRecordingDownstream, type RecordingDownstream } from '../support/recording-downstream.js';
import { startService, type TestService } from '../support/service.js';

type Json = Record<string, unknown>;
/** This API's error body: `{ error, message }`. */
const apiError = (response: { body: unknown }) => response.body as { error?: string; message?: string };

/**
 * `$batch` is checked as Graph's own reader would read it, and what is forwarded is the batch that
 * was checked. A recording downstream with `batch: true` shows the bytes the downstream gets; the
 * emulator's Graph shows a batch running.
 */
describe('$batch: strict reading, normalised urls, the checked batch forwarded', () => {
  let emulator: Emulator;
  let recorder: RecordingDownstream;
  let api: TestService;

  before(async () => {
    emulator = await startEmulator();
    recorder = await startRecordingDownstream(() => ({ responses: [] }));
    api = await startService(emulator, {
      DOWNSTREAM_APIS: JSON.stringify({
        recorder: {
          baseUrl: recorder.url,
          scopes: ['https://graph.microsoft.com/User.Read'],
          allowedPaths: ['/v1.0/me', '/v1.0/me/**'],
          batch: true,
        },
        // Any path, GET and POST: only the batch check stands between a caller and a DELETE.
        wide: {
          baseUrl: recorder.url,
          scopes: ['https://graph.microsoft.com/User.Read'],
          allowedPaths: ['/v1.0/**'],
          allowedMethods: ['GET', 'POST'],
          batch: true,
        },
      }),
    });
  });
  after(async () => {
    await api?.close();
    await recorder?.close();
    await emulator?.close();
  });
  beforeEach(() => {
    emulator.reset();
    recorder.received.length = 0;
  });

  const bearer = () => ({ authorization: `Bearer ${emulator.mint()}` });
  const post = (path: string, body: string) => api.request.post(path).set(bearer()).set('content-type', 'application/json').send(body);
  const forwarded = () => recorder.received.map((r) => ({ method: r.method, path: r.path, body: r.body.toString('utf8') }));

  it('refuses both smuggling shapes: a second "requests" member, and one spelled "REQUESTS"', async () => {
    const smuggled = [
      '{"requests":[{"id":"1","method":"DELETE","url":"/users/victim"}],"requests":[{"id":"1","method":"GET","url":"/me"}]}',
      '{"REQUESTS":[{"id":"1","method":"DELETE","url":"/users/victim"}],"requests":[{"id":"1","method":"GET","url":"/me"}]}',
    ];
    for (const body of smuggled) {
      for (const path of ['/api/graph/v1.0/$batch', '/api/downstream/recorder/v1.0/$batch']) {
        const response = await post(path, body);
        expect(response.status, `${path} ${body}`).to.equal(400);
        expect(apiError(response).error).to.equal('invalid_batch');
      }
    }
    expect(recorder.received, 'nothing forwarded').to.have.length(0);
    expect(emulator.counters.graph).to.equal(0);
    expect(emulator.counters.token).to.equal(0);
  });

  it('refuses a member given twice in any case inside a request, and members Graph does not define', async () => {
    const bodies = [
      '{"requests":[{"id":"1","method":"GET","METHOD":"DELETE","url":"/me"}]}',
      '{"requests":[{"id":"1","method":"GET","url":"/me","Url":"/users"}]}',
      '{"requests":[{"id":"1","method":"GET","url":"/me","headers":{"Prefer":"a","prefer":"b"}}]}',
      '{"requests":[{"id":"1","method":"GET","url":"/me"}],"atomicityGroup":"x"}',
      '{"requests":[{"id":"1","method":"GET","url":"/me","atomicityGroup":"g"}]}',
      '{"requests":[{"id":"1","method":"GET","url":"/me","requeſts":[]}]}',
      '{"requests":[{"id":"1","method":"GET","url":"/me","body":{"a":1,"A":2}}]}',
      '{"requests":[{"id":"1","method":"GET","url":"/me"}]}\n{"requests":[]}',
      '{"requests":[{"id":"1","method":"GET","url":"/me/$batch"}]}',
    ];
    for (const body of bodies) {
      const response = await post('/api/downstream/recorder/v1.0/$batch', body);
      expect(response.status, body).to.equal(400);
      expect(apiError(response).error, body).to.equal('invalid_batch');
    }
    expect(recorder.received).to.have.length(0);
  });

  it('matches $batch in any case: /v1.0/$BATCH is a batch, checked like any other', async () => {
    const smuggle = '{"requests":[{"id":"1","method":"DELETE","url":"/users/victim"}]}';
    for (const path of ['/api/downstream/wide/v1.0/$BATCH', '/api/downstream/wide/v1.0/%24Batch', '/api/graph/v1.0/$BATCH']) {
      const response = await post(path, smuggle);
      expect(response.status, path).to.equal(403);
      expect(apiError(response).error).to.equal('forbidden');
      if (path.includes('/wide/')) expect(apiError(response).message, path).to.match(/method DELETE/);
    }
    // A `$batch` segment anywhere else is not a batch we could check, so it is not forwarded.
    for (const path of ['/api/downstream/wide/v1.0/me/$batch', '/api/downstream/wide/$batch']) {
      const response = await post(path, smuggle);
      expect([response.status, apiError(response).error], path).to.deep.equal([400, 'invalid_batch']);
    }
    expect(recorder.received).to.have.length(0);
    expect(emulator.counters.graph).to.equal(0);
    await post('/api/downstream/wide/v1.0/$Batch', '{"requests":[{"id":"1","method":"GET","url":"/me"}]}').expect(200);
    expect(forwarded().map((r) => [r.method, r.path])).to.deep.equal([['POST', '/v1.0/$batch']]);
  });

  it('forwards the batch it checked, in its own serialisation: names in Graph spelling, numbers exact, no override headers', async () => {
    const sent = `{ "REQUESTS" : [
      { "Id": "a", "Method": "get", "URL": "/me?$select=id", "Headers": { "ConsistencyLevel": "eventual", "X-HTTP-Method-Override": "DELETE", "x-original-url": "/users" } },
      { "id": "b", "method": "GET", "url": "me/messages", "dependsOn": ["a"], "body": { "n": 12345678901234567890, "s": "\\u00fc\\n" } }
    ] }`;
    await post('/api/downstream/recorder/v1.0/$batch', sent).expect(200);
    const [request] = forwarded();
    expect(request?.body).to.equal(
      '{"requests":[{"id":"a","method":"GET","url":"/me?$select=id","headers":{"ConsistencyLevel":"eventual"}},' +
        '{"id":"b","method":"GET","url":"/me/messages","body":{"n":12345678901234567890,"s":"ü\\n"},"dependsOn":["a"]}]}',
    );
    expect(recorder.received[0]?.headers['content-type']).to.equal('application/json');
    expect(recorder.received[0]?.headers['content-length']).to.equal(String(Buffer.byteLength(request?.body ?? '')));
  });

  it('takes an inner url relative to the version, with the version, or with this API prefix, and forwards Graph form', async () => {
    const urls = ['/me', '/v1.0/me/messages?$top=1', '/api/downstream/recorder/v1.0/me/memberOf', 'v1.0/me'];
    await post(
      '/api/downstream/recorder/v1.0/$batch',
      JSON.stringify({ requests: urls.map((url, i) => ({ id: String(i), method: 'GET', url })) }),
    ).expect(200);
    const sentUrls = (JSON.parse(forwarded()[0]?.body ?? '{}') as { requests: Json[] }).requests.map((r) => r['url']);
    expect(sentUrls).to.deep.equal(['/me', '/me/messages?$top=1', '/me/memberOf', '/me']);

    const refused: [string, number, string][] = [
      ['/beta/me', 400, 'invalid_batch'],
      ['/api/downstream/recorder/beta/me', 400, 'invalid_batch'],
      ['/api/downstream/recorder/me', 400, 'invalid_batch'],
      ['/v1.0/v1.0/me', 400, 'invalid_batch'],
      ['/api/graph/v1.0/me', 403, 'forbidden'],
      ['/v1.0/users', 403, 'forbidden'],
      ['/me#/../users', 400, 'invalid_path'],
      ['/me/messages /users', 400, 'invalid_path'],
    ];
    for (const [url, status, error] of refused) {
      const response = await post('/api/downstream/recorder/v1.0/$batch', JSON.stringify({ requests: [{ id: '1', method: 'GET', url }] }));
      expect([response.status, apiError(response).error], url).to.deep.equal([status, error]);
    }
    expect(recorder.received).to.have.length(1);
  });

  it('runs a batch written with the API prefix against Graph (the emulator)', async () => {
    const response = await post(
      '/api/graph/v1.0/$batch',
      JSON.stringify({
        requests: [
          { id: '1', method: 'GET', url: '/api/graph/v1.0/me?$select=displayName' },
          { id: '2', method: 'GET', url: '/v1.0/me' },
        ],
      }),
    ).expect(200);
    const byId = new Map((response.body as { responses: Json[] }).responses.map((item) => [item['id'], item]));
    expect(byId.get('1')?.['status']).to.equal(200);
    expect((byId.get('1')?.['body'] as Json)['displayName']).to.equal(emulator.users.alice.name);
    expect(byId.get('2')?.['status']).to.equal(200);
  });
});
