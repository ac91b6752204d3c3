import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import { startEmulator, type Emulator } from '../emulator/index.js';
import { startRecordingDownstream, type RecordingDownstream } from '../support/recording-downstream.js';
import { startService, type TestService } from '../support/service.js';

const LIMIT = 256 * 1024;
const errorCode = (response: { body: unknown }) => (response.body as { error?: string }).error;

/** Request bodies: read once, under REQUEST_BODY_MAX_BYTES, and forwarded as they came. */
describe('request bodies through the proxy', () => {
  let emulator: Emulator;
  let downstream: RecordingDownstream;
  const services: TestService[] = [];

  const start = async (limit: number) => {
    const api = await startService(emulator, {
      REQUEST_BODY_MAX_BYTES: String(limit),
      DOWNSTREAM_APIS: JSON.stringify({
        store: {
          baseUrl: `${downstream.url}/store`,
          scopes: ['https://graph.microsoft.com/User.Read'],
          allowedPaths: ['/**'],
          allowedMethods: ['POST', 'PUT'],
        },
      }),
    });
    services.push(api);
    return api;
  };
  const bearer = () => ({ authorization: `Bearer ${emulator.mint()}` });

  before(async () => {
    emulator = await startEmulator();
    downstream = await startRecordingDownstream();
  });
  after(async () => {
    for (const api of services) await api.close();
    await downstream?.close();
    await emulator?.close();
  });
  beforeEach(() => {
    downstream.received.length = 0;
  });

  it('forwards a form, a JSON and a 200 KiB binary body byte for byte, with their content types', async () => {
    const api = await start(LIMIT);
    const bodies: [string, Buffer][] = [
      ['application/x-www-form-urlencoded', Buffer.from('grant=read&name=J%C3%BCrgen+M&list=a&list=b')],
      ['application/json; charset=utf-8', Buffer.from('{ "displayName": "J\u00fcrgen",\n  "n": 12345678901234567890 }')],
      ['application/octet-stream', randomBytes(200 * 1024)],
    ];
    for (const [type, body] of bodies) {
      // superagent would encode a Buffer as a form or JSON of its own: those go as the text they are.
      const payload = type.startsWith('application/octet-stream') ? body : body.toString('utf8');
      await api.request.post('/api/downstream/store/items').set(bearer()).set('content-type', type).send(payload).expect(200);
    }
    expect(downstream.received.map((r) => [r.method, r.path, r.headers['content-type']])).to.deep.equal(
      bodies.map(([type]) => ['POST', '/store/items', type]),
    );
    for (const [index, [type, body]] of bodies.entries()) {
      const got = downstream.received[index]?.body ?? Buffer.alloc(0);
      expect(got.length, type).to.equal(body.length);
      expect(got.equals(body), `${type} arrives unchanged`).to.equal(true);
    }
  });

  it('still refuses a form body that carries a second token, from the same buffer', async () => {
    const api = await start(LIMIT);
    const response = await api.request
      .put('/api/downstream/store/items')
      .set(bearer())
      .set('content-type', 'application/x-www-form-urlencoded')
      .send('a=1&access_token=eyJ.x.y')
      .expect(400);
    expect(errorCode(response)).to.equal('invalid_request');
    expect(downstream.received).to.have.length(0);
  });

  it('a body of exactly REQUEST_BODY_MAX_BYTES is forwarded; one byte more is a 413 and nothing is forwarded', async () => {
    const api = await start(LIMIT);
    const tokensBefore = emulator.counters.token;
    for (const [type, body] of [
      ['application/octet-stream', Buffer.alloc(LIMIT + 1, 0x61)],
      ['application/x-www-form-urlencoded', 'a'.repeat(LIMIT + 1)],
    ] as const) {
      const over = await api.request.post('/api/downstream/store/items').set(bearer()).set('content-type', type).send(body);
      expect(over.status, type).to.equal(413);
      expect(errorCode(over)).to.equal('payload_too_large');
    }
    expect(downstream.received, 'nothing reached the downstream').to.have.length(0);
    expect(emulator.counters.token, 'no token was exchanged').to.equal(tokensBefore);
    await api.request
      .post('/api/downstream/store/items')
      .set(bearer())
      .set('content-type', 'application/x-www-form-urlencoded')
      .send('a'.repeat(LIMIT))
      .expect(200);
    expect(downstream.received.map((r) => r.body.length)).to.deep.equal([LIMIT]);
  });

  it('one limit: REQUEST_BODY_MAX_BYTES above 4 MiB lets a 5 MiB body through', async () => {
    const api = await start(6 * 1024 * 1024);
    const body = randomBytes(5 * 1024 * 1024);
    await api.request.put('/api/downstream/store/big').set(bearer()).set('content-type', 'application/octet-stream').send(body).expect(200);
    expect(downstream.received[0]?.body.equals(body)).to.equal(true);
  });
});
