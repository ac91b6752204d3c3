import { expect } from 'chai';
import { useEmulator, useService, useServices } from '../support/fixtures.js';
import { at } from '../support/json.js';
import type { TestService } from '../support/service.js';
import { bearer } from '../support/tokens.js';
import { sleep } from '../support/wait.js';
import { parseChallenge } from '../support/www-authenticate.js';

// The JWKS cooldown is jose's own (createRemoteJWKSet reads Date.now, not our injected clock),
// so these tests wait it out for real.
// Long enough that a burst of 100 requests on a loaded 2-core machine fits inside one window.
const COOLDOWN_MS = 1500;

/** docs/bad-input-checklist.md, items 24, 25 and 30 (#23 is in bad-inputs.test.ts). */
describe('signing keys: unknown kids, rotation and JWKS outages (checklist 24, 25, 30)', () => {
  // A fresh emulator (key ring) and service (key set, cooldown) for every test.
  const emulator = useEmulator({}, { each: true });
  const api = useService(emulator, { JWKS_COOLDOWN_MS: String(COOLDOWN_MS) }, {}, { each: true });
  const services = useServices(emulator);
  beforeEach(async () => {
    await api.request.get('/api/me').set(bearer(emulator.mint())).expect(200);
    emulator.resetCounters();
  });

  const status = async (token: string) => (await api.request.get('/api/me').set(bearer(token))).status;

  it('#24 a burst of 100 distinct unknown kids after the cooldown costs at most one JWKS request', async () => {
    await sleep(COOLDOWN_MS + 100);
    const statuses = await Promise.all(
      Array.from({ length: 100 }, (_, i) => status(emulator.mint({ key: 'unpublished', header: { kid: `forged-${i}` } }))),
    );
    expect(new Set(statuses)).to.deep.equal(new Set([401]));
    expect(emulator.counters.jwks).to.be.at.most(1);
    expect(emulator.counters.token).to.equal(0);
  });

  it('#25 a rotated key: 401 inside the cooldown, 200 after it (documented limitation)', async () => {
    await emulator.keys.rotate();
    await sleep(COOLDOWN_MS + 100); // the first unknown kid after the cooldown refetches
    expect(await status(emulator.mint())).to.equal(200);
    await emulator.keys.rotate();
    expect(await status(emulator.mint()), 'inside the cooldown').to.equal(401);
    await sleep(COOLDOWN_MS + 100);
    expect(await status(emulator.mint()), 'after the cooldown').to.equal(200);
  });

  it('#30 JWKS unreachable: a cached key still verifies, an unknown kid is a 503 with Retry-After', async () => {
    emulator.faults.jwksDown(true);
    await sleep(COOLDOWN_MS + 100);
    expect(await status(emulator.mint())).to.equal(200);
    const response = await api.request.get('/api/me').set(bearer(emulator.mint({ key: 'unpublished' })));
    expect(response.status).to.equal(503);
    expect(Number(response.headers['retry-after'])).to.be.greaterThan(0);
    expect(response.headers['www-authenticate']).to.equal(undefined);
    // Further unknown kids fail fast instead of each hammering the JWKS endpoint.
    const before = emulator.counters.jwks;
    await status(emulator.mint({ key: 'unpublished', header: { kid: 'another' } }));
    expect(emulator.counters.jwks).to.equal(before);
    emulator.faults.jwksDown(false);
  });

  it('a service that cannot reach the authority metadata answers 503, and /readyz says so', async () => {
    const cold = await services.start({ AZURE_AUTHORITY_HOST: 'https://127.0.0.1:9' });
    const response = await cold.request.get('/api/me').set(bearer(emulator.mint()));
    expect(response.status).to.equal(503);
    expect(response.headers['retry-after']).to.match(/^\d+$/);
    await cold.request.get('/readyz').expect(503);
    await cold.request.get('/healthz').expect(200);
  });
});

