// Token minting: user access tokens for the API (v1/v2, with every override bad-input tests
// need), raw tokens, id_tokens, and the Graph tokens the /token endpoint issues.
import { createHash, randomBytes, randomInt, randomUUID, type KeyObject } from 'node:crypto';
import { assemble, isJsonObject, signFor, type JsonObject } from './jwt.js';
import type { SigningKey } from './keys.js';
import { GRAPH_RESOURCE, type DirectoryUser } from './seed.js';
import type { EmulatorState, GraphTokenRecord } from './state.js';
import type { GraphTokenOptions, IdTokenOptions, MintOptions, RawTokenParts, UserName } from './types.js';

export const nowSeconds = (): number => Math.floor(Date.now() / 1000);

/** Entra's `uti`/`aio`-style opaque ids. */
const opaqueId = (bytes: number): string => randomBytes(bytes).toString('base64url');

export interface IssueGraphTokenInput {
  user: DirectoryUser;
  clientId: string;
  scopes: string[];
  lifetimeSeconds: number;
  claims: unknown;
  /** '1' = secret, '2' = certificate/assertion, '0' = public client. */
  appidacr: '0' | '1' | '2';
  mfa: boolean;
}

export class TokenFactory {
  constructor(private readonly state: EmulatorState) {}

  mint(options: MintOptions = {}): string {
    const user = this.user(options.user ?? 'alice');
    const version = options.version ?? 2;
    const key = this.state.keys.resolve(options.key);
    const { api, spa, otherApi } = this.state.directory;
    // iss follows the user's tenant even when `tid` is overridden (so a lone `tid` makes an iss/tid mismatch).
    const home = user.tenantId;
    const payload: JsonObject = {};
    payload.aud = 'aud' in options ? options.aud : version === 2 ? api.clientId : api.appIdUris[0];
    payload.iss = 'iss' in options ? options.iss : version === 2 ? this.state.v2Issuer(home) : this.state.v1Issuer(home);
    this.setTimes(payload, options);
    payload.aio = opaqueId(48);
    if (options.appOnly) {
      // A daemon's token: the service principal is both oid and sub, permissions are roles.
      const spId = '5d6e7f80-91a2-4b3c-8d4e-5f60718293a4';
      if (version === 2) Object.assign(payload, { azp: otherApi.clientId, azpacr: '1' });
      else Object.assign(payload, { appid: otherApi.clientId, appidacr: '1' });
      Object.assign(payload, { idtyp: 'app', oid: spId, rh: opaqueId(24), roles: ['Data.Read.All'], sub: spId });
    } else {
      if (version === 2) {
        Object.assign(payload, { azp: spa.clientId, azpacr: '0', name: user.displayName, oid: user.id, preferred_username: user.userPrincipalName });
      } else {
        Object.assign(payload, {
          acr: '1',
          amr: ['pwd'],
          appid: spa.clientId,
          appidacr: '0',
          family_name: user.surname,
          given_name: user.givenName,
          ipaddr: '127.0.0.1',
          name: user.displayName,
          oid: user.id,
        });
      }
      payload.rh = opaqueId(24);
      payload.scp = 'access_as_user';
      payload.sub = pairwiseSub(user.id, version === 2 ? api.clientId : String(api.appIdUris[0]));
    }
    payload.tid = 'tid' in options ? options.tid : home;
    if (version === 1 && !options.appOnly) Object.assign(payload, { unique_name: user.userPrincipalName, upn: user.userPrincipalName });
    payload.uti = opaqueId(16);
    payload.ver = version === 2 ? '2.0' : '1.0';
    if (options.scp === null) delete payload.scp;
    else if (options.scp !== undefined) payload.scp = options.scp;
    if (options.roles !== undefined) payload.roles = options.roles;
    if (options.idtyp !== undefined) payload.idtyp = options.idtyp;
    if (options.xms_cc !== undefined) payload.xms_cc = options.xms_cc;
    for (const [name, value] of Object.entries(options.extraClaims ?? {})) {
      if (value === undefined) delete payload[name];
      else payload[name] = value;
    }
    const header: JsonObject = version === 2 ? { typ: 'JWT', alg: 'RS256', kid: key.kid } : { typ: 'JWT', alg: 'RS256', x5t: key.kid, kid: key.kid };
    return this.signed(mergeHeader(header, options.header), payload, key);
  }

