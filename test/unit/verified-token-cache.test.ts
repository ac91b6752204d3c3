import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import { Registry } from 'prom-client';
import { InsufficientScopeError, InvalidTokenError } from '../../api/errors.js';
import { createAccessTokenValidator, type AccessTokenValidatorOptions } from '../../middleware/bearer/validator.js';
import { createVerifiedTokenCache, verifiedTokenBytes } from '../../middleware/bearer/verified-token-cache.js';
import { manualClock } from '../support/clock.js';
import { startLocalIssuer, type LocalIssuer } from '../support/local-issuer.js';
import { sample } from '../support/metrics.js';
import { until } from '../support/wait.js';

describe('verified-token cache: the cache itself', () => {
  it('stays within its byte budget under 100,000 distinct tokens, dropping the least recently used', () => {
    const maxBytes = 4 * 1024 * 1024;
    const cache = createVerifiedTokenCache<{ n: number }>({ maxBytes });
    if (!cache) throw new Error('expected a cache');
    const bytes = verifiedTokenBytes(900); // the claims of a typical Entra access token
    let highest = 0;
    for (let n = 0; n < 100_000; n++) {
      cache.set(randomBytes(32).toString('base64url'), { n }, bytes);
      highest = Math.max(highest, cache.bytes);
    }
    expect(highest, 'accounted bytes at any time').to.be.at.most(maxBytes);
    expect(cache.entries).to.equal(Math.floor(maxBytes / bytes));
  });

  it('is off at a budget of 0', () => {
    expect(createVerifiedTokenCache({ maxBytes: 0 })).to.equal(undefined);
  });
});

