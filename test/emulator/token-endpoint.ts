// POST /{tenant}/oauth2/v2.0/token: the on-behalf-of grant, with Entra's checks in order
// (research entra-and-graph.md §8.3) and Entra's error and success shapes.
import { randomBytes, randomUUID } from 'node:crypto';
import { authenticateClient, parseBasic } from './client-auth.js';
import { CLIENT_CREDENTIALS, issueClientCredentialsToken } from './client-credentials.js';
import { entraErrorBody, entraHeaders, errors, sendEntraError, type EntraError } from './entra-errors.js';
import { header, readBody, sendJson, sendText, sleep, type HttpContext } from './http.js';
import { b64urlJson, decodeJwt, isJsonObject, verifyRsa } from './jwt.js';
import { claimsSatisfied, parseScopes, type RequestedScope } from './scopes.js';
import type { AppRegistration, DirectoryUser } from './seed.js';
import type { EmulatorState, TenantRef } from './state.js';
import { nowSeconds, type TokenFactory } from './tokens.js';
import type { TokenFault } from './types.js';

const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
const SKEW_SECONDS = 300;
/** The Conditional Access policy id the MFA challenge names. */
const MFA_POLICY_ID = 'c1f2e3d4-5a6b-4c7d-8e9f-0a1b2c3d4e5f';