  mintRaw(parts: RawTokenParts): string {
    const key = this.state.keys.resolve(parts.key);
    const signer = this.state.keys.signerKeys(key);
    return assemble(parts.header, parts.payload, (input) => {
      if (parts.signature !== undefined) return parts.signature;
      switch (parts.sign ?? 'rs256') {
        case 'none':
          return '';
        case 'hs256-with-public-key':
          return signFor('HS256', input, signer);
        case 'invalid': {
          const good = Buffer.from(signFor('RS256', input, signer), 'base64url');
          good[good.length - 1] = (good[good.length - 1] ?? 0) ^ 0xff;
          return good.toString('base64url');
        }
        case 'alg':
          return signFor(headerAlg(parts.header), input, signer);
        default:
          return signFor('RS256', input, signer);
      }
    });
  }

  /** An id_token as the user's sign-in to `aud` (default: the SPA) would produce. */
  mintIdToken(userName: UserName = 'alice', options: IdTokenOptions = {}): string {
    const user = this.user(userName);
    const aud = options.aud ?? this.state.directory.spa.clientId;
    return this.idToken(user, aud, options.version ?? 2, options.nonce ?? opaqueId(16));
  }

  idToken(user: DirectoryUser, aud: string, version: 1 | 2 = 2, nonce?: string): string {
    const key = this.state.keys.current;
    const iat = nowSeconds();
    const payload: JsonObject = {
      aud,
      iss: version === 2 ? this.state.v2Issuer(user.tenantId) : this.state.v1Issuer(user.tenantId),
      iat,
      nbf: iat,
      exp: iat + 3600,
      aio: opaqueId(48),
      name: user.displayName,
      ...(nonce ? { nonce } : {}),
      oid: user.id,
      preferred_username: user.userPrincipalName,
      rh: opaqueId(24),
      sub: pairwiseSub(user.id, aud),
      tid: user.tenantId,
      uti: opaqueId(16),
      ver: version === 2 ? '2.0' : '1.0',
    };
    if (version === 1) Object.assign(payload, { upn: user.userPrincipalName, unique_name: user.userPrincipalName });
    return this.signed({ typ: 'JWT', alg: 'RS256', kid: key.kid }, payload, key);
  }

  /** A Graph token (nonce header, Graph audience) signed with a published key: only `aud` gives it away. */
  mintGraphTokenReplay(userName: UserName = 'alice'): string {
    return this.graphToken(
      {
        user: this.user(userName),
        clientId: this.state.directory.api.clientId,
        scopes: ['User.Read', 'openid', 'profile', 'email'],
        lifetimeSeconds: 3599,
        claims: undefined,
        appidacr: '1',
        mfa: false,
      },
      this.state.keys.current,
    );
  }

  mintGraphToken(options: GraphTokenOptions = {}): string {
    const scopes = (options.scp ?? 'User.Read').split(' ').filter(Boolean);
    const claims = options.xms_cc ? { access_token: { xms_cc: { values: options.xms_cc } } } : undefined;
    return this.issueGraphToken({
      user: this.user(options.user ?? 'alice'),
      clientId: this.state.directory.api.clientId,
      scopes: [...scopes, 'openid', 'profile', 'email'],
      lifetimeSeconds: options.lifetimeSeconds ?? 3599,
      claims,
      appidacr: '1',
      mfa: false,
    });
  }

  /** What /token returns for Graph: a v1 token with a `nonce` header, signed by the internal key. */
  issueGraphToken(input: IssueGraphTokenInput): string {
    return this.graphToken(input, this.state.keys.graphKey);
  }

  private graphToken(input: IssueGraphTokenInput, key: SigningKey): string {
    const { user } = input;
    const iat = nowSeconds();
    const uti = opaqueId(16);
    const cp1 = hasCp1(input.claims);
    const payload: JsonObject = {
      aud: GRAPH_RESOURCE,
      iss: this.state.v1Issuer(user.tenantId),
      iat,
      nbf: iat,
      exp: iat + input.lifetimeSeconds,
      acct: 0,
      acr: '1',
      aio: opaqueId(48),
      amr: input.mfa ? ['pwd', 'mfa'] : ['pwd'],
      app_displayname: this.state.directory.api.displayName,
      appid: input.clientId,
      appidacr: input.appidacr,
      family_name: user.surname,
      given_name: user.givenName,
      idtyp: 'user',
      ipaddr: '127.0.0.1',
      name: user.displayName,
      oid: user.id,
      platf: '3',
      puid: createHash('sha256').update(user.id).digest('hex').slice(0, 16).toUpperCase(),
      rh: opaqueId(24),
      scp: input.scopes.join(' '),
      sub: pairwiseSub(user.id, GRAPH_RESOURCE),
      tenant_region_scope: 'NA',
      tid: user.tenantId,
      unique_name: user.userPrincipalName,
      upn: user.userPrincipalName,
      uti,
      ver: '1.0',
      ...(cp1 ? { xms_cc: ['CP1'], xms_ssm: '1' } : {}),
      xms_st: { sub: pairwiseSub(user.id, 'xms_st') },
      xms_tcdt: 1678786013,
    };
    const record: GraphTokenRecord = {
      uti,
      kid: key.kid,
      oid: user.id,
      tid: user.tenantId,
      scopes: input.scopes,
      exp: iat + input.lifetimeSeconds,
      claims: input.claims,
      cp1,
    };
    this.state.graphTokens.set(uti, record);
    const header = { typ: 'JWT', nonce: opaqueId(32), alg: 'RS256', x5t: key.kid, kid: key.kid };
    return this.signed(header, payload, key);
  }

