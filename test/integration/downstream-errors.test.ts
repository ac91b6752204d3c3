import { expect } from 'chai';
import { manualClock } from '../support/clock.js';
import { useEmulator, useService, useServices } from '../support/fixtures.js';
import { at } from '../support/json.js';
import { bearer } from '../support/tokens.js';
import { sleep } from '../support/wait.js';
import { parseChallenge } from '../support/www-authenticate.js';

const MFA_CLAIMS = '{"access_token":{"capolids":{"essential":true,"values":["c1a5e2a1-1111-4222-8333-944455556666"]}}}';

/** docs/bad-input-checklist.md, items 50-57: every failure of Entra ID or Graph reaches the caller as something it can act on. */
describe('downstream failures turned into answers a caller can act on (checklist 50-57)', () => {
  const emulator = useEmulator();
  // The service's clock: Entra's Retry-After window passes when the test moves it, not by sleeping.
  const clock = manualClock();
  const api = useService(emulator, { EXCHANGE_TIMEOUT_MS: '500' }, { now: clock.now });
  const services = useServices(emulator);
  beforeEach(() => {
    emulator.reset();
    emulator.resetCounters();
    clock.reset();
  });

  const me = (token: string) => api.request.get('/api/me').set(bearer(token));

  it('#50 consent required: 403 interaction_required / consent_required, as JSON', async () => {
    emulator.setUser('alice', { consented: false });
    const response = await me(emulator.mint()).expect(403);
    expect(response.body).to.include({ error: 'interaction_required', suberror: 'consent_required' });
    expect(at(response.body, 'scopes')).to.deep.equal(api.config.graph.scopes);
    expect(response.headers['www-authenticate']).to.equal(undefined);
  });

  it('#51 Conditional Access / MFA: 401 insufficient_claims with base64 claims; the retry is not served from cache', async () => {
    emulator.setUser('alice', { mfaRequired: true });
    const token = emulator.mint();
    const response = await me(token).expect(401);
    const { params } = parseChallenge(response.headers['www-authenticate']);
    expect(params['error']).to.equal('insufficient_claims');
    expect(params['realm']).to.equal('');
    expect(params['authorization_uri']).to.equal(`${emulator.authorityHost}/${emulator.tenant.id}/oauth2/v2.0/authorize`);
    const claims = JSON.parse(Buffer.from(params['claims'] ?? '', 'base64').toString('utf8')) as { access_token?: unknown };
    expect(claims).to.have.property('access_token');
    expect(at(response.body, 'error')).to.equal('insufficient_claims');
    await me(token).expect(401);
    expect(emulator.counters.token, 'each attempt asks Entra again').to.equal(2);
    // The caller satisfies the challenge with a new token: a new partition, served fresh.
    emulator.setUser('alice', { mfaRequired: false });
    await me(emulator.mint({ extraClaims: { acrs: ['c1'] } })).expect(200);
  });

  it('#51 a CA claims string from Entra is passed on unchanged', async () => {
    emulator.setUser('alice', { caClaims: MFA_CLAIMS });
    const response = await me(emulator.mint()).expect(401);
    const { params } = parseChallenge(response.headers['www-authenticate']);
    expect(Buffer.from(params['claims'] ?? '', 'base64').toString('utf8')).to.equal(MFA_CLAIMS);
  });

  it('#52 Entra refuses the assertion (invalid_grant 500133 / 50013 / 500131): 401 invalid_token', async () => {
    for (const errorCode of [500133, 50013, 500131]) {
      emulator.faults.injectToken({ status: 400, error: 'invalid_grant', errorCode });
      const response = await me(emulator.mint()).expect(401);
      expect(parseChallenge(response.headers['www-authenticate']).params['error']).to.equal('invalid_token');
    }
  });

  it('#53 our own misconfiguration (invalid_client, invalid_scope, unauthorized_client): 500, generic body, details in the log', async () => {
    for (const [status, error] of [
      [401, 'invalid_client'],
      [400, 'invalid_scope'],
      [400, 'unauthorized_client'],
    ] as const) {
      emulator.faults.injectToken({ status, error });
      const response = await me(emulator.mint()).expect(500);
      expect(response.body).to.deep.equal({
        error: 'server_error',
        message: 'The service could not obtain a downstream token. The operator has been told why.',
      });
    }
    const logged = api.logs.filter((line) => line.includes('check the app registration')).join('\n');
    expect(logged).to.include('trace_id').and.include('correlation_id').and.include('invalid_client');
  });

  it('#53 a wrong client secret is a 500 whose log names the cause but never the secret', async () => {
    const wrong = await services.start({ AZURE_CLIENT_SECRET: 'wrong-secret-value-123' });
    await wrong.request.get('/api/me').set(bearer(emulator.mint())).expect(500);
    const logs = wrong.logs.join('\n');
    expect(logs).to.include('invalid_client');
    expect(logs).not.to.include('wrong-secret-value-123');
  });

  it('#54 Entra throttling: 503 with Retry-After; other users wait out the same window without calls; cached tokens keep being served', async () => {
    const cached = emulator.mint({ user: 'bob' });
    await me(cached).expect(200);
    emulator.resetCounters();
    emulator.faults.injectToken({ status: 429, retryAfter: 1 });
    const throttled = await me(emulator.mint()).expect(503);
    expect(throttled.headers['retry-after']).to.equal('1');
    expect(emulator.counters.token).to.equal(1);
    // Another user inside the window: refused at once, no call to Entra.
    const other = await me(emulator.mint({ user: 'bob' })).expect(503);
    expect(Number(other.headers['retry-after'])).to.be.within(1, 1);
    expect(emulator.counters.token).to.equal(1);
    await me(cached).expect(200);
    // Never longer than the window Entra gave.
    clock.advance(1100);
    await me(emulator.mint()).expect(200);
    expect(emulator.counters.token).to.equal(2);
  });

  it('#54 Entra 5xx (non-JSON) and a token endpoint timeout: 503 with Retry-After', async () => {
    emulator.faults.injectToken({ status: 500, body: 'non-json' });
    const outage = await me(emulator.mint()).expect(503);
    expect(outage.headers['retry-after']).to.match(/^\d+$/);
    emulator.faults.injectToken({ status: 200, delayMs: 2000 });
    const started = Date.now();
    const timeout = await me(emulator.mint()).expect(503);
    expect(Date.now() - started).to.be.below(1500);
    expect(timeout.headers['retry-after']).to.match(/^\d+$/);
  });

  it('#55 Graph 401 InvalidAuthenticationToken: evicted and exchanged once more; 502 if it still fails', async () => {
    const token = emulator.mint();
    await me(token).expect(200);
    emulator.resetCounters();
    emulator.faults.injectGraph({ path: '/v1.0/me', status: 401, code: 'InvalidAuthenticationToken', times: 1 });
    await me(token).expect(200);
    expect(emulator.counters.token, 'one fresh exchange').to.equal(1);
    await me(token).expect(200);
    expect(emulator.counters.token, 'the fresh token is cached').to.equal(1);
    emulator.faults.injectGraph({ path: '/v1.0/me', status: 401, code: 'InvalidAuthenticationToken', times: 2 });
    const failed = await me(token).expect(502);
    expect(at(failed.body, 'error')).to.equal('bad_gateway');
    expect(emulator.counters.token).to.equal(2);
  });

  it('#56 Graph CAE claims challenge: exchanged with the claims and retried; 401 insufficient_claims when Entra needs interaction', async () => {
    const token = emulator.mint();
    await me(token).expect(200);
    emulator.resetCounters();
    emulator.faults.injectGraph({ path: '/v1.0/me', status: 401, caeClaims: MFA_CLAIMS, times: 1 });
    await me(token).expect(200);
    expect(emulator.counters.token).to.equal(1);
    const exchange = emulator
      .requests()
      .filter((r) => r.path.endsWith('/token'))
      .at(-1);
    expect(exchange?.formParams).to.include('claims');

    // A policy the CAE claims do not satisfy: Entra wants interaction, the caller gets the challenge.
    const stepUp = '{"access_token":{"acrs":{"essential":true,"value":"c9"}}}';
    emulator.setUser('alice', { caClaims: stepUp });
    emulator.faults.injectGraph({ path: '/v1.0/me', status: 401, caeClaims: MFA_CLAIMS, times: 1 });
    const response = await me(token).expect(401);
    const { params } = parseChallenge(response.headers['www-authenticate']);
    expect(params['error']).to.equal('insufficient_claims');
    expect(Buffer.from(params['claims'] ?? '', 'base64').toString('utf8')).to.equal(stepUp);
  });

  it("#57 Graph 403 and 404 pass through with Graph's body", async () => {
    const token = emulator.mint();
    emulator.faults.injectGraph({ path: '/v1.0/me', status: 403, code: 'Authorization_RequestDenied' });
    expect(at((await me(token).expect(403)).body, 'error', 'code')).to.equal('Authorization_RequestDenied');
    emulator.faults.injectGraph({ path: '/v1.0/me', status: 404, code: 'Request_ResourceNotFound' });
    expect(at((await me(token).expect(404)).body, 'error', 'code')).to.equal('Request_ResourceNotFound');
  });
});