export async function handleTokenRequest(ctx: HttpContext, state: EmulatorState, tokens: TokenFactory, tenantSegment: string): Promise<void> {
  const headerCorrelation = header(ctx.req, 'client-request-id') ?? ctx.url.searchParams.get('client-request-id') ?? undefined;
  if (ctx.method !== 'POST') {
    sendEntraError(ctx, errors.postOnly(ctx.method), headerCorrelation ?? randomUUID());
    return;
  }
  state.counters.token += 1;

  const raw = await readBody(ctx.req);
  const isForm = /^application\/x-www-form-urlencoded\b/i.test(header(ctx.req, 'content-type') ?? '');
  const form = new URLSearchParams(isForm ? raw.toString('utf8') : '');
  const names = [...new Set(form.keys())];
  ctx.note.formParams = names;
  ctx.note.scope = form.get('scope') ?? undefined;
  ctx.note.grantType = form.get('grant_type') ?? undefined;
  const correlationId = headerCorrelation ?? form.get('client-request-id') ?? randomUUID();
  ctx.note.clientRequestId = correlationId;
  const fail = (error: EntraError): void => sendEntraError(ctx, error, correlationId);

  // Injected faults come first, like throttling at Entra's front door.
  const fault = state.faults.token.take();
  if (fault) {
    ctx.note.fault = describeFault(fault);
    if (fault.delayMs) await sleep(fault.delayMs);
    // A 2xx status without a body override only delays; the request is then handled normally.
    const answers = fault.body !== undefined || (fault.status !== undefined && fault.status >= 300);
    if (answers) return sendTokenFault(ctx, fault, correlationId);
  }

  // 1. A body that is not form-encoded has no readable parameters at all.
  if (!isForm) return fail(errors.missingParameter('grant_type'));
  const duplicated = names.find((name) => form.getAll(name).length > 1);
  if (duplicated) return fail(errors.duplicateParameter(duplicated));

  // 2. Tenant.
  const ref = state.resolveTenant(tenantSegment);
  if (!ref) return fail(errors.tenantNotFound(tenantSegment));
  const tenantName = ref.kind === 'tenant' ? ref.tenant.domain : tenantSegment;

  // 3. Required parameters.
  const grantType = form.get('grant_type');
  if (!grantType) return fail(errors.missingParameter('grant_type'));
  const basic = parseBasic(header(ctx.req, 'authorization'));
  const clientId = form.get('client_id') ?? basic?.clientId;
  if (!clientId) return fail(errors.missingParameter('client_id'));
  if (grantType === JWT_BEARER) {
    for (const name of ['assertion', 'requested_token_use', 'scope']) {
      if (!form.get(name)) return fail(errors.missingParameter(name));
    }
  }

  if (grantType === CLIENT_CREDENTIALS && !form.get('scope')) return fail(errors.missingParameter('scope'));

  // 4. The on-behalf-of and client-credentials grants are emulated.
  if (grantType !== JWT_BEARER && grantType !== CLIENT_CREDENTIALS) return fail(errors.unsupportedGrant(grantType));
  if (grantType === JWT_BEARER && form.get('requested_token_use') !== 'on_behalf_of') {
    return fail(errors.unsupportedGrant(`${grantType} with requested_token_use '${form.get('requested_token_use') ?? ''}'`));
  }

  // 5. Client.
  const { api, otherApi, spa } = state.directory;
  const app = ref.kind === 'msa' ? undefined : [api, otherApi, spa].find((a) => a.clientId === clientId.toLowerCase());
  if (!app) return fail(errors.unknownClient(clientId, tenantName));
  if (basic && basic.clientId !== app.clientId) return fail(errors.wrongSecret(app.clientId));

  // 6. Client credential.
  const auth = authenticateClient({ app, form, basic, audiences: assertionAudiences(state, ref, tenantSegment) });
  if (!auth.ok) return fail(auth.error);

  if (grantType === CLIENT_CREDENTIALS) {
    // An app token is issued in a named tenant: common/organizations have no service principal.
    if (ref.kind !== 'tenant') return fail(errors.tenantNotFound(tenantSegment));
    const issued = issueClientCredentialsToken(state, {
      app,
      tenantId: ref.tenant.id,
      tenantName,
      scope: form.get('scope') ?? '',
      appidacr: auth.appidacr,
    });
    if (!issued.ok) return fail(issued.error);
    return sendJson(ctx, 200, issued.body, entraHeaders(ctx, correlationId));
  }

  let requestClaims: unknown;
  const claimsParam = form.get('claims');
  if (claimsParam) {
    try {
      requestClaims = JSON.parse(claimsParam);
    } catch {
      requestClaims = undefined;
    }
    if (!isJsonObject(requestClaims)) return fail(errors.invalidRequest("The 'claims' parameter is not a valid JSON object."));
  }

  // 7. Scopes.
  const scopes = parseScopes(form.get('scope') ?? '', tenantName);
  if (!scopes.ok) return fail(scopes.error);

  // 8. The incoming assertion.
  const subject = validateAssertion(state, form.get('assertion') ?? '', app, ref);
  if (!subject.ok) return fail(subject.error);
  const { user } = subject;

  // 9. Consent.
  const flags = state.flagsOf(user);
  const consented = flags ? (flags.consented ? flags.consentedScopes : []) : [];
  const hasConsent = scopes.isDefault
    ? consented.length > 0
    : scopes.scopes.every((s) => consented.some((c) => c.toLowerCase() === s.name.toLowerCase()));
  if (!hasConsent) return fail(errors.consentRequired(app.clientId, app.displayName));

  // 10. Conditional Access: challenge unless this request already carries the claims.
  let mfa = subject.mfaDone;
  if (flags?.mfaRequired && !mfa) {
    const challenge = JSON.stringify({ access_token: { capolids: { essential: true, values: [MFA_POLICY_ID] } } });
    if (!claimsSatisfied(challenge, requestClaims)) return fail(errors.mfaRequired(challenge));
    mfa = true;
  }
  if (flags?.caClaims) {
    if (!claimsSatisfied(flags.caClaims, requestClaims)) return fail(errors.conditionalAccess(flags.caClaims));
    mfa = true;
  }

  // 12. Success.
  const lifetime = state.options.accessTokenLifetimeSeconds;
  const accessToken = tokens.issueGraphToken({
    user,
    clientId: app.clientId,
    scopes: [...consented, 'openid', 'profile', 'email'],
    lifetimeSeconds: lifetime,
    claims: requestClaims,
    appidacr: auth.appidacr,
    mfa,
  });
  const body: Record<string, unknown> = {
    token_type: 'Bearer',
    scope: responseScope(scopes.scopes, scopes.isDefault, consented),
    expires_in: lifetime,
    ext_expires_in: lifetime,
    ...(lifetime >= 7200 ? { refresh_in: Math.floor(lifetime / 2) } : {}),
    access_token: accessToken,
    refresh_token: `1.A${randomBytes(300).toString('base64url')}`,
    id_token: tokens.idToken(user, app.clientId),
    client_info: b64urlJson({ uid: user.id, utid: user.tenantId }),
  };
  sendJson(ctx, 200, body, entraHeaders(ctx, correlationId));
}

type AssertionResult = { ok: true; user: DirectoryUser; mfaDone: boolean } | { ok: false; error: EntraError };

