import { createHash } from 'node:crypto';
import { compactVerify, errors } from 'jose';
import { ApiError, InsufficientScopeError, InvalidTokenError } from '../../api/errors.js';
import type { IssuerMetadata, OpenIdMetadataSource } from './openid-metadata.js';
import { createSigningKeys, type SigningKeys } from './signing-keys.js';
import { parseStrictJsonObject } from './strict-json.js';

/** A caller whose token passed every check. The only way a token reaches the layers below. */
export interface AuthenticatedCaller {
  /** The raw incoming token: the OBO assertion. Never logged. */
  token: string;
  /** base64url(SHA-256(token)): the cache partition, the same digest msal-node calls `userAssertionHash`. */
  tokenHash: string;
  tenantId: string;
  objectId: string;
  version: '1.0' | '2.0';
  scopes: string[];
  /** Token id (`uti`), for logs. */
  tokenId?: string;
  expiresAt: number;
  claims: Readonly<Record<string, unknown>>;
}

export interface AccessTokenValidatorOptions {
  metadata: OpenIdMetadataSource;
  multiTenant: boolean;
  audiences: string[];
  /** Any one of them suffices. */
  requiredScopes: string[];
  /** Empty = no allow-list. Lower-case GUIDs. */
  allowedTenants: string[];
  clockSkewSeconds: number;
  jwksCooldownMs: number;
  now?: () => number;
}

export type AccessTokenValidator = (token: string) => Promise<AuthenticatedCaller>;

const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const BASE64URL_SEGMENT = /^[A-Za-z0-9_-]+$/;
/** Entra's longest lifetime (CAE, 28 h); anything longer is not an Entra access token. */
const MAX_LIFETIME_SECONDS = 28 * 3600;
/** Header parameters that change how a JWS is processed; Entra access tokens use none of them. */
const REFUSED_HEADER_PARAMETERS = ['crit', 'b64', 'cty', 'enc', 'zip'];

/**
 * Validates an Entra ID access token for this API. Order matters: everything that can be
 * decided from the token's text is decided before a signing key is looked up, so forged or
 * expired tokens never cause a JWKS fetch; the scope check (403) comes only after the signature.
 */
export function createAccessTokenValidator(options: AccessTokenValidatorOptions): AccessTokenValidator {
  const now = options.now ?? Date.now;
  const skew = options.clockSkewSeconds;
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

  return async function validateAccessToken(token) {
    const segments = token.split('.');
    if (segments.length !== 3 || !segments.every(isCanonicalBase64url)) throw invalid();
    const header = parseStrictJsonObject(decodeSegment(segments[0] ?? ''));
    const claims = parseStrictJsonObject(decodeSegment(segments[1] ?? ''));
    if (!header || !claims) throw invalid();
    if (header['alg'] !== 'RS256') throw invalid();
    const kid = header['kid'];
    if (typeof kid !== 'string' || kid === '') throw invalid();
    if (REFUSED_HEADER_PARAMETERS.some((name) => name in header)) throw invalid();
    if (header['typ'] !== undefined && String(header['typ']).toUpperCase() !== 'JWT') throw invalid();

    // Claims, before any key lookup.
    const nowSeconds = now() / 1000;
    const { exp, nbf, iat, tid, oid, ver, iss, aud } = claims;
    if (!isTime(exp) || !isTime(nbf) || !isTime(iat)) throw invalid();
    if (exp <= nowSeconds - skew) throw invalid('The access token has expired.');
    if (nbf > nowSeconds + skew || iat > nowSeconds + skew) throw invalid('The access token is not yet valid.');
    if (exp - iat > MAX_LIFETIME_SECONDS + skew || exp < iat) throw invalid();
    if (typeof tid !== 'string' || !GUID.test(tid) || typeof oid !== 'string' || oid === '') throw invalid();
    if (ver !== '1.0' && ver !== '2.0') throw invalid();
    if (typeof aud !== 'string' || !options.audiences.includes(aud)) throw invalid('The access token is not meant for this API.');
    if (options.allowedTenants.length > 0 && !options.allowedTenants.includes(tid.toLowerCase())) {
      throw invalid('The access token comes from a tenant this API does not accept.');
    }

    const metadata = await options.metadata.get();
    const expectedIssuer = issuerFor(metadata, ver, tid);
    if (!expectedIssuer || iss !== expectedIssuer) throw invalid('The access token comes from an unexpected issuer.');
    // In single-tenant mode the issuer is concrete: it names the one tenant `tid` must be.
    if (!options.multiTenant && !expectedIssuer.toLowerCase().includes(`/${tid.toLowerCase()}/`)) throw invalid();

    const keySet = signingKeys(metadata);
    try {
      await compactVerify(token, (protectedHeader) => keySet.resolve(protectedHeader), { algorithms: ['RS256'] });
    } catch (error) {
      if (error instanceof ApiError) throw error;
      if (error instanceof errors.JOSEError) throw invalid();
      throw error;
    }
    // A key that names its issuer vouches only for that issuer's tenant.
    const keyIssuer = keySet.published(kid)?.issuer;
    if (typeof keyIssuer === 'string') {
      const vouchedFor = keyIssuer.replace('{tenantid}', tid);
      const sameTenant = [issuerFor(metadata, '2.0', tid), issuerFor(metadata, '1.0', tid), iss];
      if (!sameTenant.includes(vouchedFor) && !sameTenantIssuer(vouchedFor, iss, tid)) throw invalid();
    }

    const scopes = typeof claims['scp'] === 'string' ? claims['scp'].split(' ').filter(Boolean) : [];
    // App-only tokens (idtyp "app", roles without scp) act for no user: nothing to exchange on behalf of.
    if (claims['idtyp'] === 'app' || !options.requiredScopes.some((scope) => scopes.includes(scope))) {
      throw new InsufficientScopeError(options.requiredScopes);
    }

    return {
      token,
      tokenHash: createHash('sha256').update(token).digest('base64url'),
      tenantId: tid.toLowerCase(),
      objectId: oid,
      version: ver,
      scopes,
      ...(typeof claims['uti'] === 'string' ? { tokenId: claims['uti'] } : {}),
      expiresAt: exp * 1000,
      claims,
    };
  };
}

function invalid(message?: string): InvalidTokenError {
  return new InvalidTokenError(message);
}

/**
 * Only the canonical encoding: base64url decoders ignore the spare bits of the last character,
 * so without this check a token whose last character was changed would still verify.
 */
function isCanonicalBase64url(segment: string): boolean {
  return BASE64URL_SEGMENT.test(segment) && Buffer.from(segment, 'base64url').toString('base64url') === segment;
}

function decodeSegment(segment: string): string {
  return Buffer.from(segment, 'base64url').toString('utf8');
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
