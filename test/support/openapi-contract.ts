import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import type { Context, Middleware, Next } from 'koa';
import type { Readable } from 'node:stream';
import type supertest from 'supertest';
import { loadOpenApiDocument } from '../../api/routes/openapi.js';

/**
 * The contract check every test service runs (see startService): each response the service
 * gives is held to openapi/openapi.yaml. Its status must be documented for the operation (the
 * exact code, its `4XX` range or `default`; for a path or method the document does not list,
 * the root `x-unmatched-responses`), its required headers present, its content type listed, and
 * a JSON body valid against that content's schema (ajv, JSON Schema 2020-12 as OpenAPI 3.1 says).
 */
interface ContractResponse {
  method: string;
  /** As requested, percent-encoding kept, no query. */
  path: string;
  status: number;
  headers: Record<string, string | string[] | number | undefined>;
  /** The body bytes; undefined when not inspected (a streamed binary body). */
  body: Buffer | undefined;
}

export interface Contract {
  /** Every way `response` breaks the document; empty when it conforms. */
  check(response: ContractResponse): string[];
}

/** Header a violating response carries, with its problems (URI-encoded). */
export const VIOLATION_HEADER = 'x-openapi-violation';

type Json = Record<string, unknown>;
interface Operation {
  template: string;
  method: string;
  responses: Json;
  pointer: string;
}
interface Route {
  template: string;
  pattern: RegExp;
  greedy: boolean;
  literalLength: number;
}

const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];
const DOCUMENT_ID = 'https://contract.test/openapi.json';

export function loadContract(): Contract {
  const document = loadOpenApiDocument() as Json;
  const ajv = new Ajv2020({ strict: false, allErrors: true, logger: false });
  addFormats.default(ajv);
  ajv.addSchema(document, DOCUMENT_ID);
  const validators = new Map<string, ValidateFunction>();
  const paths = (document['paths'] ?? {}) as Record<string, Json>;
  const resolve = (value: Json, pointer: string) => resolveRef(document, value, pointer);
  const routes = Object.keys(paths)
    .map((template) => route(template, paths[template] as Json, (value) => resolve(value, '').value))
    .sort((a, b) => Number(a.greedy) - Number(b.greedy) || b.literalLength - a.literalLength);

  function operationFor(method: string, path: string): Operation | undefined {
    const wanted = method.toLowerCase() === 'head' ? ['head', 'get'] : [method.toLowerCase()];
    for (const candidate of routes) {
      if (!candidate.pattern.test(path)) continue;
      const item = paths[candidate.template] as Json;
      const found = wanted.find((name) => isObject(item[name]));
      if (!found) return undefined; // the path is documented, the method is not: unmatched
      return {
        template: candidate.template,
        method: found,
        responses: (item[found] as Json)['responses'] as Json,
        pointer: `/paths/${escapePointer(candidate.template)}/${found}/responses`,
      };
    }
    return undefined;
  }

  function validator(pointer: string): ValidateFunction {
    let validate = validators.get(pointer);
    if (!validate) {
      const fragment = pointer.split('/').map(encodeURIComponent).join('/');
      validate = ajv.compile({ $ref: `${DOCUMENT_ID}#${fragment}` });
      validators.set(pointer, validate);
    }
    return validate;
  }

  return {
    check(response) {
      const operation = operationFor(response.method, response.path);
      const where = operation
        ? `${operation.method.toUpperCase()} ${operation.template}`
        : `${response.method} ${response.path} (x-unmatched-responses)`;
      const responses = operation?.responses ?? ((document['x-unmatched-responses'] ?? {}) as Json);
      const basePointer = operation?.pointer ?? '/x-unmatched-responses';
      const status = String(response.status);
      const key = [status, `${status[0]}XX`, 'default'].find((candidate) => isObject(responses[candidate]));
      if (!key) return [`${where}: status ${status} is not documented`];
      const { value: documented, pointer } = resolve(responses[key] as Json, `${basePointer}/${escapePointer(key)}`);
      const problems: string[] = [];

      const headers = (documented['headers'] ?? {}) as Json;
      for (const [name, header] of Object.entries(headers)) {
        const { value } = resolve(header as Json, '');
        if (value['required'] === true && response.headers[name.toLowerCase()] === undefined) {
          problems.push(`${where} ${status}: required header ${name} is missing`);
        }
      }

      const body = response.body;
      if (response.method === 'HEAD' || (body !== undefined && body.length === 0) || response.status === 204 || response.status === 304)
        return problems;
      const content = (documented['content'] ?? {}) as Json;
      const contentType =
        String(response.headers['content-type'] ?? '')
          .split(';')[0]
          ?.trim()
          .toLowerCase() ?? '';
      const mediaKey = mediaTypeKey(Object.keys(content), contentType);
      if (mediaKey === undefined) {
        problems.push(
          `${where} ${status}: content type "${contentType}" is not documented (documented: ${Object.keys(content).join(', ') || 'none'})`,
        );
        return problems;
      }
      const media = content[mediaKey] as Json;
      // JSON is checked against a JSON media type's schema; a wildcard (`*/*`) documents bytes, not a shape.
      if (body === undefined || !isJsonType(contentType) || !isJsonType(mediaKey) || !isObject(media['schema'])) return problems;
      let parsed: unknown;
      try {
        parsed = JSON.parse(body.toString('utf8'));
      } catch {
        problems.push(`${where} ${status}: the ${contentType} body is not JSON`);
        return problems;
      }
      const validate = validator(`${pointer}/content/${escapePointer(mediaKey)}/schema`);
      if (!validate(parsed)) {
        const details = (validate.errors ?? []).map((error) => `${error.instancePath || '(body)'} ${error.message ?? ''}`).join('; ');
        problems.push(`${where} ${status}: the body does not match the ${mediaKey} schema: ${details}`);
      }
      return problems;
    },
  };
}

