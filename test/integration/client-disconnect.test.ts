// Found by the benchmark: callers that hang up mid-request (load balancers, impatient clients,
// autocannon stopping) must never take the process down.
import { connect } from 'node:net';
import { expect } from 'chai';
import { useEmulator, useService } from '../support/fixtures.js';
import { at } from '../support/json.js';
import { bearer } from '../support/tokens.js';
import { sleep } from '../support/wait.js';

describe('callers that disconnect mid-request', () => {
  const emulator = useEmulator();
  const api = useService(emulator);

  it('GET /api/me: 300 callers hanging up at staggered moments leave the service answering', async () => {
    const token = emulator.mint();
    await api.request.get('/api/me').set(bearer(token)).expect(200);
    const { port } = new URL(api.baseUrl);
    // 0 to 6 ms after sending: before, during and after the Graph call and the relay of its body.
    for (let i = 0; i < 300; i++) {
      await new Promise<void>((resolve, reject) => {
        const socket = connect(Number(port), '127.0.0.1', () => {
          socket.write(`GET /api/me HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${token}\r\n\r\n`);
          setTimeout(
            () => {
              socket.destroy();
              resolve();
            },
            (i % 30) * 0.2,
          );
        });
        socket.once('error', reject);
      });
    }
    await sleep(200);
    const response = await api.request.get('/api/me').set(bearer(token)).expect(200);
    expect(at(response.body, 'id')).to.equal(emulator.users.alice.oid);
  });
});