describe('verified-token cache: in the validator', () => {
  let issuer: LocalIssuer;
  before(async () => {
    issuer = await startLocalIssuer();
  });
  after(() => issuer.close());

  function validator(overrides: Partial<AccessTokenValidatorOptions> = {}) {
    const clock = manualClock();
    const registry = new Registry();
    const options: AccessTokenValidatorOptions = {
      metadata: issuer.metadata,
      multiTenant: false,
      workAndSchoolOnly: false,
      audiences: [issuer.clientId],
      requiredScopes: ['access_as_user'],
      allowedTenants: [],
      clockSkewSeconds: 300,
      jwksCooldownMs: 1_000,
      registry,
      now: clock.now,
      ...overrides,
    };
    const validate = createAccessTokenValidator(options);
    const lookups = async (result: 'hit' | 'miss') => sample(await registry.metrics(), 'obo_token_validation_cache_lookups_total', { result }) ?? 0;
    const entries = async () => sample(await registry.metrics(), 'obo_token_validation_cache_entries') ?? 0;
    return { validate, options, clock, lookups, entries };
  }

  async function refusal(promise: Promise<unknown>): Promise<unknown> {
    try {
      await promise;
    } catch (error) {
      return error;
    }
    throw new Error('expected the token to be refused');
  }

  it('answers a repeat token from the cache with the same caller', async () => {
    const { validate, lookups } = validator();
    const token = issuer.sign(issuer.claims());
    const first = await validate(token);
    const second = await validate(token);
    // A new object around the cached identity (the cache does not keep the token), equal in every field.
    expect(second).to.deep.equal(first);
    expect(second.token).to.equal(token);
    expect(Object.isFrozen(first) && Object.isFrozen(second)).to.equal(true);
    expect(await lookups('hit')).to.equal(1);
    expect(await lookups('miss')).to.equal(1);
  });

  it('validates a one-character change of a cached token in full, and refuses it', async () => {
    const { validate, lookups, entries } = validator();
    const token = issuer.sign(issuer.claims());
    await validate(token);
    const [header, payload, signature] = token.split('.') as [string, string, string];
    const flip = (text: string, at: number) => `${text.slice(0, at)}${text[at] === 'A' ? 'B' : 'A'}${text.slice(at + 1)}`;
    for (const changed of [`${header}.${payload}.${flip(signature, 10)}`, `${header}.${flip(payload, 20)}.${signature}`]) {
      expect(await refusal(validate(changed))).to.be.instanceOf(InvalidTokenError);
    }
    expect(await lookups('hit')).to.equal(0);
    expect(await entries()).to.equal(1);
  });

  it('refuses a cached token once it expires (the injected clock, with the skew), and drops it', async () => {
    const { validate, clock, lookups, entries } = validator();
    const token = issuer.sign(issuer.claims({ exp: Math.floor(Date.now() / 1000) + 600 }));
    await validate(token);
    clock.advance((600 + 290) * 1000); // inside the 300 s skew: still served from the cache
    await validate(token);
    expect(await lookups('hit')).to.equal(1);
    clock.advance(20_000);
    const error = await refusal(validate(token));
    expect(error).to.be.instanceOf(InvalidTokenError);
    expect((error as InvalidTokenError).message).to.match(/expired/);
    expect(await entries()).to.equal(0);
  });

  it('checks the required scopes and the tenant allow-list in force on every hit', async () => {
    const { validate, options, lookups } = validator();
    const token = issuer.sign(issuer.claims());
    await validate(token);
    options.requiredScopes = ['Other.Scope'];
    expect(await refusal(validate(token))).to.be.instanceOf(InsufficientScopeError);
    options.requiredScopes = ['access_as_user'];
    options.allowedTenants = ['00000000-0000-0000-0000-000000000001'];
    expect(await refusal(validate(token))).to.be.instanceOf(InvalidTokenError);
    options.allowedTenants = [issuer.tenantId];
    await validate(token);
    expect(await lookups('hit')).to.equal(3);
  });

  it('refuses a cached token once a JWKS refresh shows its key is no longer published', async () => {
    const { validate, clock } = validator();
    const kid = issuer.addKey();
    const token = issuer.sign(issuer.claims({ exp: Math.floor(Date.now() / 1000) + 3 * 3600 }), { kid });
    await validate(token);
    issuer.retire(kid);
    await validate(token); // the key set was fetched a moment ago: nothing tells us yet
    const hits = issuer.jwksHits;
    clock.advance(3_601_000); // past the hourly background refresh, which a hit also starts
    await validate(token).catch(() => undefined);
    await until('the background JWKS refresh', () => issuer.jwksHits > hits);
    await until('the refreshed set in force', async () => (await refusal(validate(token))) instanceof InvalidTokenError);
  });

  it('never caches a refused token: a flood of them evicts nothing', async () => {
    const { validate, lookups, entries } = validator({ cacheMaxBytes: 64 * 1024 });
    const good = issuer.sign(issuer.claims());
    await validate(good);
    const now = Math.floor(Date.now() / 1000);
    const bad = [
      () => issuer.sign(issuer.claims({ aud: 'someone-else' })),
      () => issuer.sign(issuer.claims({ exp: now - 3600, iat: now - 7200, nbf: now - 7200 })),
      () => issuer.sign(issuer.claims({ scp: 'User.Read' })),
      () => `${issuer.sign(issuer.claims()).slice(0, -6)}AAAAAA`,
    ];
    for (let i = 0; i < 400; i++) {
      const make = bad[i % bad.length];
      if (make) await refusal(validate(make()));
    }
    expect(await entries()).to.equal(1);
    await validate(good);
    expect(await lookups('hit')).to.equal(1);
  });

  it('TOKEN_VALIDATION_CACHE_MAX_BYTES=0: every presentation is verified in full', async () => {
    const { validate, lookups } = validator({ cacheMaxBytes: 0 });
    const token = issuer.sign(issuer.claims());
    const first = await validate(token);
    const second = await validate(token);
    expect(second).not.to.equal(first);
    expect(second.tokenHash).to.equal(first.tokenHash);
    expect(await lookups('hit')).to.equal(0);
  });

  it('computes the user reference once, keyed by a secret: equal for one secret, different without it', async () => {
    const secret = randomBytes(32);
    const token = issuer.sign(issuer.claims());
    const a = await validator({ userReferenceSecret: secret }).validate(token);
    const b = await validator({ userReferenceSecret: secret }).validate(token);
    const c = await validator().validate(token);
    expect(a.userReference).to.match(/^[0-9a-f]{16}$/);
    expect(b.userReference).to.equal(a.userReference);
    expect(c.userReference).not.to.equal(a.userReference);
  });
});