  private signed(header: JsonObject, payload: JsonObject, key: SigningKey): string {
    const signer = this.state.keys.signerKeys(key);
    return assemble(header, jsonWithInfinity(payload), (input) => signFor(header.alg, input, signer));
  }

  private setTimes(payload: JsonObject, options: MintOptions): void {
    const now = nowSeconds();
    const iat = options.iat === undefined ? now : options.iat;
    const base = typeof iat === 'number' && Number.isFinite(iat) ? iat : now;
    const nbf = options.nbf === undefined ? base : options.nbf;
    const exp = options.exp === undefined ? base + (options.lifetimeSeconds ?? randomInt(3600, 5401)) : options.exp;
    if (iat !== null) payload.iat = iat;
    if (nbf !== null) payload.nbf = nbf;
    if (exp !== null) payload.exp = exp;
  }

  private user(name: UserName): DirectoryUser {
    const user = this.state.directory.named[name];
    if (!user) throw new Error(`emulator: unknown user '${String(name)}'`);
    return user;
  }
}

/** Entra's `sub` is pairwise: stable per (user, application). */
function pairwiseSub(oid: string, app: string): string {
  return createHash('sha256').update(`${oid}|${app}`).digest('base64url');
}

function hasCp1(claims: unknown): boolean {
  if (!isJsonObject(claims) || !isJsonObject(claims.access_token)) return false;
  const xmsCc = claims.access_token.xms_cc;
  return isJsonObject(xmsCc) && Array.isArray(xmsCc.values) && xmsCc.values.some((v) => String(v).toLowerCase() === 'cp1');
}

/** JSON text in which ±Infinity claims (e.g. `exp: 1e309`) survive as the literals 1e309 / -1e309. */
function jsonWithInfinity(payload: JsonObject): string {
  const marker = `__inf_${randomBytes(6).toString('hex')}__`;
  const text = JSON.stringify(payload, (_key, value: unknown) =>
    value === Number.POSITIVE_INFINITY ? `${marker}+` : value === Number.NEGATIVE_INFINITY ? `${marker}-` : value,
  );
  return text.replaceAll(`"${marker}+"`, '1e309').replaceAll(`"${marker}-"`, '-1e309');
}

function mergeHeader(base: JsonObject, overrides: Record<string, unknown> | undefined): JsonObject {
  const header = { ...base };
  for (const [name, value] of Object.entries(overrides ?? {})) {
    if (value === null || value === undefined) delete header[name];
    else header[name] = value;
  }
  return header;
}

function headerAlg(header: object | string): unknown {
  if (typeof header !== 'string') return isJsonObject(header) ? header.alg : undefined;
  try {
    const parsed: unknown = JSON.parse(header);
    return isJsonObject(parsed) ? parsed.alg : undefined;
  } catch {
    return undefined;
  }
}

/** A certificate-signed client assertion (RFC 7523) as msal-node 7 builds it: PS256 + x5t#S256. */
export function clientAssertion(input: {
  clientId: string;
  audience: string;
  privateKey: KeyObject;
  certificateSha256Hex: string;
  lifetimeSeconds: number;
}): string {
  const now = nowSeconds();
  const header = { alg: 'PS256', typ: 'JWT', 'x5t#S256': Buffer.from(input.certificateSha256Hex, 'hex').toString('base64url') };
  const payload = {
    aud: input.audience,
    iss: input.clientId,
    sub: input.clientId,
    jti: randomUUID(),
    nbf: now,
    iat: now,
    exp: now + input.lifetimeSeconds,
  };
  const keys = {
    rsa: input.privateKey,
    rsaPublicPem: '',
    ec: (): KeyObject => {
      throw new Error('not used');
    },
    ed25519: (): KeyObject => {
      throw new Error('not used');
    },
  };
  return assemble(header, payload, (signingInput) => signFor('PS256', signingInput, keys));
}
