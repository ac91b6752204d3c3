import { ForbiddenError, InvalidBatchError, InvalidPathError } from '../errors.js';
import type { PathAllowList } from './path-allow-list.js';
import { parseProxyPath } from './proxy-path.js';

/** Graph's own limit (json-batching): more is refused here, before Graph or Entra ID is called. */
export const MAX_BATCH_REQUESTS = 20;

/** Credentials and routing stay ours inside a batch too. */
const FORBIDDEN_ITEM_HEADERS = new Set(['authorization', 'proxy-authorization', 'cookie', 'host']);

export interface BatchPolicy {
  /** The batch URL's version segment (`v1.0`, `beta`): inner URLs are relative to it. */
  version: string;
  allowed: PathAllowList;
  allowedMethods: string[];
}

/**
 * Checks a Graph JSON batch (`{"requests":[{id, method, url, headers?, body?, dependsOn?}]}`)
 * before anything is sent: 1 to 20 requests, unique string ids, `dependsOn` naming requests of
 * the batch, relative URLs that pass the same path checks and allow-list as a proxied path,
 * allowed methods, no credential headers. The body itself is forwarded unchanged.
 */
export function checkGraphBatch(body: Buffer, policy: BatchPolicy): void {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString('utf8'));
  } catch {
    throw new InvalidBatchError('The batch is not valid JSON.');
  }
  const requests = isObject(parsed) ? parsed['requests'] : undefined;
  if (!Array.isArray(requests)) throw new InvalidBatchError('A batch is a JSON object with a requests array.');
  if (requests.length === 0) throw new InvalidBatchError('A batch needs at least one request.');
  if (requests.length > MAX_BATCH_REQUESTS) {
    throw new InvalidBatchError(`A batch holds at most ${MAX_BATCH_REQUESTS} requests; this one has ${requests.length}.`);
  }
  const ids = new Set<string>();
  for (const [index, item] of requests.entries()) {
    if (!isObject(item)) throw new InvalidBatchError(`Request ${index + 1} is not an object.`);
    const { id, method, url, headers } = item;
    if (typeof id !== 'string' || id === '') throw new InvalidBatchError(`Request ${index + 1} needs a non-empty string id.`);
    if (ids.has(id)) throw new InvalidBatchError(`Request ids must be unique; "${printable(id)}" is repeated.`);
    ids.add(id);
    const label = `Request "${printable(id)}"`;
    if (typeof method !== 'string' || typeof url !== 'string') throw new InvalidBatchError(`${label} needs a method and a url.`);
    checkItemUrl(url, label, policy);
    if (!policy.allowedMethods.includes(method.toUpperCase())) {
      throw new ForbiddenError(`${label}: the method ${printable(method.toUpperCase())} is not allowed through this API.`);
    }
    if (headers !== undefined) {
      if (!isObject(headers) || !Object.values(headers).every((value) => typeof value === 'string')) {
        throw new InvalidBatchError(`${label}: headers is an object of strings.`);
      }
      if (Object.keys(headers).some((name) => FORBIDDEN_ITEM_HEADERS.has(name.toLowerCase()))) {
        throw new InvalidBatchError(`${label}: Authorization, Cookie and Host headers are not allowed in a batch.`);
      }
    }
  }
  for (const item of requests as Record<string, unknown>[]) {
    const dependsOn = item['dependsOn'];
    if (dependsOn === undefined) continue;
    if (!Array.isArray(dependsOn) || !dependsOn.every((dependency) => typeof dependency === 'string' && ids.has(dependency))) {
      throw new InvalidBatchError(`Request "${printable(String(item['id']))}": dependsOn lists ids of requests in this batch.`);
    }
  }
}

function checkItemUrl(url: string, label: string, policy: BatchPolicy): void {
  if (/^[a-z][a-z0-9+.-]*:/i.test(url) || url.startsWith('//')) {
    throw new InvalidPathError(`${label}: the url must be relative to the batch's version, e.g. /me/messages.`);
  }
  const relative = url.startsWith('/') ? url : `/${url}`;
  const queryStart = relative.indexOf('?');
  const rawPath = queryStart < 0 ? relative : relative.slice(0, queryStart);
  let decoded: string;
  try {
    decoded = parseProxyPath(rawPath).decoded;
  } catch (error) {
    throw new InvalidPathError(`${label}: ${(error as Error).message}`);
  }
  if (!policy.allowed(`/${policy.version}${decoded === '/' ? '' : decoded}`)) {
    throw new ForbiddenError(`${label}: this path is not allowed through this API.`);
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Caller text inside our messages: short, and never a `"`. */
function printable(text: string): string {
  return text.replace(/[^\w.:@$-]/g, '_').slice(0, 64);
}