describe('v1 and v2 tokens, single- and multi-tenant', () => {
  const emulator = useEmulator();
  const services = useServices(emulator);
  beforeEach(() => emulator.resetCounters());

  /** Runs `run` against a service configured with `env` (closed after the test). */
  async function withService(env: Record<string, string>, run: (api: TestService) => Promise<void>): Promise<void> {
    await run(await services.start(env));
  }
  const me = (api: TestService, token: string) => api.request.get('/api/me').set(bearer(token));

  it('accepts v1 tokens (sts.windows.net issuer, api:// audience) and v2 tokens (GUID audience)', () =>
    withService({}, async (api) => {
      const v1 = await me(api, emulator.mint({ version: 1 })).expect(200);
      expect(at(v1.body, 'id')).to.equal(emulator.users.alice.oid);
      await me(api, emulator.mint({ version: 2 })).expect(200);
      // The forms do not mix: a v1 token with the v2 issuer, or a v2 token with the v1 issuer.
      await me(api, emulator.mint({ version: 1, iss: `https://login.microsoftonline.com/${emulator.tenant.id}/v2.0` })).expect(401);
      await me(api, emulator.mint({ version: 2, iss: `https://sts.windows.net/${emulator.tenant.id}/` })).expect(401);
    }));

  it('accepts the tenant by domain name as AZURE_TENANT_ID', () =>
    withService({ AZURE_TENANT_ID: emulator.tenant.domain }, async (api) => {
      await me(api, emulator.mint()).expect(200);
      await me(api, emulator.mint({ user: 'carol' })).expect(401);
    }));

  it('single-tenant: a user of another tenant is refused before any exchange', () =>
    withService({}, async (api) => {
      await me(api, emulator.mint({ user: 'carol' })).expect(401);
      expect(emulator.counters.token).to.equal(0);
    }));

  it('multi-tenant (organizations): the {tenantid} template is checked against tid, the exchange goes to the home tenant', () =>
    withService({ AZURE_TENANT_ID: 'organizations' }, async (api) => {
      const carol = await me(api, emulator.mint({ user: 'carol' })).expect(200);
      expect(at(carol.body, 'id')).to.equal(emulator.users.carol.oid);
      await me(api, emulator.mint({ user: 'alice', version: 1 })).expect(200);
      const tokenCalls = emulator
        .requests()
        .filter((r) => r.path.endsWith('/oauth2/v2.0/token'))
        .slice(-2);
      expect(tokenCalls.map((r) => r.path)).to.deep.equal([
        `/${emulator.users.carol.tid}/oauth2/v2.0/token`,
        `/${emulator.users.alice.tid}/oauth2/v2.0/token`,
      ]);
      // An issuer naming another tenant than tid is refused.
      await me(api, emulator.mint({ user: 'carol', iss: `https://login.microsoftonline.com/${emulator.tenant.id}/v2.0` })).expect(401);
    }));

  it('multi-tenant (common) honours API_ALLOWED_TENANTS, and refuses the MSA tenant', () =>
    withService({ AZURE_TENANT_ID: 'common', API_ALLOWED_TENANTS: emulator.tenant.id }, async (api) => {
      await me(api, emulator.mint({ user: 'alice' })).expect(200);
      const carol = await me(api, emulator.mint({ user: 'carol' })).expect(401);
      expect(parseChallenge(carol.headers['www-authenticate']).params['error']).to.equal('invalid_token');
      const msa = '9188040d-6c67-4c5b-b112-36a304b66dad';
      await me(api, emulator.mint({ tid: msa, iss: `https://login.microsoftonline.com/${msa}/v2.0`, key: 'msa' })).expect(401);
      expect(emulator.counters.token).to.equal(1);
    }));

  it('multi-tenant: a key bound to one issuer does not vouch for another tenant', () =>
    withService({ AZURE_TENANT_ID: 'organizations' }, async (api) => {
      await me(api, emulator.mint({ user: 'carol', key: 'msa' })).expect(401);
      expect(emulator.counters.token).to.equal(0);
    }));
});
