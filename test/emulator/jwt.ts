// Compact JWS encoding, signing and verification on node:crypto. The emulator needs full
// control over header and payload bytes (duplicate members, non-object JSON, odd algs),
// which a JWT library would normalise away.
import { constants, createHmac, sign, verify, type KeyObject } from 'node:crypto';

export type JsonObject = Record<string, unknown>;

function b64url(input: Buffer | string): string {
  return Buffer.from(input).toString('base64url');
}

export function b64urlJson(value: unknown): string {
  return b64url(JSON.stringify(value));
}

export function isJsonObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export interface DecodedJwt {
  header: JsonObject;
  payload: JsonObject;
  signingInput: string;
  signature: Buffer;
}

/** Strict decode: three base64url segments whose first two are JSON objects. */
export function decodeJwt(token: string): DecodedJwt | undefined {
  const parts = token.split('.');
  if (parts.length !== 3) return undefined;
  const [h, p, s] = parts as [string, string, string];
  const b64urlPattern = /^[A-Za-z0-9_-]*$/;
  if (!h || !p || !b64urlPattern.test(h) || !b64urlPattern.test(p) || !b64urlPattern.test(s)) return undefined;
  try {
    const header: unknown = JSON.parse(Buffer.from(h, 'base64url').toString('utf8'));
    const payload: unknown = JSON.parse(Buffer.from(p, 'base64url').toString('utf8'));
    if (!isJsonObject(header) || !isJsonObject(payload)) return undefined;
    return { header, payload, signingInput: `${h}.${p}`, signature: Buffer.from(s, 'base64url') };
  } catch {
    return undefined;
  }
}

/** Material a signature can be made with; EC/Ed keys are only needed for "wrong alg" tokens. */
export interface SignerKeys {
  rsa: KeyObject;
  rsaPublicPem: string;
  ec(curve: 'P-256' | 'P-384' | 'P-521'): KeyObject;
  ed25519(): KeyObject;
}

/** Signs per the JOSE `alg`; unknown algs fall back to RS256 so the token still has a signature. */
export function signFor(alg: unknown, signingInput: string, keys: SignerKeys): string {
  const data = Buffer.from(signingInput);
  const name = typeof alg === 'string' ? alg : 'RS256';
  const bits = name.slice(2);
  const digest = bits === '384' ? 'sha384' : bits === '512' ? 'sha512' : 'sha256';
  switch (name) {
    case 'none':
      return '';
    case 'HS256':
    case 'HS384':
    case 'HS512':
      return createHmac(digest, keys.rsaPublicPem).update(data).digest('base64url');
    case 'PS256':
    case 'PS384':
    case 'PS512':
      return sign(digest, data, {
        key: keys.rsa,
        padding: constants.RSA_PKCS1_PSS_PADDING,
        saltLength: constants.RSA_PSS_SALTLEN_DIGEST,
      }).toString('base64url');
    case 'ES256':
    case 'ES384':
    case 'ES512': {
      const curve = bits === '384' ? 'P-384' : bits === '512' ? 'P-521' : 'P-256';
      return sign(digest, data, { key: keys.ec(curve), dsaEncoding: 'ieee-p1363' }).toString('base64url');
    }
    case 'EdDSA':
    case 'Ed25519':
      return sign(null, data, keys.ed25519()).toString('base64url');
    case 'RS384':
    case 'RS512':
      return sign(digest, data, keys.rsa).toString('base64url');
    default:
      return sign('sha256', data, keys.rsa).toString('base64url');
  }
}

/** Verifies RS256/PS256 (what Entra accepts for assertions); anything else is false. */
export function verifyRsa(alg: unknown, decoded: DecodedJwt, publicKey: KeyObject): boolean {
  const data = Buffer.from(decoded.signingInput);
  try {
    if (alg === 'RS256') return verify('sha256', data, publicKey, decoded.signature);
    if (alg === 'PS256') {
      return verify(
        'sha256',
        data,
        { key: publicKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_AUTO },
        decoded.signature,
      );
    }
  } catch {
    return false;
  }
  return false;
}

/** Base64url-encodes (objects as JSON, strings verbatim) and joins with a signature. */
export function assemble(header: object | string, payload: object | string, signer: (signingInput: string) => string): string {
  const h = b64url(typeof header === 'string' ? header : JSON.stringify(header));
  const p = b64url(typeof payload === 'string' ? payload : JSON.stringify(payload));
  const signingInput = `${h}.${p}`;
  return `${signingInput}.${signer(signingInput)}`;
}
