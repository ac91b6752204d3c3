import type { Next, ParameterizedContext } from 'koa';
import type { AppContext } from './app-state.js';
import type { AccessTokenValidator } from './bearer/validator.js';
import type { RequestBodyState } from './request-body.js';
import { extractBearerToken } from './bearer/extract-bearer.js';
import { InvalidRequestError } from '../api/errors.js';

/**
 * Takes the bearer token from the `Authorization` header (the only method supported), validates
 * it, and puts the caller on `ctx.state.auth`. Every failure is an RFC 6750 error.
 */
export function authenticate(validate: AccessTokenValidator, realm: string) {
  return async function authenticateMiddleware(ctx: AppContext, next: Next): Promise<void> {
    const token = extractBearerToken(ctx.req.rawHeaders, ctx.querystring, realm);
    if (ctx.is('application/x-www-form-urlencoded') && (await formBodyCarriesToken(ctx))) {
      throw new InvalidRequestError('The request uses more than one method to send a token.');
    }
    ctx.state.auth = await validate(token);
    await next();
  };
}

/** A form body is looked at only for a second token (no route of ours accepts one); the proxy forwards the same bytes. */
async function formBodyCarriesToken(ctx: ParameterizedContext<RequestBodyState>): Promise<boolean> {
  const body = await ctx.state.readBody();
  return new URLSearchParams(body.toString('latin1')).has('access_token');
}
