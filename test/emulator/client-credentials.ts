// The client-credentials grant (RFC 6749 §4.4) as Entra answers it: one resource, the scope
// `<resource>/.default`, an app-only v1 token (`idtyp: app`, the service principal as `oid`)
// signed with a published key, so a resource such as Azure Cache for Redis can verify it.
import { createHash, randomBytes } from 'node:crypto';
import { errors, type EntraError } from './entra-errors.js';
import { signFor, assemble } from './jwt.js';
import type { AppRegistration } from './seed.js';
import type { EmulatorState } from './state.js';
import { nowSeconds } from './tokens.js';

export const CLIENT_CREDENTIALS = 'client_credentials';
/** Azure Cache for Redis / Azure Managed Redis: the resource of their Entra tokens. */
const REDIS_RESOURCE = 'https://redis.azure.com';

export type ClientCredentialsResult = { ok: true; body: Record<string, unknown> } | { ok: false; error: EntraError };

/** The service principal of an app registration in a tenant: a stable GUID, as Entra's object ids are. */
export function servicePrincipalId(clientId: string, tenantId: string): string {
  const hex = createHash('sha256').update(`sp:${tenantId}:${clientId}`).digest('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-4${hex.slice(13, 16)}-8${hex.slice(17, 20)}-${hex.slice(20, 32)}`;
}

/**
 * Issues an app token for `scope` to an authenticated confidential client. Resources: Redis,
 * and the App ID URIs or client ids of the registered APIs (Graph tokens come only from OBO).
 */
export function issueClientCredentialsToken(
  state: EmulatorState,
  input: { app: AppRegistration; tenantId: string; tenantName: string; scope: string; appidacr: '1' | '2' },
): ClientCredentialsResult {
  const items = input.scope.split(/\s+/).filter(Boolean);
  const [only] = items;
  if (items.length !== 1 || only === undefined || !only.endsWith('/.default'))
    return { ok: false, error: errors.clientCredentialsScope(input.scope) };
  const requested = only.slice(0, -'/.default'.length);
  const resource = knownResource(state, requested);
  if (!resource) return { ok: false, error: errors.unknownResource(requested, input.tenantName) };

  const lifetime = state.appTokenLifetimeSeconds;
  const iat = nowSeconds();
  const oid = servicePrincipalId(input.app.clientId, input.tenantId);
  const key = state.keys.current;
  const payload = {
    aud: requested,
    iss: state.v1Issuer(input.tenantId),
    iat,
    nbf: iat,
    exp: iat + lifetime,
    aio: randomBytes(48).toString('base64url'),
    appid: input.app.clientId,
    appidacr: input.appidacr,
    idp: state.v1Issuer(input.tenantId),
    idtyp: 'app',
    oid,
    rh: randomBytes(24).toString('base64url'),
    sub: oid,
    tid: input.tenantId,
    uti: randomBytes(16).toString('base64url'),
    ver: '1.0',
  };
  const signer = state.keys.signerKeys(key);
  const accessToken = assemble({ typ: 'JWT', alg: 'RS256', x5t: key.kid, kid: key.kid }, payload, (signingInput) =>
    signFor('RS256', signingInput, signer),
  );
  state.counters.clientCredentials += 1;
  return { ok: true, body: { token_type: 'Bearer', expires_in: lifetime, ext_expires_in: lifetime, access_token: accessToken } };
}

function knownResource(state: EmulatorState, requested: string): string | undefined {
  const wanted = requested.toLowerCase().replace(/\/+$/, '');
  if (wanted === REDIS_RESOURCE) return REDIS_RESOURCE;
  const { api, otherApi } = state.directory;
  for (const app of [api, otherApi]) {
    if ([app.clientId, ...app.appIdUris].some((id) => id.toLowerCase() === wanted)) return requested;
  }
  return undefined;
}
