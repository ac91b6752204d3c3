// Confidential-client authentication at the token endpoint: exactly one of client_secret,
// HTTP Basic (RFC 6749 §2.3.1) or a certificate-signed client_assertion (RFC 7523).
import { createPublicKey } from 'node:crypto';
import { errors, type EntraError } from './entra-errors.js';
import { decodeJwt, verifyRsa } from './jwt.js';
import type { AppRegistration } from './seed.js';
import { nowSeconds } from './tokens.js';

const CLIENT_ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
const SKEW_SECONDS = 300;

export type ClientAuthResult = { ok: true; appidacr: '1' | '2' } | { ok: false; error: EntraError };

export interface BasicCredentials {
  clientId: string;
  secret: string;
}

/** Parses `Authorization: Basic base64(urlencode(id):urlencode(secret))`. */
export function parseBasic(authorization: string | undefined): BasicCredentials | undefined {
  const match = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(authorization ?? '');
  if (!match?.[1]) return undefined;
  const decoded = Buffer.from(match[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return undefined;
  try {
    return { clientId: decodeURIComponent(decoded.slice(0, colon)), secret: decodeURIComponent(decoded.slice(colon + 1)) };
  } catch {
    return undefined;
  }
}

export function authenticateClient(input: {
  app: AppRegistration;
  form: URLSearchParams;
  basic: BasicCredentials | undefined;
  /** Token endpoint URLs a client assertion may name as `aud`. */
  audiences: string[];
}): ClientAuthResult {
  const { app, form, basic } = input;
  const secret = form.get('client_secret');
  const assertion = form.get('client_assertion');
  const presented = [secret !== null, basic !== undefined, assertion !== null].filter(Boolean).length;
  if (!app.confidential) return presented === 0 ? fail(errors.missingCredential()) : fail(errors.publicClientCredential());
  if (presented === 0) return fail(errors.missingCredential());
  if (presented > 1) {
    // emulator choice: RFC 6749 §2.3 forbids more than one method; Entra's exact code is undocumented.
    return fail(
      errors.invalidRequest(
        'More than one client authentication method was presented. Use exactly one of client_secret, HTTP Basic or client_assertion.',
      ),
    );
  }
  if (secret !== null || basic) return checkSecret(app, secret ?? basic?.secret ?? '');
  return checkAssertion(app, assertion ?? '', form.get('client_assertion_type'), input.audiences);
}

function checkSecret(app: AppRegistration, value: string): ClientAuthResult {
  const match = app.secrets.find((s) => s.value === value);
  if (!match) return fail(errors.wrongSecret(app.clientId));
  if (match.expiresAt <= Date.now()) return fail(errors.expiredSecret(app.clientId));
  return { ok: true, appidacr: '1' };
}

function checkAssertion(app: AppRegistration, assertion: string, type: string | null, audiences: string[]): ClientAuthResult {
  if (type === null) return fail(errors.missingParameter('client_assertion_type'));
  if (type !== CLIENT_ASSERTION_TYPE) return fail(errors.invalidRequest(`The client_assertion_type '${type}' is not supported.`));
  const jwt = decodeJwt(assertion);
  if (!jwt) return fail(errors.malformedClientAssertion());
  const s256 = jwt.header['x5t#S256'];
  const s1 = jwt.header.x5t;
  const thumbprint = typeof s256 === 'string' ? s256 : typeof s1 === 'string' ? s1 : '';
  const cert = app.certificates.find((c) =>
    typeof s256 === 'string'
      ? Buffer.from(c.sha256Hex, 'hex').toString('base64url') === s256
      : typeof s1 === 'string' && Buffer.from(c.sha1Hex, 'hex').toString('base64url') === s1,
  );
  if (!cert) return fail(errors.clientAssertionSignature('The key was not found.', thumbprint, app.clientId));
  if (!verifyRsa(jwt.header.alg, jwt, createPublicKey(cert.certificatePem))) {
    return fail(
      errors.clientAssertionSignature('The provided signature value did not match the expected signature value.', thumbprint, app.clientId),
    );
  }
  const { iss, sub, aud, exp, nbf } = jwt.payload;
  if (iss !== app.clientId || sub !== app.clientId) return fail(errors.clientAssertionSubject());
  const audList = Array.isArray(aud) ? aud : [aud];
  if (!audList.some((a) => typeof a === 'string' && audiences.includes(a))) return fail(errors.clientAssertionAudience());
  const now = nowSeconds();
  if (typeof exp !== 'number' || now > exp + SKEW_SECONDS) return fail(errors.clientAssertionTime(nbf, exp));
  if (nbf !== undefined && (typeof nbf !== 'number' || nbf > now + SKEW_SECONDS)) return fail(errors.clientAssertionTime(nbf, exp));
  return { ok: true, appidacr: '2' };
}

function fail(error: EntraError): ClientAuthResult {
  return { ok: false, error };
}
