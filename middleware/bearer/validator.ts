import { hash } from 'node:crypto';
import type { Registry } from 'prom-client';
import { InsufficientScopeError, InvalidTokenError } from '../../api/errors.js';
import type { IssuerMetadata, OpenIdMetadataSource } from './openid-metadata.js';
import { createSigningKeys, type SigningKeys } from './signing-keys.js';
import { isCanonicalBase64url } from './canonical-base64url.js';
import { parseStrictJsonObject } from './strict-json.js';
import { verifyRs256 } from './verify-rs256.js';
import { createUserReference } from './user-reference.js';
import { DEFAULT_VERIFIED_TOKEN_CACHE_BYTES, createVerifiedTokenCache, verifiedTokenBytes } from './verified-token-cache.js';

/** A caller whose token passed every check. The only way a token reaches the layers below. Frozen. */
export interface AuthenticatedCaller {
  /** The raw incoming token: the OBO assertion. Never logged. */
  readonly token: string;
  /** base64url(SHA-256(token)): the cache partition, the same digest msal-node calls `userAssertionHash`. */
  readonly tokenHash: string;
  readonly tenantId: string;
  readonly objectId: string;
  /** Pseudonymous reference to the user, for logs and per-user rate limits (see user-reference.ts). */
  readonly userReference: string;
  readonly version: '1.0' | '2.0';
  readonly scopes: readonly string[];
  /** Token id (`uti`), for logs. */
  readonly tokenId?: string;
  readonly expiresAt: number;
  readonly claims: Readonly<Record<string, unknown>>;
}

export interface AccessTokenValidatorOptions {
  metadata: OpenIdMetadataSource;
  multiTenant: boolean;
  /**
   * AZURE_TENANT_ID=organizations: work and school accounts only, so tokens of the personal-account
   * (consumer) tenant are refused. `common` accepts them.
   */
  workAndSchoolOnly: boolean;
  audiences: string[];
  /** Any one of them suffices. */
  requiredScopes: string[];
  /** Empty = no allow-list. Lower-case GUIDs. */
  allowedTenants: string[];
  clockSkewSeconds: number;
  jwksCooldownMs: number;
  /**
   * The user reference's key is derived from this secret (HKDF), so instances sharing it agree;
   * without it, each validator draws a random key.
   */
  userReferenceSecret?: Uint8Array;
  /** Byte budget of the verified-token cache (TOKEN_VALIDATION_CACHE_MAX_BYTES); 0 = off. Default 16 MiB. */
  cacheMaxBytes?: number;
  /** For the verified-token cache's metrics. */
  registry?: Registry;
  now?: () => number;
}

export type AccessTokenValidator = (token: string) => Promise<AuthenticatedCaller>;

/**
 * What the verified-token cache holds: the caller without its token (the request that presents
 * it carries it, and the token is most of an entry's weight), and what a hit must check again.
 */
interface VerifiedToken {
  identity: Omit<AuthenticatedCaller, 'token'>;
  exp: number;
  /** The later of `nbf` and `iat`. */
  notBefore: number;
  appOnly: boolean;
  kid: string;
  /** The key set that verified it: a new JWKS URI (new metadata) means a full validation again. */
  keys: SigningKeys;
}

const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** Entra's longest lifetime (CAE, 28 h); anything longer is not an Entra access token. */
const MAX_LIFETIME_SECONDS = 28 * 3600;
/** Header parameters that change how a JWS is processed; Entra access tokens use none of them. */
const REFUSED_HEADER_PARAMETERS = ['crit', 'b64', 'cty', 'enc', 'zip'];
/** The personal Microsoft accounts (MSA) tenant. */
const CONSUMER_TENANT_ID = '9188040d-6c67-4c5b-b112-36a304b66dad';
/** As jose decodes: invalid UTF-8 is an invalid token, not silently replaced (as Buffer#toString does). */
const UTF8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Validates an Entra ID access token for this API. Order matters: everything that can be
 * decided from the token's text is decided before a signing key is looked up, so forged or
 * expired tokens never cause a JWKS fetch; the scope check (403) comes only after the signature.
 * The token is parsed once, here: jose selects and imports the signing key, node:crypto checks
 * the signature (verify-rs256.ts), so no second parse and claims pass repeats what is above.
 *
 * A token that passed is kept in the verified-token cache (one per validator): presented again,
 * it costs a SHA-256 and a lookup, plus the checks that depend on time or on the configuration
 * (expiry, scopes, tenants) and on its key still being published.
 */
