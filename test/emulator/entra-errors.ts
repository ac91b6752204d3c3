// Entra ID error bodies: {error, error_description "AADSTSnnnnn: …\r\nTrace ID…", error_codes,
// timestamp, trace_id, correlation_id, error_uri[, suberror, claims]}.
import { sendJson, type HttpContext } from './http.js';

export interface EntraError {
  status: number;
  error: string;
  code: number;
  message: string;
  suberror?: string;
  claims?: string;
}

/** "2025-01-31 12:00:00Z", the format Entra uses in bodies. */
function entraTimestamp(date = new Date()): string {
  return `${date.toISOString().slice(0, 19).replace('T', ' ')}Z`;
}

export function entraErrorBody(spec: EntraError, traceId: string, correlationId: string): Record<string, unknown> {
  const timestamp = entraTimestamp();
  return {
    error: spec.error,
    error_description: `AADSTS${spec.code}: ${spec.message}\r\nTrace ID: ${traceId}\r\nCorrelation ID: ${correlationId}\r\nTimestamp: ${timestamp}`,
    error_codes: [spec.code],
    timestamp,
    trace_id: traceId,
    correlation_id: correlationId,
    error_uri: `https://login.microsoftonline.com/error?code=${spec.code}`,
    ...(spec.suberror ? { suberror: spec.suberror } : {}),
    ...(spec.claims ? { claims: spec.claims } : {}),
  };
}

export function entraHeaders(ctx: HttpContext, correlationId: string): Record<string, string> {
  return {
    'Cache-Control': 'no-store, no-cache',
    Pragma: 'no-cache',
    'x-ms-request-id': ctx.requestId,
    'x-ms-ests-server': '2.1.0 - EMU Emulator',
    'client-request-id': correlationId,
  };
}

export function sendEntraError(ctx: HttpContext, spec: EntraError, correlationId: string, extraHeaders: Record<string, string> = {}): void {
  ctx.note.error = `${spec.error} AADSTS${spec.code}${spec.suberror ? ` ${spec.suberror}` : ''}`;
  sendJson(ctx, spec.status, entraErrorBody(spec, ctx.requestId, correlationId), { ...entraHeaders(ctx, correlationId), ...extraHeaders });
}