describe('proactive refresh', () => {
  // 64 s tokens: cached until 60 s before expiry (4 s), refreshed from half-way (2 s).
  const emulator = useEmulator({ accessTokenLifetimeSeconds: 64 });
  // The service's clock: the refresh window is reached by moving it, not by sleeping.
  const clock = manualClock();
  const api = useService(emulator, {}, { now: clock.now });
  // The emulator dates its tokens by real time: each test starts from it.
  beforeEach(() => clock.reset());

  it('serves the cached token inside the refresh window and refreshes it in the background, once', async () => {
    const token = emulator.mint();
    const me = () => api.request.get('/api/me').set(bearer(token)).expect(200);
    await me();
    emulator.resetCounters();
    await me();
    expect(emulator.counters.token).to.equal(0);
    clock.advance(2300);
    await Promise.all([me(), me(), me()]);
    await sleep(200); // the refresh runs in the background: let a second one show if there were one
    expect(emulator.counters.token, 'one background refresh').to.equal(1);
  });

  it('keeps serving the still-valid token when the refresh fails', async () => {
    const token = emulator.mint();
    const me = () => api.request.get('/api/me').set(bearer(token));
    await me().expect(200);
    clock.advance(2300);
    emulator.resetCounters();
    emulator.faults.injectToken({ status: 503, times: 'always' });
    expect((await me()).status).to.equal(200);
    await sleep(200);
    expect((await me()).status).to.equal(200);
    expect(emulator.counters.token).to.be.at.least(1);
    emulator.faults.clear();
  });
});
