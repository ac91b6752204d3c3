import type { Context, Next } from 'koa';
import type { AccessTokenValidator, AuthenticatedCaller } from './bearer/validator.js';
import { InvalidRequestError, InvalidTokenError, MissingCredentialsError } from '../api/errors.js';

/** Longest token accepted, checked before anything is decoded (Entra tokens are 1-4 KiB). */
export const MAX_TOKEN_BYTES = 8 * 1024;

/** RFC 6750 §2.1: `Bearer 1*SP b64token`, the scheme case-insensitive. */
const BEARER = /^bearer +(\S*)$/i;
const B64TOKEN = /^[A-Za-z0-9\-._~+/]+=*$/;

export interface AuthState {
  auth: AuthenticatedCaller;
}

/**
 * Takes the bearer token from the `Authorization` header (the only method supported), validates
 * it, and puts the caller on `ctx.state.auth`. Every failure is an RFC 6750 error.
 */
export function authenticate(validate: AccessTokenValidator, realm: string) {
  return async function authenticateMiddleware(ctx: Context, next: Next): Promise<void> {
    const token = extractBearerToken(ctx, realm);
    if (await formBodyCarriesToken(ctx)) throw new InvalidRequestError('The request uses more than one method to send a token.');
    (ctx.state as AuthState).auth = await validate(token);
    await next();
  };
}

function extractBearerToken(ctx: Context, realm: string): string {
  const headers = ctx.req.headersDistinct['authorization'] ?? [];
  // Node keeps only the first of duplicate Authorization headers in `headers`; look at all of them.
  if (headers.length > 1) throw new InvalidRequestError('The request carries more than one Authorization header.');
  const inQuery = ctx.URL.searchParams.has('access_token');
  const header = headers[0];
  if (header === undefined || header === '') {
    // A token in the query alone is an unsupported method: the same as no credentials.
    throw new MissingCredentialsError(realm);
  }
  if (inQuery) throw new InvalidRequestError('The request uses more than one method to send a token.');

  const match = BEARER.exec(header);
  if (!match) {
    // `Bearer\t…` and other malformed bearer headers are bad tokens; other schemes are no credentials.
    if (/^bearer(?:\s|$)/i.test(header) && header.trim().length > 'bearer'.length) throw new InvalidTokenError();
    throw new MissingCredentialsError(realm);
  }
  const token = match[1] ?? '';
  if (token === '') throw new MissingCredentialsError(realm);
  if (token.length > MAX_TOKEN_BYTES || !B64TOKEN.test(token)) throw new InvalidTokenError();
  return token;
}

/** Form bodies are read only to look for a second token; no route of ours accepts one. */
const MAX_FORM_BYTES = 64 * 1024;

async function formBodyCarriesToken(ctx: Context): Promise<boolean> {
  if (!ctx.is('application/x-www-form-urlencoded')) return false;
  let text = '';
  for await (const chunk of ctx.req as AsyncIterable<Buffer>) {
    text += chunk.toString('latin1');
    if (text.length > MAX_FORM_BYTES) throw new InvalidRequestError('The form body is too large.');
  }
  return new URLSearchParams(text).has('access_token');
}