// Error catalogue. Texts follow real Entra messages where they are public; codes marked
// "emulator choice" have no documented real counterpart.
export const errors = {
  tenantNotFound: (tenant: string, error = 'invalid_request'): EntraError => ({
    status: 400,
    error,
    code: 90002,
    message: `Tenant '${tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant.`,
  }),
  missingParameter: (name: string): EntraError => ({
    status: 400,
    error: 'invalid_request',
    code: 900144,
    message: `The request body must contain the following parameter: '${name}'.`,
  }),
  duplicateParameter: (name: string): EntraError => ({
    status: 400,
    error: 'invalid_request',
    code: 9000411,
    message: `The request is not properly formatted. The parameter '${name}' is duplicated.`,
  }),
  postOnly: (method: string): EntraError => ({
    status: 400,
    error: 'invalid_request',
    code: 900561,
    message: `The endpoint only accepts POST, OPTIONS requests. Received a ${method} request.`,
  }),
  // emulator choice: generic InvalidRequest for malformed requests without a documented code
  invalidRequest: (message: string): EntraError => ({ status: 400, error: 'invalid_request', code: 90023, message }),
  unsupportedGrant: (grant: string): EntraError => ({
    status: 400,
    error: 'unsupported_grant_type',
    code: 70003,
    message: `The app requested an unsupported grant type '${grant}'.`,
  }),
  unknownClient: (clientId: string, tenantName: string): EntraError => ({
    status: 400,
    error: 'unauthorized_client',
    code: 700016,
    message: `Application with identifier '${clientId}' was not found in the directory '${tenantName}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.`,
  }),
  missingCredential: (): EntraError => ({
    status: 401,
    error: 'invalid_client',
    code: 7000218,
    message: "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
  }),
  publicClientCredential: (): EntraError => ({
    status: 401,
    error: 'invalid_client',
    code: 700025,
    message: "Client is public so neither 'client_assertion' nor 'client_secret' should be presented.",
  }),
  wrongSecret: (clientId: string): EntraError => ({
    status: 401,
    error: 'invalid_client',
    code: 7000215,
    message: `Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '${clientId}'.`,
  }),
  expiredSecret: (clientId: string): EntraError => ({
    status: 401,
    error: 'invalid_client',
    code: 7000222,
    message: `The provided client secret keys for app '${clientId}' are expired. Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds.`,
  }),
  malformedClientAssertion: (): EntraError => ({ status: 401, error: 'invalid_client', code: 50027, message: 'JWT token is invalid or malformed.' }),
  clientAssertionSignature: (reason: string, thumbprint: string, clientId: string): EntraError => ({
    status: 401,
    error: 'invalid_client',
    code: 700027,
    message: `Client assertion contains an invalid signature. [Reason - ${reason}, Thumbprint of key used by client: '${thumbprint}', Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '${clientId}'. Review the documentation at https://docs.microsoft.com/en-us/graph/deployments if you are not using a national cloud.]`,
  }),
  clientAssertionSubject: (): EntraError => ({
    status: 401,
    error: 'invalid_client',
    code: 700021,
    message: "Client assertion application identifier doesn't match 'client_id' parameter. Review the documentation at https://aka.ms/certCreds .",
  }),
  clientAssertionAudience: (): EntraError => ({
    status: 401,
    error: 'invalid_client',
    code: 700023,
    message: 'Client assertion audience claim does not match Realm issuer. Review the documentation at https://aka.ms/certCreds .',
  }),
  clientAssertionTime: (nbf: unknown, exp: unknown): EntraError => ({
    status: 401,
    error: 'invalid_client',
    code: 700024,
    message: `Client assertion is not within its valid time range. Current time: ${isoTime(Date.now() / 1000)}, assertion valid from ${isoTime(nbf)}, expiry time of assertion ${isoTime(exp)}. Review the documentation at https://aka.ms/certCreds .`,
  }),
  multipleResources: (scope: string): EntraError => ({
    status: 400,
    error: 'invalid_scope',
    code: 700022,
    message: `The provided value for the input parameter scope is not valid because it contains more than one resource. Scope ${scope} is not valid.`,
  }),
  clientCredentialsScope: (scope: string): EntraError => ({
    status: 400,
    error: 'invalid_scope',
    code: 1002012,
    message: `The provided value for scope ${scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).`,
  }),
  invalidScope: (scope: string, why: string): EntraError => ({
    status: 400,
    error: 'invalid_scope',
    code: 70011,
    message: `The provided value for the input parameter 'scope' is not valid. The scope ${scope} is not valid. ${why}`.trim(),
  }),
  unknownResource: (resource: string, tenantName: string): EntraError => ({
    status: 400,
    error: 'invalid_resource',
    code: 500011,
    message: `The resource principal named ${resource} was not found in the tenant named ${tenantName}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant.`,
  }),
  malformedAssertion: (): EntraError => ({ status: 400, error: 'invalid_request', code: 50027, message: 'JWT token is invalid or malformed.' }),
  assertionSignature: (reason: string, kid: unknown): EntraError => ({
    status: 400,
    error: 'invalid_grant',
    code: 50013,
    message: `Assertion failed signature validation. [Reason - ${reason}, Thumbprint of key used by client: '${typeof kid === 'string' ? kid : (JSON.stringify(kid) ?? '')}']`,
  }),
  invalidAssertion: (why: string): EntraError => ({ status: 400, error: 'invalid_grant', code: 50013, message: `Assertion is invalid. ${why}` }),
  assertionExpired: (exp: unknown): EntraError => ({
    status: 400,
    error: 'invalid_grant',
    code: 500133,
    message: `Assertion is not within its valid time range. Ensure that the access token is not expired before using it for user assertion, or request a new token. Current time: ${isoTime(Date.now() / 1000)}, expiry time of assertion ${isoTime(exp)}.`,
  }),
  assertionAudience: (aud: unknown, clientId: string): EntraError => ({
    status: 400,
    error: 'invalid_grant',
    code: 500131,
    message: `Assertion audience does not match the Client app presenting the assertion. The audience in the assertion was '${typeof aud === 'string' ? aud : JSON.stringify(aud)}' and the expected audience is '${clientId}' or one of the Application Id URIs of this application.`,
  }),
  idTokenAssertion: (): EntraError => ({
    status: 400,
    error: 'invalid_grant',
    code: 240002,
    message: "Input id_token cannot be used as 'urn:ietf:params:oauth:grant-type:jwt-bearer' grant.",
  }),
  userNotInTenant: (tenantId: string): EntraError => ({
    status: 400,
    error: 'invalid_grant',
    code: 50034,
    message: `The user account {EmailHidden} does not exist in the ${tenantId} directory. To sign into this application, the account must be added to the directory.`,
  }),
  consentRequired: (clientId: string, appName: string): EntraError => ({
    status: 400,
    error: 'invalid_grant',
    code: 65001,
    suberror: 'consent_required',
    message: `The user or administrator has not consented to use the application with ID '${clientId}' named '${appName}'. Send an interactive authorization request for this user and resource.`,
  }),
  mfaRequired: (claims: string): EntraError => ({
    status: 400,
    error: 'invalid_grant',
    code: 50076,
    suberror: 'basic_action',
    claims,
    message:
      "Due to a configuration change made by your administrator, or because you moved to a new location, you must use multi-factor authentication to access '00000003-0000-0000-c000-000000000000'.",
  }),
  conditionalAccess: (claims: string): EntraError => ({
    status: 400,
    error: 'interaction_required',
    code: 50079,
    claims,
    message:
      "Due to a configuration change made by your administrator, or because you moved to a new location, you must enroll in multi-factor authentication to access '00000003-0000-0000-c000-000000000000'.",
  }),
  invalidInstance: (): EntraError => ({
    status: 400,
    error: 'invalid_instance',
    code: 50049,
    message: 'Unknown or invalid instance.',
  }),
};

function isoTime(seconds: unknown): string {
  const date = typeof seconds === 'number' ? new Date(Math.floor(seconds) * 1000) : undefined;
  return date && !Number.isNaN(date.getTime()) ? date.toISOString() : String(seconds);
}
