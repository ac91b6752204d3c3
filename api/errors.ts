/**
 * The one error hierarchy of the service. Every class knows its own HTTP status, its stable
 * `code` (the JSON body's `error`), and its headers; `errorHandler` writes them out.
 * Messages are public: generic, never a token, a claim value or a library message, never `"`.
 */
export abstract class ApiError extends Error {
  abstract readonly status: number;
  abstract readonly code: string;

  headers(): Record<string, string> {
    return {};
  }

  body(): Record<string, unknown> {
    return { error: this.code, message: this.message };
  }
}

type ChallengeParameters = Record<string, string>;

/** `Bearer k="v", …` (RFC 6750 §3). Values are ours and never contain `"` or `\`. */
function bearerChallenge(parameters: ChallengeParameters): string {
  const list = Object.entries(parameters).map(([key, value]) => `${key}="${value}"`);
  return list.length === 0 ? 'Bearer' : `Bearer ${list.join(', ')}`;
}

/** 401 without an `error` parameter: the request carried no usable credentials (RFC 6750 §3.1). */
export class MissingCredentialsError extends ApiError {
  readonly status = 401;
  readonly code = 'unauthorized';
  constructor(private readonly realm: string) {
    super('A bearer token is required.');
  }
  override headers(): Record<string, string> {
    return { 'www-authenticate': bearerChallenge({ realm: this.realm }) };
  }
}

/** 400 `invalid_request`: a malformed request, e.g. two authentication methods. */
export class InvalidRequestError extends ApiError {
  readonly status = 400;
  readonly code = 'invalid_request';
  override headers(): Record<string, string> {
    return { 'www-authenticate': bearerChallenge({ error: this.code, error_description: this.message }) };
  }
}

/** 401 `invalid_token`: expired, malformed, forged or misdirected. */
export class InvalidTokenError extends ApiError {
  readonly status = 401;
  readonly code = 'invalid_token';
  constructor(message = 'The access token is invalid.') {
    super(message);
  }
  override headers(): Record<string, string> {
    return { 'www-authenticate': bearerChallenge({ error: this.code, error_description: this.message }) };
  }
}

/** 403 `insufficient_scope`: a valid token without the scope this API requires. */
export class InsufficientScopeError extends ApiError {
  readonly status = 403;
  readonly code = 'insufficient_scope';
  constructor(readonly requiredScopes: string[]) {
    super('The access token lacks a required scope.');
  }
  override headers(): Record<string, string> {
    return {
      'www-authenticate': bearerChallenge({
        error: this.code,
        error_description: this.message,
        scope: this.requiredScopes.join(' '),
      }),
    };
  }
  override body(): Record<string, unknown> {
    return { ...super.body(), scopes: this.requiredScopes };
  }
}

/**
 * 401 `insufficient_claims`: Conditional Access (MFA, a policy) or CAE needs the caller to get
 * a new token with these claims. The header follows Microsoft's claims-challenge format: the
 * claims are base64 of Entra's JSON.
 */
export class ClaimsChallengeError extends ApiError {
  readonly status = 401;
  readonly code = 'insufficient_claims';
  constructor(
    readonly claims: string,
    readonly authorizationUri: string,
  ) {
    super('Additional claims are required: acquire a new token with the claims in the WWW-Authenticate header.');
  }
  override headers(): Record<string, string> {
    return {
      'www-authenticate': bearerChallenge({
        realm: '',
        authorization_uri: this.authorizationUri,
        error: this.code,
        claims: Buffer.from(this.claims, 'utf8').toString('base64'),
      }),
    };
  }
}

/** 403 `interaction_required`: the user must interact with Entra ID (consent, sign-in). */
export class InteractionRequiredError extends ApiError {
  readonly status = 403;
  readonly code = 'interaction_required';
  constructor(
    readonly suberror: string,
    readonly scopes: string[],
    readonly correlationId?: string,
  ) {
    super(
      suberror === 'consent_required'
        ? 'The user or an administrator must consent to the downstream permissions.'
        : 'The user must sign in again interactively.',
    );
  }
  override body(): Record<string, unknown> {
    return {
      ...super.body(),
      suberror: this.suberror,
      scopes: this.scopes,
      ...(this.correlationId ? { correlation_id: this.correlationId } : {}),
    };
  }
}

