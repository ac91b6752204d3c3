import { z } from 'zod';
import { pathPatternProblem } from '../downstream/path-allow-list.js';
import { shown } from './shown.js';
import { checkBaseUrl } from './urls.js';

/** Methods a downstream may allow. */
const PROXY_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'] as const;

const NAME = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;

/** A non-empty list of non-empty strings, each passing `check` (a problem, or undefined). */
function strings(check: (item: string) => string | undefined) {
  const error = 'expected a non-empty array of non-empty strings';
  const item = z
    .string({ error })
    .min(1, { error })
    .superRefine((value, ctx) => {
      const problem = check(value);
      if (problem !== undefined) ctx.addIssue({ code: 'custom', message: problem });
    });
  return z.array(item, { error }).min(1, { error });
}

function wholeNumber(min: number, max: number) {
  const error = `expected a whole number from ${min} to ${max}`;
  return z.int({ error }).min(min, { error }).max(max, { error });
}

const baseUrl = z.string({ error: 'expected an https (or http) URL' }).transform((value, ctx) => {
  const checked = checkBaseUrl(value, ['https:', 'http:']);
  if ('href' in checked) return checked.href;
  ctx.addIssue({ code: 'custom', message: checked.problem });
  return z.NEVER;
});

/**
 * One downstream API, Graph included: the schema every source (the GRAPH_* variables, an entry
 * of DOWNSTREAM_APIS) goes through, and whose output type is DownstreamConfig. Its messages never
 * quote a URL's userinfo.
 */
export const downstreamSchema = z.strictObject({
  /** `/api/downstream/<name>/…`; `graph` is Microsoft Graph. */
  name: z.string().regex(NAME, { error: 'a name is 1-64 letters, digits, - or _, starting with a letter or digit' }),
  /** No trailing slash. */
  baseUrl,
  scopes: strings((scope) => (/\s/.test(scope) ? `"${shown(scope)}" contains whitespace` : undefined)),
  /** Time to the response headers, and the longest pause inside a body. */
  timeoutMs: wholeNumber(1, 600_000),
  /** Path patterns (see api/downstream/path-allow-list.ts); anything else is refused before any exchange. */
  allowedPaths: strings((pattern) => {
    const problem = pathPatternProblem(pattern);
    return problem === undefined ? undefined : problem.replaceAll(pattern, shown(pattern));
  }),
  /** Upper-case methods the proxy forwards (a JSON batch is a POST of its own). */
  allowedMethods: strings((method) =>
    (PROXY_METHODS as readonly string[]).includes(method.toUpperCase()) ? undefined : `"${shown(method)}" is not one of ${PROXY_METHODS.join(', ')}`,
  ).transform((methods) => methods.map((method) => method.toUpperCase())),
  /** Whether `POST /<version>/$batch` is a Graph JSON batch (each inner request checked). */
  batch: z.boolean({ error: 'expected true or false' }),
  /** Retries of an idempotent request answered 429/503 with `Retry-After`. */
  maxRetries: wholeNumber(0, 10),
  /** Longest total wait for those retries; a longer `Retry-After` goes to the caller instead. */
  maxRetryWaitMs: wholeNumber(0, 300_000),
  /**
   * Which token the downstream gets: `user` (absent: an OBO token for the caller) or `app` (the
   * API's own token, client credentials, shared by every caller; scopes must be one `<resource>/.default`).
   */
  token: z.enum(['user', 'app'], { error: 'expected "user" (on behalf of the caller, the default) or "app" (the API\'s own token)' }).optional(),
});

export type DownstreamConfig = z.output<typeof downstreamSchema>;

/**
 * What a DOWNSTREAM_APIS entry may say: every field but its name (the member's key) and
 * maxRetryWaitMs (Graph's); timeoutMs and maxRetries default to Graph's.
 */
export const downstreamEntrySchema = downstreamSchema
  .omit({ name: true, maxRetryWaitMs: true })
  .partial({ timeoutMs: true, maxRetries: true })
  .extend({
    allowedMethods: downstreamSchema.shape.allowedMethods.default(['GET']),
    batch: downstreamSchema.shape.batch.default(false),
  })
  .superRefine((entry, ctx) => {
    // Entra's client-credentials grant takes one resource, named as `<resource>/.default`.
    if (entry.token === 'app' && (entry.scopes.length !== 1 || !entry.scopes[0]?.endsWith('/.default'))) {
      ctx.addIssue({
        code: 'custom',
        path: ['scopes'],
        message: 'an app token ("token": "app") is for one resource: expected exactly one scope "<resource>/.default"',
      });
    }
  });

/** One message per problem, each starting with the field it is about (`scopes: …`). */
export function fieldProblems(error: z.ZodError, known: readonly string[]): { field: string | undefined; message: string }[] {
  const found = error.issues.flatMap((issue) => {
    const field = typeof issue.path[0] === 'string' ? issue.path[0] : undefined;
    if (issue.code === 'unrecognized_keys') {
      return issue.keys.map((key) => ({ field: key, message: `unknown field (known: ${known.join(', ')})` }));
    }
    return [{ field, message: issue.message }];
  });
  // An array reports the same problem once per bad item.
  const seen = new Set<string>();
  return found.filter(({ field, message }) => {
    const key = `${field ?? ''}\n${message}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}
