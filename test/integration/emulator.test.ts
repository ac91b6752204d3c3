// The emulator itself, exercised with the REAL @azure/msal-node and jose (no mocks).
// Runs under NODE_EXTRA_CA_CERTS=.emulator/ca.pem (see package.json `test`).
import { X509Certificate, createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import {
  ConfidentialClientApplication,
  InteractionRequiredAuthError,
  ServerError,
  type AuthenticationResult,
  type Configuration,
} from '@azure/msal-node';
import { expect } from 'chai';
import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';
import { ensureCertificates } from '../emulator/certs.js';
import { startEmulator, type Emulator } from '../emulator/index.js';
import { useEmulator } from '../support/fixtures.js';
import { sleep } from '../support/wait.js';

type Json = Record<string, unknown>;
const GRAPH_USER_READ = 'https://graph.microsoft.com/User.Read';
const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';

function claimsOf(token: string): Json {
  return JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8')) as Json;
}

/** A fresh client per call: msal's throttle state and metadata cache are per instance. */
function client(
  e: Emulator,
  auth: Partial<Configuration['auth']> = { clientSecret: e.api.clientSecret },
  tenant = e.tenant.id,
): ConfidentialClientApplication {
  return new ConfidentialClientApplication({
    auth: { clientId: e.api.clientId, authority: `${e.authorityHost}/${tenant}`, knownAuthorities: [new URL(e.authorityHost).host], ...auth },
  });
}

async function obo(
  cca: ConfidentialClientApplication,
  assertion: string,
  scopes = [GRAPH_USER_READ],
  claims?: string,
): Promise<AuthenticationResult> {
  const result = await cca.acquireTokenOnBehalfOf({ oboAssertion: assertion, scopes, ...(claims ? { claims } : {}) });
  if (!result) throw new Error('no result');
  return result;
}

async function oboError(cca: ConfidentialClientApplication, assertion: string, scopes = [GRAPH_USER_READ]): Promise<unknown> {
  try {
    await obo(cca, assertion, scopes);
  } catch (error: unknown) {
    return error;
  }
  throw new Error('expected the OBO call to fail');
}

interface Reply {
  status: number;
  headers: Headers;
  body: Json;
}

async function tokenRequest(
  e: Emulator,
  params: Record<string, string>,
  options: { tenant?: string; headers?: Record<string, string>; raw?: string } = {},
): Promise<Reply> {
  const response = await fetch(`${e.authorityHost}/${options.tenant ?? e.tenant.id}/oauth2/v2.0/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...options.headers },
    body: options.raw ?? new URLSearchParams(params).toString(),
  });
  return { status: response.status, headers: response.headers, body: (await response.json()) as Json };
}

function oboParams(e: Emulator, overrides: Record<string, string | undefined> = {}): Record<string, string> {
  const base: Record<string, string | undefined> = {
    grant_type: JWT_BEARER,
    client_id: e.api.clientId,
    client_secret: e.api.clientSecret,
    assertion: e.mint(),
    scope: `${GRAPH_USER_READ} openid profile offline_access`,
    requested_token_use: 'on_behalf_of',
    ...overrides,
  };
  return Object.fromEntries(Object.entries(base).filter((entry): entry is [string, string] => entry[1] !== undefined));
}

async function graph(e: Emulator, path: string, token?: string, init: RequestInit = {}): Promise<{ status: number; headers: Headers; body: Json }> {
  const headers = new Headers(init.headers);
  if (token) headers.set('authorization', `Bearer ${token}`);
  const response = await fetch(path.startsWith('https://') ? path : `${e.graphBaseUrl}${path}`, { ...init, headers });
  const text = await response.text();
  return { status: response.status, headers: response.headers, body: text.startsWith('{') ? (JSON.parse(text) as Json) : { text } };
}

function challengeParams(header: string | null): Record<string, string> {
  const params: Record<string, string> = {};
  for (const match of (header ?? '').matchAll(/(\w+)="([^"]*)"/g)) params[match[1] ?? ''] = match[2] ?? '';
  return params;
}

function errorOf(body: Json): Json {
  return body.error as Json;
}

describe('Entra ID + Graph emulator', function () {
  this.timeout(30_000);
  const e = useEmulator();
  beforeEach(() => e.reset());

  describe('certificates', () => {
    it('keeps a CA and a leaf for 127.0.0.1, localhost and ::1, reused across calls', async () => {
      const first = await ensureCertificates();
      const second = await ensureCertificates();
      expect(await readFile(second.caPath, 'utf8')).to.equal(await readFile(first.caPath, 'utf8'));
      const leaf = new X509Certificate(await readFile(first.certPath));
      const ca = new X509Certificate(await readFile(first.caPath));
      expect(leaf.verify(ca.publicKey)).to.equal(true);
      expect(leaf.checkIP('127.0.0.1')).to.equal('127.0.0.1');
      expect(leaf.checkIP('::1')).to.equal('::1');
      expect(leaf.checkHost('localhost')).to.equal('localhost');
      expect(e.caPath).to.equal(first.caPath);
    });
  });

  describe('metadata, JWKS and instance discovery', () => {
    it('serves v2 metadata per tenant GUID and domain, with the template issuer for common', async () => {
      const byId = (await (await fetch(`${e.authorityHost}/${e.tenant.id}/v2.0/.well-known/openid-configuration`)).json()) as Json;
      expect(byId.issuer).to.equal(`https://login.microsoftonline.com/${e.tenant.id}/v2.0`);
      expect(byId.token_endpoint).to.equal(`${e.authorityHost}/${e.tenant.id}/oauth2/v2.0/token`);
      expect(byId.jwks_uri).to.equal(`${e.authorityHost}/${e.tenant.id}/discovery/v2.0/keys`);
      const byDomain = (await (await fetch(`${e.authorityHost}/${e.tenant.domain}/v2.0/.well-known/openid-configuration`)).json()) as Json;
      expect(byDomain.authorization_endpoint).to.equal(`${e.authorityHost}/${e.tenant.id}/oauth2/v2.0/authorize`);
      const common = (await (await fetch(`${e.authorityHost}/common/v2.0/.well-known/openid-configuration`)).json()) as Json;
      expect(common.issuer).to.equal('https://login.microsoftonline.com/{tenantid}/v2.0');
      expect(common.token_endpoint).to.equal(`${e.authorityHost}/common/oauth2/v2.0/token`);
      const v1 = (await (await fetch(`${e.authorityHost}/${e.tenant.id}/.well-known/openid-configuration`)).json()) as Json;
      expect(v1.issuer).to.equal(`https://sts.windows.net/${e.tenant.id}/`);
      expect(v1.jwks_uri).to.equal(`${e.authorityHost}/${e.tenant.id}/discovery/keys`);
      const v1Common = (await (await fetch(`${e.authorityHost}/organizations/.well-known/openid-configuration`)).json()) as Json;
      expect(v1Common.issuer).to.equal('https://sts.windows.net/{tenantid}/');
      expect(e.counters.openidConfiguration).to.equal(5);
    });

    it('answers an unknown tenant with invalid_tenant AADSTS90002', async () => {
      const response = await fetch(`${e.authorityHost}/00000000-0000-0000-0000-000000000001/v2.0/.well-known/openid-configuration`, {
        headers: { 'client-request-id': 'corr-1' },
      });
      expect(response.status).to.equal(400);
      const body = (await response.json()) as Json;
      expect(body.error).to.equal('invalid_tenant');
      expect(body.error_codes).to.deep.equal([90002]);
      expect(body.correlation_id).to.equal('corr-1');
      expect(String(body.error_description)).to.match(/^AADSTS90002: .*\r\nTrace ID: .*\r\nCorrelation ID: corr-1\r\nTimestamp: /s);
    });

    it('publishes RSA keys with kid == x5t == SHA-1 of x5c, and an MSA-bound key with a concrete issuer', async () => {
      for (const path of ['discovery/v2.0/keys', 'discovery/keys']) {
        const { keys } = (await (await fetch(`${e.authorityHost}/${e.tenant.id}/${path}`)).json()) as { keys: Json[] };
        expect(keys.map((k) => k.kid)).to.have.members(e.keys.publishedKids());
        for (const key of keys) {
          expect(key).to.include({ kty: 'RSA', use: 'sig', e: 'AQAB' });
          expect(key.x5t).to.equal(key.kid);
          const der = Buffer.from(String((key.x5c as string[])[0]), 'base64');
          expect(createHash('sha1').update(der).digest('base64url')).to.equal(key.kid);
        }
        expect(keys.find((k) => k.kid === e.keys.currentKid)?.issuer).to.equal('https://login.microsoftonline.com/{tenantid}/v2.0');
        expect(keys.find((k) => k.kid === e.keys.msaKid)?.issuer).to.equal(
          'https://login.microsoftonline.com/9188040d-6c67-4c5b-b112-36a304b66dad/v2.0',
        );
        expect(keys.map((k) => k.kid)).not.to.include(e.keys.unpublishedKid);
      }
      expect(e.counters.jwks).to.equal(2);
    });

    it('serves instance discovery for its own host and invalid_instance for others', async () => {
      const own = encodeURIComponent(`${e.authorityHost}/${e.tenant.id}/oauth2/v2.0/authorize`);
      const ok = (await (await fetch(`${e.authorityHost}/common/discovery/instance?api-version=1.1&authorization_endpoint=${own}`)).json()) as Json;
      expect(ok.tenant_discovery_endpoint).to.equal(`${e.authorityHost}/${e.tenant.id}/v2.0/.well-known/openid-configuration`);
      expect((ok.metadata as Json[])[0]?.aliases).to.include(new URL(e.authorityHost).host);
      const other = await fetch(
        `${e.authorityHost}/common/discovery/instance?api-version=1.1&authorization_endpoint=${encodeURIComponent('https://evil.example/x/oauth2/v2.0/authorize')}`,
      );
      expect(other.status).to.equal(400);
      expect(((await other.json()) as Json).error).to.equal('invalid_instance');
      expect(e.counters.instanceDiscovery).to.equal(2);
    });
  });

  describe('minted tokens with real jose', () => {
    const jwksUrl = (em: Emulator): URL => new URL(`${em.authorityHost}/${em.tenant.id}/discovery/v2.0/keys`);

    it('verifies v2 and v1 user tokens with createRemoteJWKSet + jwtVerify', async () => {
      const jwks = createRemoteJWKSet(jwksUrl(e));
      const v2 = await jwtVerify(e.mint(), jwks, {
        issuer: `https://login.microsoftonline.com/${e.tenant.id}/v2.0`,
        audience: e.api.clientId,
        algorithms: ['RS256'],
      });
      expect(v2.payload).to.include({ ver: '2.0', oid: e.users.alice.oid, tid: e.tenant.id, azp: e.spa.clientId, scp: 'access_as_user' });
      expect(v2.protectedHeader).to.include({ typ: 'JWT', alg: 'RS256', kid: e.keys.currentKid });
      const exp = Number(v2.payload.exp) - Number(v2.payload.iat);
      expect(exp).to.be.within(3600, 5400);
      const v1 = await jwtVerify(e.mint({ version: 1, user: 'bob' }), jwks, {
        issuer: `https://sts.windows.net/${e.tenant.id}/`,
        audience: e.api.appIdUri,
      });
      expect(v1.payload).to.include({ ver: '1.0', appid: e.spa.clientId, upn: e.users.bob.upn });
      expect(v1.protectedHeader.x5t).to.equal(v1.protectedHeader.kid);
      expect(e.counters.jwks).to.equal(1);
    });

    it('publishes a rotated key (unknown inside a jose cooldown, found after it); a retired key disappears', async () => {
      const options = { issuer: `https://login.microsoftonline.com/${e.tenant.id}/v2.0`, audience: e.api.clientId };
      const jwks = createRemoteJWKSet(jwksUrl(e)); // default 30 s cooldown
      await jwtVerify(e.mint(), jwks, options);
      const oldKid = e.keys.currentKid;
      const newKid = await e.keys.rotate();
      expect(e.keys.currentKid).to.equal(newKid);
      expect(e.keys.previousKid).to.equal(oldKid);
      const rotated = e.mint();
      expect(decodeProtectedHeader(rotated).kid).to.equal(newKid);
      const codeOf = (token: string, set: typeof jwks): Promise<string | undefined> =>
        jwtVerify(token, set, options).then(
          () => undefined,
          (error: unknown) => (error as { code?: string }).code,
        );
      expect(await codeOf(rotated, jwks)).to.equal('ERR_JWKS_NO_MATCHING_KEY');
      const quick = createRemoteJWKSet(jwksUrl(e), { cooldownDuration: 100 });
      expect(await codeOf(e.mint({ key: 'previous' }), quick)).to.equal(undefined);
      await sleep(150); // jose's own cooldown (real time)
      expect(await codeOf(rotated, quick)).to.equal(undefined);
      e.keys.retire(oldKid);
      expect(await codeOf(e.mint({ key: oldKid }), createRemoteJWKSet(jwksUrl(e)))).to.equal('ERR_JWKS_NO_MATCHING_KEY');
    });

    it('JWKS faults: down (500 or closed connection), empty, non-JSON, slow; a cached key still verifies', async () => {
      const options = { issuer: `https://login.microsoftonline.com/${e.tenant.id}/v2.0`, audience: e.api.clientId };
      const jwks = createRemoteJWKSet(jwksUrl(e), { cooldownDuration: 0 });
      await jwtVerify(e.mint(), jwks, options);
      const codeOf = async (token: string, set = jwks): Promise<string | undefined> =>
        jwtVerify(token, set, options).then(
          () => undefined,
          (error: unknown) => (error as { code?: string }).code ?? String(error),
        );
      for (const mode of ['status', 'close'] as const) {
        e.faults.jwksDown(true, mode);
        expect(await codeOf(e.mint())).to.equal(undefined); // cached kid, no fetch needed
        const before = e.counters.jwks;
        expect(await codeOf(e.mint({ key: 'unpublished' }))).to.be.a('string'); // unknown kid: the refetch fails
        expect(e.counters.jwks).to.equal(before + 1);
        e.faults.jwksDown(false);
      }
      e.faults.injectJwks({ body: 'empty' });
      expect(await codeOf(e.mint(), createRemoteJWKSet(jwksUrl(e)))).to.equal('ERR_JWKS_NO_MATCHING_KEY');
      e.faults.injectJwks({ body: 'non-json' });
      expect(await codeOf(e.mint(), createRemoteJWKSet(jwksUrl(e)))).to.be.a('string');
      e.faults.injectJwks({ delayMs: 400 });
      expect(await codeOf(e.mint(), createRemoteJWKSet(jwksUrl(e), { timeoutDuration: 100 }))).to.equal('ERR_JWKS_TIMEOUT');
      const log = e.requests().filter((r) => r.path.endsWith('/keys'));
      expect(log.map((r) => r.status)).to.include.members([500, 0]);
    });

    // The malformed and forged tokens that docs/bad-input-checklist.md #13-#49 are tested with.
    it('produces the bad tokens of the checklist', () => {
      const header = (t: string): Json => JSON.parse(Buffer.from(t.split('.')[0] ?? '', 'base64url').toString()) as Json;
      expect(header(e.mint({ header: { kid: null } }))).not.to.have.property('kid');
      expect(header(e.mint({ header: { alg: 'PS256' } })).alg).to.equal('PS256');
      expect(e.mintRaw({ header: { alg: 'none' }, payload: {}, sign: 'none' }).endsWith('.')).to.equal(true);
      const dup = e.mintRaw({ header: '{"alg":"RS256","kid":"a","kid":"b"}', payload: '{"sub":"x","sub":"y"}' });
      expect(Buffer.from(dup.split('.')[1] ?? '', 'base64url').toString()).to.equal('{"sub":"x","sub":"y"}');
      expect(claimsOf(e.mint({ exp: 'abc', nbf: null })))
        .to.include({ exp: 'abc' })
        .and.not.have.property('nbf');
      expect(claimsOf(e.mint({ scp: null, appOnly: true })))
        .to.include({ idtyp: 'app' })
        .and.not.have.property('scp');
      expect(claimsOf(e.mintIdToken('alice')))
        .to.include({ aud: e.spa.clientId })
        .and.not.have.property('scp');
      expect(Buffer.from(e.mint({ exp: Number.POSITIVE_INFINITY }).split('.')[1] ?? '', 'base64url').toString()).to.contain('"exp":1e309');
      const mismatch = claimsOf(e.mint({ tid: e.otherTenant.id }));
      expect(mismatch.iss).to.equal(`https://login.microsoftonline.com/${e.tenant.id}/v2.0`);
      expect(mismatch.tid).to.equal(e.otherTenant.id);
      const replay = e.mintGraphTokenReplay('alice');
      expect(header(replay)).to.have.property('nonce');
      expect(claimsOf(replay).aud).to.equal('https://graph.microsoft.com');
    });
  });

  describe('token endpoint with real msal-node', () => {
    it('exchanges with a client secret; the Graph token is v1 with a nonce header', async () => {
      const result = await obo(client(e), e.mint());
      expect(result.fromCache).to.equal(false);
      expect(result.scopes).to.include(GRAPH_USER_READ);
      expect(result.account?.homeAccountId).to.equal(`${e.users.alice.oid}.${e.tenant.id}`);
      expect(result.expiresOn && result.expiresOn.getTime() - Date.now()).to.be.within(3_500_000, 3_600_000);
      const claims = claimsOf(result.accessToken);
      expect(claims).to.include({
        aud: 'https://graph.microsoft.com',
        iss: `https://sts.windows.net/${e.tenant.id}/`,
        oid: e.users.alice.oid,
        appid: e.api.clientId,
        ver: '1.0',
      });
      expect(String(claims.scp).split(' ')).to.include('User.Read');
      expect(decodeProtectedHeader(result.accessToken)).to.have.property('nonce');
      expect(e.counters.token).to.equal(1);
      const log = e.requests().find((r) => r.path.endsWith('/oauth2/v2.0/token'));
      expect(log?.clientRequestId).to.equal(result.correlationId);
      expect(log?.formParams).to.include.members(['assertion', 'client_secret']);
    });

    it('serves the same assertion from msal cache (the requested scope form comes back)', async () => {
      const cca = client(e);
      const assertion = e.mint();
      await obo(cca, assertion);
      const again = await obo(cca, assertion);
      expect(again.fromCache).to.equal(true);
      expect(e.counters.token).to.equal(1);
    });

    it('exchanges with the registered certificate (PS256 + x5t#S256)', async () => {
      const pem = await readFile(e.api.certificatePemPath, 'utf8');
      const privateKey = /-----BEGIN PRIVATE KEY-----[\s\S]+?-----END PRIVATE KEY-----/.exec(pem)?.[0] ?? '';
      const result = await obo(
        client(e, { clientCertificate: { thumbprintSha256: e.api.certificateThumbprintSha256, privateKey } }),
        e.mint({ user: 'bob' }),
      );
      expect(claimsOf(result.accessToken)).to.include({ oid: e.users.bob.oid, appidacr: '2' });
    });

    it('exchanges with the client assertion file', async () => {
      const cca = client(e, { clientAssertion: async () => readFile(e.api.federatedTokenFile, 'utf8') });
      const result = await obo(cca, e.mint());
      expect(claimsOf(result.accessToken).appidacr).to.equal('2');
      expect(decodeProtectedHeader(await readFile(e.api.federatedTokenFile, 'utf8'))).to.include({ alg: 'PS256' });
    });

    it('works with the tenant domain and for the second tenant', async () => {
      expect((await obo(client(e, undefined, e.tenant.domain), e.mint())).tenantId).to.equal(e.tenant.id);
      const carol = await obo(client(e, undefined, e.otherTenant.id), e.mint({ user: 'carol' }));
      expect(claimsOf(carol.accessToken)).to.include({ tid: e.otherTenant.id, oid: e.users.carol.oid });
    });

    it('grants the consented scopes for .default', async () => {
      const result = await obo(client(e), e.mint(), ['https://graph.microsoft.com/.default']);
      expect(result.scopes).to.include.members([
        'https://graph.microsoft.com/User.Read',
        'https://graph.microsoft.com/Mail.Read',
        'https://graph.microsoft.com/.default',
      ]);
    });

    it('missing consent reaches msal as InteractionRequiredAuthError consent_required (65001)', async () => {
      e.setUser('alice', { consented: false });
      const error = await oboError(client(e), e.mint());
      expect(error).to.be.instanceOf(InteractionRequiredAuthError);
      const ir = error as InteractionRequiredAuthError;
      expect(ir.subError).to.equal('consent_required');
      expect(String(ir.errorNo)).to.equal('65001'); // a number at runtime, despite msal's string type
      expect(ir.claims).to.equal('');
      // Partial consent: a scope the user never granted.
      const partial = await oboError(client(e, undefined, e.otherTenant.id), e.mint({ user: 'carol' }), ['https://graph.microsoft.com/Mail.Read']);
      expect((partial as InteractionRequiredAuthError).subError).to.equal('consent_required');
    });

    it('MFA: 50076 with claims, then succeeds when the claims are sent back', async () => {
      e.setUser('alice', { mfaRequired: true });
      const cca = client(e, { clientSecret: e.api.clientSecret, clientCapabilities: ['cp1'] });
      const assertion = e.mint();
      const error = await oboError(cca, assertion);
      expect(error).to.be.instanceOf(InteractionRequiredAuthError);
      const ir = error as InteractionRequiredAuthError;
      expect(ir.errorCode).to.equal('invalid_grant');
      expect(ir.subError).to.equal('basic_action');
      expect(JSON.parse(ir.claims)).to.have.nested.property('access_token.capolids.essential', true);
      const result = await obo(cca, assertion, [GRAPH_USER_READ], ir.claims);
      expect(claimsOf(result.accessToken).amr).to.include('mfa');
      // An incoming token that already records MFA is not challenged again.
      expect((await obo(client(e), e.mint({ version: 1, extraClaims: { amr: ['pwd', 'mfa'] } }))).accessToken).to.be.a('string');
    });

    it('CA claims flag: interaction_required 50079 with the configured claims', async () => {
      const claims = '{"access_token":{"acrs":{"essential":true,"value":"c1"}}}';
      e.setUser('bob', { caClaims: claims });
      const error = (await oboError(client(e), e.mint({ user: 'bob' }))) as InteractionRequiredAuthError;
      expect(error).to.be.instanceOf(InteractionRequiredAuthError);
      expect(error.errorCode).to.equal('interaction_required');
      expect(error.claims).to.equal(claims);
      expect(String(error.errorNo)).to.equal('50079');
    });

    it('bad credentials are invalid_client (401) ServerErrors', async () => {
      const wrong = await oboError(client(e, { clientSecret: 'nope' }), e.mint());
      expect(wrong).to.be.instanceOf(ServerError);
      expect((wrong as ServerError).errorCode).to.equal('invalid_client');
      expect(String((wrong as ServerError).errorNo)).to.equal('7000215');
      const expired = await oboError(client(e, { clientSecret: e.api.expiredClientSecret }), e.mint());
      expect(String((expired as ServerError).errorNo)).to.equal('7000222');
      const raw = await tokenRequest(e, oboParams(e, { client_secret: 'nope' }));
      expect(raw.status).to.equal(401);
    });

    it('injected 429 / non-JSON 500 / slow responses', async () => {
      e.faults.injectToken({ status: 429, retryAfter: 1 });
      const throttled = await oboError(client(e), e.mint());
      expect(throttled).to.be.instanceOf(ServerError);
      expect((throttled as ServerError).errorCode).to.equal('temporarily_unavailable');
      e.faults.injectToken({ status: 500, body: 'non-json' });
      const nonJson = await oboError(client(e), e.mint());
      expect((nonJson as { errorCode?: string }).errorCode).to.equal('token_parsing_error');
      e.faults.injectToken({ status: 200, delayMs: 300 }); // slow, then a normal answer
      const started = Date.now();
      await obo(client(e), e.mint());
      expect(Date.now() - started).to.be.at.least(290);
      expect(e.counters.token).to.equal(3);
      const raw = (e.faults.injectToken({ status: 503, retryAfter: 7 }), await tokenRequest(e, oboParams(e)));
      expect(raw.status).to.equal(503);
      expect(raw.headers.get('retry-after')).to.equal('7');
      expect(raw.body.error).to.equal('temporarily_unavailable');
    });
  });

  describe('token endpoint checks (raw requests)', () => {
    it('shapes errors like Entra: fields, CRLF trailer, correlation id, headers', async () => {
      const reply = await tokenRequest(e, oboParams(e, { assertion: undefined }), { headers: { 'client-request-id': 'my-corr' } });
      expect(reply.status).to.equal(400);
      expect(reply.body).to.include({ error: 'invalid_request', correlation_id: 'my-corr' });
      expect(reply.body.error_codes).to.deep.equal([900144]);
      expect(reply.body).to.have.keys('error', 'error_description', 'error_codes', 'timestamp', 'trace_id', 'correlation_id', 'error_uri');
      expect(String(reply.body.error_description)).to.match(
        /^AADSTS900144: .*'assertion'.*\r\nTrace ID: [-0-9a-f]+\r\nCorrelation ID: my-corr\r\nTimestamp: \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ$/s,
      );
      expect(reply.headers.get('x-ms-request-id')).to.equal(reply.body.trace_id);
      expect(reply.headers.get('cache-control')).to.equal('no-store, no-cache');
      expect(reply.headers.get('pragma')).to.equal('no-cache');
    });

    it('checks in Entra order', async () => {
      const code = async (params: Record<string, string>, options = {}): Promise<[number, unknown, unknown]> => {
        const r = await tokenRequest(e, params, options);
        return [r.status, r.body.error, (r.body.error_codes as number[] | undefined)?.[0]];
      };
      expect(await code(oboParams(e), { headers: { 'content-type': 'application/json' }, raw: '{}' })).to.deep.equal([
        400,
        'invalid_request',
        900144,
      ]);
      expect(await code(oboParams(e), { tenant: 'nowhere.example' })).to.deep.equal([400, 'invalid_request', 90002]);
      expect(await code(oboParams(e, { scope: undefined }))).to.deep.equal([400, 'invalid_request', 900144]);
      // An unknown grant (client_credentials is emulated since the client-credentials grant was added).
      expect(await code(oboParams(e, { grant_type: 'urn:example:no-such-grant' }))).to.deep.equal([400, 'unsupported_grant_type', 70003]);
      expect(await code(oboParams(e, { client_id: '11111111-2222-3333-4444-555555555555' }))).to.deep.equal([400, 'unauthorized_client', 700016]);
      expect(await code(oboParams(e, { client_secret: undefined }))).to.deep.equal([401, 'invalid_client', 7000218]);
      expect(await code(oboParams(e, { scope: `${GRAPH_USER_READ} api://other/x` }))).to.deep.equal([400, 'invalid_scope', 700022]);
      expect(await code(oboParams(e, { scope: 'https://graph.microsoft.com/.default https://graph.microsoft.com/User.Read' }))).to.deep.equal([
        400,
        'invalid_scope',
        70011,
      ]);
      expect(await code(oboParams(e, { scope: 'https://graph.microsoft.com/No.Such' }))).to.deep.equal([400, 'invalid_scope', 70011]);
      expect(
        await code(
          oboParams(e, {
            assertion: e.mintRaw({ header: { alg: 'RS256', kid: e.keys.currentKid, typ: 'JWT' }, payload: claimsOf(e.mint()), sign: 'invalid' }),
          }),
        ),
      ).to.deep.equal([400, 'invalid_grant', 50013]);
      expect(await code(oboParams(e, { assertion: e.mint({ key: 'unpublished' }) }))).to.deep.equal([400, 'invalid_grant', 50013]);
      const now = Math.floor(Date.now() / 1000);
      expect(await code(oboParams(e, { assertion: e.mint({ iat: now - 7200, nbf: now - 7200, exp: now - 3600 }) }))).to.deep.equal([
        400,
        'invalid_grant',
        500133,
      ]);
      expect(await code(oboParams(e, { assertion: e.mint({ aud: e.otherApi.clientId }) }))).to.deep.equal([400, 'invalid_grant', 500131]);
      expect(await code(oboParams(e, { assertion: e.mintGraphTokenReplay() }))).to.deep.equal([400, 'invalid_grant', 500131]);
      expect(await code(oboParams(e, { assertion: e.mintIdToken('alice', { aud: e.api.clientId }) }))).to.deep.equal([400, 'invalid_grant', 240002]);
      expect(await code(oboParams(e, { assertion: e.mint({ appOnly: true }) }))).to.deep.equal([400, 'invalid_grant', 50013]);
      expect(await code(oboParams(e, { assertion: e.mint({ user: 'carol' }) }))).to.deep.equal([400, 'invalid_grant', 50013]);
      expect(await code(oboParams(e, { assertion: e.mint({ key: 'msa' }) }))).to.deep.equal([400, 'invalid_grant', 50013]);
      expect(await code(oboParams(e, { assertion: e.mint({ version: 1 }) }))).to.deep.equal([200, undefined, undefined]);
    });

    it('accepts HTTP Basic client authentication and rejects two methods at once', async () => {
      const basic = `Basic ${Buffer.from(`${e.api.clientId}:${encodeURIComponent(e.api.clientSecret)}`).toString('base64')}`;
      const ok = await tokenRequest(e, oboParams(e, { client_secret: undefined }), { headers: { authorization: basic } });
      expect(ok.status).to.equal(200);
      expect(ok.body).to.include.keys(
        'token_type',
        'scope',
        'expires_in',
        'ext_expires_in',
        'access_token',
        'refresh_token',
        'id_token',
        'client_info',
      );
      expect(JSON.parse(Buffer.from(String(ok.body.client_info), 'base64url').toString())).to.deep.equal({
        uid: e.users.alice.oid,
        utid: e.tenant.id,
      });
      expect(ok.body.scope).to.equal(`${GRAPH_USER_READ} openid profile email`);
      expect(claimsOf(String(ok.body.id_token)).aud).to.equal(e.api.clientId);
      const both = await tokenRequest(e, oboParams(e), { headers: { authorization: basic } });
      expect(both.status).to.equal(400);
    });
  });

  describe('Graph', () => {
    let token: string;
    beforeEach(async () => {
      token = (await obo(client(e), e.mint(), ['https://graph.microsoft.com/.default'])).accessToken;
    });

    it('GET /me with the OBO token, $select, request ids, /beta', async () => {
      const me = await graph(e, '/v1.0/me', token, { headers: { 'client-request-id': 'cr-1' } });
      expect(me.status).to.equal(200);
      expect(me.body).to.include({ id: e.users.alice.oid, displayName: e.users.alice.name, userPrincipalName: e.users.alice.upn });
      expect(me.headers.get('client-request-id')).to.equal('cr-1');
      expect(me.headers.get('request-id')).to.match(/^[-0-9a-f]{36}$/);
      expect(me.headers.get('content-type')).to.match(/^application\/json;odata\.metadata=minimal/);
      const selected = await graph(e, '/v1.0/me?$select=displayName,mail', token);
      expect(Object.keys(selected.body).filter((k) => !k.startsWith('@'))).to.deep.equal(['displayName', 'mail']);
      expect((await graph(e, '/v1.0/me?$select=nope', token)).status).to.equal(400);
      expect(String((await graph(e, '/beta/me', token)).body['@odata.context'])).to.contain('/beta/');
    });

    it('401 InvalidAuthenticationToken for missing, foreign and expired tokens; 403 without the scope', async () => {
      const missing = await graph(e, '/v1.0/me');
      expect(missing.status).to.equal(401);
      expect(errorOf(missing.body).code).to.equal('InvalidAuthenticationToken');
      expect(errorOf(missing.body).innerError).to.include.keys('date', 'request-id', 'client-request-id');
      expect((await graph(e, '/v1.0/me', e.mint())).status).to.equal(401);
      expect((await graph(e, '/v1.0/me', e.mintGraphToken({ lifetimeSeconds: -10 }))).status).to.equal(401);
      const other = await startEmulator();
      try {
        expect((await graph(other, '/v1.0/me', token)).status).to.equal(401);
      } finally {
        await other.close();
      }
      const noUserRead = await graph(e, '/v1.0/me', e.mintGraphToken({ scp: 'Mail.Read' }));
      expect(noUserRead.status).to.equal(403);
      expect(errorOf(noUserRead.body).code).to.equal('Authorization_RequestDenied');
    });

    it('users by id/upn (404 when unknown) and paged collections with absolute nextLinks', async () => {
      expect((await graph(e, `/v1.0/users/${e.users.bob.upn}`, token)).body.id).to.equal(e.users.bob.oid);
      const missing = await graph(e, '/v1.0/users/00000000-0000-0000-0000-000000000000', token);
      expect(missing.status).to.equal(404);
      expect(errorOf(missing.body).code).to.equal('Request_ResourceNotFound');
      expect((await graph(e, `/v1.0/users/${e.users.carol.oid}`, token)).status).to.equal(404);

      const collect = async (first: string): Promise<{ pages: number[]; ids: string[] }> => {
        const pages: number[] = [];
        const ids: string[] = [];
        let next: string | undefined = first;
        while (next) {
          const reply = await graph(e, next, token);
          expect(reply.status).to.equal(200);
          const value = reply.body.value as Json[];
          pages.push(value.length);
          ids.push(...value.map((v) => String(v.id)));
          next = reply.body['@odata.nextLink'] as string | undefined;
          if (next) expect(next.startsWith(`${e.graphBaseUrl}/v1.0/`)).to.equal(true);
        }
        return { pages, ids };
      };
      const messages = await collect('/v1.0/me/messages');
      expect(messages.pages).to.deep.equal([10, 10, 5]);
      expect(new Set(messages.ids).size).to.equal(25);
      expect((await collect('/v1.0/users?$top=5')).pages).to.deep.equal([5, 5, 2]);
      expect((await collect('/v1.0/me/memberOf?$top=3')).pages).to.deep.equal([3, 3, 2]);
      expect((await graph(e, '/v1.0/users?$skiptoken=forged', token)).status).to.equal(400);
      e.faults.injectGraph({ path: '/me/messages', nextLink: 'https://evil.example/v1.0/me/messages?$skiptoken=x' });
      expect((await graph(e, '/v1.0/me/messages', token)).body['@odata.nextLink']).to.equal('https://evil.example/v1.0/me/messages?$skiptoken=x');
    });

    it('streams a ~2 MiB photo', async () => {
      const response = await fetch(`${e.graphBaseUrl}/v1.0/me/photo/$value`, { headers: { authorization: `Bearer ${token}` } });
      expect(response.status).to.equal(200);
      expect(response.headers.get('content-type')).to.equal('image/jpeg');
      const bytes = Buffer.from(await response.arrayBuffer());
      expect(bytes.length).to.equal(2 * 1024 * 1024);
      expect([...bytes.subarray(0, 3)]).to.deep.equal([0xff, 0xd8, 0xff]);
    });

    it('$batch: per-item status, dependsOn 424, per-item 429, limits', async () => {
      e.faults.injectGraph({ path: '/me/messages', status: 429, retryAfter: 2.5 });
      const requests = [
        { id: '1', method: 'GET', url: '/me' },
        { id: '2', method: 'GET', url: '/me/messages?$top=1' },
        { id: '3', method: 'GET', url: '/me', dependsOn: ['2'] },
        { id: '4', method: 'GET', url: '/users/nobody@contoso.onmicrosoft.com' },
      ];
      const reply = await graph(e, '/v1.0/$batch', token, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ requests }),
      });
      expect(reply.status).to.equal(200);
      const responses = reply.body.responses as { id: string; status: number; headers: Record<string, string>; body: Json }[];
      const byId = Object.fromEntries(responses.map((r) => [r.id, r]));
      expect(byId['1']?.status).to.equal(200);
      expect(byId['2']?.status).to.equal(429);
      expect(byId['2']?.headers['Retry-After']).to.equal('2.5');
      expect(byId['3']?.status).to.equal(424);
      expect(byId['4']?.status).to.equal(404);
      expect(responses.map((r) => r.id)).not.to.deep.equal(['1', '2', '3', '4']);
      const post = (body: unknown): Promise<{ status: number }> =>
        graph(e, '/v1.0/$batch', token, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      expect((await post({ requests: Array.from({ length: 21 }, (_, i) => ({ id: String(i), method: 'GET', url: '/me' })) })).status).to.equal(400);
      expect(
        (
          await post({
            requests: [
              { id: '1', method: 'GET', url: '/me' },
              { id: '1', method: 'GET', url: '/me' },
            ],
          })
        ).status,
      ).to.equal(400);
      expect(e.counters.graph).to.equal(3);
    });

    it('injected 403/404/429/503/504 and slow responses', async () => {
      e.faults.injectGraph({ path: '/v1.0/me', status: 429, retryAfter: 1.25 });
      const throttled = await graph(e, '/v1.0/me', token);
      expect(throttled.status).to.equal(429);
      expect(throttled.headers.get('retry-after')).to.equal('1.25');
      expect(errorOf(throttled.body).code).to.equal('TooManyRequests');
      for (const status of [403, 404, 503, 504]) {
        e.faults.injectGraph({ status });
        expect((await graph(e, '/v1.0/me', token)).status).to.equal(status);
      }
      e.faults.injectGraph({ delayMs: 250 });
      const started = Date.now();
      expect((await graph(e, '/v1.0/me', token)).status).to.equal(200);
      expect(Date.now() - started).to.be.at.least(240);
    });

    it('CAE: challenges cp1 tokens only, and the claims loop through msal ends in 200', async () => {
      const challenge = '{"access_token":{"nbf":{"essential":true,"value":"1700000000"}}}';
      e.faults.injectGraph({ path: '/me', caeClaims: challenge });
      expect((await graph(e, '/v1.0/me', token)).status).to.equal(200); // not a CAE-capable client: not challenged
      const cca = client(e, { clientSecret: e.api.clientSecret, clientCapabilities: ['cp1'] });
      const assertion = e.mint({ xms_cc: ['cp1'] });
      const first = await obo(cca, assertion);
      const denied = await graph(e, '/v1.0/me', first.accessToken);
      expect(denied.status).to.equal(401);
      const params = challengeParams(denied.headers.get('www-authenticate'));
      expect(params).to.include({
        error: 'insufficient_claims',
        realm: '',
        authorization_uri: 'https://login.microsoftonline.com/common/oauth2/authorize',
      });
      const claims = Buffer.from(params.claims ?? '', 'base64').toString('utf8');
      expect(JSON.parse(claims)).to.deep.equal(JSON.parse(challenge));
      const second = await obo(cca, assertion, [GRAPH_USER_READ], claims);
      expect(second.fromCache).to.equal(false);
      expect((await graph(e, '/v1.0/me', second.accessToken)).status).to.equal(200);
    });
  });

  describe('control surface', () => {
    it('drives minting, faults, users and counters over HTTP', async () => {
      const post = async (path: string, body: unknown): Promise<Json> => {
        const response = await fetch(`${e.authorityHost}/_emulator${path}`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(body),
        });
        expect(response.status, path).to.equal(200);
        return (await response.json()) as Json;
      };
      const { token } = await post('/mint', { user: 'bob', version: 1 });
      expect(claimsOf(String(token))).to.include({ oid: e.users.bob.oid, ver: '1.0' });
      await post('/faults/token', { status: 503, retryAfter: 3 });
      expect((await tokenRequest(e, oboParams(e))).status).to.equal(503);
      await post('/users/alice', { consented: false });
      expect((await tokenRequest(e, oboParams(e))).body.suberror).to.equal('consent_required');
      await post('/reset', {});
      expect((await tokenRequest(e, oboParams(e))).status).to.equal(200);
      const { kid } = await post('/keys/rotate', {});
      expect(e.keys.currentKid).to.equal(kid);
      const counters = (await (await fetch(`${e.authorityHost}/_emulator/counters`)).json()) as Json;
      expect(counters.token).to.equal(1);
      const bad = await fetch(`${e.authorityHost}/_emulator/users/mallory`, { method: 'POST', body: '{}' });
      expect(bad.status).to.equal(400);
    });

    it('keeps secrets, assertions and tokens out of the request log', async () => {
      await obo(client(e), e.mint());
      const certPem = await readFile(e.api.certificatePemPath, 'utf8');
      const privateKey = /-----BEGIN PRIVATE KEY-----[\s\S]+?-----END PRIVATE KEY-----/.exec(certPem)?.[0] ?? '';
      const viaCert = await obo(client(e, { clientCertificate: { thumbprintSha256: e.api.certificateThumbprintSha256, privateKey } }), e.mint());
      await graph(e, '/v1.0/me', viaCert.accessToken);
      const log = JSON.stringify(e.requests());
      expect(log).not.to.contain(e.api.clientSecret);
      expect(log).not.to.contain('eyJ');
      expect(log).not.to.contain(viaCert.accessToken.slice(20, 60));
    });
  });

  describe('options', () => {
    it("issuerStyle 'origin' puts the emulator origin in metadata and tokens; msal and jose accept it", async () => {
      const o = await startEmulator({ issuerStyle: 'origin', accessTokenLifetimeSeconds: 900 });
      try {
        const issuer = `${o.authorityHost}/${o.tenant.id}/v2.0`;
        const meta = (await (await fetch(`${issuer}/.well-known/openid-configuration`)).json()) as Json;
        expect(meta.issuer).to.equal(issuer);
        const verified = await jwtVerify(o.mint(), createRemoteJWKSet(new URL(String(meta.jwks_uri))), { issuer, audience: o.api.clientId });
        expect(verified.payload.iss).to.equal(issuer);
        const result = await obo(client(o), o.mint());
        expect(result.expiresOn && Math.round((result.expiresOn.getTime() - Date.now()) / 1000)).to.be.within(890, 900);
      } finally {
        await o.close();
      }
    });

    it('syntheticUsers: any GUID oid of the home tenant exchanges through msal and is /me on Graph; other oids are still refused', async () => {
      const o = await startEmulator({ syntheticUsers: true });
      try {
        const oids = ['5e000000-0000-4000-8000-000000000001', '5e000000-0000-4000-8000-000000000002'];
        for (const oid of oids) {
          const result = await obo(client(o), o.mint({ extraClaims: { oid } }), ['https://graph.microsoft.com/.default']);
          expect(claimsOf(result.accessToken).oid).to.equal(oid);
          const me = await graph(o, '/v1.0/me', result.accessToken);
          expect(me.status).to.equal(200);
          expect(me.body).to.include({ id: oid });
        }
        const refusal = async (emulator: Emulator, assertion: string, tenant?: string): Promise<unknown[]> => {
          const reply = await tokenRequest(emulator, oboParams(emulator, { assertion }), tenant ? { tenant } : {});
          return [reply.status, reply.body.error_codes];
        };
        expect(await refusal(o, o.mint({ extraClaims: { oid: 'not-a-guid' } }))).to.deep.equal([400, [50034]]);
        expect(await refusal(o, o.mint({ user: 'carol', extraClaims: { oid: oids[0] } }), o.otherTenant.id)).to.deep.equal([400, [50034]]);
        // Without the option an unknown oid is no user at all.
        expect(await refusal(e, e.mint({ extraClaims: { oid: oids[0] } }))).to.deep.equal([400, [50034]]);
      } finally {
        await o.close();
      }
    });
  });
});