function validateAssertion(state: EmulatorState, assertion: string, app: AppRegistration, ref: TenantRef): AssertionResult {
  const fail = (error: EntraError): AssertionResult => ({ ok: false, error });
  const jwt = decodeJwt(assertion);
  if (!jwt) return fail(errors.malformedAssertion());
  const { header: h, payload: p } = jwt;
  const kid = h.kid ?? h.x5t;
  const key = state.keys.find(kid);
  // Entra trusts its published keys, and its own Graph-token key; a tenant-bound key only for its tenant.
  const trusted = key && (state.keys.isPublished(key.kid) || key === state.keys.graphKey) && (!key.boundTenant || key.boundTenant === p.tid);
  if (!key || !trusted) return fail(errors.assertionSignature('The key was not found.', kid));
  if (h.alg !== 'RS256') return fail(errors.assertionSignature("The token's signing algorithm is not supported.", kid));
  if (!verifyRsa('RS256', jwt, key.publicKey)) {
    return fail(errors.assertionSignature('The provided signature value did not match the expected signature value.', kid));
  }
  const now = nowSeconds();
  if (typeof p.exp !== 'number' || now > p.exp + SKEW_SECONDS) return fail(errors.assertionExpired(p.exp));
  if (p.nbf !== undefined && (typeof p.nbf !== 'number' || p.nbf > now + SKEW_SECONDS)) return fail(errors.assertionExpired(p.exp));
  if (typeof p.aud !== 'string' || !(p.aud === app.clientId || app.appIdUris.includes(p.aud))) {
    return fail(errors.assertionAudience(p.aud, app.clientId));
  }
  const tid = typeof p.tid === 'string' ? p.tid : '';
  const tenant = state.tenantById(tid);
  const issuerOk = p.iss === state.v1Issuer(tid) || p.iss === state.v2Issuer(tid);
  const tenantOk = ref.kind === 'common' || ref.kind === 'organizations' || (ref.kind === 'tenant' && ref.tenant.id === tid);
  if (!tenant || !issuerOk || !tenantOk) {
    return fail(errors.invalidAssertion("The assertion's issuer is not valid for the tenant of this request."));
  }
  const isAccessToken = p.scp !== undefined || p.roles !== undefined || p.appid !== undefined || p.azp !== undefined;
  if (!isAccessToken) return fail(errors.idTokenAssertion());
  // emulator choice (unconfirmed for Entra): app-only tokens cannot be exchanged on behalf of a user.
  if (typeof p.scp !== 'string' || p.idtyp === 'app')
    return fail(errors.invalidAssertion('The assertion does not represent a user (no delegated scopes).'));
  const user = state.userByOid(tid, p.oid);
  if (!user) return fail(errors.userNotInTenant(tid));
  // A user who already did MFA for the incoming token is not asked again.
  return { ok: true, user, mfaDone: Array.isArray(p.amr) && p.amr.includes('mfa') };
}

/** Token endpoint URLs a client assertion may use as `aud` (emulator origin and the real host). */
function assertionAudiences(state: EmulatorState, ref: TenantRef, segment: string): string[] {
  const port = new URL(state.authorityHost).port;
  const hosts = [state.authorityHost, `https://localhost:${port}`, 'https://login.microsoftonline.com'];
  const segments = new Set([segment, ...(ref.kind === 'tenant' ? [ref.tenant.id, ref.tenant.domain] : [])]);
  return [...hosts].flatMap((host) => [...segments].flatMap((s) => [`${host}/${s}/oauth2/v2.0/token`, `${host}/${s}/oauth2/token`]));
}

/** The requested scopes in the form they were sent (for `.default`: the consented ones) + OIDC scopes. */
function responseScope(requested: RequestedScope[], isDefault: boolean, consented: string[]): string {
  const resourceScopes = isDefault
    ? [...consented.map((name) => `${requested[0]?.prefix ?? ''}${name}`), requested[0]?.raw ?? '.default']
    : requested.map((s) => s.raw);
  return [...resourceScopes, 'openid', 'profile', 'email'].join(' ');
}

function sendTokenFault(ctx: HttpContext, fault: TokenFault, correlationId: string): void {
  const status = fault.status ?? 500;
  const headers = entraHeaders(ctx, correlationId);
  if (fault.retryAfter !== undefined) headers['Retry-After'] = String(fault.retryAfter);
  if (fault.body === 'non-json') {
    ctx.note.error = `non-json ${status}`;
    sendText(
      ctx,
      status,
      'text/html; charset=utf-8',
      '<!DOCTYPE html><html><head><title>Service unavailable</title></head><body><h1>The service is temporarily unavailable.</h1></body></html>',
      headers,
    );
    return;
  }
  const transient = status === 429 || status >= 500;
  const spec: EntraError = {
    status,
    error: fault.error ?? (transient ? 'temporarily_unavailable' : 'invalid_request'),
    code: fault.errorCode ?? (status === 429 ? 90055 : transient ? 90033 : 90023),
    message:
      fault.description ??
      (status === 429
        ? 'There are too many incoming requests. Please try again later.'
        : transient
          ? 'A transient error has occurred. Please try again.'
          : 'The request was rejected.'),
    ...(fault.suberror ? { suberror: fault.suberror } : {}),
    ...(fault.claims ? { claims: fault.claims } : {}),
  };
  ctx.note.error = `${spec.error} AADSTS${spec.code}`;
  sendJson(ctx, status, entraErrorBody(spec, ctx.requestId, correlationId), headers);
}

function describeFault(fault: TokenFault): string {
  return `token ${fault.status ?? (fault.body ? 500 : 'delay')}${fault.body ? ` ${fault.body}` : ''}${fault.delayMs ? ` +${fault.delayMs}ms` : ''}`;
}