/**
 * A koa middleware, in front of the whole app, that checks each response before it is sent.
 * A response that breaks the contract is replaced by a 500 `openapi_violation` carrying the
 * problems (in the body and in `x-openapi-violation`), so the test that caused it fails whatever
 * client it used; the problems are also appended to `violations`. JSON and text bodies are read
 * (streams included); other streamed bodies are checked for status, headers and content type only.
 */
export function contractGuard(contract: Contract, violations: string[]): Middleware {
  return async function contractGuardMiddleware(ctx: Context, next: Next): Promise<void> {
    await next();
    if (ctx.res.destroyed || !ctx.res.writable) return; // the caller is gone: nothing to check
    const problems = contract.check({
      method: ctx.method,
      path: ctx.path,
      status: ctx.status,
      headers: ctx.response.headers,
      body: await inspectableBody(ctx),
    });
    if (problems.length === 0) return;
    violations.push(...problems);
    ctx.status = 500;
    ctx.set(VIOLATION_HEADER, encodeURIComponent(problems.join(' | ')));
    ctx.body = { error: 'openapi_violation', message: problems.join(' | ') };
  };
}

/** The body as bytes when it can be checked; a JSON or text stream is read (and put back as bytes). */
async function inspectableBody(ctx: Context): Promise<Buffer | undefined> {
  const body: unknown = ctx.body;
  if (body === undefined || body === null) return Buffer.alloc(0);
  if (typeof body === 'string') return Buffer.from(body);
  if (Buffer.isBuffer(body)) return body;
  if (isReadable(body)) {
    const type = String(ctx.response.get('content-type'));
    if (!isJsonType(type) && !type.startsWith('text/')) return undefined;
    const chunks: Buffer[] = [];
    for await (const chunk of body) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk)));
    const bytes = Buffer.concat(chunks);
    ctx.body = bytes;
    ctx.set('content-type', type);
    return bytes;
  }
  return Buffer.from(JSON.stringify(body));
}

/** Wraps a supertest agent: every request it makes fails with the contract's problems, if any. */
export function contractCheckedAgent(agent: ReturnType<typeof supertest>): ReturnType<typeof supertest> {
  const assertConforms = (response: supertest.Response): void => {
    const violation = response.headers[VIOLATION_HEADER];
    if (typeof violation === 'string') throw new Error(`The response breaks openapi/openapi.yaml: ${decodeURIComponent(violation)}`);
  };
  return new Proxy(agent, {
    get(target, property, receiver) {
      const value: unknown = Reflect.get(target, property, receiver);
      if (typeof value !== 'function' || (!METHODS.includes(String(property)) && property !== 'del')) return value;
      return (...args: unknown[]) => (value as (...a: unknown[]) => supertest.Test).apply(target, args).expect(assertConforms);
    },
  });
}

/** A local `$ref` followed to its target, with the JSON pointer of where the value is. */
function resolveRef(document: Json, value: Json, pointer: string): { value: Json; pointer: string } {
  const ref = value['$ref'];
  if (typeof ref !== 'string') return { value, pointer };
  if (!ref.startsWith('#/')) throw new Error(`unsupported $ref ${ref}`);
  const target = ref
    .slice(2)
    .split('/')
    .map(unescapePointer)
    .reduce<unknown>((node, key) => (isObject(node) ? node[key] : undefined), document);
  if (!isObject(target)) throw new Error(`dangling $ref ${ref}`);
  return resolveRef(document, target, ref.slice(1));
}

function route(template: string, item: Json, resolve: (value: Json) => Json): Route {
  const greedyNames = new Set(
    [...parameters(item), ...METHODS.flatMap((method) => (isObject(item[method]) ? parameters(item[method]) : []))]
      .map(resolve)
      .filter((parameter) => parameter['in'] === 'path' && parameter['x-multi-segment'] === true)
      .map((parameter) => String(parameter['name'])),
  );
  let literalLength = 0;
  const source = template
    .split(/(\{[^}]+\})/)
    .map((part) => {
      const name = /^\{([^}]+)\}$/.exec(part)?.[1];
      if (name === undefined) {
        literalLength += part.length;
        return part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
      }
      return greedyNames.has(name) ? '(.*)' : '([^/]+)';
    })
    .join('');
  return { template, pattern: new RegExp(`^${source}/?$`), greedy: greedyNames.size > 0, literalLength };
}

function parameters(node: Json): Json[] {
  const list = node['parameters'];
  return Array.isArray(list) ? list.filter(isObject) : [];
}

function mediaTypeKey(keys: string[], contentType: string): string | undefined {
  const [type] = contentType.split('/');
  return (
    keys.find((key) => key.toLowerCase() === contentType) ??
    keys.find((key) => key.toLowerCase() === `${type}/*`) ??
    keys.find((key) => key === '*/*')
  );
}

function isJsonType(contentType: string): boolean {
  return /^application\/(?:[\w.+-]*\+)?json\b/i.test(contentType);
}

function isReadable(value: unknown): value is Readable {
  return typeof value === 'object' && value !== null && typeof (value as Readable).pipe === 'function';
}

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function escapePointer(segment: string): string {
  return segment.replaceAll('~', '~0').replaceAll('/', '~1');
}

function unescapePointer(segment: string): string {
  return segment.replaceAll('~1', '/').replaceAll('~0', '~');
}
