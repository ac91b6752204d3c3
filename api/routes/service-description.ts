import type { Context } from 'koa';

const DESCRIPTION = {
  name: 'obo-middle-tier',
  description: 'Calls Microsoft Graph on behalf of the signed-in user (OAuth 2.0 On-Behalf-Of).',
  openapi: '/openapi.json',
};

/** GET /: a short description and where the contract is; nothing else is served on `/`. */
export function serviceDescriptionRoute() {
  return function serviceDescription(ctx: Context): void {
    ctx.body = DESCRIPTION;
  };
}
