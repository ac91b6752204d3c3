import { ForbiddenError, InvalidBatchError, InvalidPathError } from '../errors.js';
import { isForwardableRequestHeader } from './headers.js';
import type { PathAllowList } from './path-allow-list.js';
import { parseProxyPath } from './proxy-path.js';
import { JsonObject, JsonSyntaxError, parseStrictJson, printable, writeJson, type JsonValue } from './strict-json-value.js';

/** Graph's own limit (json-batching): more is refused here, before Graph or Entra ID is called. */
const MAX_BATCH_REQUESTS = 20;

/** Credentials and routing stay ours inside a batch too. */
const FORBIDDEN_ITEM_HEADERS = new Set(['authorization', 'proxy-authorization', 'cookie', 'host']);
const REQUEST_MEMBERS = ['id', 'method', 'url', 'headers', 'body', 'dependsOn'] as const;
/** A version segment as Graph names them (`v1.0`, `beta`). */
const VERSION = /^(?:v\d+(?:\.\d+)*|beta)$/i;
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** A control character other than a tab (RFC 9110 §5.5: CR and LF above all). */
const BAD_HEADER_VALUE = /[^\t\P{Cc}]/u;
/** Nothing a URL parser downstream could read differently: whitespace, control characters, a fragment. */
const BAD_URL_CHARACTER = /[\s\p{Cc}#]/u;

export interface BatchPolicy {
  /** The batch URL's version segment (`v1.0`, `beta`): inner URLs are relative to it. */
  version: string;
  /** The path the caller reached this downstream's proxy at (`/api/graph`): inner URLs may start with it. */
  routePrefix: string;
  allowed: PathAllowList;
  allowedMethods: string[];
}

/** One request of a checked batch, in the form Graph reads: `url` relative to the batch's version. */
interface GraphBatchRequest {
  id: string;
  method: string;
  url: string;
  headers?: Record<string, string>;
  body?: JsonValue;
  dependsOn?: string[];
}

export interface GraphBatch {
  requests: GraphBatchRequest[];
}

/**
 * Checks a Graph JSON batch (`{"requests":[{id, method, url, headers?, body?, dependsOn?}]}`)
 * before anything is sent, and returns the batch it checked; only that is forwarded (see
 * writeGraphBatch), never the caller's bytes. Parsing is strict: a member name given twice, in
 * any case, or one Graph does not define is a 400, so there is no reading of the body other
 * than ours. Then: 1 to 20 requests, unique string ids, `dependsOn` naming requests of the
 * batch, allowed methods, no credential headers (and none kept that a direct call would drop),
 * and URLs that pass the same path checks and allow-list as a proxied path. A URL may be written relative to the version (`/me`), with it
 * (`/v1.0/me`, the batch's version) or with this API's route prefix (`/api/graph/v1.0/me`, as
 * the Graph SDK writes it); it is checked and forwarded as `/me`.
 */
export function checkGraphBatch(body: Uint8Array, policy: BatchPolicy): GraphBatch {
  let parsed: JsonValue;
  try {
    parsed = parseStrictJson(body);
  } catch (error) {
    if (error instanceof JsonSyntaxError) throw new InvalidBatchError(error.message);
    throw error;
  }
  if (!(parsed instanceof JsonObject)) throw new InvalidBatchError('A batch is a JSON object with a requests array.');
  refuseUnknownMembers(parsed, ['requests'], 'A batch');
  const requests = parsed.get('requests');
  if (!Array.isArray(requests)) throw new InvalidBatchError('A batch is a JSON object with a requests array.');
  if (requests.length === 0) throw new InvalidBatchError('A batch needs at least one request.');
  if (requests.length > MAX_BATCH_REQUESTS) {
    throw new InvalidBatchError(`A batch holds at most ${MAX_BATCH_REQUESTS} requests; this one has ${requests.length}.`);
  }
  const ids = new Set<string>();
  const checked = requests.map((item, index) => {
    const request = checkRequest(item, index, policy);
    if (ids.has(request.id)) throw new InvalidBatchError(`Request ids must be unique; "${printable(request.id)}" is repeated.`);
    ids.add(request.id);
    return request;
  });
  for (const request of checked) {
    if (request.dependsOn?.some((dependency) => !ids.has(dependency))) {
      throw new InvalidBatchError(`Request "${printable(request.id)}": dependsOn lists ids of requests in this batch.`);
    }
  }
  return { requests: checked };
}

/** The JSON of a checked batch, as forwarded: member names in Graph's spelling, compact. */
export function writeGraphBatch(batch: GraphBatch): Buffer {
  const requests = batch.requests.map(({ id, method, url, headers, body, dependsOn }) => {
    const members = [`"id":${JSON.stringify(id)}`, `"method":${JSON.stringify(method)}`, `"url":${JSON.stringify(url)}`];
    if (headers !== undefined) members.push(`"headers":${JSON.stringify(headers)}`);
    if (body !== undefined) members.push(`"body":${writeJson(body)}`);
    if (dependsOn !== undefined) members.push(`"dependsOn":${JSON.stringify(dependsOn)}`);
    return `{${members.join(',')}}`;
  });
  return Buffer.from(`{"requests":[${requests.join(',')}]}`, 'utf8');
}

function checkRequest(item: JsonValue, index: number, policy: BatchPolicy): GraphBatchRequest {
  if (!(item instanceof JsonObject)) throw new InvalidBatchError(`Request ${index + 1} is not an object.`);
  refuseUnknownMembers(item, REQUEST_MEMBERS, `Request ${index + 1}`);
  const id = item.get('id');
  if (typeof id !== 'string' || id === '') throw new InvalidBatchError(`Request ${index + 1} needs a non-empty string id.`);
  const label = `Request "${printable(id)}"`;
  const method = item.get('method');
  const url = item.get('url');
  if (typeof method !== 'string' || typeof url !== 'string') throw new InvalidBatchError(`${label} needs a method and a url.`);
  const graphUrl = checkItemUrl(url, label, policy);
  const upperMethod = method.toUpperCase();
  if (!policy.allowedMethods.includes(upperMethod)) {
    throw new ForbiddenError(`${label}: the method ${printable(upperMethod)} is not allowed through this API.`);
  }
  const request: GraphBatchRequest = { id, method: upperMethod, url: graphUrl };
  const headers = item.get('headers');
  if (headers !== undefined) request.headers = checkHeaders(headers, label);
  const body = item.get('body');
  if (body !== undefined) request.body = body;
  const dependsOn = item.get('dependsOn');
  if (dependsOn !== undefined) {
    if (!Array.isArray(dependsOn) || !dependsOn.every((dependency) => typeof dependency === 'string')) {
      throw new InvalidBatchError(`${label}: dependsOn lists ids of requests in this batch.`);
    }
    request.dependsOn = dependsOn;
  }
  return request;
}

function refuseUnknownMembers(object: JsonObject, known: readonly string[], label: string): void {
  const lowerKnown = known.map((name) => name.toLowerCase());
  for (const [key, { name }] of object.members) {
    // Known names are ASCII; an exact ASCII comparison leaves no Unicode case folding to argue about.
    if (!lowerKnown.includes(key) || !/^[A-Za-z]+$/.test(name)) {
      throw new InvalidBatchError(`${label} has the member "${printable(name)}"; a batch allows only ${known.join(', ')}.`);
    }
  }
}

function checkHeaders(headers: JsonValue, label: string): Record<string, string> {
  if (!(headers instanceof JsonObject)) throw new InvalidBatchError(`${label}: headers is an object of strings.`);
  const checked: Record<string, string> = {};
  for (const { name, value } of headers.members.values()) {
    if (typeof value !== 'string') throw new InvalidBatchError(`${label}: headers is an object of strings.`);
    if (!TOKEN.test(name) || BAD_HEADER_VALUE.test(value)) {
      throw new InvalidBatchError(`${label}: a header name or value has characters HTTP does not allow.`);
    }
    if (FORBIDDEN_ITEM_HEADERS.has(name.toLowerCase())) {
      throw new InvalidBatchError(`${label}: Authorization, Cookie and Host headers are not allowed in a batch.`);
    }
    // Method and URL overrides and the other headers a direct call drops are dropped here too.
    if (!isForwardableRequestHeader(name)) continue;
    Object.defineProperty(checked, name, { value, enumerable: true, writable: true, configurable: true });
  }
  return checked;
}

/** The url in Graph's form (relative to the batch's version), once it has passed the path checks and the allow-list. */
function checkItemUrl(url: string, label: string, policy: BatchPolicy): string {
  if (/^[a-z][a-z0-9+.-]*:/i.test(url) || url.startsWith('//')) {
    throw new InvalidPathError(`${label}: the url must be relative to the batch's version, e.g. /me/messages.`);
  }
  if (BAD_URL_CHARACTER.test(url)) throw new InvalidPathError(`${label}: the url may not contain whitespace, control characters or #.`);
  const relative = url.startsWith('/') ? url : `/${url}`;
  const queryStart = relative.indexOf('?');
  const rawPath = queryStart < 0 ? relative : relative.slice(0, queryStart);
  const query = queryStart < 0 ? '' : relative.slice(queryStart);
  let segments: string[];
  try {
    segments = parseProxyPath(rawPath).segments;
  } catch (error) {
    if (error instanceof InvalidPathError) throw new InvalidPathError(`${label}: ${error.message}`);
    throw error;
  }
  const rawSegments = rawPath.slice(1).split('/').slice(0, segments.length);
  let skip = 0;
  const prefix = policy.routePrefix.split('/').filter(Boolean);
  if (prefix.length > 0 && prefix.every((segment, i) => segments[i] === segment)) {
    skip = prefix.length;
    if (segments[skip]?.toLowerCase() !== policy.version.toLowerCase()) {
      throw new InvalidBatchError(`${label}: a url under ${printable(policy.routePrefix)} names the batch's version, ${printable(policy.version)}.`);
    }
    skip += 1;
  } else if (segments[0] !== undefined && VERSION.test(segments[0])) {
    if (segments[0].toLowerCase() !== policy.version.toLowerCase()) {
      throw new InvalidBatchError(`${label}: the url's version must be the batch's, ${printable(policy.version)}.`);
    }
    skip = 1;
  }
  const graphSegments = segments.slice(skip);
  if (graphSegments[0] !== undefined && VERSION.test(graphSegments[0])) throw new InvalidBatchError(`${label}: the url names a version twice.`);
  if (graphSegments.some((segment) => segment.toLowerCase() === '$batch')) throw new InvalidBatchError(`${label}: a batch cannot hold a batch.`);
  if (!policy.allowed(`/${policy.version}${graphSegments.map((segment) => `/${segment}`).join('')}`)) {
    throw new ForbiddenError(`${label}: this path is not allowed through this API.`);
  }
  return `/${rawSegments.slice(skip).join('/')}${query}`;
}