export function createAccessTokenValidator(options: AccessTokenValidatorOptions): AccessTokenValidator {
  const now = options.now ?? Date.now;
  const skew = options.clockSkewSeconds;
  const userReference = createUserReference(options.userReferenceSecret);
  const cache = createVerifiedTokenCache<VerifiedToken>({
    maxBytes: options.cacheMaxBytes ?? DEFAULT_VERIFIED_TOKEN_CACHE_BYTES,
    ...(options.registry ? { registry: options.registry } : {}),
  });
  let keys: { uri: string; set: SigningKeys } | undefined;

  function signingKeys(metadata: IssuerMetadata): SigningKeys {
    if (keys?.uri !== metadata.jwksUri) {
      keys = { uri: metadata.jwksUri, set: createSigningKeys(metadata.jwksUri, { cooldownMs: options.jwksCooldownMs, now }) };
    }
    return keys.set;
  }

  /** The issuers a token of tenant `tid` may carry, by version. */
  function issuerFor(metadata: IssuerMetadata, version: '1.0' | '2.0', tid: string): string | undefined {
    const template = version === '2.0' ? metadata.v2Issuer : metadata.v1Issuer;
    if (!template) return undefined;
    if (options.multiTenant) return template.includes('{tenantid}') ? template.replace('{tenantid}', tid) : undefined;
    return template;
  }

  // The checks that a cached token passes again on every hit: time moves, a key can be retired.
  function checkTimes(exp: number, notBefore: number, nowSeconds: number): void {
    if (exp <= nowSeconds - skew) throw invalid('The access token has expired.');
    if (notBefore > nowSeconds + skew) throw invalid('The access token is not yet valid.');
  }
  /** `tid` in lower case. */
  function checkTenant(tid: string): void {
    if (options.workAndSchoolOnly && tid === CONSUMER_TENANT_ID) {
      throw invalid('The access token comes from a tenant this API does not accept.');
    }
    if (options.allowedTenants.length > 0 && !options.allowedTenants.includes(tid)) {
      throw invalid('The access token comes from a tenant this API does not accept.');
    }
  }
  function checkScopes(scopes: readonly string[], appOnly: boolean): void {
    // App-only tokens (idtyp "app", roles without scp) act for no user: nothing to exchange on behalf of.
    if (!appOnly) for (const scope of options.requiredScopes) if (scopes.includes(scope)) return;
    throw new InsufficientScopeError(options.requiredScopes);
  }

  function fromCache(verified: VerifiedToken, tokenHash: string): VerifiedToken['identity'] | undefined {
    const current = keys?.set;
    if (verified.keys !== current || !current.isPublished(verified.kid)) {
      cache?.delete(tokenHash); // its key was retired: validate in full, which refuses it
      return undefined;
    }
    current.refreshIfDue();
    try {
      checkTimes(verified.exp, verified.notBefore, Math.floor(now() / 1000));
    } catch (error) {
      cache?.delete(tokenHash);
      throw error;
    }
    checkTenant(verified.identity.tenantId);
    checkScopes(verified.identity.scopes, verified.appOnly);
    return verified.identity;
  }

  return async function validateAccessToken(token) {
    const tokenHash = hash('sha256', token, 'base64url');
    const cached = cache?.get(tokenHash);
    if (cached) {
      const identity = fromCache(cached, tokenHash);
      // Its hash matched, so this is the very token that was validated.
      if (identity) return Object.freeze({ ...identity, token });
    }

    const segments = token.split('.');
    if (segments.length !== 3 || !segments.every(isCanonicalBase64url)) throw invalid();
    const payloadText = decodeSegment(segments[1] ?? '');
    const header = parseStrictJsonObject(decodeSegment(segments[0] ?? ''));
    const claims = parseStrictJsonObject(payloadText);
    if (!header || !claims) throw invalid();
    if (header['alg'] !== 'RS256') throw invalid();
    const kid = header['kid'];
    if (typeof kid !== 'string' || kid === '') throw invalid();
    if (REFUSED_HEADER_PARAMETERS.some((name) => name in header)) throw invalid();
    // Entra's access tokens say "JWT" (not "at+jwt"); jose below requires it too.
    if (typeof header['typ'] !== 'string' || header['typ'].toUpperCase() !== 'JWT') throw invalid();

    // Claims, before any key lookup.
    const nowSeconds = Math.floor(now() / 1000);
    const { exp, nbf, iat, tid, oid, ver, iss, aud } = claims;
    if (!isTime(exp) || !isTime(nbf) || !isTime(iat)) throw invalid();
    checkTimes(exp, Math.max(nbf, iat), nowSeconds);
    if (exp - iat > MAX_LIFETIME_SECONDS + skew || exp < iat) throw invalid();
    if (typeof tid !== 'string' || !GUID.test(tid) || typeof oid !== 'string' || oid === '') throw invalid();
    if (ver !== '1.0' && ver !== '2.0') throw invalid();
    if (typeof aud !== 'string' || !options.audiences.includes(aud)) throw invalid('The access token is not meant for this API.');
    const tenantId = tid.toLowerCase();
    checkTenant(tenantId);

    const metadata = await options.metadata.get();
    const expectedIssuer = issuerFor(metadata, ver, tid);
    if (!expectedIssuer || iss !== expectedIssuer) throw invalid('The access token comes from an unexpected issuer.');
    // In single-tenant mode the issuer is concrete: it names the one tenant `tid` must be.
    if (!options.multiTenant && !expectedIssuer.toLowerCase().includes(`/${tenantId}/`)) throw invalid();

    // The signature last: every claim above is already the one it signs.
    const keySet = signingKeys(metadata);
    const key = await keySet.keyFor({ alg: 'RS256', kid });
    const signingInputLength = (segments[0] ?? '').length + 1 + (segments[1] ?? '').length;
    if (!(await verifyRs256(token.slice(0, signingInputLength), Buffer.from(segments[2] ?? '', 'base64url'), key))) throw invalid();
    // A key that names its issuer vouches only for that issuer's tenant.
    const keyIssuer = keySet.published(kid)?.issuer;
    if (typeof keyIssuer === 'string') {
      const vouchedFor = keyIssuer.replace('{tenantid}', tid);
      const sameTenant = [issuerFor(metadata, '2.0', tid), issuerFor(metadata, '1.0', tid), iss];
      if (!sameTenant.includes(vouchedFor) && !sameTenantIssuer(vouchedFor, iss, tid)) throw invalid();
    }

    const scopes = typeof claims['scp'] === 'string' ? claims['scp'].split(' ').filter(Boolean) : [];
    const appOnly = claims['idtyp'] === 'app';
    checkScopes(scopes, appOnly);

    const identity = Object.freeze({
      tokenHash,
      tenantId,
      objectId: oid,
      userReference: userReference(tenantId, oid),
      version: ver,
      scopes: Object.freeze(scopes),
      ...(typeof claims['uti'] === 'string' ? { tokenId: claims['uti'] } : {}),
      expiresAt: exp * 1000,
      claims: Object.freeze(claims),
    });
    // Only successes go in: a refused token is never cached, so a flood of them evicts nothing.
    cache?.set(tokenHash, { identity, exp, notBefore: Math.max(nbf, iat), appOnly, kid, keys: keySet }, verifiedTokenBytes(payloadText.length));
    return Object.freeze({ ...identity, token });
  };
}

function invalid(message?: string): InvalidTokenError {
  return new InvalidTokenError(message);
}

/** The segment's text; '' (which no parse accepts) for bytes that are not UTF-8. */
function decodeSegment(segment: string): string {
  try {
    return UTF8.decode(Buffer.from(segment, 'base64url'));
  } catch {
    return '';
  }
}

function isTime(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value) && value >= 0;
}

/**
 * Entra publishes the same key under the v2 issuer template while v1 tokens carry the
 * sts.windows.net issuer: accept a key issuer that names the token's tenant on the same cloud.
 */
function sameTenantIssuer(keyIssuer: string, tokenIssuer: unknown, tid: string): boolean {
  if (typeof tokenIssuer !== 'string') return false;
  const tenantSegment = `/${tid.toLowerCase()}/`;
  return keyIssuer.toLowerCase().includes(tenantSegment) && tokenIssuer.toLowerCase().includes(tenantSegment);
}
