import { expect } from 'chai';
import { InvalidTokenError } from '../../api/errors.js';
import { createOpenIdMetadataSource } from '../../middleware/bearer/openid-metadata.js';
import { createAccessTokenValidator, type AccessTokenValidatorOptions } from '../../middleware/bearer/validator.js';
import { startEmulator, type Emulator } from '../emulator/index.js';
import { startLocalIssuer, type LocalIssuer } from '../support/local-issuer.js';
import { startService, type TestService } from '../support/service.js';
import { parseChallenge } from '../support/www-authenticate.js';

/** The personal-account (MSA) tenant. */
const CONSUMER_TENANT = '9188040d-6c67-4c5b-b112-36a304b66dad';

async function refusal(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected the token to be refused');
}

describe('bearer hardening: consumer accounts, typ, UTF-8 (issues 9, 10.10, 10.14)', () => {
  let emulator: Emulator;
  before(async () => {
    emulator = await startEmulator();
  });
  after(() => emulator.close());
  beforeEach(() => emulator.resetCounters());

  /** A personal Microsoft account's token, as Entra signs it: MSA tenant, its issuer, the MSA-bound key. */
  const consumerToken = () => emulator.mint({ tid: CONSUMER_TENANT, iss: `https://login.microsoftonline.com/${CONSUMER_TENANT}/v2.0`, key: 'msa' });
  const me = (api: TestService, token: string) => api.request.get('/api/me').set('authorization', `Bearer ${token}`);

  describe('AZURE_TENANT_ID=organizations means work and school accounts only (10.10)', () => {
    function validatorFor(tenant: string) {
      const options: AccessTokenValidatorOptions = {
        metadata: createOpenIdMetadataSource({ authorityHost: emulator.authorityHost, tenant }),
        multiTenant: true,
        workAndSchoolOnly: tenant === 'organizations',
        audiences: [emulator.api.clientId, emulator.api.appIdUri],
        requiredScopes: ['access_as_user'],
        allowedTenants: [],
        clockSkewSeconds: 300,
        jwksCooldownMs: 30_000,
      };
      return createAccessTokenValidator(options);
    }

    it('the service refuses a consumer-tenant token with 401 invalid_token, before any exchange', async () => {
      const api = await startService(emulator, { AZURE_TENANT_ID: 'organizations' });
      try {
        const response = await me(api, consumerToken());
        expect(response.status, response.text).to.equal(401);
        expect(parseChallenge(response.headers['www-authenticate']).params['error']).to.equal('invalid_token');
        expect(emulator.counters.token).to.equal(0);
        // Work and school accounts of any tenant still pass.
        await me(api, emulator.mint({ user: 'carol' })).expect(200);
      } finally {
        await api.close();
      }
    });

    it('the validator as the service builds it: organizations refuses the consumer tenant, common accepts it', async () => {
      expect(await refusal(validatorFor('organizations')(consumerToken()))).to.be.instanceOf(InvalidTokenError);
      const caller = await validatorFor('common')(consumerToken());
      expect(caller.tenantId).to.equal(CONSUMER_TENANT);
    });
  });

  describe('typ: Entra access tokens say "JWT" (10.14)', () => {
    let api: TestService;
    before(async () => {
      api = await startService(emulator);
    });
    after(() => api.close());

    it('refuses a token without typ, or with another typ', async () => {
      for (const typ of [null, 'at+jwt', 'JOSE', 'application/jwt']) {
        const response = await me(api, emulator.mint({ header: { typ } }));
        expect(response.status, String(typ)).to.equal(401);
        expect(parseChallenge(response.headers['www-authenticate']).params['error']).to.equal('invalid_token');
      }
      expect(emulator.counters.token).to.equal(0);
    });

    it('accepts typ in any case', () => me(api, emulator.mint({ header: { typ: 'jwt' } })).expect(200));
  });

  describe('JWT segments are decoded as jose decodes them: invalid UTF-8 is an invalid token (issue 9)', () => {
    let issuer: LocalIssuer;
    before(async () => {
      issuer = await startLocalIssuer();
    });
    after(() => issuer.close());

    const validate = () =>
      createAccessTokenValidator({
        metadata: issuer.metadata,
        multiTenant: false,
        workAndSchoolOnly: false,
        audiences: [issuer.clientId],
        requiredScopes: ['access_as_user'],
        allowedTenants: [],
        clockSkewSeconds: 300,
        jwksCooldownMs: 1_000,
      });
    /** The JSON text of the claims with `"name":"…"` holding `bytes` verbatim. */
    const withNameBytes = (json: string, bytes: Buffer): Buffer => {
      const [before, after] = json.split('"Test User"') as [string, string];
      return Buffer.concat([Buffer.from(`${before}"`), bytes, Buffer.from(`"${after}`)]);
    };

    it('a signed payload with invalid UTF-8 in a claim is refused; the same claim as valid UTF-8 passes', async () => {
      const json = JSON.stringify(issuer.claims());
      const valid = await validate()(issuer.sign(withNameBytes(json, Buffer.from('Zoë', 'utf8'))));
      expect(valid.claims['name']).to.equal('Zoë');
      // A lone continuation byte, an overlong "/", a UTF-16 surrogate written as UTF-8: each is not UTF-8.
      for (const bad of [Buffer.from([0x5a, 0x80]), Buffer.from([0xc0, 0xaf]), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from([0xff])]) {
        const token = issuer.sign(withNameBytes(json, bad));
        expect(await refusal(validate()(token)), bad.toString('hex')).to.be.instanceOf(InvalidTokenError);
      }
    });

    it('a token signed by a published RSA key shorter than 2048 bits is refused (as jose refuses it); the same claims under a 2048-bit key pass', async () => {
      const shortKid = issuer.addKey(1024);
      const claims = issuer.claims();
      expect(await refusal(validate()(issuer.sign(claims, { kid: shortKid })))).to.be.instanceOf(InvalidTokenError);
      expect((await validate()(issuer.sign(claims))).objectId).to.equal(claims['oid']);
    });

    it('a header with invalid UTF-8 is refused', async () => {
      const header = Buffer.concat([Buffer.from(`{"typ":"JWT","alg":"RS256","kid":"${issuer.kid}","x":"`), Buffer.from([0xfe]), Buffer.from('"}')]);
      const token = issuer.sign(issuer.claims(), { header });
      expect(await refusal(validate()(token))).to.be.instanceOf(InvalidTokenError);
    });
  });
});
