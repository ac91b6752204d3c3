import { expect } from 'chai';
import { itChecking } from '../support/checked-it.js';
import { useEmulator, useService } from '../support/fixtures.js';
import { at } from '../support/json.js';
import { bearer } from '../support/tokens.js';
import { parseChallenge } from '../support/www-authenticate.js';

describe('the OBO API end to end (real msal-node and jose against the emulator)', () => {
  const emulator = useEmulator();
  const api = useService(emulator);
  beforeEach(() => emulator.resetCounters());

  it('GET /api/me returns the calling user from Graph', async () => {
    const response = await api.request
      .get('/api/me')
      .set(bearer(emulator.mint({ user: 'alice' })))
      .expect(200);
    expect(at(response.body, 'id')).to.equal(emulator.users.alice.oid);
    expect(at(response.body, 'displayName')).to.equal(emulator.users.alice.name);
    expect(response.headers['content-type']).to.match(/^application\/json/);
    expect(response.headers['request-id']).to.be.a('string');
    expect(response.headers['x-request-id']).to.be.a('string');
    expect(emulator.counters.token).to.equal(1);
    expect(emulator.counters.graph).to.equal(1);
  });

  it('serves a second call with the same token from the cache: no new exchange', async () => {
    const token = emulator.mint({ user: 'alice' });
    await api.request.get('/api/me').set(bearer(token)).expect(200);
    expect(emulator.counters.token).to.equal(1);
    for (let i = 0; i < 3; i++) await api.request.get('/api/me').set(bearer(token)).expect(200);
    expect(emulator.counters.token).to.equal(1);
    expect(emulator.counters.graph).to.equal(4);
  });

  it('keeps one partition per incoming token', async () => {
    const aliceFirst = emulator.mint({ user: 'alice' });
    const aliceSecond = emulator.mint({ user: 'alice' });
    const bob = emulator.mint({ user: 'bob' });
    const me = async (token: string) => (await api.request.get('/api/me').set(bearer(token)).expect(200)).body as { id: string };
    expect((await me(aliceFirst)).id).to.equal(emulator.users.alice.oid);
    expect((await me(bob)).id).to.equal(emulator.users.bob.oid);
    expect((await me(aliceSecond)).id).to.equal(emulator.users.alice.oid);
    expect(emulator.counters.token).to.equal(3);
    // Each partition serves only its own token's user.
    expect((await me(bob)).id).to.equal(emulator.users.bob.oid);
    expect((await me(aliceFirst)).id).to.equal(emulator.users.alice.oid);
    expect(emulator.counters.token).to.equal(3);
  });

  describe('RFC 6750 answers to bad tokens, with no exchange', () => {
    const itNoExchange = itChecking(() => expect(emulator.counters.token, 'token endpoint calls').to.equal(0));

    async function expectInvalidToken(token: string): Promise<void> {
      const response = await api.request.get('/api/me').set(bearer(token)).expect(401);
      const challenge = parseChallenge(response.headers['www-authenticate']);
      expect(challenge.scheme).to.equal('Bearer');
      expect(challenge.params['error']).to.equal('invalid_token');
      expect(at(response.body, 'error')).to.equal('invalid_token');
      expect(JSON.stringify(response.body)).not.to.include(token.split('.')[1] ?? token);
    }

    itNoExchange('no token: 401 with a bare Bearer challenge', async () => {
      const response = await api.request.get('/api/me').expect(401);
      const challenge = parseChallenge(response.headers['www-authenticate']);
      expect(challenge.scheme).to.equal('Bearer');
      expect(challenge.params).to.have.property('realm');
      expect(challenge.params).not.to.have.property('error');
    });

    itNoExchange('expired', async () => {
      const now = Math.floor(Date.now() / 1000);
      await expectInvalidToken(emulator.mint({ iat: now - 7200, nbf: now - 7200, exp: now - 3600 }));
    });

    itNoExchange('wrong audience', async () => {
      await expectInvalidToken(emulator.mint({ aud: 'https://graph.microsoft.com' }));
      await expectInvalidToken(emulator.mint({ aud: 'api://some-other-api' }));
    });

    itNoExchange('wrong issuer', async () => {
      await expectInvalidToken(emulator.mint({ iss: `https://login.microsoftonline.com/${emulator.otherTenant.id}/v2.0` }));
      await expectInvalidToken(emulator.mint({ iss: 'https://evil.example/v2.0' }));
    });

    itNoExchange('tampered payload or signature', async () => {
      const token = emulator.mint({ user: 'alice' });
      const [header, payload, signature] = token.split('.') as [string, string, string];
      const claims = JSON.parse(Buffer.from(payload, 'base64url').toString()) as Record<string, unknown>;
      const forged = Buffer.from(JSON.stringify({ ...claims, oid: emulator.users.bob.oid })).toString('base64url');
      await expectInvalidToken(`${header}.${forged}.${signature}`);
      const flipped = signature.slice(0, 10) + (signature[10] === 'A' ? 'B' : 'A') + signature.slice(11);
      await expectInvalidToken(`${header}.${payload}.${flipped}`);
    });

    itNoExchange('alg none', async () => {
      const claims = JSON.parse(Buffer.from(emulator.mint({}).split('.')[1] ?? '', 'base64url').toString()) as object;
      await expectInvalidToken(emulator.mintRaw({ header: { alg: 'none', typ: 'JWT' }, payload: claims, sign: 'none' }));
    });

    itNoExchange('missing the required scope: 403 insufficient_scope', async () => {
      const response = await api.request
        .get('/api/me')
        .set(bearer(emulator.mint({ scp: 'User.Read' })))
        .expect(403);
      const challenge = parseChallenge(response.headers['www-authenticate']);
      expect(challenge.params['error']).to.equal('insufficient_scope');
      expect(challenge.params['scope']).to.equal('access_as_user');
    });
  });

  describe('operations routes', () => {
    it('GET /healthz', async () => {
      await api.request.get('/healthz').expect(200, { status: 'ok' });
    });

    it('GET /readyz reports the metadata and an L1-only cache', async () => {
      const response = await api.request.get('/readyz').expect(200);
      expect(response.body).to.deep.equal({
        status: 'ready',
        checks: { authorityMetadata: 'up', cacheL1: 'up', cacheL2: 'disabled', invalidations: 'disabled' },
      });
    });

    it('GET /openapi.json serves the contract', async () => {
      const response = await api.request.get('/openapi.json').expect(200);
      expect(at(response.body, 'openapi')).to.equal('3.1.0');
      expect(at(response.body, 'paths')).to.have.property('/api/me');
    });

    it('unknown routes get a JSON 404', async () => {
      const response = await api.request.get('/nope').expect(404);
      expect(response.body).to.deep.equal({ error: 'not_found', message: 'No such route.' });
    });
  });
});
