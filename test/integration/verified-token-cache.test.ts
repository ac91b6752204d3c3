import { expect } from 'chai';
import { startEmulator, type Emulator } from '../emulator/index.js';
import { manualClock, type ManualClock } from '../support/clock.js';
import { metricsText, sample } from '../support/metrics.js';
import { startService, type TestService } from '../support/service.js';
import { sleep } from '../support/wait.js';
import { parseChallenge } from '../support/www-authenticate.js';

/**
 * The verified-token cache in the assembled service (issue 11.3): a repeat token skips the
 * parse and the RSA check, and is still refused the moment full validation would refuse it.
 */
describe('verified-token cache in the service (TOKEN_VALIDATION_CACHE_MAX_BYTES)', () => {
  let emulator: Emulator;
  let api: TestService;
  let clock: ManualClock;

  before(async () => {
    emulator = await startEmulator();
  });
  after(() => emulator.close());
  beforeEach(async () => {
    clock = manualClock();
    api = await startService(emulator, { JWKS_COOLDOWN_MS: '1000' }, { now: clock.now });
    emulator.resetCounters();
  });
  afterEach(() => api.close());

  const me = (token: string) => api.request.get('/api/me').set('authorization', `Bearer ${token}`);
  const lookups = async (result: 'hit' | 'miss') => sample(await metricsText(api), 'obo_token_validation_cache_lookups_total', { result }) ?? 0;
  const expectInvalidToken = async (token: string) => {
    const response = await me(token);
    expect(response.status, response.text).to.equal(401);
    expect(parseChallenge(response.headers['www-authenticate']).params['error']).to.equal('invalid_token');
    return response;
  };

  it('serves a repeat token from the cache; a one-character change of it is validated in full and refused', async () => {
    const token = emulator.mint();
    await me(token).expect(200);
    await me(token).expect(200);
    expect(await lookups('hit')).to.equal(1);
    const [header, payload, signature] = token.split('.') as [string, string, string];
    const flip = (text: string, at: number) => `${text.slice(0, at)}${text[at] === 'x' ? 'y' : 'x'}${text.slice(at + 1)}`;
    const tokenCalls = emulator.counters.token;
    await expectInvalidToken(`${header}.${payload}.${flip(signature, 40)}`);
    await expectInvalidToken(`${header}.${flip(payload, 30)}.${signature}`);
    await expectInvalidToken(`${flip(header, 5)}.${payload}.${signature}`);
    expect(await lookups('hit'), 'no hit for a changed token').to.equal(1);
    expect(emulator.counters.token).to.equal(tokenCalls);
  });

  it('refuses a cached token once it has expired (by the injected clock, past the skew)', async () => {
    const token = emulator.mint({ lifetimeSeconds: 600 });
    await me(token).expect(200);
    clock.advance((600 + 300 + 5) * 1000);
    const response = await expectInvalidToken(token);
    expect(parseChallenge(response.headers['www-authenticate']).params['error_description']).to.match(/expired/);
    expect(await lookups('hit'), 'the cached entry was found, and refused').to.equal(1);
  });

  it('refuses a cached token once a JWKS refresh no longer lists its key', async () => {
    const token = emulator.mint({ key: 'previous' });
    await me(token).expect(200);
    await me(token).expect(200);
    emulator.keys.retire(emulator.keys.previousKid);
    await sleep(1_100); // past the JWKS cooldown (real time: jose's own clock)
    // A token with a kid we have not seen makes the service fetch the JWKS again.
    const jwks = emulator.counters.jwks;
    await expectInvalidToken(emulator.mint({ key: 'unpublished' }));
    expect(emulator.counters.jwks).to.equal(jwks + 1);
    await expectInvalidToken(token);
    // A token of a key still published is still served.
    await me(emulator.mint()).expect(200);
  });

  it('never caches a refused token: a flood of them evicts nothing', async () => {
    const good = emulator.mint();
    await me(good).expect(200);
    const tokens = Array.from({ length: 50 }, (_, i) =>
      i % 2 === 0 ? emulator.mint({ aud: emulator.otherApi.clientId }) : `${emulator.mint().slice(0, -8)}AAAAAAAA`,
    );
    for (const token of tokens) await expectInvalidToken(token);
    for (const token of tokens) await expectInvalidToken(token); // the second time too: nothing was kept
    const hitsBefore = await lookups('hit');
    await me(good).expect(200);
    expect(await lookups('hit')).to.equal(hitsBefore + 1);
    expect(hitsBefore).to.equal(0);
  });

  it('TOKEN_VALIDATION_CACHE_MAX_BYTES=0 turns it off', async () => {
    const off = await startService(emulator, { TOKEN_VALIDATION_CACHE_MAX_BYTES: '0' });
    try {
      const token = emulator.mint();
      await off.request.get('/api/me').set('authorization', `Bearer ${token}`).expect(200);
      await off.request.get('/api/me').set('authorization', `Bearer ${token}`).expect(200);
      expect(sample(await metricsText(off), 'obo_token_validation_cache_lookups_total', { result: 'hit' })).to.equal(undefined);
    } finally {
      await off.close();
    }
  });
});
