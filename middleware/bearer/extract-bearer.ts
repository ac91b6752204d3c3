import { InvalidRequestError, InvalidTokenError, MissingCredentialsError } from '../../api/errors.js';

/** Longest token accepted, checked before anything is decoded (Entra tokens are 1-4 KiB). */
export const MAX_TOKEN_BYTES = 8 * 1024;

/** RFC 6750 §2.1: `Bearer 1*SP b64token`, the scheme case-insensitive. */
const BEARER = /^bearer +(\S*)$/i;
const B64TOKEN = /^[A-Za-z0-9\-._~+/]+=*$/;
/** A bearer header gone wrong (`Bearer\t…`, `Bearer…` with odd spacing): a bad token, not another scheme. */
const BEARER_LIKE = /^bearer\s/i;
/** A well-formed header in one pass: what almost every request sends. */
const WELL_FORMED = /^bearer +([A-Za-z0-9\-._~+/]+=*)$/i;

/**
 * The bearer token of a request, from its `Authorization` header: the only method supported.
 * Pure (the request's raw header list and query string in, the token out), so it can be tried
 * in bulk; every refusal is an RFC 6750 error (docs/bad-input-checklist.md #1-#10):
 * - no header, an empty one, another scheme, or a token in the query alone: no credentials (401);
 * - two `Authorization` headers, or a header and a query token: invalid_request (400);
 * - a bearer header whose token is not one b64token of at most MAX_TOKEN_BYTES: invalid_token (401).
 *
 * `rawHeaders` is node's `[name, value, name, value, …]`: `req.headers` keeps only the first of
 * duplicate `Authorization` headers. The query is parsed only when there is one.
 */
export function extractBearerToken(rawHeaders: readonly string[], querystring: string, realm: string): string {
  let header: string | undefined;
  for (let i = 0; i < rawHeaders.length - 1; i += 2) {
    const name = rawHeaders[i] ?? '';
    if (name.length !== 13 || name.toLowerCase() !== 'authorization') continue;
    if (header !== undefined) throw new InvalidRequestError('The request carries more than one Authorization header.');
    header = rawHeaders[i + 1] ?? '';
  }
  // A token in the query alone is an unsupported method: the same as no credentials.
  if (header === undefined || header === '') throw new MissingCredentialsError(realm);
  if (querystring !== '' && new URLSearchParams(querystring).has('access_token')) {
    throw new InvalidRequestError('The request uses more than one method to send a token.');
  }

  const wellFormed = WELL_FORMED.exec(header)?.[1];
  if (wellFormed !== undefined && wellFormed.length <= MAX_TOKEN_BYTES) return wellFormed;
  // The slow path only decides which refusal it is.
  const match = BEARER.exec(header);
  if (!match) {
    if (BEARER_LIKE.test(header) && header.trim().length > 'bearer'.length) throw new InvalidTokenError();
    throw new MissingCredentialsError(realm);
  }
  const token = match[1] ?? '';
  if (token === '') throw new MissingCredentialsError(realm);
  if (token.length > MAX_TOKEN_BYTES || !B64TOKEN.test(token)) throw new InvalidTokenError();
  return token;
}
