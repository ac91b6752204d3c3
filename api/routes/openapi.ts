import { readFileSync } from 'node:fs';
import type { Context } from 'koa';
import { parse } from 'yaml';

/** Reads `openapi/openapi.yaml` (beside `api/`, in the source tree and in `dist/` alike). */
export function loadOpenApiDocument(): unknown {
  return parse(readFileSync(new URL('../../openapi/openapi.yaml', import.meta.url), 'utf8'));
}

/** GET /openapi.json: the contract, as JSON. */
export function openApiRoute(document: unknown) {
  return function openApi(ctx: Context): void {
    ctx.body = document;
  };
}