/** 403 for a request this API refuses to proxy (not allow-listed). */
export class ForbiddenError extends ApiError {
  readonly status = 403;
  readonly code = 'forbidden';
}

/** 400 `invalid_path`: a proxied path that could leave the downstream (`..`, encoded slashes, a second host). */
export class InvalidPathError extends ApiError {
  readonly status = 400;
  readonly code = 'invalid_path';
}

/** 400 `invalid_batch`: a JSON batch we refuse before the downstream sees it (too many requests, bad ids). */
export class InvalidBatchError extends ApiError {
  readonly status = 400;
  readonly code = 'invalid_batch';
}

/** 405 with `Allow`: the method is not allowed for this route or downstream. */
export class MethodNotAllowedError extends ApiError {
  readonly status = 405;
  readonly code = 'method_not_allowed';
  constructor(readonly allowed: string[]) {
    super('The method is not allowed here.');
  }
  override headers(): Record<string, string> {
    return { allow: this.allowed.join(', ') };
  }
}

/** 413: a request body larger than this API forwards. */
export class PayloadTooLargeError extends ApiError {
  readonly status = 413;
  readonly code = 'payload_too_large';
  constructor(readonly limitBytes: number) {
    super(`The request body is larger than ${limitBytes} bytes.`);
  }
}

/** 499 (nginx's convention, for the log only): the caller went away before the answer was ready. */
export class ClientClosedRequestError extends ApiError {
  readonly status = 499;
  readonly code = 'client_closed_request';
  constructor() {
    super('The client closed the request.');
  }
}

/** 411: a request body must declare its length, so the body limit holds before anything reads it. */
export class LengthRequiredError extends ApiError {
  readonly status = 411;
  readonly code = 'length_required';
  constructor() {
    super('A request body needs a Content-Length header.');
  }
}

/** 429 with `Retry-After`: the caller (a user, or a client address) went over its rate limit. */
export class TooManyRequestsError extends ApiError {
  readonly status = 429;
  readonly code = 'rate_limited';
  constructor(readonly retryAfterSeconds: number) {
    super('Too many requests; retry after the time in the Retry-After header.');
  }
  override headers(): Record<string, string> {
    return { 'retry-after': String(Math.max(1, Math.ceil(this.retryAfterSeconds))) };
  }
}

/** 404 for an unknown route. */
export class NotFoundError extends ApiError {
  readonly status = 404;
  readonly code = 'not_found';
  constructor() {
    super('No such route.');
  }
}

/**
 * 500 with a generic body: our own registration is wrong (`invalid_client`, `invalid_scope`,
 * `unauthorized_client`). The details belong in the log, not in the response.
 */
export class ServerConfigurationError extends ApiError {
  readonly status = 500;
  readonly code = 'server_error';
  constructor(readonly detail: Record<string, unknown>) {
    super('The service could not obtain a downstream token. The operator has been told why.');
  }
}

/** 502: the downstream answered in a way we cannot pass on. */
export class BadGatewayError extends ApiError {
  readonly status = 502;
  readonly code = 'bad_gateway';
}

/** 504: the downstream did not answer within its timeout. */
export class GatewayTimeoutError extends ApiError {
  readonly status = 504;
  readonly code = 'gateway_timeout';
  constructor() {
    super('The downstream API did not answer in time.');
  }
}

/** 503 with `Retry-After`: an infrastructure failure (Entra throttling or outage, JWKS down). */
export class ServiceUnavailableError extends ApiError {
  readonly status = 503;
  readonly code = 'temporarily_unavailable';
  constructor(
    message: string,
    readonly retryAfterSeconds: number,
  ) {
    super(message);
  }
  override headers(): Record<string, string> {
    return { 'retry-after': String(Math.max(1, Math.ceil(this.retryAfterSeconds))) };
  }
}

/** 400 `invalid_host`: a `Host` (or trusted `X-Forwarded-Host`) that is not `host[:port]`. */
export class InvalidHostError extends ApiError {
  readonly status = 400;
  readonly code = 'invalid_host';
  constructor() {
    super('The Host header is not a valid host.');
  }
}
