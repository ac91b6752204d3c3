import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { once } from 'node:events';
import { createPublicKey } from 'node:crypto';
import { expect } from 'chai';
import type { MintOptions } from '../emulator/index.js';
import { itChecking } from '../support/checked-it.js';
import { useEmulator, useService } from '../support/fixtures.js';
import { at } from '../support/json.js';
import { rawRequest, rawSocketStatus } from '../support/raw-http.js';
import { bearer } from '../support/tokens.js';
import { parseChallenge } from '../support/www-authenticate.js';

/**
 * docs/bad-input-checklist.md, items 1-49 (test titles start with the item's number): every
 * malformed, forged, expired, misdirected or under-scoped token gets its precise RFC 6750
 * answer, never a 5xx, and never reaches the token endpoint (rule R5: the emulator's counter
 * stays unchanged, checked at the end of every test).
 */
describe('bad inputs: transport, structure, algorithms, keys and claims (checklist 1-49)', () => {
  const emulator = useEmulator();
  const api = useService(emulator);
  before(async () => {
    // Warm the metadata and the key set, so "no JWKS request" below means "none caused by this token".
    await api.request.get('/api/me').set(bearer(emulator.mint())).expect(200);
  });
  beforeEach(() => emulator.resetCounters());
  /** Every test of this file ends by checking that no token was exchanged. */
  const itNoExchange = itChecking(() => expect(emulator.counters.token, 'token endpoint calls').to.equal(0));

  const claimsOf = (token: string): Record<string, unknown> =>
    JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8')) as Record<string, unknown>;
  const b64 = (text: string) => Buffer.from(text, 'utf8').toString('base64url');
  const goodHeader = () => ({ typ: 'JWT', alg: 'RS256', kid: emulator.keys.currentKid });

  async function call(authorization: string | undefined, path = '/api/me') {
    const req = api.request.get(path);
    return authorization === undefined ? req : req.set('authorization', authorization);
  }

  async function expectChallenge(authorization: string | undefined, status: number, error?: string, path?: string) {
    const response = await call(authorization, path);
    expect(response.status, response.text).to.equal(status);
    const challenge = parseChallenge(response.headers['www-authenticate']);
    expect(challenge.scheme).to.equal('Bearer');
    if (error === undefined) {
      expect(challenge.params).to.have.property('realm');
      expect(challenge.params).not.to.have.property('error');
    } else {
      expect(challenge.params['error']).to.equal(error);
      if (error !== 'insufficient_scope') expect(challenge.params['error_description']).to.be.a('string').and.not.include('"');
    }
    expect(at(response.body, 'error')).to.be.a('string');
    return { response, challenge };
  }

  /** A good token is accepted: it is exchanged once, which is not what the item is about. */
  async function expectAccepted(authorization: string): Promise<void> {
    const response = await call(authorization);
    expect(response.status, response.text).to.equal(200);
    emulator.resetCounters();
  }
  const invalidToken = (token: string) => expectChallenge(`Bearer ${token}`, 401, 'invalid_token');
  const noJwks = () => expect(emulator.counters.jwks, 'JWKS requests').to.equal(0);
  const itNoJwks = itNoExchange.and(noJwks);

  describe('transport and extraction', () => {
    itNoExchange('#1 no Authorization header: 401, bare challenge', () => expectChallenge(undefined, 401));

    itNoExchange('#2 other schemes (Basic, DPoP, Token): 401, bare challenge', async () => {
      for (const scheme of ['Basic dXNlcjpwYXNz', `DPoP ${emulator.mint()}`, `Token ${emulator.mint()}`]) {
        await expectChallenge(scheme, 401);
      }
    });

    itNoExchange('#3 "Bearer" with no token: 401, bare challenge', () => expectChallenge('Bearer', 401));

    itNoExchange('#4 the scheme is case-insensitive', async () => {
      await expectAccepted(`bearer ${emulator.mint()}`);
      await expectAccepted(`BEARER ${emulator.mint()}`);
    });

    itNoExchange('#5 several spaces are fine; a tab is not', async () => {
      await expectAccepted(`Bearer   ${emulator.mint()}`);
      await expectChallenge(`Bearer\t${emulator.mint()}`, 401, 'invalid_token');
    });

    itNoExchange('#6 characters outside b64token', async () => {
      const token = emulator.mint();
      await invalidToken(`${token.slice(0, 20)} ${token.slice(20)}`);
      await invalidToken(`${token.slice(0, 20)}"${token.slice(20)}`);
      await invalidToken(`${token.slice(0, 20)}\u00e9${token.slice(20)}`);
    });

    itNoExchange('#7 two Authorization headers: 400 invalid_request', async () => {
      const token = emulator.mint();
      const response = await rawRequest(api.baseUrl, '/api/me', { authorization: [`Bearer ${token}`, `Bearer ${token}`] });
      expect(response.status).to.equal(400);
      expect(parseChallenge(String(response.headers['www-authenticate'])).params['error']).to.equal('invalid_request');
    });

    itNoExchange('#8 a token in the query only: 401, bare challenge, and the token is not logged', async () => {
      const token = emulator.mint();
      await expectChallenge(undefined, 401, undefined, `/api/me?access_token=${token}`);
      expect(api.logs.join('\n')).not.to.include(token.split('.')[2]);
    });

    itNoExchange('#9 a token in the query and in the header: 400 invalid_request', async () => {
      const token = emulator.mint();
      await expectChallenge(`Bearer ${token}`, 400, 'invalid_request', `/api/me?access_token=${token}`);
    });

    itNoExchange('#9 a token in a form body and in the header: 400 invalid_request', async () => {
      const token = emulator.mint();
      const response = await api.request.post('/api/me').set('authorization', `Bearer ${token}`).type('form').send({ access_token: token });
      expect(response.status).to.equal(400);
      expect(parseChallenge(response.headers['www-authenticate']).params['error']).to.equal('invalid_request');
    });

    itNoExchange('#10 a token over 8 KiB: 401 before any decoding, no JWKS request', async () => {
      const padded = emulator.mint({ extraClaims: { padding: 'x'.repeat(9000) } });
      await invalidToken(padded);
      noJwks();
    });

    itNoExchange('#11 a header block over 16 KiB: 431 from Node', async () => {
      const status = await rawSocketStatus(api.baseUrl, `GET /api/me HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(17 * 1024)}\r\n\r\n`);
      expect(status).to.equal(431);
    });

    itNoExchange('#12 NUL or obs-fold in a header: 400 from Node', async () => {
      expect(await rawSocketStatus(api.baseUrl, 'GET /api/me HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n')).to.equal(400);
      expect(await rawSocketStatus(api.baseUrl, 'GET /api/me HTTP/1.1\r\nHost: x\r\nX-A: a\r\n  folded\r\n\r\n')).to.equal(400);
    });
  });

  describe('structure (no JWKS request)', () => {
    itNoJwks('#13 not three segments', async () => {
      const [h, p, s] = emulator.mint().split('.') as [string, string, string];
      for (const bad of [`${h}.${p}`, `${h}.${p}.${s}.${s}`, `${h}..${s}`, `${h}.${p}.`]) await invalidToken(bad);
    });

    itNoJwks('#14 JWE (five segments)', () => invalidToken('eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ.a.b.c.d'));

    itNoJwks('#15 header not base64url JSON, or not an object', async () => {
      const [, p, s] = emulator.mint().split('.') as [string, string, string];
      for (const header of ['not json', '[1,2]', '"text"', 'null']) await invalidToken(`${b64(header)}.${p}.${s}`);
      await invalidToken(`!!!.${p}.${s}`);
    });

    itNoJwks('#16 payload not JSON, a JSON array, or a nested JWT', async () => {
      await invalidToken(emulator.mintRaw({ header: goodHeader(), payload: 'not json' }));
      await invalidToken(emulator.mintRaw({ header: goodHeader(), payload: '[1,2,3]' }));
      await invalidToken(emulator.mintRaw({ header: { ...goodHeader(), cty: 'JWT' }, payload: emulator.mint() }));
    });

    itNoJwks('#17 duplicate member names in the header or the payload', async () => {
      const claims = JSON.stringify(claimsOf(emulator.mint()));
      const dupPayload = `${claims.slice(0, -1)},"aud":"${emulator.api.clientId}"}`;
      const header = JSON.stringify(goodHeader());
      await invalidToken(emulator.mintRaw({ header, payload: dupPayload }));
      await invalidToken(emulator.mintRaw({ header: `${header.slice(0, -1)},"alg":"RS256"}`, payload: claims }));
      const nested = `${claims.slice(0, -1)},"x":{"a":1,"a":2}}`;
      await invalidToken(emulator.mintRaw({ header, payload: nested }));
    });
  });

  describe('algorithm and key', () => {
    itNoExchange('#18 alg none, with or without a signature: no JWKS request', async () => {
      const payload = claimsOf(emulator.mint());
      await invalidToken(emulator.mintRaw({ header: { typ: 'JWT', alg: 'none' }, payload, sign: 'none' }));
      await invalidToken(emulator.mintRaw({ header: { typ: 'JWT', alg: 'none', kid: emulator.keys.currentKid }, payload, sign: 'invalid' }));
      noJwks();
    });

    itNoExchange('#19 HS256 signed with the RSA public key: no JWKS request', async () => {
      const payload = claimsOf(emulator.mint());
      await invalidToken(emulator.mintRaw({ header: { ...goodHeader(), alg: 'HS256' }, payload, sign: 'hs256-with-public-key' }));
      noJwks();
    });

    itNoExchange('#20 RS384, PS256, ES256, EdDSA', async () => {
      const payload = claimsOf(emulator.mint());
      for (const alg of ['RS384', 'PS256', 'ES256', 'EdDSA']) {
        await invalidToken(emulator.mintRaw({ header: { ...goodHeader(), alg }, payload, sign: 'invalid' }));
      }
    });

    itNoExchange('#21 alg missing', () => invalidToken(emulator.mint({ header: { alg: null } })));

    itNoExchange('#22 kid missing (even though the JWKS would have one matching key)', () => invalidToken(emulator.mint({ header: { kid: null } })));

    itNoExchange('#23 unknown kid (an unpublished key)', () => invalidToken(emulator.mint({ key: 'unpublished' })));

    itNoExchange('#26 jku, x5u, jwk and x5c headers are never fetched or trusted', async () => {
      let attackerHits = 0;
      const attacker: Server = createServer((_req, res) => {
        attackerHits++;
        res.end('{}');
      });
      attacker.listen(0, '127.0.0.1');
      await once(attacker, 'listening');
      const url = `http://127.0.0.1:${(attacker.address() as AddressInfo).port}/keys`;
      const attackerJwk = createPublicKey(emulator.keys.publicKeyPem('unpublished')).export({ format: 'jwk' });
      const evilHeaders = { jku: url, x5u: url, jwk: { ...attackerJwk, kid: emulator.keys.unpublishedKid }, x5c: ['MIIBogus'] };
      try {
        await invalidToken(emulator.mint({ key: 'unpublished', header: evilHeaders }));
        // The same headers on a token genuinely signed by a published key change nothing.
        await expectAccepted(`Bearer ${emulator.mint({ header: evilHeaders })}`);
        expect(attackerHits).to.equal(0);
      } finally {
        attacker.close();
      }
    });

    itNoExchange('#27 crit', () => invalidToken(emulator.mint({ header: { crit: ['foo'], foo: 1 } })));

    itNoExchange('#28 b64:false with crit b64', () => invalidToken(emulator.mint({ header: { b64: false, crit: ['b64'] } })));

    itNoExchange('#29 a valid header with a tampered payload or signature', async () => {
      const [h, p, s] = emulator.mint().split('.') as [string, string, string];
      const forged = b64(JSON.stringify({ ...claimsOf(emulator.mint()), scp: 'access_as_user Directory.ReadWrite.All' }));
      await invalidToken(`${h}.${forged}.${s}`);
      await invalidToken(`${h}.${p}.${s.slice(0, -4)}AAAA`);
      // Changing only the spare bits of the last character leaves the decoded bytes unchanged.
      const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
      const spareBitSet = alphabet[alphabet.indexOf(s.at(-1) ?? 'A') | 1] ?? 'B';
      await invalidToken(`${h}.${p}.${s.slice(0, -1)}${spareBitSet}`);
    });
  });

  describe('claims', () => {
    const now = () => Math.floor(Date.now() / 1000);
    const timed = (exp: unknown, iat: unknown = now() - 60, nbf: unknown = now() - 60): MintOptions => ({ exp, iat, nbf });

    itNoExchange('#31 expired beyond the skew', () => invalidToken(emulator.mint(timed(now() - 301, now() - 3600, now() - 3600))));

    itNoExchange('#32 expired within the skew is still accepted', () =>
      expectAccepted(`Bearer ${emulator.mint(timed(now() - 120, now() - 3600, now() - 3600))}`),
    );

    itNoExchange('#33 nbf in the future', () => invalidToken(emulator.mint(timed(now() + 3600, now(), now() + 600))));

    itNoExchange('#34 iat in the future', () => invalidToken(emulator.mint(timed(now() + 3600, now() + 600, now()))));

    itNoExchange('#35 missing exp, iat, nbf, tid or oid', async () => {
      for (const claim of ['exp', 'iat', 'nbf', 'tid', 'oid']) await invalidToken(emulator.mint({ extraClaims: { [claim]: undefined } }));
    });

    itNoExchange('#36 exp a string, null or boolean', async () => {
      for (const exp of [String(now() + 3600), null, true]) await invalidToken(emulator.mint({ extraClaims: { exp } }));
    });

    itNoExchange('#37 exp infinite, or a lifetime over 28 h', async () => {
      await invalidToken(
        emulator.mintRaw({ header: goodHeader(), payload: JSON.stringify(claimsOf(emulator.mint())).replace(/"exp":\d+/, '"exp":1e309') }),
      );
      await invalidToken(emulator.mint(timed(9999999999999)));
      await invalidToken(emulator.mint(timed(now() + 29 * 3600, now() - 60)));
    });

    itNoExchange('#38 wrong iss: another tenant, the v1 form on a v2 token, a literal {tenantid}', async () => {
      await invalidToken(emulator.mint({ iss: `https://login.microsoftonline.com/${emulator.otherTenant.id}/v2.0` }));
      await invalidToken(emulator.mint({ iss: `https://sts.windows.net/${emulator.tenant.id}/` }));
      await invalidToken(emulator.mint({ iss: 'https://login.microsoftonline.com/{tenantid}/v2.0' }));
    });

    itNoExchange('#39 tid differing from the issuer, tid not a GUID, or a key bound to another issuer', async () => {
      await invalidToken(emulator.mint({ tid: emulator.otherTenant.id }));
      await invalidToken(emulator.mint({ tid: 'contoso' }));
      await invalidToken(emulator.mint({ key: 'msa' }));
    });

    itNoExchange('#40 the MSA tenant', async () => {
      const msa = '9188040d-6c67-4c5b-b112-36a304b66dad';
      await invalidToken(emulator.mint({ tid: msa, iss: `https://login.microsoftonline.com/${msa}/v2.0`, key: 'msa' }));
    });

    itNoExchange('#41 audience of Graph or another API', async () => {
      await invalidToken(emulator.mint({ aud: 'https://graph.microsoft.com' }));
      await invalidToken(emulator.mint({ aud: '00000003-0000-0000-c000-000000000000' }));
      await invalidToken(emulator.mint({ aud: emulator.otherApi.clientId }));
    });

    itNoExchange('#42 an App ID URI not in the allow-list (another app, ours with a trailing slash)', async () => {
      await invalidToken(emulator.mint({ aud: emulator.otherApi.appIdUri }));
      await invalidToken(emulator.mint({ aud: `${emulator.api.appIdUri}/` }));
    });

    itNoExchange('#43 aud as an array, even one holding our audience', () => invalidToken(emulator.mint({ aud: [emulator.api.clientId] })));

    itNoExchange('#44 ver outside 1.0 / 2.0', async () => {
      await invalidToken(emulator.mint({ extraClaims: { ver: '3.0' } }));
      await invalidToken(emulator.mint({ extraClaims: { ver: undefined } }));
    });

    itNoExchange('#45 no scp: 403 insufficient_scope', async () => {
      const { challenge } = await expectChallenge(`Bearer ${emulator.mint({ scp: null })}`, 403, 'insufficient_scope');
      expect(challenge.params['scope']).to.equal('access_as_user');
    });

    itNoExchange('#46 scp without the required scope: 403 insufficient_scope', async () => {
      const { challenge } = await expectChallenge(`Bearer ${emulator.mint({ scp: 'User.Read' })}`, 403, 'insufficient_scope');
      expect(challenge.params['scope']).to.equal('access_as_user');
    });

    itNoExchange('#47 app-only tokens: 403 insufficient_scope, no exchange', async () => {
      await expectChallenge(`Bearer ${emulator.mint({ appOnly: true })}`, 403, 'insufficient_scope');
      // Even one that also carries a scope is not a user.
      await expectChallenge(`Bearer ${emulator.mint({ idtyp: 'app' })}`, 403, 'insufficient_scope');
    });

    itNoExchange('#48 an id_token as a bearer token', async () => {
      await invalidToken(emulator.mintIdToken('alice'));
      await expectChallenge(`Bearer ${emulator.mintIdToken('alice', { aud: emulator.api.clientId })}`, 403, 'insufficient_scope');
    });

    itNoExchange('#49 a Graph token replayed to us', () => invalidToken(emulator.mintGraphTokenReplay('alice')));
  });
});
